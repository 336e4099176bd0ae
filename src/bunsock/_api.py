"""Argument checking for listen() and connect(): everything here runs once per call, never per
event, so it stays in Python where the error messages are easy to read."""
import errno
import inspect
import math
import os
import sys
from collections.abc import Mapping

from . import _loop, _resolve
from ._loop import BINARY_TYPES, HANDLER_NAMES


def resolve_handlers(table):
    """Turn a handler object or mapping into the tuple the loop stores (None = not set)."""
    if table is None:
        raise TypeError("socket= needs a handler table (an object or a mapping with at least "
                        "'data' or 'drain')")
    if isinstance(table, Mapping):
        unknown = [k for k in table if k not in HANDLER_NAMES]
        if unknown:
            raise TypeError("unknown handler name(s) %s; expected some of %s"
                            % (", ".join(map(repr, unknown)), ", ".join(HANDLER_NAMES)))
        found = tuple(table.get(n) for n in HANDLER_NAMES)
    else:
        found = tuple(getattr(table, n, None) for n in HANDLER_NAMES)
    for name, fn in zip(HANDLER_NAMES, found):
        if fn is None:
            continue
        if not callable(fn):
            raise TypeError("handler %r must be callable, not %s" % (name, type(fn).__name__))
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            # The loop calls handlers synchronously: a coroutine would be created and never run.
            raise TypeError("handler %r is an async function; bunsock handlers are plain "
                            "functions. To await inside one, use bunsock.aio (the loop in "
                            "asyncio) and start a task: asyncio.get_running_loop()"
                            ".create_task(...)" % name)
    if found[1] is None and found[2] is None:
        raise TypeError("a handler table needs at least a 'data' or a 'drain' handler")
    return found


def _int_arg(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (name, type(value).__name__))
    if not lo <= value <= hi:
        raise ValueError("%s must be in %d..%d, not %d" % (name, lo, hi, value))
    return value


def _seconds(name, value):
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number of seconds, not %s" % (name, type(value).__name__))
    if not math.isfinite(value) or value < 0 or value > 2_000_000:
        raise ValueError("%s must be between 0 and 2e6 seconds, not %r" % (name, value))
    return float(value)


def _make_ctx(socket, binary_type, allow_half_open, high_water_mark, idle_s, tls=None,
              server_side=False, server_hostname=None, low_water_mark=None):
    handlers = resolve_handlers(socket)
    if binary_type not in BINARY_TYPES:
        raise ValueError("binary_type must be one of %s, not %r"
                         % (", ".join(map(repr, BINARY_TYPES)), binary_type))
    hwm = -1 if high_water_mark is None else _int_arg("high_water_mark", high_water_mark, 0,
                                                       2 ** 62)
    lwm = 0 if low_water_mark is None else _int_arg("low_water_mark", low_water_mark, 0, 2 ** 62)
    if hwm >= 0 and lwm > hwm:
        raise ValueError("low_water_mark (%d) must not exceed high_water_mark (%d)" % (lwm, hwm))
    return _loop._make_ctx(handlers, BINARY_TYPES[binary_type], bool(allow_half_open), hwm,
                           int(math.ceil(idle_s * 1000)), tls, server_side, server_hostname, lwm)


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


def listen(*, hostname=None, port=None, unix=None, socket, data=None, tls=None, reuse_port=False,
           ipv6_only=False, allow_half_open=False, backlog=1024, high_water_mark=None,
           binary_type="bytes", idle_timeout=None, loop=None, low_water_mark=None):
    """Bind and listen; connections are accepted on the loop and handed to `socket` handlers."""
    hostname, port, path = _check_endpoint(hostname, port, unix)
    backlog = _int_arg("backlog", backlog, 0, 65535)
    tls_ctx = None
    if tls is not None and tls is not False:
        from ._tlsconfig import server_context
        tls_ctx = server_context(tls)
    ctx = _make_ctx(socket, binary_type, allow_half_open, high_water_mark,
                    _seconds("idle_timeout", idle_timeout), tls_ctx, True, None, low_water_mark)
    loop = loop if loop is not None else _loop.get_loop()
    if path is not None:
        try:
            return loop._listen_unix(ctx, data, path, unix, backlog)
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
    return loop._listen_tcp(ctx, data, family, ip, port, backlog, bool(reuse_port),
                            bool(ipv6_only), hostname)


def connect(*, hostname=None, port=None, unix=None, socket, data=None, tls=None,
            allow_half_open=False, local_address=None, local_port=None, high_water_mark=None,
            binary_type="bytes", timeout=None, loop=None, low_water_mark=None):
    """Start connecting; returns the Socket at once (ready_state "connecting"). `open` fires on
    success, `connect_error` on failure. `timeout` bounds resolution + connect, then becomes
    the socket's idle timeout."""
    hostname, port, path = _check_endpoint(hostname, port, unix)
    timeout_s = _seconds("timeout", timeout)
    if local_address is not None:
        if not isinstance(local_address, str) or _resolve.literal(local_address) is None:
            raise ValueError("local_address must be an IP address string, not %r"
                             % (local_address,))
    lport = 0 if local_port is None else _int_arg("local_port", local_port, 0, 65535)
    tls_ctx = None
    server_hostname = None
    if tls is not None and tls is not False:
        from ._tlsconfig import client_context
        tls_ctx, server_hostname = client_context(tls, hostname)
    ctx = _make_ctx(socket, binary_type, allow_half_open, high_water_mark, timeout_s, tls_ctx,
                    False, server_hostname, low_water_mark)
    loop = loop if loop is not None else _loop.get_loop()
    addrs = None
    if path is None:
        lit = _resolve.literal(hostname)
        if lit is not None:
            addrs = [lit]
    sock = loop._connect(ctx, data, addrs, hostname, port or 0, local_address, lport, path,
                         timeout_s)
    if tls_ctx is not None:
        # Writes made while connecting and handshaking are held by TLS, sent after the handshake.
        from ._tls import attach
        attach(sock, tls_ctx, False, server_hostname)
    return sock
