"""A game server: TCP for joining and reliable events, UDP for positions and state, rooms as
bunsock.Group, one fixed-rate tick that broadcasts to every room.

    python examples/game_server.py [PORT]          (TCP and UDP on the same port number)

TCP, one command per line:
    JOIN <room> <name>   ->  WELCOME <id>            (the room hears JOINED <id> <name>)
    SAY <text>           ->  the room hears CHAT <name> <text>
                             (and LEFT <id> <name> when a player disconnects)
UDP datagrams:
    client -> server     <id> <x> <y>                (latest position; also registers the endpoint)
    server -> client     STATE <tick> <id>:<x>,<y> ...   every tick, to each player of the room

The TCP side is framed by the loop (framing=lines): `data` gets one command at a time, a line
longer than 512 bytes closes the connection (FramingError), and replies are written with
write_frame (the newline is added in C). Reliable events are queued per room and written once per
tick with one Group.write_frame (one Python call per room, however many players); the state goes
out with one send_many per room. high_water_mark bounds what the server holds for a player whose
connection stalls: past 64 KiB that player misses events (whole ones) rather than growing memory.
"""
import itertools
import sys
from typing import Any, Dict, List, Optional, Tuple

import bunsock
from bunsock import framing

TICK_HZ = 20


class Room:
    def __init__(self, name: str) -> None:
        self.name = name
        self.group = bunsock.Group()      # the players' TCP sockets
        self.players: Dict[int, Player] = {}     # id -> Player
        self.events: List[str] = []                  # reliable events for the next tick


class Player:
    def __init__(self, pid: int, name: str, room: Room, sock: bunsock.Socket) -> None:
        self.id, self.name, self.room, self.sock = pid, name, room, sock
        self.pos = (0.0, 0.0)
        self.udp: Optional[Tuple[int, str]] = None    # (port, address) once a datagram came


rooms: Dict[str, Room] = {}
players: Dict[int, Player] = {}           # id -> Player
next_id = itertools.count(1)
tick_no = 0


class Lobby:
    """TCP handlers: line commands, joins and leaves."""

    def open(self, sock: bunsock.Socket) -> None:
        sock.data = {"player": None}
        sock.timeout(60)

    def data(self, sock: bunsock.Socket, line: bytes) -> None:
        # One whole line per call (framing=): no buffering or splitting here.
        self.command(sock, sock.data, line.strip().decode("utf-8", "replace"))

    def command(self, sock: bunsock.Socket, st: Dict[str, Any], line: str) -> None:
        verb, _, rest = line.partition(" ")
        p = st["player"]
        if verb == "JOIN" and p is None:
            room_name, _, name = rest.partition(" ")
            if not room_name or not name:
                sock.write_frame(b"ERROR usage: JOIN <room> <name>")
                return
            room = rooms.get(room_name) or rooms.setdefault(room_name, Room(room_name))
            p = st["player"] = Player(next(next_id), name[:32], room, sock)
            players[p.id] = room.players[p.id] = p
            room.group.add(sock)
            sock.write_frame(b"WELCOME %d" % p.id)
            room.events.append("JOINED %d %s" % (p.id, p.name))
        elif verb == "SAY" and p is not None:
            p.room.events.append("CHAT %s %s" % (p.name, rest[:200]))
        else:
            sock.write_frame(b"ERROR unknown or out-of-order command")

    def timeout(self, sock: bunsock.Socket) -> None:
        sock.write_frame(b"BYE idle")
        sock.end()

    def close(self, sock: bunsock.Socket, err: Optional[BaseException]) -> None:
        # The socket has already left its room's Group; the game state is ours to clean up.
        p = sock.data and sock.data.get("player")
        if p is not None:
            del players[p.id]
            del p.room.players[p.id]
            p.room.events.append("LEFT %d %s" % (p.id, p.name))
            if not p.room.players:
                del rooms[p.room.name]


class State:
    """UDP handlers: positions in."""

    def data(self, sock: bunsock.UdpSocket, buf: bytes, port: int, address: str) -> None:
        try:
            pid, x, y = buf.split()
            p = players.get(int(pid))
            if p is None:
                return
            p.pos = (float(x), float(y))
        except ValueError:
            return                        # a malformed datagram is dropped, as UDP would
        p.udp = (port, address)


def tick(udp: bunsock.UdpSocket) -> None:
    global tick_no
    tick_no += 1
    for room in list(rooms.values()):
        for event in room.events:
            room.group.write_frame(event.encode())   # one call per event for the whole room
        room.events.clear()
        state = ("STATE %d " % tick_no + " ".join(
            "%d:%.1f,%.1f" % (p.id, p.pos[0], p.pos[1]) for p in room.players.values())).encode()
        udp.send_many([(state,) + p.udp for p in room.players.values() if p.udp is not None])


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = bunsock.listen(hostname="127.0.0.1", port=port, socket=Lobby(),
                            framing=framing.lines(max_size=512), high_water_mark=64 * 1024)
    udp = bunsock.udp_socket(hostname="127.0.0.1", port=server.port or 0, socket=State())
    bunsock.call_every(1 / TICK_HZ, tick, udp)
    print("game server: tcp+udp on port", server.port)
    bunsock.run()


if __name__ == "__main__":
    main()
