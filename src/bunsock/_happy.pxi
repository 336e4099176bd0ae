# Happy Eyeballs (RFC 8305) for connect() to a name with several addresses: the next address is
# tried `he_delay` seconds after the previous attempt started (or at once when it fails), without
# waiting for it to time out; the first to connect wins, the others are closed. Each attempt is
# its own fd registered with the poller (an _Attempt); the winner's fd is handed to the Socket,
# which then opens as after a single connect. connect(timeout=) (the socket's timer) bounds the
# whole race; closing the socket ends every attempt.


@cython.final
cdef class _Attempt(_Handle):
    """One address's non-blocking connect, racing the others for its Socket."""
    cdef Socket sock

    cdef int _on_event(self, uint32_t ev) except -1:
        cdef Socket s = self.sock
        cdef _SockExt ext = s.ext
        cdef int err = -bs_socket_error(self.fd)
        cdef int fd
        if s.state != ST_CONNECTING:
            return 0
        if err != 0:
            ext.last_exc = _oserror(err)
            self.discard()
            ext.attempts.remove(self)
            return _he_next(s)       # a failure starts the next address at once
        # The winner: its fd becomes the socket's; the other attempts are closed.
        fd = self.fd
        bs_poller_del(&s.loop.poller, fd, self.mask)
        self.fd = -1
        self.mask = 0
        ext.attempts.remove(self)
        s.loop._retire(self)
        self.sock = None
        _he_abort(s)
        s.fd = fd
        s.mask = 0
        s.flags &= ~F_REGISTERED
        return s._on_connected()

    cdef int discard(self) except -1:
        """Close this attempt's fd and drop the poller's reference to it."""
        if self.fd >= 0:
            bs_poller_del(&self.loop.poller, self.fd, self.mask)
            c_close(self.fd)
            self.fd = -1
            self.mask = 0
            self.loop._retire(self)
        self.sock = None
        return 0

    cdef int setopts(self, tuple opts) except -1:
        cdef int r
        if self.fd >= 0:
            for level, name, value in opts:
                r = bs_setsockopt(self.fd, level, name, PyBytes_AS_STRING(value),
                                  <unsigned int>PyBytes_GET_SIZE(value))
                if r < 0:
                    _raise_errno(-r)
        return 0


cdef int _he_next(Socket s) except -1:
    """Start the next address's attempt (arming the delay before the one after it); when no
    address is left and no attempt is still running, the connect has failed."""
    cdef _SockExt ext = s.ext
    cdef Loop loop = s.loop
    cdef _Attempt a
    cdef int fd, in_progress = 0
    if ext.he_timer is not None:
        ext.he_timer.cancel()
        ext.he_timer = None
    if ext.attempts is None:
        ext.attempts = []
    while s.state == ST_CONNECTING and ext.addr_index < len(ext.addrs):
        family, ip = ext.addrs[ext.addr_index]
        ext.addr_index += 1
        fd = _start_connect_tcp(ext, family, ip, &in_progress)
        if fd < 0:
            ext.last_exc = _oserror(-fd)
            continue
        a = _Attempt.__new__(_Attempt)
        a.loop = loop
        a.sock = s
        a.fd = fd
        r = bs_poller_add(&loop.poller, fd, <void *>a, BS_WRITABLE)
        if r < 0:
            ext.last_exc = _oserror(-r)
            c_close(fd)
            a.fd = -1
            continue
        a.mask = BS_WRITABLE
        Py_INCREF(a)          # the poller's reference (loop._retire drops it)
        ext.attempts.append(a)
        if ext.addr_index < len(ext.addrs):
            # Unreferenced: the connecting Socket already keeps run() going.
            ext.he_timer = loop.call_later(ext.he_delay, _he_fire, s)
            ext.he_timer.unref()
        return 0
    if s.state == ST_CONNECTING and not ext.attempts:
        s._connect_failed(ext.last_exc if ext.last_exc is not None else
                          OSError(_errno.ECONNREFUSED, "connection refused"))
    return 0


def _he_fire(Socket s):
    """The delay passed without a winner: start the next address alongside the running ones."""
    if s.state == ST_CONNECTING and s.ext is not None:
        s.ext.he_timer = None
        _he_next(s)


cdef int _he_abort(Socket s) except -1:
    """End the race: cancel the delay and close every attempt still connecting."""
    cdef _SockExt ext = s.ext
    if ext.he_timer is not None:
        ext.he_timer.cancel()
        ext.he_timer = None
    attempts = ext.attempts
    ext.attempts = None
    if attempts:
        for a in attempts:
            (<_Attempt>a).discard()
    return 0
