"""Shared fixtures: a private loop per test, bounded runs, and leak checks on fds."""
import gc
import os

import pytest

import bunsock
from bunsock._loop import debug_counts


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
    """Collects what the loop reports through sys.unraisablehook."""
    import sys
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
