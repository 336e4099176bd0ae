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
