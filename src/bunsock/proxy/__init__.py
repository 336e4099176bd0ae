"""``python -m bunsock proxy``: a TCP (and TLS) proxy on bunsock's relay.

    python -m bunsock proxy --listen 127.0.0.1:8080 --upstream 10.0.0.5:80 --upstream 10.0.0.6:80

Each accepted connection is paused (after its PROXY header or ClientHello when asked to read
one), an upstream is picked (smooth weighted round robin or least connections; backups only
while every other upstream is down), connected (Happy Eyeballs across a name's addresses, looked
up off the loop; on failure the next upstream is tried), an optional PROXY protocol header is
written to it, and then the two sockets are relayed in C (`bunsock.relay`): no Python call per
chunk, bounded memory, half-close and resets propagated.

Modules, one job each: cli (flags, config, signals, workers, reload), core (the Proxy on one
loop), front (the PROXY header and ClientHello read before relaying), connect (Happy Eyeballs to
the picked upstream), upstreams (addresses, health state, the pick), health (active checks),
headers (HOST:PORT and the PROXY header sent upstream), accesslog, metrics (Prometheus text),
config (TOML).
The guide: docs/guide/proxy.md.
"""
from .cli import build_parser, main
from .core import Proxy
from .headers import parse_hostport, parse_upstream, proxy_header_v1, proxy_header_v2

__all__ = ["main", "build_parser", "Proxy", "proxy_header_v1", "proxy_header_v2",
           "parse_hostport", "parse_upstream"]
