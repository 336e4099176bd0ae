"""The proxy on one loop: accept, (read a PROXY header, read the ClientHello,) pick an upstream,
connect, write what was read, then relay in C (bunsock.relay): no Python per chunk."""
import os
import sys

import bunsock

from .accesslog import AccessLog
from .connect import Attempt
from .front import read_client_hello, read_proxy_header, route
from .headers import proxy_header_v1, proxy_header_v2
from .upstreams import DOWN_FOR, RESOLVE_INTERVAL, Pool, Resolver, Upstream

__all__ = ["Proxy"]

HEADER_TIMEOUT = 5.0             # a PROXY header or ClientHello must arrive within this (s)


class Proxy:
    """The proxy's state on one loop: listener, upstream pools, health checks, counters.

    upstreams: (host, port) or (host, port, weight, backup) tuples, or "HOST:PORT[,weight=N]
    [,backup]" strings. routes: {server_name: [upstreams]} for TLS passthrough by SNI
    (upstreams is then the default route). accept_proxy: read a PROXY v1/v2 header first."""

    def __init__(self, upstreams, *, balance="roundrobin", proxy_protocol=None, max_connections=0,
                 idle_timeout=None, connect_timeout=5.0, splice=None, high_water_mark=None,
                 upstream_tls=None, log=sys.stderr, loop=None, access_log=None,
                 resolve_interval=RESOLVE_INTERVAL, accept_proxy=False, routes=None,
                 header_timeout=HEADER_TIMEOUT):
        self.loop = loop if loop is not None else bunsock.get_loop()
        self.log = log
        self.listener = None
        self.clients = set()
        self.stopping = False
        self.stop_timer = None
        self.checker = None
        self.all_down_noted = False
        self.draining = {}           # upstreams removed by a reload, kept while relays use them
        self.resolver = Resolver(self.loop)
        self.access = AccessLog(None)
        self.stats = {"accepted": 0, "rejected": 0, "active": 0, "connect_errors": 0,
                      "errors": 0, "bytes_in": 0, "bytes_out": 0}
        self.configure(upstreams, balance=balance, proxy_protocol=proxy_protocol,
                       max_connections=max_connections, idle_timeout=idle_timeout,
                       connect_timeout=connect_timeout, splice=splice,
                       high_water_mark=high_water_mark, upstream_tls=upstream_tls,
                       resolve_interval=resolve_interval, accept_proxy=accept_proxy,
                       routes=routes, header_timeout=header_timeout)
        if access_log is not None:
            self.access = access_log if isinstance(access_log, AccessLog) else AccessLog(access_log)
        proxy = self

        class Down:
            def open(self, sock):
                proxy.accepted(sock)

            def data(self, sock, buf):
                proxy.client_data(sock, buf)

            def timeout(self, sock):
                d = sock.data
                if isinstance(d, dict) and d["phase"] in ("proxy", "hello"):
                    proxy._reject(sock, d, "header_timeout", "no complete %s within %g s" % (
                        "PROXY header" if d["phase"] == "proxy" else "ClientHello",
                        proxy.header_timeout))
                    return
                if isinstance(d, dict) and d["end"] is None:
                    d["end"] = "timeout"
                sock.close()

            def end(self, sock):
                d = sock.data
                if isinstance(d, dict) and d["phase"] in ("proxy", "hello"):
                    what = "PROXY header" if d["phase"] == "proxy" else "ClientHello"
                    proxy._reject(sock, d, "bad_proxy_header" if d["phase"] == "proxy"
                                  else "bad_client_hello",
                                  "the client closed after %d bytes of a %s"
                                  % (len(d["buf"]), what))

            def close(self, sock, err):
                proxy.client_closed(sock, err)

        class Up:
            def open(self, sock):
                if isinstance(sock.data, Attempt):
                    sock.data.opened(sock)
                elif sock.data is None:
                    sock.close()

            def data(self, sock, buf):
                pass

            def timeout(self, sock):
                client = sock.data
                if isinstance(client, bunsock.Socket) and isinstance(client.data, dict) \
                        and client.data["end"] is None:
                    client.data["end"] = "timeout"       # --idle-timeout, seen upstream first
                sock.close()

            def connect_error(self, sock, exc):
                if isinstance(sock.data, Attempt):
                    sock.data.failed(sock, exc)

            def close(self, sock, err):
                pass

        self.down_table = Down()
        self.up_table = Up()

    # -- configuration (also what a reload applies) --

    def _upstream(self, spec, known):
        if isinstance(spec, str):
            from .headers import parse_upstream
            spec = parse_upstream(spec)
        host, port, weight, backup = (tuple(spec) + (1, False))[:4]
        u = known.get((host, port)) or self.draining.pop((host, port), None)
        if u is None:
            u = Upstream(host, port, weight, backup)
        u.weight, u.backup = weight, backup
        known[u.key] = u
        return u

    def configure(self, upstreams, *, balance="roundrobin", proxy_protocol=None,
                  max_connections=0, idle_timeout=None, connect_timeout=5.0, splice=None,
                  high_water_mark=None, upstream_tls=None, resolve_interval=RESOLVE_INTERVAL,
                  accept_proxy=False, routes=None, header_timeout=HEADER_TIMEOUT):
        """Apply settings: new connections use them, live relays keep what they have. Upstreams
        that stay keep their counters and health; removed ones drain."""
        if proxy_protocol not in (None, "v1", "v2"):
            raise ValueError("proxy_protocol must be None, 'v1' or 'v2', not %r"
                             % (proxy_protocol,))
        if balance not in ("roundrobin", "leastconn"):
            raise ValueError("balance must be 'roundrobin' or 'leastconn', not %r" % (balance,))
        if not upstreams and not routes:
            raise ValueError("at least one upstream (or route) is needed")
        old = {u.key: u for u in self.all_upstreams()} if hasattr(self, "pool") else {}
        known = {}
        self.pool = Pool([self._upstream(s, known) for s in upstreams or ()], balance)
        self.routes = {}
        for name, specs in (routes or {}).items():
            self.routes[name.lower()] = Pool([self._upstream(s, known) for s in specs], balance)
        for key, u in old.items():
            if key not in known:
                self.draining[key] = u
        self.proxy_protocol = proxy_protocol
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.resolve_interval = resolve_interval
        self.accept_proxy = accept_proxy
        if not header_timeout > 0:
            raise ValueError("header_timeout must be > 0 seconds, not %r" % (header_timeout,))
        self.header_timeout = header_timeout
        self.upstream_tls = upstream_tls
        self.relay_mode = {None: "auto", True: "splice", False: "buffer"}[splice]
        self.relay_opts = {"splice": splice, "high_water_mark": high_water_mark}
        self.balance = balance

    @property
    def upstreams(self):
        return self.pool.upstreams

    def all_upstreams(self, draining=False):
        seen = {}
        for pool in [self.pool] + list(self.routes.values()):
            for u in pool.upstreams:
                seen.setdefault(u.key, u)
        if draining:
            for k, u in list(self.draining.items()):
                if u.active == 0:
                    del self.draining[k]
                else:
                    seen.setdefault(k, u)
        return list(seen.values())

    def upstream_tls_for(self, u):
        t = self.upstream_tls
        if callable(t):
            return t(u)
        return t

    def note(self, text):
        if self.log is not None:
            self.log.write("bunsock proxy: %s\n" % text)
            self.log.flush()

    def start_checks(self, interval, send=None, expect=None, rise=2, fall=3):
        from .health import HealthChecker
        self.stop_checks()
        if interval and interval > 0:
            self.checker = HealthChecker(self, interval, send, expect, rise, fall)
            self.checker.start()

    def stop_checks(self):
        if self.checker is not None:
            self.checker.stop()
            self.checker = None

    # -- lifecycle --

    def listen(self, host, port, *, tls=None, reuse_port=False):
        # The idle timeout is set per socket once it is relayed: a PROXY header or ClientHello
        # has its own deadline before that.
        self.listener = bunsock.listen(hostname=host, port=port, socket=self.down_table,
                                       tls=tls, reuse_port=reuse_port, loop=self.loop,
                                       allow_half_open=True)
        return self.listener

    def shutdown(self, deadline):
        """Stop accepting; relays finish on their own; whatever is left at `deadline` seconds is
        reset."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_checks()
        if self.listener is not None:
            self.listener.stop()
        if self.clients:
            self.stop_timer = self.loop.call_later(deadline, self._force_close)

    def _force_close(self):
        for c in list(self.clients):
            up = c.data.get("up")
            if c.data["end"] is None:
                c.data["end"] = "shutdown"
            c.terminate()
            if up is not None:
                up.terminate()

    def close(self):
        self.stop_checks()
        self.resolver.close()
        self.access.close()

    def report(self):
        st = self.stats
        line = ("bunsock proxy pid=%d active=%d accepted=%d rejected=%d connect_errors=%d "
                "errors=%d bytes_in=%d bytes_out=%d" % (
                    os.getpid(), st["active"], st["accepted"], st["rejected"],
                    st["connect_errors"], st["errors"], st["bytes_in"] + self._live("bytes_read"),
                    st["bytes_out"] + self._live("bytes_written")))
        if self.log is not None:
            self.log.write(line + "\n")
            self.log.flush()
        return line

    def _live(self, attr):
        return sum(getattr(c, attr) for c in self.clients)

    # -- connections --

    def accepted(self, sock):
        now = self.loop.time()
        if self.max_connections and self.stats["active"] >= self.max_connections:
            self.stats["rejected"] += 1
            self.access.write((sock.remote_address, sock.remote_port), None, 0, 0, 0.0, "refused")
            sock.data = None
            sock.close()
            return
        self.stats["accepted"] += 1
        self.stats["active"] += 1
        self.clients.add(sock)
        d = sock.data = {"early": [], "up": None, "upstream": None, "end": None, "t0": now,
                         "client": (sock.remote_address, sock.remote_port), "buf": b"",
                         "phase": "connect", "dst": (sock.local_address, sock.local_port),
                         "pool": self.pool}
        if self.accept_proxy:
            d["phase"] = "proxy"
        elif self.routes:
            d["phase"] = "hello"
        if d["phase"] != "connect":
            sock.timeout(self.header_timeout)
            return
        sock.pause()
        self._try(sock, set())

    def client_data(self, sock, buf):
        d = sock.data
        if d is None or d["phase"] in ("connect", "relay"):
            if d is not None:
                d["early"].append(buf)     # TLS bytes decrypted along with the handshake
            return
        d["buf"] += buf
        if d["phase"] == "proxy":
            self._read_proxy_header(sock, d)
        if d["phase"] == "hello":
            self._read_client_hello(sock, d)
        if d["phase"] == "connect":
            sock.timeout(0)
            sock.pause()
            if d["buf"]:
                d["early"].append(d["buf"])
            d["buf"] = b""
            self._try(sock, set())

    def _reject(self, sock, d, end, why):
        d["end"] = end
        self.stats["errors"] += 1
        self.note("%s from %s:%s: %s" % (end.replace("_", " "), d["client"][0], d["client"][1],
                                         why))
        sock.close()

    def _read_proxy_header(self, sock, d):
        read_proxy_header(self, sock, d)

    def _read_client_hello(self, sock, d):
        read_client_hello(self, sock, d)

    def route(self, server_name):
        """The Pool for a ClientHello's server name (exact, then *.parent wildcards), else the
        default (--upstream) pool, or None when there is none."""
        return route(self, server_name)

    def _try(self, client, tried):
        if client.ready_state == "closed":
            return
        pool = client.data["pool"]
        u = pool.pick(tried, self.loop.time())
        if u is None:
            self.stats["errors"] += 1
            if not self.all_down_noted:       # once per outage, not once per client
                self.all_down_noted = True
                self.note("every upstream is down (%s): closing clients until one answers"
                          % ", ".join(map(str, pool.upstreams)))
            client.data["end"] = "no_upstream"
            client.close()
            return
        tried.add(u.key)

        def go(addrs):
            if client.ready_state == "closed":
                return
            if isinstance(addrs, Exception):
                self.connect_failed(client, u, tried, addrs)
                return
            try:
                Attempt(self, client, u, tried, addrs)
            except (OSError, ValueError) as e:
                self.connect_failed(client, u, tried, e)

        u.addresses(self, go)

    def connect_failed(self, client, upstream, tried, exc):
        self.stats["connect_errors"] += 1
        if upstream.down_until <= self.loop.time():    # up until now: one line, not per client
            self.note("upstream %s failed (%s: %s); new clients skip it for %g s"
                      % (upstream, type(exc).__name__, exc, DOWN_FOR))
        upstream.connect_errors += 1
        upstream.failures += 1
        upstream.down_until = self.loop.time() + DOWN_FOR
        upstream.stale()           # the name may have moved: look it up again
        if client.ready_state == "closed":
            return
        self._try(client, tried)      # failover to the next upstream

    def connected(self, client, up, upstream):
        if client.ready_state == "closed":
            up.data = None
            up.close()
            return
        d = client.data
        try:
            upstream.failures = 0
            self.all_down_noted = False
            upstream.active += 1
            upstream.total += 1
            d["up"] = up
            d["upstream"] = upstream
            up.data = client
            # connect(timeout=) bounded the connect and became the socket's idle timeout: the
            # relay is idle-timed only when --idle-timeout asks for it.
            up.timeout(self.idle_timeout or 0)
            client.timeout(self.idle_timeout or 0)
            if self.proxy_protocol:
                src, dst = d["client"], d["dst"]
                up.write(proxy_header_v1(src, dst) if self.proxy_protocol == "v1"
                         else proxy_header_v2(src, dst))
            for buf in d["early"]:
                up.write(buf)
            d["early"] = []
            d["phase"] = "relay"
            bunsock.relay(client, up, **self.relay_opts)
        except Exception as e:
            # Neither side may be left open: the client paused forever, the upstream orphaned.
            d["end"] = "relay_error"
            self.stats["errors"] += 1
            self.note("relay setup failed for %s:%s -> %s: %s: %s" % (
                d["client"][0], d["client"][1], upstream, type(e).__name__, e))
            up.data = None
            up.close()
            client.close()

    def client_closed(self, sock, err):
        if sock not in self.clients:
            return
        self.clients.discard(sock)
        self.stats["active"] -= 1
        self.stats["bytes_in"] += sock.bytes_read
        self.stats["bytes_out"] += sock.bytes_written
        d = sock.data
        if err is not None:
            self.stats["errors"] += 1
        u = d["upstream"]
        if u is not None:
            u.active -= 1
            u.bytes_in += sock.bytes_read
            u.bytes_out += sock.bytes_written
        end = d["end"]
        if end is None:
            if err is None:
                end = "eof"
            elif isinstance(err, TimeoutError):
                end = "timeout"
            elif isinstance(err, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
                end = "reset"
            else:
                end = "error"
        self.access.write(d["client"], str(u) if u is not None else None, sock.bytes_read,
                          sock.bytes_written, self.loop.time() - d["t0"], end)
        if self.stopping and not self.clients:
            if self.stop_timer is not None:
                self.stop_timer.cancel()
            self.loop.stop()
