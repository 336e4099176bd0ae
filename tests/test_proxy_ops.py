"""Operating the proxy: Prometheus metrics (parsed with prometheus_client), the access log, the
TOML config file and SIGHUP reload during a live relay, TLS to the upstream."""
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

import bunsock
from conftest import run
from proxy_support import Echo, ENV, procs, run_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def exchange(loop, port, payload):
    """Send payload, FIN, collect until close."""
    st = {"got": b""}

    class C:
        def open(self, sock):
            sock.end(payload)

        def data(self, sock, buf):
            st["got"] += buf

        def close(self, sock, err):
            st["closed"] = err

        def connect_error(self, sock, exc):
            st["closed"] = exc

    bunsock.connect(hostname="127.0.0.1", port=port, socket=C(), loop=loop, allow_half_open=True)
    run_until(loop, lambda: "closed" in st)
    return st["got"]


def in_thread(loop, fn):
    """Run fn (a blocking read of the proxy's log) while this loop keeps serving."""
    out = {}

    def body():
        try:
            out["r"] = fn()
        except BaseException as e:       # re-raised in the test's thread
            out["e"] = e

    t = threading.Thread(target=body)
    t.start()
    run_until(loop, lambda: not t.is_alive(), timeout=15)
    if "e" in out:
        raise out["e"]
    return out.get("r")


def test_metrics_parse_with_prometheus_client(loop, procs):
    parser = pytest.importorskip("prometheus_client.parser")
    a = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(b"A"), loop=loop)
    dead = free_port()
    mport = free_port()
    pp = procs("--metrics", "127.0.0.1:%d" % mport, "--upstream", "127.0.0.1:%d" % dead,
               "--upstream", "127.0.0.1:%d" % a.port, "--access-log", "off")
    for _ in range(3):
        assert exchange(loop, pp.port, b"12345") == b"A12345"
    text = in_thread(loop, lambda: urllib.request.urlopen(
        "http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode())
    fams = {f.name: f for f in parser.text_string_to_metric_families(text)}

    def value(name, **labels):
        for s in fams[name].samples:
            if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith("_created"):
                return s.value
        raise AssertionError("no sample %s %r in\n%s" % (name, labels, text))

    up_a, up_dead = "127.0.0.1:%d" % a.port, "127.0.0.1:%d" % dead
    assert value("bunsock_proxy_connections") == 3            # counter family: _total dropped
    assert value("bunsock_proxy_connections_active") == 0
    assert value("bunsock_proxy_connections_refused") == 0
    assert value("bunsock_proxy_upstream_connections", upstream=up_a) == 3
    assert value("bunsock_proxy_upstream_bytes_in", upstream=up_a) == 15
    assert value("bunsock_proxy_upstream_bytes_out", upstream=up_a) == 18
    assert value("bunsock_proxy_upstream_connect_errors", upstream=up_dead) >= 1
    assert value("bunsock_proxy_upstream_up", upstream=up_dead) == 0
    assert value("bunsock_proxy_upstream_up", upstream=up_a) == 1
    assert value("bunsock_proxy_relay_mode", mode="auto") == 1
    assert fams["bunsock_proxy_upstream_up"].type == "gauge"
    assert fams["bunsock_proxy_connections"].type == "counter"
    with pytest.raises(urllib.error.HTTPError) as e:
        in_thread(loop, lambda: urllib.request.urlopen("http://127.0.0.1:%d/nope" % mport,
                                                       timeout=10).read())
    assert e.value.code == 404
    e.value.close()
    a.stop(True)
    assert pp.stop()[0] == 0


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z client=127\.0\.0\.1:(\d+) "
                      r"upstream=(\S+) in=(\d+) out=(\d+) duration=(\d+\.\d{3}) end=(\w+)$")


def test_access_log_one_line_per_finished_connection(loop, procs, tmp_path):
    a = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(b"A"), loop=loop)
    log = tmp_path / "access.log"
    pp = procs("--access-log", str(log), "--upstream", "127.0.0.1:%d" % a.port)
    assert exchange(loop, pp.port, b"hello") == b"Ahello"
    assert exchange(loop, pp.port, b"x" * 1000) == b"A" + b"x" * 1000
    a.stop(True)
    assert exchange(loop, pp.port, b"nobody") == b""      # no upstream left
    run_until(loop, lambda: log.exists() and log.read_text().count("\n") == 3)
    lines = [LOG_LINE.match(x) for x in log.read_text().splitlines()]
    assert all(lines), log.read_text()
    assert [(m.group(2), int(m.group(3)), int(m.group(4)), m.group(6)) for m in lines] == [
        ("127.0.0.1:%d" % a.port, 5, 6, "eof"), ("127.0.0.1:%d" % a.port, 1000, 1001, "eof"),
        ("-", 0, 0, "no_upstream")]
    log.rename(tmp_path / "access.log.1")      # rotated; without --config SIGHUP only reopens
    pp.p.send_signal(signal.SIGHUP)
    in_thread(loop, lambda: pp.wait_line(r"no --config file, nothing to reload"))
    assert exchange(loop, pp.port, b"again") == b""
    run_until(loop, lambda: log.exists() and "end=no_upstream" in log.read_text())
    assert pp.stop()[0] == 0


def test_config_file_alone_and_bad_keys(loop, procs, tmp_path):
    a = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(b"A"), loop=loop)
    cfg = tmp_path / "proxy.toml"
    cfg.write_text('listen = "127.0.0.1:0"\nupstream = ["127.0.0.1:%d,weight=2"]\n'
                   'access-log = "off"\nconnect-timeout = 0.5\ncheck-interval = 0\n' % a.port)
    pp = procs("--config", str(cfg), listen=False)
    assert exchange(loop, pp.port, b"!") == b"A!"
    a.stop(True)
    assert pp.stop()[0] == 0
    cfg.write_text('listen = "127.0.0.1:0"\nupstreams = ["127.0.0.1:1"]\n')
    r = subprocess.run([sys.executable, "-m", "bunsock", "proxy", "--config", str(cfg)],
                       env=ENV, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown key 'upstreams'" in r.stderr and str(cfg) in r.stderr
    cfg.write_text('listen = "127.0.0.1:0"\nupstream = [1, 2\n')
    r = subprocess.run([sys.executable, "-m", "bunsock", "proxy", "--config", str(cfg)],
                       env=ENV, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not valid TOML" in r.stderr


class HashSink:
    """Hashes what it receives; on the client's FIN answers with the digest and closes."""

    def __init__(self, name):
        self.name = name

    def open(self, sock):
        sock.data = hashlib.sha256()
        sock.write(self.name)

    def data(self, sock, buf):
        sock.data.update(buf)

    def end(self, sock):
        sock.end(sock.data.hexdigest().encode())


def test_sighup_reload_during_a_live_relay_loses_no_byte(loop, procs, tmp_path):
    a = bunsock.listen(hostname="127.0.0.1", port=0, socket=HashSink(b"A"), loop=loop,
                       allow_half_open=True)
    b = bunsock.listen(hostname="127.0.0.1", port=0, socket=HashSink(b"B"), loop=loop,
                       allow_half_open=True)
    cfg = tmp_path / "proxy.toml"
    cfg.write_text('listen = "127.0.0.1:0"\nupstream = ["127.0.0.1:%d"]\n'
                   'access-log = "off"\n' % a.port)
    pp = procs("--config", str(cfg), listen=False)
    sent = hashlib.sha256()
    st = {"got": b""}

    class C:
        def data(self, sock, buf):
            st["got"] += buf

        def close(self, sock, err):
            st["closed"] = err

    c = bunsock.connect(hostname="127.0.0.1", port=pp.port, socket=C(), loop=loop,
                        allow_half_open=True)

    def push(n):
        for _ in range(n):
            chunk = os.urandom(64 << 10)
            sent.update(chunk)
            c.write(chunk)
        run_until(loop, lambda: c.buffered_amount == 0)

    run_until(loop, lambda: st["got"] == b"A")
    push(32)                                    # 2 MiB relayed before the reload
    cfg.write_text('listen = "127.0.0.1:1"\nupstream = ["127.0.0.1:%d"]\n'
                   'access-log = "off"\n' % b.port)
    pp.p.send_signal(signal.SIGHUP)
    m = in_thread(loop, lambda: pp.wait_line(r"reloaded .*"))
    line = m.string
    assert "added: 127.0.0.1:%d" % b.port in line and "draining: 127.0.0.1:%d" % a.port in line
    assert "listen stays 127.0.0.1:0" in line
    push(32)                                    # and 2 MiB after it, on the same relay
    c.end()
    run_until(loop, lambda: "closed" in st)
    assert st["closed"] is None
    assert st["got"] == b"A" + sent.hexdigest().encode(), "bytes lost or changed"
    assert exchange(loop, pp.port, b"") .startswith(b"B")      # new connections: the new upstream
    cfg.write_text('upstream = [')
    pp.p.send_signal(signal.SIGHUP)
    assert in_thread(loop, lambda: pp.wait_line(r"reload of .* failed, configuration unchanged"))
    assert exchange(loop, pp.port, b"").startswith(b"B")
    a.stop(True)
    b.stop(True)
    assert pp.stop()[0] == 0


def test_upstream_tls_with_ca_and_sni(loop, procs, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("backend.test")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(b"T"), loop=loop,
                         tls={"cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem")})
    good = procs("--upstream-tls", "--upstream-ca", str(tmp_path / "ca.pem"), "--upstream-sni",
                 "backend.test", "--upstream", "127.0.0.1:%d" % srv.port, "--access-log", "off")
    payload = os.urandom(300 << 10)
    assert exchange(loop, good.port, payload) == b"T" + payload
    # the name the certificate does not carry: verification fails, the client gets nothing
    bad = procs("--upstream-tls", "--upstream-ca", str(tmp_path / "ca.pem"), "--upstream-sni",
                "other.test", "--upstream", "127.0.0.1:%d" % srv.port, "--access-log", "off")
    assert exchange(loop, bad.port, b"x") == b""
    srv.stop(True)
    run(loop, 2)
    assert good.stop()[0] == 0 and bad.stop()[0] == 0


def test_sighup_to_the_parent_reloads_every_worker(loop, procs, tmp_path):
    a = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(b"A"), loop=loop)
    b = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(b"B"), loop=loop)
    cfg = tmp_path / "proxy.toml"
    cfg.write_text('listen = "127.0.0.1:0"\nworkers = 2\nupstream = ["127.0.0.1:%d"]\n'
                   'access-log = "off"\n' % a.port)
    pp = procs("--config", str(cfg), listen=False)
    pp.readline()                              # the second worker's startup line
    cfg.write_text('listen = "127.0.0.1:0"\nworkers = 2\nupstream = ["127.0.0.1:%d"]\n'
                   'access-log = "off"\n' % b.port)
    pp.p.send_signal(signal.SIGHUP)
    pids = {re.search(r"pid=(\d+)", x).group(1) for x in pp.lines}
    assert len(pids) == 2
    for _ in range(2):
        in_thread(loop, lambda: pp.wait_line(r"reloaded .*added: 127\.0\.0\.1:%d" % b.port))
    assert all(exchange(loop, pp.port, b"").startswith(b"B") for _ in range(10))
    a.stop(True)
    b.stop(True)
    assert pp.stop()[0] == 0
