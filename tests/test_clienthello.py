"""bunsock.clienthello: real ClientHellos from Python's ssl and from `openssl s_client`, fed
whole, byte by byte and re-split into records; truncated, oversized and garbage input."""
import shutil
import ssl
import struct
import subprocess

import pytest

import bunsock
from bunsock import clienthello
from conftest import run, run_until


def python_hello(server_hostname="example.com", alpn=("h2", "http/1.1"), maximum=None):
    """The first flight of a Python ssl client, taken from a MemoryBIO handshake."""
    ctx = ssl.create_default_context()
    if server_hostname is None:
        ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if maximum is not None:
        ctx.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def records(msg, size, version=b"\x03\x01"):
    """A handshake message cut into records of `size` bytes."""
    return b"".join(b"\x16" + version + struct.pack("!H", len(msg[i:i + size])) + msg[i:i + size]
                    for i in range(0, len(msg), size))


def resplit(raw, size):
    """The same handshake message cut into records of `size` bytes."""
    assert raw[0] == 22
    n = struct.unpack("!H", raw[3:5])[0]
    return records(raw[5:5 + n], size, raw[1:3]) + raw[5 + n:]


def test_python_client_hello_whole_and_byte_by_byte():
    raw = python_hello()
    h = clienthello.parse(raw)
    assert (h.server_name, h.alpn, h.length) == ("example.com", ["h2", "http/1.1"], len(raw))
    assert h.legacy_version == 0x0303
    for i in range(len(raw)):
        assert clienthello.parse(raw[:i]) is None, "prefix of %d bytes" % i
    assert clienthello.parse(bytearray(raw)).server_name == "example.com"
    assert clienthello.parse(memoryview(raw)).alpn == ["h2", "http/1.1"]
    # What the client sends after its hello (not in TLS 1.3's first flight, but possible in
    # a buffer) is not part of the hello.
    assert clienthello.parse(raw + b"\x17\x03\x03\x00\x01x").length == len(raw)


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_python_hello_per_version(maximum):
    h = clienthello.parse(python_hello("svc.internal", ("x-custom",), maximum))
    assert (h.server_name, h.alpn) == ("svc.internal", ["x-custom"])


def test_no_sni_no_alpn():
    h = clienthello.parse(python_hello(None, ()))
    assert (h.server_name, h.alpn) == (None, [])
    # An IP address is never sent as SNI (RFC 6066): ssl leaves it out.
    h = clienthello.parse(python_hello("127.0.0.1", ()))
    assert h.server_name is None


@pytest.mark.parametrize("size", [1000, 100, 16, 9])
def test_hello_spanning_several_records(size):
    raw = python_hello()
    split = resplit(raw, size)
    assert split.count(b"\x16\x03") >= (len(raw) - 5) // size
    h = clienthello.parse(split)
    assert (h.server_name, h.alpn, h.length) == ("example.com", ["h2", "http/1.1"], len(split))
    for i in range(0, len(split), 7):
        assert clienthello.parse(split[:i]) is None


def test_too_many_records():
    raw = python_hello()
    with pytest.raises(ValueError, match="more than 64 records"):
        clienthello.parse(resplit(raw, 4))


def _hello(exts=b"", body_extra=b"", sid=b"", suites=b"\x13\x01", comp=b"\x00", record=True):
    body = (b"\x03\x03" + bytes(32) + bytes([len(sid)]) + sid + struct.pack("!H", len(suites))
            + suites + bytes([len(comp)]) + comp)
    if exts is not None:
        body += struct.pack("!H", len(exts)) + exts
    body += body_extra
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(msg)) + msg if record else msg


def _ext(t, data):
    return struct.pack("!HH", t, len(data)) + data


def _sni(*names, kind=0):
    lst = b"".join(bytes([kind]) + struct.pack("!H", len(n)) + n for n in names)
    return _ext(0, struct.pack("!H", len(lst)) + lst)


def _alpn(*protos):
    lst = b"".join(bytes([len(p)]) + p for p in protos)
    return _ext(16, struct.pack("!H", len(lst)) + lst)


def test_minimal_hellos():
    assert clienthello.parse(_hello(exts=None)).server_name is None     # TLS 1.2: no extensions
    h = clienthello.parse(_hello(_ext(0xAAAA, b"") + _sni(b"A.Example") + _alpn(b"h2")))
    assert (h.server_name, h.alpn) == ("A.Example", ["h2"])
    assert clienthello.parse(_hello(_sni(b"x.test", b"y.test"))).server_name == "x.test"
    assert clienthello.parse(_hello(_alpn(b"\xff\x00"))).alpn == ["\xff\x00"]


@pytest.mark.parametrize("raw,match", [
    (b"GET / HTTP/1.1\r\n\r\n", "not a TLS handshake record"),
    (b"\x80\x2e\x01\x00\x02", "not a TLS handshake record"),           # SSLv2 compatible hello
    (b"\x16\x02", "version 2.x"),
    (b"\x16\x03\x05\x00\x05", "version 3.5"),
    (b"\x16\x03\x01\x00\x00", "record of 0 bytes"),
    (b"\x16\x03\x01\x40\x01", "record of 16385 bytes"),
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "type 2, not ClientHello"),
    (b"\x16\x03\x01\x00\x04\x01\x01\x00\x00", "65540 bytes is over"),
    (b"\x16\x03\x01\x00\x02\x01\x00\x17\x03\x03\x00\x01x", "record of type 23 inside"),
    (_hello(exts=b"", body_extra=b"\x00"), "after the ClientHello's extensions"),
    (_hello(exts=None, sid=bytes(33)), "session id of 33 bytes"),
    (_hello(exts=None, suites=b"\x13"), "cipher_suites of 1 bytes"),
    (_hello(exts=None, comp=b""), "without compression methods"),
    (_hello(_sni(b"a.test") + _sni(b"b.test")), "repeats extension 0"),
    (_hello(_sni(b"caf\xc3\xa9.test")), "not ASCII"),
    (_hello(_sni(b"a test")), "control or space"),
    (_hello(_sni(b"")), "empty server_name"),
    (_hello(_ext(0, b"\x00\x05\x00\x00\x09ab")), "truncated in server_name"),
    (_hello(_ext(0, b"\x00\x00")), "malformed server_name"),
    (_hello(_alpn(b"")), "empty ALPN protocol"),
    (_hello(_ext(16, b"\x00\x03\x05h2")), "truncated in ALPN protocol"),
    (_hello(b"\x00\x00\x00\x09abc"), "truncated in extension 0"),
])
def test_garbage_and_truncation(raw, match):
    with pytest.raises(ValueError, match=match.replace("...", ".*")):
        clienthello.parse(raw)


def test_hello_longer_than_its_records_allow():
    # The record holds the hello's 4-byte header, then a record of another type follows: the
    # hello can never complete.
    raw = python_hello()
    n = struct.unpack("!H", raw[3:5])[0]
    cut = b"\x16\x03\x01\x00\x10" + raw[5:21] + b"\x15\x03\x03\x00\x02\x02\x28"
    with pytest.raises(ValueError, match="type 21 inside the ClientHello"):
        clienthello.parse(cut)
    # The hello says it is shorter than the record: bytes left over in its record.
    msg = bytearray(raw[5:5 + n])
    msg[1:4] = (n - 4 - 10).to_bytes(3, "big")
    with pytest.raises(ValueError, match="10 bytes after the ClientHello in its record"):
        clienthello.parse(raw[:5] + bytes(msg))


def test_size_bound():
    raw = python_hello()
    assert clienthello.parse(raw, max_size=len(raw) - 5).server_name == "example.com"
    with pytest.raises(ValueError, match="over the %d-byte bound" % (len(raw) - 6)):
        clienthello.parse(raw[:10], max_size=len(raw) - 6)      # seen from the header alone
    big = records(_hello(_ext(0xFFF0, bytes(16000)) + _ext(0xFFF1, bytes(16000))
                         + _sni(b"big.test"), record=False), 16384)
    with pytest.raises(ValueError, match="over the 16384-byte bound"):
        clienthello.parse(big)
    assert clienthello.parse(big, max_size=1 << 16).server_name == "big.test"
    for bad in (63, 1 << 24):
        with pytest.raises(ValueError, match="max_size"):
            clienthello.parse(raw, max_size=bad)


def test_openssl_s_client_hello_read_by_a_bunsock_server(loop, no_leaks):
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("openssl not installed")
    hellos = []

    class Sniff:
        def open(self, sock):
            sock.data = bytearray()

        def data(self, sock, buf):
            sock.data += buf
            h = clienthello.parse(sock.data)
            if h is not None:
                hellos.append(h)
                sock.close()

    server = bunsock.listen(hostname="127.0.0.1", port=0, socket=Sniff(), loop=loop)
    procs = []
    for name, alpn in (("api.example.com", "h2,http/1.1"), ("db.example.net", "postgresql")):
        procs.append(subprocess.Popen(
            [exe, "s_client", "-connect", "127.0.0.1:%d" % server.port, "-servername", name,
             "-alpn", alpn], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
    try:
        run_until(loop, lambda: len(hellos) == 2, timeout=20)
    finally:
        for p in procs:
            try:
                p.wait(10)         # s_client exits once the server closes on it
            except subprocess.TimeoutExpired:
                p.kill()           # by PID: only the clients this test started
                p.wait()
    got = sorted((h.server_name, h.alpn) for h in hellos)
    assert got == [("api.example.com", ["h2", "http/1.1"]), ("db.example.net", ["postgresql"])]
    server.stop(True)
    run(loop)


def test_the_docs_example_runs(loop, capsys):
    import re
    from pathlib import Path
    doc = Path(__file__).resolve().parents[1] / "docs" / "API.md"
    if not doc.exists():
        pytest.skip("docs/ not beside tests/")
    text = doc.read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index("## 17. TLS ClientHello"):],
                      re.S).group(1)
    ns = {}
    exec(block, ns)
    server = bunsock.listen(hostname="127.0.0.1", port=0, socket=ns["Sniff"](), loop=loop)
    raw = python_hello()
    c = bunsock.connect(hostname="127.0.0.1", port=server.port, loop=loop,
                        socket={"data": lambda s, b: None})
    for i in range(0, len(raw), 100):
        loop.call_later(0.01 * i / 100, c.write, raw[i:i + 100])
    out = []

    def printed():
        out.append(capsys.readouterr().out)
        return "example.com ['h2', 'http/1.1']\n" in "".join(out)

    run_until(loop, printed)
    c.close()
    server.stop(True)
    run(loop)
