"""The handler-style proxy on uvloop (asyncio Protocols), for benchmarks/proxy_bench.py.

    python benchmarks/servers/proxy_uvloop.py LISTEN_PORT TARGET_HOST TARGET_PORT
"""
import asyncio
import sys

import uvloop

LIMIT = 1 << 20


class Side(asyncio.Protocol):
    def __init__(self):
        self.t = None
        self.other = None
        self.early = []

    def connection_made(self, t):
        self.t = t

    def data_received(self, data):
        if self.other is None or self.other.t is None:
            self.early.append(data)
            return
        self.other.t.write(data)

    def pause_writing(self):
        self.other.t.pause_reading()

    def resume_writing(self):
        self.other.t.resume_reading()

    def eof_received(self):
        if self.other is not None and self.other.t is not None and self.other.t.can_write_eof():
            self.other.t.write_eof()
        return True      # half-open: the other direction keeps flowing

    def connection_lost(self, exc):
        if self.other is not None and self.other.t is not None:
            self.other.t.close()


class Down(Side):
    def connection_made(self, t):
        super().connection_made(t)
        t.pause_reading()
        asyncio.ensure_future(self.connect())

    async def connect(self):
        loop = asyncio.get_running_loop()
        up = Side()
        up.other = self
        self.other = up
        try:
            await loop.create_connection(lambda: up, TARGET[0], TARGET[1])
        except OSError:
            self.t.close()
            return
        up.t.set_write_buffer_limits(LIMIT)
        self.t.set_write_buffer_limits(LIMIT)
        for d in self.early:
            up.t.write(d)
        self.t.resume_reading()


async def main(port):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Down, "127.0.0.1", port)
    print("proxy :%d -> %s:%d" % (srv.sockets[0].getsockname()[1], TARGET[0], TARGET[1]),
          flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    TARGET = (sys.argv[2], int(sys.argv[3]))
    uvloop.install()
    asyncio.run(main(int(sys.argv[1])))
