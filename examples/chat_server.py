"""A line-based chat server: every line a client sends goes to everyone else.

    python examples/chat_server.py [PORT]
    nc 127.0.0.1 PORT                            (then type; /nick NAME renames you)

framing=lines makes `data` get one whole line at a time (the loop buffers partial lines and
splits reads in C); a line longer than 1 KiB closes that client with FramingError instead of
growing a buffer. Group.write_frame sends each message to the whole room with one call; the
newline is added in C. high_water_mark bounds what the server holds for a client that stops
reading: past 256 KiB that client misses messages (whole ones: Group never tears a message)
instead of growing the server's memory.
"""
import itertools
import sys
from typing import Optional

import bunsock
from bunsock import framing

room = bunsock.Group()
ids = itertools.count(1)


class Chat:
    def open(self, sock: bunsock.Socket) -> None:
        sock.data = "guest%d" % next(ids)
        sock.write_frame(b"* welcome, you are " + sock.data.encode())
        room.write_frame(b"* %s joined" % sock.data.encode())
        room.add(sock)

    def data(self, sock: bunsock.Socket, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if text.startswith("/nick "):
            old, sock.data = sock.data, text[6:].strip()[:32] or sock.data
            room.write_frame(b"* %s is now %s" % (old.encode(), sock.data.encode()))
        elif text:
            room.write_frame(("<%s> %s" % (sock.data, text)).encode(), exclude=sock)

    def error(self, sock: bunsock.Socket, exc: BaseException) -> None:
        print("client %s: %s" % (sock.data, exc), file=sys.stderr)

    def close(self, sock: bunsock.Socket, err: Optional[BaseException]) -> None:
        # The socket has left the Group already.
        room.write_frame(b"* %s left" % sock.data.encode())


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = bunsock.listen(hostname="127.0.0.1", port=port, socket=Chat(),
                            framing=framing.lines(max_size=1024), high_water_mark=256 * 1024)
    print("chat server on port", server.port)
    bunsock.run()


if __name__ == "__main__":
    main()
