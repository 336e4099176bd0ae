"""Idle timeouts (sock.timeout, listen(idle_timeout=), connect(timeout=)) and loop timers
(call_later, call_every, call_soon, cancel, ref/unref).

Timing windows are generous (the machine is shared and noisy) but each one still separates
"works" from "broken": e.g. an idle timeout that is not restarted by I/O fires inside the window
where the test asserts it does not.
"""
import resource
import socket
import threading
import time

import pytest

import bunsock
from conftest import run, shrink_sndbuf

HOST = "127.0.0.1"
# Timeouts fire within 100 ms of their deadline on an idle machine (docs/API.md §6); a loaded one,
# or an AddressSanitizer build, runs the loop later: upper bounds allow this much more.
LATE = 3.0


class Silent:
    """Client handlers that do nothing but record the close."""

    def __init__(self):
        self.closes = []

    def data(self, sock, buf):
        pass

    def close(self, sock, err):
        self.closes.append(err)


def listen(loop, handlers, **kw):
    return bunsock.listen(hostname=HOST, port=0, socket=handlers, loop=loop, **kw)


# ---------------------------------------------------------------------------------------------
# Idle timeouts


def test_idle_timeout_fires_once_per_idle_period(loop):
    log = []

    class H:
        def open(self, sock):
            log.append(("open", time.monotonic()))

        def data(self, sock, buf):
            log.append(("data", time.monotonic()))

        def timeout(self, sock):
            log.append(("timeout", time.monotonic()))
            if sum(1 for e in log if e[0] == "timeout") == 2:
                sock.close()

        def close(self, sock, err):
            log.append(("close", err))
            srv.stop()

    srv = listen(loop, H(), idle_timeout=0.3)
    # Lower bounds count from moments truly before what starts each period: the connect() call
    # (the server arms the timeout at accept, before `open` runs) and the client's write (the
    # server's read comes after it).
    t0 = time.monotonic()
    cl = bunsock.connect(hostname=HOST, port=srv.port, socket=Silent(), loop=loop)
    sent = []
    # Stay idle for 1.2 s (4 periods): the handler fires once, not every 0.3 s. Then one byte
    # starts a new idle period, which ends in a second timeout.
    loop.call_later(1.2, lambda: (sent.append(time.monotonic()), cl.write(b"!")))
    run(loop, 10)
    kinds = [e[0] for e in log]
    assert kinds == ["open", "timeout", "data", "timeout", "close"]
    t1, t2 = log[1][1], log[3][1]
    assert 0.28 <= t1 - t0 <= 0.3 + LATE
    assert 0.28 <= t2 - sent[0] <= 0.3 + LATE
    assert log[-1] == ("close", None)
    assert cl.ready_state == "closed"


def test_peer_activity_keeps_timeout_from_firing(loop):
    fired = []
    opened = []
    last_data = []

    class H:
        def open(self, sock):
            opened.append(time.monotonic())
            sock.timeout(0.3)

        def data(self, sock, buf):
            last_data[:] = [time.monotonic()]

        def timeout(self, sock):
            fired.append(time.monotonic())
            sock.close()

        def close(self, sock, err):
            srv.stop()

    srv = listen(loop, H())
    cl = bunsock.connect(hostname=HOST, port=srv.port, socket=Silent(), loop=loop)
    sent = []

    def tick():
        sent.append(time.monotonic())         # before the server reads it
        cl.write(b".")

    ticker = loop.call_every(0.1, tick)
    loop.call_later(1.5, ticker.cancel)        # 1.5 s of activity: 5 idle periods' worth
    run(loop, 10)
    assert len(fired) == 1 and last_data
    # The peer stayed active well past the idle period, and the timeout fired only after it fell
    # silent (had it fired earlier, the socket would be closed before the last ticks).
    assert sent[-1] - sent[0] >= 1.0
    assert 0.28 <= fired[0] - sent[-1] <= 0.3 + LATE


def test_local_writes_restart_the_timeout(loop):
    fired = []
    opened = []

    class H:
        def open(self, sock):
            opened.append(time.monotonic())
            sock.timeout(0.3)
            t = loop.call_every(0.1, write, sock)
            loop.call_later(1.5, t.cancel)

        def data(self, sock, buf):
            pass

        def timeout(self, sock):
            fired.append(time.monotonic())
            sock.close()

        def close(self, sock, err):
            srv.stop()

    last_write = []

    def write(sock):
        last_write[:] = [time.monotonic()]
        sock.write(b"tick")

    srv = listen(loop, H())
    got = []
    bunsock.connect(hostname=HOST, port=srv.port, loop=loop,
                    socket={"data": lambda s, b: got.append(len(b))})
    run(loop, 10)
    assert len(fired) == 1
    # The writes went on well past the idle period; the timeout came only after the last one
    # (a write is stamped when it reaches the kernel, after last_write was taken).
    assert last_write[0] - opened[0] >= 1.0
    assert 0.28 <= fired[0] - last_write[0] <= 0.3 + LATE
    assert sum(got) >= 4 * 12          # the writes really went out


@pytest.mark.parametrize("clear", [0, None])
def test_clearing_the_timeout(loop, clear):
    fired = []

    class H:
        def open(self, sock):
            sock.timeout(0.2)
            sock.timeout(clear)
            loop.call_later(0.8, sock.close)

        def data(self, sock, buf):
            pass

        def timeout(self, sock):
            fired.append(sock)

        def close(self, sock, err):
            srv.stop()

    srv = listen(loop, H(), idle_timeout=0.1)      # the per-socket call overrides the default
    bunsock.connect(hostname=HOST, port=srv.port, socket=Silent(), loop=loop)
    run(loop, 5)
    assert fired == []


def test_no_timeout_handler_closes_with_timeout_error(loop):
    closes = []
    t0 = []

    class H:
        def open(self, sock):
            t0.append(time.monotonic())

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            closes.append((err, time.monotonic(), sock.ready_state))
            srv.stop()

    srv = listen(loop, H(), idle_timeout=0.2)
    client = Silent()
    t_call = time.monotonic()      # before the accept that arms the timeout (`open` is after it)
    bunsock.connect(hostname=HOST, port=srv.port, socket=client, loop=loop)
    run(loop, 5)
    assert len(closes) == 1 and t0
    err, when, state = closes[0]
    assert isinstance(err, TimeoutError)
    assert state == "closed"
    assert 0.18 <= when - t_call <= 0.2 + LATE
    assert client.closes == [None]        # the peer saw an orderly close


def test_timeout_handler_exception_goes_to_error_and_socket_stays_open(loop, expected_errors):
    seen = []

    class H:
        def open(self, sock):
            sock.timeout(0.05)

        def data(self, sock, buf):
            pass

        def timeout(self, sock):
            raise RuntimeError("boom")

        def error(self, sock, exc):
            seen.append((type(exc), sock.ready_state))
            loop.call_later(0.1, sock.close)

        def close(self, sock, err):
            seen.append(("close", err))
            srv.stop()

    srv = listen(loop, H())
    bunsock.connect(hostname=HOST, port=srv.port, socket=Silent(), loop=loop)
    run(loop, 5)
    assert seen == [(RuntimeError, "open"), ("close", None)]
    assert [str(e) for e, _ in expected_errors] == ["boom"]


def test_connect_timeout_becomes_idle_timeout(loop):
    """connect(timeout=) bounds the connect, then is the socket's idle timeout."""
    log = []

    class Server:
        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop()

    class Client:
        def open(self, sock):
            log.append(("open", time.monotonic()))

        def data(self, sock, buf):
            pass

        def timeout(self, sock):
            log.append(("timeout", time.monotonic()))
            sock.end()

        def connect_error(self, sock, exc):
            log.append(("connect_error", exc))

    srv = listen(loop, Server())
    t0 = time.monotonic()          # the idle period starts at the connect() call or after it
    bunsock.connect(hostname=HOST, port=srv.port, socket=Client(), loop=loop, timeout=0.3)
    run(loop, 5)
    assert [e[0] for e in log] == ["open", "timeout"]
    assert 0.28 <= log[1][1] - t0 <= 0.3 + LATE


def test_timeout_set_while_connecting_wins_over_connect_timeout(loop):
    """sock.timeout() called before the connection completes is the user's later word."""
    log = []

    class Client:
        def open(self, sock):
            log.append(("open", time.monotonic()))

        def data(self, sock, buf):
            pass

        def timeout(self, sock):
            log.append(("timeout", time.monotonic()))
            sock.close()
            srv.stop(True)

    srv = listen(loop, {"data": lambda s, b: None})
    t0 = time.monotonic()          # before the timeout(0.2) call, wherever it starts counting
    c = bunsock.connect(hostname=HOST, port=srv.port, socket=Client(), loop=loop, timeout=5)
    c.timeout(0.2)
    run(loop, 10)
    assert [e[0] for e in log] == ["open", "timeout"]
    assert 0.18 <= log[1][1] - t0 <= 0.2 + LATE       # far below the connect timeout's 5 s


def test_connect_timeout_to_blackholed_address(loop):
    """A listener with backlog 0 whose accept queue is full drops new SYNs: the connect hangs in
    SYN_SENT, exactly like a blackholed address, while staying on 127.0.0.1."""
    blackhole = socket.socket()
    blackhole.bind((HOST, 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    try:
        # Fill the accept queue (backlog 0 admits one); later SYNs are dropped.
        for _ in range(3):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex((HOST, port))
            fillers.append(f)
            time.sleep(0.05)
        log = []

        class Client:
            def open(self, sock):
                log.append("open")

            def data(self, sock, buf):
                pass

            def close(self, sock, err):
                log.append("close")

            def connect_error(self, sock, exc):
                log.append((exc, time.monotonic()))

        t0 = time.monotonic()
        s = bunsock.connect(hostname=HOST, port=port, socket=Client(), loop=loop, timeout=0.3)
        run(loop, 5)
        assert len(log) == 1, log
        exc, when = log[0]
        assert isinstance(exc, TimeoutError)
        assert 0.28 <= when - t0 <= 0.3 + LATE
        assert s.ready_state == "closed"
    finally:
        for f in fillers:
            f.close()
        blackhole.close()


# ---------------------------------------------------------------------------------------------
# Loop timers


def test_call_every_fixed_rate_no_drift(loop):
    times = []
    whens = []

    def tick():
        times.append(time.monotonic())
        whens.append(timer.when)          # the next due time, on the loop's clock

    timer = loop.call_every(0.02, tick)
    first = timer.when
    loop.call_later(1.01, timer.cancel)
    run(loop, 5)
    # 50 slots in 1 s, never more (missed calls are not made up); a loaded machine may miss some.
    assert 35 <= len(times) <= 53, len(times)
    # No drift: each next due time is on the grid first + n*0.02 (ms precision), however late a
    # loaded machine ran the call; a schedule counted from the call would drift off it.
    steps = [(w - first) / 0.02 for w in whens]
    assert all(abs(k - round(k)) < 0.05 for k in steps), steps
    assert all(a < b for a, b in zip(steps, steps[1:])), steps


def test_call_every_skips_missed_calls_after_a_stall(loop):
    times = []
    whens = []

    def tick():
        times.append(time.monotonic())
        whens.append(timer.when)
        if len(times) == 5:
            time.sleep(0.2)          # the loop falls 10 intervals behind

    timer = loop.call_every(0.02, tick)
    first = timer.when
    loop.call_later(1.01, timer.cancel)
    run(loop, 5)
    # 50 slots in 1 s, ~10 of them missed during the stall and not made up (a loaded machine may
    # miss a few more, never make them up).
    assert 25 <= len(times) <= 44, len(times)
    after = times[5:]
    # No burst of catch-up calls: the 10 missed calls are not made up right after the stall
    # (the late one, then the grid resumes: at most 4 calls in the next 60 ms)...
    assert sum(1 for t in after if t - after[0] < 0.06) <= 4
    # ...and the schedule stays on the original grid (first + n*interval, ms precision), with the
    # missed slots skipped: the call after the stall is due at least 10 slots after the 5th.
    steps = [(w - first) / 0.02 for w in whens]
    assert all(abs(k - round(k)) < 0.05 for k in steps), steps
    assert all(a < b for a, b in zip(steps, steps[1:])), steps
    assert round(steps[5]) - round(steps[4]) >= 10, steps


def test_cancel_stops_timers(loop):
    calls = []

    def tick():
        calls.append("every")
        if len(calls) == 5:
            timer.cancel()
            timer.cancel()            # idempotent

    timer = loop.call_every(0.01, tick)
    later = loop.call_later(0.05, calls.append, "later")
    soon = loop.call_soon(calls.append, "soon")
    later.cancel()
    soon.cancel()
    t0 = time.monotonic()
    run(loop, 5)
    assert calls == ["every"] * 5
    assert not timer.active and not later.active
    # Nothing referenced is left once the repeating timer is cancelled: run() returns at once
    # (not at the 5 s bound).
    assert time.monotonic() - t0 < LATE
    assert loop.refs == 0


def test_unref_timer_lets_run_return(loop):
    calls = []
    slow = loop.call_later(5, calls.append, "slow")
    slow.unref()
    t0 = time.monotonic()
    run(loop, 10)
    assert time.monotonic() - t0 < LATE and calls == []      # not after the 5 s timer

    # An unref'd repeating timer still runs while something else keeps the loop alive.
    ticker = loop.call_every(0.02, calls.append, "tick").unref()
    loop.call_later(0.3, calls.append, "done")
    t0 = time.monotonic()
    run(loop, 5)
    assert "done" in calls and calls.count("tick") >= 8
    assert calls.index("done") >= len(calls) - 2       # run() returned right after "done"
    assert time.monotonic() - t0 < 0.3 + LATE
    # ref() again: now it keeps run() going until cancelled.
    ticker.ref()
    loop.call_later(0.2, ticker.cancel).unref()
    n = calls.count("tick")
    t0 = time.monotonic()
    run(loop, 5)
    assert time.monotonic() - t0 >= 0.18
    assert calls.count("tick") > n
    slow.cancel()


def test_timer_exceptions_are_reported_and_loop_continues(loop, unraisable, expected_errors):
    calls = []

    def bad():
        calls.append("bad")
        raise ValueError("timer failed")

    def bad_every():
        calls.append("bad_every")
        if calls.count("bad_every") == 4:
            t.cancel()
            loop.call_later(0.02, calls.append, "still running")
        raise KeyError("again")

    loop.call_soon(bad)
    t = loop.call_every(0.02, bad_every)
    run(loop, 10)
    assert calls == ["bad"] + ["bad_every"] * 4 + ["still running"]
    kinds = [type(u.exc_value) for u in unraisable]
    assert kinds == [ValueError] + [KeyError] * 4
    assert [type(e) for e, _ in expected_errors] == kinds


def test_writes_in_timer_callbacks_are_corked(loop):
    sends = []
    pieces = [b"%d," % i for i in range(10)]

    class Server:
        def open(self, sock):
            loop.call_later(0.05, burst, sock, "later")
            loop.call_soon(burst, sock, "soon")

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop()

    def burst(sock, kind):
        n = loop.stats()["sends"]
        for p in pieces:
            sock.write(p)
        # Held until the callback returns; the check runs in the next callback.
        loop.call_soon(lambda: sends.append((kind, loop.stats()["sends"] - n)))
        if kind == "later":
            loop.call_later(0.05, sock.end)

    srv = listen(loop, Server())
    got = []
    bunsock.connect(hostname=HOST, port=srv.port, loop=loop,
                    socket={"data": lambda s, b: got.append(bytes(b))})
    run(loop, 5)
    assert sorted(sends) == [("later", 1), ("soon", 1)]
    assert b"".join(got) == b"".join(pieces) * 2


def test_module_level_timers_use_the_default_loop():
    """bunsock.call_later/call_every/call_soon + bunsock.run() on a thread's default loop (a
    fresh thread gets a fresh default loop, so nothing leaks into other tests)."""
    out = []

    def main():
        try:
            lp = bunsock.get_loop()
            bunsock.call_soon(out.append, "soon")
            every = bunsock.call_every(0.01, lambda: out.append("every") if out.count("every") < 3
                                       else every.cancel())
            bunsock.call_later(0.5, out.append, "later")     # well after the 3 ticks
            guard = lp.call_later(5, lp.stop)
            guard.unref()
            bunsock.run()
            guard.cancel()
            out.append(lp is bunsock.get_loop())
            lp.close()
        except BaseException as e:  # noqa: BLE001
            out.append(e)

    th = threading.Thread(target=main)
    th.start()
    th.join(10)
    assert out == ["soon", "every", "every", "every", "later", True]


def test_timer_argument_checks(loop):
    with pytest.raises(ValueError):
        loop.call_every(0, print)
    with pytest.raises(ValueError):
        loop.call_later(-1, print)
    with pytest.raises(TypeError):
        loop.call_later(1, "not callable")
    with pytest.raises(ValueError):
        loop.call_later(float("nan"), print)
    with pytest.raises(ValueError):
        loop.call_later(1e300, print)       # would overflow the loop's ms clock


# ---------------------------------------------------------------------------------------------
# Scale: thousands of sockets with idle timeouts


def _raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return soft, hard


def test_thousands_of_idle_timeouts_all_fire(loop):
    n = 3000
    old = _raise_nofile(2 * n + 200)
    opened = {}          # server socket -> its peer's port
    called = {}          # client's local port -> when the test called connect() for it
    fired = {}
    closed = []
    clients_closed = []

    class Server:
        def open(self, sock):
            opened[sock] = sock.remote_port

        def data(self, sock, buf):
            pass

        def timeout(self, sock):
            assert sock not in fired
            fired[sock] = time.monotonic()
            sock.close()

        def close(self, sock, err):
            closed.append(err)
            if len(closed) == n:
                srv.stop()

    class Client:
        def open(self, sock):
            called[sock.local_port] = sock.data

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            clients_closed.append(err)

    srv = listen(loop, Server(), idle_timeout=0.5, backlog=4096)
    try:
        started = []

        def connect_batch():
            for _ in range(250):
                if len(started) < n:
                    started.append(bunsock.connect(hostname=HOST, port=srv.port,
                                                   socket=Client(), loop=loop,
                                                   data=time.monotonic()))
            if len(started) >= n:
                batcher.cancel()

        batcher = loop.call_every(0.01, connect_batch)
        run(loop, 30)
        assert len(opened) == n and len(fired) == n
        assert closed == [None] * n
        assert len(clients_closed) == n
        # The server arms the timeout at accept, which comes after the client's connect() call:
        # measured from that call, no timeout may fire before the 0.5 s (less the wheel's tick).
        # (Measured from `open`, which a loaded machine runs tens of ms after the accept, it can.)
        delays = sorted(fired[s] - called[opened[s]] for s in opened)
        assert delays[0] >= 0.48, delays[:5]
        assert delays[-1] <= 0.5 + 5.0, delays[-1]       # a loaded machine or ASan, 3000 handlers
    finally:
        srv.stop(True)
        for c in started:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def test_closing_a_loop_releases_pending_timers():
    """Timers still armed when the loop is closed (unref'd ones are the usual case) must not keep
    themselves and the loop alive."""
    import gc
    from bunsock._loop import debug_counts
    gc.collect()
    before = debug_counts()
    lp = bunsock.Loop()
    lp.call_later(5, print).unref()
    lp.call_every(1, print).unref()
    lp.call_soon(print)
    lp.run()
    lp.close()
    del lp
    gc.collect()
    after = debug_counts()
    assert after["timers"] == before["timers"]
    assert after["loops"] == before["loops"]


def test_draining_a_backlog_counts_as_activity(loop):
    """A big write that drains slowly to a steady reader is not idle: bytes keep reaching the
    kernel, so the idle timeout must not fire mid-transfer."""
    import hashlib
    big = bytes(range(256)) * (24 * 1024)        # 6 MiB
    log = []

    class H:
        def open(self, sock):
            # A small kernel send buffer: the sink must refill it every few ms, so bytes keep
            # reaching the kernel (with megabytes in the kernel's buffer, the sink would rightly
            # sit idle while a reader slowed by a loaded machine works through them).
            shrink_sndbuf(sock)
            # 1 s: a reader thread on a loaded machine can stall for a few hundred ms, and that
            # is idle time on this socket; the transfer lasts three of these periods.
            sock.timeout(1.0)
            sock.write(big)
            log.append(("written", time.monotonic()))

        def data(self, sock, buf):
            pass

        def drain(self, sock):
            log.append(("drain", time.monotonic()))
            sock.end()

        def timeout(self, sock):
            log.append(("timeout", time.monotonic(), sock.buffered_amount))

        def close(self, sock, err):
            log.append(("close", err))
            srv.stop()

    srv = listen(loop, H())
    res = {}

    def reader():
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        c.settimeout(20)
        c.connect((HOST, srv.port))
        h, n, t0 = hashlib.sha256(), 0, time.monotonic()
        with c:
            while True:
                b = c.recv(16384)
                if not b:
                    break
                h.update(b)
                n += len(b)
                time.sleep(0.008)          # ~2 MB/s: about 3 s for the whole transfer
        res.update(n=n, digest=h.digest(), secs=time.monotonic() - t0)

    th = threading.Thread(target=reader)
    th.start()
    run(loop, 20)
    th.join(20)
    assert res["n"] == len(big) and res["digest"] == hashlib.sha256(big).digest()
    assert res["secs"] > 2.0             # the transfer really outlived the 1 s timeout
    kinds = [e[0] for e in log]
    assert kinds[:2] == ["written", "drain"], log
    assert kinds[-1] == "close"


def test_a_slow_callback_does_not_delay_a_later_timer(loop):
    """The poll timeout is measured from the time after the callbacks ran, not before."""
    t0 = time.monotonic()
    fired = []
    loop.call_later(1.0, lambda: fired.append(time.monotonic() - t0))
    loop.call_soon(time.sleep, 1.0)
    run(loop, 5)
    # Measured from before the callbacks, the wait would end at 1.0 + 1.0 s: the gap leaves
    # most of a second for a loaded machine.
    assert 0.99 <= fired[0] < 1.9, fired


def test_idle_timeout_counts_from_the_io_not_from_the_batch_start(loop):
    """Two sockets readable in one batch, the first handler slow: the second socket's read is
    stamped when it happens, so its idle timeout does not fire early by the first's delay."""
    import socket as _socket
    seen = {}

    class H:
        def open(self, sock):
            sock.data = len(seen)
            seen[sock.data] = {}

        def data(self, sock, buf):
            seen[sock.data]["io"] = time.monotonic()     # the read happened just before
            seen[sock.data]["poll"] = loop.stats()["polls"]
            if sock.data == 0:
                time.sleep(0.4)

        def timeout(self, sock):
            seen[sock.data].setdefault("fired", time.monotonic())
            sock.close()
            if all("fired" in v for v in seen.values()):
                srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=H(), loop=loop, idle_timeout=1.0)
    a = _socket.create_connection(("127.0.0.1", srv.port))
    while len(seen) < 1:
        loop.run_once(0.05)
    b = _socket.create_connection(("127.0.0.1", srv.port))
    while len(seen) < 2:
        loop.run_once(0.05)
    a.sendall(b"x")
    b.sendall(b"y")                        # loopback: both readable before the next poll
    sent = loop.stats()["polls"]
    run(loop, 10)
    a.close()
    b.close()
    assert [v["poll"] for v in seen.values()] == [sent + 1] * 2, "not one batch: %r" % seen
    for v in seen.values():
        assert v["fired"] - v["io"] >= 0.95, seen


def test_timer_and_loop_reprs_say_what_they_are(loop):
    def tick():
        pass

    assert repr(loop) == "<bunsock.Loop %s idle refs=0>" % bunsock.backend()
    once = loop.call_later(5, tick)
    every = loop.call_every(0.5, tick).unref()
    assert repr(once).startswith("<bunsock.Timer ") and "tick once due=" in repr(once)
    assert "tick every 0.5s due=" in repr(every) and repr(every).endswith(" unref>")
    assert "refs=1" in repr(loop)
    once.cancel()
    every.cancel()
    assert "cancelled or done" in repr(once)
    loop.close()
    assert "closed" in repr(loop)


@pytest.mark.parametrize("how", ["write", "writelines"])
def test_a_write_outside_any_handler_starts_a_new_idle_period(loop, how):
    """After `timeout` fired, a write made outside any handler (the loop driven by run_once,
    as an embedding does) is activity: `timeout` fires again one period later, for write() and
    writelines() alike."""
    from conftest import run_until
    fired = []
    srv = listen(loop, Silent())
    client = bunsock.connect(hostname=HOST, port=srv.port, loop=loop, socket={
        "open": lambda s: s.timeout(0.2), "data": lambda s, b: None,
        "timeout": lambda s: fired.append(time.monotonic())})
    run_until(loop, lambda: len(fired) == 1)
    if how == "write":
        assert client.write(b"ping") == 4
    else:
        assert client.writelines([b"pi", b"ng"]) == 4
    wrote = time.monotonic()
    run_until(loop, lambda: len(fired) == 2, timeout=5)
    assert fired[1] - wrote >= 0.15
    client.close()
    srv.stop(True)
    run(loop)


def test_run_once_validates_its_timeout(loop):
    """A negative or NaN timeout is a ValueError (epoll_wait(-1) would block forever); a huge
    one is capped (MAX_WAIT, about 24.8 days), not overflowed: the loop still returns on the
    first event."""
    wake = threading.Timer(1.0, lambda: loop.call_soon_threadsafe(lambda: None))
    wake.start()
    try:
        for bad in (-0.001, -1, float("nan")):
            with pytest.raises(ValueError, match="timeout"):
                loop.run_once(bad)
        with pytest.raises(TypeError):
            loop.run_once("1")
    finally:
        wake.cancel()
    for huge in (1e12, float("inf"), 10 ** 30, 10 ** 400):
        # a wait that wrapped to a negative int would block forever; a capped one ends with
        # the first event (this thread's wake-up)
        done = []
        wake = threading.Timer(0.1, lambda: loop.call_soon_threadsafe(done.append, 1))
        wake.start()
        t0 = time.monotonic()
        while not done and time.monotonic() - t0 < 5:
            loop.run_once(huge)
        wake.join()
        assert done and time.monotonic() - t0 < 5
    loop.run_once(0)


def test_a_loop_that_failed_to_build_is_not_counted():
    import gc
    from bunsock._loop import debug_counts
    gc.collect()
    before = debug_counts()["loops"]
    for _ in range(3):
        with pytest.raises(ValueError, match="read_buffer_size"):
            bunsock.Loop(read_buffer_size=100)
    gc.collect()
    assert debug_counts()["loops"] == before


def test_run_once_returns_for_queued_callbacks_and_due_timers(loop):
    """run_once(timeout) waits for events only until there is other work: a queued call_soon
    runs at once, a timer due before the timeout fires inside that same call."""
    ran = []
    loop.call_soon(ran.append, "soon")
    t0 = time.monotonic()
    loop.run_once(30)
    assert ran == ["soon"]
    assert time.monotonic() - t0 < 10          # not the 30 s timeout (slack for a loaded machine)
    loop.call_later(0.05, ran.append, "timer")
    t0 = time.monotonic()
    while "timer" not in ran and time.monotonic() - t0 < 10:
        loop.run_once(30)
    assert ran == ["soon", "timer"]
    assert time.monotonic() - t0 < 10
