"""A loop's objects belong to the thread running it: every public mutator, called from another
thread while the loop runs, raises RuntimeError (docs/API.md) and changes nothing. The list of
mutators is read from the stubs, so a new one without its check fails here."""
import ast
import os
import socket as pysocket
import threading

import pytest

import bunsock
from conftest import run

STUBS = os.path.join(os.path.dirname(bunsock.__file__), "__init__.pyi")

# Public callables that change nothing (or are documented as callable from any thread).
NOT_MUTATORS = {
    "Loop.time", "Loop.stats", "Loop.next_timeout", "Loop.fileno", "Loop.stop",
    "Loop.call_soon_threadsafe", "Loop.__init__", "Loop.run", "Loop.run_once", "Loop.close",
    "Timer.when", "Timer.__repr__", "Loop.__repr__",
    "Socket.fileno", "Socket.getsockopt", "Socket.tcp_info", "Socket.__enter__",
    "Socket.getpeercert", "Socket.getcertificate", "Socket.cipher", "Socket.version",
    "Listener.fileno", "Listener.__enter__",
    "UdpSocket.fileno", "UdpSocket.getsockopt",
    "Group.__init__", "Group.__len__", "Group.__contains__", "Group.__iter__",
    # module level: the default loop is per thread, so these act on the caller's own loop
    "get_loop", "backend", "call_later", "call_every", "call_soon", "serve", "run",
    "TcpInfo.count", "TcpInfo.index",
}


def stub_callables():
    tree = ast.parse(open(STUBS).read())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    deco = {getattr(d, "id", None) or getattr(d, "attr", None)
                            for d in item.decorator_list}
                    if "setter" in deco:
                        names.add("%s.%s=" % (node.name, item.name))     # a settable property
                    elif "property" not in deco:
                        names.add("%s.%s" % (node.name, item.name))
    return names


def test_every_public_mutator_refuses_another_thread(loop, no_leaks):
    objs = {}
    handlers = {"data": lambda s, b: None}
    listener = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                              socket={"data": lambda s, b: None,
                                      "open": lambda s: objs.setdefault("server", s)})
    client = bunsock.connect(hostname="127.0.0.1", port=listener.port, loop=loop,
                             socket=handlers)
    other = bunsock.connect(hostname="127.0.0.1", port=listener.port, loop=loop,
                            socket=handlers)
    udp = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    timer = loop.call_later(60, lambda: None)
    room = bunsock.Group()
    empty_room = bunsock.Group()
    spare_l = pysocket.socket()
    spare_l.bind(("127.0.0.1", 0))
    spare_c, spare_peer = pysocket.socketpair()

    calls = {
        "Loop.call_later": lambda: loop.call_later(1, print),
        "Loop.call_every": lambda: loop.call_every(1, print),
        "Loop.call_soon": lambda: loop.call_soon(print),
        "Timer.cancel": timer.cancel,
        "Timer.ref": timer.ref,
        "Timer.unref": timer.unref,
        "Socket.write": lambda: client.write(b"x"),
        "Socket.write_frame": lambda: client.write_frame(b"x"),
        "Socket.framing=": lambda: setattr(client, "framing", bunsock.framing.lines()),
        "Socket.proxy_header=": lambda: setattr(client, "proxy_header", None),
        "Socket.writelines": lambda: client.writelines([b"x"]),
        "Socket.end": client.end,
        "Socket.shutdown": client.shutdown,
        "Socket.flush": client.flush,
        "Socket.cork": client.cork,
        "Socket.pause": client.pause,
        "Socket.resume": client.resume,
        "Socket.timeout": lambda: client.timeout(5),
        "Socket.set_no_delay": lambda: client.set_no_delay(False),
        "Socket.set_keep_alive": client.set_keep_alive,
        "Socket.set_user_timeout": lambda: client.set_user_timeout(5),
        "Socket.setsockopt": lambda: client.setsockopt(pysocket.SOL_SOCKET,
                                                       pysocket.SO_KEEPALIVE, 1),
        "Socket.reload": lambda: client.reload(handlers),
        "Socket.ref": client.ref,
        "Socket.unref": client.unref,
        "Socket.pipe": lambda: client.pipe(other),
        "Socket.unpipe": objs["server"].unpipe if "server" in objs else None,
        "Socket.upgrade_tls": lambda: client.upgrade_tls(True),
        "Socket.__exit__": lambda: client.__exit__(None, None, None),
        "Socket.close": client.close,
        "Socket.terminate": client.terminate,
        "Listener.stop": listener.stop,
        "Listener.reload": lambda: listener.reload(handlers),
        "Listener.ref": listener.ref,
        "Listener.unref": listener.unref,
        "Listener.__exit__": lambda: listener.__exit__(None, None, None),
        "Socket.high_water_mark=": lambda: setattr(client, "high_water_mark", 1000),
        "Socket.low_water_mark=": lambda: setattr(client, "low_water_mark", 10),
        "Listener.high_water_mark=": lambda: setattr(listener, "high_water_mark", 1000),
        "Listener.low_water_mark=": lambda: setattr(listener, "low_water_mark", 10),
        "UdpSocket.setsockopt": lambda: udp.setsockopt(pysocket.SOL_SOCKET,
                                                       pysocket.SO_BROADCAST, 1),
        "UdpSocket.send": lambda: udp.send(b"x", udp.port, "127.0.0.1"),
        "UdpSocket.send_many": lambda: udp.send_many([(b"x", udp.port, "127.0.0.1")]),
        "UdpSocket.close": udp.close,
        "UdpSocket.reload": lambda: udp.reload(None),
        "UdpSocket.ref": udp.ref,
        "UdpSocket.unref": udp.unref,
        "UdpSocket.set_broadcast": udp.set_broadcast,
        "UdpSocket.set_ttl": lambda: udp.set_ttl(5),
        "UdpSocket.set_multicast_ttl": lambda: udp.set_multicast_ttl(5),
        "UdpSocket.set_multicast_loopback": udp.set_multicast_loopback,
        "UdpSocket.set_multicast_interface": lambda: udp.set_multicast_interface("127.0.0.1"),
        "UdpSocket.add_membership": lambda: udp.add_membership("239.1.2.3"),
        "UdpSocket.drop_membership": lambda: udp.drop_membership("239.1.2.3"),
        "Group.add": lambda: empty_room.add(client),          # the first add: no loop yet
        "Group.discard": lambda: room.discard(client),
        "Group.clear": room.clear,
        "Group.write": lambda: room.write(b"x"),
        "Group.write_frame": lambda: room.write_frame(b"x"),
        "udp_socket": lambda: bunsock.udp_socket(hostname="127.0.0.1", loop=loop),
        "listen": lambda: bunsock.listen(sock=spare_l, socket=handlers, loop=loop),
        "connect": lambda: bunsock.connect(sock=spare_c, socket=handlers, loop=loop),
        "relay": lambda: bunsock.relay(client, other),
    }
    # The table covers every public callable of the stubs that changes something.
    assert set(calls) == stub_callables() - NOT_MUTATORS

    results = {}

    def worker():
        try:
            for name, fn in calls.items():
                try:
                    fn()
                except RuntimeError as e:
                    results[name] = e
                except BaseException as e:      # anything else is a missing check
                    results[name] = e
                else:
                    results[name] = None
        finally:
            loop.call_soon_threadsafe(loop.stop)

    def start():
        room.add(client)
        calls["Socket.unpipe"] = objs["server"].unpipe
        threading.Thread(target=worker).start()

    def wait_open():
        if "server" in objs and client.ready_state == "open" and other.ready_state == "open":
            start()
        else:
            loop.call_later(0.01, wait_open)

    loop.call_soon(wait_open)
    run(loop, 20)
    assert len(results) == len(calls)
    wrong = {k: v for k, v in results.items() if not isinstance(v, RuntimeError)}
    assert not wrong, "succeeded (or raised something else) from another thread: %r" % wrong
    # nothing changed: the sockets are still open, the spare descriptors still the caller's
    assert client.ready_state == "open" and listener.fileno() >= 0 and not udp.closed
    assert spare_l.fileno() >= 0 and spare_c.fileno() >= 0
    for s in (client, other, objs["server"]):
        s.close()
    listener.stop(True)
    udp.close()
    timer.cancel()
    spare_l.close()
    spare_c.close()
    spare_peer.close()
    run(loop)
