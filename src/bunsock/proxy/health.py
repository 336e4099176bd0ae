"""Active health checks: every `interval` seconds, each upstream gets a TCP connect (optionally
`send` written as given and a reply that starts with `expect`). An upstream counts as up at start;
until a check has passed, one failed check takes it out; after that `fall` consecutive failures
take it out and `rise` consecutive passes bring it back."""
import bunsock

__all__ = ["HealthChecker"]


class _Check:
    """One probe of one upstream; reports once through checker.result()."""

    def __init__(self, checker, upstream, ip):
        self.checker, self.upstream = checker, upstream
        self.got = b""
        self.done = False
        c = checker
        self.sock = bunsock.connect(hostname=ip, port=upstream.port, socket=c.table, data=self,
                                    timeout=c.timeout, loop=c.proxy.loop)

    def finish(self, ok, why):
        if self.done:
            return
        self.done = True
        self.sock.data = None
        if self.sock.ready_state != "closed":
            self.sock.close()
        self.checker.result(self.upstream, ok, why)

    def opened(self):
        c = self.checker
        if c.send:
            self.sock.write(c.send)
        if not c.expect:
            self.finish(True, "connected")

    def received(self, buf):
        exp = self.checker.expect
        self.got += buf
        if self.got.startswith(exp):
            self.finish(True, "reply matched")
        elif not exp.startswith(self.got[:len(exp)]):
            self.finish(False, "unexpected reply %r" % self.got[:40])


class _Table:
    def open(self, sock):
        if isinstance(sock.data, _Check):
            sock.data.opened()

    def data(self, sock, buf):
        if isinstance(sock.data, _Check):
            sock.data.received(buf)

    def timeout(self, sock):
        if isinstance(sock.data, _Check):
            sock.data.finish(False, "timed out")

    def connect_error(self, sock, exc):
        if isinstance(sock.data, _Check):
            sock.data.finish(False, exc.strerror if isinstance(exc, OSError) and exc.strerror
                             else type(exc).__name__)

    def close(self, sock, err):
        if isinstance(sock.data, _Check):
            sock.data.finish(False, "closed before the expected reply")


class HealthChecker:
    def __init__(self, proxy, interval, send=None, expect=None, rise=2, fall=3, timeout=None):
        if not interval > 0:
            raise ValueError("check interval must be > 0 seconds, not %r" % (interval,))
        if rise < 1 or fall < 1:
            raise ValueError("check rise and fall must be >= 1")
        self.proxy, self.interval = proxy, interval
        self.send = send.encode() if isinstance(send, str) else (send or b"")
        self.expect = expect.encode() if isinstance(expect, str) else (expect or b"")
        self.rise, self.fall = rise, fall
        self.timeout = timeout if timeout else min(interval, proxy.connect_timeout) or interval
        self.table = _Table()
        self.running = {}           # upstream key -> _Check in flight
        self.timer = None

    def start(self):
        self.timer = self.proxy.loop.call_every(self.interval, self.round)
        self.timer.unref()          # checks alone do not keep a draining proxy alive
        self.round()

    def stop(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for chk in list(self.running.values()):
            chk.done = True
            chk.sock.data = None
            chk.sock.close()
        self.running.clear()

    def round(self):
        for u in self.proxy.all_upstreams():
            if u.key not in self.running:
                u.addresses(self.proxy, lambda res, u=u: self._probe(u, res))

    def _probe(self, u, res):
        if self.timer is None or u.key in self.running:
            return
        if isinstance(res, Exception):
            self.result(u, False, "name does not resolve: %s" % res)
            return
        self.running[u.key] = None
        try:
            self.running[u.key] = _Check(self, u, res[0])
        except OSError as e:
            self.running.pop(u.key, None)
            self.result(u, False, str(e))

    def result(self, u, ok, why):
        self.running.pop(u.key, None)
        if ok:
            u.fall = 0
            u.rise += 1
            u.checked_ok = True
            if not u.healthy and u.rise >= self.rise:
                u.healthy = True
                u.failures = 0
                u.down_until = 0.0
                self.proxy.note("upstream %s is UP (health check: %s)" % (u, why))
        else:
            u.rise = 0
            u.fall += 1
            if u.healthy and (u.fall >= self.fall or not u.checked_ok):
                u.healthy = False
                self.proxy.note("upstream %s is DOWN (health check: %s)" % (u, why))
