"""Helpers for the proxy tests: ProxyProc, the
proxy as a user starts it (a subprocess of `python -m bunsock proxy`)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bunsock

from conftest import run_until  # noqa: F401 (re-exported for the proxy tests)

SRC = str(Path(bunsock.__file__).resolve().parent.parent)
ENV = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


class ProxyProc:
    """`python -m bunsock proxy ARGS` (with --listen 127.0.0.1:0 unless listen=False); the port
    is read from its startup line. stderr is a pipe: readline() reads the log."""

    def __init__(self, *args, listen=True, startup=True):
        pre = ["--listen", "127.0.0.1:0"] if listen else []
        self.p = subprocess.Popen([sys.executable, "-m", "bunsock", "proxy", *pre, *args],
                                  stderr=subprocess.PIPE, env=ENV, text=True)
        self.lines = []
        if startup:
            line = self.readline()
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            assert m, "no startup line: %r" % line
            self.port = int(m.group(1))

    def rss_kib(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def readline(self):
        line = self.p.stderr.readline()
        self.lines.append(line)
        return line

    def wait_line(self, pattern, limit=50):
        """Read log lines until one matches `pattern` (regex); return its match."""
        for _ in range(limit):
            line = self.readline()
            if not line:
                break
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError("no log line matching %r in %r" % (pattern, self.lines[-limit:]))

    def stop(self, sig=None, timeout=15):
        import signal
        if self.p.poll() is None:
            self.p.send_signal(sig or signal.SIGTERM)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise
        rest = self.p.stderr.read()
        self.p.stderr.close()
        return rc, rest

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        if not self.p.stderr.closed:
            self.p.stderr.close()


@pytest.fixture
def procs():
    made = []
    yield lambda *a, **kw: made.append(ProxyProc(*a, **kw)) or made[-1]
    for pp in made:
        pp.kill()
