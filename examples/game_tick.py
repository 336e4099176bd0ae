"""Fixed-rate game loop: 20 ticks a second, each tick broadcast to every connected player.

    python examples/game_tick.py [PORT]      then: nc 127.0.0.1 PORT

Backpressure: a player whose connection cannot keep up (or who never reads) must not make the
server buffer frames for it without bound. Each player may have at most MAX_BACKLOG bytes
waiting; Group.write skips a player whose backlog a frame would push past that (a game frame is
superseded by the next one, so skipping is right), and a player who missed LAG_LIMIT frames in
a row is disconnected.
"""
import sys

import bunsock

MAX_BACKLOG = 64 * 1024                   # bytes buffered per player before frames are skipped
LAG_LIMIT = 100                           # frames in a row (5 s) before a lagging player is dropped

players = bunsock.Group()
state = {"tick": 0, "missed": {}}


class Player:
    def open(self, sock):
        players.add(sock)
        sock.timeout(30)                  # drop players idle for 30 s

    def data(self, sock, buf):
        state["last_input"] = buf.strip()

    def drain(self, sock):
        state["missed"].pop(sock, None)   # caught up

    def timeout(self, sock):
        sock.end(b"idle too long\n")

    def close(self, sock, err):
        state["missed"].pop(sock, None)   # (a closed socket leaves the Group by itself)


def tick():
    state["tick"] += 1
    frame = b"tick %d\n" % state["tick"]
    lagging = []
    players.write(frame, lagging)         # one call; every player's frame leaves as one send
    for sock in lagging:
        missed = state["missed"][sock] = state["missed"].get(sock, 0) + 1
        if missed >= LAG_LIMIT:
            sock.close()                  # too far behind: drop what it has buffered, free it


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = bunsock.listen(hostname="127.0.0.1", port=port, socket=Player(),
                            high_water_mark=MAX_BACKLOG)
    bunsock.call_every(0.05, tick).unref()   # the ticker alone does not keep the process alive
    print("game server on port", server.port)
    bunsock.run()


if __name__ == "__main__":
    main()
