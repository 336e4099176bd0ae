"""What a client sends before it is relayed: a PROXY protocol header (--accept-proxy) and a TLS
ClientHello whose server name picks the route (--route). Each reader consumes `d["buf"]`, moves
the connection to its next phase, or rejects it (closed, with a log line)."""

from .. import clienthello, proxy_protocol

__all__ = ["read_proxy_header", "read_client_hello", "route", "HEADER_MAX"]

# The parsers bound what they wait for (a PROXY header: 107 bytes for v1, 4096 for v2; a
# ClientHello: 16 KiB plus record headers); this is a backstop on what a connection may hold.
HEADER_MAX = 32768


def read_proxy_header(proxy, sock, d):
    """Phase "proxy": the header's source becomes the client's address."""
    try:
        hdr = proxy_protocol.parse(d["buf"])
    except ValueError as e:
        proxy._reject(sock, d, "bad_proxy_header", e)
        return
    if hdr is None:
        if len(d["buf"]) > HEADER_MAX:
            proxy._reject(sock, d, "bad_proxy_header", "no complete header in %d bytes"
                          % HEADER_MAX)
        return
    if hdr.source is not None:            # PROXY (not LOCAL): the real client
        d["client"] = tuple(hdr.source)
        if hdr.destination is not None:
            d["dst"] = tuple(hdr.destination)
    d["buf"] = d["buf"][hdr.length:]
    d["phase"] = "hello" if proxy.routes else "connect"


def read_client_hello(proxy, sock, d):
    """Phase "hello": the server name picks the connection's pool."""
    if not d["buf"]:
        return
    try:
        hello = clienthello.parse(d["buf"])
    except ValueError as e:
        proxy._reject(sock, d, "bad_client_hello", e)
        return
    if hello is None:
        if len(d["buf"]) > HEADER_MAX:
            proxy._reject(sock, d, "bad_client_hello", "no complete ClientHello in %d bytes"
                          % HEADER_MAX)
        return
    pool = proxy.route(hello.server_name)
    if pool is None:
        proxy._reject(sock, d, "no_route", "no --route for %r and no default upstream"
                      % (hello.server_name,))
        return
    d["pool"] = pool
    d["phase"] = "connect"


def route(proxy, server_name):
    """The Pool for a server name: exact, then *.parent wildcards, else the default pool (None
    when there is no --upstream)."""
    name = (server_name or "").lower().rstrip(".")
    if name:
        if name in proxy.routes:
            return proxy.routes[name]
        parts = name.split(".")
        for i in range(1, len(parts)):
            p = proxy.routes.get("*." + ".".join(parts[i:]))
            if p is not None:
                return p
    return proxy.pool if proxy.pool.upstreams else None
