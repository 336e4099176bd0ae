"""TCP proxy written with handlers: `data` -> write, pause/resume on `drain`, half-close right.

    python examples/proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT

This is the hand-written version, to show the flow control. For real use, relay in C instead
(no Python call per chunk, bounded memory, same half-close and reset rules):
`bunsock.relay(client, upstream)` in `open`, or `python -m bunsock proxy`.
"""
import sys
from typing import Optional, Tuple

import bunsock

TARGET: Tuple[str, int] = ("", 0)   # set from the command line
LIMIT = 256 * 1024     # pause the reading side while the other holds this much


class Side:
    """Both directions are alike: sock.data is the other socket."""

    def data(self, sock: bunsock.Socket, buf: bytes) -> None:
        other = sock.data
        other.write(buf)
        if other.buffered_amount > LIMIT:
            sock.pause()              # the other side is slow: stop reading this one

    def drain(self, sock: bunsock.Socket) -> None:
        # low_water_mark: this fires while the backlog is still LIMIT/4, so the pipe stays full
        sock.data.resume()

    def end(self, sock: bunsock.Socket) -> None:
        # Half-close: the FIN goes on after what was already written; the other direction keeps
        # flowing (a client that sends its request then FIN still gets the reply). This needs
        # allow_half_open=True, or the FIN would close this socket before the reply came back.
        sock.data.end()

    def close(self, sock: bunsock.Socket, err: Optional[BaseException]) -> None:
        other = sock.data
        if other is None:
            return
        if err is not None:
            other.terminate()         # a reset on one side resets the other
        elif other.ready_state == "open":
            other.end()


class Upstream(Side):
    def open(self, sock: bunsock.Socket) -> None:
        sock.data.resume()            # the client was paused until there is somewhere to write

    def connect_error(self, sock: bunsock.Socket, exc: BaseException) -> None:
        sock.data.data = None
        sock.data.close()


class Downstream(Side):
    def open(self, sock: bunsock.Socket) -> None:
        sock.pause()                  # nothing to forward to until upstream is open
        sock.data = bunsock.connect(hostname=TARGET[0], port=TARGET[1], socket=Upstream(),
                                    data=sock, allow_half_open=True,
                                    low_water_mark=LIMIT // 4)


if __name__ == "__main__":
    TARGET = (sys.argv[2], int(sys.argv[3]))
    server = bunsock.listen(hostname="127.0.0.1", port=int(sys.argv[1]), socket=Downstream(),
                            allow_half_open=True, low_water_mark=LIMIT // 4)
    print("proxy :%s -> %s:%d" % (server.port, TARGET[0], TARGET[1]))
    bunsock.run()
