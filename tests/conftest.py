"""Shared fixtures: a private loop per test, bounded runs, and leak checks on fds."""
import gc
import os

import pytest

import bunsock
from bunsock._loop import debug_counts


def open_fds():
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


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


@pytest.fixture
def unraisable(monkeypatch):
    """Collects what the loop reports through sys.unraisablehook."""
    import sys
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u))
    return seen
