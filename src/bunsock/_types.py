"""Types for handler tables (docs/API.md §3, §12), for type checkers and IDEs.

The mapping form is checked key by key (SocketHandlerMap, UdpHandlerMap); the object form needs
a `data` or a `drain` method, as at runtime, and that method's signature is checked
(DataHandler, DrainHandler, UdpDataHandler). Nothing here runs per event."""
from typing import (TYPE_CHECKING, Any, Callable, Literal, Optional, Protocol, TypedDict,
                    Union)

if TYPE_CHECKING:
    from . import Socket, UdpSocket


class SocketHandlerMap(TypedDict, total=False):
    """The mapping form of a TCP handler table: every key optional (but `data` or `drain`)."""
    open: Callable[["Socket"], object]
    data: Callable[["Socket", Any], object]
    drain: Callable[["Socket"], object]
    close: Callable[["Socket", Optional[BaseException]], object]
    error: Callable[["Socket", BaseException], object]
    end: Callable[["Socket"], object]
    timeout: Callable[["Socket"], object]
    connect_error: Callable[["Socket", BaseException], object]
    handshake: Callable[["Socket", bool, Optional[BaseException]], object]


class DataHandler(Protocol):
    """A handler object with a `data(sock, buf)` method (its other methods are optional)."""
    def data(self, sock: "Socket", buf: Any, /) -> object:
        """Called with each chunk read."""


class DrainHandler(Protocol):
    """A handler object with a `drain(sock)` method (a writer that never reads)."""
    def drain(self, sock: "Socket", /) -> object:
        """Called when the socket's write backlog has flushed."""


# What listen()/connect()/reload() take as socket=.
Handlers = Union[SocketHandlerMap, DataHandler, DrainHandler]


class UdpHandlerMap(TypedDict, total=False):
    """The mapping form of a UDP handler table (every key optional)."""
    data: Callable[["UdpSocket", Any, int, str], object]
    drain: Callable[["UdpSocket"], object]
    error: Callable[["UdpSocket", BaseException], object]
    close: Callable[["UdpSocket", Optional[BaseException]], object]


class UdpDataHandler(Protocol):
    """A UDP handler object with a `data(sock, buf, port, address)` method."""
    def data(self, sock: "UdpSocket", buf: Any, port: int, address: str, /) -> object:
        """Called with each datagram."""


# What udp_socket()/UdpSocket.reload() take as socket= (None: a send-only socket).
UdpHandlers = Union[UdpHandlerMap, UdpDataHandler]

# listen()/connect(idle_timeout_mode=): "any" (reads and writes restart the idle timeout) or
# "read" (only reads do).
IdleTimeoutMode = Literal["any", "read"]
