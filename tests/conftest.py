"""Shared fixtures: a private loop per test, bounded runs, and leak checks on fds."""
import gc
import os
import ssl
import sys
import time
import traceback

import pytest

import bunsock
from bunsock._loop import _observe_handler_exceptions, debug_counts


def _fd_dir():
    """A directory listing this process's open descriptors, if the platform has a trustworthy one:
    /proc/self/fd on Linux, /dev/fd on macOS. (/dev/fd on a BSD without fdescfs lists only 0-2,
    so a candidate is accepted only if it shows a pipe opened just now.)"""
    r, w = os.pipe()
    try:
        for d in ("/proc/self/fd", "/dev/fd"):
            try:
                names = set(os.listdir(d))
            except OSError:
                continue
            if {str(r), str(w)} <= names:
                return d
        return None
    finally:
        os.close(r)
        os.close(w)


_FD_DIR = _fd_dir()


def open_fds():
    """How many descriptors this process has open (a listing's own descriptor included, the same
    every call), so the fd-leak checks mean something on every platform, not only where /proc is."""
    if _FD_DIR is not None:
        return len(os.listdir(_FD_DIR))
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    top = 1 << 16 if soft == resource.RLIM_INFINITY else min(soft, 1 << 16)
    n = 0
    for fd in range(top):
        try:
            os.fstat(fd)
        except OSError:
            continue
        n += 1
    return n


def run(loop, seconds=10.0):
    """Run `loop` until it has nothing left to do, but never longer than `seconds`: a hung test
    fails with a clear message instead of hanging CI."""
    fired = []

    def guard():
        fired.append(True)
        loop.stop()

    t = loop.call_later(seconds, guard)
    t.unref()
    loop.run()
    t.cancel()
    assert not fired, "loop still busy after %.1f s (test bound hit)" % seconds


def run_until(loop, predicate, timeout=10.0, what=None):
    """Run `loop` until `predicate()` is true; fail the test if it is not within `timeout` seconds.
    "Everything has arrived" is a condition to wait for, not a sleep: on a loaded machine (or
    under AddressSanitizer) a fixed delay passes or fails by luck."""
    if predicate():
        return
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # Never block past queued callbacks or the next timer: run() would not, and a test that
        # counts what one callback caused must see the same order under run_until.
        nxt = loop.next_timeout()
        loop.run_once(min(0.05, left) if nxt is None else min(0.05, left, nxt))
    if not predicate():
        pytest.fail("condition %s not met within %.1f s" % (what or getattr(predicate, "__name__", "?"),
                                                           timeout))


# -- Handler failures fail their test ------------------------------------------------------------
# The loop routes a handler's exception to the table's `error` handler, or to sys.unraisablehook;
# either way the test body never sees it. uvloop's test base fails a test whenever its loop
# reported an exception; this does the same: every exception a handler, timer or callback raised,
# and everything sent to sys.unraisablehook, fails the test at teardown, unless the test takes
# `expected_errors` (and then asserts on what it expected).

def _describe(exc, where):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "in %r:\n%s" % (where, tb)


def _take_report(item):
    """The failure text for what handlers raised so far in `item` (None if nothing, or if the
    test expects it), and forget them: their tracebacks hold the test's frames (its loop,
    sockets, listeners), which must be freed before the leak checks count."""
    seen = getattr(item, "_bs_handler_errors", None)
    if not seen:
        return None
    report = None
    if not item._bs_errors_expected:
        report = "%d exception(s) raised inside handlers or callbacks (take the expected_errors " \
                 "fixture if the test provokes them):\n%s" % (
                     len(seen), "\n".join(_describe(e, w) for e, w in seen))
    seen.clear()
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    # Checked right after the test body, before fixtures are torn down (no_leaks counts then).
    try:
        result = yield
    except BaseException as e:
        report = _take_report(item)
        if report is not None and hasattr(e, "add_note"):
            e.add_note(report)
        raise
    report = _take_report(item)
    if report is not None:
        pytest.fail(report, pytrace=False)
    return result


@pytest.fixture(autouse=True)
def _fail_on_handler_errors(request):
    item = request.node
    seen = item._bs_handler_errors = []
    item._bs_errors_expected = False
    old_observer = _observe_handler_exceptions(lambda exc, where: seen.append((exc, where)))
    old_hook = sys.unraisablehook

    def hook(u):
        # A handler's exception routed here was already seen by the observer: count it once.
        if not any(e is u.exc_value for e, _ in seen):
            seen.append((u.exc_value, u.object))

    sys.unraisablehook = hook
    try:
        yield seen
        gc.collect()       # an object whose __del__ reports must report inside this test
    finally:
        sys.unraisablehook = old_hook
        _observe_handler_exceptions(old_observer)
    # What handlers raised while the other fixtures were torn down (loop.close() closing sockets).
    report = _take_report(item)
    del item._bs_handler_errors
    if report is not None:
        pytest.fail(report, pytrace=False)


@pytest.fixture
def expected_errors(request, _fail_on_handler_errors):
    """The (exception, where) pairs handlers raised or the loop reported as unraisable: a test that
    provokes them takes this fixture and asserts on them."""
    request.node._bs_errors_expected = True
    return _fail_on_handler_errors


@pytest.fixture
def loop():
    lp = bunsock.Loop()
    yield lp
    lp.close()


@pytest.fixture
def no_leaks(loop):
    """Fails the test if it leaves fds or bunsock sockets/listeners behind."""
    gc.collect()
    fds, counts = open_fds(), debug_counts()
    yield
    gc.collect()
    after = debug_counts()
    assert open_fds() == fds, "fd leak: %d -> %d" % (fds, open_fds())
    assert after["sockets"] == counts["sockets"], "Socket objects leaked: %r -> %r" % (counts, after)
    assert after["listeners"] == counts["listeners"], "Listeners leaked: %r -> %r" % (counts, after)
    assert after["udp"] == counts["udp"], "UdpSockets leaked: %r -> %r" % (counts, after)


@pytest.fixture
def unraisable(monkeypatch):
    """Collects what the loop reports through sys.unraisablehook, for a test to assert on (an
    exception a handler raised still fails the test unless it takes expected_errors)."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u))
    return seen


def shrink_sndbuf(sock, size=64 * 1024):
    """Give a bunsock socket a small kernel send buffer (through a dup of its fd), so that a test
    that needs the kernel to refuse bytes does not depend on this machine's tcp_wmem."""
    import socket as _socket
    s = _socket.socket(fileno=os.dup(sock.fileno()))
    try:
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, size)
    finally:
        s.close()


# -- TLS: one throwaway CA (trustme) per session; tests skip without trustme -----------------

@pytest.fixture(scope="session")
def ca():
    return pytest.importorskip("trustme").CA()


@pytest.fixture(scope="session")
def server_cert(ca):
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def sctx(server_cert):
    """A server SSLContext with a certificate for localhost and 127.0.0.1."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def cctx(ca):
    """A client SSLContext that trusts the session's CA."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx
