"""Echo server: one handler table shared by every connection.

    python examples/echo_server.py [PORT]
"""
import sys
from typing import Optional

import bunsock

LIMIT = 1 << 20                           # bytes buffered per client before we stop reading it


class Echo:
    def open(self, sock: bunsock.Socket) -> None:
        sock.data = {"bytes": 0}          # per-connection context lives on sock.data

    def data(self, sock: bunsock.Socket, buf: bytes) -> None:
        sock.data["bytes"] += len(buf)
        sock.write(buf)                   # never drops: what the kernel can't take waits in C
        if sock.buffered_amount > LIMIT:  # ...so bound it: a client that sends and never reads
            sock.pause()                  # is not read until it has taken what we owe it

    def drain(self, sock: bunsock.Socket) -> None:
        sock.resume()

    def close(self, sock: bunsock.Socket, err: Optional[BaseException]) -> None:
        print("%s:%s gone after %d bytes (%s)" % (sock.remote_address, sock.remote_port,
                                                  sock.data["bytes"], err or "clean"))


if __name__ == "__main__":
    server = bunsock.listen(hostname="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 0,
                            socket=Echo(), idle_timeout=60)
    print("echo server on port", server.port)
    try:
        bunsock.run()
    except KeyboardInterrupt:
        server.stop(True)
