"""bunsock: Bun's native TCP API for Python, on a C-accelerated epoll/kqueue loop.

    import bunsock

    class Echo:
        def data(self, sock, buf):
            sock.write(buf)
            if sock.buffered_amount > 1 << 20:   # the client reads slower than it sends:
                sock.pause()                     # stop reading it until drain
        def drain(self, sock):
            sock.resume()

    server = bunsock.listen(hostname="127.0.0.1", port=8080, socket=Echo())
    bunsock.run()

The guide (docs/guide/) and the contract (docs/API.md) are in the source tree and on the
documentation site; help(bunsock.listen) lists the handlers and their arguments.
"""
from ._abs import ArrayBufferSink
from ._api import connect, listen
from ._loop import Group, Listener, Loop, Socket, Timer, UdpSocket, backend, get_loop
from ._udp_api import udp_socket
from ._sockinfo import TcpInfo
from ._pipes import relay
from . import framing
from .framing import FramingError
from .serve import serve

__all__ = [
    "ArrayBufferSink",
    "FramingError",
    "Group",
    "Listener",
    "Loop",
    "Socket",
    "TcpInfo",
    "Timer",
    "UdpSocket",
    "backend",
    "call_every",
    "call_later",
    "call_soon",
    "connect",
    "framing",
    "get_loop",
    "listen",
    "relay",
    "run",
    "serve",
    "udp_socket",
]
from ._version import __version__  # noqa: E402  (written only in _version.py)

# Handler-table types (bunsock._types), loaded on first use: typing help, never used per event.
_TYPES = ("DataHandler", "DrainHandler", "Handlers", "IdleTimeoutMode", "SocketHandlerMap",
          "UdpDataHandler", "UdpHandlerMap", "UdpHandlers")


def __getattr__(name):
    # bunsock.aio imports asyncio, bunsock.proxy argparse: only pay for them when used.
    if name in ("aio", "proxy"):
        import importlib
        return importlib.import_module("." + name, __name__)
    if name in _TYPES:
        from . import _types
        return getattr(_types, name)
    raise AttributeError("module 'bunsock' has no attribute %r" % name)


def run(loop=None):
    """Run `loop` (default: this thread's default loop) until no referenced listener, socket or
    timer is left, or loop.stop() is called; returns None. Ctrl-C (KeyboardInterrupt) stops it
    promptly and propagates (within 250 ms in the main thread, even when the kernel hands the
    signal to another thread). Raises RuntimeError when the loop is closed, already running,
    or was created before a fork() in this process's parent."""
    (loop if loop is not None else get_loop()).run()


def call_later(delay, fn, *args):
    """Call fn(*args) once after `delay` seconds on the default loop; returns a Timer."""
    return get_loop().call_later(delay, fn, *args)


def call_every(interval, fn, *args):
    """Call fn(*args) every `interval` seconds (fixed rate) on the default loop; returns a Timer."""
    return get_loop().call_every(interval, fn, *args)


def call_soon(fn, *args):
    """Call fn(*args) on the next iteration of the default loop; returns a Timer."""
    return get_loop().call_soon(fn, *args)
