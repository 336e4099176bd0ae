"""The proxy's bugs from issue 20, each a test that failed before its fix: idle relays cut at the
connect timeout (bug 1), blocking one-shot name resolution (bug 2), TLS with --relay splice
stranding clients (bug 3), --workers untested and SIGUSR1 not reaching workers (bug 4)."""
import io
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import pytest

import bunsock
from bunsock.proxy import Proxy
from conftest import run
from proxy_support import Echo, ENV, procs, run_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class Client:
    """Collects what arrives; records close."""

    def __init__(self, st):
        self.st = st
        st.setdefault("got", b"")

    def data(self, sock, buf):
        self.st["got"] += buf

    def close(self, sock, err):
        self.st["closed"] = err or "eof"

    def connect_error(self, sock, exc):
        self.st["closed"] = exc


def test_idle_relay_outlives_the_connect_timeout(loop, procs):
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    pp = procs("--connect-timeout", "0.5", "--upstream", "127.0.0.1:%d" % srv.port,
               "--access-log", "off")
    st = {}
    c = bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=Client(st), loop=loop)
    c.write(b"first")
    run_until(loop, lambda: st["got"] == b"first")
    idle = {}
    loop.call_later(1.5, lambda: idle.setdefault("over", True))
    run_until(loop, lambda: "over" in idle or "closed" in st)
    assert "closed" not in st, "the relay was cut after %s idle" % "0.5 s"
    c.write(b"second")
    run_until(loop, lambda: st["got"] == b"firstsecond" or "closed" in st)
    assert st["got"] == b"firstsecond"
    c.close()
    srv.stop(True)
    pp.stop()


def test_idle_timeout_only_when_asked_and_logged(loop, procs):
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    pp = procs("--idle-timeout", "0.3", "--upstream", "127.0.0.1:%d" % srv.port)
    st = {}
    c = bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=Client(st), loop=loop)
    c.write(b"x")
    run_until(loop, lambda: "closed" in st)
    assert st["got"] == b"x" and st["closed"] == "eof"
    m = pp.wait_line(r"client=127\.0\.0\.1:\d+ upstream=\S+ in=1 out=1 duration=(\S+) end=(\w+)")
    assert m.group(2) == "timeout" and float(m.group(1)) >= 0.3
    srv.stop(True)
    pp.stop()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, seconds=10):
    """Wait for a listener on 127.0.0.1:port without connecting to it (iperf3 -s serves one
    client at a time: a probe connection would make it turn the real client away)."""
    import time
    want = ":%04X" % port
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if local.endswith(want) and state == "0A":       # TCP_LISTEN
                    return
        time.sleep(0.05)
    raise AssertionError("nothing listens on port %d" % port)


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
def test_iperf3_through_the_proxy(procs):
    """iperf3's control connection is idle while the test runs: with the connect timeout as an
    idle timeout it was cut ("control socket has closed unexpectedly")."""
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-p", str(port), "-B", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pp = procs("--connect-timeout", "0.5", "--upstream", "127.0.0.1:%d" % port,
                   "--access-log", "off")
        wait_listening(port)
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(pp.port), "-t", "2",
                              "-J"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout[-500:] + out.stderr
        assert '"bits_per_second"' in out.stdout
        pp.stop()
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


# -- bug 2: resolution off the loop, and again ------------------------------------------------

@pytest.fixture
def fake_dns(monkeypatch):
    """Names under .test resolve through this table (after `delay` seconds, in the caller's
    thread); everything else through the real resolver."""
    real = socket.getaddrinfo
    table = {"delay": 0.0, "calls": 0}

    def getaddrinfo(host, port, *a, **kw):
        if isinstance(host, str) and host.endswith(".test"):
            table["calls"] += 1
            if table["delay"]:
                threading.Event().wait(table["delay"])
            ip = table.get(host)
            if ip is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real(ip, port, *a, **kw)
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def test_a_slow_resolver_does_not_stall_the_loop(loop, fake_dns):
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(b"A"), loop=loop)
    fake_dns["slow.test"] = "127.0.0.1"
    fake_dns["delay"] = 1.0
    proxy = Proxy([("slow.test", srv.port)], loop=loop, log=io.StringIO())
    lst = proxy.listen("127.0.0.1", 0)
    ticks = []
    t = loop.call_every(0.02, lambda: ticks.append(loop.time()))
    st = {}
    c = bunsock.connect(hostname="127.0.0.1", port=lst.port, socket=Client(st), loop=loop)
    run_until(loop, lambda: st["got"] == b"A")
    t.cancel()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) > 10 and max(gaps) < 0.5, "the loop stalled %.2f s" % max(gaps)
    c.close()
    lst.stop(True)
    srv.stop(True)
    proxy.close()
    run(loop, 5)


def _ask(loop, port):
    st = {}
    c = bunsock.connect(hostname="127.0.0.1", port=port, socket=Client(st), loop=loop)
    run_until(loop, lambda: st["got"] or "closed" in st)
    c.close()
    return st["got"]


def test_names_are_looked_up_again_at_the_interval_and_after_failures(loop, fake_dns):
    a = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(b"A"), loop=loop)
    b = bunsock.listen(hostname="127.0.0.2", port=a.port, socket=Echo(b"B"), loop=loop)
    fake_dns["moving.test"] = "127.0.0.1"
    log = io.StringIO()
    proxy = Proxy([("moving.test", a.port)], loop=loop, log=log, resolve_interval=0.3)
    lst = proxy.listen("127.0.0.1", 0)
    assert _ask(loop, lst.port) == b"A"
    fake_dns["moving.test"] = "127.0.0.2"
    done = {}
    loop.call_later(0.4, lambda: done.setdefault("t", 1))
    run_until(loop, lambda: "t" in done)
    assert _ask(loop, lst.port) == b"A"     # the stale answer serves while a lookup runs...
    run_until(loop, lambda: "now resolves to 127.0.0.2" in log.getvalue())
    assert _ask(loop, lst.port) == b"B"     # ...and the new one serves once it is in
    # After a failure: the name moves back, B goes away: the next connection to fail makes the
    # one after it look the name up again, even with a long interval.
    proxy.resolve_interval = 3600
    fake_dns["moving.test"] = "127.0.0.1"
    b.stop(True)
    assert _ask(loop, lst.port) == b""      # 127.0.0.2 refused: that marks the name stale
    assert _ask(loop, lst.port) == b"A"     # so this connection waited for a fresh lookup
    lst.stop(True)
    a.stop(True)
    proxy.close()
    run(loop, 5)


# -- bug 3: TLS and splice ----------------------------------------------------------------------

def _cert(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return ca, str(tmp_path / "c.pem"), str(tmp_path / "k.pem")


def test_tls_with_relay_splice_is_refused_at_start(tmp_path):
    _ca, cert, key = _cert(tmp_path)
    for extra in (["--tls-cert", cert, "--tls-key", key], ["--upstream-tls"]):
        r = subprocess.run([sys.executable, "-m", "bunsock", "proxy", "--listen", "127.0.0.1:0",
                            "--upstream", "127.0.0.1:9", "--relay", "splice", *extra],
                           env=ENV, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "splice" in r.stderr, r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="splice(2) is Linux only")
def test_a_relay_that_cannot_be_set_up_closes_both_sides_and_is_logged(loop, tmp_path):
    import ssl
    ca, cert, key = _cert(tmp_path)
    st = {"up_closed": 0}

    class Up:
        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            st["up_closed"] += 1

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Up(), loop=loop)
    log = io.StringIO()
    proxy = Proxy([("127.0.0.1", srv.port)], splice=True, loop=loop, log=log)
    lst = proxy.listen("127.0.0.1", 0, tls={"cert": cert, "key": key})
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    c = bunsock.connect(hostname="127.0.0.1", port=lst.port, socket=Client(st), tls=cctx,
                        loop=loop)
    run_until(loop, lambda: "closed" in st and st["up_closed"] == 1)
    assert "relay setup failed" in log.getvalue() and "splice" in log.getvalue()
    assert proxy.stats["errors"] == 1 and proxy.stats["active"] == 0
    del c
    lst.stop(True)
    srv.stop(True)
    proxy.close()
    run(loop, 5)


# -- bug 4: --workers ---------------------------------------------------------------------------

def test_workers_share_the_port_and_each_reports_on_sigusr1(loop, procs):
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(b"A"), loop=loop)
    pp = procs("--workers", "2", "--upstream", "127.0.0.1:%d" % srv.port, "--access-log", "off")
    pp.readline()           # the second worker's startup line
    assert all(re.search(r"listening on 127\.0\.0\.1:%d " % pp.port, x) for x in pp.lines)
    n = 30
    for _ in range(n):
        assert _ask(loop, pp.port) == b"A"
    srv.stop(True)          # the upstream ends its side of every relay
    run(loop, 5)
    pp.p.send_signal(signal.SIGUSR1)
    lines = [pp.wait_line(r"pid=(\d+) active=\d+ accepted=(\d+)") for _ in range(2)]
    pids = {m.group(1) for m in lines}
    assert len(pids) == 2, "one stats line per worker"
    assert sum(int(m.group(2)) for m in lines) == n
    rc, rest = pp.stop()
    assert rc == 0 and rest.count("active=0") == 2, rest


def test_a_metrics_port_in_use_is_one_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        for workers in ("1", "2"):
            r = subprocess.run([sys.executable, "-m", "bunsock", "proxy", "--listen",
                                "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--metrics",
                                "127.0.0.1:%d" % port, "--workers", workers], env=ENV,
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 1 and r.stderr == (
                "error: --metrics 127.0.0.1:%d: address already in use\n" % port), r.stderr


def test_workers_exit_when_their_parent_is_killed(procs):
    pp = procs("--workers", "2", "--upstream", "127.0.0.1:9", "--access-log", "off")
    pp.readline()
    pids = [int(re.search(r"pid=(\d+)", x).group(1)) for x in pp.lines]
    pp.p.kill()
    pp.p.wait()
    import os
    import time
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
    for pid in alive:            # by PID: only the workers this test started
        os.kill(pid, signal.SIGKILL)
    assert not alive, "orphaned workers kept running"
