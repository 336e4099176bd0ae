"""fork(): a child gets fresh default loops, an inherited Loop refuses all use (its epoll instance
is shared with the parent), the parent's loop is untouched by anything the child does, and
serve() workers can share listeners the parent created."""
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import bunsock
from conftest import run, run_until

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")]


def in_child(fn, timeout=20.0):
    """Fork; the child runs fn() and sends back ("ok", result) or ("err", type name, message),
    then leaves with os._exit. Returns what it sent; fails if it crashed or hung."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                msg = ("ok", fn())
            except BaseException as e:     # noqa: B902 - reported to the parent
                msg = ("err", type(e).__name__, str(e))
            os.write(w, pickle.dumps(msg))
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            raise AssertionError("the child hung")
        time.sleep(0.01)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, \
        "the child died: status %#x" % status
    return pickle.loads(data)


def echo_roundtrip(loop, payload=b"ping"):
    """listen + connect + one echo on `loop`; returns what the client got back."""
    got = bytearray()

    class Srv:
        def data(self, sock, buf):
            sock.write(buf)

    class Cli:
        def open(self, sock):
            sock.write(payload)

        def data(self, sock, buf):
            got.extend(buf)
            if len(got) >= len(payload):
                sock.close()

        def close(self, sock, err):
            lst.stop(True)

    lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=lst.port, socket=Cli(), loop=loop)
    run(loop)
    return bytes(got)


def test_child_gets_a_fresh_default_loop():
    parent_loop = bunsock.get_loop()

    def child():
        mine = bunsock.get_loop()
        assert mine is not parent_loop
        assert bunsock.get_loop() is mine
        return echo_roundtrip(mine, b"child")

    assert in_child(child) == ("ok", b"child")
    assert bunsock.get_loop() is parent_loop
    assert echo_roundtrip(parent_loop, b"parent") == b"parent"


def test_inherited_loop_refuses_use_in_child_and_parent_is_untouched(loop, no_leaks):
    accepted = []

    class Srv:
        def open(self, sock):
            accepted.append(sock)

        def data(self, sock, buf):
            sock.write(buf)

    lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), loop=loop)
    c = socket.create_connection(("127.0.0.1", lst.port))
    while not accepted:
        loop.run_once(1)
    s = accepted[0]
    ticks = []
    timer = loop.call_every(0.01, ticks.append, 1)
    for obj in (lst, s, timer):
        obj.unref()       # so that run() returns when the checks below are done
    h = {"data": lambda s, b: None}

    def child():
        calls = {
            "run": loop.run,
            "run_once": lambda: loop.run_once(0),
            "call_soon": lambda: loop.call_soon(print),
            "call_later": lambda: loop.call_later(1, print),
            "call_soon_threadsafe": lambda: loop.call_soon_threadsafe(print),
            "listen": lambda: bunsock.listen(hostname="127.0.0.1", port=0, socket=h, loop=loop),
            "connect": lambda: bunsock.connect(hostname="127.0.0.1", port=lst.port, socket=h,
                                               loop=loop),
            "write": lambda: s.write(b"from the child"),
            "pause": s.pause,
            "close": s.close,
            "terminate": s.terminate,
            "stop": lambda: lst.stop(True),
            "cancel": timer.cancel,
        }
        out = {}
        for name, fn in calls.items():
            try:
                fn()
                out[name] = "no error"
            except RuntimeError as e:
                out[name] = "fork" in str(e) and "get_loop" in str(e)
        loop.close()          # allowed: lets go of this process's copies only
        out["closed"] = True
        return out

    status, out = in_child(child)
    assert status == "ok"
    assert out == {name: True for name in out if name != "closed"} | {"closed": True}
    # Nothing the child tried reached the parent's epoll registrations or its peers.
    c.sendall(b"still here")
    c.setblocking(False)
    echoed = b""
    deadline = time.monotonic() + 5
    while echoed != b"still here" and time.monotonic() < deadline:
        loop.run_once(0.05)
        try:
            echoed += c.recv(100)
        except BlockingIOError:
            pass
    assert echoed == b"still here"
    assert echo_roundtrip(loop) == b"ping"        # the listener still accepts
    ticks.clear()
    run_until(loop, lambda: len(ticks) >= 3, what="the parent's timer still fires")
    timer.cancel()
    c.close()
    lst.stop(True)


def test_fork_inside_a_handler_leaves_the_parents_loop_alone(loop, no_leaks):
    parent = os.getpid()
    r, w = os.pipe()
    kids = []
    got = bytearray()

    class Srv:
        def data(self, sock, buf):
            sock.write(b"<" + bytes(buf) + b">")
            if bytes(buf) == b"fork":
                pid = os.fork()
                if pid:
                    kids.append(pid)
                # The child returns into the parent's loop from here.

    class Cli:
        def open(self, sock):
            sock.write(b"fork")

        def data(self, sock, buf):
            got.extend(buf)
            if bytes(got) == b"<fork>":
                sock.write(b"again")
            elif len(got) >= len(b"<fork><again>"):
                sock.close()

        def close(self, sock, err):
            lst.stop(True)

    lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=lst.port, socket=Cli(), loop=loop)
    try:
        run(loop)
    except BaseException as e:     # noqa: B902
        if os.getpid() != parent:
            os.write(w, pickle.dumps((type(e).__name__, str(e))))
            os._exit(0)
        raise
    finally:
        if os.getpid() != parent:
            os._exit(3)           # run() returned normally in the child: it kept dispatching
    os.close(w)
    assert len(kids) == 1
    _, status = os.waitpid(kids[0], 0)
    report = os.read(r, 65536)
    os.close(r)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "child status %#x" % status
    name, msg = pickle.loads(report)
    assert name == "RuntimeError" and "fork" in msg
    # The reply corked before the fork went out once, from the parent only.
    assert bytes(got) == b"<fork><again>"


SERVE = textwrap.dedent("""
    import os, sys
    import bunsock

    PORT = int(sys.argv[1])
    MODE = sys.argv[2]

    class WhoAmI:
        def data(self, sock, buf):
            sock.end(str(os.getpid()).encode())

    def setup():
        # Workers differ in what they allocate, as real ones do (so their objects do not sit at
        # the same addresses by chance).
        global junk
        junk = [b"x" * (i % 300) for i in range(os.getpid() % 997 * 3)]
        bunsock.listen(hostname="127.0.0.1", port=PORT, socket=WhoAmI(), reuse_port=True)
        # One write(2) per line: both workers share the pipe, and print() makes one write per
        # piece when stdout is unbuffered (PYTHONUNBUFFERED), so their lines could interleave.
        os.write(1, b"worker %d\\n" % os.getpid())

    if MODE == "touched":
        # The parent uses its default loop before forking (a timer here).
        bunsock.call_later(3600, print).unref()
        bunsock.get_loop().run_once(0)
        print("parent", os.getpid(), flush=True)
        bunsock.serve(workers=2, setup=setup, restart_delay=0.05)
    else:
        # One listening socket, created by the parent and shared by every worker.
        lst = bunsock.listen(hostname="127.0.0.1", port=PORT, socket=WhoAmI())
        print("parent", os.getpid(), flush=True)
        bunsock.serve(workers=2, restart_delay=0.05)
        lst.stop()
    print("stopped", flush=True)
""")


def _ask(port):
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
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("no worker answered on port %d" % port)
        time.sleep(0.05)


@pytest.mark.parametrize("mode", ["touched", "shared"])
def test_serve_workers_after_the_parent_used_its_loop(tmp_path, mode):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    script = tmp_path / "srv.py"
    script.write_text(SERVE)
    p = subprocess.Popen([sys.executable, str(script), str(port), mode], stdout=subprocess.PIPE,
                         text=True)
    try:
        parent = int(p.stdout.readline().split()[1])
        pids = set()
        deadline = time.monotonic() + 15
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(_ask(port))      # the second worker may take a moment to start
        assert len(pids) == 2 and parent not in pids, pids
        assert {_ask(port) for _ in range(20)} <= pids
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
        rest = p.stdout.read().split("\n")
        assert rest[-2:] == ["stopped", ""]
        if mode == "touched":
            # Each worker ran setup() once: none crashed and was replaced.
            assert sorted(rest[:-2]) == sorted("worker %d" % pid for pid in pids)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def test_serve_without_setup_needs_listeners():
    code = "import bunsock\nbunsock.get_loop()\nbunsock.serve(workers=1)\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "TypeError" in p.stderr and "setup=" in p.stderr
