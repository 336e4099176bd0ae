"""listen()/connect(): arguments, errors, addresses, name resolution, handler tables."""
import errno
import socket
import threading

import pytest

import bunsock
from conftest import run, run_until


class Echo:
    def data(self, sock, buf):
        sock.write(buf)


def test_listen_port_zero_reports_real_port(loop):
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    try:
        assert isinstance(srv.port, int) and srv.port > 0
        assert srv.hostname == "127.0.0.1"
        assert srv.unix is None
        assert srv.fileno() >= 0
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5):
            pass
    finally:
        srv.stop()
    assert srv.fileno() == -1
    srv.stop()  # idempotent


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(hostname="127.0.0.1", port=70000), ValueError, "port"),
    (dict(hostname="127.0.0.1", port=-1), ValueError, "port"),
    (dict(hostname="127.0.0.1", port="80"), TypeError, "port"),
    (dict(hostname="127.0.0.1", port=0, unix="/tmp/x.sock"), ValueError, "not both"),
    (dict(port=0), ValueError, "hostname"),
    (dict(), ValueError, "hostname"),
    (dict(hostname="127.0.0.1"), ValueError, "port"),
    (dict(hostname="127.0.0.1", port=0, binary_type="text"), ValueError, "binary_type"),
    (dict(hostname="127.0.0.1", port=0, high_water_mark=-5), ValueError, "high_water_mark"),
    (dict(hostname="127.0.0.1", port=0, idle_timeout=-1), ValueError, "idle_timeout"),
    (dict(hostname="127.0.0.1", port=0, backlog="x"), TypeError, "backlog"),
])
def test_listen_rejects_bad_arguments(loop, kwargs, exc, words):
    with pytest.raises(exc, match=words):
        bunsock.listen(socket=Echo(), loop=loop, **kwargs)


@pytest.mark.parametrize("table, words", [
    ({"data": 42}, "data"),
    ({"open": lambda s: None}, "data.*drain"),
    ({"dat": lambda s, b: None}, "unknown"),
    (object(), "data.*drain"),
    (None, "handler table"),
])
def test_bad_handler_tables_raise_type_error(loop, table, words):
    with pytest.raises(TypeError, match=words):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=table, loop=loop)
    with pytest.raises(TypeError, match=words):
        bunsock.connect(hostname="127.0.0.1", port=1, socket=table, loop=loop)


def test_address_in_use_is_oserror_with_errno(loop):
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    try:
        with pytest.raises(OSError) as ei:
            bunsock.listen(hostname="127.0.0.1", port=srv.port, socket=Echo(), loop=loop)
        assert ei.value.errno == errno.EADDRINUSE
        # The message names what could not be bound, as asyncio and Node do.
        assert "cannot listen on 127.0.0.1:%d" % srv.port in str(ei.value)
        assert type(ei.value) is OSError
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:%d \(localhost\)"
                           % srv.port) as ei:
            bunsock.listen(hostname="localhost", port=srv.port, socket=Echo(), loop=loop)
    finally:
        srv.stop()


def test_address_in_use_names_an_ipv6_address_in_brackets(loop):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = bunsock.listen(hostname="::1", port=0, socket=Echo(), loop=loop)
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        with pytest.raises(OSError, match=r"cannot listen on \[::1\]:%d" % srv.port) as ei:
            bunsock.listen(hostname="::1", port=srv.port, socket=Echo(), loop=loop)
        assert ei.value.errno == errno.EADDRINUSE
    finally:
        srv.stop()


def test_reuse_port_lets_two_listeners_share_a_port(loop):
    a = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), reuse_port=True, loop=loop)
    b = bunsock.listen(hostname="127.0.0.1", port=a.port, socket=Echo(), reuse_port=True, loop=loop)
    assert a.port == b.port
    a.stop()
    b.stop()


def test_unresolvable_listen_hostname_is_oserror(loop):
    with pytest.raises(OSError):
        bunsock.listen(hostname="no-such-host.invalid", port=0, socket=Echo(), loop=loop)


def _roundtrip(loop, listen_host, connect_host, **listen_kw):
    got = []

    class Client:
        def open(self, sock):
            sock.write(b"ping")

        def data(self, sock, buf):
            got.append((buf, sock.remote_address, sock.family))
            sock.close()

        def close(self, sock, err):
            srv.stop()

        def connect_error(self, sock, exc):
            got.append(exc)
            srv.stop()

    srv = bunsock.listen(hostname=listen_host, port=0, socket=Echo(), loop=loop, **listen_kw)
    bunsock.connect(hostname=connect_host, port=srv.port, socket=Client(), loop=loop)
    run(loop)
    return got


def test_ipv4_echo(loop, no_leaks):
    [(buf, addr, fam)] = _roundtrip(loop, "127.0.0.1", "127.0.0.1")
    assert (buf, addr, fam) == (b"ping", "127.0.0.1", "IPv4")


def test_ipv6_echo(loop, no_leaks):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        got = _roundtrip(loop, "::1", "::1", ipv6_only=True)
    except OSError as e:
        pytest.skip("IPv6 loopback unavailable: %s" % e)
    [(buf, addr, fam)] = got
    assert (buf, addr, fam) == (b"ping", "::1", "IPv6")


def test_localhost_name_is_resolved_off_the_loop(loop, no_leaks):
    main = threading.get_ident()
    seen_threads = []
    orig = socket.getaddrinfo

    def spy(*a, **k):
        seen_threads.append(threading.get_ident())
        return orig(*a, **k)

    socket.getaddrinfo = spy
    try:
        got = _roundtrip(loop, "127.0.0.1", "localhost")
    finally:
        socket.getaddrinfo = orig
    assert got and got[0][0] == b"ping", got
    assert seen_threads and all(t != main for t in seen_threads)


def test_connect_returns_at_once_in_connecting_state(loop, no_leaks):
    events = []

    class Client:
        def open(self, sock):
            events.append(("open", sock.ready_state))
            sock.close()

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            events.append(("close", err))
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    c = bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Client(), loop=loop)
    assert c.ready_state == "connecting"
    assert c.listener is None
    run(loop)
    assert events == [("open", "open"), ("close", None)]
    assert c.ready_state == "closed"


def test_connect_refused_fires_connect_error_only(loop, no_leaks):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    events = []
    table = {
        "open": lambda sock: events.append("open"),
        "data": lambda sock, buf: None,
        "close": lambda sock, err: events.append("close"),
        "connect_error": lambda sock, exc: events.append(exc),
    }
    c = bunsock.connect(hostname="127.0.0.1", port=port, socket=table, loop=loop)
    run(loop)
    assert len(events) == 1 and isinstance(events[0], ConnectionRefusedError)
    assert events[0].errno == errno.ECONNREFUSED
    assert c.ready_state == "closed"


def test_connect_error_for_unknown_name(loop, no_leaks):
    events = []
    bunsock.connect(hostname="no-such-host.invalid", port=80, loop=loop,
                    socket={"data": lambda s, b: None,
                            "connect_error": lambda s, e: events.append(e)})
    run(loop, 30)
    assert len(events) == 1 and isinstance(events[0], OSError)


def test_local_address_and_port(loop, no_leaks):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    lport = probe.getsockname()[1]
    probe.close()
    seen = []

    class Server:
        def open(self, sock):
            seen.append((sock.remote_address, sock.remote_port))
            sock.close()

        def data(self, sock, buf):
            pass

    class Client:
        def open(self, sock):
            seen.append((sock.local_address, sock.local_port))

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Server(), loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Client(), loop=loop,
                    local_address="127.0.0.1", local_port=lport)
    run(loop)
    assert sorted(seen) == [("127.0.0.1", lport), ("127.0.0.1", lport)]


def test_connect_rejects_bad_local_address(loop):
    with pytest.raises(ValueError, match="local_address"):
        bunsock.connect(hostname="127.0.0.1", port=1, socket=Echo(), local_address="nope",
                        loop=loop)


def test_mapping_and_namespace_tables(loop, no_leaks):
    import types
    got = []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                         socket=types.SimpleNamespace(data=lambda s, b: s.write(b.upper())))

    def cdata(sock, buf):
        got.append(buf)
        sock.close()

    bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop,
                    socket={"open": lambda s: s.write(b"abc"), "data": cdata,
                            "close": lambda s, e: srv.stop()})
    run(loop)
    assert got == [b"ABC"]


def test_backend_name():
    assert bunsock.backend() in ("epoll", "kqueue")


# -- connect(connect_timeout=, idle_timeout=), idle_timeout_mode (issue 18) --

def _blackhole():
    """A listening socket whose backlog is full, so a further connect stays in SYN_SENT (the
    kernel drops the SYN): a connect that can only end by its deadline. None if this kernel
    completes it anyway."""
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(lsn.getsockname())
        fillers.append(c)
    return lsn, fillers


def test_connect_timeout_bounds_only_the_connect(loop, no_leaks):
    import time
    lsn, fillers = _blackhole()
    got = []
    try:
        t0 = time.monotonic()
        s = bunsock.connect(hostname="127.0.0.1", port=lsn.getsockname()[1], loop=loop,
                            connect_timeout=0.2, idle_timeout=30,
                            socket={"data": lambda s, b: None,
                                    "open": lambda s: got.append("open"),
                                    "connect_error": lambda s, e: got.append(e)})
        run(loop, 10)
        if got == ["open"]:
            s.close()
            run(loop, 5)
            pytest.skip("this kernel completed the connect to a full backlog")
        assert len(got) == 1 and isinstance(got[0], TimeoutError)
        assert time.monotonic() - t0 < 5
    finally:
        for c in fillers:
            c.close()
        lsn.close()


def test_idle_timeout_is_the_open_sockets_and_timeout_still_sets_both(loop, no_leaks):
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    fired = {}

    def client(name, **kw):
        return bunsock.connect(
            hostname="127.0.0.1", port=srv.port, loop=loop, **kw,
            socket={"data": lambda s, b: None,
                    "timeout": lambda s: (fired.setdefault(name, loop.time()), s.close())})

    start = loop.time()
    client("idle", connect_timeout=30, idle_timeout=0.2)
    client("both", timeout=0.2)
    client("override", timeout=30, idle_timeout=0.2)     # either given overrides timeout=
    quiet = client("none", connect_timeout=0.2)           # no idle timeout once open
    run_until(loop, lambda: len(fired) >= 3)
    assert set(fired) == {"idle", "both", "override"}
    assert all(0.15 <= t - start < 5 for t in fired.values())
    assert quiet.ready_state == "open"
    quiet.close()
    srv.stop()
    run(loop)


def test_idle_timeout_mode_read_is_restarted_by_what_the_peer_sends(loop, no_leaks):
    """A chat server's "no message for N seconds": a client that keeps talking stays; once it
    goes quiet the timeout fires."""
    fired = []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, idle_timeout=0.3,
                         idle_timeout_mode="read",
                         socket={"data": lambda s, b: None,
                                 "timeout": lambda s: (fired.append(loop.time()), s.close())})
    c = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop,
                        socket={"data": lambda s, b: None})
    ticker = loop.call_every(0.05, lambda: c.write(b"ping") if c.ready_state == "open" else 0)
    start = loop.time()
    while loop.time() - start < 1.2:          # four timeout periods of talking
        loop.run_once(0.05)
    assert fired == []
    ticker.cancel()
    quiet = loop.time()
    run_until(loop, lambda: fired, what="the read idle timeout")
    assert fired[0] - quiet >= 0.2
    c.close()
    srv.stop(True)
    run(loop)


def test_idle_timeout_mode_read_fires_while_the_server_keeps_writing(loop, no_leaks):
    fired = []
    server_socks = []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, idle_timeout=0.3,
                         idle_timeout_mode="read",
                         socket={"open": server_socks.append, "data": lambda s, b: None,
                                 "timeout": lambda s: (fired.append(loop.time()), s.close())})
    got = []
    c = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop,
                        socket={"data": lambda s, b: got.append(len(b))})
    # The server writes every 50 ms; the client never writes: only inbound silence counts.
    ticker = loop.call_every(0.05, lambda: [s.write(b"news") for s in server_socks
                                            if s.ready_state == "open"])
    start = loop.time()
    run_until(loop, lambda: fired, what="the read idle timeout")
    assert got, "the server was writing all along"
    assert 0.25 <= fired[0] - start < 5
    ticker.cancel()
    c.close()
    srv.stop(True)
    run(loop)


def test_idle_timeout_mode_is_checked(loop):
    with pytest.raises(ValueError, match="idle_timeout_mode must be 'any'.*or 'read'"):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), idle_timeout_mode="reads",
                       loop=loop)
    with pytest.raises(ValueError, match="idle_timeout_mode"):
        bunsock.connect(hostname="127.0.0.1", port=9, socket=Echo(), idle_timeout_mode=None,
                        loop=loop)
    with pytest.raises(ValueError, match="connect_timeout"):
        bunsock.connect(hostname="127.0.0.1", port=9, socket=Echo(), connect_timeout=-1,
                        loop=loop)


# -- knowing when a stopped listener's last connection has closed (issue 18) --

def test_stop_callback_fires_once_the_last_connection_closes(loop, no_leaks):
    accepted, calls = [], []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                         socket={"open": accepted.append, "data": lambda s, b: None})
    clients = [bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop,
                               socket={"data": lambda s, b: None}) for _ in range(2)]
    run_until(loop, lambda: len(accepted) >= 2)
    srv.stop(callback=lambda lst: calls.append((lst, lst.connections)))
    assert not srv.closed and srv.connections == 2
    accepted[0].close()
    loop.run_once(0)
    assert calls == [] and not srv.closed
    accepted[1].end()                      # a graceful close: FIN, then the peer's FIN
    clients[1].end()
    run_until(loop, lambda: calls)
    assert calls == [(srv, 0)] and srv.closed
    for c in clients:
        c.close()
    run(loop)
    assert len(calls) == 1


def test_stop_callback_with_no_connections_and_close_active(loop, no_leaks):
    calls = []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Echo())
    srv.stop(callback=calls.append)
    assert calls == [] and srv.closed      # called on the loop, not inside stop()
    loop.run_once(0)
    assert calls == [srv]
    srv.stop(callback=calls.append)        # stop() is idempotent; a later callback still runs
    loop.run_once(0)
    assert calls == [srv, srv]
    with pytest.raises(TypeError, match="callback must be callable"):
        srv.stop(callback=3)

    accepted = []
    srv2 = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                          socket={"open": accepted.append, "data": lambda s, b: None})
    c = bunsock.connect(hostname="127.0.0.1", port=srv2.port, loop=loop,
                        socket={"data": lambda s, b: None})
    run_until(loop, lambda: accepted)
    srv2.stop(True, callback=calls.append)
    assert srv2.closed
    loop.run_once(0)
    assert calls[-1] is srv2
    c.close()
    run(loop)
