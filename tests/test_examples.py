"""The examples run as written: started as programs, talked to over loopback, then stopped."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/ not beside tests/ (copy it "
                                                              "next to tests/ to run these)")


def start(script, *args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, str(EXAMPLES / script), *map(str, args)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = p.stdout.readline()
    try:
        port = int(line.split()[-1] if "->" not in line else line.split()[1].lstrip(":"))
    except (ValueError, IndexError):
        p.kill()
        pytest.fail("%s did not start: %r %s" % (script, line, p.stdout.read()))
    return p, port


def stop(p):
    p.kill()
    p.wait(10)
    p.stdout.close()


def echo_once(port, payload):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = c.recv(1 << 16)
            if not chunk:
                break
            got += chunk
    return got


def test_echo_server_example():
    p, port = start("echo_server.py", 0)
    try:
        assert echo_once(port, b"hello example") == b"hello example"
    finally:
        stop(p)


def test_proxy_example_forwards_both_ways():
    echo, eport = start("echo_server.py", 0)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    pport = probe.getsockname()[1]
    probe.close()
    proxy, _ = start("proxy.py", pport, "127.0.0.1", eport)
    try:
        payload = bytes(range(256)) * 4096          # 1 MiB through the proxy and back
        assert echo_once(pport, payload) == payload
    finally:
        stop(proxy)
        stop(echo)


def test_proxy_example_delivers_the_reply_after_a_client_half_close():
    """The client sends its request then FIN; the upstream replies only after reading that FIN:
    the reply must still come back through the proxy."""
    import threading
    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen(1)
    uport = up.getsockname()[1]

    def upstream():
        conn, _ = up.accept()
        with conn:
            req = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                req += chunk
            conn.sendall(b"reply to %d bytes" % len(req))

    t = threading.Thread(target=upstream, daemon=True)
    t.start()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    pport = probe.getsockname()[1]
    probe.close()
    proxy, _ = start("proxy.py", pport, "127.0.0.1", uport)
    try:
        with socket.create_connection(("127.0.0.1", pport), timeout=10) as c:
            c.sendall(b"x" * 300000)
            c.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
        assert got == b"reply to 300000 bytes"
    finally:
        stop(proxy)
        up.close()
        t.join(10)


def test_game_tick_example_broadcasts():
    p, port = start("game_tick.py", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            got = b""
            while got.count(b"\n") < 3:
                got += c.recv(100)
        ticks = [int(line.split()[1]) for line in got.decode().splitlines()[:3]]
        assert ticks == sorted(ticks) and len(set(ticks)) == 3
    finally:
        stop(p)
