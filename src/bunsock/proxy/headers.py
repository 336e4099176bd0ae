"""Text the proxy parses or writes: HOST:PORT and upstream specs, and the PROXY protocol header
it sends upstream (haproxy.org/download/2.9/doc/proxy-protocol.txt). Reading PROXY headers from
a balancer in front is the library's bunsock.proxy_protocol."""
import ipaddress
import struct

__all__ = ["parse_hostport", "parse_upstream", "proxy_header_v1", "proxy_header_v2"]


def parse_hostport(text):
    """"host:port" or "[v6addr]:port" -> (host, port). Raises ValueError naming the text."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("expected [IPv6]:PORT, not %r" % text)
        port = rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT, not %r" % text)
    if not host:
        raise ValueError("missing host in %r" % text)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("bad port in %r" % text)
    return host, int(port)


def parse_upstream(text):
    """"HOST:PORT[,weight=N][,backup]" -> (host, port, weight, backup). Raises ValueError."""
    head, *opts = [p.strip() for p in text.split(",")]
    host, port = parse_hostport(head)
    weight, backup = 1, False
    for o in opts:
        if o == "backup":
            backup = True
        elif o.startswith("weight="):
            w = o[len("weight="):]
            if not w.isdigit() or not 1 <= int(w) <= 1000:
                raise ValueError("weight must be an integer in 1..1000 in %r" % text)
            weight = int(w)
        else:
            raise ValueError("unknown upstream option %r in %r (weight=N or backup)" % (o, text))
    return host, port, weight, backup


def proxy_header_v1(src, dst):
    """The text header: src and dst are (ip, port) of the client and of the address it reached."""
    if src[0] is None or dst[0] is None:
        return b"PROXY UNKNOWN\r\n"
    fam = "TCP6" if ":" in src[0] else "TCP4"
    if (":" in dst[0]) != (fam == "TCP6"):
        return b"PROXY UNKNOWN\r\n"        # v1 has one family for both addresses
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src[0], dst[0], src[1], dst[1])).encode()


_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_header_v2(src, dst):
    """The binary header (PROXY command, TCP over IPv4 or IPv6)."""
    if src[0] is None or dst[0] is None:
        return _V2_SIG + b"\x20\x00" + struct.pack("!H", 0)       # LOCAL, no addresses
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version != d.version:
        s = ipaddress.ip_address(s.ipv4_mapped or s) if s.version == 6 else s
        d = ipaddress.ip_address(d.ipv4_mapped or d) if d.version == 6 else d
    if s.version == 4 and d.version == 4:
        body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
        fam = 0x11
    else:
        s6 = s if s.version == 6 else ipaddress.IPv6Address("::ffff:" + str(s))
        d6 = d if d.version == 6 else ipaddress.IPv6Address("::ffff:" + str(d))
        body = s6.packed + d6.packed + struct.pack("!HH", src[1], dst[1])
        fam = 0x21
    return _V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body
