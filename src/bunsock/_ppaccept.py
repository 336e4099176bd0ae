"""proxy_protocol.accept(): a handler table that reads the PROXY header before the user's runs.

Until the header is complete the socket belongs to the wrapper; then the socket is reloaded
with the user's own table (sock.reload), so after the header there is no wrapper call per
event at all. Per-socket state lives in one module dict, keyed by socket, so that a
listener.reload(accept(other)) in the middle of a header carries on with the bytes read so far.
"""
from typing import Any, Optional

from ._api import resolve_handlers
from ._loop import HANDLER_NAMES, _int_arg, _seconds_arg
from .proxy_protocol import V2_MAX_DEFAULT, V2_MAX_LIMIT, ProxyProtocolError, parse

__all__ = ["accept"]

# sock -> _Pending, for sockets whose header is still being read. Every entry leaves through
# _finish, _fail, the deadline, or the wrapper's close (which fires for every socket it opened).
_pending = {}


class _Pending:
    __slots__ = ("buf", "timer", "paused", "owner")

    def __init__(self, owner):
        self.buf = bytearray()
        self.timer = None
        self.paused = False
        self.owner = owner


def _peer(sock):
    try:
        a = sock.remote_address
    except OSError:
        a = None
    if a is None:
        return "a unix socket peer"
    return ("[%s]:%s" if ":" in a else "%s:%s") % (a, sock.remote_port)


def _drop(sock):
    p = _pending.pop(sock, None)
    if p is not None and p.timer is not None:
        p.timer.cancel()
        p.timer = None
    return p


def _expired(sock):
    """The header deadline (a loop timer callback)."""
    p = _drop(sock)
    if p is None:
        return
    owner = p.owner
    exc = TimeoutError("no complete PROXY protocol header from %s within %g s (%d bytes "
                       "received)" % (_peer(sock), owner.deadline, len(p.buf)))
    sock.close()     # after _peer(): a closed socket no longer knows its peer
    if owner.user_error is not None:
        owner.user_error(sock, exc)
    else:
        raise exc        # a timer callback's exception goes to sys.unraisablehook


class _Accept:
    """The table accept() returns. Its `error` (set only when the user's table has one) is the
    user's own, so that exceptions raised here reach the user's `error` exactly once."""

    # It reads the connection's first bytes as they arrive; on a TLS listener those go to the
    # handshake (which fails on the header) and the table would only see plaintext afterwards.
    _plain_listener_only = "proxy_protocol.accept()"

    def __init__(self, handlers, timeout, max_size):
        resolved = dict(zip(HANDLER_NAMES, resolve_handlers(handlers)))
        self.handlers = handlers
        self.user_open = resolved["open"]
        self.user_data = resolved["data"]
        self.user_error = resolved["error"]
        if self.user_error is not None:
            self.error = self.user_error
        self.deadline = timeout
        self.max_size = max_size

    def __repr__(self):
        return "<proxy_protocol.accept(%r, timeout=%r, max_size=%d)>" % (
            self.handlers, self.deadline, self.max_size)

    def _state(self, sock):
        p = _pending.get(sock)
        if p is None:
            p = _pending[sock] = _Pending(self)
        p.owner = self
        return p

    def open(self, sock):
        p = self._state(sock)
        if sock.paused:
            # pause_on_connect: it is for the user's open, after the header; the header is ours.
            p.paused = True
            sock.resume()
        if self.deadline:
            p.timer = sock.loop.call_later(self.deadline, _expired, sock)

    def data(self, sock, buf):
        p = self._state(sock)
        p.buf += buf
        try:
            h = parse(p.buf, max_size=self.max_size)
        except ProxyProtocolError as e:
            _drop(sock)
            exc = ProxyProtocolError("%s, from %s" % (e, _peer(sock)))
            sock.close()
            raise exc from None
        if h is None:
            return
        _drop(sock)
        rest = bytes(p.buf[h.length:])
        sock.proxy_header = h
        sock.reload(socket=self.handlers)     # the user's table from here on
        if p.paused:
            sock.pause()
        if self.user_open is not None:
            try:
                self.user_open(sock)
            except Exception:
                # As when `open` raises anywhere: `error` first (the loop calls it with what we
                # re-raise), then the socket closes and `close` fires.
                sock.pause()
                sock.loop.call_soon(sock.close)
                raise
        if not rest or sock.ready_state == "closed":
            return
        dest = sock.piped_to
        if dest is not None:
            # open() piped it: these bytes were read before the pipe existed; they go first.
            dest.write(rest)
        elif self.user_data is not None:
            if isinstance(buf, bytearray):
                rest = bytearray(rest)
            elif isinstance(buf, memoryview):
                rest = memoryview(rest)
            self.user_data(sock, rest)

    def end(self, sock):
        p = _drop(sock)
        if p is not None and p.buf:
            exc = ProxyProtocolError("connection from %s ended inside a PROXY protocol header "
                                     "(%d bytes received)" % (_peer(sock), len(p.buf)))
            sock.close()
            raise exc
        sock.close()

    def timeout(self, sock):
        # The listener's idle_timeout came before the header's own deadline.
        p = _pending.get(sock)
        if p is not None:
            p.owner = self
            _expired(sock)
        else:
            sock.close()

    def close(self, sock, err):
        _drop(sock)      # the user's open never ran: their close does not either


def accept(handlers: Any, *, timeout: Optional[float] = 5.0,
           max_size: int = V2_MAX_DEFAULT) -> Any:
    """Wrap a handler table so that a listener reads a PROXY protocol header (v1 or v2) from
    each connection before the table's handlers see it.

    `handlers`: the user's table (an object or mapping, as for listen's `socket=`). Returns a
    table for `bunsock.listen(socket=...)`. Each accepted socket's bytes are held until a
    complete header has arrived; then `sock.proxy_header` is set to the `ProxyHeader`, the
    socket switches to the user's table (`sock.reload`; no wrapper is left on the path), the
    user's `open` runs, and the bytes that came after the header are given to the user's `data`
    (or, when `open` piped the socket, written to the pipe's destination) before anything read
    later. They are delivered even if `open` paused the socket: they were already read. With
    `pause_on_connect=True` the socket is paused before the user's `open`, as usual.

    A connection that sends garbage, a header over the bound, or ends inside a header is closed
    and the user's `error(sock, ProxyProtocolError)` is called (without an `error` handler the
    exception goes to sys.unraisablehook), the message naming the peer; one that has not
    completed its header within `timeout` seconds (None or 0: no deadline; the listener's
    idle_timeout also applies) is closed with `error(sock, TimeoutError)`. In both cases the
    user's `open` and `close` never run. A connection closed before sending a byte is closed
    silently (a balancer's health check). If the user's `open` raises, `error` gets the
    exception and the socket closes, as for any `open`. `max_size`: the bound on a v2 header
    (default 4096; a v1 line is at most 107 bytes).

    Raises TypeError for an invalid table (as listen does), ValueError for a negative, NaN or
    too large timeout (docs/API.md §6) or a max_size outside 16..65551. Not for TLS listeners:
    the header comes before the TLS handshake, so read it on a plain listener (listen(tls=...)
    and a TLS listener's reload() raise ValueError for this table).
    `listener.reload()` replaces the wrapper too: pass `accept(new_table)` to keep reading
    headers (a header half read by then is finished by the new wrapper). A connection already
    handed over runs on its own copy of the table, so `listener.reload()` does not reach it:
    `reload` such sockets one by one.
    """
    timeout = _seconds_arg("timeout", timeout)
    _int_arg("max_size", max_size, 16, V2_MAX_LIMIT)
    return _Accept(handlers, timeout or None, max_size)


accept.__module__ = "bunsock.proxy_protocol"     # where users find it (help(), reprs)
