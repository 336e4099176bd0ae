"""bunsock inside a running asyncio loop.

The bunsock loop's poller fd is registered with `loop.add_reader`; when it is readable, or when
bunsock's next timer is due, one non-blocking bunsock iteration runs. Handlers and coroutines
share the thread, so handlers may resolve futures and coroutines may write to sockets.

    sock = await bunsock.aio.connect(hostname=..., port=..., socket=Client())
    sock.write(request)
    await bunsock.aio.drained(sock)

`connect` resolves at `open` (raises what `connect_error` got); `drained` waits until the
socket's buffer has flushed (at once if it is empty). The tables given here are wrapped to do
that; `reload()` on such a socket replaces the wrappers too, after which `drained` no longer
resolves for it.
"""
import asyncio
import weakref

from . import _api, _loop

__all__ = ["connect", "drained", "get_loop", "listen", "wait_closed"]

_bridges = weakref.WeakKeyDictionary()
# sock -> [futures]; emptied by `drain` or `close`, one of which always comes for an open socket
# (a plain dict: Socket has no weakref slot, to stay small).
_drain_waiters = {}


class _Bridge:
    def __init__(self, aloop):
        self.aloop = aloop
        self.loop = _loop.Loop()
        self.loop._embed(True)
        self.timer = None
        aloop.add_reader(self.loop.fileno(), self.step)
        self.schedule()

    def step(self):
        self.timer = None
        self.loop.run_once(0)
        self.schedule()

    def schedule(self):
        t = self.loop.next_timeout()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if t is not None:
            self.timer = self.aloop.call_later(t, self.step)


def get_loop():
    """The bunsock loop bridged to the running asyncio loop (created on first use)."""
    aloop = asyncio.get_running_loop()
    bridge = _bridges.get(aloop)
    if bridge is None:
        bridge = _bridges[aloop] = _Bridge(aloop)
    return bridge.loop


def _wrap(table, on_open=None, on_connect_error=None):
    handlers = dict(zip(_api.HANDLER_NAMES, _api.resolve_handlers(table)))
    user_open, user_drain = handlers["open"], handlers["drain"]
    user_close, user_cerr = handlers["close"], handlers["connect_error"]

    def open_(sock):
        try:
            if user_open is not None:
                user_open(sock)
        except BaseException as e:
            if on_connect_error is not None:
                on_connect_error(e)      # the socket is closed after this; connect() raises it
            raise
        if on_open is not None:
            on_open(sock)

    def drain(sock):
        try:
            if user_drain is not None:
                user_drain(sock)
        finally:
            _wake(sock, None)

    def close(sock, err):
        try:
            if user_close is not None:
                user_close(sock, err)
        finally:
            _wake(sock, err or ConnectionResetError("socket closed before its buffer drained"))

    def connect_error(sock, exc):
        try:
            if user_cerr is not None:
                user_cerr(sock, exc)
        finally:
            if on_connect_error is not None:
                on_connect_error(exc)

    handlers.update(open=open_, drain=drain, close=close, connect_error=connect_error)
    return {k: v for k, v in handlers.items() if v is not None}


def _wake(sock, exc):
    for fut in _drain_waiters.pop(sock, ()):
        if not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)


async def connect(*, socket, **kwargs):
    """bunsock.connect() on the bridged loop; returns the Socket once `open` has fired."""
    loop = get_loop()
    fut = asyncio.get_running_loop().create_future()

    def opened(sock):
        if not fut.done():
            fut.set_result(sock)

    def failed(exc):
        if not fut.done():
            fut.set_exception(exc)

    kwargs.pop("loop", None)
    sock = _api.connect(socket=_wrap(socket, opened, failed), loop=loop, **kwargs)
    try:
        return await fut
    except BaseException:
        # Cancelled (a wait_for timeout) or failed: abort the attempt (the lookup's result, a
        # connect in flight, a handshake) and close whatever it opened; nobody holds it.
        if sock.ready_state != "closed":
            sock.close()
        raise


async def listen(*, socket, **kwargs):
    """bunsock.listen() on the bridged loop (bound and listening on return)."""
    kwargs.pop("loop", None)
    return _api.listen(socket=_wrap(socket), loop=get_loop(), **kwargs)


async def drained(sock):
    """Wait until `sock` has handed everything buffered to the kernel."""
    if sock.ready_state == "closed":
        raise ConnectionResetError("socket is closed")
    if sock.buffered_amount == 0:
        return
    fut = asyncio.get_running_loop().create_future()
    _drain_waiters.setdefault(sock, []).append(fut)
    await fut


async def wait_closed(listener):
    """Wait until `listener` is stopped and its last accepted socket has closed (asyncio's
    `server.wait_closed()`); it does not stop the listener: call `listener.stop()` (before or
    after). Returns at once when that already happened."""
    if listener.closed:
        return
    fut = asyncio.get_running_loop().create_future()

    def closed(_listener):
        if not fut.done():
            fut.set_result(None)

    listener._when_closed(closed)
    await fut
