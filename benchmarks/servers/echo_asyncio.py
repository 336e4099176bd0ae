"""Echo server on plain asyncio (asyncio.Protocol): the baseline most Python code runs on.

    python echo_asyncio.py [PORT]     (0 or absent: any free port; the bound port is printed)
"""
import asyncio
import resource
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve(port):
    loop = asyncio.get_running_loop()
    # backlog=1024 as in bunsock and the C floor (asyncio's default of 100 drops SYNs under a burst).
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def raise_nofile():
    # 10,000 idle connections need more descriptors than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    raise_nofile()
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
