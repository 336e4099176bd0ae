"""Argument checking for listen() and connect(): everything here runs once per call, never per
event, so it stays in Python where the error messages are easy to read."""
import errno
import math
import os
import socket as _socket
import struct
import sys

from . import _handlers, _loop, _resolve
from ._loop import BINARY_TYPES, HANDLER_NAMES, _int_arg, _seconds_arg


def check_plain_table(table, tls):
    """ValueError when a table that must read a connection's raw first bytes (its
    `_plain_listener_only` names it) is given to a TLS listener."""
    what = getattr(table, "_plain_listener_only", None) if tls else None
    if what:
        raise ValueError(
            "%s cannot serve a TLS listener: the PROXY header comes before the TLS handshake, "
            "which would fail on it; listen without tls= (bunsock reads PROXY headers on plain "
            "listeners only)" % what)


def resolve_handlers(table):
    """Turn a handler object or mapping into the tuple the loop stores (None = not set)."""
    if table is None:
        raise TypeError("socket= needs a handler table (an object or a mapping with at least "
                        "'data' or 'drain')")
    found = _handlers.resolve(table, HANDLER_NAMES)
    if found[1] is None and found[2] is None:
        raise TypeError("a handler table needs at least a 'data' or a 'drain' handler")
    return found


IDLE_TIMEOUT_MODES = ("any", "read")


def _make_ctx(socket, binary_type, allow_half_open, high_water_mark, idle_s, tls=None,
              server_side=False, server_hostname=None, pause_on_connect=False,
              low_water_mark=None, idle_timeout_mode="any", framing=None):
    handlers = resolve_handlers(socket)
    if idle_timeout_mode not in IDLE_TIMEOUT_MODES:
        raise ValueError("idle_timeout_mode must be 'any' (reads and writes restart the idle "
                         "timeout) or 'read' (only reads do), not %r" % (idle_timeout_mode,))
    if binary_type not in BINARY_TYPES:
        raise ValueError("binary_type must be one of %s, not %r"
                         % (", ".join(map(repr, BINARY_TYPES)), binary_type))
    hwm = -1 if high_water_mark is None else _int_arg("high_water_mark", high_water_mark, 0,
                                                       2 ** 62)
    lwm = 0 if low_water_mark is None else _int_arg("low_water_mark", low_water_mark, 0, 2 ** 62)
    if hwm >= 0 and lwm > hwm:
        raise ValueError("low_water_mark (%d) must not exceed high_water_mark (%d)" % (lwm, hwm))
    return _loop._make_ctx(handlers, BINARY_TYPES[binary_type], bool(allow_half_open), hwm,
                           int(math.ceil(idle_s * 1000)), tls, server_side, server_hostname,
                           bool(pause_on_connect), lwm, idle_timeout_mode == "read",
                           _loop._compile_framing(framing))


# sizeof(sockaddr_un.sun_path) less the terminating NUL: 108 - 1 on Linux, 104 - 1 on macOS/BSD.
_UNIX_PATH_MAX = 107 if sys.platform.startswith("linux") else 103


def _check_endpoint(hostname, port, unix):
    if unix is not None:
        if hostname is not None or port is not None:
            raise ValueError("give either hostname and port, or unix, not both")
        if isinstance(unix, str) and unix.startswith("\0"):
            path = unix.encode()
        else:
            path = os.fsencode(unix)
        if not path:
            raise ValueError("unix path must not be empty")
        if path[:1] != b"\0" and b"\0" in path:
            # The kernel would stop at the NUL and bind (or reach) a different, shorter path.
            raise ValueError("unix path must not contain a NUL byte (except the leading one of "
                             "an abstract address): %r" % (unix,))
        if len(path) > _UNIX_PATH_MAX:
            raise ValueError("unix path too long (%d bytes, this platform allows %d)"
                             % (len(path), _UNIX_PATH_MAX))
        return None, None, path
    if hostname is None:
        raise ValueError("give hostname and port, or unix")
    _resolve.check_host("hostname", hostname)
    if port is None:
        raise ValueError("port is required with hostname (0 picks a free port)")
    return hostname, _int_arg("port", port, 0, 65535), None


def _fd_of(fd, sock):
    """fd= or sock= (one of them, as listen, connect and udp_socket take): the descriptor's
    number, checked. The descriptor is not taken (the caller detaches `sock` on success)."""
    if fd is not None and sock is not None:
        raise ValueError("give fd or sock, not both")
    if sock is not None:
        if not isinstance(sock, _socket.socket):
            raise TypeError("sock must be a socket.socket, not %s" % type(sock).__name__)
        fd = sock.fileno()
        if fd < 0:
            raise ValueError("sock is closed")
        return fd
    return _int_arg("fd", fd, 0, 2 ** 31 - 1)


def _adopted_fd(fd, sock, listening):
    """listen(fd=/sock=) and connect(sock=): the descriptor, after checking that it is a stream
    socket of a family bunsock serves (and, for connect, connected). Returns (fd, family,
    local address); the descriptor is not taken yet (the caller detaches `sock` on success)."""
    fd = _fd_of(fd, sock)
    probe = _socket.socket(fileno=fd)       # reads family and type from the descriptor
    try:
        if probe.type != _socket.SOCK_STREAM:
            raise ValueError("bunsock needs a stream (TCP or unix) socket, not %r" % probe.type)
        if probe.family not in (_socket.AF_INET, _socket.AF_INET6, _socket.AF_UNIX):
            raise ValueError("bunsock serves AF_INET, AF_INET6 and AF_UNIX sockets, not %r"
                             % probe.family)
        local = probe.getsockname()
        if not listening:
            try:
                probe.getpeername()
            except OSError:
                raise ValueError("connect(sock=...) needs a connected socket") from None
        return fd, probe.family, local
    finally:
        probe.detach()


# Named socket options: (listen/connect keyword, key in _loop.NAMED_SOCKOPTS).
def _named_opt(key, what):
    found = _loop.NAMED_SOCKOPTS.get(key)
    if found is None:
        raise OSError(errno.ENOPROTOOPT, "%s is not available on this platform" % what)
    return found


def _c_int(name, value, lo=0, hi=2 ** 31 - 1):
    return struct.pack("i", _int_arg(name, value, lo, hi))


def _sockopt_list(sockopts, server, fastopen=None, defer_accept=None, freebind=False,
                  transparent=False, mark=None, send_buffer_size=None, recv_buffer_size=None):
    """The options to set before bind()/connect(), as (level, option, bytes): the named
    conveniences first, then the caller's own list (which may override them)."""
    out = []
    if send_buffer_size is not None:
        out.append(_named_opt("send_buffer_size", "SO_SNDBUF")
                   + (_c_int("send_buffer_size", send_buffer_size, 1),))
    if recv_buffer_size is not None:
        out.append(_named_opt("recv_buffer_size", "SO_RCVBUF")
                   + (_c_int("recv_buffer_size", recv_buffer_size, 1),))
    if fastopen is not None and fastopen is not False:
        if server:
            # The value is the queue of pending TFO requests; True picks a common size.
            qlen = 256 if fastopen is True else _int_arg("fastopen", fastopen, 1, 2 ** 31 - 1)
            out.append(_named_opt("fastopen", "TCP_FASTOPEN") + (struct.pack("i", qlen),))
        else:
            if fastopen is not True:
                raise TypeError("connect(fastopen=) is a bool")
            out.append(_named_opt("fastopen_connect", "TCP_FASTOPEN_CONNECT")
                       + (struct.pack("i", 1),))
    if defer_accept is not None:
        secs = _seconds_arg("defer_accept", defer_accept)
        out.append(_named_opt("defer_accept", "TCP_DEFER_ACCEPT")
                   + (struct.pack("i", int(math.ceil(secs))),))
    if freebind:
        out.append(_named_opt("freebind", "IP_FREEBIND") + (struct.pack("i", 1),))
    if transparent:
        out.append(_named_opt("transparent", "IP_TRANSPARENT") + (struct.pack("i", 1),))
    if mark is not None:
        out.append(_named_opt("mark", "SO_MARK")
                   + (struct.pack("I", _int_arg("mark", mark, 0, 2 ** 32 - 1)),))
    if sockopts is not None:
        if isinstance(sockopts, (str, bytes)) or not hasattr(sockopts, "__iter__"):
            raise TypeError("sockopts must be a list of (level, option, value) tuples")
        for item in sockopts:
            if not isinstance(item, tuple) or len(item) != 3:
                raise TypeError("each sockopts entry must be a (level, option, value) tuple, "
                                "not %r" % (item,))
            level, option, value = item
            level = _int_arg("sockopts level", level, 0, 2 ** 31 - 1)
            option = _int_arg("sockopts option", option, 0, 2 ** 31 - 1)
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, int):
                value = _c_int("sockopts value", value, -2 ** 31)
            elif isinstance(value, str) or value is None:
                raise TypeError("sockopts value must be an int or bytes-like, not %s"
                                % type(value).__name__)
            else:
                value = bytes(memoryview(value))
            out.append((level, option, value))
    return tuple(out)


def listen(*, hostname=None, port=None, unix=None, fd=None, sock=None, socket, data=None,
           tls=None, reuse_port=False, ipv6_only=False, allow_half_open=False, backlog=1024,
           high_water_mark=None, binary_type="bytes", idle_timeout=None, max_connections=None,
           pause_on_connect=False, sockopts=None, fastopen=None, defer_accept=None,
           freebind=False, transparent=False, mark=None, send_buffer_size=None,
           recv_buffer_size=None, low_water_mark=None, idle_timeout_mode="any", framing=None,
           loop=None):
    """Bind and listen; connections are accepted on the loop and handed to `socket` handlers.

    Handlers (methods of the `socket` object, or keys of a mapping; all optional but one of
    data/drain; each is called with the accepted Socket first):
      open(sock)                  accepted (TLS: handshake done), before any data
      data(sock, buf)             bytes read (no message boundaries); buf per binary_type
      drain(sock)                 the write backlog (sock.buffered_amount) has flushed
      end(sock)                   the peer sent FIN
      close(sock, err)            once, after the socket closed; err None or an OSError
      error(sock, exc)            another handler raised exc
      timeout(sock)               the idle timeout expired (no handler: closed, TimeoutError)
      handshake(sock, success, auth_error)   TLS handshake finished or failed

    Parameters (keyword-only):
      hostname, port: address to bind (port 0 picks a free one: read listener.port); or
      unix: a unix socket path (str/bytes/PathLike; "\\0name" for a Linux abstract name); or
      fd= / sock=: an existing socket, taken over (closed at stop(); a bound socket not yet
        listening gets listen(backlog)).
      socket: the handler table shared by every accepted socket: an object with methods or a
        mapping {"open", "data", "drain", "close", "error", "end", "timeout", "handshake"}.
      data: initial sock.data of each accepted socket.
      tls: an ssl.SSLContext or {"cert", "key", ...} (docs/TLS.md) to serve TLS.
      reuse_port, ipv6_only, backlog: socket options at bind time.
      allow_half_open: keep a socket open for writing after the peer's FIN.
      high_water_mark: cap on bytes buffered per socket (None: unbounded).
      low_water_mark: `drain` fires once the backlog falls to this many bytes (default 0:
        when it is empty).
      binary_type: "bytes" (default), "bytearray" or "memoryview" for `data`.
      idle_timeout: seconds without I/O before `timeout` fires (None: never).
      idle_timeout_mode: "any" (default: reads and writes restart the idle timeout) or "read"
        (only bytes received do: "no message from the peer for N seconds").
      max_connections: stop accepting at this many live sockets, resume below it.
      pause_on_connect: sockets start paused (open fires; data waits for resume()).
      framing: a rule from bunsock.framing (lines(...), length_prefixed(...)): `data` gets
        whole messages and write_frame() adds the header or delimiter (None: raw bytes).
      sockopts=[(level, option, int|bytes)], send_buffer_size, recv_buffer_size, fastopen
        (True or queue length), defer_accept (s), freebind, transparent, mark: options set
        before bind().
      loop: the Loop to use (default: this thread's).
    Returns: a Listener, bound and listening.
    Raises: OSError with errno from the kernel (EADDRINUSE, EPERM, ENOPROTOOPT, ENOTSOCK...;
    a bind error names the address: "cannot listen on 127.0.0.1:8080"); FileNotFoundError
    naming a missing tls= file; ValueError for a bad port, endpoint, binary_type or value, or
    for tls= with a proxy_protocol.accept() table (docs/API.md §16);
    TypeError for a bad handler table (a class instead of an instance, no data/drain, an entry
    that is not callable, an async def, an unknown key or a name almost a handler's), or a
    framing that is not a bunsock.framing rule."""
    adopt = fd is not None or sock is not None
    if adopt:
        if hostname is not None or port is not None or unix is not None:
            raise ValueError("give hostname/port, unix, or fd/sock: one of them")
        path = None
    else:
        hostname, port, path = _check_endpoint(hostname, port, unix)
    backlog = _int_arg("backlog", backlog, 0, 65535)
    limit = 0 if max_connections is None else _int_arg("max_connections", max_connections, 1,
                                                       2 ** 62)
    opts = _sockopt_list(sockopts, True, fastopen, defer_accept, freebind, transparent, mark,
                         send_buffer_size, recv_buffer_size)
    tls_ctx = None
    if tls is not None and tls is not False:
        check_plain_table(socket, True)
        from ._tlsconfig import server_context
        tls_ctx = server_context(tls)
    ctx = _make_ctx(socket, binary_type, allow_half_open, high_water_mark,
                    _seconds_arg("idle_timeout", idle_timeout), tls_ctx, True, None, pause_on_connect,
                    low_water_mark, idle_timeout_mode, framing)
    loop = loop if loop is not None else _loop.get_loop()
    if adopt:
        fd, family, local = _adopted_fd(fd, sock, True)
        unix_name = None
        if family == _socket.AF_UNIX:
            unix_name = local if local else ""
        lst = _loop._adopt_listener(loop, ctx, data, fd, backlog, None, unix_name, opts)
        if sock is not None:
            sock.detach()          # the Listener owns the descriptor now
        lst._set_max_connections(limit)
        return lst
    lst = _listen(loop, ctx, data, hostname, port, unix, path, backlog, reuse_port, ipv6_only,
                  opts)
    lst._set_max_connections(limit)
    return lst


def _listen(loop, ctx, data, hostname, port, unix, path, backlog, reuse_port, ipv6_only, opts):
    if path is not None:
        try:
            return _loop._listen_unix(loop, ctx, data, path, unix, backlog, opts)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            # bunsock never deletes a socket file it did not create: a stale one (left by a
            # process that died without stop()) is the caller's to remove, e.g. os.unlink(path)
            # after checking that nothing answers on it.
            raise OSError(errno.EADDRINUSE, "unix socket path %r is in use (a live listener, or "
                          "a stale socket file left by a dead process: remove it yourself if "
                          "nothing listens there)" % (unix,), unix) from None
    family, ip = _resolve.literal(hostname) or _resolve.lookup(hostname, port, passive=True)[0]
    try:
        return _loop._listen_tcp(loop, ctx, data, family, ip, port, backlog, bool(reuse_port),
                                 bool(ipv6_only), hostname, opts)
    except OSError as e:
        raise bind_error(e, "listen on", hostname, ip, port) from None


def bind_error(e, what, hostname, ip, port):
    """The kernel's error from bind()/listen(), same class and errno, naming the address:
    `[Errno 98] Address already in use: cannot listen on 127.0.0.1:8080`."""
    where = ("[%s]:%d" if ":" in ip else "%s:%d") % (ip, port)
    if hostname not in (None, ip):
        where = "%s (%s)" % (where, hostname)
    err = type(e)(e.errno, "%s: cannot %s %s" % (e.strerror or e, what, where))
    return err


def connect(*, hostname=None, port=None, unix=None, sock=None, socket, data=None, tls=None,
            session=None, allow_half_open=False, local_address=None, local_port=None, high_water_mark=None,
            binary_type="bytes", timeout=None, happy_eyeballs_delay=0.25, pause_on_connect=False,
            sockopts=None, fastopen=False, freebind=False, transparent=False, mark=None,
            send_buffer_size=None, recv_buffer_size=None, low_water_mark=None,
            connect_timeout=None, idle_timeout=None, idle_timeout_mode="any", framing=None,
            loop=None):
    """Start connecting; returns the Socket at once (ready_state "connecting").

    `open` fires on success (TLS: after the handshake unless a `handshake` handler exists),
    `connect_error(sock, exc)` on failure; nothing blocks: names resolve in a thread pool.
    Handlers: those of listen() (open, data, drain, end, close, error, timeout, handshake,
    called as there), plus
      connect_error(sock, exc)    the connection failed before open (refused, timed out,
                                  name not found, TLS handshake failed); open/close never fire

    Parameters (keyword-only):
      hostname, port: where to connect; a name with several addresses races them (Happy
        Eyeballs): the next starts after happy_eyeballs_delay seconds (0.25; 0 or None: one
        at a time) or when one fails; or
      unix: a unix socket path; or
      sock=: an already connected socket.socket, adopted.
      socket: the handler table (see listen()), plus "connect_error".
      data: initial sock.data.
      tls: True (system trust store), an ssl.SSLContext, or a mapping (docs/TLS.md);
        session=: an ssl.SSLSession to resume.
      allow_half_open, high_water_mark, low_water_mark, binary_type, pause_on_connect,
        framing: as for listen().
      local_address, local_port: bind the local end first.
      connect_timeout: seconds bounding resolution + connect (+ TLS handshake): then
        `connect_error` gets TimeoutError (None: no bound).
      idle_timeout, idle_timeout_mode: the socket's idle timeout once open, as for listen().
      timeout: both at once (connect_timeout and idle_timeout), Bun's single setting; either
        of them given as well overrides it.
      sockopts and the named options as for listen() (fastopen: bool), set before connect().
      loop: the Loop to use (default: this thread's).
    Returns: the Socket (writes made while connecting are kept and sent after `open`).
    Raises: OSError for an option the kernel refuses, ValueError / TypeError for bad
    arguments (synchronously); failures to reach the peer come later, through
    `connect_error`."""
    if sock is not None:
        if hostname is not None or port is not None or unix is not None:
            raise ValueError("give hostname/port, unix, or sock: one of them")
        if local_address is not None or local_port is not None:
            raise ValueError("local_address/local_port cannot apply to an already connected sock")
        path = None
    else:
        hostname, port, path = _check_endpoint(hostname, port, unix)
    timeout_s = _seconds_arg("timeout", timeout)
    connect_s = timeout_s if connect_timeout is None else _seconds_arg("connect_timeout",
                                                                   connect_timeout)
    idle_s = timeout_s if idle_timeout is None else _seconds_arg("idle_timeout", idle_timeout)
    he_delay = _seconds_arg("happy_eyeballs_delay", happy_eyeballs_delay)
    opts = _sockopt_list(sockopts, False, fastopen, None, freebind, transparent, mark,
                         send_buffer_size, recv_buffer_size)
    if local_address is not None:
        if not isinstance(local_address, str) or _resolve.literal(local_address) is None:
            raise ValueError("local_address must be an IP address string, not %r"
                             % (local_address,))
    lport = 0 if local_port is None else _int_arg("local_port", local_port, 0, 65535)
    tls_ctx = None
    server_hostname = None
    if tls is not None and tls is not False:
        from ._tlsconfig import client_context
        tls_ctx, server_hostname = client_context(tls, hostname, session)
    elif session is not None:
        raise ValueError("session= resumes a TLS session: it needs tls=")
    ctx = _make_ctx(socket, binary_type, allow_half_open, high_water_mark, idle_s, tls_ctx,
                    False, server_hostname, pause_on_connect, low_water_mark, idle_timeout_mode,
                    framing)
    loop = loop if loop is not None else _loop.get_loop()
    if sock is not None:
        fd, _family, _local = _adopted_fd(None, sock, False)
        s = _loop._adopt_connected(loop, ctx, data, fd, None, opts)
        sock.detach()              # the Socket owns the descriptor now
        sock = s
    else:
        addrs = None
        probe_family = _loop.FAMILY_INET
        if path is None:
            lit = _resolve.literal(hostname)
            if lit is not None:
                addrs = [lit]
                probe_family = lit[0]
        else:
            probe_family = _loop.FAMILY_UNIX
        if opts:
            # The real socket is made on the loop: a bad option must still fail here.
            _loop._probe_sockopts(probe_family, opts)
        sock = _loop._connect(loop, ctx, data, addrs, hostname, port or 0, local_address, lport,
                              path, connect_s, opts, he_delay)
    if tls_ctx is not None:
        # Writes made while connecting and handshaking are held by TLS, sent after the handshake.
        from ._tls import attach
        attach(sock, tls_ctx, False, server_hostname, session)
    return sock
