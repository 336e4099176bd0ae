# UdpSocket: datagrams in batches (recvmmsg/sendmmsg where the platform has them).
#
# Reads take up to UDP_BATCH datagrams per system call into the loop's UDP slots; each becomes one
# `data(sock, buf, port, address)` call. Sends never queue: `send` returns False when the kernel
# refuses (and `drain` fires once it can take more). Recent peers' addresses come from a small
# per-socket cache (_udp_peers.pxi); the receive slots are the loop's _UdpArea (_recvbuf.pxi);
# udp_socket() makes the socket through _factories.pxi.

from libc.string cimport memcmp
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE

cdef enum:
    # Datagrams one socket may take per loop iteration (besides the loop's byte budget): a
    # flood of tiny datagrams must not starve the other sockets either.
    UDP_ITER_MAX = 1024

cdef enum:
    U_REFED = 1
    U_CONNECTED = 2
    U_DRAIN_OWED = 4
    U_CLOSED = 8


cdef class UdpSocket(_Handle):
    """A UDP socket, bound on creation (udp_socket()). Handlers: data(sock, buf, port, address),
    drain(sock), error(sock, exc), close(sock, err)."""

    def __cinit__(self):
        global _n_udp
        _n_udp += 1
        self.fd = -1

    def __dealloc__(self):
        global _n_udp
        cdef int i
        _n_udp -= 1
        for i in range(ADDR_CACHE):
            Py_XDECREF(self.cache[i].py_port)
            Py_XDECREF(self.cache[i].host)
            self.cache[i].py_port = NULL
            self.cache[i].host = NULL
        if self.fd >= 0:
            c_close(self.fd)

    cdef int _check_open(self) except -1:
        if self.uflags & U_CLOSED:
            raise OSError(_errno.EBADF, "the UDP socket is closed")
        return 0

    # -- events --

    cdef int _on_event(self, uint32_t ev) except -1:
        cdef object h
        if ev & self.mask & BS_READABLE:
            self._on_readable()
            if self.fd < 0:
                return 0
        if ev & self.mask & BS_WRITABLE:
            # The kernel has room again: writable interest served its purpose.
            if bs_poller_mod(&self.loop.poller, self.fd, <void *>self, self.mask, BS_READABLE) == 0:
                self.mask = BS_READABLE
            if self.uflags & U_DRAIN_OWED:
                self.uflags &= ~U_DRAIN_OWED
                h = self.on_drain
                if h is not None:
                    call_handler(self.loop, h, self, self.on_error, 0)
        return 0

    cdef int _on_readable(self) except -1:
        cdef Loop loop = self.loop
        cdef _UdpArea area
        cdef int n, i
        cdef Py_ssize_t budget = loop.read_budget, count = 0
        while True:
            area = loop.udp_rx
            n = bs_udp_recv_many(self.fd, area.slots, UDP_BATCH)
            loop.n_recv += 1
            if n < 0:
                if n == -EAGAIN or n == -EWOULDBLOCK:
                    return 0
                # A connected socket's ICMP errors (ECONNREFUSED: nobody listens at the peer's
                # port) arrive here. The socket stays usable: the error is reported, not fatal.
                return self._report(_oserror(-n))
            for i in range(n):
                budget -= area.slots[i].len
                self._deliver(area, i)
                if self.fd < 0:
                    return 0      # closed by a handler: the rest of the batch is dropped
            count += n
            # A short batch means the queue is empty (level-triggered polling reports more).
            if n < UDP_BATCH or budget <= 0 or count >= UDP_ITER_MAX:
                return 0

    cdef int _deliver(self, _UdpArea area, Py_ssize_t i) except -1:
        cdef bs_udp_in *slot = &area.slots[i]
        cdef Loop loop = self.loop
        cdef object h = self.on_data
        cdef _AddrEntry *e
        cdef object port, host, buf
        if h is None:
            return 0
        if self.fam == BS_AF_UNIX:
            port = host = None
        else:
            e = &self.cache[_cache_index(&slot.addr)]
            if (e.host != NULL and e.a.len == slot.addr.len and
                    memcmp(&e.a, &slot.addr, slot.addr.len) == 0):
                port = <object>e.py_port
                host = <object>e.host
            else:
                host, port = _addr_pair(&slot.addr)
                if host is not None:
                    _remember(e, &slot.addr, port, host)
        if self.binary_type == BT_BYTES:
            buf = PyBytes_FromStringAndSize(slot.buf, slot.len)
        elif self.binary_type == BT_BYTEARRAY:
            buf = PyByteArray_FromStringAndSize(slot.buf, slot.len)
        else:
            area.lent_off = slot.buf - area.buf
            area.lent = slot.len
            buf = PyMemoryView_FromObject(area)
            try:
                call_handler(loop, h, self, self.on_error, 3, buf, port, host)
            finally:
                try:
                    buf.release()
                except BufferError:
                    pass       # exported further (numpy.frombuffer): the area stays theirs
                if area.exports and loop.udp_rx is area:
                    loop.udp_rx = _UdpArea.__new__(_UdpArea)
            return 0
        call_handler(loop, h, self, self.on_error, 3, buf, port, host)
        return 0

    cdef int _report(self, object exc) except -1:
        if self.on_error is None:
            _unraisable(exc, self)
            return 0
        return call_handler(self.loop, self.on_error, self, None, 1, exc)

    cdef int _owe_drain(self) except -1:
        cdef int err
        self.uflags |= U_DRAIN_OWED
        if not (self.mask & BS_WRITABLE):
            err = -bs_poller_mod(&self.loop.poller, self.fd, <void *>self, self.mask,
                                 BS_READABLE | BS_WRITABLE)
            if err > 0:
                _raise_errno(err)
            self.mask = BS_READABLE | BS_WRITABLE
        return 0

    # -- sending --

    cdef const bs_addr *_dest(self, object port, object address, bs_addr *tmp) except NULL:
        """The sockaddr for (port, address): from the peer cache, else parsed into *tmp (and
        remembered when the text is the address's canonical form)."""
        cdef int iport, r
        cdef _AddrEntry *e
        if port is None or address is None:
            raise ValueError("send() on an unconnected UDP socket needs port and address")
        iport = _int_arg("port", port, 1, 65535)
        e = &self.cache[iport & (ADDR_CACHE - 1)]
        if e.host != NULL and e.port == iport and (e.host == <PyObject *>address or
                                                   <object>e.host == address):
            return &e.a
        b = _cstr("address", address)
        r = bs_addr_parse(b, iport, self.fam, tmp)
        if r == -_errno.EAFNOSUPPORT:
            raise ValueError("%r is an IPv6 address and this UDP socket is IPv4 (bind to '::' to "
                             "reach both)" % (address,))
        if r < 0:
            raise ValueError("address must be an IP address, not %r (resolve names first, e.g. "
                             "with socket.getaddrinfo)" % (address,))
        host, _ = _addr_pair(tmp)
        if host == address:
            _remember(e, tmp, port, address)
            return &e.a
        return tmp

    def send(self, data, port=None, address=None):
        """Send one datagram: to (port, address) on an unconnected socket, to the peer on a
        connected one (which takes neither). Returns True when the kernel took it, False when
        it would block (nothing is queued: `drain` fires once it can take more).
        Raises TypeError/ValueError for a bad argument, OSError for a refused send (EMSGSIZE: the
        datagram is too large; ConnectionRefusedError: an earlier datagram to a connected peer
        met a closed port) or a closed socket (EBADF)."""
        _check_thread(self.loop)
        cdef bs_addr tmp
        cdef const bs_addr *to = NULL
        cdef Py_buffer view
        cdef ssize_t r
        self._check_open()
        if self.uflags & U_CONNECTED:
            if port is not None or address is not None:
                raise ValueError("this UDP socket is connected: send(data) takes no port or "
                                 "address")
        else:
            to = self._dest(port, address, &tmp)
        if PyBytes_CheckExact(data):
            r = bs_udp_send(self.fd, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), to)
        else:
            if isinstance(data, str):
                raise TypeError("send() needs a bytes-like object, not str: encode it first")
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            r = bs_udp_send(self.fd, view.buf, view.len, to)
            PyBuffer_Release(&view)
        self.loop.n_send += 1
        if r >= 0:
            return True
        if r == -EAGAIN or r == -EWOULDBLOCK or r == -ENOBUFS:
            self._owe_drain()
            return False
        _raise_errno(<int>-r)

    def send_many(self, packets):
        """Send several datagrams with one sendmmsg where the platform has it: `packets` is an
        iterable of (data, port, address) on an unconnected socket, of data on a connected one.
        Every item is checked before anything is sent. Returns how many were sent, in order;
        fewer than all when the kernel refused the rest (`drain` then fires once it has room;
        an error for the first unsent one is raised by the next call). Raises as send() does
        when the first datagram fails."""
        _check_thread(self.loop)
        cdef Py_ssize_t n, i, k, nviews = 0
        cdef bs_udp_out *outs
        cdef bs_addr *addrs
        cdef Py_buffer *views
        cdef const bs_addr *d
        cdef int r
        cdef bint connected = self.uflags & U_CONNECTED
        cdef object item, payload
        self._check_open()
        if not isinstance(packets, (list, tuple)):
            packets = list(packets)
        n = len(packets)
        if n == 0:
            return 0
        outs = <bs_udp_out *>malloc(n * sizeof(bs_udp_out))
        addrs = <bs_addr *>malloc(1 if connected else n * sizeof(bs_addr))
        views = <Py_buffer *>malloc(n * sizeof(Py_buffer))
        try:
            if outs == NULL or addrs == NULL or views == NULL:
                raise MemoryError()
            for i in range(n):
                item = packets[i]
                if connected:
                    payload = item
                    outs[i].to = NULL
                else:
                    if not isinstance(item, tuple) or len(<tuple>item) != 3:
                        raise TypeError("send_many() on an unconnected UDP socket takes (data, "
                                        "port, address) tuples, not %r" % (item,))
                    payload = (<tuple>item)[0]
                    d = self._dest((<tuple>item)[1], (<tuple>item)[2], &addrs[i])
                    if d != &addrs[i]:
                        addrs[i] = d[0]      # a cache entry a later item may replace
                    outs[i].to = &addrs[i]
                if isinstance(payload, str):
                    raise TypeError("send_many() needs bytes-like objects, not str")
                # The list (or tuple) keeps every payload alive until the send is done.
                PyObject_GetBuffer(payload, &views[i], PyBUF_SIMPLE)
                nviews += 1
                outs[i].p = views[i].buf
                outs[i].n = views[i].len
            r = bs_udp_send_many(self.fd, outs, <int>n if n < INT_MAX else INT_MAX)
            self.loop.n_send += 1
        finally:
            for k in range(nviews):
                PyBuffer_Release(&views[k])
            free(outs)
            free(addrs)
            free(views)
        if r < 0:
            if r == -EAGAIN or r == -EWOULDBLOCK or r == -ENOBUFS:
                self._owe_drain()
                return 0
            _raise_errno(-r)
        if r < n:
            self._owe_drain()
        return r

    # -- lifecycle --

    def close(self):
        """Close the socket; `close(sock, None)` fires once. Idempotent."""
        _check_thread(self.loop)
        cdef Loop loop = self.loop
        cdef int fd = self.fd
        cdef object h
        if self.uflags & U_CLOSED:
            return
        self.uflags |= U_CLOSED
        self.uflags &= ~U_DRAIN_OWED
        if self.mask:
            bs_poller_del(&loop.poller, fd, self.mask)
            self.mask = 0
        if self.uflags & U_REFED:
            loop.refs -= 1
        loop._retire(self)
        try:
            h = self.on_close
            if h is not None:
                call_handler(loop, h, self, self.on_error, 1, None)
        finally:
            # The fd outlives the handler so the addresses still answer inside `close`.
            c_close(fd)
            self.fd = -1

    def reload(self, socket):
        """Swap the handler table (an object or a mapping of data/drain/error/close)."""
        _check_thread(self.loop)
        from ._udp_api import resolve_udp_handlers
        self.on_data, self.on_drain, self.on_error, self.on_close = resolve_udp_handlers(socket)

    def ref(self):
        """Make this socket keep run() going (the default). Returns the socket."""
        _check_thread(self.loop)
        if not (self.uflags & U_REFED):
            self.uflags |= U_REFED
            if not (self.uflags & U_CLOSED):
                self.loop.refs += 1
        return self

    def unref(self):
        """Let run() return while this socket is open. Returns the socket."""
        _check_thread(self.loop)
        if self.uflags & U_REFED:
            self.uflags &= ~U_REFED
            if not (self.uflags & U_CLOSED):
                self.loop.refs -= 1
        return self

    def fileno(self):
        """The OS descriptor (-1 once closed)."""
        return self.fd

    # -- socket options --

    def set_broadcast(self, bint on=True):
        """SO_BROADCAST: allow sending to broadcast addresses. Raises OSError on failure."""
        _check_thread(self.loop)
        self._check_open()
        _check_r(bs_udp_set_broadcast(self.fd, on))

    def set_ttl(self, ttl):
        """IP_TTL / IPV6_UNICAST_HOPS for unicast datagrams (1..255)."""
        _check_thread(self.loop)
        self._check_open()
        _check_r(bs_udp_set_ttl(self.fd, self.fam, _int_arg("ttl", ttl, 1, 255)))

    def set_multicast_ttl(self, ttl):
        """IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS (0..255; 1, the default, stays on the link)."""
        _check_thread(self.loop)
        self._check_open()
        _check_r(bs_udp_set_multicast_ttl(self.fd, self.fam, _int_arg("ttl", ttl, 0, 255)))

    def set_multicast_loopback(self, bint on=True):
        """IP_MULTICAST_LOOP / IPV6_MULTICAST_LOOP: whether this host's own members get our
        multicast datagrams."""
        _check_thread(self.loop)
        self._check_open()
        _check_r(bs_udp_set_multicast_loopback(self.fd, self.fam, on))

    def set_multicast_interface(self, interface_address):
        """IP_MULTICAST_IF / IPV6_MULTICAST_IF: the interface our multicast datagrams leave by
        (IPv4: its address, e.g. "127.0.0.1"; IPv6: its name or index). ValueError for a
        malformed address or unknown interface, OSError when the kernel refuses."""
        _check_thread(self.loop)
        cdef int r
        self._check_open()
        r = bs_udp_set_multicast_interface(self.fd, self.fam,
                                           _cstr("interface_address", interface_address))
        if r == -_errno.EINVAL or r == -_errno.ENXIO:
            raise ValueError("not an interface for this socket's family: %r" % (interface_address,))
        _check_r(r)

    def add_membership(self, multicast_address, interface_address=None):
        """Join a multicast group. interface_address: IPv4 - a local interface's address;
        IPv6 - an interface name or index; None lets the kernel choose. ValueError for a
        malformed address, OSError when the kernel refuses."""
        _check_thread(self.loop)
        self._membership(True, multicast_address, interface_address)

    def drop_membership(self, multicast_address, interface_address=None):
        """Leave a multicast group joined with add_membership() (same arguments)."""
        _check_thread(self.loop)
        self._membership(False, multicast_address, interface_address)

    def _membership(self, bint add, group, iface):
        cdef int r
        self._check_open()
        bg = _cstr("multicast_address", group)
        if iface is None:
            r = bs_udp_membership(self.fd, self.fam, add, bg, NULL)
        else:
            bi = _cstr("interface_address", iface)
            r = bs_udp_membership(self.fd, self.fam, add, bg, bi)
        if r == -_errno.EINVAL or r == -_errno.ENXIO:
            raise ValueError("not a multicast group / interface of this socket's family: %r, %r"
                             % (group, iface))
        _check_r(r)

    def setsockopt(self, int level, int option, value):
        """Set a socket option, as socket.socket.setsockopt (value: an int or bytes-like).
        Raises OSError with the kernel's errno (EBADF once closed), TypeError for another
        value type."""
        _check_thread(self.loop)
        self._check_open()
        _fd_setsockopt(self.fd, level, option, value)

    def getsockopt(self, int level, int option, int buflen=0):
        """Read a socket option, as socket.socket.getsockopt: an int, or with buflen (1..1024)
        the raw bytes. Raises OSError (EBADF once closed), ValueError for a bad buflen."""
        self._check_open()
        return _fd_getsockopt(self.fd, level, option, buflen)

    # -- properties --

    cdef object _name(self, bint peer):
        cdef bs_addr a
        cached = self._remote if peer else self._local
        if cached is not None:
            return cached
        if self.fd < 0 or self.fam == BS_AF_UNIX or (peer and not (self.uflags & U_CONNECTED)):
            return (None, None)
        if bs_udp_name(self.fd, peer, &a) < 0:
            return (None, None)
        res = _addr_pair(&a)
        if peer:
            self._remote = res
        else:
            self._local = res
        return res

    @property
    def hostname(self):
        """The hostname given to udp_socket()."""
        return self._hostname

    @property
    def port(self):
        """The bound local port."""
        return self._name(False)[1]

    @property
    def address(self):
        """The bound local end as (ip, port), as on Listener; None once unknown."""
        local = self._name(False)
        return None if local[0] is None else local

    @property
    def family(self):
        """"IPv4" or "IPv6"."""
        return {BS_AF_INET: "IPv4", BS_AF_INET6: "IPv6"}.get(self.fam)

    @property
    def remote_address(self):
        """The peer's address on a connected socket, else None."""
        return self._name(True)[0]

    @property
    def remote_port(self):
        """The peer's port on a connected socket, else None."""
        return self._name(True)[1]

    @property
    def closed(self):
        """True once close() was called."""
        return bool(self.uflags & U_CLOSED)

    @property
    def loop(self):
        """The Loop this socket belongs to."""
        return self.loop

    def __repr__(self):
        local = self._name(False)
        return "<bunsock.UdpSocket %s:%s%s>" % (local[0], local[1],
                                                " closed" if self.uflags & U_CLOSED else "")


cdef int _check_r(int r) except -1:
    if r < 0:
        _raise_errno(-r)
    return 0
