"""Argument checking for udp_socket(): runs once per call, so it stays in Python."""
import inspect
from collections.abc import Mapping

from . import _loop, _resolve
from ._api import _int_arg
from ._loop import BINARY_TYPES, FAMILY_INET, FAMILY_INET6

UDP_HANDLER_NAMES = ("data", "drain", "error", "close")


def resolve_udp_handlers(table):
    """A UDP handler object or mapping as the (data, drain, error, close) tuple the socket
    stores; None is a socket with no handlers (send-only)."""
    if table is None:
        return (None,) * len(UDP_HANDLER_NAMES)
    if isinstance(table, Mapping):
        unknown = [k for k in table if k not in UDP_HANDLER_NAMES]
        if unknown:
            raise TypeError("unknown UDP handler name(s) %s; expected some of %s"
                            % (", ".join(map(repr, unknown)), ", ".join(UDP_HANDLER_NAMES)))
        found = tuple(table.get(n) for n in UDP_HANDLER_NAMES)
    else:
        found = tuple(getattr(table, n, None) for n in UDP_HANDLER_NAMES)
    for name, fn in zip(UDP_HANDLER_NAMES, found):
        if fn is None:
            continue
        if not callable(fn):
            raise TypeError("handler %r must be callable, not %s" % (name, type(fn).__name__))
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError("handler %r is an async function; bunsock handlers are plain "
                            "functions" % name)
    return found


def _address(what, host, port, passive):
    """(family, ip) for a hostname: an IP literal as is, else the resolver's first answer."""
    _resolve.check_host(what, host)
    return _resolve.literal(host) or _resolve.lookup(host, port, passive=passive)[0]


def udp_socket(*, hostname=None, port=0, socket=None, data=None, binary_type="bytes",
               connect=None, reuse_port=False, ipv6_only=False, loop=None):
    """Bind a UDP socket (and connect it when connect={"hostname": ..., "port": ...}); returns
    the UdpSocket, bound on return. hostname=None binds every interface: "0.0.0.0", or "::"
    when connecting to an IPv6 address. Names are resolved synchronously. Raises TypeError /
    ValueError for bad arguments, OSError (EADDRINUSE, ...) when the kernel refuses.

    Handlers (socket=: methods of an object, or keys of a mapping; all optional):
      data(sock, buf, port, address)   one datagram, whole, from address (text) and port
      drain(sock)                 the kernel can take datagrams again after a refused send
      error(sock, exc)            another handler raised, or an ICMP error arrived
      close(sock, err)            once, on close() (err is None)"""
    port = _int_arg("port", port, 0, 65535)
    if binary_type not in BINARY_TYPES:
        raise ValueError("binary_type must be one of %s, not %r"
                         % (", ".join(map(repr, BINARY_TYPES)), binary_type))
    handlers = resolve_udp_handlers(socket)
    peer = None
    if connect is not None:
        if not isinstance(connect, Mapping):
            raise TypeError("connect= must be a mapping {'hostname': ..., 'port': ...}, not %s"
                            % type(connect).__name__)
        unknown = [k for k in connect if k not in ("hostname", "port")]
        if unknown:
            raise TypeError("unknown connect= key(s) %s; expected 'hostname' and 'port'"
                            % ", ".join(map(repr, unknown)))
        if "hostname" not in connect or "port" not in connect:
            raise ValueError("connect= needs both 'hostname' and 'port'")
        cport = _int_arg("connect port", connect["port"], 1, 65535)
        peer = _address("connect hostname", connect["hostname"], cport, False) + (cport,)
    if hostname is None:
        shown = None
        family, ip = ((FAMILY_INET6, "::") if peer is not None and peer[0] == FAMILY_INET6
                      else (FAMILY_INET, "0.0.0.0"))
    else:
        shown = hostname
        family, ip = _address("hostname", hostname, port, True)
    if peer is not None and peer[0] == FAMILY_INET6 and family == FAMILY_INET:
        raise ValueError("cannot connect a socket bound to IPv4 %r to the IPv6 address %r"
                         % (hostname, connect["hostname"]))
    if peer is not None and peer[0] == FAMILY_INET and family == FAMILY_INET6 and ipv6_only:
        raise ValueError("an ipv6_only socket cannot connect to the IPv4 address %r"
                         % (connect["hostname"],))
    loop = loop if loop is not None else _loop.get_loop()
    return _loop._udp_new(loop, handlers, data, BINARY_TYPES[binary_type], family, ip, port,
                          bool(reuse_port), bool(ipv6_only), shown if shown is not None else ip,
                          None if peer is None else peer[1], 0 if peer is None else peer[2])
