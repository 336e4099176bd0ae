"""`python -m bunsock proxy` as a user runs it: a subprocess in front of bunsock servers in this
process, on loopback. Balancing, failover, PROXY protocol, TLS termination, limits, SIGTERM
drain, SIGUSR1 stats, and bounded memory per connection towards a stalled upstream."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bunsock
from bunsock.proxy import parse_hostport, proxy_header_v1, proxy_header_v2
from conftest import run
from proxy_support import SRC, ProxyProc, procs, run_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def listening(port):
    """Whether something listens on 127.0.0.1:`port` (read from /proc/net/tcp, so asking does
    not open a connection); None where the platform cannot tell."""
    try:
        with open("/proc/net/tcp") as f:
            rows = f.read().split("\n")[1:]
    except OSError:
        return None
    want = "0100007F:%04X" % port
    return any(r.split()[1:2] == [want] and r.split()[3] == "0A" for r in rows if r.strip())


def named_server(loop, name, **kw):
    """Answers each connection with its name, then echoes."""
    class S:
        def open(self, sock):
            sock.write(name)

        def data(self, sock, buf):
            sock.write(buf)

    return bunsock.listen(hostname="127.0.0.1", port=0, socket=S(), loop=loop, **kw)


def fetch(loop, port, n=1, payload=b"", tls=None, seconds=10):
    """n connections: each sends payload then FIN, collects everything until close."""
    out = [b""] * n
    errs, finished = [], set()

    class C:
        def open(self, sock):
            if payload:
                sock.write(payload)
            sock.end()

        def data(self, sock, buf):
            out[sock.data] += buf

        def close(self, sock, err):
            finished.add(sock.data)
            if err is not None:
                errs.append(err)

        def connect_error(self, sock, exc):
            finished.add(sock.data)
            errs.append(exc)

    for i in range(n):
        bunsock.connect(hostname="127.0.0.1", port=port, socket=C(), data=i, tls=tls,
                        loop=loop, allow_half_open=True)
    run_until(loop, lambda: len(finished) == n, timeout=seconds, what="every fetch closed")
    return out, errs


def test_parse_hostport_and_headers():
    assert parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_hostport("[::1]:443") == ("::1", 443)
    assert parse_hostport("example.com:0") == ("example.com", 0)
    for bad in ("nohost", ":80", "h:x", "[::1]80", "h:70000"):
        with pytest.raises(ValueError):
            parse_hostport(bad)
    assert proxy_header_v1(("10.0.0.1", 1234), ("10.0.0.2", 80)) == \
        b"PROXY TCP4 10.0.0.1 10.0.0.2 1234 80\r\n"
    v2 = proxy_header_v2(("10.0.0.1", 1234), ("10.0.0.2", 80))
    assert v2 == (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([10, 0, 0, 1, 10, 0, 0, 2])
                  + (1234).to_bytes(2, "big") + (80).to_bytes(2, "big"))
    assert proxy_header_v2(("::1", 5), ("::1", 6))[13] == 0x21


def test_help_lists_every_option():
    env = dict(os.environ, PYTHONPATH=SRC)
    out = subprocess.run([sys.executable, "-m", "bunsock", "proxy", "--help"], env=env,
                         capture_output=True, text=True, timeout=30).stdout
    for opt in ("--listen", "--upstream", "--balance", "--workers", "--proxy-protocol",
                "--tls-cert", "--tls-key", "--idle-timeout", "--max-connections",
                "--shutdown-timeout", "--stats-interval", "--relay", "SIGUSR1", "SIGTERM",
                "--check-interval", "--check-send", "--check-expect", "--accept-proxy",
                "--route", "--upstream-tls", "--upstream-ca", "--upstream-sni", "--metrics",
                "--access-log", "--config", "SIGHUP", "weight=N", "backup"):
        assert opt in out, opt


def test_round_robin_with_failover_and_stats(loop, procs):
    a = named_server(loop, b"A")
    b = named_server(loop, b"B")
    dead = bunsock.listen(hostname="127.0.0.1", port=0, socket={"data": None, "drain": print},
                          loop=loop)
    dead_port = dead.port
    dead.stop()
    pp = procs("--upstream", "127.0.0.1:%d" % dead_port, "--upstream", "127.0.0.1:%d" % a.port,
               "--upstream", "127.0.0.1:%d" % b.port)
    out, errs = fetch(loop, pp.port, n=8, payload=b"+ping")
    a.stop(True)
    b.stop(True)
    assert not errs
    assert sorted(out) == [b"A+ping"] * 4 + [b"B+ping"] * 4     # the dead one is skipped
    pp.p.send_signal(signal.SIGUSR1)
    # The dead upstream's failure is logged once (one line), before the stats line.
    failed = pp.wait_line(r"^bunsock proxy: upstream 127\.0\.0\.1:(\d+) failed \(")
    assert int(failed.group(1)) == dead_port
    line = pp.wait_line(r"accepted=").string
    assert not [x for x in pp.lines if " failed (" in x and x is not failed.string]
    assert "accepted=8" in line and "active=0" in line, line
    # the clients arrive together: a few try the dead upstream before its first failure marks
    # it down; each failed over
    assert 1 <= int(re.search(r"connect_errors=(\d+)", line).group(1)) <= 3, line
    assert "bytes_in=%d" % (8 * 5) in line and "bytes_out=%d" % (8 * 6) in line, line
    rc, _ = pp.stop()
    assert rc == 0


def test_least_connections(loop, procs):
    a = named_server(loop, b"A")
    b = named_server(loop, b"B")
    pp = procs("--balance", "leastconn", "--upstream", "127.0.0.1:%d" % a.port,
               "--upstream", "127.0.0.1:%d" % b.port)
    got = []

    class Hold:           # the first connection stays open: the next ones go to the other
        def data(self, sock, buf):
            got.append(buf)

    held = bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=Hold(), loop=loop)
    run_until(loop, lambda: got, what="the held connection's greeting")
    first = got[0]
    other = b"B" if first == b"A" else b"A"
    res, done = [], []

    class One:
        def data(self, sock, buf):
            res.append(buf)
            sock.end()

        def close(self, sock, err):
            done.append(err)      # the proxy closed both its ends before this one's

    for k in range(3):
        bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=One(), loop=loop)
        run_until(loop, lambda: len(done) == k + 1, what="connection %d closed" % (k + 1))
    assert res == [other] * 3
    held.close()
    a.stop(True)
    b.stop(True)
    pp.stop()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_header(loop, procs, version):
    seen = []

    class Rec:
        def data(self, sock, buf):
            seen.append(buf)

        def end(self, sock):
            srv.stop(True)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Rec(), loop=loop)
    pp = procs("--proxy-protocol", version, "--upstream", "127.0.0.1:%d" % srv.port)
    out, errs = fetch(loop, pp.port, payload=b"hello")
    data = b"".join(seen)
    if version == "v1":
        m = re.match(rb"PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 (\d+) (\d+)\r\nhello$", data)
        assert m and int(m.group(2)) == pp.port, data
    else:
        assert data.startswith(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c") and data.endswith(b"hello")
        assert int.from_bytes(data[26:28], "big") == pp.port
    pp.stop()


def test_tls_termination(loop, procs, tmp_path):
    trustme = pytest.importorskip("trustme")
    import ssl
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    a = named_server(loop, b"A")
    pp = procs("--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem"),
               "--upstream", "127.0.0.1:%d" % a.port)
    payload = os.urandom(1 << 20)
    out, errs = fetch(loop, pp.port, payload=payload, tls=cctx)
    a.stop(True)
    assert not errs
    assert out[0] == b"A" + payload
    pp.stop()


def test_max_connections(loop, procs):
    a = named_server(loop, b"A")
    pp = procs("--max-connections", "1", "--upstream", "127.0.0.1:%d" % a.port)
    got = {0: b"", 1: b""}
    closed = {}

    class C:
        def data(self, sock, buf):
            got[sock.data] += buf

        def close(self, sock, err):
            closed[sock.data] = loop.time()

    first = bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=C(), data=0, loop=loop)
    run_until(loop, lambda: got[0] == b"A", what="the first connection's greeting")
    bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=C(), data=1, loop=loop)
    run_until(loop, lambda: 1 in closed, what="the second connection was refused")
    assert got == {0: b"A", 1: b""} and 1 in closed and 0 not in closed
    first.close()
    a.stop(True)
    pp.stop()


def test_sigterm_lets_relays_finish_then_resets_at_the_deadline(loop, procs):
    a = named_server(loop, b"A")
    pp = procs("--shutdown-timeout", "1.0", "--upstream", "127.0.0.1:%d" % a.port)
    st = {"got": b"", "late": None}

    class C:
        def data(self, sock, buf):
            st["got"] += buf

        def close(self, sock, err):
            st["closed"] = (time.monotonic() - st["t0"], err)

    c = bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=C(), loop=loop)
    run_until(loop, lambda: st["got"] == b"A", what="the relay is open end to end")
    st["t0"] = time.monotonic()
    pp.p.send_signal(signal.SIGTERM)
    if listening(pp.port) is None:
        time.sleep(0.5)                  # cannot watch the listener here
    deadline = time.monotonic() + 10
    while listening(pp.port):
        assert time.monotonic() < deadline, "the proxy still listens 10 s after SIGTERM"
        time.sleep(0.01)

    class Late:
        def data(self, sock, buf):
            pass

        def connect_error(self, sock, exc):
            st["late"] = exc

    bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=Late(), loop=loop)
    c.write(b"still relayed")          # the open relay keeps working while draining
    run_until(loop, lambda: "closed" in st and st["late"] is not None,
              what="the late connect was refused and the deadline reset the relay")
    a.stop(True)
    run(loop, 10)
    assert isinstance(st["late"], ConnectionRefusedError)     # no longer accepting
    assert st["got"] == b"A" + b"still relayed"
    elapsed, err = st["closed"]
    # --shutdown-timeout 1.0 counts from the signal, sent after t0; generous slack above for a
    # loaded machine or an ASan build.
    assert 0.9 < elapsed < 8 and isinstance(err, ConnectionResetError)
    pp.p.wait(10)                      # it exits by itself once the last relay is gone
    rc, rest = pp.stop()
    assert rc == 0 and "active=0" in rest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_memory_per_connection_to_a_stalled_upstream_is_bounded(loop, procs):
    """40 clients push as fast as they can into a proxy whose upstream never reads: the proxy's
    RSS grows by at most 256 KiB per connection (its relay holds 128 KiB per direction)."""
    conns = 40

    class Stalled:
        def open(self, sock):
            sock.pause()

        def data(self, sock, buf):
            pass

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Stalled(), loop=loop)
    pp = procs("--upstream", "127.0.0.1:%d" % srv.port)
    chunk = os.urandom(256 << 10)
    socks = []

    class Pusher:
        def open(self, sock):
            self.drain(sock)

        def data(self, sock, buf):
            pass

        def drain(self, sock):
            if sock.data:
                while sock.buffered_amount < 512 << 10:
                    sock.write(chunk)

    for _ in range(conns):
        socks.append(bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=Pusher(),
                                     data=False, loop=loop))
    run_until(loop, lambda: srv.connections == conns, what="every relay reached the upstream")
    base = pp.rss_kib()
    for s in socks:
        s.data = True
        Pusher().drain(s)
    # Push until nothing moves any more: the kernel buffers and the relays are full.
    flow = {"pushed": -1, "since": time.monotonic()}

    def settled():
        pushed = sum(s.bytes_written for s in socks)
        now = time.monotonic()
        if pushed != flow["pushed"]:
            flow["pushed"], flow["since"] = pushed, now
            return False
        return pushed > conns * (256 << 10) and now - flow["since"] >= 0.5

    run_until(loop, settled, timeout=30, what="the pushers stalled")
    peak = pp.rss_kib()
    pushed = sum(s.bytes_written for s in socks)
    for s in socks:
        s.close()
    srv.stop(True)
    per_conn = (peak - base) / conns
    print("proxy RSS %d -> %d KiB: %.0f KiB per stalled connection (%d MiB pushed)"
          % (base, peak, per_conn, pushed >> 20))
    assert pushed > conns * (256 << 10)      # the kernel buffers filled: the relay is holding
    assert per_conn <= 256, per_conn
    pp.stop()



# -- startup errors and upstream failures, as the operator reads them (issue 18) --

def run_proxy(*args):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "bunsock", "proxy", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_used_port_or_a_missing_certificate_is_one_error_line(loop, tmp_path):
    taken = bunsock.listen(hostname="127.0.0.1", port=0, socket={"data": lambda s, b: None},
                           loop=loop)
    try:
        for extra in ([], ["--workers", "2"]):
            out = run_proxy("--listen", "127.0.0.1:%d" % taken.port, "--upstream",
                            "127.0.0.1:9", *extra)
            assert out.returncode == 1
            assert out.stderr == ("error: --listen 127.0.0.1:%d: address already in use\n"
                                  % taken.port)
    finally:
        taken.stop()
    missing = tmp_path / "cert.pem"
    out = run_proxy("--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                    "--tls-cert", str(missing), "--tls-key", str(missing))
    assert out.returncode == 1
    assert out.stderr == "error: tls['cert'] file not found: %s\n" % missing


def test_every_upstream_down_is_logged_once(loop, procs):
    dead = [bunsock.listen(hostname="127.0.0.1", port=0, socket={"data": lambda s, b: None},
                           loop=loop) for _ in range(2)]
    ports = [d.port for d in dead]
    for d in dead:
        d.stop()
    pp = procs("--upstream", "127.0.0.1:%d" % ports[0], "--upstream", "127.0.0.1:%d" % ports[1])
    out, errs = fetch(loop, pp.port, n=3)
    assert out == [b""] * 3                 # closed: nowhere to send them
    rc, rest = pp.stop()
    assert rc == 0
    lines = rest.splitlines()
    failed = [l for l in lines if " failed (ConnectionRefusedError" in l]
    assert sorted(l.split()[3] for l in failed) == sorted("127.0.0.1:%d" % p for p in ports)
    down = [l for l in lines if "every upstream is down" in l]
    assert len(down) == 1, rest
