"""Socket control a production service needs: options before bind/connect and on live sockets,
adopting descriptors, keepalive, TCP_USER_TIMEOUT, tcp_info, listener.address, max_connections,
pause_on_connect and `with sock:`. Loopback only."""
import errno
import os
import socket
import struct
import sys

import pytest

import bunsock
from conftest import run

LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not LINUX, reason="Linux socket options")


class Echo:
    def data(self, sock, buf):
        sock.write(buf)


def fd_opt(fd, level, option):
    """Read an int option of a descriptor we do not own (through a dup)."""
    s = socket.socket(fileno=os.dup(fd))
    try:
        return s.getsockopt(level, option)
    finally:
        s.close()


def exchange(loop, srv_table, client_table, **connect_kw):
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=srv_table, loop=loop)
    cli = bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=client_table, loop=loop,
                          **connect_kw)
    return srv, cli


# -- options before bind / connect --

def test_sockopts_before_bind_let_two_listeners_share_a_port(loop, no_leaks):
    # SO_REUSEPORT only works when set before bind(): proof the list is applied there.
    opt = [(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)]
    a = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), sockopts=opt, loop=loop)
    b = bunsock.listen(hostname="127.0.0.1", port=a.port, socket=Echo(), sockopts=opt, loop=loop)
    assert a.port == b.port
    a.stop()
    b.stop()


def test_named_buffer_sizes_on_listen_and_connect(loop, no_leaks, unraisable):
    seen = {}

    class Client:
        def open(self, sock):
            seen["snd"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            sock.close()

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop(True)

    srv, _ = exchange(loop, Echo(), Client(), send_buffer_size=65536)
    # The bunsock listener was made without options; check a second one made with them.
    lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), recv_buffer_size=32768,
                         loop=loop)
    # Linux doubles the value for bookkeeping; other kernels store it as given.
    assert fd_opt(lst.fileno(), socket.SOL_SOCKET, socket.SO_RCVBUF) >= 32768
    lst.stop()
    run(loop, 10)
    assert not unraisable, unraisable
    assert seen["snd"] >= 65536


def test_bad_option_raises_synchronously_with_errno(loop, no_leaks):
    bad = [(socket.SOL_SOCKET, 99999, 1)]
    with pytest.raises(OSError) as ei:
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), sockopts=bad, loop=loop)
    assert ei.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as ei:
        bunsock.connect(hostname="127.0.0.1", port=1, socket=Echo(), sockopts=bad, loop=loop)
    assert ei.value.errno == errno.ENOPROTOOPT
    assert loop.refs == 0          # no socket was started
    # On a socket whose connect has not started yet (no descriptor), too.
    cli = bunsock.connect(hostname="127.0.0.1", port=1, socket=Echo(), loop=loop)
    with pytest.raises(OSError) as ei:
        cli.setsockopt(socket.SOL_SOCKET, 99999, 1)
    assert ei.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as ei:
        cli.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    assert ei.value.errno == errno.ENOTCONN
    cli.close()
    run(loop, 5)


@pytest.mark.parametrize("value, exc", [
    ("x", TypeError), ([(1, 2)], TypeError), ([("a", 2, 1)], TypeError),
    ([(1, 2, "str")], TypeError), ([(1, 2, None)], TypeError), ([(-1, 2, 1)], ValueError),
])
def test_sockopts_argument_checks(loop, value, exc):
    with pytest.raises(exc):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), sockopts=value, loop=loop)


@linux_only
def test_freebind_binds_an_address_this_host_does_not_have(loop, no_leaks):
    # 192.0.2.1 (TEST-NET-1) is on no interface: without IP_FREEBIND bind() fails.
    with pytest.raises(OSError) as ei:
        bunsock.listen(hostname="192.0.2.1", port=0, socket=Echo(), loop=loop)
    assert ei.value.errno == errno.EADDRNOTAVAIL
    lst = bunsock.listen(hostname="192.0.2.1", port=0, socket=Echo(), freebind=True, loop=loop)
    assert lst.address == ("192.0.2.1", lst.port)
    lst.stop()


@linux_only
def test_fastopen_defer_accept_and_mark_reach_the_kernel(loop, no_leaks):
    lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), fastopen=16,
                         defer_accept=2, loop=loop)
    try:
        assert fd_opt(lst.fileno(), socket.IPPROTO_TCP, socket.TCP_FASTOPEN) == 16
        assert fd_opt(lst.fileno(), socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
    finally:
        lst.stop()
    try:
        lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), mark=7, loop=loop)
    except PermissionError:
        pytest.skip("SO_MARK needs CAP_NET_ADMIN")
    assert fd_opt(lst.fileno(), socket.SOL_SOCKET, socket.SO_MARK) == 7
    lst.stop()


@linux_only
def test_transparent_is_applied_or_refused_with_errno(loop, no_leaks):
    try:
        lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), transparent=True,
                             loop=loop)
    except OSError as e:
        assert e.errno == errno.EPERM      # needs CAP_NET_ADMIN
        return
    assert fd_opt(lst.fileno(), socket.SOL_IP, socket.IP_TRANSPARENT) == 1
    lst.stop()


@linux_only
def test_connect_fastopen_still_connects(loop, no_leaks, unraisable):
    got = []

    class Client:
        def open(self, sock):
            sock.write(b"tfo")

        def data(self, sock, buf):
            got.append(buf)
            sock.close()

        def close(self, sock, err):
            srv.stop(True)

    srv, _ = exchange(loop, Echo(), Client(), fastopen=True)
    run(loop, 10)
    assert not unraisable, unraisable
    assert got == [b"tfo"]


# -- live sockets --

def test_setsockopt_getsockopt_on_a_live_socket(loop, no_leaks, unraisable):
    seen = {}

    class Client:
        def open(self, sock):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1   # bunsock's
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, False)
            seen["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
            seen["linger"] = struct.unpack("ii", sock.getsockopt(socket.SOL_SOCKET,
                                                                 socket.SO_LINGER, 8))
            with pytest.raises(OSError) as ei:
                sock.setsockopt(socket.SOL_SOCKET, 99999, 1)
            seen["errno"] = ei.value.errno
            with pytest.raises(TypeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, "x")
            with pytest.raises(ValueError):
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 4096)
            sock.close()
            for call in (lambda: sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
                         lambda: sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                         sock.tcp_info, sock.set_keep_alive):
                with pytest.raises(OSError) as ei:
                    call()
                assert ei.value.errno == errno.EBADF

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop(True)

    srv, _ = exchange(loop, Echo(), Client())
    run(loop, 10)
    assert not unraisable, unraisable
    assert seen == {"nodelay": 0, "linger": (1, 5), "errno": errno.ENOPROTOOPT}


def test_keepalive_idle_interval_count_and_user_timeout(loop, no_leaks, unraisable):
    seen = {}

    class Client:
        def open(self, sock):
            assert sock.set_keep_alive(True, idle=1.5, interval=2, count=3) is True
            seen["ka"] = (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                          sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                          sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                          sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))
            sock.set_keep_alive(True, 7)           # Bun's positional initial_delay, in seconds
            seen["idle"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            with pytest.raises(ValueError):
                sock.set_keep_alive(True, 5, idle=6)
            with pytest.raises(ValueError):
                sock.set_keep_alive(True, -1)
            with pytest.raises(TypeError):
                sock.set_keep_alive(True, count=1.5)
            sock.set_keep_alive(False)
            seen["off"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                assert sock.set_user_timeout(2.5) is True
                seen["uto"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
            sock.close()

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop(True)

    srv, _ = exchange(loop, Echo(), Client())
    run(loop, 10)
    assert not unraisable, unraisable
    assert seen["ka"] == (1, 2, 2, 3)       # 1.5 s rounds up to whole seconds
    assert seen["idle"] == 7 and seen["off"] == 0
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        assert seen["uto"] == 2500


def test_keepalive_set_while_connecting_applies_once_connected(loop, no_leaks, unraisable,
                                                               monkeypatch):
    from bunsock import _resolve
    monkeypatch.setattr(_resolve, "lookup",
                        lambda host, port, passive=False: [(bunsock._loop.FAMILY_INET,
                                                            "127.0.0.1")])
    seen = {}

    class Client:
        def open(self, sock):
            seen["ka"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            seen["idle"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            sock.close()

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop(True)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    # By name: the fd does not exist yet (resolution runs first).
    cli = bunsock.connect(hostname="svc.test", port=srv.port, socket=Client(), loop=loop)
    assert cli.ready_state == "connecting"
    cli.set_keep_alive(True, idle=9)
    run(loop, 10)
    assert not unraisable, unraisable
    assert seen == {"ka": 1, "idle": 9}


def test_tcp_info_reports_rtt_and_cwnd(loop, no_leaks, unraisable):
    seen = {}

    class Client:
        def open(self, sock):
            sock.write(b"x" * 1000)

        def data(self, sock, buf):
            seen["info"] = sock.tcp_info()
            sock.close()

        def close(self, sock, err):
            srv.stop(True)

    srv, cli = exchange(loop, Echo(), Client())
    with pytest.raises(OSError) as ei:
        cli.tcp_info()
    assert ei.value.errno == errno.ENOTCONN
    run(loop, 10)
    assert not unraisable, unraisable
    info = seen["info"]
    assert isinstance(info, bunsock.TcpInfo)
    assert 0 < info.rtt < 1.0 and info.rttvar >= 0
    assert info.cwnd > 0 and info.retransmits >= 0 and info.unacked >= 0
    if LINUX:
        assert isinstance(info.delivery_rate, int)


def test_unix_sockets_have_no_tcp_settings(loop, tmp_path, no_leaks, unraisable):
    seen = {}

    class Client:
        def open(self, sock):
            seen["info"] = sock.tcp_info()
            seen["ka"] = sock.set_keep_alive(True, 5)
            seen["uto"] = sock.set_user_timeout(1)
            sock.close()

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop(True)

    srv = bunsock.listen(unix=str(tmp_path / "s"), socket=Echo(), loop=loop)
    assert srv.address == str(tmp_path / "s")
    bunsock.connect(unix=str(tmp_path / "s"), socket=Client(), loop=loop)
    run(loop, 10)
    assert not unraisable, unraisable
    assert seen == {"info": None, "ka": False, "uto": False}


# -- listener.address, max_connections --

def test_listener_address_is_the_bound_one(loop, no_leaks):
    a = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    b = bunsock.listen(hostname="0.0.0.0", port=0, socket=Echo(), loop=loop)
    assert a.address == ("127.0.0.1", a.port) and a.port > 0
    assert b.address == ("0.0.0.0", b.port)
    a.stop()
    b.stop()
    assert a.address == ("127.0.0.1", a.port)     # still answers after stop()
    if socket.has_ipv6:
        try:
            c = bunsock.listen(hostname="::", port=0, socket=Echo(), loop=loop)
        except OSError:
            return
        assert c.address == ("::", c.port)
        c.stop()


def test_max_connections_holds_the_rest_in_the_backlog(loop, no_leaks, unraisable):
    opened = []
    closed_early = []
    at_limit = []

    class Server:
        def open(self, sock):
            opened.append(sock)
            if len(opened) == 2:
                # At the limit: the others must wait (not be accepted and closed).
                loop.call_later(0.2, check_and_free)

        def data(self, sock, buf):
            sock.write(buf)

    def check_and_free():
        at_limit.append((srv.connections, len(opened)))
        opened[0].close()                  # one slot frees: the third is accepted

    results = []

    class Client:
        def open(self, sock):
            sock.write(b"hi")

        def data(self, sock, buf):
            results.append(buf)
            if len(results) == 3:
                srv.stop(True)
                for c in clients:
                    c.close()

        def close(self, sock, err):
            if err is not None:
                closed_early.append(err)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Server(), max_connections=2,
                         loop=loop)
    assert srv.max_connections == 2
    clients = [bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Client(), loop=loop)
               for _ in range(3)]
    run(loop, 10)
    assert not unraisable, unraisable
    assert at_limit == [(2, 2)]
    assert len(opened) == 3 and results == [b"hi"] * 3
    assert not closed_early              # nobody was accepted-then-closed (no resets)
    with pytest.raises(ValueError):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), max_connections=0, loop=loop)


# -- pause_on_connect --

def test_pause_on_connect_on_listen_and_connect(loop, no_leaks, unraisable):
    events = []

    class Server:
        def open(self, sock):
            events.append(("srv-open", sock.paused))
            loop.call_later(0.2, sock.resume)

        def data(self, sock, buf):
            events.append(("srv-data", buf))
            sock.write(buf)

    class Client:
        def open(self, sock):
            events.append(("cli-open", sock.paused))
            sock.write(b"early")
            loop.call_later(0.4, sock.resume)

        def data(self, sock, buf):
            events.append(("cli-data", buf))
            sock.close()

        def close(self, sock, err):
            srv.stop(True)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Server(), pause_on_connect=True,
                         loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Client(), pause_on_connect=True,
                    loop=loop)
    t0 = loop.time()
    run(loop, 10)
    assert not unraisable, unraisable
    assert loop.time() - t0 >= 0.35
    assert sorted(events[:2]) == [("cli-open", True), ("srv-open", True)]
    assert events[2:] == [("srv-data", b"early"), ("cli-data", b"early")]


# -- context manager --

def test_socket_as_context_manager_closes(loop, no_leaks, unraisable):
    seen = []

    class Client:
        def open(self, sock):
            with sock as s:
                assert s is sock
                s.write(b"bye")
            seen.append(sock.ready_state)

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            seen.append(("close", err))

    got = []

    class Server:
        def data(self, sock, buf):
            got.append(buf)

        def end(self, sock):
            srv.stop(True)

    srv, _ = exchange(loop, Server(), Client())
    run(loop, 10)
    assert not unraisable, unraisable
    assert seen == [("close", None), "closed"]
    assert b"".join(got) == b"bye"       # bytes written inside the block still went out


# -- adopting descriptors --

def echo_roundtrip(port, msg=b"ping"):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(msg)
        return c.recv(100)


@pytest.mark.parametrize("how", ["fd", "sock", "bound-only"])
def test_listen_adopts_an_existing_listening_socket(loop, no_leaks, how, unraisable):
    raw = socket.socket()
    raw.bind(("127.0.0.1", 0))
    port = raw.getsockname()[1]
    if how != "bound-only":
        raw.listen(8)                    # as systemd hands it over
    got = []

    class Server:
        def data(self, sock, buf):
            sock.write(buf)
            got.append(buf)

    if how == "sock":
        srv = bunsock.listen(sock=raw, socket=Server(), loop=loop)
        assert raw.fileno() == -1        # bunsock owns it now
    else:
        srv = bunsock.listen(fd=raw.detach(), socket=Server(), loop=loop)
    assert srv.port == port and srv.address == ("127.0.0.1", port)
    assert srv.hostname == "127.0.0.1"
    import threading
    out = []
    t = threading.Thread(target=lambda: (out.append(echo_roundtrip(port)), loop.call_soon_threadsafe(
        srv.stop, True)))
    t.start()
    run(loop, 10)
    assert not unraisable, unraisable
    t.join()
    assert out == [b"ping"] and got == [b"ping"]
    assert srv.fileno() == -1            # stop() closed the adopted descriptor


def test_listen_adopts_a_unix_socket(loop, tmp_path, no_leaks):
    path = str(tmp_path / "a.sock")
    raw = socket.socket(socket.AF_UNIX)
    raw.bind(path)
    raw.listen(4)
    srv = bunsock.listen(sock=raw, socket=Echo(), loop=loop)
    assert srv.unix == path and srv.port is None and srv.address == path
    srv.stop()
    assert os.path.exists(path)          # not bunsock's file: never deleted for you
    os.unlink(path)


def test_listen_fd_rejects_what_it_cannot_serve(loop, no_leaks):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="stream"):
            bunsock.listen(sock=udp, socket=Echo(), loop=loop)
        assert udp.fileno() >= 0         # refused: still the caller's
        with pytest.raises(OSError) as ei:
            bunsock.listen(fd=r, socket=Echo(), loop=loop)
        assert ei.value.errno == errno.ENOTSOCK
        with pytest.raises(ValueError, match="one of them"):
            bunsock.listen(fd=r, hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
        with pytest.raises(TypeError):
            bunsock.listen(sock=r, socket=Echo(), loop=loop)
        with pytest.raises(ValueError):
            bunsock.listen(fd=-1, socket=Echo(), loop=loop)
    finally:
        udp.close()
        os.close(r)
        os.close(w)


def test_connect_adopts_a_connected_socketpair(loop, no_leaks, unraisable):
    a, b = socket.socketpair()
    b.setblocking(False)
    events = []

    class Client:
        def open(self, sock):
            events.append(("open", sock.ready_state))
            sock.write(b"over the pair")

        def data(self, sock, buf):
            events.append(("data", buf))
            sock.end()

        def close(self, sock, err):
            events.append(("close", err))

    cli = bunsock.connect(sock=a, socket=Client(), loop=loop)
    assert a.fileno() == -1 and cli.ready_state == "connecting"

    def peer():
        try:
            msg = b.recv(100)
        except BlockingIOError:
            loop.call_later(0.01, peer)
            return
        b.sendall(msg.upper())
        b.shutdown(socket.SHUT_WR)

    loop.call_later(0.01, peer)
    run(loop, 10)
    assert not unraisable, unraisable
    b.close()
    assert events == [("open", "open"), ("data", b"OVER THE PAIR"), ("close", None)]


def test_connect_sock_must_be_connected(loop, no_leaks):
    s = socket.socket()
    try:
        with pytest.raises(ValueError, match="connected"):
            bunsock.connect(sock=s, socket=Echo(), loop=loop)
        with pytest.raises(ValueError, match="one of them"):
            bunsock.connect(sock=s, hostname="127.0.0.1", port=1, socket=Echo(), loop=loop)
    finally:
        s.close()


@pytest.mark.parametrize("how", ["sockopts", "setsockopt", "set_no_delay"])
def test_tcp_nodelay_off_asked_before_open_stays_off(loop, no_leaks, how):
    """TCP_NODELAY is on by default, but the user's own choice wins: asked off through
    connect(sockopts=...), or with setsockopt / set_no_delay(False) while connecting, it still
    reads 0 after `open`."""
    from conftest import run_until
    off = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    seen = []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                         socket={"data": lambda s, b: None})
    c = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop,
                        sockopts=[off] if how == "sockopts" else None, socket={
                            "open": lambda s: seen.append(
                                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
                            "data": lambda s, b: None})
    if how == "setsockopt":
        c.setsockopt(*off)
    elif how == "set_no_delay":
        c.set_no_delay(False)
    run_until(loop, lambda: seen)
    assert seen == [0]
    plain = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop, socket={
        "open": lambda s: seen.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
        "data": lambda s, b: None})
    run_until(loop, lambda: len(seen) == 2)
    assert seen[1] != 0                  # the default is still on
    c.close()
    plain.close()
    srv.stop(True)
    run(loop)


def test_tcp_nodelay_off_on_a_listener_stays_off_on_accepted_sockets(loop, no_leaks):
    """listen(sockopts=[TCP_NODELAY 0]): the accepted sockets inherit the user's choice, the
    default (on) does not overwrite it."""
    from conftest import run_until
    seen = []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                         sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)],
                         socket={"open": lambda s: seen.append(
                             s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
                             "data": lambda s, b: None})
    c = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop,
                        socket={"data": lambda s, b: None})
    run_until(loop, lambda: seen)
    assert seen == [0]
    c.close()
    srv.stop(True)
    run(loop)
