"""Fixed-rate game loop: 20 ticks a second, each tick broadcast to every connected player.

    python examples/game_tick.py [PORT]      then: nc 127.0.0.1 PORT
"""
import sys
from typing import Dict, Optional, Set, Union

import bunsock

players: Set[bunsock.Socket] = set()
state: Dict[str, Union[int, bytes]] = {"tick": 0}


class Player:
    def open(self, sock: bunsock.Socket) -> None:
        players.add(sock)
        sock.timeout(30)                  # drop players idle for 30 s

    def data(self, sock: bunsock.Socket, buf: bytes) -> None:
        state["last_input"] = buf.strip()

    def timeout(self, sock: bunsock.Socket) -> None:
        sock.end(b"idle too long\n")

    def close(self, sock: bunsock.Socket, err: Optional[BaseException]) -> None:
        players.discard(sock)


def tick() -> None:
    n = int(state["tick"]) + 1
    state["tick"] = n
    frame = b"tick %d\n" % n
    for p in players:                     # corked: each player's frame is one send
        p.write(frame)


if __name__ == "__main__":
    server = bunsock.listen(hostname="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 0,
                            socket=Player())
    bunsock.call_every(0.05, tick).unref()   # the ticker alone does not keep the process alive
    print("game server on port", server.port)
    bunsock.run()
