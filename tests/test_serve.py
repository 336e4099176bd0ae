"""bunsock.serve(): pre-forked workers on one reuse_port listener, restarted when they die."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import bunsock

SCRIPT = textwrap.dedent("""
    import os, sys
    import bunsock

    PORT = int(sys.argv[1])

    class WhoAmI:
        def data(self, sock, buf):
            sock.end(str(os.getpid()).encode())

    def setup():
        bunsock.listen(hostname="127.0.0.1", port=PORT, socket=WhoAmI(), reuse_port=True)

    print("parent", os.getpid(), flush=True)
    bunsock.serve(workers=2, setup=setup, restart_delay=0.05)
    print("stopped", flush=True)
""")


def ask(port):
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"?")
                data = b""
                while True:
                    chunk = c.recv(100)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    return int(data)
        except (ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("no worker answered on port %d" % port)
        time.sleep(0.05)


def worker_pids(port, n=2, seconds=15):
    """Ask until n different workers answered: they start listening one by one (on a loaded
    machine seconds apart), and reuse_port spreads only over those already listening."""
    deadline = time.monotonic() + seconds
    pids = set()
    while len(pids) < n and time.monotonic() < deadline:
        pids.add(ask(port))
    return pids


def test_serve_spreads_restarts_and_stops(tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    script = tmp_path / "srv.py"
    script.write_text(SCRIPT)
    p = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().startswith("parent")
        pids = worker_pids(port)
        assert len(pids) == 2, "reuse_port should spread connections over both workers"
        victim = pids.pop()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        seen = set()
        while time.monotonic() < deadline:
            seen.add(ask(port))
            if seen - pids - {victim}:
                break
        assert seen - pids - {victim}, "the killed worker was not replaced"
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
        assert p.stdout.readline().strip() == "stopped"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def test_serve_rejects_bad_arguments():
    with pytest.raises(TypeError):
        bunsock.serve(workers=1)
    with pytest.raises(ValueError):
        bunsock.serve(workers=0, setup=lambda: None)


USR1_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import bunsock

    PORT = int(sys.argv[1])

    class WhoAmI:
        def data(self, sock, buf):
            sock.end(str(os.getpid()).encode())

    def setup():
        bunsock.listen(hostname="127.0.0.1", port=PORT, socket=WhoAmI(), reuse_port=True)
        # one write(2) per line: two workers' lines must not interleave in the shared pipe
        signal.signal(signal.SIGUSR1, lambda s, f: os.write(1, b"usr1 %d\\n" % os.getpid()))

    print("parent", os.getpid(), flush=True)
    bunsock.serve(workers=2, setup=setup, restart_delay=0.05)
    print("stopped", flush=True)
""")


def line_reader(f):
    """Lines of a pipe through a queue: get(timeout=) bounds every wait (never a hang)."""
    import queue
    import threading
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(line) for line in iter(f.readline, "")],
                     daemon=True).start()
    return q


def test_serve_forwards_sigusr1_to_every_worker(tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    script = tmp_path / "srv.py"
    script.write_text(USR1_SCRIPT)
    p = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE,
                         text=True)
    try:
        lines = line_reader(p.stdout)
        assert lines.get(timeout=10).startswith("parent")
        pids = worker_pids(port)
        assert len(pids) == 2
        p.send_signal(signal.SIGUSR1)
        got = [lines.get(timeout=10) for _ in range(2)]
        assert all(x.startswith("usr1 ") for x in got), got
        got = {int(x.split()[1]) for x in got}
        assert got == pids, "each worker hears the parent's SIGUSR1 once"
        assert p.poll() is None and worker_pids(port) == pids     # nobody died
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_serve_rejects_forwarding_its_own_stop_signals():
    with pytest.raises(ValueError):
        bunsock.serve(workers=1, setup=lambda: None, forward_signals=(signal.SIGTERM,))
