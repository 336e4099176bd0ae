"""Socket.pipe() / bunsock.relay(): bytes relayed between sockets inside the loop, on real
loopback sockets: byte-exact bulk transfers, half-close, resets, backpressure, unpipe, TLS."""
import hashlib
import os
import random
import socket as pysocket
import sys

import pytest

import bunsock
from bunsock._loop import relay_pool_clear, relay_stats
from conftest import run, run_until

MODES = ["buffer", pytest.param("splice", marks=pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="splice(2) is Linux only")), "auto"]
SRC = os.urandom((1 << 20) + (256 << 10))


@pytest.fixture
def clean(no_leaks):
    """no_leaks, with the pool of empty splice pipes (kept for reuse by design) emptied first."""
    yield
    relay_pool_clear()


def splice_opt(mode):
    """auto: the default (splice while reads are large, where splice exists)."""
    return None if mode == "auto" else mode == "splice"


class Pump:
    """Writes `total` bytes of random data in random-sized chunks, with flow control (waits for
    `drain` above 1 MiB buffered), then end(); hashes what it sent."""

    def __init__(self, total, seed):
        self.rng = random.Random(seed)
        self.left = total
        self.sent = hashlib.sha256()

    def pump(self, sock):
        while self.left > 0:
            n = min(self.left, self.rng.randint(1, 256 << 10))
            off = self.rng.randrange(0, len(SRC) - n + 1)
            chunk = SRC[off:off + n]
            self.sent.update(chunk)
            self.left -= n
            assert sock.write(chunk) == n
            if sock.buffered_amount > 1 << 20:
                return
        sock.end()


class Peer:
    """One end of a bulk transfer: pumps `total` bytes, hashes what it receives. Its sockets
    must be allow_half_open: the other end may finish (FIN) long before this one has."""

    def __init__(self, total, seed, st, name):
        self.total, self.seed, self.st, self.name = total, seed, st, name

    def open(self, sock):
        sock.data = {"pump": Pump(self.total, self.seed), "got": hashlib.sha256(), "n": 0}
        sock.data["pump"].pump(sock)

    def data(self, sock, buf):
        sock.data["got"].update(buf)
        sock.data["n"] += len(buf)

    def drain(self, sock):
        sock.data["pump"].pump(sock)

    def close(self, sock, err):
        self.st[self.name] = (sock.data["n"], sock.data["got"].hexdigest(),
                              sock.data["pump"].sent.hexdigest(), err)


class ProxyHandlers:
    """Accepts, connects upstream, relays both ways. `data` must never be called: the relay moves
    every byte without a Python call."""

    def __init__(self, loop, port, st, tls=None, **opts):
        self.loop, self.port, self.st, self.tls, self.opts = loop, port, st, tls, opts
        self.st.setdefault("closes", [])
        self.st.setdefault("py_data", 0)
        up = self

        class Up:
            def data(self, sock, buf):
                up.st["py_data"] += 1

            def close(self, sock, err):
                up.st["closes"].append(("up", err))

            def connect_error(self, sock, exc):
                up.st["closes"].append(("up-connect-error", exc))
                sock.data.close()

        self.up_handlers = Up()

    def open(self, sock):
        self.st.setdefault("downs", []).append(sock)
        up = bunsock.connect(hostname="127.0.0.1", port=self.port, socket=self.up_handlers,
                             data=sock, tls=self.tls, loop=self.loop)
        sock.data = up
        bunsock.relay(sock, up, **self.opts)

    def data(self, sock, buf):
        self.st["py_data"] += 1

    def close(self, sock, err):
        self.st["closes"].append(("down", err))


def make_proxy(loop, upstream_port, st, tls=None, listen_tls=None, **opts):
    return bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, tls=listen_tls,
                          socket=ProxyHandlers(loop, upstream_port, st, tls=tls, **opts))


@pytest.mark.parametrize("mode", MODES)
def test_64mib_both_ways_byte_exact(loop, clean, mode):
    total = 64 << 20
    st = {}
    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, allow_half_open=True,
                            socket=Peer(total, 1, st, "server"))
    proxy = make_proxy(loop, server.port, st, splice=splice_opt(mode))
    bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop, allow_half_open=True,
                    socket=Peer(total, 2, st, "client"))
    run_until(loop, lambda: "client" in st and "server" in st and len(st["closes"]) == 2,
              timeout=120, what="both peers finished and both relay sides closed")
    server.stop()
    proxy.stop()
    run(loop, 120)
    n_c, got_c, sent_c, err_c = st["client"]
    n_s, got_s, sent_s, err_s = st["server"]
    assert (n_c, n_s) == (total, total)
    assert got_s == sent_c and got_c == sent_s
    assert err_c is None and err_s is None
    assert sorted(st["closes"], key=str) == [("down", None), ("up", None)]
    assert st["py_data"] == 0
    assert relay_stats()["live"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_client_half_close_still_gets_the_reply(loop, clean, mode):
    """The client sends its request, then FIN; the upstream answers after reading the FIN: the
    reply reaches the client (the bug in the old examples/proxy.py)."""
    st = {"reply": b""}

    class Server:
        def open(self, sock):
            sock.data = b""

        def data(self, sock, buf):
            sock.data += buf

        def end(self, sock):
            sock.write(b"got %d bytes" % len(sock.data))

    class Client:
        def open(self, sock):
            sock.end(b"q" * 100000)

        def data(self, sock, buf):
            st["reply"] += buf

        def close(self, sock, err):
            st["client_err"] = err

    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Server())
    proxy = make_proxy(loop, server.port, st, splice=splice_opt(mode))
    bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop, socket=Client())
    run_until(loop, lambda: "client_err" in st and len(st["closes"]) == 2,
              what="the client and both relay sides closed")
    server.stop()
    proxy.stop()
    run(loop, 10)
    assert st["reply"] == b"got 100000 bytes"
    assert st["client_err"] is None
    assert sorted(st["closes"], key=str) == [("down", None), ("up", None)]


@pytest.mark.parametrize("mode", MODES)
def test_upstream_half_close_then_client_still_sends(loop, clean, mode):
    st = {"banner": b"", "late": b""}

    class Server:
        allow = True

        def open(self, sock):
            sock.end(b"banner")          # FIN first; keeps reading

        def data(self, sock, buf):
            st["late"] += buf

    class Client:
        def data(self, sock, buf):
            st["banner"] += buf

        def end(self, sock):
            sock.end(b"late bytes")

    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Server(),
                            allow_half_open=True)
    proxy = make_proxy(loop, server.port, st, splice=splice_opt(mode))
    bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop, socket=Client(),
                    allow_half_open=True)
    run_until(loop, lambda: st["late"] == b"late bytes" and len(st["closes"]) == 2,
              what="the late bytes arrived and both relay sides closed")
    server.stop()
    proxy.stop()
    run(loop, 10)
    assert st["banner"] == b"banner"
    assert st["late"] == b"late bytes"
    assert sorted(st["closes"], key=str) == [("down", None), ("up", None)]


@pytest.mark.parametrize("side", ["upstream", "client"])
@pytest.mark.parametrize("mode", MODES)
def test_reset_propagates(loop, clean, mode, side):
    st = {}

    class Server:
        def data(self, sock, buf):
            st["server_got"] = True
            if side == "upstream":
                sock.terminate()

        def close(self, sock, err):
            st["server_err"] = err

    class Client:
        def open(self, sock):
            sock.write(b"hello")

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            st["client_err"] = err

    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Server())
    proxy = make_proxy(loop, server.port, st, splice=splice_opt(mode))
    client = bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop, socket=Client())
    if side == "client":
        # Reset once the relay is carrying bytes end to end (the upstream has the hello).
        run_until(loop, lambda: st.get("server_got"), what="the hello reached the upstream")
        client.terminate()
    run_until(loop, lambda: "client_err" in st and "server_err" in st
              and len(st.get("closes", ())) == 2, what="all four sockets closed")
    server.stop()
    proxy.stop()
    run(loop, 10)
    closes = st["closes"]
    assert sorted(name for name, _ in closes) == ["down", "up"]     # each exactly once
    assert any(isinstance(err, ConnectionResetError) for _, err in closes)
    if side == "upstream":
        assert isinstance(st["client_err"], ConnectionResetError)
    else:
        assert isinstance(st["server_err"], ConnectionResetError)


@pytest.mark.parametrize("mode", MODES)
def test_stalled_upstream_bounds_what_the_relay_holds(loop, clean, mode):
    """The upstream never reads: the relay stops reading the client once the upstream side
    holds high_water_mark; memory stays bounded while the client keeps writing."""
    st = {}
    hi = 64 << 10
    chunk = os.urandom(1 << 20)

    class Server:
        def open(self, sock):
            sock.pause()                 # stalled: never reads

        def data(self, sock, buf):
            pass

    class Client:
        def open(self, sock):
            for _ in range(32):
                sock.write(chunk)        # 32 MiB: far more than the kernel buffers

        def data(self, sock, buf):
            pass

    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Server())
    proxy = make_proxy(loop, server.port, st, splice=splice_opt(mode), high_water_mark=hi)
    client = bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop, socket=Client())
    samples = []

    def sample():
        down = st["downs"][0]
        up = down.data
        # what the relay holds for the stalled side: in its sink, and read but not yet sent
        samples.append((up.buffered_amount, down.bytes_read - up.bytes_written))
        if len(samples) < 10:
            loop.call_later(0.1, sample)
        else:
            client.close()
            server.stop(True)
            proxy.stop(True)


    def filling():
        # The relay has read from the client more than it could hand to the stalled upstream.
        return st.get("downs") and st["downs"][0].bytes_read > st["downs"][0].data.bytes_written

    run_until(loop, filling, what="the relay started holding bytes for the stalled upstream")
    sample()
    run(loop, 10)
    assert len(samples) == 10
    assert client.bytes_written < 32 << 20          # the client was held back
    for buffered, held in samples:
        assert buffered <= hi, samples
        assert held <= hi, samples
    assert samples[-1][1] > 0                       # (and the relay did fill up to its mark)
    assert st["py_data"] == 0
    assert sorted(name for name, _ in st["closes"]) == ["down", "up"]


@pytest.mark.parametrize("mode", MODES)
def test_sniff_then_pipe_then_unpipe_loses_nothing(loop, clean, mode):
    """A proxy reads a header line in Python, relays the rest, unpipes in the middle and goes on
    with its `data` handler: the upstream receives every byte, in order."""
    total = 8 << 20
    st = {"got": hashlib.sha256(), "n": 0, "handled": 0}
    pump = Pump(total, 7)

    class Server:
        def data(self, sock, buf):
            st["got"].update(buf)
            st["n"] += len(buf)
            if st["n"] >= total // 2 and "unpiped" not in st:
                st["unpiped"] = down_sock["s"].unpipe()

        def end(self, sock):
            st["server_end"] = st["n"]

    class Up:
        def data(self, sock, buf):
            pass

    class Proxy:
        def open(self, sock):
            sock.data = {"hdr": b"", "up": bunsock.connect(hostname="127.0.0.1",
                                                           port=server.port, socket=Up(),
                                                           loop=loop)}
            down_sock["s"] = sock

        def data(self, sock, buf):
            d = sock.data
            if "header" not in st:
                d["hdr"] += buf
                if b"\n" in d["hdr"]:
                    head, _, rest = d["hdr"].partition(b"\n")
                    st["header"] = head
                    d["up"].write(rest)
                    sock.pipe(d["up"], splice=splice_opt(mode))
                return
            st["handled"] += len(buf)       # after unpipe(): back in Python
            d["up"].write(buf)

        def end(self, sock):
            sock.data["up"].end()

    class Client:
        def open(self, sock):
            sock.write(b"GET / HTTP/1.0\n")
            pump.pump(sock)

        def data(self, sock, buf):
            pass

        def drain(self, sock):
            pump.pump(sock)

    down_sock = {}
    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Server())
    proxy = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Proxy())
    bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop, socket=Client())
    run_until(loop, lambda: "server_end" in st, timeout=60, what="the upstream got the FIN")
    server.stop(True)
    proxy.stop(True)
    run(loop, 60)
    assert st["header"] == b"GET / HTTP/1.0"
    assert st["n"] == total
    assert st["got"].hexdigest() == pump.sent.hexdigest()
    assert st["unpiped"] is not None
    assert 0 < st["handled"] < total
    assert relay_stats()["live"] == 0


def test_pipe_argument_errors(loop, clean):
    class H:
        def data(self, sock, buf):
            pass

    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=H())
    a = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop, socket=H())
    b = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop, socket=H())
    c = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop, socket=H())
    with pytest.raises(TypeError):
        a.pipe("not a socket")
    with pytest.raises(ValueError):
        a.pipe(a)
    with pytest.raises(ValueError):
        a.pipe(b, high_water_mark=0)
    with pytest.raises(ValueError):
        a.pipe(b, high_water_mark=100, low_water_mark=200)
    with pytest.raises(TypeError):
        a.pipe(b, high_water_mark="big")
    assert a.pipe(b) is b
    assert a.piped_to is b
    with pytest.raises(ValueError):
        a.pipe(c)                    # already piped
    with pytest.raises(ValueError):
        c.pipe(b)                    # b already has a pipe into it
    with pytest.raises(ValueError):
        bunsock.relay(c, b)          # b -> c fine, c -> b not: neither is left piped
    assert c.piped_to is None and b.piped_to is None
    assert a.unpipe() is b and a.unpipe() is None and a.piped_to is None
    c.close()
    with pytest.raises(ValueError):
        a.pipe(c)                    # closed
    a.close()
    b.close()
    srv.stop(True)
    run(loop, 5)


def test_pipe_splice_true_refuses_tls(loop, clean):
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    class H:
        def data(self, sock, buf):
            pass

        def connect_error(self, sock, exc):
            pass

    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=H())
    a = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop, socket=H(), tls=ctx)
    b = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop, socket=H())
    if sys.platform.startswith("linux"):
        with pytest.raises(ValueError):
            a.pipe(b, splice=True)
    a.close()
    b.close()
    srv.stop(True)
    run(loop, 5)


def test_idle_timeout_counts_relayed_bytes(loop, clean):
    st = {"timeouts": [], "closes": []}

    class Server:
        def data(self, sock, buf):
            pass

    class Proxy:
        def open(self, sock):
            up = bunsock.connect(hostname="127.0.0.1", port=server.port, loop=loop,
                                 socket={"data": lambda s, b: None})
            sock.data = up
            bunsock.relay(sock, up)

        def data(self, sock, buf):
            pass

        def timeout(self, sock):
            st["timeouts"].append(loop.time() - t0)
            sock.close()

        def close(self, sock, err):
            st["closes"].append(err)

    class Client:
        def open(self, sock):
            sock.data = 0
            tick(sock)

        def data(self, sock, buf):
            pass

    def tick(sock):
        if sock.data < 8:                    # 0.8 s of traffic, one byte every 0.1 s
            sock.data += 1
            sock.write(b"x")
            loop.call_later(0.1, tick, sock)

    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Server())
    proxy = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Proxy(),
                           idle_timeout=0.3)
    t0 = loop.time()
    bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop, socket=Client())
    run_until(loop, lambda: st["closes"], what="the idle timeout closed the relayed socket")
    server.stop(True)
    proxy.stop()
    run(loop, 10)
    assert len(st["timeouts"]) == 1
    assert st["timeouts"][0] > 0.9           # not while bytes were relayed
    assert st["closes"] == [None]


@pytest.mark.parametrize("tls_side", ["client", "upstream"])
def test_tls_on_either_side(loop, clean, tls_side):
    trustme = pytest.importorskip("trustme")
    import ssl
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(sctx)
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    total = 8 << 20
    st = {}
    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                            socket=Peer(total, 3, st, "server"), allow_half_open=True,
                            tls=sctx if tls_side == "upstream" else None)
    proxy = make_proxy(loop, server.port, st, tls=cctx if tls_side == "upstream" else None,
                       listen_tls=sctx if tls_side == "client" else None)
    bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop,
                    socket=Peer(total, 4, st, "client"), allow_half_open=True,
                    tls=cctx if tls_side == "client" else None)
    run_until(loop, lambda: "client" in st and "server" in st and len(st["closes"]) == 2,
              timeout=60, what="both peers finished and both relay sides closed")
    server.stop()
    proxy.stop()
    run(loop, 60)
    n_c, got_c, sent_c, _ = st["client"]
    n_s, got_s, sent_s, _ = st["server"]
    assert (n_c, n_s) == (total, total)
    assert got_s == sent_c and got_c == sent_s
    assert st["py_data"] == 0
    assert sorted(name for name, _ in st["closes"]) == ["down", "up"]


def test_low_water_mark_drain_fires_before_empty(loop, clean):
    """connect(low_water_mark=): `drain` fires once the backlog is down to the mark, once per
    episode, while bytes are still buffered."""
    lwm = 256 << 10
    st = {"drains": [], "n": 0}
    total = 4 << 20

    class Slow:
        def data(self, sock, buf):
            st["n"] += len(buf)
            sock.pause()
            loop.call_later(0.002, sock.resume)

    class Client:
        def open(self, sock):
            s = pysocket.socket(fileno=os.dup(sock.fileno()))
            s.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_SNDBUF, 32 << 10)
            s.close()
            sock.write(os.urandom(total))

        def data(self, sock, buf):
            pass

        def drain(self, sock):
            st["drains"].append(sock.buffered_amount)
            if len(st["drains"]) == 1:
                sock.write(os.urandom(total))       # a new episode: one more drain

    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Slow())
    client = bunsock.connect(hostname="127.0.0.1", port=server.port, loop=loop, socket=Client(),
                             low_water_mark=lwm)
    assert client.low_water_mark == lwm
    run_until(loop, lambda: st["n"] >= 2 * total, timeout=60, what="the server read both rounds")
    client.close()
    server.stop(True)
    run(loop, 60)
    assert st["n"] == 2 * total
    assert len(st["drains"]) == 2
    assert all(b <= lwm for b in st["drains"])
    assert st["drains"][0] > 0                # fired before the backlog was empty


def test_low_water_mark_argument_errors():
    h = {"data": lambda s, b: None}
    with pytest.raises(ValueError):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=h, high_water_mark=10,
                       low_water_mark=20)
    with pytest.raises(TypeError):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=h, low_water_mark=1.5)
    with pytest.raises(ValueError):
        bunsock.connect(hostname="127.0.0.1", port=1, socket=h, low_water_mark=-1)


@pytest.mark.parametrize("mode", MODES)
def test_many_short_relayed_connections_close_once_each(loop, clean, mode):
    """300 request/FIN/reply cycles through relays, with the upstream closing in three different
    ways: every `close` fires exactly once per socket, nothing leaks."""
    cycles = 300
    st = {"replies": 0, "left": cycles}

    class Server:
        def open(self, sock):
            sock.data = b""

        def data(self, sock, buf):
            sock.data += buf

        def end(self, sock):
            k = len(sock.data) % 3
            sock.write(sock.data)
            if k == 1:
                sock.close()             # reply then close at once (flush attempt)
            elif k == 2:
                sock.end()               # reply then FIN

    class Client:
        def open(self, sock):
            n = sock.data
            sock.data = {"want": b"x" * (1 + n), "got": b""}
            sock.end(sock.data["want"])

        def data(self, sock, buf):
            sock.data["got"] += buf

        def close(self, sock, err):
            if err is None and sock.data["got"] == sock.data["want"]:
                st["replies"] += 1
            st["left"] -= 1
            if st["left"] == 0:
                server.stop(True)
                proxy.stop(True)

    server = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Server())
    proxy = make_proxy(loop, server.port, st, splice=splice_opt(mode))
    for i in range(cycles):
        bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop, socket=Client(),
                        data=i, allow_half_open=True)
    run(loop, 60)
    assert st["replies"] == cycles
    names = [n for n, _ in st["closes"]]
    assert names.count("down") == cycles and names.count("up") == cycles
    assert all(err is None for _, err in st["closes"])


SPLICE_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="splice(2) is Linux only")


@SPLICE_ONLY
def test_upgrade_tls_on_a_spliced_socket_is_refused(loop, clean):
    import ssl
    from conftest import run_until
    ctx = ssl.create_default_context()
    st = {}

    class Echo:
        def data(self, sock, buf):
            sock.write(buf)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Echo())
    proxy = make_proxy(loop, srv.port, st, splice=True)

    class C:
        def open(self, sock):
            sock.write(b"x")

        def data(self, sock, buf):
            st["got"] = buf

    c = bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop, socket=C())
    run_until(loop, lambda: "got" in st)
    down = st["downs"][0]
    for s in (down, down.data):       # the client side and the upstream side of the relay
        with pytest.raises(ValueError, match="splice"):
            s.upgrade_tls(ctx, server_hostname="localhost")
    c.write(b"still relayed")
    run_until(loop, lambda: st["got"].endswith(b"relayed"))
    c.close()
    run_until(loop, lambda: len(st["closes"]) == 2)
    srv.stop(True)
    proxy.stop(True)
    run(loop, 5)


@SPLICE_ONLY
def test_pooled_splice_pipes_are_closed_after_an_idle_period(loop, clean):
    from bunsock._loop import _relay_pool_idle
    from conftest import run_until
    _relay_pool_idle(0.3)
    try:
        st = {}
        srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Peer(4 << 20, 1, st, "srv"),
                             allow_half_open=True)
        proxy = make_proxy(loop, srv.port, st, splice=True)
        clients = [bunsock.connect(hostname="127.0.0.1", port=proxy.port, loop=loop,
                                   socket=Peer(4 << 20, 2, st, "cli%d" % i), allow_half_open=True)
                   for i in range(3)]
        run_until(loop, lambda: len(st["closes"]) == 6 and all("cli%d" % i in st for i in range(3)))
        assert relay_stats()["live"] == 0
        assert relay_stats()["pooled"] >= 1      # kept for the next relay...
        run_until(loop, lambda: relay_stats()["pooled"] == 0, timeout=5)   # ...not forever
        srv.stop(True)
        proxy.stop(True)
        del clients
        run(loop, 5)
    finally:
        _relay_pool_idle(10.0)


@pytest.mark.parametrize("mode", MODES)
def test_unpipe_leaves_no_drain_owed_for_relayed_bytes(loop, clean, mode):
    """The relay owns its destination's flow control (no `drain` while piped into). After
    unpipe() the bytes it had buffered still go out, and no user `drain` fires for them."""
    from conftest import run_until
    drains, got, st = [], [0], {}
    sink = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, pause_on_connect=True,
                          recv_buffer_size=16 << 10, socket={
                              "open": lambda s: st.setdefault("c", s),
                              "data": lambda s, b: got.__setitem__(0, got[0] + len(b))})
    b = bunsock.connect(hostname="127.0.0.1", port=sink.port, loop=loop,
                        send_buffer_size=16 << 10,
                        socket={"data": lambda s, buf: None, "drain": drains.append})
    run_until(loop, lambda: "c" in st and b.ready_state == "open")

    def a_open(a):
        st["a"] = a
        a.pipe(b, high_water_mark=64 << 10, splice=splice_opt(mode))

    src = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                         socket={"open": a_open, "data": lambda s, buf: None})
    x = bunsock.connect(hostname="127.0.0.1", port=src.port, loop=loop,
                        socket={"data": lambda s, buf: None})
    run_until(loop, lambda: "a" in st and x.ready_state == "open")
    x.write(b"z" * (4 << 20))
    # the relay fills b up to its mark and holds the source: b is backed up
    run_until(loop, lambda: b.buffered_amount > 0 and x.buffered_amount > 0)
    assert st["a"].unpipe() is b
    relayed = st["a"].bytes_read
    st["c"].resume()
    run_until(loop, lambda: got[0] >= relayed and b.buffered_amount == 0)
    loop.run_once(0.05)
    assert got[0] == relayed
    assert drains == []
    for s in (x, b, st["a"], st["c"]):
        s.close()
    sink.stop(True)
    src.stop(True)
    run(loop)
