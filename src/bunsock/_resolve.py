"""Name resolution, in one place: IP literals, listen()'s passive lookup, connect()'s lookup.

Addresses travel as (family code, text) with family codes from bunsock._loop; an IPv6 address
keeps its scope ("fe80::1%eth0"), without which a link-local address is unusable."""
import socket as _socket

from ._loop import FAMILY_INET, FAMILY_INET6

_FAMILIES = {_socket.AF_INET: FAMILY_INET, _socket.AF_INET6: FAMILY_INET6}


def check_host(name, value):
    """A hostname argument: a str without NUL bytes (the C layer would cut it there)."""
    if not isinstance(value, str):
        raise TypeError("%s must be a str, not %s" % (name, type(value).__name__))
    if "\0" in value:
        raise ValueError("%s must not contain a NUL byte: %r" % (name, value))
    return value


def literal(host):
    """(family, address) for an IP literal (IPv6 with an optional %scope), else None."""
    addr, _, scope = host.partition("%")
    for fam, code in ((_socket.AF_INET, FAMILY_INET), (_socket.AF_INET6, FAMILY_INET6)):
        try:
            _socket.inet_pton(fam, addr)
        except (OSError, ValueError):
            continue
        if scope and code != FAMILY_INET6:
            return None
        return code, host
    return None


def _text(fam, sa):
    ip = sa[0]
    if fam == _socket.AF_INET6 and sa[3] and "%" not in ip:
        ip = "%s%%%d" % (ip, sa[3])
    return ip


def interleave(addrs):
    """RFC 8305 section 4: alternate address families, starting with the resolver's first
    choice, so that Happy Eyeballs' second attempt uses the other family (a broken IPv6 path
    then costs one attempt delay, not one per IPv6 address)."""
    if len(addrs) < 3:
        return addrs
    first = [a for a in addrs if a[0] == addrs[0][0]]
    other = [a for a in addrs if a[0] != addrs[0][0]]
    out = []
    for i in range(max(len(first), len(other))):
        out.extend(x[i] for x in (first, other) if i < len(x))
    return out


def lookup(host, port, passive=False):
    """getaddrinfo(host, port) as [(family, address)], in the resolver's order (connect():
    families interleaved); OSError (with the resolver's errno and the name) when the name does
    not resolve."""
    try:
        infos = _socket.getaddrinfo(host, port, _socket.AF_UNSPEC, _socket.SOCK_STREAM, 0,
                                    _socket.AI_PASSIVE if passive else 0)
    except _socket.gaierror as e:
        raise OSError(e.errno, "cannot resolve %r: %s" % (host, e.strerror)) from None
    out = []
    for fam, _t, _p, _c, sa in infos:
        code = _FAMILIES.get(fam)
        if code is not None and (code, _text(fam, sa)) not in out:
            out.append((code, _text(fam, sa)))
    return out if passive else interleave(out)
