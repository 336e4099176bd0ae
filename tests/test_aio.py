"""bunsock.aio: bunsock sockets driven from inside a running asyncio loop."""
import asyncio
import socket

import pytest

import bunsock
import bunsock.aio


def run_async(coro, timeout=20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_connect_resolves_at_open_and_handlers_share_the_thread():
    async def main():
        got = asyncio.get_running_loop().create_future()

        class Echo:
            def data(self, sock, buf):
                sock.write(buf)

        class Client:
            def data(self, sock, buf):
                if not got.done():
                    got.set_result(buf)       # a handler resolving an asyncio future

        srv = await bunsock.aio.listen(hostname="127.0.0.1", port=0, socket=Echo())
        sock = await bunsock.aio.connect(hostname="127.0.0.1", port=srv.port, socket=Client())
        assert sock.ready_state == "open"
        sock.write(b"via asyncio")
        assert await got == b"via asyncio"
        sock.close()
        srv.stop(True)

    run_async(main())


def test_connect_raises_the_connect_error():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await bunsock.aio.connect(hostname="127.0.0.1", port=port,
                                      socket={"data": lambda s, b: None})

    run_async(main())


def test_drained_waits_for_the_buffer_to_flush():
    class Sink:
        def __init__(self):
            self.socks, self.total = [], 0

        def open(self, sock):
            self.socks.append(sock)
            sock.pause()                      # read nothing until told: the writer backs up

        def data(self, sock, buf):
            self.total += len(buf)

    async def main():
        sink = Sink()
        srv = await bunsock.aio.listen(hostname="127.0.0.1", port=0, socket=sink)
        sock = await bunsock.aio.connect(hostname="127.0.0.1", port=srv.port,
                                         socket={"data": lambda s, b: None})
        sock.write(b"x" * (16 << 20))
        assert sock.buffered_amount > 0
        waiter = asyncio.ensure_future(bunsock.aio.drained(sock))
        await asyncio.sleep(0.2)
        assert not waiter.done()              # the peer is paused: nothing can drain
        for s in sink.socks:
            s.resume()
        await waiter
        assert sock.buffered_amount == 0
        while sink.total < 16 << 20:
            await asyncio.sleep(0.01)
        sock.close()
        srv.stop(True)

    run_async(main())


def test_timers_fire_inside_asyncio():
    async def main():
        loop = bunsock.aio.get_loop()
        fired = asyncio.get_running_loop().create_future()
        loop.call_later(0.05, fired.set_result, "tick")
        assert await asyncio.wait_for(fired, 5) == "tick"

    run_async(main())


def test_timeout_set_from_a_coroutine_fires_without_other_io():
    """sock.timeout() called outside a handler must wake the bridged loop by itself."""
    async def main():
        fired = asyncio.get_running_loop().create_future()

        srv = await bunsock.aio.listen(hostname="127.0.0.1", port=0,
                                       socket={"data": lambda s, b: None})
        sock = await bunsock.aio.connect(
            hostname="127.0.0.1", port=srv.port,
            socket={"data": lambda s, b: None,
                    "timeout": lambda s: fired.done() or fired.set_result(True)})
        await asyncio.sleep(0.05)            # the bridge is idle: nothing else will wake it
        t0 = asyncio.get_running_loop().time()
        sock.timeout(0.2)
        assert await asyncio.wait_for(fired, 3)
        assert asyncio.get_running_loop().time() - t0 < 2.0
        sock.close()
        srv.stop(True)

    run_async(main())


def test_connect_timeout_bounds_slow_name_resolution(monkeypatch):
    import time as _time
    from bunsock import _resolve

    real = _resolve.lookup

    def slow_lookup(host, port, passive=False):
        _time.sleep(3)                       # a resolver that hangs (in the resolver thread)
        return real("127.0.0.1", port, passive)

    monkeypatch.setattr(_resolve, "lookup", slow_lookup)

    async def main():
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await bunsock.aio.connect(hostname="slow.example", port=9, timeout=0.3,
                                      socket={"data": lambda s, b: None})
        assert asyncio.get_running_loop().time() - t0 < 2.0

    run_async(main())


def _tls_pair():
    import ssl
    import trustme
    ca = trustme.CA()
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(sctx)
    return ca, sctx


def test_tls_connect_raises_the_handshake_error():
    import ssl
    _, sctx = _tls_pair()
    untrusted = ssl.create_default_context()       # does not trust the server's CA

    async def main():
        srv = await bunsock.aio.listen(hostname="127.0.0.1", port=0, tls=sctx,
                                       socket={"data": lambda s, b: None})
        with pytest.raises(ssl.SSLCertVerificationError):
            await bunsock.aio.connect(hostname="127.0.0.1", port=srv.port, tls=untrusted,
                                      socket={"data": lambda s, b: None})
        srv.stop(True)

    run_async(main())


def test_tls_connect_to_a_stalled_handshake_is_bounded_by_timeout():
    import ssl
    ca, _ = _tls_pair()
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    mute = socket.socket()                   # accepts (kernel backlog) but never answers
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)

    async def main():
        with pytest.raises(TimeoutError):
            await bunsock.aio.connect(hostname="127.0.0.1", port=mute.getsockname()[1],
                                      tls=cctx, timeout=0.3, socket={"data": lambda s, b: None})

    try:
        run_async(main())
    finally:
        mute.close()


def test_async_def_handlers_are_rejected_pointing_to_aio():
    async def data(sock, buf):
        pass

    with pytest.raises(TypeError, match="bunsock.aio"):
        bunsock.listen(hostname="127.0.0.1", port=0, socket={"data": data})
    with pytest.raises(TypeError, match="async"):
        bunsock.connect(hostname="127.0.0.1", port=9, socket={"data": data})

    class H:
        async def drain(self, sock):
            pass

        def data(self, sock, buf):
            pass

    lp = bunsock.Loop()
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket={"data": lambda s, b: None},
                         loop=lp)
    try:
        with pytest.raises(TypeError, match="'drain'"):
            srv.reload(H())
    finally:
        srv.stop()
        lp.close()


def test_wait_closed_resolves_when_the_last_connection_has_closed():
    import asyncio

    async def main():
        accepted = []
        srv = await bunsock.aio.listen(hostname="127.0.0.1", port=0,
                                       socket={"open": accepted.append,
                                               "data": lambda s, b: None})
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        while not accepted:
            await asyncio.sleep(0.01)
        srv.stop()
        waiter = asyncio.ensure_future(bunsock.aio.wait_closed(srv))
        await asyncio.sleep(0.1)
        assert not waiter.done()           # a connection is still open
        w.close()
        await asyncio.wait_for(waiter, 10)
        assert srv.closed
        await bunsock.aio.wait_closed(srv)  # already closed: returns at once

    asyncio.run(main())


@pytest.mark.parametrize("phase", ["lookup", "handshake"])
def test_cancelled_connect_leaves_no_connection_behind(monkeypatch, phase):
    """wait_for() times out during the lookup (or the TLS handshake): the attempt is aborted and
    whatever it opened is closed; the server is left with no connection."""
    import time as _time
    from bunsock import _resolve

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(5)
    port = srv.getsockname()[1]
    kw = {}
    if phase == "lookup":
        real = _resolve.lookup

        def slow_lookup(host, p, passive=False):
            _time.sleep(0.5)
            return real("127.0.0.1", p, passive)

        monkeypatch.setattr(_resolve, "lookup", slow_lookup)
        host = "slow.example"
    else:
        import ssl
        host = "127.0.0.1"
        kw = {"tls": ssl.create_default_context()}     # the server never answers the hello

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(bunsock.aio.connect(hostname=host, port=port, socket={
                "data": lambda s, b: None}, **kw), 0.2)
        await asyncio.sleep(0.8)       # the lookup finishes meanwhile

    try:
        run_async(main())
        srv.settimeout(0.5 if phase == "lookup" else 5)
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            return                          # never connected: nothing to close
        conn.settimeout(5)
        with conn:
            while conn.recv(4096):          # a TLS hello may come first, then EOF
                pass
    finally:
        srv.close()
