"""Message framing rules for `framing=` (listen, connect) and `Socket.framing`.

With a rule set, `data(sock, message)` is called once per whole message (without its header or
delimiter), and `sock.write_frame(payload)` adds the header or delimiter. The scanning runs in C
(csrc/framing.c); these objects only describe the rule. docs/API.md §18 has the contract.

    from bunsock import framing
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=handlers,
                         framing=framing.length_prefixed(4, max_size=1 << 20))
"""

from typing import Any, Optional

__all__ = ["FramingError", "LengthPrefixed", "Lines", "length_prefixed", "lines"]


class FramingError(ValueError):
    """The peer broke the framing rule: a message over max_size (declared in a header, or a
    line with no delimiter within max_size), a declared length below the header's own size
    (includes_header=True), or EOF in the middle of a message. `error(sock, exc)` receives it,
    then the socket closes with it (`close(sock, exc)`)."""


def _size(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (name, type(value).__name__))
    if not lo <= value <= hi:
        raise ValueError("%s must be in %d..%d, not %d" % (name, lo, hi, value))
    return value


_MAX = (1 << 62)


class Lines:
    """Messages that end with a delimiter (framing.lines())."""

    __slots__ = ("delimiter", "max_size", "keep_delimiter", "_rule")

    delimiter: bytes
    max_size: int
    keep_delimiter: bool
    _rule: Optional[Any]

    def __init__(self, delimiter: Any = b"\n", *, max_size: int = 65536,
                 keep_delimiter: bool = False) -> None:
        if isinstance(delimiter, str):
            raise TypeError("delimiter must be bytes, not str: encode it (b'\\r\\n')")
        try:
            delimiter = bytes(memoryview(delimiter))
        except TypeError:
            raise TypeError("delimiter must be bytes, not %s" % type(delimiter).__name__) from None
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        if len(delimiter) > 256:
            raise ValueError("delimiter too long (%d bytes, at most 256)" % len(delimiter))
        self.delimiter = delimiter
        self.max_size = _size("max_size", max_size, 0, _MAX)
        self.keep_delimiter = bool(keep_delimiter)
        self._rule = None      # the compiled C rule, made on first use (bunsock._loop)

    def __repr__(self) -> str:
        return "bunsock.framing.lines(%r, max_size=%d, keep_delimiter=%r)" % (
            self.delimiter, self.max_size, self.keep_delimiter)

    def __eq__(self, other: object) -> bool:
        return (type(other) is Lines and (self.delimiter, self.max_size, self.keep_delimiter)
                == (other.delimiter, other.max_size, other.keep_delimiter))

    def __hash__(self) -> int:
        return hash((Lines, self.delimiter, self.max_size, self.keep_delimiter))


class LengthPrefixed:
    """Messages after an unsigned length header (framing.length_prefixed())."""

    __slots__ = ("header_size", "byteorder", "max_size", "includes_header", "_rule")

    header_size: int
    byteorder: str
    max_size: int
    includes_header: bool
    _rule: Optional[Any]

    def __init__(self, header_size: int = 4, *, byteorder: str = "big", max_size: int = 1 << 20,
                 includes_header: bool = False) -> None:
        if isinstance(header_size, bool) or not isinstance(header_size, int):
            raise TypeError("header_size must be an int, not %s" % type(header_size).__name__)
        if header_size not in (1, 2, 4, 8):
            raise ValueError("header_size must be 1, 2, 4 or 8, not %d" % header_size)
        if byteorder not in ("big", "little"):
            raise ValueError("byteorder must be 'big' or 'little', not %r" % (byteorder,))
        self.header_size = header_size
        self.byteorder = byteorder
        self.max_size = _size("max_size", max_size, 0, _MAX)
        self.includes_header = bool(includes_header)
        self._rule = None

    def __repr__(self) -> str:
        return ("bunsock.framing.length_prefixed(%d, byteorder=%r, max_size=%d, "
                "includes_header=%r)" % (self.header_size, self.byteorder, self.max_size,
                                         self.includes_header))

    def __eq__(self, other: object) -> bool:
        return (type(other) is LengthPrefixed and
                (self.header_size, self.byteorder, self.max_size, self.includes_header) ==
                (other.header_size, other.byteorder, other.max_size, other.includes_header))

    def __hash__(self) -> int:
        return hash((LengthPrefixed, self.header_size, self.byteorder, self.max_size,
                     self.includes_header))


def lines(delimiter: Any = b"\n", *, max_size: int = 65536,
          keep_delimiter: bool = False) -> Lines:
    """A rule for messages ending with `delimiter` (any non-empty bytes: b"\\r\\n" for SMTP or
    Redis inline). max_size: the longest line accepted, not counting its delimiter; a peer that
    sends more than that without a delimiter fails at once with FramingError. keep_delimiter:
    deliver each line with its delimiter. Returns a Lines rule. Raises TypeError (str or
    non-bytes delimiter, non-int max_size), ValueError (empty delimiter, negative max_size)."""
    return Lines(delimiter, max_size=max_size, keep_delimiter=keep_delimiter)


def length_prefixed(header_size: int = 4, *, byteorder: str = "big", max_size: int = 1 << 20,
                    includes_header: bool = False) -> LengthPrefixed:
    """A rule for messages after an unsigned length of header_size (1, 2, 4 or 8) bytes, in
    `byteorder` ("big" or "little"). max_size: the largest message accepted (without the
    header); a larger declared length fails at once with FramingError. includes_header: the
    length counts the header itself (a declared length below header_size is a FramingError).
    Returns a LengthPrefixed rule. Raises TypeError / ValueError for bad arguments."""
    return LengthPrefixed(header_size, byteorder=byteorder, max_size=max_size,
                          includes_header=includes_header)
