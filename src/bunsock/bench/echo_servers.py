"""Echo servers that ``python -m bunsock bench`` compares, one per process.

    python /path/to/bunsock/bench/echo_servers.py KIND [PORT] [CPU]     KIND: bunsock, asyncio, uvloop

Run by file path rather than ``-m bunsock...`` so that the asyncio and uvloop servers do not
import bunsock (its import and memory must not count against them). Prints the bound port.
CPU pins the process before anything else runs, so every thread it makes inherits the pin.
"""
import os
import sys

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # Running as a script puts the package directory first on sys.path; module names there
    # (bench, _api, ...) must not shadow anything the servers import.
    del sys.path[0]


def _raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # many connections need more descriptors than the usual 1024
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve_bunsock(port):
    import bunsock

    class Echo:
        def data(self, sock, buf):
            sock.write(buf)

    server = bunsock.listen(hostname="127.0.0.1", port=port, socket=Echo())
    print(server.port, flush=True)
    bunsock.run()


def _asyncio_main(port):
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    return main()


def serve_asyncio(port):
    import asyncio
    asyncio.run(_asyncio_main(port))


def serve_uvloop(port):
    import uvloop
    uvloop.run(_asyncio_main(port))


KINDS = {"bunsock": serve_bunsock, "asyncio": serve_asyncio, "uvloop": serve_uvloop}


def main(argv):
    if not argv or argv[0] not in KINDS:
        sys.exit("usage: echo_servers.py {%s} [PORT] [CPU]" % ",".join(KINDS))
    if len(argv) > 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(argv[2])})
    _raise_nofile()
    try:
        KINDS[argv[0]](int(argv[1]) if len(argv) > 1 else 0)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
