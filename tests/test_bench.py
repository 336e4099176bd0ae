"""The benchmark tooling behaves: the load generator counts echoes, its content check catches a
bad server, idle mode holds connections, and `python -m bunsock bench` runs end to end.

No performance numbers are asserted (this machine is noisy): benchmarks/ reports those.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

_loadgen = pytest.importorskip("bunsock.bench._loadgen")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EchoServer:
    """A thread-per-connection echo server; `transform(data, pos)` lets a test break it on purpose."""

    def __init__(self, transform=None):
        self.transform = transform
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(512)
        self.port = self.lsock.getsockname()[1]
        self.open = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with self.lock:
            self.open += 1
        pos = 0
        try:
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    out = self.transform(data, pos) if self.transform else data
                    pos += len(data)
                    if out is None:
                        return  # close the connection early
                    conn.sendall(out)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1

    def stop(self):
        # close() alone does not wake a thread blocked in accept(); shutdown() does (EINVAL).
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()


@pytest.fixture
def server_factory():
    made = []

    def make(transform=None):
        s = EchoServer(transform)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_counts_echoed_messages(server_factory):
    srv = server_factory()
    r = _loadgen.run("127.0.0.1", srv.port, conns=4, pipeline=4, size=1000, duration=0.5, warmup=0.1,
                     server_pid=os.getpid())
    assert r["errors"] == 0, r["error"]
    assert r["error"] is None
    assert r["connected"] == 4
    assert r["messages"] > 0 and r["bytes"] > 0
    assert 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"]
    assert 0.4 < r["elapsed"] < 2.0
    assert r["requests_per_s"] > 0 and r["mb_per_s"] > 0
    if sys.platform.startswith("linux"):  # the "server" is this process: its CPU must be readable
        assert r["server_cpu_ns"] > 0 and r["server_cpu_us_per_msg"] > 0


def test_large_messages_cross_many_reads(server_factory):
    srv = server_factory()
    r = _loadgen.run("127.0.0.1", srv.port, conns=2, size=3 * 1024 * 1024 + 7, duration=0.5, warmup=0)
    assert r["errors"] == 0, r["error"]
    assert r["messages"] > 0


def test_corrupted_echo_is_an_error(server_factory):
    def corrupt(data, pos):
        if pos <= 5000 < pos + len(data):  # flip one bit of stream byte 5000
            i = 5000 - pos
            data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        return data

    srv = server_factory(corrupt)
    r = _loadgen.run("127.0.0.1", srv.port, conns=2, size=100, duration=0.3, warmup=0)
    assert r["content_errors"] == 2  # both connections, each at its byte 5000
    assert r["errors"] == 2
    assert "byte 5000" in r["error"] and "message 50" in r["error"]


def test_extra_bytes_are_an_error(server_factory):
    srv = server_factory(lambda data, pos: data + data)
    r = _loadgen.run("127.0.0.1", srv.port, conns=1, size=64, duration=0.3, warmup=0)
    assert r["content_errors"] == 1
    assert "sent" in r["error"]


def test_premature_close_is_an_error(server_factory):
    srv = server_factory(lambda data, pos: data if pos < 1000 else None)
    r = _loadgen.run("127.0.0.1", srv.port, conns=3, size=100, duration=0.3, warmup=0)
    assert r["closed_errors"] == 3
    assert r["content_errors"] == 0
    assert r["error"]  # "closed by the server" or a reset, depending on what the kernel saw first


def test_refused_connections_are_counted():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = _loadgen.run("127.0.0.1", port, conns=3, duration=0.2, warmup=0)
    assert r["connect_errors"] == 3 and r["connected"] == 0 and r["messages"] == 0


def test_idle_mode_holds_connections_until_stopped(server_factory):
    srv = server_factory()
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    box = {}
    t = threading.Thread(target=lambda: box.update(r=_loadgen.run(
        "127.0.0.1", srv.port, mode="idle", conns=50, size=16, duration=0, ready_fd=ready_w, stop_fd=stop_r,
        connect_timeout=10)))
    try:
        t.start()
        assert os.read(ready_r, 16) == b"ready\n"  # blocks until every connection echoed once
        time.sleep(0.2)
        assert t.is_alive()  # holding: duration=0 means until stop_fd
        assert srv.open == 50
        os.write(stop_w, b"x")
        t.join(10)
        assert not t.is_alive()
    finally:
        for fd in (ready_r, ready_w, stop_r, stop_w):
            os.close(fd)
    r = box["r"]
    assert r["connected"] == 50 and r["messages"] == 50 and r["errors"] == 0


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        _loadgen.run("127.0.0.1", 0)
    with pytest.raises(ValueError):
        _loadgen.run("127.0.0.1", 80, mode="nope")
    with pytest.raises(ValueError):
        _loadgen.run("not-an-address", 80, duration=0.1)
    with pytest.raises(ValueError):
        _loadgen.run("127.0.0.1", 80, conns=0)


def _env():
    # Child processes must import the same bunsock as this test (installed, or src/ in place).
    import bunsock
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(bunsock.__file__)))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_loadgen_cli_prints_json(server_factory):
    srv = server_factory()
    out = subprocess.run([sys.executable, "-m", "bunsock.bench.loadgen", "--port", str(srv.port), "--conns", "2",
                          "--duration", "0.3", "--warmup", "0"], capture_output=True, text=True, timeout=30,
                         env=_env())
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["messages"] > 0 and r["errors"] == 0


def test_bench_quick_json_smoke():
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "bunsock", "bench", "--quick", "--json"], capture_output=True,
                         text=True, timeout=60, env=_env())
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert time.monotonic() - t0 < 30
    keys = [s["key"] for s in doc["scenarios"]]
    assert keys and set(doc["results"]) == set(keys)
    for key in keys:
        for kind in ("bunsock", "asyncio"):
            s = doc["results"][key][kind]
            assert s["errors"] == 0, s["error"]
            assert s["requests_per_s"] > 0
    assert all(r["messages"] > 0 for r in doc["runs"])
