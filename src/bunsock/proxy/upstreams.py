"""Upstreams: their addresses (resolved off the loop, re-resolved), their health (active checks
and failed connects), and the pick (smooth weighted round robin or least connections, backups
only while every primary is down)."""
from concurrent.futures import ThreadPoolExecutor

from .._resolve import literal, lookup

__all__ = ["Upstream", "Pool", "Resolver", "DOWN_FOR", "RESOLVE_INTERVAL"]

DOWN_FOR = 2.0            # an upstream whose connect failed is skipped this long (s)
RESOLVE_INTERVAL = 30.0   # a name's addresses are looked up again after this long (s)


class Resolver:
    """getaddrinfo in two threads, answers delivered on the loop (a slow resolver stalls only
    the connections waiting for that name, never the loop)."""

    def __init__(self, loop):
        self.loop = loop
        self.pool = None

    def submit(self, host, port, callback):
        if self.pool is None:        # made lazily: a worker forked later gets its own threads
            self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bunsock-proxy-dns")
        self.pool.submit(self._job, host, port, callback)

    def _job(self, host, port, callback):
        try:
            result = [ip for _fam, ip in lookup(host, port)]
        except OSError as e:
            result = e
        try:
            self.loop.call_soon_threadsafe(callback, result)
        except RuntimeError:
            pass          # the loop closed meanwhile

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False)
            self.pool = None


class Upstream:
    """One server: address, weight, backup flag, health and counters."""

    def __init__(self, host, port, weight=1, backup=False):
        self.host, self.port, self.weight, self.backup = host, port, weight, backup
        self.key = (host, port)
        self.active = 0             # relays open to it now
        self.total = 0              # relays ever opened to it
        self.bytes_in = 0           # client -> upstream bytes of finished relays
        self.bytes_out = 0          # upstream -> client bytes of finished relays
        self.connect_errors = 0
        self.failures = 0           # consecutive failed connects
        self.down_until = 0.0       # passive: loop time before which new clients skip it
        self.healthy = True         # active checks: up at start until a check fails
        self.checked_ok = False     # has a check ever passed (then rise/fall apply)
        self.rise = self.fall = 0   # consecutive passes / failures of the active check
        self.cw = 0                 # smooth weighted round robin's current weight
        lit = literal(host)
        self.addrs = [host] if lit is not None else None
        self.resolved_at = None if lit is None else float("inf")    # literals never expire
        self.waiting = None         # callbacks waiting for a lookup in flight
        self.failed = False         # every address failed: the next connection waits for a lookup

    def __str__(self):
        return ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)

    def available(self, now):
        return self.healthy and self.down_until <= now

    # -- addresses --

    def addresses(self, proxy, callback):
        """callback(list of IPs, or OSError): at once when known and fresh; a stale list is used
        while a lookup refreshes it in the background; otherwise after the lookup."""
        now = proxy.loop.time()
        fresh = self.resolved_at is not None and now - self.resolved_at < proxy.resolve_interval
        if self.addrs and fresh:
            callback(self.addrs)
            return
        if self.addrs and not self.failed:
            callback(self.addrs)
            callback = None
        if self.waiting is not None:
            if callback is not None:
                self.waiting.append(callback)
            return
        self.waiting = [] if callback is None else [callback]
        proxy.resolver.submit(self.host, self.port, lambda res: self._resolved(proxy, res))

    def _resolved(self, proxy, res):
        waiting, self.waiting = self.waiting or [], None
        self.failed = False
        if isinstance(res, list) and res:
            if res != self.addrs and self.addrs is not None:
                proxy.note("upstream %s now resolves to %s" % (self, ", ".join(res)))
            self.addrs = res
            self.resolved_at = proxy.loop.time()
        elif self.addrs:
            res = self.addrs     # keep the last good answer; the next connection asks again
        for cb in waiting:
            cb(res)

    def stale(self):
        """Every address failed: look the name up again for the next connection."""
        if self.resolved_at != float("inf"):
            self.resolved_at = None
            self.failed = True


class Pool:
    """The upstreams one route balances over."""

    def __init__(self, upstreams, balance="roundrobin"):
        if balance not in ("roundrobin", "leastconn"):
            raise ValueError("balance must be 'roundrobin' or 'leastconn', not %r" % (balance,))
        self.upstreams = list(upstreams)
        self.balance = balance

    def pick(self, tried, now):
        """The next upstream not in `tried` (a set of keys), or None. Primaries that are up
        first; then backups that are up; then (only failed connects marked them, no health
        check did) the primaries and backups skipped for a recent failure."""
        for group in (lambda u: not u.backup and u.available(now),
                      lambda u: u.backup and u.available(now),
                      lambda u: not u.backup and u.healthy,
                      lambda u: u.backup and u.healthy):
            cands = [u for u in self.upstreams if u.key not in tried and group(u)]
            if cands:
                return self._choose(cands)
        return None

    def _choose(self, cands):
        if len(cands) == 1:
            return cands[0]
        if self.balance == "leastconn":
            return min(cands, key=lambda u: (u.active / u.weight, u.failures))
        # Smooth weighted round robin (nginx's): each candidate gains its weight, the largest
        # total wins and pays back the sum; weights 3:1 give A A B A, A A B A, ... exactly.
        total = 0
        best = None
        for u in cands:
            u.cw += u.weight
            total += u.weight
            if best is None or u.cw > best.cw:
                best = u
        best.cw -= total
        return best
