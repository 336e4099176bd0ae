"""Fixed-rate game loop: 20 ticks a second, each tick broadcast to every connected player.

    python examples/game_tick.py [PORT]      then: nc 127.0.0.1 PORT

Backpressure: a player whose connection cannot keep up (or who never reads) must not make the
server buffer frames for it without bound. Each player may have at most MAX_BACKLOG bytes
waiting; Group.write skips a player whose backlog a frame would push past that (a game frame is
superseded by the next one, so skipping is right), and a player who missed LAG_LIMIT frames in
a row is disconnected.
"""
import sys
from typing import Dict, List, Optional

import bunsock

MAX_BACKLOG = 64 * 1024                   # bytes buffered per player before frames are skipped
LAG_LIMIT = 100                           # frames in a row (5 s) before a lagging player is dropped

players = bunsock.Group()
tick_no = 0
last_input = b""
missed: Dict[bunsock.Socket, int] = {}  # frames skipped in a row, per lagging player


class Player:
    def open(self, sock: bunsock.Socket) -> None:
        players.add(sock)
        sock.timeout(30)                  # drop players idle for 30 s

    def data(self, sock: bunsock.Socket, buf: bytes) -> None:
        global last_input
        last_input = buf.strip()

    def drain(self, sock: bunsock.Socket) -> None:
        missed.pop(sock, None)            # caught up

    def timeout(self, sock: bunsock.Socket) -> None:
        sock.end(b"idle too long\n")

    def close(self, sock: bunsock.Socket, err: Optional[BaseException]) -> None:
        missed.pop(sock, None)            # (a closed socket leaves the Group by itself)


def tick() -> None:
    global tick_no
    tick_no += 1
    frame = b"tick %d\n" % tick_no
    lagging: List[bunsock.Socket] = []
    players.write(frame, lagging)         # one call; every player's frame leaves as one send
    for sock in lagging:
        missed[sock] = missed.get(sock, 0) + 1
        if missed[sock] >= LAG_LIMIT:
            sock.close()                  # too far behind: drop what it has buffered, free it


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = bunsock.listen(hostname="127.0.0.1", port=port, socket=Player(),
                            high_water_mark=MAX_BACKLOG)
    bunsock.call_every(0.05, tick).unref()   # the ticker alone does not keep the process alive
    print("game server on port", server.port)
    bunsock.run()


if __name__ == "__main__":
    main()
