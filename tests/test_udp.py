"""UDP sockets on loopback: v4, v6, dual-stack, connected and not, batches, drain, errors, leaks."""
import errno
import gc
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

import bunsock
from bunsock import _loop
from conftest import run, run_until

HAS_V6 = socket.has_ipv6
try:
    _p = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    _p.bind(("::1", 0))
    _p.close()
except OSError:
    HAS_V6 = False
needs_v6 = pytest.mark.skipif(not HAS_V6, reason="no IPv6 loopback here")


class Echo:
    """Replies with the datagram upper-cased; records what it saw."""

    def __init__(self):
        self.seen = []

    def data(self, sock, buf, port, address):
        self.seen.append((bytes(buf), port, address))
        sock.send(bytes(buf).upper(), port, address)


def _echo_roundtrip(loop, host, client_host=None, n=5):
    server_h = Echo()
    server = bunsock.udp_socket(hostname=host, socket=server_h, loop=loop)
    replies = []

    def on_reply(sock, buf, port, address):
        replies.append((buf, port, address))
        if len(replies) == n:
            sock.close()
            server.close()

    client = bunsock.udp_socket(hostname=client_host or host, socket={"data": on_reply},
                                loop=loop)
    for i in range(n):
        assert client.send(b"ping %d" % i, server.port, host) is True
    run(loop)
    return server, client, server_h.seen, replies


def test_ipv4_echo(loop, no_leaks):
    server, client, seen, replies = _echo_roundtrip(loop, "127.0.0.1")
    assert sorted(b for b, _, _ in replies) == [b"PING %d" % i for i in range(5)]
    assert {(p, a) for _, p, a in replies} == {(server.port, "127.0.0.1")}
    assert {(p, a) for _, p, a in seen} == {(client.port, "127.0.0.1")}
    assert server.family == "IPv4" and server.address == ("127.0.0.1", server.port)
    assert server.closed and client.closed and client.fileno() == -1


@needs_v6
def test_ipv6_echo(loop, no_leaks):
    server, client, seen, replies = _echo_roundtrip(loop, "::1")
    assert sorted(b for b, _, _ in replies) == [b"PING %d" % i for i in range(5)]
    assert {(p, a) for _, p, a in seen} == {(client.port, "::1")}
    assert server.family == "IPv6"


@needs_v6
def test_dual_stack_socket_talks_to_ipv4(loop, no_leaks):
    # Bound to "::" without ipv6_only: IPv4 peers appear v4-mapped, and an IPv4 literal given to
    # send() reaches them.
    h = Echo()
    server = bunsock.udp_socket(hostname="::", socket=h, loop=loop)
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain.bind(("127.0.0.1", 0))
    plain.settimeout(5)
    try:
        plain.sendto(b"v4", ("127.0.0.1", server.port))
        run_until(loop, lambda: h.seen, what="the IPv4 datagram arrived")
        server.close()
        run(loop)
        assert h.seen == [(b"v4", plain.getsockname()[1], "::ffff:127.0.0.1")]
        assert plain.recvfrom(100)[0] == b"V4"
    finally:
        plain.close()
    server2 = bunsock.udp_socket(hostname="::", loop=loop)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(5)
    try:
        assert server2.send(b"mapped", sink.getsockname()[1], "127.0.0.1")
        assert sink.recvfrom(100)[0] == b"mapped"
    finally:
        sink.close()
        server2.close()


def test_connected_socket(loop, no_leaks):
    got = []
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    try:
        c = bunsock.udp_socket(socket={"data": lambda s, b, p, a: got.append((b, p, a))},
                               connect={"hostname": "127.0.0.1", "port": peer.getsockname()[1]},
                               loop=loop)
        assert c.remote_address == "127.0.0.1" and c.remote_port == peer.getsockname()[1]
        assert c.send(b"hi") is True
        data, addr = peer.recvfrom(100)
        assert data == b"hi" and addr[1] == c.port
        with pytest.raises(ValueError, match="connected"):
            c.send(b"x", 9, "127.0.0.1")
        # A stranger's datagram is filtered by the kernel; the peer's arrives.
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.sendto(b"stranger", ("127.0.0.1", c.port))
        other.close()
        peer.sendto(b"reply", ("127.0.0.1", c.port))
        run_until(loop, lambda: got, what="the peer's reply arrived")
        c.close()
        run(loop)
        assert got == [(b"reply", peer.getsockname()[1], "127.0.0.1")]
    finally:
        peer.close()


@needs_v6
def test_connect_to_ipv6_binds_ipv6(loop, no_leaks):
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    peer.bind(("::1", 0))
    peer.settimeout(5)
    try:
        c = bunsock.udp_socket(connect={"hostname": "::1", "port": peer.getsockname()[1]},
                               loop=loop)
        assert c.family == "IPv6" and c.remote_address == "::1"
        c.send(b"six")
        assert peer.recvfrom(100)[0] == b"six"
        c.close()
        with pytest.raises(ValueError, match="IPv4"):
            bunsock.udp_socket(hostname="127.0.0.1",
                               connect={"hostname": "::1", "port": 9}, loop=loop)
    finally:
        peer.close()


def test_port_unreachable_goes_to_error_and_socket_stays_open(loop, no_leaks):
    # Nothing listens at the peer's port: the ICMP reply becomes ConnectionRefusedError, reported
    # to `error` (from the read side, or raised by the next send), never a crash or a close.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    dead = probe.getsockname()[1]
    probe.close()
    errors, closes = [], []
    c = bunsock.udp_socket(socket={"error": lambda s, e: errors.append(e),
                                   "close": lambda s, e: closes.append(e),
                                   "data": lambda *a: None},
                           connect={"hostname": "127.0.0.1", "port": dead}, loop=loop)
    c.send(b"anyone?")

    def later():
        assert not c.closed
        c.close()

    run_until(loop, lambda: errors, what="the ICMP refusal reached `error`")
    later()
    run(loop)
    assert len(errors) == 1 and isinstance(errors[0], ConnectionRefusedError)
    assert closes == [None]


def test_send_many_counts_and_order(loop, no_leaks):
    got = []
    server = bunsock.udp_socket(hostname="127.0.0.1",
                                socket={"data": lambda s, b, p, a: got.append(b)}, loop=loop)
    client = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    packets = [(b"%03d" % i, server.port, "127.0.0.1") for i in range(200)]
    assert client.send_many(packets) == 200
    assert client.send_many([]) == 0
    # Any bytes-like payload, any iterable.
    assert client.send_many((x, server.port, "127.0.0.1")
                            for x in (bytearray(b"ba"), memoryview(b"mv"))) == 2
    connected = bunsock.udp_socket(connect={"hostname": "127.0.0.1", "port": server.port},
                                   loop=loop)
    assert connected.send_many(iter([b"c1", b"c2", b"c3"])) == 3

    def done():
        for s in (server, client, connected):
            s.close()

    run_until(loop, lambda: len(got) >= 205, what="all 205 datagrams arrived")
    done()
    run(loop)
    assert got[:200] == [b"%03d" % i for i in range(200)]
    assert got[200:] == [b"ba", b"mv", b"c1", b"c2", b"c3"]


def test_send_many_checks_every_item_before_sending(loop, no_leaks):
    got = []
    server = bunsock.udp_socket(hostname="127.0.0.1",
                                socket={"data": lambda s, b, p, a: got.append(b)}, loop=loop)
    client = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    with pytest.raises(TypeError, match="tuples"):
        client.send_many([(b"ok", server.port, "127.0.0.1"), b"bare"])
    with pytest.raises(ValueError, match="IP address"):
        client.send_many([(b"ok", server.port, "127.0.0.1"), (b"x", 1, "nohost")])
    with pytest.raises(TypeError, match="str"):
        client.send_many([("text", server.port, "127.0.0.1")])
    # A marker sent after the refused batches: once it is here, anything they had sent would be.
    assert client.send(b"marker", server.port, "127.0.0.1") is True
    run_until(loop, lambda: got, what="the marker datagram arrived")
    server.close()
    client.close()
    run(loop)
    assert got == [b"marker"]


def test_send_false_then_drain_when_the_buffer_frees(loop, no_leaks):
    # Loopback UDP frees a datagram's buffer the moment it is sent, so its send never refuses;
    # a unix datagram socket refuses once the receiver's queue is full. The same UdpSocket code
    # runs over it (adopted through a test-only constructor).
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    events = []
    u = _loop._udp_adopt(loop, (None, lambda s: events.append("drain"), None, None), None, 0,
                         a.detach())
    sent = 0
    while sent < 100000 and u.send(b"x" * 512):
        sent += 1
    assert 0 < sent < 100000, "the unix datagram socket never filled"
    assert u.send(b"y") is False                 # still full: refused, not queued
    # send_many under a full buffer: nothing sent, a drain owed.
    assert u.send_many([b"z"] * 3) == 0
    received = []

    def reader():
        b.setblocking(False)
        try:
            while True:
                received.append(b.recv(4096))
        except BlockingIOError:
            pass

    def after_drain():
        assert events == ["drain"]
        assert u.send(b"after") is True
        u.close()

    loop.call_later(0.05, reader)
    run_until(loop, lambda: events, what="drain fired")
    after_drain()
    run(loop)
    assert len(received) == sent                 # every accepted datagram arrived, no extra
    b.close()


def test_send_many_partial_count_when_buffer_fills(loop, no_leaks):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    u = _loop._udp_adopt(loop, (None, None, None, None), None, 0, a.detach())
    n = u.send_many([b"p" * 512] * 5000)
    assert 0 < n < 5000
    got = 0
    b.setblocking(False)
    try:
        while True:
            b.recv(4096)
            got += 1
    except BlockingIOError:
        pass
    assert got == n
    u.close()
    b.close()


def test_errors_are_clear(loop, no_leaks):
    u = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    with pytest.raises(OSError) as e:
        u.send(b"x" * 70000, 9, "127.0.0.1")
    assert e.value.errno == errno.EMSGSIZE
    with pytest.raises(ValueError, match="IP address"):
        u.send(b"x", 9, "localhost")
    with pytest.raises(ValueError, match="IPv6"):
        u.send(b"x", 9, "::1")
    with pytest.raises(ValueError, match="port"):
        u.send(b"x", 70000, "127.0.0.1")
    with pytest.raises(ValueError, match="needs port and address"):
        u.send(b"x")
    with pytest.raises(TypeError):
        u.send("text", 9, "127.0.0.1")
    with pytest.raises(TypeError):
        u.send(b"x", "9", "127.0.0.1")
    with pytest.raises(ValueError):
        u.set_ttl(0)
    with pytest.raises(ValueError):
        u.add_membership("not-a-group")
    with pytest.raises(OSError) as e:
        bunsock.udp_socket(hostname="127.0.0.1", port=u.port, loop=loop)
    assert e.value.errno == errno.EADDRINUSE
    u.close()
    with pytest.raises(OSError) as e:
        u.send(b"x", 9, "127.0.0.1")
    assert e.value.errno == errno.EBADF
    u.close()                                    # idempotent
    with pytest.raises(TypeError, match="unknown UDP handler"):
        bunsock.udp_socket(socket={"dat": print}, loop=loop)
    with pytest.raises(TypeError, match="callable"):
        bunsock.udp_socket(socket={"data": 3}, loop=loop)
    with pytest.raises(ValueError, match="binary_type"):
        bunsock.udp_socket(binary_type="str", loop=loop)
    with pytest.raises(ValueError, match="both"):
        bunsock.udp_socket(connect={"hostname": "127.0.0.1"}, loop=loop)
    with pytest.raises(TypeError):
        bunsock.udp_socket(connect=("127.0.0.1", 9), loop=loop)
    with pytest.raises(ValueError):
        bunsock.udp_socket(port=-1, loop=loop)


def test_handler_errors_are_contained(loop, no_leaks, unraisable, expected_errors):
    errors, got = [], []

    def data(sock, buf, port, address):
        got.append(buf)
        if buf == b"boom":
            raise RuntimeError("handler failed")

    server = bunsock.udp_socket(hostname="127.0.0.1",
                                socket={"data": data, "error": lambda s, e: errors.append(e)},
                                loop=loop)
    quiet = bunsock.udp_socket(hostname="127.0.0.1", socket={"data": data}, loop=loop)
    client = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    for dest in (server, quiet):
        client.send(b"boom", dest.port, "127.0.0.1")
        client.send(b"after", dest.port, "127.0.0.1")
    run_until(loop, lambda: got.count(b"after") == 2 and len(unraisable) == 1)
    for s in (server, quiet, client):
        s.close()
    run(loop)
    assert got.count(b"boom") == 2 and got.count(b"after") == 2
    assert [type(e) for e in errors] == [RuntimeError]
    assert len(unraisable) == 1 and isinstance(unraisable[0].exc_value, RuntimeError)
    assert [type(e) for e, _ in expected_errors] == [RuntimeError, RuntimeError]
    errors.clear()
    unraisable.clear()   # the reports hold the socket and the traceback's frames


def test_read_budget_lets_other_sockets_in(no_leaks):
    # A small receive buffer gives a small per-iteration budget (4 x 4 KiB): a flooded socket
    # yields after one batch, and the other socket is served in the same iteration.
    lp = bunsock.Loop(read_buffer_size=4096)
    try:
        got = {"a": 0, "b": 0}
        a = bunsock.udp_socket(hostname="127.0.0.1", loop=lp,
                               socket={"data": lambda *x: got.__setitem__("a", got["a"] + 1)})
        b = bunsock.udp_socket(hostname="127.0.0.1", loop=lp,
                               socket={"data": lambda *x: got.__setitem__("b", got["b"] + 1)})
        src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(60):
            src.sendto(b"f" * 1000, ("127.0.0.1", a.port))
        src.sendto(b"b", ("127.0.0.1", b.port))
        src.close()
        lp.run_once(1)
        assert got["b"] == 1 and 0 < got["a"] < 60
        run_until(lp, lambda: got["a"] >= 60, what="all 60 flooded datagrams were read")
        assert got["a"] == 60
        a.close()
        b.close()
    finally:
        lp.close()


def test_binary_types(loop, no_leaks):
    seen = []

    def view_data(sock, buf, port, address):
        seen.append((type(buf), bytes(buf)))
        sock.data = buf                          # kept past the call: released afterwards

    mv = bunsock.udp_socket(hostname="127.0.0.1", binary_type="memoryview",
                            socket={"data": view_data}, loop=loop)
    ba = bunsock.udp_socket(hostname="127.0.0.1", binary_type="bytearray",
                            socket={"data": lambda s, b, p, a: seen.append((type(b), b))},
                            loop=loop)
    c = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    c.send_many([(b"one", mv.port, "127.0.0.1"), (b"two", mv.port, "127.0.0.1"),
                 (b"three", ba.port, "127.0.0.1")])
    run_until(loop, lambda: len(seen) >= 3, what="the three datagrams arrived")
    for s in (mv, ba, c):
        s.close()
    run(loop)
    assert sorted(seen, key=lambda x: x[1]) == [(memoryview, b"one"), (bytearray, b"three"),
                                                (memoryview, b"two")]
    with pytest.raises(ValueError):
        bytes(mv.data)                           # the lent view was released
    mv.data = None


def test_memoryview_kept_alive_stays_valid(loop, no_leaks):
    kept = []

    def data(sock, buf, port, address):
        kept.append(buf[0:])                     # a slice exports the area further
        if len(kept) == 2:
            sock.close()

    u = bunsock.udp_socket(hostname="127.0.0.1", binary_type="memoryview",
                           socket={"data": data}, loop=loop)
    c = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    c.send(b"first", u.port, "127.0.0.1")
    c.send(b"second", u.port, "127.0.0.1")
    c.unref()
    run(loop, 5)
    c.close()
    assert [bytes(k) for k in kept] == [b"first", b"second"]
    kept.clear()


def test_many_peers_get_their_own_replies(loop, no_leaks):
    # More peers than the address cache holds: every reply still reaches the right peer.
    server = bunsock.udp_socket(hostname="127.0.0.1", socket=Echo(), loop=loop)
    replies = {}
    clients = []
    for i in range(20):
        def on(sock, buf, port, address, i=i):
            replies[i] = buf
            sock.close()
        c = bunsock.udp_socket(hostname="127.0.0.1", socket={"data": on}, loop=loop)
        clients.append(c)
    for _ in range(2):
        for i, c in enumerate(clients):
            if not c.closed:
                c.send(b"c%d" % i, server.port, "127.0.0.1")
    run_until(loop, lambda: len(replies) == 20, what="every peer got its reply")
    server.close()
    run(loop)
    assert replies == {i: b"C%d" % i for i in range(20)}


def test_close_handler_unref_reload(loop, no_leaks):
    closes = []
    u = bunsock.udp_socket(hostname="127.0.0.1", socket={"close": lambda s, e: closes.append(e)},
                           loop=loop)
    u.unref()
    run(loop)                                    # an unref'd socket does not keep run() going
    assert not u.closed
    got = []
    u.reload({"data": lambda s, b, p, a: (got.append(b), s.close())})
    u.ref()
    c = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    c.send(b"reloaded", u.port, "127.0.0.1")
    c.unref()
    run(loop)
    c.close()
    assert got == [b"reloaded"] and closes == []  # reload replaced the close handler too
    assert loop.refs == 0


def test_close_inside_a_batch_drops_the_rest(loop, no_leaks):
    got = []
    u = bunsock.udp_socket(hostname="127.0.0.1",
                           socket={"data": lambda s, b, p, a: (got.append(b), s.close())},
                           loop=loop)
    c = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    c.send_many([(b"%d" % i, u.port, "127.0.0.1") for i in range(10)])
    c.unref()
    before = loop.stats()["recvs"]
    run(loop)
    c.close()
    assert got == [b"0"]
    # All ten were taken in one recvmmsg (one batch); the close dropped the other nine.
    assert loop.stats()["recvs"] - before == 1


def test_socket_options_and_multicast_on_loopback(loop, no_leaks):
    group = "239.255.42.%d" % (os.getpid() % 200 + 1)
    got = []
    r = bunsock.udp_socket(hostname="0.0.0.0", reuse_port=True,
                           socket={"data": lambda s, b, p, a: got.append(b)}, loop=loop)
    s = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    s.set_broadcast(True)
    s.set_ttl(64)
    s.set_multicast_ttl(1)
    s.set_multicast_loopback(True)
    s.set_multicast_interface("127.0.0.1")
    r.add_membership(group, "127.0.0.1")
    assert s.send(b"to the group", r.port, group)

    def leave():
        r.drop_membership(group, "127.0.0.1")
        r.close()
        s.close()

    run_until(loop, lambda: got, what="the multicast datagram arrived")
    leave()
    run(loop)
    assert got == [b"to the group"]


def test_no_leaks_after_many_sockets(loop):
    gc.collect()
    before = _loop.debug_counts()["udp"]
    for _ in range(50):
        u = bunsock.udp_socket(hostname="127.0.0.1", socket=Echo(), loop=loop)
        u.send(b"x", u.port, "127.0.0.1")
        loop.run_once(0)
        u.close()
    del u
    loop.run_once(0)
    gc.collect()
    assert _loop.debug_counts()["udp"] == before


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found")
def test_portable_fallback_compiles_warning_free(tmp_path):
    # The sendmsg/recvmsg path used where sendmmsg/recvmmsg are missing (macOS) builds here too.
    csrc = Path(__file__).resolve().parents[1] / "csrc"
    if not csrc.is_dir():
        pytest.skip("csrc/ not here")
    res = subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-DBS_NO_MMSG", "-c",
                          "-I" + str(csrc), str(csrc / "udp.c"), "-o", str(tmp_path / "u.o")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# -- what TCP sockets have: options, buffer sizes, adoption; address/hostname (issue 18) --

def test_hostname_is_what_was_given_and_address_is_the_bound_end(loop, no_leaks):
    a = bunsock.udp_socket(loop=loop)
    b = bunsock.udp_socket(hostname="localhost", loop=loop)
    c = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    assert a.hostname is None and a.address == ("0.0.0.0", a.port)
    assert b.hostname == "localhost" and b.address[1] == b.port
    assert c.hostname == "127.0.0.1" and c.address == ("127.0.0.1", c.port)
    for u in (a, b, c):
        u.close()
    assert c.address == ("127.0.0.1", c.port)      # still answers after close()
    run(loop)


def test_address_in_use_names_the_address(loop, no_leaks):
    u = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    for kw in ({}, {"recv_buffer_size": 65536}):
        with pytest.raises(OSError, match=r"cannot bind UDP to 127\.0\.0\.1:%d" % u.port) as e:
            bunsock.udp_socket(hostname="127.0.0.1", port=u.port, loop=loop, **kw)
        assert e.value.errno == errno.EADDRINUSE
    u.close()
    run(loop)


def test_sockopts_buffer_sizes_and_live_options(loop, no_leaks):
    u = bunsock.udp_socket(hostname="127.0.0.1", loop=loop, recv_buffer_size=200000,
                           send_buffer_size=100000,
                           sockopts=[(socket.IPPROTO_IP, socket.IP_TTL, 7)])
    assert u.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 200000   # Linux doubles it
    assert u.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 100000
    assert u.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 7
    u.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 9)
    assert u.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 9
    assert len(u.getsockopt(socket.IPPROTO_IP, socket.IP_TTL, 4)) == 4
    with pytest.raises(TypeError):
        u.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, "9")
    with pytest.raises(OSError):
        u.setsockopt(socket.SOL_SOCKET, 12345, 1)
    # still a working socket: a datagram to itself arrives
    got = []
    u.reload({"data": lambda s, b, p, a: got.append((b, p, a))})
    assert u.send(b"hi", u.port, "127.0.0.1")
    run_until(loop, lambda: got)
    assert got == [(b"hi", u.port, "127.0.0.1")]
    u.close()
    with pytest.raises(OSError) as e:
        u.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
    assert e.value.errno == errno.EBADF
    with pytest.raises(OSError):
        bunsock.udp_socket(hostname="127.0.0.1", loop=loop, sockopts=[(socket.SOL_SOCKET, 12345, 1)])
    run(loop)


def test_adopting_an_existing_datagram_socket(loop, no_leaks):
    peer = bunsock.udp_socket(hostname="127.0.0.1", loop=loop)
    got = []
    peer.reload({"data": lambda s, b, p, a: (got.append(b), s.send(b"re:" + b, p, a))})
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    port = raw.getsockname()[1]
    replies = []
    u = bunsock.udp_socket(sock=raw, loop=loop, connect={"hostname": "127.0.0.1",
                                                         "port": peer.port},
                           socket={"data": lambda s, b, p, a: replies.append(b)})
    assert raw.fileno() == -1                      # detached: the UdpSocket owns it
    assert u.address == ("127.0.0.1", port) and u.hostname is None
    assert u.remote_port == peer.port
    assert u.send(b"one")
    # fd= with an unbound socket: bunsock binds it to an ephemeral port.
    raw2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v = bunsock.udp_socket(fd=raw2.detach(), loop=loop, socket={"data": lambda *a: None})
    assert v.port > 0
    assert v.send(b"two", peer.port, "127.0.0.1")
    run_until(loop, lambda: len(got) >= 2 and replies)
    assert sorted(got) == [b"one", b"two"] and replies == [b"re:one"]
    # Errors leave the caller's socket alone.
    tcp = socket.socket()
    with pytest.raises(ValueError, match="needs a datagram socket"):
        bunsock.udp_socket(sock=tcp, loop=loop)
    assert tcp.fileno() >= 0
    tcp.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as d:
        with pytest.raises(ValueError, match="do not apply to an adopted"):
            bunsock.udp_socket(sock=d, hostname="127.0.0.1", loop=loop)
    for x in (u, v, peer):
        x.close()
    run(loop)
