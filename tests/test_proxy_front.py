"""What sits in front of the proxy and what the client's first bytes say: HAProxy with
send-proxy / send-proxy-v2 in front of `--accept-proxy`, and TLS passthrough routed by SNI
(`--route`), driven by `openssl s_client -servername`."""
import shutil
import socket
import ssl
import subprocess
import sys

import pytest

import bunsock
from bunsock import proxy_protocol
from conftest import run
from proxy_support import haproxy, procs, run_until  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """Records each connection's bytes; answers "ok" once, to its first bytes."""

    def __init__(self):
        self.conns = []

    def open(self, sock):
        sock.data = bytearray()
        self.conns.append(sock)

    def data(self, sock, buf):
        if not sock.data:
            sock.write(b"ok")
        sock.data += buf


def exchange(loop, port, payload, wait_reply=True):
    st = {"got": b""}

    class C:
        def open(self, sock):
            st["port"] = sock.local_port        # (None once closed)
            sock.write(payload)

        def data(self, sock, buf):
            st["got"] += buf

        def close(self, sock, err):
            st["closed"] = err

    c = bunsock.connect(hostname="127.0.0.1", port=port, socket=C(), loop=loop)
    run_until(loop, lambda: (st["got"] if wait_reply else False) or "closed" in st)
    return c, st


@pytest.mark.parametrize("opt", ["send-proxy", "send-proxy-v2"])
def test_haproxy_in_front_gives_the_real_client_address(loop, procs, haproxy, tmp_path, opt):
    rec = Recorder()
    up = bunsock.listen(hostname="127.0.0.1", port=0, socket=rec, loop=loop)
    log = tmp_path / "access.log"
    pp = procs("--accept-proxy", "--proxy-protocol", "v2", "--access-log", str(log),
               "--upstream", "127.0.0.1:%d" % up.port)
    front = haproxy(pp.port, opt)
    c, st = exchange(loop, front, b"hello")
    assert st["got"] == b"ok"
    me = ("127.0.0.1", c.local_port)
    # The client's connection, not the last one: HAProxy's start-up probe reaches the upstream
    # through the proxy too, and may open there after it.
    def carried():
        return [s for s in rec.conns if bytes(s.data).endswith(b"hello")]

    run_until(loop, carried, what="the client's bytes reached the upstream")
    sent = bytes(carried()[0].data)
    hdr = proxy_protocol.parse(sent)
    # the header the proxy sends on carries the client HAProxy saw, not HAProxy's address
    assert hdr.source == me and hdr.destination == ("127.0.0.1", front)
    assert sent[hdr.length:] == b"hello"
    c.close()
    run_until(loop, lambda: log.exists() and "client=127.0.0.1:%d " % me[1] in log.read_text())
    up.stop(True)
    assert pp.stop()[0] == 0


def test_accept_proxy_takes_v1_and_v2_and_rejects_garbage_with_a_log_line(loop, procs, tmp_path):
    rec = Recorder()
    up = bunsock.listen(hostname="127.0.0.1", port=0, socket=rec, loop=loop)
    log = tmp_path / "access.log"
    pp = procs("--accept-proxy", "--proxy-protocol", "v1", "--header-timeout", "0.5",
               "--access-log", str(log), "--upstream", "127.0.0.1:%d" % up.port)
    v1 = proxy_protocol.encode_v1(("192.0.2.7", 4000), ("198.51.100.1", 443))
    v2 = proxy_protocol.encode_v2(("2001:db8::7", 4001), ("2001:db8::1", 443))
    for head in (v1, v2):
        c, st = exchange(loop, pp.port, head + b"data")
        assert st["got"] == b"ok"
        c.close()
    assert bytes(rec.conns[0].data) == b"PROXY TCP4 192.0.2.7 198.51.100.1 4000 443\r\ndata"
    assert bytes(rec.conns[1].data) == b"PROXY TCP6 2001:db8::7 2001:db8::1 4001 443\r\ndata"
    c, st = exchange(loop, pp.port, b"GET / HTTP/1.0\r\n\r\n", wait_reply=False)
    assert st["got"] == b"" and st["closed"] is None          # closed cleanly, nothing relayed
    m = pp.wait_line(r"bad proxy header from 127\.0\.0\.1:(\d+): (.*)")
    assert int(m.group(1)) == st["port"] and "not a PROXY protocol header" in m.group(2)
    c, st = exchange(loop, pp.port, v1[:10], wait_reply=False)   # stalls inside the header
    assert st["got"] == b""
    pp.wait_line(r"header timeout from 127\.0\.0\.1:%d: no complete PROXY header" % st["port"])
    run_until(loop, lambda: log.read_text().count("\n") == 4)
    text = log.read_text()
    assert "client=192.0.2.7:4000 " in text and "client=[2001:db8::7]:4001 " in text
    assert "end=bad_proxy_header" in text and "end=header_timeout" in text
    assert len(rec.conns) == 2
    up.stop(True)
    assert pp.stop()[0] == 0


def _tls_backend(loop, ca, name, tmp_path):
    cert = ca.issue_cert(name)
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / (name + ".pem")))
    cert.private_key_pem.write_to_path(str(tmp_path / (name + ".key")))

    class Hello:
        def open(self, sock):
            sock.end(("I am %s\n" % name).encode())

        def data(self, sock, buf):
            pass

    return bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Hello(),
                          tls={"cert": str(tmp_path / (name + ".pem")),
                               "key": str(tmp_path / (name + ".key"))})


def test_sni_routing_with_openssl_s_client(loop, procs, tmp_path):
    trustme = pytest.importorskip("trustme")
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("openssl not installed")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    a = _tls_backend(loop, ca, "a.example", tmp_path)
    b = _tls_backend(loop, ca, "api.b.example", tmp_path)
    d = _tls_backend(loop, ca, "default.example", tmp_path)
    pp = procs("--route", "a.example=127.0.0.1:%d" % a.port,
               "--route", "*.b.example=127.0.0.1:%d" % b.port,
               "--upstream", "127.0.0.1:%d" % d.port, "--access-log", "off")

    def s_client(name):
        p = subprocess.Popen([exe, "s_client", "-connect", "127.0.0.1:%d" % pp.port,
                              "-servername", name, "-CAfile", str(tmp_path / "ca.pem"),
                              "-verify_return_error", "-quiet", "-ign_eof"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            run_until(loop, lambda: p.poll() is not None, timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        out, err = p.communicate()
        return p.returncode, out.decode(), err.decode()

    for name, who in (("a.example", "a.example"), ("api.b.example", "api.b.example"),
                      ("default.example", "default.example")):
        rc, out, err = s_client(name)
        # the certificate verified for `name`: the backend's own TLS, passed through untouched
        assert rc == 0 and out == "I am %s\n" % who, (rc, out, err)
    # a ClientHello with no SNI (a connection by IP address) takes the default route
    cctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    cctx.check_hostname = False
    st = {"got": b""}

    class C:
        def data(self, sock, buf):
            st["got"] += buf

        def close(self, sock, err):
            st["closed"] = err

    bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=C(), tls=cctx, loop=loop)
    run_until(loop, lambda: "closed" in st)
    assert st["got"] == b"I am default.example\n"
    for srv in (a, b, d):
        srv.stop(True)
    run(loop, 2)
    assert pp.stop()[0] == 0


def test_garbage_and_truncated_client_hello_are_closed_cleanly(loop, procs):
    rec = Recorder()
    up = bunsock.listen(hostname="127.0.0.1", port=0, socket=rec, loop=loop)
    pp = procs("--route", "x.example=127.0.0.1:%d" % up.port, "--upstream",
               "127.0.0.1:%d" % up.port)
    c, st = exchange(loop, pp.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", wait_reply=False)
    assert st["got"] == b"" and st["closed"] is None
    pp.wait_line(r"bad client hello from 127\.0\.0\.1:%d: " % st["port"])
    # the first bytes of a real hello, then FIN: closed, nothing reaches an upstream
    out = ssl.MemoryBIO()
    hello = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out,
                                                  server_hostname="x.example")
    with pytest.raises(ssl.SSLWantReadError):
        hello.do_handshake()
    raw = out.read()
    st = {"got": b""}

    class Half:
        def open(self, sock):
            st["port"] = sock.local_port
            sock.end(raw[:len(raw) // 2])

        def data(self, sock, buf):
            st["got"] += buf

        def close(self, sock, err):
            st["closed"] = err

    c = bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=Half(), loop=loop,
                        allow_half_open=True)
    run_until(loop, lambda: "closed" in st)
    assert st["got"] == b"" and st["closed"] is None
    m = pp.wait_line(r"bad client hello from 127\.0\.0\.1:%d: (.*)" % st["port"])
    assert "closed after %d bytes of a ClientHello" % (len(raw) // 2) in m.group(1)
    assert rec.conns == []
    up.stop(True)
    assert pp.stop()[0] == 0
