"""bunsock.proxy_protocol: the v1/v2 parser and encoders, accept() on real loopback sockets, and
real HAProxy (send-proxy, send-proxy-v2) in front of a bunsock listener."""
import socket as pysocket
import struct

import pytest

import bunsock
from bunsock import proxy_protocol as pp
from bunsock.proxy_protocol import ProxyHeader, ProxyProtocolError
from conftest import run, run_until
from proxy_support import haproxy  # noqa: F401 (fixture)

V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# -- parse: whole, byte by byte, with what follows ---------------------------------------------

CASES = [
    (b"PROXY TCP4 192.0.2.1 203.0.113.5 51234 443\r\n",
     ProxyHeader(1, "PROXY", "IPv4", ("192.0.2.1", 51234), ("203.0.113.5", 443), 44)),
    (b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n",
     ProxyHeader(1, "PROXY", "IPv6", ("2001:db8::1", 65535), ("::1", 0), 36)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, "PROXY", None, None, None, 15)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(1, "PROXY", None, None, None, 35)),
    (V2SIG + b"\x21\x11\x00\x0c" + bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!HH", 1, 2),
     ProxyHeader(2, "PROXY", "IPv4", ("10.0.0.1", 1), ("10.0.0.2", 2), 28)),
    (V2SIG + b"\x21\x21\x00\x24" + pysocket.inet_pton(pysocket.AF_INET6, "2001:db8::7")
     + pysocket.inet_pton(pysocket.AF_INET6, "::1") + struct.pack("!HH", 4000, 80),
     ProxyHeader(2, "PROXY", "IPv6", ("2001:db8::7", 4000), ("::1", 80), 52)),
    (V2SIG + b"\x20\x00\x00\x00", ProxyHeader(2, "LOCAL", None, None, None, 16)),
    # LOCAL with addresses: the receiver must ignore them.
    (V2SIG + b"\x20\x11\x00\x0c" + bytes(12), ProxyHeader(2, "LOCAL", None, None, None, 28)),
    # PROXY with an unspecified family, and with unix addresses: no usable (ip, port).
    (V2SIG + b"\x21\x00\x00\x00", ProxyHeader(2, "PROXY", None, None, None, 16)),
    (V2SIG + b"\x21\x31\x00\xd8" + bytes(216), ProxyHeader(2, "PROXY", "unix", None, None, 232)),
    # TLVs after IPv4 addresses: ALPN "h2", authority, a NOOP of 0 bytes.
    (V2SIG + b"\x21\x11\x00\x22" + bytes([127, 0, 0, 1] * 2) + struct.pack("!HH", 5, 6)
     + b"\x01\x00\x02h2" + b"\x02\x00\x0bexample.com" + b"\x04\x00\x00",
     ProxyHeader(2, "PROXY", "IPv4", ("127.0.0.1", 5), ("127.0.0.1", 6), 50,
                 [(1, b"h2"), (2, b"example.com"), (4, b"")])),
]


@pytest.mark.parametrize("raw,expected", CASES)
def test_parse_whole_and_byte_by_byte(raw, expected):
    assert pp.parse(raw) == expected
    assert pp.parse(bytearray(raw) + b"GET / HTTP/1.1\r\n") == expected   # data after it
    assert pp.parse(memoryview(raw + b"\x00" * 50)) == expected
    for i in range(len(raw)):
        assert pp.parse(raw[:i]) is None, "prefix of %d bytes" % i


def test_tlv_lookup():
    h = pp.parse(CASES[-1][0])
    assert h.tlv(2) == b"example.com" and h.tlv(1) == b"h2" and h.tlv(0x30) is None


def test_v1_header_of_the_maximum_length_parses():
    # 107 bytes exactly: the longest TCP6 line the spec allows.
    a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    raw = ("PROXY TCP6 %s %s 65535 65535\r\n" % (a, a)).encode()
    assert len(raw) == 104
    raw = b"PROXY UNKNOWN " + b"x" * (107 - 16) + b"\r\n"
    assert len(raw) == 107 and pp.parse(raw).length == 107


GARBAGE = [
    (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
    (b"\x16\x03\x01\x02\x00", "not a PROXY protocol header"),
    (b"PROXY", None),           # a valid beginning: None, checked below
    (b"PROXZ", "not a PROXY"),
    (b"PROXY TCP5 1.2.3.4", "protocol b'TCP5'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "not printable"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "bad IPv4 address '1.2.3'"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "bad IPv4 address '::1'"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad IPv6 address '1.2.3.4'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad port '65536'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad port '01'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "bad port '-1'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "malformed PROXY v1"),
    (b"PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n", "not printable"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n", "not printable"),
    (V2SIG[:5] + b"X", "not a PROXY protocol header"),
    (V2SIG + b"\x11\x11\x00\x0c", "version 1"),
    (V2SIG + b"\x22\x11\x00\x0c", "unknown command 0x2"),
    (V2SIG + b"\x21\x41\x00\x0c", "family/transport 0x41"),
    (V2SIG + b"\x21\x13\x00\x0c", "family/transport 0x13"),
    (V2SIG + b"\x21\x11\x00\x08" + bytes(8), "too short for its addresses"),
    (V2SIG + b"\x21\x21\x00\x0c" + bytes(12), "too short for its addresses"),
    (V2SIG + b"\x21\x11\x00\x0e" + bytes(14), "inside a TLV"),
    (V2SIG + b"\x21\x11\x00\x10" + bytes(12) + b"\x01\x00\x05x", "overruns"),
]


@pytest.mark.parametrize("raw,match", GARBAGE)
def test_garbage_raises_a_clear_error(raw, match):
    if match is None:
        assert pp.parse(raw) is None
        return
    with pytest.raises(ProxyProtocolError, match=match.replace("(", r"\(")) as info:
        pp.parse(raw)
    assert isinstance(info.value, ValueError)


def test_garbage_is_seen_early():
    # A wrong first byte is rejected at once, not after 107 bytes.
    with pytest.raises(ProxyProtocolError):
        pp.parse(b"G")
    with pytest.raises(ProxyProtocolError):
        pp.parse(b"\r\n\r\n\x01")


def test_oversize():
    with pytest.raises(ProxyProtocolError, match="no CRLF within 107 bytes"):
        pp.parse(b"PROXY UNKNOWN " + b"x" * 93)
    assert pp.parse(b"PROXY UNKNOWN " + b"x" * 92) is None          # 106 bytes: may still end
    big = V2SIG + b"\x21\x11" + struct.pack("!H", 4096 - 16 + 1)
    with pytest.raises(ProxyProtocolError, match="4097 bytes is over the 4096-byte bound"):
        pp.parse(big)                                               # said by the length field
    ok = V2SIG + b"\x21\x11" + struct.pack("!H", 4096 - 16) + bytes(12) + b"\x04" \
        + struct.pack("!H", 4096 - 16 - 15) + bytes(4096 - 16 - 15)
    assert pp.parse(ok).length == 4096
    with pytest.raises(ProxyProtocolError, match="over the 100-byte bound"):
        pp.parse(ok, max_size=100)
    assert pp.parse(ok[:20], max_size=65551) is None
    for bad in (15, 65552):
        with pytest.raises(ValueError, match="max_size"):
            pp.parse(ok, max_size=bad)


# -- encoders -----------------------------------------------------------------------------------

def test_encode_round_trips():
    assert pp.encode_v1(("192.0.2.1", 51234), ("203.0.113.5", 443)) == \
        b"PROXY TCP4 192.0.2.1 203.0.113.5 51234 443\r\n"
    assert pp.encode_v1(None, ("::1", 1)) == b"PROXY UNKNOWN\r\n"
    h = pp.parse(pp.encode_v1(("fe80::1%eth0", 1), ("127.0.0.1", 2)))   # scope dropped, mapped
    assert h.family == "IPv6" and h.source == ("fe80::1", 1)
    assert h.destination[0] in ("::ffff:127.0.0.1", "::ffff:7f00:1")
    assert pp.parse(pp.encode_v1(("::ffff:1.2.3.4", 1), ("::ffff:5.6.7.8", 2))).source == \
        ("1.2.3.4", 1)
    for src, dst in [(("10.1.2.3", 1), ("10.3.2.1", 65535)), (("2001:db8::1", 9), ("::1", 0))]:
        for enc in (pp.encode_v1, pp.encode_v2):
            h = pp.parse(enc(src, dst))
            assert (h.source, h.destination, h.command) == (src, dst, "PROXY")
    h = pp.parse(pp.encode_v2(("1.2.3.4", 5), ("6.7.8.9", 10), tlvs=[(5, b"id-1"), (1, b"h2")]))
    assert h.tlvs == ((5, b"id-1"), (1, b"h2"))
    h = pp.parse(pp.encode_v2(("1.2.3.4", 5), ("6.7.8.9", 10), command="LOCAL"))
    assert (h.command, h.source, h.length) == ("LOCAL", None, 16)
    h = pp.parse(pp.encode_v2(None, None))
    assert (h.command, h.family, h.source) == ("PROXY", None, None)


@pytest.mark.parametrize("args,exc,match", [
    ((("example.com", 1), ("1.2.3.4", 2)), ValueError, "must be an IP address"),
    ((("1.2.3.4", 65536), ("1.2.3.4", 2)), ValueError, "0..65535"),
    ((("1.2.3.4", "80"), ("1.2.3.4", 2)), TypeError, "port must be an int"),
    ((("1.2.3.4",), ("1.2.3.4", 2)), TypeError, r"\(ip, port\)"),
    (((b"1.2.3.4", 1), ("1.2.3.4", 2)), TypeError, "ip must be a str"),
])
def test_encode_errors(args, exc, match):
    for enc in (pp.encode_v1, pp.encode_v2):
        with pytest.raises(exc, match=match):
            enc(*args)


def test_encode_v2_errors():
    with pytest.raises(ValueError, match="command"):
        pp.encode_v2(None, None, command="RELAY")
    with pytest.raises(ValueError, match="TLV type"):
        pp.encode_v2(None, None, tlvs=[(256, b"")])
    with pytest.raises(ValueError, match="too large"):
        pp.encode_v2(("1.2.3.4", 1), ("1.2.3.4", 1), tlvs=[(4, bytes(65535 - 12))])


# -- accept(): a plain listener behind a balancer ---------------------------------------------

class App:
    """Records what the user's table sees, in order."""

    def __init__(self):
        self.events = []
        self.received = {}

    def open(self, sock):
        self.events.append(("open", sock.proxy_header))
        self.received[sock] = bytearray()

    def data(self, sock, buf):
        self.events.append(("data", bytes(buf)))
        self.received[sock] += buf
        sock.write(b"echo:" + bytes(buf))

    def error(self, sock, exc):
        self.events.append(("error", exc))

    def close(self, sock, err):
        self.events.append(("close", err))


class Client:
    def __init__(self):
        self.got = bytearray()
        self.closed = False
        self.port = None

    def open(self, sock):
        self.port = sock.local_port

    def data(self, sock, buf):
        self.got += buf

    def close(self, sock, err):
        self.closed = True


def serve(loop, app, **kw):
    opts = {k: kw.pop(k) for k in ("timeout", "max_size") if k in kw}
    return bunsock.listen(hostname="127.0.0.1", port=0, socket=pp.accept(app, **opts),
                          loop=loop, **kw)


def dial(loop, server, pieces, gap=0.0):
    """A client of `server` (a Listener or a port) that writes `pieces` (gap seconds apart, or
    all at once)."""
    c = Client()
    port = server if isinstance(server, int) else server.port
    s = bunsock.connect(hostname="127.0.0.1", port=port, socket=c, loop=loop)
    if gap:
        for i, p in enumerate(pieces):
            loop.call_later(gap * (i + 1), s.write, p)
    else:
        for p in pieces:
            s.write(p)
    return c, s


HEADERS = {
    "v1": pp.encode_v1(("198.51.100.7", 40000), ("203.0.113.9", 443)),
    "v2": pp.encode_v2(("198.51.100.7", 40000), ("203.0.113.9", 443), tlvs=[(2, b"a.example")]),
    "v1-unknown": b"PROXY UNKNOWN\r\n",
    "v2-local": pp.encode_v2(None, None, command="LOCAL"),
    "v1-ipv6": pp.encode_v1(("2001:db8::5", 1), ("2001:db8::6", 2)),
}


@pytest.mark.parametrize("name", sorted(HEADERS))
@pytest.mark.parametrize("split", ["whole", "bytes"])
def test_accept_reads_the_header_then_hands_over(loop, no_leaks, name, split):
    app = App()
    header = HEADERS[name]
    server = serve(loop, app)
    payload = b"hello after the header"
    if split == "whole":
        c, s = dial(loop, server, [header + payload])
    else:
        raw = header + payload
        c, s = dial(loop, server, [raw[i:i + 1] for i in range(len(raw))], gap=0.002)
    run_until(loop, lambda: sum(len(v) for v in app.received.values()) == len(payload))
    assert app.events[0] == ("open", pp.parse(header))
    assert b"".join(e[1] for e in app.events if e[0] == "data") == payload
    sock = next(iter(app.received))
    assert sock.proxy_header.length == len(header)
    s.close()
    run_until(loop, lambda: app.events[-1][0] == "close")
    server.stop(True)
    run(loop)


def test_v1_and_v2_on_one_listener(loop, no_leaks):
    app = App()
    server = serve(loop, app)
    clients = [dial(loop, server, [HEADERS[n] + b"x"]) for n in ("v1", "v2", "v1", "v2")]
    run_until(loop, lambda: all(c.got == b"echo:x" for c, _ in clients))
    versions = sorted(e[1].version for e in app.events if e[0] == "open")
    assert versions == [1, 1, 2, 2]
    for _, s in clients:
        s.close()
    server.stop(True)
    run(loop)


def test_header_alone_then_data_later(loop, no_leaks):
    app = App()
    server = serve(loop, app)
    c, s = dial(loop, server, [HEADERS["v2"]])
    run_until(loop, lambda: app.events)
    assert app.events == [("open", pp.parse(HEADERS["v2"]))]       # no empty data call
    s.write(b"later")
    run_until(loop, lambda: c.got == b"echo:later")
    s.close()
    server.stop(True)
    run(loop)


@pytest.mark.parametrize("raw,match", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a PROXY protocol header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", "bad port"),
    (b"PROXY UNKNOWN " + b"y" * 200, "no CRLF within 107 bytes"),
    (V2SIG + b"\x21\x11\xff\xff" + bytes(100), "over the 4096-byte bound"),
])
def test_garbage_closes_with_a_clear_error(loop, no_leaks, expected_errors, raw, match):
    app = App()
    server = serve(loop, app)
    c, s = dial(loop, server, [raw])
    run_until(loop, lambda: c.closed and app.events)
    [(kind, exc)] = app.events               # no open, no close: the user never had it
    assert kind == "error" and isinstance(exc, ProxyProtocolError)
    assert match in str(exc) and "from 127.0.0.1:%d" % c.port in str(exc)
    assert [type(e) for e, _ in expected_errors] == [ProxyProtocolError]
    server.stop(True)
    run(loop)


def test_garbage_without_an_error_handler_is_reported(loop, no_leaks, expected_errors,
                                                      unraisable):
    class Bare:
        def data(self, sock, buf):
            pass
    server = serve(loop, Bare())
    c, s = dial(loop, server, [b"SSH-2.0-OpenSSH_9.2\r\n"])
    run_until(loop, lambda: c.closed)
    assert [type(u.exc_value) for u in unraisable] == [ProxyProtocolError]
    unraisable.clear()             # their tracebacks hold the sockets
    server.stop(True)
    run(loop)


def test_timeout_closes_a_stalled_header(loop, no_leaks):
    app = App()
    server = serve(loop, app, timeout=0.3)
    t0 = loop.time()
    c, s = dial(loop, server, [HEADERS["v1"][:10]])
    run_until(loop, lambda: c.closed)
    assert loop.time() - t0 >= 0.25
    [(kind, exc)] = app.events
    assert kind == "error" and isinstance(exc, TimeoutError)
    assert "within 0.3 s (10 bytes received)" in str(exc)
    server.stop(True)
    run(loop)


def test_header_deadline_is_cancelled_once_complete(loop, no_leaks):
    app = App()
    server = serve(loop, app, timeout=0.2)
    c, s = dial(loop, server, [HEADERS["v2"]])
    run_until(loop, lambda: app.events)
    loop.call_later(0.5, s.write, b"still here")
    run_until(loop, lambda: c.got == b"echo:still here")
    assert not c.closed and [e[0] for e in app.events] == ["open", "data"]
    s.close()
    server.stop(True)
    run(loop)


def test_eof_inside_a_header_is_an_error_eof_before_any_byte_is_not(loop, no_leaks,
                                                                   expected_errors):
    app = App()
    server = serve(loop, app)
    c1, s1 = dial(loop, server, [])
    s1.end()                                          # a balancer's TCP health check
    run_until(loop, lambda: c1.closed)
    c2, s2 = dial(loop, server, [HEADERS["v1"][:20]])
    s2.end()
    run_until(loop, lambda: c2.closed and app.events)
    [(kind, exc)] = app.events
    assert kind == "error" and "ended inside a PROXY protocol header (20 bytes" in str(exc)
    server.stop(True)
    run(loop)


def test_rest_goes_to_the_pipe_when_open_pipes(loop, no_leaks):
    # The proxy shape: open() connects an upstream and relays; bytes that came with the header
    # must reach the upstream first.
    got = bytearray()
    ends = []

    class Upstream:
        def data(self, sock, buf):
            got.extend(buf)

        def end(self, sock):
            ends.append(sock)

    up_server = bunsock.listen(hostname="127.0.0.1", port=0, socket=Upstream(), loop=loop)

    class Front:
        def open(self, sock):
            up = bunsock.connect(hostname="127.0.0.1", port=up_server.port,
                                 socket={"data": lambda s, b: None}, loop=loop)
            bunsock.relay(sock, up)

        def data(self, sock, buf):
            raise AssertionError("relayed: data is never called")

    server = serve(loop, Front())
    c, s = dial(loop, server, [HEADERS["v1"] + b"first|"])
    loop.call_later(0.05, s.write, b"second|")
    loop.call_later(0.1, s.end)
    run_until(loop, lambda: ends)
    assert got == b"first|second|"
    server.stop(True)
    up_server.stop(True)
    run(loop)


def test_pause_on_connect_is_for_the_users_open(loop, no_leaks):
    seen = []

    class Paused:
        def open(self, sock):
            seen.append(("open", sock.paused))
            loop.call_later(0.1, sock.resume)

        def data(self, sock, buf):
            seen.append(("data", bytes(buf), sock.paused))

    server = serve(loop, Paused(), pause_on_connect=True)
    c, s = dial(loop, server, [HEADERS["v2"]])
    run_until(loop, lambda: seen)
    assert seen == [("open", True)]
    loop.call_later(0.02, s.write, b"after")        # arrives while paused, read on resume
    run_until(loop, lambda: len(seen) == 2, timeout=5)
    assert seen[1] == ("data", b"after", False)
    s.close()
    server.stop(True)
    run(loop)


def test_open_raising_goes_to_error_then_closes(loop, no_leaks, expected_errors):
    events = []

    class Bad:
        def open(self, sock):
            raise RuntimeError("boom")

        def data(self, sock, buf):
            events.append("data")

        def error(self, sock, exc):
            events.append(("error", str(exc)))

        def close(self, sock, err):
            events.append(("close", err))

    server = serve(loop, Bad())
    c, s = dial(loop, server, [HEADERS["v1"] + b"payload"])
    run_until(loop, lambda: c.closed)
    run_until(loop, lambda: len(events) == 2)
    assert events == [("error", "boom"), ("close", None)]
    assert [type(e) for e, _ in expected_errors] == [RuntimeError]
    server.stop(True)
    run(loop)


def test_binary_type_of_the_rest_matches_the_listener(loop, no_leaks):
    seen = []
    server = serve(loop, {"data": lambda s, b: seen.append(type(b))}, binary_type="bytearray")
    c, s = dial(loop, server, [HEADERS["v1"] + b"abc"])
    run_until(loop, lambda: seen)
    assert seen == [bytearray]
    s.close()
    server.stop(True)
    run(loop)


def test_accept_argument_errors():
    with pytest.raises(TypeError, match="'data' or a 'drain'"):
        pp.accept({"open": lambda s: None})
    with pytest.raises(ValueError, match="timeout"):
        pp.accept({"data": print}, timeout=-1)
    with pytest.raises(ValueError, match="max_size"):
        pp.accept({"data": print}, max_size=10)
    with pytest.raises(TypeError, match="max_size"):
        pp.accept({"data": print}, max_size=4096.0)


def test_proxy_header_is_none_without_accept(loop, no_leaks):
    seen = []
    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                            socket={"open": lambda s: seen.append(s.proxy_header),
                                    "data": lambda s, b: None})
    c, s = dial(loop, server, [b"x"])
    run_until(loop, lambda: seen)
    assert seen == [None]
    s.close()
    server.stop(True)
    run(loop)


# -- real HAProxy in front ---------------------------------------------------------------------

@pytest.mark.parametrize("opt,version", [("send-proxy", 1), ("send-proxy-v2", 2)])
def test_real_haproxy_in_front(loop, haproxy, opt, version):
    app = App()
    server = serve(loop, app)
    # HAProxy's connect probe in the fixture (and HAProxy itself) connects before this test's
    # clients: only connections that completed a header reach the app.
    front = haproxy(server.port, opt)
    clients = [dial(loop, front, [b"ping %d" % i]) for i in range(3)]
    run_until(loop, lambda: all(c.got == b"echo:ping %d" % i
                                for i, (c, _) in enumerate(clients)))
    # The header carries each client's real address: its own local port, and where it connected
    # (the fixture's probe connection also went through HAProxy: one more header).
    by_source = {e[1].source: e[1] for e in app.events if e[0] == "open"}
    for c, _ in clients:
        h = by_source[("127.0.0.1", c.port)]
        assert (h.version, h.command, h.family) == (version, "PROXY", "IPv4")
        assert h.destination == ("127.0.0.1", front)
    opened = len(by_source)
    for _, s in clients:
        s.close()
    run_until(loop, lambda: sum(e[0] == "close" for e in app.events) == opened)
    server.stop(True)
    run(loop)


def _doc_block(section):
    """The first python code block of a docs/API.md section."""
    import re
    from pathlib import Path
    doc = Path(__file__).resolve().parents[1] / "docs" / "API.md"
    if not doc.exists():
        pytest.skip("docs/ not beside tests/")
    text = doc.read_text()
    part = text[text.index(section):]
    return re.search(r"```python\n(.*?)```", part, re.S).group(1)


def test_the_docs_example_runs(capsys, expected_errors):
    ns = {}
    exec(_doc_block("## 16. PROXY protocol"), ns)
    server, loop = ns["server"], bunsock.get_loop()
    try:
        good, s1 = dial(loop, server, [pp.encode_v2(("192.0.2.44", 5555), ("10.0.0.1", 80))
                                       + b"hi"])
        bad, s2 = dial(loop, server, [b"GET / HTTP/1.0\r\n\r\n"])
        run_until(loop, lambda: good.got == b"hello 192.0.2.44\n" and bad.closed)
        assert "rejected: not a PROXY protocol header" in capsys.readouterr().out
        assert [type(e) for e, _ in expected_errors] == [ProxyProtocolError]
        s1.close()
    finally:
        server.stop(True)
    run(loop)


def test_public_names_have_docstrings():
    from bunsock import clienthello
    for mod in (pp, clienthello):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj):
                assert (obj.__doc__ or "").strip(), "%s.%s has no docstring" % (mod.__name__, name)


def test_listener_reload_reaches_headers_in_progress_not_handed_over_sockets(loop, no_leaks):
    old, new = App(), App()
    server = serve(loop, old)
    c1, s1 = dial(loop, server, [HEADERS["v1"]])               # handed over to `old`
    run_until(loop, lambda: old.events)
    c2, s2 = dial(loop, server, [HEADERS["v2"][:10]])          # header half read
    run_until(loop, lambda: c2.port is not None)
    loop.run_once(0.05)
    server.reload(pp.accept(new))
    s2.write(HEADERS["v2"][10:] + b"two")
    s1.write(b"one")
    run_until(loop, lambda: c1.got == b"echo:one" and c2.got == b"echo:two")
    assert [e[0] for e in old.events] == ["open", "data"]      # its own copy of the table
    assert new.events[0] == ("open", pp.parse(HEADERS["v2"]))  # finished by the new wrapper
    s1.close()
    s2.close()
    run_until(loop, lambda: old.events[-1][0] == "close" and new.events[-1][0] == "close")
    server.stop(True)
    run(loop)


def test_accept_on_a_tls_listener_is_refused_with_a_reason(loop, no_leaks, sctx, cctx):
    # The header comes before the TLS handshake: a TLS listener would fail every handshake on
    # it, so listen() refuses the table, and a TLS listener's reload() keeps its old one.
    with pytest.raises(ValueError, match="PROXY header comes before the TLS handshake"):
        bunsock.listen(hostname="127.0.0.1", port=0, tls=sctx, socket=pp.accept(App()),
                       loop=loop)
    app = App()
    server = bunsock.listen(hostname="127.0.0.1", port=0, tls=sctx, socket=app, loop=loop)
    with pytest.raises(ValueError, match=r"proxy_protocol.accept\(\) cannot serve a TLS"):
        server.reload(pp.accept(App()))
    c = Client()
    s = bunsock.connect(hostname="127.0.0.1", port=server.port, tls=cctx, socket=c, loop=loop)
    s.write(b"still TLS")
    run_until(loop, lambda: c.got == b"echo:still TLS")
    assert app.events[0] == ("open", None)          # the old table, no PROXY header read
    s.close()
    server.stop(True)
    run(loop)
