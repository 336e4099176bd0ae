"""Read a TLS ClientHello without terminating TLS: the server name (SNI) and ALPN.

For TLS passthrough routed by server name: read the first bytes a client sends, decode the
ClientHello they hold, pick an upstream by `server_name`, then relay every byte (those already
read included) untouched.

    from bunsock import clienthello

    hello = clienthello.parse(first_bytes)   # None: not complete yet; read more and call again
    if hello is not None:
        print(hello.server_name, hello.alpn)  # e.g. "example.com" ["h2", "http/1.1"]

RFC 8446 §4.1.2 (ClientHello), §5.1 (records), RFC 6066 §3 (server_name), RFC 7301 (ALPN).
"""
import struct
from typing import List, Optional, Union

__all__ = ["ClientHello", "parse", "MAX_SIZE_DEFAULT"]

MAX_SIZE_DEFAULT = 16384     # bound on the ClientHello handshake message, in bytes
_MAX_RECORD = 16384          # 2^14: a plaintext record's largest fragment (RFC 8446 §5.1)
_MAX_RECORDS = 64            # records a ClientHello may be split into (bounds the work per call)
_HANDSHAKE = 22
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16


class ClientHello:
    """A decoded ClientHello.

    Attributes: `server_name`: the host_name of the server_name extension as a str (as the
    client sent it; names are ASCII, compare them case-insensitively), or None when there is
    none (clients send no SNI for an IP address); `alpn`: the protocols of the ALPN extension in the client's order, as str (latin-1, so
    any byte decodes), or [] when there is none; `legacy_version`: the hello's version field
    (0x0303 for TLS 1.2 and 1.3); `length`: the bytes of TLS records that held the hello, from
    the start of the buffer.
    """

    __slots__ = ("server_name", "alpn", "legacy_version", "length")

    def __init__(self, server_name: Optional[str], alpn: List[str], legacy_version: int,
                 length: int) -> None:
        self.server_name = server_name
        self.alpn = alpn
        self.legacy_version = legacy_version
        self.length = length

    def __repr__(self) -> str:
        return "ClientHello(server_name=%r, alpn=%r, legacy_version=0x%04x, length=%d)" % (
            self.server_name, self.alpn, self.legacy_version, self.length)


def parse(buf: Union[bytes, bytearray, memoryview], *,
          max_size: int = MAX_SIZE_DEFAULT) -> Optional[ClientHello]:
    """Decode the TLS ClientHello at the front of `buf` (any bytes-like object), which may
    span several records.

    Returns a `ClientHello`, or None when `buf` is a valid beginning of one that is not complete
    yet. Raises ValueError (naming what is wrong) when the bytes are not a TLS handshake record
    (checked from the first byte: an HTTP request or an SSLv2 hello fails at once), the first
    message is not a ClientHello, a record is over 2^14 bytes or empty, a record of another type
    comes before the hello is complete, the hello is longer than `max_size` bytes (default
    16384; known from its 4-byte header, before it arrives) or split over more than 64 records,
    a field runs past its enclosing length, an extension is repeated, bytes follow the hello in
    its last record, or the server_name extension is malformed or not ASCII; ValueError for a
    `max_size` below 64 or above 2^24 - 1. So a caller that buffers a connection's first bytes
    until `parse` answers holds at most `max_size` + 320 bytes (the hello and 64 record
    headers) while it returns None.
    """
    if not 64 <= max_size <= 0xFFFFFF:
        raise ValueError("max_size must be in 64..%d, not %r" % (0xFFFFFF, max_size))
    mv = memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf
    msg = bytearray()
    need = None           # the handshake message's total size, once its header is in
    pos = 0
    records = 0
    while need is None or len(msg) < need:
        if len(mv) - pos < 5:
            _check_partial_header(mv[pos:])
            return None
        rtype, major, minor, rlen = mv[pos], mv[pos + 1], mv[pos + 2], \
            struct.unpack_from("!H", mv, pos + 3)[0]
        if rtype != _HANDSHAKE:
            if pos == 0:
                raise ValueError("not a TLS handshake record (first byte 0x%02x)" % rtype)
            raise ValueError("TLS record of type %d inside the ClientHello" % rtype)
        if major != 3 or minor > 4:
            raise ValueError("TLS record with version %d.%d" % (major, minor))
        if rlen == 0 or rlen > _MAX_RECORD:
            raise ValueError("TLS record of %d bytes (must be 1..%d)" % (rlen, _MAX_RECORD))
        records += 1
        if records > _MAX_RECORDS:
            raise ValueError("ClientHello split over more than %d records" % _MAX_RECORDS)
        frag = mv[pos + 5:pos + 5 + rlen]
        msg += frag
        if need is None and len(msg) >= 1 and msg[0] != _CLIENT_HELLO:
            raise ValueError("first TLS handshake message is of type %d, not ClientHello"
                             % msg[0])
        if need is None and len(msg) >= 4:
            body = int.from_bytes(msg[1:4], "big")
            if body + 4 > max_size:
                raise ValueError("ClientHello of %d bytes is over the %d-byte bound"
                                 % (body + 4, max_size))
            need = body + 4
        if need is not None and len(msg) > need:
            # Also while the record is still arriving: the bytes held stay within the bound.
            raise ValueError("%d bytes after the ClientHello in its record" % (len(msg) - need))
        if len(frag) < rlen:
            return None       # the record itself is not complete
        pos += 5 + rlen
    return _decode(bytes(msg[4:need]), pos)


def _check_partial_header(h: Union[bytes, memoryview]) -> None:
    # A record header cut short: reject what cannot become a handshake record.
    if len(h) >= 1 and h[0] != _HANDSHAKE:
        raise ValueError("not a TLS handshake record (first byte 0x%02x)" % h[0])
    if len(h) >= 2 and h[1] != 3:
        raise ValueError("TLS record with version %d.x" % h[1])


class _Reader:
    __slots__ = ("b", "i", "end")

    def __init__(self, b: bytes, i: int = 0, end: Optional[int] = None) -> None:
        self.b, self.i = b, i
        self.end = len(b) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if self.i + n > self.end:
            raise ValueError("ClientHello truncated in %s" % what)
        out = self.b[self.i:self.i + n]
        self.i += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(struct.unpack("!H", self.take(2, what))[0])

    def vec(self, lenbytes: int, what: str) -> bytes:
        n = self.u8(what) if lenbytes == 1 else self.u16(what)
        return self.take(n, what)

    def done(self) -> bool:
        return self.i >= self.end


def _decode(body: bytes, length: int) -> ClientHello:
    r = _Reader(body)
    legacy_version = r.u16("legacy_version")
    r.take(32, "random")
    sid = r.vec(1, "legacy_session_id")
    if len(sid) > 32:
        raise ValueError("ClientHello session id of %d bytes (at most 32)" % len(sid))
    suites = r.vec(2, "cipher_suites")
    if not suites or len(suites) % 2:
        raise ValueError("ClientHello cipher_suites of %d bytes" % len(suites))
    if not r.vec(1, "compression_methods"):
        raise ValueError("ClientHello without compression methods")
    server_name: Optional[str] = None
    alpn: List[str] = []
    if not r.done():        # TLS 1.2 allows no extensions at all
        exts = _Reader(r.vec(2, "extensions"))
        if not r.done():
            raise ValueError("%d bytes after the ClientHello's extensions" % (r.end - r.i))
        seen = set()
        while not exts.done():
            etype = exts.u16("an extension type")
            data = exts.vec(2, "extension %d" % etype)
            if etype in seen:
                raise ValueError("ClientHello repeats extension %d" % etype)
            seen.add(etype)
            if etype == _EXT_SERVER_NAME:
                server_name = _server_name(data)
            elif etype == _EXT_ALPN:
                alpn = _alpn(data)
    return ClientHello(server_name, alpn, legacy_version, length)


def _server_name(data: bytes) -> Optional[str]:
    r = _Reader(data)
    names = _Reader(r.vec(2, "server_name list"))
    if not r.done() or names.done():
        raise ValueError("malformed server_name extension")
    host = None
    while not names.done():
        kind = names.u8("server_name type")
        name = names.vec(2, "server_name")
        if kind == 0 and host is None:
            if not name:
                raise ValueError("empty server_name")
            try:
                host = name.decode("ascii")
            except UnicodeDecodeError:
                raise ValueError("server_name is not ASCII: %r" % name) from None
            if any(c < 0x21 or c == 0x7f for c in name):
                raise ValueError("server_name contains a control or space byte: %r" % name)
    return host


def _alpn(data: bytes) -> List[str]:
    r = _Reader(data)
    lst = _Reader(r.vec(2, "ALPN list"))
    if not r.done() or lst.done():
        raise ValueError("malformed ALPN extension")
    out = []
    while not lst.done():
        p = lst.vec(1, "ALPN protocol")
        if not p:
            raise ValueError("empty ALPN protocol name")
        out.append(p.decode("latin-1"))
    return out
