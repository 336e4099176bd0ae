"""`--metrics HOST:PORT`: the Prometheus text format (version 0.0.4) at /metrics, served on the
proxy's own loop by a bunsock listener (a minimal HTTP/1.x responder: one request, then close)."""
import bunsock

__all__ = ["render", "serve_metrics"]


def _esc(v):
    return str(v).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def render(proxy):
    """The exposition text for `proxy` now (live relays' bytes included)."""
    st = proxy.stats
    out = []

    def fam(name, kind, help_, samples):
        out.append("# HELP %s %s" % (name, help_))
        out.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples:
            lab = ",".join('%s="%s"' % (k, _esc(v)) for k, v in labels)
            out.append("%s%s %s" % (name, "{%s}" % lab if lab else "", value))

    fam("bunsock_proxy_connections_active", "gauge", "Client connections open now.",
        [((), st["active"])])
    fam("bunsock_proxy_connections_total", "counter", "Client connections accepted.",
        [((), st["accepted"])])
    fam("bunsock_proxy_connections_refused_total", "counter",
        "Client connections closed at once (over --max-connections).", [((), st["rejected"])])
    fam("bunsock_proxy_connections_failed_total", "counter",
        "Client connections closed without a relay (no upstream reachable, bad header).",
        [((), st["errors"])])
    ups = proxy.all_upstreams(draining=True)
    live_in, live_out = {}, {}
    for c in proxy.clients:
        u = c.data.get("upstream") if isinstance(c.data, dict) else None
        if u is not None:
            live_in[u.key] = live_in.get(u.key, 0) + c.bytes_read
            live_out[u.key] = live_out.get(u.key, 0) + c.bytes_written
    lab = lambda u: (("upstream", str(u)),)          # noqa: E731
    fam("bunsock_proxy_upstream_connections_active", "gauge", "Relays open to the upstream.",
        [(lab(u), u.active) for u in ups])
    fam("bunsock_proxy_upstream_connections_total", "counter", "Relays opened to the upstream.",
        [(lab(u), u.total) for u in ups])
    fam("bunsock_proxy_upstream_bytes_in_total", "counter",
        "Bytes from clients relayed to the upstream.",
        [(lab(u), u.bytes_in + live_in.get(u.key, 0)) for u in ups])
    fam("bunsock_proxy_upstream_bytes_out_total", "counter",
        "Bytes from the upstream relayed to clients.",
        [(lab(u), u.bytes_out + live_out.get(u.key, 0)) for u in ups])
    fam("bunsock_proxy_upstream_connect_errors_total", "counter",
        "Failed connects to the upstream.", [(lab(u), u.connect_errors) for u in ups])
    fam("bunsock_proxy_upstream_up", "gauge",
        "1 while the upstream takes new connections (health check up, no recent failed "
        "connect), else 0.", [(lab(u), int(u.available(proxy.loop.time()))) for u in ups])
    fam("bunsock_proxy_upstream_backup", "gauge", "1 for a backup upstream.",
        [(lab(u), int(u.backup)) for u in ups])
    fam("bunsock_proxy_relay_mode", "gauge", "The relay mode in use (1 for the one set).",
        [((("mode", m),), int(m == proxy.relay_mode)) for m in ("auto", "splice", "buffer")])
    return "\n".join(out) + "\n"


class _Http:
    """Reads one request head (bounded), answers, closes."""

    def __init__(self, proxy):
        self.proxy = proxy

    def open(self, sock):
        sock.data = b""
        sock.timeout(10)

    def data(self, sock, buf):
        if sock.data is None:
            return
        sock.data += buf
        if b"\r\n\r\n" not in sock.data and b"\n\n" not in sock.data:
            if len(sock.data) > 8192:
                self.answer(sock, "431 Request Header Fields Too Large", "too large\n")
            return
        line = sock.data.split(b"\n", 1)[0].split()
        if len(line) < 2 or line[0] not in (b"GET", b"HEAD"):
            self.answer(sock, "405 Method Not Allowed", "GET /metrics\n")
        elif line[1].split(b"?", 1)[0] != b"/metrics":
            self.answer(sock, "404 Not Found", "see /metrics\n")
        else:
            self.answer(sock, "200 OK", render(self.proxy), head=line[0] == b"HEAD")

    def answer(self, sock, status, body, head=False):
        sock.data = None
        b = body.encode()
        sock.end(("HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                  "Content-Length: %d\r\nConnection: close\r\n\r\n" % (status, len(b))).encode()
                 + (b"" if head else b))

    def timeout(self, sock):
        sock.close()


def serve_metrics(proxy, host, port, reuse_port=False):
    """Listen for scrapes on host:port; returns the Listener."""
    return bunsock.listen(hostname=host, port=port, socket=_Http(proxy), loop=proxy.loop,
                          reuse_port=reuse_port)
