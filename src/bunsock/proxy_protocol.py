"""The PROXY protocol (versions 1 and 2), for servers behind a load balancer.

A balancer in front of a server (HAProxy with ``send-proxy``/``send-proxy-v2``, a cloud load
balancer) opens its own connection to the server, so the server sees the balancer's address, not
the client's. The PROXY protocol puts one header in front of the relayed bytes that says who the
client really was (haproxy.org/download/2.9/doc/proxy-protocol.txt).

    import bunsock
    from bunsock import proxy_protocol

    class App:
        def open(self, sock):
            print("client", sock.proxy_header.source)     # the real (ip, port), or None
        def data(self, sock, buf):
            sock.write(buf)

    bunsock.listen(hostname="127.0.0.1", port=8080, socket=proxy_protocol.accept(App()))

`parse()` decodes a header from the front of a buffer; `accept()` wraps a handler table so that
a plain `bunsock.listen` reads the header (v1 or v2) before anything of the user's runs;
`encode_v1()`/`encode_v2()` build headers to send to an upstream.
"""
import ipaddress
import struct
from typing import Iterable, Optional, Tuple, Union

Address = Tuple[str, int]
_IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

__all__ = ["ProxyHeader", "ProxyProtocolError", "accept", "encode_v1", "encode_v2", "parse",
           "V1_MAX", "V2_MAX_DEFAULT"]

V1_MAX = 107               # the spec's bound on a v1 line, "PROXY ... \r\n" included
V2_MAX_DEFAULT = 4096      # default bound on a whole v2 header (16 + addresses + TLVs)
V2_MAX_LIMIT = 16 + 65535  # what the 16-bit length field can say

_V1_SIG = b"PROXY "
_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
_ADDR_LEN = {1: 12, 2: 36, 3: 216}           # v2 address block size per family nibble
_FAMILY = {0: None, 1: "IPv4", 2: "IPv6", 3: "unix"}


class ProxyProtocolError(ValueError):
    """A PROXY protocol header that is malformed, too large, or cut short."""


class ProxyHeader:
    """A decoded PROXY header.

    Attributes: `version` (1 or 2); `command` ("PROXY", or "LOCAL": a connection the balancer
    made itself, e.g. a health check); `family` ("IPv4", "IPv6", "unix", or None for UNKNOWN /
    unspecified); `source` and `destination`: `(ip, port)` of the client and of the address it
    reached, or None when the header gives none usable (v1 UNKNOWN, v2 LOCAL, unspecified or unix
    addresses); `length`: the bytes the header took at the front of the stream; `tlvs`: v2's
    type-length-value extensions as a tuple of `(type, bytes)` in order (empty for v1); `tlv(type)`:
    the value of the first TLV of `type`, or None. The CRC32C TLV, when a sender adds one, is
    returned but not checked.
    """

    __slots__ = ("version", "command", "family", "source", "destination", "length", "tlvs")

    def __init__(self, version: int, command: str, family: Optional[str],
                 source: Optional[Address], destination: Optional[Address], length: int,
                 tlvs: Iterable[Tuple[int, bytes]] = ()) -> None:
        self.version = version
        self.command = command
        self.family = family
        self.source = source
        self.destination = destination
        self.length = length
        self.tlvs = tuple(tlvs)

    def tlv(self, type: int) -> Optional[bytes]:
        """The value (bytes) of the first TLV of `type` (an int, e.g. 0x01 ALPN, 0x02
        authority), or None."""
        for t, v in self.tlvs:
            if t == type:
                return v
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProxyHeader):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return ("ProxyHeader(version=%d, command=%r, family=%r, source=%r, destination=%r, "
                "length=%d, tlvs=%r)" % (self.version, self.command, self.family, self.source,
                                         self.destination, self.length, self.tlvs))


def parse(buf: Union[bytes, bytearray, memoryview], *,
          max_size: int = V2_MAX_DEFAULT) -> Optional[ProxyHeader]:
    """Decode a PROXY protocol header (v1 or v2) at the front of `buf` (any bytes-like object).

    Returns a `ProxyHeader` (its `length` says how many bytes of `buf` the header took; what
    follows is the client's data), or None when `buf` is a valid beginning of a header that is
    not complete yet. A v1 line is at most 107 bytes, its CRLF included; a v2 header is at most
    `max_size` bytes (default 4096: 16 fixed bytes, the addresses and the TLVs; at most 65551,
    all its 16-bit length can say). Raises `ProxyProtocolError` (a ValueError) when `buf` cannot
    start a header (checked from the first byte), when a v1 line reaches 107 bytes without its
    CRLF, when a v2 header would be longer than `max_size`, and for malformed fields
    (addresses, ports, version, command, family, TLV lengths); ValueError for a `max_size`
    outside 16..65551.
    """
    if not 16 <= max_size <= V2_MAX_LIMIT:
        raise ValueError("max_size must be in 16..%d, not %r" % (V2_MAX_LIMIT, max_size))
    b = bytes(buf[:max(V1_MAX, max_size)])
    if b[:1] == b"P":
        return _parse_v1(b)
    if b[:1] == b"\r":
        return _parse_v2(b, max_size)
    if not b:
        return None
    raise ProxyProtocolError("not a PROXY protocol header (starts with %r)" % b[:8])


def _parse_v1(b: bytes) -> Optional[ProxyHeader]:
    n = min(len(b), len(_V1_SIG))
    if b[:n] != _V1_SIG[:n]:
        raise ProxyProtocolError("not a PROXY protocol header (starts with %r)" % b[:8])
    end = b.find(b"\r\n", 0, V1_MAX)
    if end < 0 and len(b) > 6:
        # Fail early on a wrong protocol word rather than after 107 bytes.
        word = b[6:].split(b" ", 1)[0].split(b"\r", 1)[0]
        if not any(w.startswith(word) for w in (b"TCP4", b"TCP6", b"UNKNOWN")):
            raise ProxyProtocolError("malformed PROXY v1 header: protocol %r is not TCP4, "
                                     "TCP6 or UNKNOWN" % word)
    if end < 0:
        head = b[:V1_MAX]
        bad = [c for c in head if not 0x20 <= c <= 0x7e and c != 0x0d]
        if bad or b"\r" in head[:-1]:
            raise ProxyProtocolError("PROXY v1 header contains a byte that is not printable "
                                     "ASCII: %r" % head[:V1_MAX])
        if len(b) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 header has no CRLF within %d bytes" % V1_MAX)
        return None
    line = b[:end]
    if any(not 0x20 <= c <= 0x7e for c in line):
        raise ProxyProtocolError("PROXY v1 header contains a byte that is not printable ASCII: "
                                 "%r" % line)
    text = line.decode("ascii")
    parts = text.split(" ")
    length = end + 2
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        # The spec: a receiver ignores whatever follows UNKNOWN on the line.
        return ProxyHeader(1, "PROXY", None, None, None, length)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError("malformed PROXY v1 header %r (expected 'PROXY TCP4|TCP6 "
                                 "SRC DST SPORT DPORT' or 'PROXY UNKNOWN')" % text)
    version = 4 if parts[1] == "TCP4" else 6
    src = (_v1_ip(parts[2], version, text), _v1_port(parts[4], text))
    dst = (_v1_ip(parts[3], version, text), _v1_port(parts[5], text))
    return ProxyHeader(1, "PROXY", "IPv%d" % version, src, dst, length)


def _v1_ip(s: str, version: int, text: str) -> str:
    try:
        ip = ipaddress.IPv4Address(s) if version == 4 else ipaddress.IPv6Address(s)
    except ValueError:
        raise ProxyProtocolError("bad IPv%d address %r in PROXY v1 header %r"
                                 % (version, s, text)) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise ProxyProtocolError("bad IPv6 address %r in PROXY v1 header %r" % (s, text))
    return str(ip)


def _v1_port(s: str, text: str) -> int:
    # 1 to 5 decimal digits, no sign, no leading zero (the spec's grammar), at most 65535.
    if not (s.isascii() and s.isdigit()) or len(s) > 5 or (len(s) > 1 and s[0] == "0") \
            or int(s) > 65535:
        raise ProxyProtocolError("bad port %r in PROXY v1 header %r" % (s, text))
    return int(s)


def _parse_v2(b: bytes, max_size: int) -> Optional[ProxyHeader]:
    n = min(len(b), len(_V2_SIG))
    if b[:n] != _V2_SIG[:n]:
        raise ProxyProtocolError("not a PROXY protocol header (starts with %r)" % b[:8])
    if len(b) < 16:
        return None
    ver_cmd, fam, alen = b[12], b[13], struct.unpack_from("!H", b, 14)[0]
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError("PROXY v2 header with version %d (only 2 exists)" % (ver_cmd >> 4))
    cmd = ver_cmd & 0xF
    if cmd > 1:
        raise ProxyProtocolError("PROXY v2 header with unknown command 0x%x" % cmd)
    family, transport = fam >> 4, fam & 0xF
    if family > 3 or transport > 2:
        raise ProxyProtocolError("PROXY v2 header with unknown address family/transport 0x%02x"
                                 % fam)
    total = 16 + alen
    if total > max_size:
        raise ProxyProtocolError("PROXY v2 header of %d bytes is over the %d-byte bound"
                                 % (total, max_size))
    if len(b) < total:
        return None
    body = b[16:total]
    need = _ADDR_LEN.get(family, 0)
    if len(body) < need:
        raise ProxyProtocolError("PROXY v2 header too short for its addresses (%d < %d bytes)"
                                 % (len(body), need))
    command = "PROXY" if cmd == 1 else "LOCAL"
    src = dst = None
    if cmd == 1 and family in (1, 2):
        size = 4 if family == 1 else 16
        cls = ipaddress.IPv4Address if family == 1 else ipaddress.IPv6Address
        sport, dport = struct.unpack_from("!HH", body, 2 * size)
        src = (str(cls(body[:size])), sport)
        dst = (str(cls(body[size:2 * size])), dport)
    tlvs = []
    i = need
    while i < len(body):
        if len(body) - i < 3:
            raise ProxyProtocolError("PROXY v2 header ends inside a TLV's type and length")
        t, ln = body[i], struct.unpack_from("!H", body, i + 1)[0]
        if i + 3 + ln > len(body):
            raise ProxyProtocolError("PROXY v2 TLV 0x%02x of %d bytes overruns the header"
                                     % (t, ln))
        tlvs.append((t, body[i + 3:i + 3 + ln]))
        i += 3 + ln
    return ProxyHeader(2, command, _FAMILY[family] if cmd == 1 else None, src, dst, total, tlvs)


# -- building headers ------------------------------------------------------------------------

def _addr(a: Optional[Address], what: str) -> Optional[Tuple[_IP, int]]:
    if a is None:
        return None
    try:
        host, port = a
    except (TypeError, ValueError):
        raise TypeError("%s must be (ip, port) or None, not %r" % (what, a)) from None
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError("%s port must be an int, not %r" % (what, port))
    if not 0 <= port <= 65535:
        raise ValueError("%s port must be in 0..65535, not %d" % (what, port))
    if not isinstance(host, str):
        raise TypeError("%s ip must be a str, not %r" % (what, host))
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])    # a scope id cannot be sent
    except ValueError:
        raise ValueError("%s must be an IP address, not %r" % (what, host)) from None
    return ip, port


def _same_family(s: Tuple[_IP, int], d: Tuple[_IP, int]
                 ) -> Tuple[Tuple[_IP, int], Tuple[_IP, int]]:
    """Both addresses in one family: an IPv4 one becomes IPv4-mapped IPv6 beside an IPv6 one,
    and a pair of IPv4-mapped ones is sent as IPv4."""
    (si, sp), (di, dp) = s, d
    if si.version == 6 and di.version == 6 and si.ipv4_mapped and di.ipv4_mapped:
        return (si.ipv4_mapped, sp), (di.ipv4_mapped, dp)
    if si.version != di.version:
        def v6(ip: _IP) -> _IP:
            return ip if ip.version == 6 else ipaddress.IPv6Address("::ffff:" + str(ip))
        return (v6(si), sp), (v6(di), dp)
    return s, d


def encode_v1(source: Optional[Address], destination: Optional[Address]) -> bytes:
    """The v1 (text) header for a connection from `source` to `destination`, each `(ip, port)`
    (ip a str; a scope id is dropped) or None.

    Returns bytes such as b"PROXY TCP4 192.0.2.1 203.0.113.5 51234 443\\r\\n"; "PROXY UNKNOWN\\r\\n"
    when either address is None (e.g. a unix socket). Addresses of different families are sent
    as TCP6 with the IPv4 one mapped (::ffff:a.b.c.d). Raises TypeError for a malformed address
    tuple, ValueError for a host that is not an IP literal or a port outside 0..65535.
    """
    s, d = _addr(source, "source"), _addr(destination, "destination")
    if s is None or d is None:
        return b"PROXY UNKNOWN\r\n"
    (si, sp), (di, dp) = _same_family(s, d)
    return ("PROXY TCP%d %s %s %d %d\r\n" % (si.version, si, di, sp, dp)).encode("ascii")


def encode_v2(source: Optional[Address], destination: Optional[Address], *,
              command: str = "PROXY", tlvs: Iterable[Tuple[int, bytes]] = ()) -> bytes:
    """The v2 (binary) header for a connection from `source` to `destination`, each `(ip, port)`
    or None.

    `command="LOCAL"` marks a connection the sender made itself (a health check): no addresses
    are sent. With "PROXY" and an address None, the family is "unspecified" (the receiver uses
    the real connection's addresses). `tlvs`: `(type, bytes)` pairs appended in order. Returns
    bytes. Raises TypeError/ValueError as encode_v1, ValueError for another command, a TLV type
    outside 0..255 or a header over 65551 bytes.
    """
    if command not in ("PROXY", "LOCAL"):
        raise ValueError("command must be 'PROXY' or 'LOCAL', not %r" % (command,))
    s, d = _addr(source, "source"), _addr(destination, "destination")
    ext = bytearray()
    for t, v in tlvs:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= 255:
            raise ValueError("TLV type must be an int in 0..255, not %r" % (t,))
        v = bytes(v)
        ext += struct.pack("!BH", t, len(v)) + v
    if command == "LOCAL" or s is None or d is None:
        fam, body = 0x00, b""
    else:
        (si, sp), (di, dp) = _same_family(s, d)
        fam = 0x11 if si.version == 4 else 0x21
        body = si.packed + di.packed + struct.pack("!HH", sp, dp)
    n = len(body) + len(ext)
    if n > 65535:
        raise ValueError("PROXY v2 header too large (%d bytes of addresses and TLVs)" % n)
    ver_cmd = 0x21 if command == "PROXY" else 0x20
    return _V2_SIG + struct.pack("!BBH", ver_cmd, fam, n) + body + bytes(ext)


from ._ppaccept import accept  # noqa: E402  (the listener wrapper; it uses parse above)
