# Socket options: the lists applied before bind()/connect() (listen/connect sockopts= and the named
# conveniences), the options bunsock names per platform, and TCP statistics (tcp_info()).

# Names of the options the Python API offers by name, in csrc/sockopt.h's order. Each maps to
# (level, option) on this platform, or None where the platform has no such option.
_NAMED_OPTS = ("send_buffer_size", "recv_buffer_size", "keepalive", "keepidle", "keepintvl",
               "keepcnt", "user_timeout", "fastopen", "fastopen_connect", "defer_accept",
               "freebind", "transparent", "mark")


def _named_sockopts():
    cdef int i, level = 0, name = 0
    out = {}
    for i in range(BS_OPT_COUNT):
        out[_NAMED_OPTS[i]] = ((level, name) if bs_named_sockopt(i, &level, &name) == 0
                               else None)
    return out


NAMED_SOCKOPTS = _named_sockopts()


@cython.final
cdef class _OptList:
    """(level, option, bytes value) triples as the C array the socket calls take. The bytes
    objects stay referenced here for as long as the array points into them."""
    cdef bs_sockopt *opts
    cdef int n
    cdef tuple values
    cdef tuple items          # ((level, option, bytes), ...) as given

    def __dealloc__(self):
        free(self.opts)


cdef inline const bs_sockopt *_opts_of(_OptList o):
    """The C array for the socket calls: NULL (with a count of 0) when there are no options."""
    return NULL if o is None else o.opts


cdef inline int _nopts_of(_OptList o):
    return 0 if o is None else o.n


cdef extern from "<netinet/in.h>":
    const int IPPROTO_TCP

cdef extern from "<netinet/tcp.h>":
    const int TCP_NODELAY


cdef bint _sets_nodelay(object opts) noexcept:
    """opts (an _OptList or None) chooses TCP_NODELAY itself: bunsock's default (on, as Bun)
    must not overwrite it when the connection opens (docs/API.md: the user's options win)."""
    cdef _OptList o
    if opts is None:
        return False
    o = <_OptList>opts
    for level, name, _value in o.items:
        if level == IPPROTO_TCP and name == TCP_NODELAY:
            return True
    return False


cdef _OptList _opt_list(object items):
    """items: a sequence of (level, option, bytes) already checked by bunsock._api; None or an
    empty sequence gives None (no options)."""
    cdef _OptList o
    cdef Py_ssize_t i, n
    cdef bytes v
    if not items:
        return None
    n = len(items)
    o = _OptList.__new__(_OptList)
    o.opts = <bs_sockopt *>malloc(n * sizeof(bs_sockopt))
    if o.opts == NULL:
        raise MemoryError()
    o.items = tuple((int(it[0]), int(it[1]), bytes(it[2])) for it in items)
    o.values = tuple(it[2] for it in o.items)
    for i in range(n):
        v = o.values[i]
        o.opts[i].level = o.items[i][0]
        o.opts[i].name = o.items[i][1]
        o.opts[i].value = PyBytes_AS_STRING(v)
        o.opts[i].len = <unsigned int>PyBytes_GET_SIZE(v)
    o.n = <int>n
    return o


def _probe_sockopts(int family, items):
    """Apply the options to a throwaway socket of `family`: connect() reports a bad option (an
    unknown one, EPERM for IP_TRANSPARENT...) synchronously although its socket is made later."""
    cdef _OptList o = _opt_list(items)
    cdef int r
    if o is not None:
        r = bs_probe_sockopts(family, o.opts, o.n)
        if r < 0:
            _raise_errno(-r)


cdef object _tcp_stat(int fd):
    """The kernel's TCP statistics for fd as a TcpInfo, or raise OSError."""
    cdef bs_tcpstat st
    cdef int r = bs_tcp_stat(fd, &st)
    if r < 0:
        _raise_errno(-r)
    from ._sockinfo import TcpInfo
    return TcpInfo(st.rtt_us / 1e6, st.rttvar_us / 1e6, st.retransmits, st.cwnd, st.unacked,
                   st.delivery_rate if st.has_delivery_rate else None)


cdef bytes _opt_value(object value):
    """A setsockopt value: an int (bool included) as a C int, or a bytes-like object as is."""
    if isinstance(value, int):
        if not -2 ** 31 <= value < 2 ** 31:
            raise ValueError("socket option value %d does not fit a C int" % value)
        return _struct.pack("i", value)
    if isinstance(value, str):
        raise TypeError("socket option value must be an int or bytes-like, not str")
    try:
        return bytes(memoryview(value))
    except TypeError:
        raise TypeError("socket option value must be an int or bytes-like, not %s"
                        % type(value).__name__) from None


cdef tuple _named(str what, int which):
    """(level, option) of a named option, or OSError(ENOPROTOOPT) where this platform lacks it."""
    cdef int level = 0, name = 0
    if bs_named_sockopt(which, &level, &name) < 0:
        raise OSError(_errno.ENOPROTOOPT, "%s is not available on this platform" % what)
    return (level, name)


cdef int _fd_setopts(int fd, tuple opts) except -1:
    """Apply ((level, option, bytes), ...) to a live descriptor now; OSError on a refusal."""
    cdef int r
    for level, name, value in opts:
        r = bs_setsockopt(fd, level, name, PyBytes_AS_STRING(value),
                          <unsigned int>PyBytes_GET_SIZE(value))
        if r < 0:
            _raise_errno(-r)
    return 0


cdef int _fd_setsockopt(int fd, int level, int option, object value) except -1:
    """setsockopt() on a live descriptor (UdpSocket.setsockopt)."""
    cdef bytes v = _opt_value(value)
    cdef int r = bs_setsockopt(fd, level, option, PyBytes_AS_STRING(v),
                               <unsigned int>PyBytes_GET_SIZE(v))
    if r < 0:
        _raise_errno(-r)
    return 0


cdef object _fd_getsockopt(int fd, int level, int option, int buflen):
    """getsockopt() on a live descriptor: an int, or with buflen > 0 the raw bytes."""
    cdef char buf[1024]
    cdef unsigned int n
    cdef int r
    _int_arg("buflen", buflen, 0, 1024)
    n = buflen if buflen else sizeof(int)
    r = bs_getsockopt(fd, level, option, buf, &n)
    if r < 0:
        _raise_errno(-r)
    if buflen:
        return PyBytes_FromStringAndSize(buf, n)
    return (<int *>buf)[0]
