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


def test_game_server_example_with_bots():
    """Three bots join one room over TCP, stream positions over UDP, chat reliably; each sees
    the others' positions in the UDP state and the chat/leave events over TCP."""
    p, port = start("game_server.py", 0)
    bots = []
    try:
        for name in ("ann", "bob", "cy"):
            t = socket.create_connection(("127.0.0.1", port), timeout=10)
            t.sendall(b"JOIN arena %s\n" % name.encode())
            f = t.makefile("rb")
            line = f.readline().split()
            assert line[0] == b"WELCOME", line
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", 0))
            u.settimeout(10)
            bots.append({"name": name, "id": int(line[1]), "tcp": t, "file": f, "udp": u})
        for i, b in enumerate(bots):
            b["udp"].sendto(b"%d %d %d" % (b["id"], 10 * (i + 1), 5), ("127.0.0.1", port))
        want = {"%d:%.1f,5.0" % (b["id"], 10.0 * (i + 1)) for i, b in enumerate(bots)}
        for b in bots:
            for _ in range(100):                   # ticks at 20 Hz: a few are enough
                parts = b["udp"].recv(2048).decode().split()
                assert parts[0] == "STATE"
                if want <= set(parts[2:]):
                    break
            else:
                pytest.fail("%s never saw every position: %r" % (b["name"], parts))
        bots[0]["tcp"].sendall(b"SAY hello room\n")
        for b in bots[1:]:
            for _ in range(10):
                line = b["file"].readline()
                if line.startswith(b"CHAT"):
                    assert line == b"CHAT ann hello room\n"
                    break
            else:
                pytest.fail("no chat for %s" % b["name"])
        bots[2]["file"].close()                    # (the file holds the socket open too)
        bots[2]["tcp"].close()
        for _ in range(10):
            line = bots[1]["file"].readline()
            if line.startswith(b"LEFT"):
                assert line == b"LEFT %d cy\n" % bots[2]["id"]
                break
        else:
            pytest.fail("no LEFT event")
    finally:
        for b in bots:
            b["file"].close()
            b["tcp"].close()
            b["udp"].close()
        stop(p)


def test_chat_server_example():
    """Lines from one client reach the others, whole, however the bytes are cut; a line over
    the limit closes only its sender."""
    p, port = start("chat_server.py", 0)
    clients = []
    try:
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            f = c.makefile("rb")
            assert f.readline().startswith(b"* welcome, you are guest")
            clients.append((c, f))
        a, fa = clients[0]
        a.sendall(b"/nick ann\nhel")
        a.sendall(b"lo all\n")
        for c, f in clients[1:]:
            lines = []
            while not lines or not lines[-1].startswith(b"<"):
                lines.append(f.readline())
            assert lines[-1] == b"<ann> hello all\n"
            assert b"* guest1 is now ann\n" in lines
        a.sendall(b"x" * 2000 + b"\n")          # over max_size: ann is closed
        try:
            rest = fa.read()                    # EOF ...
        except ConnectionResetError:
            rest = b""                          # ... or a reset (unread bytes at the close)
        assert b"<" not in rest
        for c, f in clients[1:]:
            assert f.readline() == b"* ann left\n"
    finally:
        for c, f in clients:
            f.close()
            c.close()
        stop(p)
