"""Fixed-rate game loop: 20 ticks a second, each tick broadcast to every connected player.

    python examples/game_tick.py [PORT]      then: nc 127.0.0.1 PORT
"""
import sys

import bunsock

players = set()
state = {"tick": 0}


class Player:
    def open(self, sock):
        players.add(sock)
        sock.timeout(30)                  # drop players idle for 30 s

    def data(self, sock, buf):
        state["last_input"] = buf.strip()

    def timeout(self, sock):
        sock.end(b"idle too long\n")

    def close(self, sock, err):
        players.discard(sock)


def tick():
    state["tick"] += 1
    frame = b"tick %d\n" % state["tick"]
    for p in players:                     # corked: each player's frame is one send
        p.write(frame)


if __name__ == "__main__":
    server = bunsock.listen(hostname="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 0,
                            socket=Player())
    bunsock.call_every(0.05, tick).unref()   # the ticker alone does not keep the process alive
    print("game server on port", server.port)
    bunsock.run()
