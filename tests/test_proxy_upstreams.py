"""Upstream selection as a user sees it through `python -m bunsock proxy`: smooth weighted round
robin, backups, active health checks (a killed upstream is out before a client reaches it; send
and expect against redis-server)."""
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import bunsock
from bunsock.proxy.upstreams import Pool, Upstream
from conftest import run
from proxy_support import procs, run_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def named_server(loop, name, port=0):
    class S:
        def open(self, sock):
            sock.write(name)

        def data(self, sock, buf):
            pass

    return bunsock.listen(hostname="127.0.0.1", port=port, socket=S(), loop=loop)


def ask(loop, port):
    """One connection through the proxy: the first bytes it gets ("" if closed without any)."""
    st = {"got": b""}

    class C:
        def data(self, sock, buf):
            st["got"] += buf

        def close(self, sock, err):
            st["closed"] = True

    c = bunsock.connect(hostname="127.0.0.1", port=port, socket=C(), loop=loop)
    run_until(loop, lambda: st["got"] or "closed" in st)
    c.close()
    return st["got"]


def test_smooth_weighted_round_robin_is_exact():
    a, b = Upstream("a", 1, weight=3), Upstream("b", 1, weight=1)
    pool = Pool([a, b])
    picks = [pool.pick(set(), 0).host for _ in range(8)]
    assert picks == ["a", "a", "b", "a"] * 2      # spread, not a a a b


def test_weights_3_to_1_over_40_connections_give_30_to_10(loop, procs):
    a, b = named_server(loop, b"A"), named_server(loop, b"B")
    pp = procs("--upstream", "127.0.0.1:%d,weight=3" % a.port, "--upstream",
               "127.0.0.1:%d" % b.port, "--access-log", "off")
    got = [ask(loop, pp.port) for _ in range(40)]
    assert (got.count(b"A"), got.count(b"B")) == (30, 10)
    a.stop(True)         # first: the upstreams end the relays, then the proxy drains at once
    b.stop(True)
    assert pp.stop()[0] == 0


def test_backup_takes_connections_only_while_every_primary_is_down(loop, procs):
    a, b = named_server(loop, b"A"), named_server(loop, b"B")
    k = named_server(loop, b"K")
    pp = procs("--upstream", "127.0.0.1:%d" % a.port, "--upstream", "127.0.0.1:%d" % b.port,
               "--upstream", "127.0.0.1:%d,backup" % k.port, "--access-log", "off")
    assert sorted(ask(loop, pp.port) for _ in range(6)) == [b"A"] * 3 + [b"B"] * 3
    port_a = a.port
    a.stop(True)             # one primary down (failed connects mark it): the other one serves
    assert [ask(loop, pp.port) for _ in range(4)] == [b"B"] * 4
    b.stop(True)             # both down: the backup serves
    assert [ask(loop, pp.port) for _ in range(3)] == [b"K"] * 3
    a = named_server(loop, b"A", port_a)
    # A is back: once its failure mark expires (2 s), it takes the connections again
    deadline = time.monotonic() + 10
    while ask(loop, pp.port) != b"A":
        assert time.monotonic() < deadline, "the recovered primary never came back"
    assert ask(loop, pp.port) == b"A"
    a.stop(True)
    k.stop(True)
    assert pp.stop()[0] == 0


def test_health_check_takes_a_killed_upstream_out_before_a_client_reaches_it(loop, procs):
    a, b = named_server(loop, b"A"), named_server(loop, b"B")
    k = named_server(loop, b"K")
    pp = procs("--check-interval", "0.2", "--upstream", "127.0.0.1:%d" % a.port,
               "--upstream", "127.0.0.1:%d" % b.port, "--upstream",
               "127.0.0.1:%d,backup" % k.port)
    assert sorted(ask(loop, pp.port) for _ in range(4)) == [b"A", b"A", b"B", b"B"]
    port_a = a.port
    a.stop(True)
    st = {}

    def watch():       # the proxy's log, read while this loop keeps serving the checks
        m = pp.wait_line(r"upstream 127\.0\.0\.1:%d is DOWN \(health check: (.*)\)" % port_a)
        st["why"] = m.group(1)

    import threading
    t = threading.Thread(target=watch)
    t.start()
    run_until(loop, lambda: not t.is_alive())
    assert "why" in st
    assert [ask(loop, pp.port) for _ in range(4)] == [b"B"] * 4
    b.stop(True)
    t = threading.Thread(target=lambda: pp.wait_line(r"upstream 127\.0\.0\.1:%d is DOWN" % b.port))
    t.start()
    run_until(loop, lambda: not t.is_alive())
    assert [ask(loop, pp.port) for _ in range(2)] == [b"K"] * 2      # every primary is down
    a = named_server(loop, b"A", port_a)
    t = threading.Thread(target=lambda: pp.wait_line(r"upstream 127\.0\.0\.1:%d is UP" % port_a))
    t.start()
    run_until(loop, lambda: not t.is_alive())
    assert [ask(loop, pp.port) for _ in range(2)] == [b"A"] * 2
    pp.p.send_signal(signal.SIGUSR1)
    m = pp.wait_line(r"connect_errors=(\d+)")
    assert m.group(1) == "0", "a client was sent to a killed upstream"
    a.stop(True)
    k.stop(True)
    assert pp.stop()[0] == 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_check_send_and_expect_against_redis(loop, procs):
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        good = procs("--check-interval", "0.1", "--check-send", "PING\\r\\n",
                     "--check-expect", "+PONG", "--upstream", "127.0.0.1:%d" % port)
        bad = procs("--check-interval", "0.1", "--check-send", "PING\\r\\n",
                    "--check-expect", "+NOPE", "--upstream", "127.0.0.1:%d" % port)
        m = bad.wait_line(r"is DOWN \(health check: (.*)\)")
        assert "unexpected reply" in m.group(1) and "+PONG" in m.group(1)
        time.sleep(0.5)          # five checks of `good`
        c = socket.create_connection(("127.0.0.1", good.port), timeout=5)
        c.sendall(b"PING\r\n")
        assert c.recv(100) == b"+PONG\r\n"
        c.close()
        rc, rest = good.stop()
        assert rc == 0 and "DOWN" not in rest and "DOWN" not in "".join(good.lines)
        bad.stop()
    finally:
        redis.terminate()
        redis.wait()
    run(loop, 1)
