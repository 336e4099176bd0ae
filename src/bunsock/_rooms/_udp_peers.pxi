# UDP peer cache: a UdpSocket remembers its ADDR_CACHE most recent peers' sockaddrs with their
# (port, address) objects, both ways, so an echo or a reply to a known peer neither formats nor
# parses an address (UdpSocket._deliver and ._dest look entries up).

from libc.string cimport memcpy
from cpython.ref cimport Py_XDECREF

cdef enum:
    ADDR_CACHE = 8          # peers remembered per socket (indexed by the port's low bits)


cdef inline int _cache_index(const bs_addr *a) noexcept:
    # sin_port and sin6_port sit at byte 2 of the sockaddr in network order: byte 3 is the low
    # byte of the port, so peers on consecutive ports land in different entries.
    return (<const unsigned char *>a)[3] & (ADDR_CACHE - 1)


cdef int _remember(_AddrEntry *e, const bs_addr *a, object port, object host) except -1:
    Py_XDECREF(e.py_port)
    Py_XDECREF(e.host)
    memcpy(&e.a, a, sizeof(bs_addr))
    e.port = port
    Py_INCREF(port)
    Py_INCREF(host)
    e.py_port = <PyObject *>port
    e.host = <PyObject *>host
    return 0


cdef object _addr_pair(const bs_addr *a):
    """(address text, port) of a sockaddr, or (None, None) for one that is not IPv4/IPv6."""
    cdef char text[80]
    cdef int port = 0
    if bs_addr_text(a, text, sizeof(text), &port) <= 0:
        return None, None
    return text.decode(), port
