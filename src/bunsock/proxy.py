"""``python -m bunsock proxy``: a TCP (and TLS-terminating) proxy on bunsock's relay.

    python -m bunsock proxy --listen 127.0.0.1:8080 --upstream 10.0.0.5:80 --upstream 10.0.0.6:80

Each accepted connection is paused, an upstream is picked (round-robin or least-connections),
connected (Happy Eyeballs across a name's addresses; on failure the next upstream is tried), an
optional PROXY protocol header is written to it, and then the two sockets are relayed in C
(`bunsock.relay`): no Python call per chunk, bounded memory, half-close and resets propagated.

SIGTERM (and Ctrl-C) stops accepting and lets the open relays finish, up to --shutdown-timeout;
SIGUSR1 prints a one-line stats report to stderr (as --stats-interval does periodically).
"""
import argparse
import ipaddress
import os
import signal
import socket as _pysocket
import struct
import sys
import time

import bunsock

__all__ = ["main", "Proxy", "proxy_header_v1", "proxy_header_v2", "parse_hostport"]

HAPPY_EYEBALLS_DELAY = 0.25      # RFC 8305's recommended connection attempt delay
DOWN_FOR = 2.0                   # an upstream whose connect failed is skipped this long (s)


def parse_hostport(text):
    """"host:port" or "[v6addr]:port" -> (host, port). Raises ValueError."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("expected [IPv6]:PORT, not %r" % text)
        port = rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT, not %r" % text)
    if not host:
        raise ValueError("missing host in %r" % text)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("bad port in %r" % text)
    return host, int(port)


# -- PROXY protocol (haproxy.org/download/2.9/doc/proxy-protocol.txt) --------------------------

def proxy_header_v1(src, dst):
    """The text header: src and dst are (ip, port) of the client and of the address it reached."""
    if src[0] is None or dst[0] is None:
        return b"PROXY UNKNOWN\r\n"
    fam = "TCP6" if ":" in src[0] else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src[0], dst[0], src[1], dst[1])).encode()


_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_header_v2(src, dst):
    """The binary header (PROXY command, TCP over IPv4 or IPv6)."""
    if src[0] is None or dst[0] is None:
        return _V2_SIG + b"\x20\x00" + struct.pack("!H", 0)       # LOCAL, no addresses
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version != d.version:
        s = ipaddress.ip_address(s.ipv4_mapped or s) if s.version == 6 else s
        d = ipaddress.ip_address(d.ipv4_mapped or d) if d.version == 6 else d
    if s.version == 4 and d.version == 4:
        body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
        fam = 0x11
    else:
        s6 = s if s.version == 6 else ipaddress.IPv6Address("::ffff:" + str(s))
        d6 = d if d.version == 6 else ipaddress.IPv6Address("::ffff:" + str(d))
        body = s6.packed + d6.packed + struct.pack("!HH", src[1], dst[1])
        fam = 0x21
    return _V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


# -- the proxy ------------------------------------------------------------------------------------

class Upstream:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.active = 0
        self.failures = 0
        self.down_until = 0.0      # loop time before which new clients skip it (passive check)
        self.addrs = None          # resolved [(family, ip)], literal or looked up once

    def resolve(self):
        if self.addrs is None:
            infos = _pysocket.getaddrinfo(self.host, self.port, type=_pysocket.SOCK_STREAM)
            v6 = [i[4][0] for i in infos if i[0] == _pysocket.AF_INET6]
            v4 = [i[4][0] for i in infos if i[0] == _pysocket.AF_INET]
            # Interleave the families (RFC 8305 §4), first family first.
            first, second = (v6, v4) if infos and infos[0][0] == _pysocket.AF_INET6 else (v4, v6)
            out = []
            for i in range(max(len(first), len(second))):
                out += first[i:i + 1] + second[i:i + 1]
            self.addrs = list(dict.fromkeys(out))
        return self.addrs

    def __str__(self):
        return "%s:%d" % (self.host, self.port)


class _Attempt:
    """Happy Eyeballs for one client: connection attempts to the addresses of one upstream,
    started HAPPY_EYEBALLS_DELAY apart (or at once when one fails); the first to open wins."""

    def __init__(self, proxy, client, upstream, tried):
        self.proxy, self.client, self.upstream, self.tried = proxy, client, upstream, tried
        self.pending = []
        self.addrs = list(upstream.resolve())
        self.timer = None
        self.done = False
        self.next()

    def next(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.done or not self.addrs:
            return
        ip = self.addrs.pop(0)
        s = bunsock.connect(hostname=ip, port=self.upstream.port, socket=self.proxy.up_table,
                            data=self, timeout=self.proxy.connect_timeout,
                            tls=self.proxy.upstream_tls, loop=self.proxy.loop,
                            high_water_mark=None)
        self.pending.append(s)
        if self.addrs:
            self.timer = self.proxy.loop.call_later(HAPPY_EYEBALLS_DELAY, self.next)

    def opened(self, sock):
        if self.done:
            sock.close()
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        for s in self.pending:
            if s is not sock:
                s.data = None
                s.close()
        self.pending = [sock]
        self.proxy.connected(self.client, sock, self.upstream)

    def failed(self, sock, exc):
        if sock in self.pending:
            self.pending.remove(sock)
        if self.done:
            return
        if self.addrs:
            self.next()
        elif not self.pending:
            self.done = True
            self.proxy.connect_failed(self.client, self.upstream, self.tried, exc)


class Proxy:
    """The proxy's state on one loop: listener, upstreams, counters."""

    def __init__(self, upstreams, *, balance="roundrobin", proxy_protocol=None, max_connections=0,
                 idle_timeout=None, connect_timeout=5.0, splice=None, high_water_mark=None,
                 upstream_tls=None, log=sys.stderr, loop=None):
        self.loop = loop if loop is not None else bunsock.get_loop()
        self.upstreams = [Upstream(h, p) for h, p in upstreams]
        if not self.upstreams:
            raise ValueError("at least one upstream is needed")
        if balance not in ("roundrobin", "leastconn"):
            raise ValueError("balance must be 'roundrobin' or 'leastconn', not %r" % (balance,))
        if proxy_protocol not in (None, "v1", "v2"):
            raise ValueError("proxy_protocol must be None, 'v1' or 'v2', not %r" % (proxy_protocol,))
        self.balance = balance
        self.proxy_protocol = proxy_protocol
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.upstream_tls = upstream_tls
        self.relay_opts = {"splice": splice, "high_water_mark": high_water_mark}
        self.log = log
        self.rr = 0
        self.listener = None
        self.clients = set()
        self.stopping = False
        self.stop_timer = None
        self.stats = {"accepted": 0, "rejected": 0, "active": 0, "connect_errors": 0,
                      "errors": 0, "bytes_in": 0, "bytes_out": 0}
        proxy = self

        class Down:
            def open(self, sock):
                proxy.accepted(sock)

            def data(self, sock, buf):
                # Only before the relay starts (the client is paused until then), or TLS
                # bytes decrypted along with the handshake: keep them for the upstream.
                sock.data["early"].append(buf)

            def timeout(self, sock):
                sock.close()

            def close(self, sock, err):
                proxy.client_closed(sock, err)

        class Up:
            def open(self, sock):
                if isinstance(sock.data, _Attempt):
                    sock.data.opened(sock)
                else:
                    sock.close()

            def data(self, sock, buf):
                pass

            def timeout(self, sock):
                sock.close()

            def connect_error(self, sock, exc):
                if isinstance(sock.data, _Attempt):
                    sock.data.failed(sock, exc)

            def close(self, sock, err):
                pass

        self.down_table = Down()
        self.up_table = Up()

    # -- lifecycle --

    def listen(self, host, port, *, tls=None, reuse_port=False):
        self.listener = bunsock.listen(hostname=host, port=port, socket=self.down_table,
                                       tls=tls, reuse_port=reuse_port, loop=self.loop,
                                       idle_timeout=self.idle_timeout, allow_half_open=True)
        return self.listener

    def shutdown(self, deadline):
        """Stop accepting; relays finish on their own; whatever is left at `deadline` seconds is
        reset."""
        if self.stopping:
            return
        self.stopping = True
        if self.listener is not None:
            self.listener.stop()
        if self.clients:
            self.stop_timer = self.loop.call_later(deadline, self._force_close)

    def _force_close(self):
        for c in list(self.clients):
            up = c.data.get("up")
            c.terminate()
            if up is not None:
                up.terminate()

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
        if self.max_connections and self.stats["active"] >= self.max_connections:
            self.stats["rejected"] += 1
            sock.data = None
            sock.close()
            return
        self.stats["accepted"] += 1
        self.stats["active"] += 1
        self.clients.add(sock)
        sock.data = {"early": [], "up": None, "upstream": None}
        sock.pause()
        self._try(sock, set())

    def _pick(self, tried):
        n = len(self.upstreams)
        cands = [u for u in self.upstreams if id(u) not in tried]
        if not cands:
            return None
        now = self.loop.time()
        up = [u for u in cands if u.down_until <= now]
        if up and len(up) < len(cands):
            cands = up            # skip the ones that just failed, unless all did
            tried = tried | {id(u) for u in self.upstreams if u.down_until > now}
        if self.balance == "leastconn":
            return min(cands, key=lambda u: (u.active, u.failures))
        for _ in range(n):
            u = self.upstreams[self.rr % n]
            self.rr += 1
            if id(u) not in tried:
                return u
        return cands[0]

    def _try(self, client, tried):
        u = self._pick(tried)
        if u is None:
            self.stats["errors"] += 1
            _note_all_down(self, client)
            client.close()
            return
        tried.add(id(u))
        try:
            _Attempt(self, client, u, tried)
        except OSError as e:          # the name does not resolve
            self.connect_failed(client, u, tried, e)

    def connect_failed(self, client, upstream, tried, exc):
        self.stats["connect_errors"] += 1
        _note_upstream_failed(self, upstream, exc)
        upstream.failures += 1
        upstream.down_until = self.loop.time() + DOWN_FOR
        if client.ready_state == "closed":
            return
        self._try(client, tried)      # failover to the next upstream

    def connected(self, client, up, upstream):
        if client.ready_state == "closed":
            up.close()
            return
        upstream.failures = 0
        self._all_down_noted = False
        upstream.active += 1
        client.data["up"] = up
        client.data["upstream"] = upstream
        up.data = client
        if self.idle_timeout:
            up.timeout(self.idle_timeout)
        if self.proxy_protocol:
            src = (client.remote_address, client.remote_port)
            dst = (client.local_address, client.local_port)
            up.write(proxy_header_v1(src, dst) if self.proxy_protocol == "v1"
                     else proxy_header_v2(src, dst))
        for buf in client.data["early"]:
            up.write(buf)
        client.data["early"] = []
        bunsock.relay(client, up, **self.relay_opts)

    def client_closed(self, sock, err):
        if sock not in self.clients:
            return
        self.clients.discard(sock)
        self.stats["active"] -= 1
        self.stats["bytes_in"] += sock.bytes_read
        self.stats["bytes_out"] += sock.bytes_written
        if err is not None:
            self.stats["errors"] += 1
        d = sock.data
        if d["upstream"] is not None:
            d["upstream"].active -= 1
        if self.stopping and not self.clients:
            if self.stop_timer is not None:
                self.stop_timer.cancel()
            self.loop.stop()


# -- command line ---------------------------------------------------------------------------------

HELP = __doc__


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m bunsock proxy", description="TCP/TLS proxy on bunsock's in-loop relay.",
        epilog="Signals: SIGTERM or Ctrl-C stops accepting and lets relays finish (up to "
               "--shutdown-timeout); SIGUSR1 prints one stats line to stderr (per worker).")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to accept on")
    p.add_argument("--upstream", required=True, action="append", metavar="HOST:PORT",
                   help="server to relay to (repeat for several)")
    p.add_argument("--balance", choices=("roundrobin", "leastconn"), default="roundrobin",
                   help="how an upstream is picked (default: roundrobin); a failed connect "
                        "fails over to the next")
    p.add_argument("--workers", type=int, default=1,
                   help="processes sharing the port with SO_REUSEPORT (default: 1)")
    p.add_argument("--proxy-protocol", choices=("v1", "v2"),
                   help="send a PROXY protocol header to the upstream")
    p.add_argument("--tls-cert", metavar="FILE", help="terminate TLS with this certificate chain")
    p.add_argument("--tls-key", metavar="FILE", help="private key for --tls-cert")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                   help="close a connection idle this long (relayed bytes count as activity)")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="bound on one upstream connect (default: 5)")
    p.add_argument("--max-connections", type=int, default=0, metavar="N",
                   help="refuse (close at once) connections beyond N open ones (default: no limit)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="S",
                   help="on SIGTERM, reset the relays still open after this long (default: 30)")
    p.add_argument("--stats-interval", type=float, default=0, metavar="S",
                   help="print a stats line to stderr every S seconds (default: only on SIGUSR1)")
    p.add_argument("--relay", choices=("auto", "splice", "buffer"), default="auto",
                   help="how bytes move: splice(2) through a kernel pipe or the buffered path "
                        "(default: the one measured faster here, see benchmarks/RESULTS.md)")
    p.add_argument("--high-water-mark", type=int, default=None, metavar="BYTES",
                   help="bytes held per direction before reading pauses (default: 128 KiB)")
    p.add_argument("--quiet", action="store_true", help="no startup line")
    return p


def _run_worker(args, listen, upstreams, reuse_port):
    tls = None
    if args.tls_cert:
        tls = {"cert": args.tls_cert, "key": args.tls_key}
    splice = {"auto": None, "splice": True, "buffer": False}[args.relay]
    proxy = Proxy(upstreams, balance=args.balance, proxy_protocol=args.proxy_protocol,
                  max_connections=args.max_connections, idle_timeout=args.idle_timeout,
                  connect_timeout=args.connect_timeout, splice=splice,
                  high_water_mark=args.high_water_mark)
    listener = proxy.listen(listen[0], listen[1], tls=tls, reuse_port=reuse_port)

    def on_term(signum, frame):
        proxy.shutdown(args.shutdown_timeout)
        if not proxy.clients:
            proxy.loop.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, lambda s, f: proxy.report())
    if args.stats_interval > 0:
        proxy.loop.call_every(args.stats_interval, proxy.report).unref()
    if not args.quiet:
        sys.stderr.write("bunsock proxy pid=%d listening on %s:%d -> %s\n" % (
            os.getpid(), listen[0], listener.port, ", ".join(map(str, proxy.upstreams))))
        sys.stderr.flush()
    proxy.loop.run()
    proxy.report()
    return proxy


def main(argv=None):
    args = build_parser().parse_args(argv)
    failed = _startup_error(args)
    if failed is not None:
        return failed
    try:
        listen = parse_hostport(args.listen)
        upstreams = [parse_hostport(u) for u in args.upstream]
    except ValueError as e:
        sys.stderr.write("error: %s\n" % e)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        sys.stderr.write("error: --tls-cert and --tls-key go together\n")
        return 2
    if args.workers < 1:
        sys.stderr.write("error: --workers must be >= 1\n")
        return 2
    if args.workers == 1:
        _run_worker(args, listen, upstreams, False)
        return 0
    bunsock.serve(workers=args.workers, grace=args.shutdown_timeout + 1,
                  setup=lambda: _run_worker(args, listen, upstreams, True) and None)
    return 0


# -- what the operator is told (issue 18): one line per event, never a traceback --------------

def _note_upstream_failed(proxy, upstream, exc):
    """One log line when an upstream goes from up to down (not one per failed client)."""
    if proxy.log is not None and upstream.down_until <= proxy.loop.time():
        proxy.log.write("bunsock proxy: upstream %s failed (%s: %s); new clients skip it for "
                        "%g s\n" % (upstream, type(exc).__name__, exc, DOWN_FOR))
        proxy.log.flush()


def _note_all_down(proxy, client):
    """One log line when a client finds every upstream down, until one connects again."""
    if proxy.log is not None and not getattr(proxy, "_all_down_noted", False):
        proxy._all_down_noted = True
        proxy.log.write("bunsock proxy: every upstream is down (%s): closing clients until one "
                        "answers\n" % ", ".join(map(str, proxy.upstreams)))
        proxy.log.flush()


def _startup_error(args):
    """Check what would otherwise fail as a traceback at startup (the listening port taken, a
    certificate or key file missing or unreadable): print one `error:` line and return the exit
    status 1, or None when all is well. The port is probed with a listener closed at once."""
    import errno

    try:
        host, port = parse_hostport(args.listen)
    except ValueError:
        return None               # main() reports it
    try:
        if args.tls_cert and args.tls_key:
            from ._tlsconfig import server_context
            server_context({"cert": args.tls_cert, "key": args.tls_key})
        if port:
            probe_loop = bunsock.Loop()
            try:
                bunsock.listen(hostname=host, port=port, socket={"data": lambda s, b: None},
                               reuse_port=args.workers > 1, loop=probe_loop).stop()
            finally:
                probe_loop.close()
    except FileNotFoundError as e:
        sys.stderr.write("error: %s: %s\n" % (e.strerror, e.filename))
        return 1
    except OSError as e:          # ssl.SSLError included (a file that is not a PEM key/cert)
        if e.errno == errno.EADDRINUSE:
            sys.stderr.write("error: --listen %s: address already in use\n" % args.listen)
        else:
            sys.stderr.write("error: %s\n" % (e,))
        return 1
    return None
