"""Happy Eyeballs (RFC 8305) in connect(): a name with several addresses races them, the next
starting after happy_eyeballs_delay (or at once when one fails), the first to connect wins.

The name resolves through a hook the tests inject (bunsock._resolve.lookup), never /etc/hosts.
A black-holed address is a listener whose accept queue is full (SYNs are dropped, the connect
hangs) on 127.0.0.2; the live one is a bunsock listener on 127.0.0.1, same port."""
import socket
import sys

import pytest

import bunsock
from bunsock import _resolve
from bunsock._loop import FAMILY_INET, FAMILY_INET6
from conftest import run, run_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="127.0.0.2 is only routable without setup on Linux")


class Echo:
    def data(self, sock, buf):
        sock.write(buf)


@pytest.fixture
def names(monkeypatch):
    """names["svc.test"] = [(family, ip), ...]: what connect() resolves the name to."""
    table = {}

    def lookup(host, port, passive=False):
        return list(table[host])

    monkeypatch.setattr(_resolve, "lookup", lookup)
    return table


@pytest.fixture
def blackhole():
    """bind(ip, port) a listener whose backlog is full: a connect to it never completes."""
    made = []

    def make(ip, port):
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        lst = socket.socket(fam)
        lst.bind((ip, port))
        lst.listen(0)
        made.append(lst)
        for _ in range(2):       # fill the accept queue (backlog 0 holds one)
            c = socket.socket(fam)
            c.setblocking(False)
            c.connect_ex((ip, port))
            made.append(c)
        return lst

    yield make
    for s in made:
        s.close()


def live_listener(loop):
    # A port free on 127.0.0.1 that is also free on 127.0.0.2 (bind is per address).
    for _ in range(20):
        srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.2", srv.port))
            return srv
        except OSError:
            srv.stop()
        finally:
            probe.close()
    pytest.skip("no port free on both loopback addresses")


class Recorder:
    def __init__(self, loop, srv):
        self.loop, self.srv, self.events, self.t0 = loop, srv, [], loop.time()

    def open(self, sock):
        self.events.append(("open", sock.remote_address, self.loop.time() - self.t0))
        sock.write(b"hello")

    def data(self, sock, buf):
        self.events.append(("data", buf))
        sock.close()

    def close(self, sock, err):
        if self.srv is not None:
            self.srv.stop(True)

    def connect_error(self, sock, exc):
        self.events.append(("connect_error", type(exc), self.loop.time() - self.t0))
        if self.srv is not None:
            self.srv.stop(True)


def test_blackholed_first_address_does_not_eat_the_timeout(loop, no_leaks, unraisable, names,
                                                           blackhole):
    srv = live_listener(loop)
    blackhole("127.0.0.2", srv.port)
    names["svc.test"] = [(FAMILY_INET, "127.0.0.2"), (FAMILY_INET, "127.0.0.1")]
    rec = Recorder(loop, srv)
    bunsock.connect(hostname="svc.test", port=srv.port, socket=rec, timeout=5, loop=loop)
    run(loop, 10)
    assert not unraisable, unraisable
    kind, addr, elapsed = rec.events[0]
    assert (kind, addr) == ("open", "127.0.0.1")
    assert 0.2 <= elapsed < 2.0            # one attempt delay (250 ms), not the 5 s timeout
    assert rec.events[1] == ("data", b"hello")


def test_the_delay_is_configurable(loop, no_leaks, unraisable, names, blackhole):
    srv = live_listener(loop)
    blackhole("127.0.0.2", srv.port)
    names["svc.test"] = [(FAMILY_INET, "127.0.0.2"), (FAMILY_INET, "127.0.0.1")]
    rec = Recorder(loop, srv)
    bunsock.connect(hostname="svc.test", port=srv.port, socket=rec, timeout=5,
                    happy_eyeballs_delay=0.05, loop=loop)
    run(loop, 10)
    assert not unraisable, unraisable
    assert rec.events[0][:2] == ("open", "127.0.0.1") and rec.events[0][2] < 0.2


def test_without_happy_eyeballs_a_blackhole_takes_the_whole_timeout(loop, no_leaks, names,
                                                                    blackhole):
    srv = live_listener(loop)
    blackhole("127.0.0.2", srv.port)
    names["svc.test"] = [(FAMILY_INET, "127.0.0.2"), (FAMILY_INET, "127.0.0.1")]
    rec = Recorder(loop, srv)
    bunsock.connect(hostname="svc.test", port=srv.port, socket=rec, timeout=0.6,
                    happy_eyeballs_delay=0, loop=loop)
    run(loop, 10)
    kind, exc, elapsed = rec.events[0]
    assert (kind, exc) == ("connect_error", TimeoutError) and elapsed >= 0.55


def test_a_refused_address_starts_the_next_at_once(loop, no_leaks, unraisable, names):
    srv = live_listener(loop)
    # Nothing listens on 127.0.0.3:port: refused immediately, no need to wait 250 ms.
    names["svc.test"] = [(FAMILY_INET, "127.0.0.3"), (FAMILY_INET, "127.0.0.1")]
    rec = Recorder(loop, srv)
    bunsock.connect(hostname="svc.test", port=srv.port, socket=rec, timeout=5, loop=loop)
    run(loop, 10)
    assert not unraisable, unraisable
    assert rec.events[0][:2] == ("open", "127.0.0.1") and rec.events[0][2] < 0.2


def test_timeout_bounds_the_whole_race(loop, no_leaks, names, blackhole):
    srv = live_listener(loop)
    blackhole("127.0.0.2", srv.port)
    port = srv.port
    srv.stop()
    blackhole("127.0.0.1", port)
    names["svc.test"] = [(FAMILY_INET, "127.0.0.2"), (FAMILY_INET, "127.0.0.1")]
    rec = Recorder(loop, None)
    bunsock.connect(hostname="svc.test", port=port, socket=rec, timeout=0.7, loop=loop)
    run(loop, 10)
    kind, exc, elapsed = rec.events[0]
    assert (kind, exc) == ("connect_error", TimeoutError)
    assert 0.6 <= elapsed < 2.0
    assert len(rec.events) == 1


def test_all_addresses_refused_reports_the_last_error(loop, no_leaks, names):
    names["svc.test"] = [(FAMILY_INET, "127.0.0.3"), (FAMILY_INET, "127.0.0.4")]
    rec = Recorder(loop, None)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    bunsock.connect(hostname="svc.test", port=port, socket=rec, timeout=5, loop=loop)
    run(loop, 10)
    assert rec.events[0][:2] == ("connect_error", ConnectionRefusedError)


def test_close_during_the_race_ends_every_attempt(loop, no_leaks, unraisable, names, blackhole):
    srv = live_listener(loop)
    port = srv.port
    srv.stop()
    blackhole("127.0.0.2", port)
    blackhole("127.0.0.1", port)
    names["svc.test"] = [(FAMILY_INET, "127.0.0.2"), (FAMILY_INET, "127.0.0.1")]
    rec = Recorder(loop, None)
    sock = bunsock.connect(hostname="svc.test", port=port, socket=rec, timeout=5,
                           happy_eyeballs_delay=0.05, loop=loop)

    def syn_sent(ip):
        """Connects from this host to ip:port still waiting for a SYN-ACK (None: cannot tell)."""
        try:
            with open("/proc/net/tcp") as f:
                rows = [r.split() for r in f.read().split("\n")[1:] if r.strip()]
        except OSError:
            return None
        want = "%02X%02X%02X%02X:%04X" % (tuple(reversed([int(x) for x in ip.split(".")]))
                                           + (port,))
        return sum(1 for r in rows if r[2] == want and r[3] == "02")

    if syn_sent("127.0.0.1") is None:
        loop.call_later(0.3, sock.close)    # both attempts are in flight by then
    else:
        # Both attempts in flight: each address has its blackhole filler and our SYN pending.
        run_until(loop, lambda: syn_sent("127.0.0.2") >= 2 and syn_sent("127.0.0.1") >= 2,
                  what="both attempts in flight")
        sock.close()
    run(loop, 10)
    assert not unraisable, unraisable
    assert rec.events == [] and sock.ready_state == "closed"


def test_families_are_interleaved():
    v6 = [(FAMILY_INET6, "2001:db8::%d" % i) for i in range(3)]
    v4 = [(FAMILY_INET, "192.0.2.%d" % i) for i in range(2)]
    assert _resolve.interleave(v6 + v4) == [v6[0], v4[0], v6[1], v4[1], v6[2]]
    assert _resolve.interleave(v4 + v6) == [v4[0], v6[0], v4[1], v6[1], v6[2]]
    assert _resolve.interleave(v4) == v4


def test_bad_delay_is_rejected(loop):
    with pytest.raises(ValueError):
        bunsock.connect(hostname="127.0.0.1", port=1, socket=Echo(), happy_eyeballs_delay=-1,
                        loop=loop)
    with pytest.raises(TypeError):
        bunsock.connect(hostname="127.0.0.1", port=1, socket=Echo(), happy_eyeballs_delay="x",
                        loop=loop)


def test_ipv6_and_ipv4_loopback_race(loop, no_leaks, unraisable, names, blackhole):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    try:
        blackhole("::1", srv.port)
    except OSError:
        srv.stop()
        pytest.skip("::1 is not usable here")
    names["svc.test"] = [(FAMILY_INET6, "::1"), (FAMILY_INET, "127.0.0.1")]
    rec = Recorder(loop, srv)
    bunsock.connect(hostname="svc.test", port=srv.port, socket=rec, timeout=5, loop=loop)
    run(loop, 10)
    assert not unraisable, unraisable
    assert rec.events[0][:2] == ("open", "127.0.0.1")
