"""Argument checking for udp_socket(): runs once per call, so it stays in Python."""
import errno
import socket as _socket
from collections.abc import Mapping

from . import _handlers, _loop, _resolve
from ._api import _fd_of, _sockopt_list, bind_error
from ._loop import BINARY_TYPES, FAMILY_INET, FAMILY_INET6, _int_arg

UDP_HANDLER_NAMES = ("data", "drain", "error", "close")


def resolve_udp_handlers(table):
    """A UDP handler object or mapping as the (data, drain, error, close) tuple the socket
    stores; None is a socket with no handlers (send-only)."""
    if table is None:
        return (None,) * len(UDP_HANDLER_NAMES)
    found = _handlers.resolve(table, UDP_HANDLER_NAMES, "UDP ")
    return found


def _address(what, host, port, passive):
    """(family, ip) for a hostname: an IP literal as is, else the resolver's first answer."""
    _resolve.check_host(what, host)
    return _resolve.literal(host) or _resolve.lookup(host, port, passive=passive)[0]


def udp_socket(*, hostname=None, port=0, socket=None, data=None, binary_type="bytes",
               connect=None, reuse_port=False, ipv6_only=False, sockopts=None,
               send_buffer_size=None, recv_buffer_size=None, fd=None, sock=None, loop=None):
    """Bind a UDP socket (and connect it when connect={"hostname": ..., "port": ...}); returns
    the UdpSocket, bound on return. hostname=None binds every interface: "0.0.0.0", or "::"
    when connecting to an IPv6 address. Names are resolved synchronously.
    sockopts=[(level, option, int|bytes)], send_buffer_size, recv_buffer_size: options set
    before bind(), as for listen(). fd= / sock=: adopt an existing datagram socket (bound or
    not; bunsock owns it on success, closes it at close()); hostname/port/reuse_port/ipv6_only
    do not apply to it, connect= does.
    Raises TypeError / ValueError for bad arguments, OSError (EADDRINUSE naming the address,
    ...) when the kernel refuses.

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
    opts = _sockopt_list(sockopts, False, send_buffer_size=send_buffer_size,
                         recv_buffer_size=recv_buffer_size)
    peer = _peer(connect)
    if fd is not None or sock is not None:
        if hostname is not None or port or reuse_port or ipv6_only:
            raise ValueError("hostname/port/reuse_port/ipv6_only do not apply to an adopted "
                             "socket (fd=/sock=)")
        return _adopt(loop, handlers, data, binary_type, fd, sock, opts, peer)
    if hostname is None:
        family, ip = ((FAMILY_INET6, "::") if peer is not None and peer[0] == FAMILY_INET6
                      else (FAMILY_INET, "0.0.0.0"))
    else:
        family, ip = _address("hostname", hostname, port, True)
    if peer is not None and peer[0] == FAMILY_INET6 and family == FAMILY_INET:
        raise ValueError("cannot connect a socket bound to IPv4 %r to the IPv6 address %r"
                         % (hostname, connect["hostname"]))
    if peer is not None and peer[0] == FAMILY_INET and family == FAMILY_INET6 and ipv6_only:
        raise ValueError("an ipv6_only socket cannot connect to the IPv4 address %r"
                         % (connect["hostname"],))
    loop = loop if loop is not None else _loop.get_loop()
    if opts:
        s = _socket.socket(_AF[family], _socket.SOCK_DGRAM)
        try:
            if reuse_port:
                s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
                s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
            if family == FAMILY_INET6:
                s.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, int(bool(ipv6_only)))
            try:
                s.bind((ip, port))
            except OSError as e:
                raise bind_error(e, "bind UDP to", hostname, ip, port) from None
            return _adopt(loop, handlers, data, binary_type, None, s, opts, peer, hostname)
        finally:
            s.close()                   # a no-op once adopted (detached)
    try:
        return _loop._udp_new(loop, handlers, data, BINARY_TYPES[binary_type], family, ip, port,
                              bool(reuse_port), bool(ipv6_only), hostname,
                              None if peer is None else peer[1], 0 if peer is None else peer[2])
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        raise bind_error(e, "bind UDP to", hostname, ip, port) from None


_AF = {FAMILY_INET: _socket.AF_INET, FAMILY_INET6: _socket.AF_INET6}


def _peer(connect):
    if connect is None:
        return None
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
    return _address("connect hostname", connect["hostname"], cport, False) + (cport,)


def _adopt(loop, handlers, data, binary_type, fd, sock, opts, peer, hostname=None):
    """Register a datagram socket made elsewhere (fd=/sock=, or the options path above) after
    applying `opts` and connecting it to `peer`; on success the UdpSocket owns the descriptor."""
    n = _fd_of(fd, sock)
    probe = sock if sock is not None else _socket.socket(fileno=n)
    try:
        if probe.type != _socket.SOCK_DGRAM:
            raise ValueError("udp_socket needs a datagram socket, not %r" % probe.type)
        if probe.family not in (_socket.AF_INET, _socket.AF_INET6):
            raise ValueError("udp_socket serves AF_INET and AF_INET6 sockets, not %r"
                             % probe.family)
        family = FAMILY_INET if probe.family == _socket.AF_INET else FAMILY_INET6
        for level, option, value in opts:
            probe.setsockopt(level, option, value)
        if probe.getsockname()[1] == 0:
            probe.bind(("0.0.0.0" if family == FAMILY_INET else "::", 0))
        connected = True
        if peer is not None:
            ip = peer[1]
            if family == FAMILY_INET6 and peer[0] == FAMILY_INET:
                ip = "::ffff:" + ip
            elif family == FAMILY_INET and peer[0] == FAMILY_INET6:
                raise ValueError("cannot connect an IPv4 socket to the IPv6 address %r" % (ip,))
            probe.connect((ip, peer[2]))
        else:
            try:
                probe.getpeername()
            except OSError:
                connected = False
        probe.setblocking(False)
        loop = loop if loop is not None else _loop.get_loop()
        return _loop._udp_wrap(loop, handlers, data, BINARY_TYPES[binary_type], family,
                               probe.detach(), hostname, connected)    # owned from here on
    finally:
        if sock is None and probe.fileno() >= 0:
            probe.detach()              # fd= stays the caller's when adoption fails
