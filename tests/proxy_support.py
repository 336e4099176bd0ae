"""Helpers for the proxy tests: ProxyProc, the
proxy as a user starts it (a subprocess of `python -m bunsock proxy`)."""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import bunsock

from conftest import run_until  # noqa: F401 (re-exported for the proxy tests)

SRC = str(Path(bunsock.__file__).resolve().parent.parent)
ENV = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


class Echo:
    """An upstream that echoes (after greeting with its name, when it has one)."""

    def __init__(self, name=b""):
        self.name = name

    def open(self, sock):
        if self.name:
            sock.write(self.name)

    def data(self, sock, buf):
        sock.write(buf)


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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def haproxy():
    """Starts `haproxy -db` with a tcp frontend relaying to a server line; stops it by PID."""
    exe = shutil.which("haproxy")
    if exe is None:
        pytest.skip("haproxy not installed (apt-get install -y haproxy)")
    procs = []
    files = []

    def start(backend_port, server_opts):
        port = free_port()
        fd, path = tempfile.mkstemp(suffix=".cfg")
        files.append(path)
        with os.fdopen(fd, "w") as f:
            f.write("global\n    maxconn 100\n"
                    "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n"
                    "    timeout server 30s\n"
                    "frontend fe\n    bind 127.0.0.1:%d\n    default_backend be\n"
                    "backend be\n    server s1 127.0.0.1:%d %s\n"
                    % (port, backend_port, server_opts))
        p = subprocess.Popen([exe, "-db", "-f", path], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        procs.append(p)
        deadline = time.monotonic() + 10
        while True:
            assert p.poll() is None, "haproxy exited: %s" % p.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "haproxy did not start listening"
                time.sleep(0.05)
        return port

    yield start
    for p in procs:
        p.terminate()          # by PID: only the haproxy this test started
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stderr.close()
    for path in files:
        os.unlink(path)
