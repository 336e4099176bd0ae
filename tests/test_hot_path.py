"""The per-message fast paths behave as the general ones: Socket.write's C entry (every call shape,
every error), handler calls without argument tuples (every kind of callable, a table reloaded
during the call), and the poll that keeps the GIL while events are ready (signals, other
threads and an idle loop still behave)."""
import functools
import inspect
import os
import signal
import socket
import threading
import time

import pytest

import bunsock
from conftest import run


def _echo_pair(loop, handlers):
    """A listener with `handlers` and a blocking client socket connected to it."""
    lst = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=handlers)
    c = socket.create_connection(("127.0.0.1", lst.port))
    c.settimeout(10)
    return lst, c


def _recv_exactly(c, n):
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        assert chunk, "peer closed after %r" % buf
        buf += chunk
    return buf


def test_write_every_call_shape_inside_and_outside_a_handler(loop, no_leaks):
    results = {}
    socks = []

    def data(s, b):
        # Inside a handler (corked), then the same shapes again from a callback outside any.
        results["in"] = _shapes(s)
        loop.call_soon(lambda: results.__setitem__("out", _shapes(s)))

    def _shapes(s):
        out = [
            s.write(b"abc"),
            s.write(b"abcdef", 2),
            s.write(b"abcdef", 1, 2),
            s.write(data=b"xy"),
            s.write(b"abcdef", offset=4),
            s.write(b"abcdef", length=3),
            s.write(bytearray(b"zz")),
            s.write(memoryview(b"mm")),
            s.write(b""),
        ]
        for bad, exc in [(lambda: s.write("str"), TypeError), (lambda: s.write(), TypeError),
                         (lambda: s.write(b"a", 0, 1, 2), TypeError),
                         (lambda: s.write(b"x", bogus=1), TypeError),
                         (lambda: s.write(b"abc", 5), ValueError)]:
            with pytest.raises(exc):
                bad()
        return out

    lst, c = _echo_pair(loop, {"open": socks.append, "data": data})
    with c:
        c.sendall(b"go")
        want = b"abc" + b"cdef" + b"bc" + b"xy" + b"ef" + b"abc" + b"zz" + b"mm"
        run_until = time.monotonic() + 10
        while "out" not in results and time.monotonic() < run_until:
            loop.run_once(0.05)
        assert results["in"] == results["out"] == [3, 4, 2, 2, 2, 3, 2, 2, 0]
        assert _recv_exactly(c, 2 * len(want)) == want * 2
        socks[0].close()
        assert socks[0].write(b"late") == -1          # the C entry on a closed socket
    lst.stop()
    run(loop)


def test_write_keeps_its_documentation_and_signature():
    w = bunsock.Socket.write
    assert "buffer the rest" in w.__doc__
    assert list(inspect.signature(w).parameters) == ["self", "data", "offset", "length"]


class _Table:
    def __init__(self, log):
        self.log = log

    def data(self, s, b):
        self.log.append(("bound", b))
        s.write(b)
        if b == b"boom":
            raise ValueError("bound")

    def error(self, s, e):
        self.log.append(("error", str(e)))


class _CallableData:
    def __init__(self, log):
        self.log = log

    def __call__(self, s, b):
        self.log.append(("callable", b))
        s.write(b)


def _plain(log, s, b):
    log.append(("partial", b))
    s.write(b)


@pytest.mark.parametrize("kind", ["bound", "function", "callable", "partial", "builtin"])
def test_every_kind_of_data_handler_is_called_with_sock_and_data(loop, no_leaks, kind):
    log = []
    if kind == "bound":
        table = _Table(log)
    else:
        fn = {"function": lambda s, b: (log.append(("function", b)), s.write(b)),
              "callable": _CallableData(log),
              "partial": functools.partial(_plain, log),
              # a C callable without a vectorcall entry (the tp_call fallback)
              "builtin": {}.__setitem__}[kind]
        table = {"data": fn}
    lst, c = _echo_pair(loop, table)
    with c:
        c.sendall(b"ping")
        if kind == "builtin":
            d = fn.__self__
            deadline = time.monotonic() + 10
            while not d and time.monotonic() < deadline:
                loop.run_once(0.05)
            assert list(d.values()) == [b"ping"]
            assert type(next(iter(d))) is bunsock.Socket
            d.clear()
        else:
            deadline = time.monotonic() + 10
            while not log and time.monotonic() < deadline:
                loop.run_once(0.05)
            assert log and log[0][1] == b"ping"
            assert _recv_exactly(c, 4) == b"ping"
    lst.stop()
    run(loop)


def test_bound_handler_exception_goes_to_error_and_the_loop_goes_on(loop, no_leaks,
                                                                   expected_errors):
    log = []
    lst, c = _echo_pair(loop, _Table(log))
    with c:
        c.sendall(b"boom")
        deadline = time.monotonic() + 10
        while ("error", "bound") not in log and time.monotonic() < deadline:
            loop.run_once(0.05)
        assert ("error", "bound") in log
        # the reply written before the raise was flushed, and the socket still echoes
        assert _recv_exactly(c, 4) == b"boom"
        c.sendall(b"more")
        deadline = time.monotonic() + 10
        while ("bound", b"more") not in log and time.monotonic() < deadline:
            loop.run_once(0.05)
        assert _recv_exactly(c, 4) == b"more"
    assert [type(e) for e, _ in expected_errors] == [ValueError]
    lst.stop()
    run(loop)


def test_reload_inside_data_drops_the_old_table_safely(loop, no_leaks, expected_errors):
    """The handler replaces the table (the last reference to its own object) and then raises:
    nothing is freed under the running call, and the error reaches the table now in force."""
    seen = []

    class Old:
        def data(self, s, b):
            s.reload(New())            # Old() was referenced only by the table
            seen.append(("old", b, type(self).__name__))
            raise ValueError("after reload")

        def error(self, s, e):
            seen.append(("old-error", str(e)))

    class New:
        def data(self, s, b):
            seen.append(("new", b))
            s.write(b"new:" + b)

        def error(self, s, e):
            seen.append(("new-error", str(e)))

    socks = []
    lst = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Old())
    bunsock.connect(hostname="127.0.0.1", port=lst.port, loop=loop,
                    socket={"open": lambda s: (socks.append(s), s.write(b"a")),
                            "data": lambda s, b: (seen.append(("client", b)), s.close(),
                                                  lst.stop())})
    loop.call_later(0.2, lambda: socks and socks[0].write(b"b"))
    run(loop)
    assert ("old", b"a", "Old") in seen
    assert ("new-error", "after reload") in seen and ("old-error", "after reload") not in seen
    assert ("new", b"b") in seen and ("client", b"new:b") in seen
    assert [type(e) for e, _ in expected_errors] == [ValueError]


class _Stop(BaseException):
    pass


def test_signal_reaches_a_busy_ping_pong(loop, no_leaks):
    """A loop whose poller always has events ready (so it never blocks) still runs signal
    handlers, and a BaseException from one ends run()."""
    def on_alarm(signum, frame):
        raise _Stop()

    count = [0]

    def cdata(s, b):
        count[0] += 1
        s.write(b)

    lst = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                         socket={"data": lambda s, b: s.write(b)})
    cli = bunsock.connect(hostname="127.0.0.1", port=lst.port, loop=loop,
                          socket={"open": lambda s: s.write(b"x" * 64), "data": cdata})
    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t0 = time.monotonic()
        with pytest.raises(_Stop):
            run(loop, 20)
        assert time.monotonic() - t0 < 15
        assert count[0] > 10
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    cli.close()
    lst.stop()
    run(loop)


def test_another_thread_runs_while_the_loop_is_busy(loop, no_leaks):
    """Python threads still get the GIL while the loop ping-pongs without ever blocking."""
    ticks = [0]
    stop = threading.Event()

    def spinner():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    def cdata(s, b):
        if ticks[0] >= 50:
            s.close()
            lst.stop()
        else:
            s.write(b)

    lst = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                         socket={"data": lambda s, b: s.write(b)})
    bunsock.connect(hostname="127.0.0.1", port=lst.port, loop=loop,
                    socket={"open": lambda s: s.write(b"y" * 64), "data": cdata})
    t = threading.Thread(target=spinner)
    t.start()
    try:
        run(loop, 30)
    finally:
        stop.set()
        t.join(10)
    assert ticks[0] >= 50


def test_an_idle_loop_sleeps(loop, no_leaks):
    """The non-blocking try before each wait backs off when it finds nothing: a loop with only a
    10 ms timer uses a small fraction of a core."""
    fired = [0]

    def tick():
        fired[0] += 1
        if fired[0] == 50:
            t.cancel()

    t = loop.call_every(0.01, tick)
    c0 = time.process_time()
    run(loop)
    used = time.process_time() - c0
    assert fired[0] == 50
    assert used < 0.25, "idle loop used %.3f s of CPU in ~0.5 s" % used


def test_write_from_a_forked_child_is_refused(loop, no_leaks):
    """The C write entry keeps the fork check of the generic path."""
    socks = []
    lst, c = _echo_pair(loop, {"open": socks.append, "data": lambda s, b: None})
    with c:
        while not socks:
            loop.run_once(0.1)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                socks[0].write(b"x")
                os.write(w, b"no error")
            except RuntimeError as e:
                os.write(w, b"ok" if "fork" in str(e) else str(e).encode()[:200])
            finally:
                os._exit(0)
        os.close(w)
        msg = os.read(r, 300)
        os.close(r)
        os.waitpid(pid, 0)
        assert msg == b"ok"
    lst.stop()
    run(loop)
