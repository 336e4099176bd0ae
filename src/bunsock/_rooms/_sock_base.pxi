# Socket state and lifecycle: creation, handler calls, poller interest, teardown and close.
# The write path (_sock_write.pxi), the events (_sock_read.pxi), the properties (_sock_info.pxi),
# the options (_sock_ctl.pxi) and the public API (_sock_api.pxi) extend this class in that order;
# Socket, the last, is what users hold. Also the _TlsHook interface (at the end).


cdef class _SockExt:
    """Rarely used per-socket state, kept off the Socket so an idle connection stays small."""


cdef inline void _touch(_SocketBase s, bint read) noexcept:
    """Activity: bytes read (read=True: also a new period for idle_timeout_mode="read"),
    written, or taken by the kernel from the backlog. A new idle period starts. The one place
    the stamps are written: the idle timer re-arms itself lazily from them (_on_timer), and
    `timeout` may fire again once the flag is clear."""
    s.last_active = <uint32_t>s.loop.now
    if read:
        s.last_read = s.last_active
        s.flags &= ~(F_IDLE_FIRED | F_READ_FIRED)
    else:
        s.flags &= ~F_IDLE_FIRED


cdef class _SocketBase(_Handle):

    def __cinit__(self):
        global _n_sockets
        _n_sockets += 1
        self.fd = -1
        bs_sink_init(&self.sink)
        bs_timer_init(&self.t, <void *>self)

    def __dealloc__(self):
        global _n_sockets
        _n_sockets -= 1
        bs_sink_free(&self.sink)

    cdef _SockExt _get_ext(self):
        if self.ext is None:
            self.ext = _SockExt.__new__(_SockExt)
        return self.ext

    # -- calling the handlers (the error policy itself is call_handler's) --

    cdef int _call(self, object h) except -1:
        return call_handler(self.loop, h, self, self.ctx.on_error, 0)

    cdef int _report(self, exc) except -1:
        """Route an exception (a handler's, or a fatal TLS error) to `error`, or to
        sys.unraisablehook when the table has none."""
        cdef object h = self.ctx.on_error
        if h is None:
            _unraisable(exc, self)
            return 0
        return call_handler(self.loop, h, self, None, 1, exc)

    cdef int _fire_open(self) except -1:
        """`open` fires (TLS: after the handshake, unless a `handshake` handler exists); from
        then on `close` fires exactly once."""
        cdef object h = self.ctx.on_open
        self.flags |= F_OPENED
        if (self.ctx.pause_on_connect and not (self.flags & F_PAUSED) and
                not ((self.flags & F_TLS) and (<_TlsHook>self.ext.tls).handshaking())):
            # pause_on_connect: `open` sees a paused socket; nothing is read until resume().
            # (A TLS handshake still to run needs to read: TLS pauses before `handshake`.)
            self.flags |= F_PAUSED
            if self.mask & BS_READABLE:
                self._set_mask(self.mask & ~BS_READABLE)
        if h is not None and call_handler(self.loop, h, self, self.ctx.on_error, 0):
            self._close(None)      # `open` raised: the socket closes (`close` still fires)
        return 0

    # -- poller interest --

    cdef int _set_mask(self, uint32_t mask) except -1:
        cdef int r
        if mask == self.mask and (self.flags & F_REGISTERED):
            return 0
        if self.flags & F_REGISTERED:
            r = bs_poller_mod(&self.loop.poller, self.fd, <void *>self, self.mask, mask)
        else:
            r = bs_poller_add(&self.loop.poller, self.fd, <void *>self, mask)
            if r == 0:
                self.flags |= F_REGISTERED
        if r < 0:
            return self._fail(-r)
        self.mask = mask
        return 0

    cdef int _deregister_quiet(self) except -1:
        if self.flags & F_REGISTERED:
            bs_poller_del(&self.loop.poller, self.fd, self.mask)
            self.flags &= ~F_REGISTERED
        return 0

    # -- closing --

    cdef int _teardown(self) except -1:
        """Everything close() does except calling the handler and closing the fd."""
        cdef Loop loop = self.loop
        self.state = ST_CLOSED
        self._deregister_quiet()
        self.mask = 0
        bs_wheel_cancel(&loop.wheel, &self.t)
        if self.ext is not None and self.ext.attempts is not None:
            _he_abort(<Socket>self)          # Happy Eyeballs attempts still connecting
        (<_SocketWriter>self)._drop_pending()
        if self.flags & F_REFED:
            loop.refs -= 1
        if self._listener is not None and (self.lprev is not None or self._listener.head is self):
            self._listener._unlink(self)
        if self.ext is not None and self.ext.groups is not None:
            _leave_groups(self)      # a closed socket is in no Group (_group.pxi)
        loop._retire(self)
        return 0

    cdef int _close(self, object err) except -1:
        cdef object partners
        if self.state == ST_CLOSED:
            return 0
        if not (self.flags & (F_PIPE_SRC | F_PIPE_DST)):
            return self._close_self(err)
        # A relayed socket: its pipes end first (bytes already read for the other side are kept
        # for it), then, after this socket's `close`, the other side follows (_relay.pxi).
        partners = _relay_detach(<Socket>self)
        try:
            if self.state != ST_CLOSED:      # (ending a pipe may have closed it already)
                self._close_self(err)
        finally:
            _relay_after_close(<Socket>self, partners, err)
        return 0

    cdef int _close_self(self, object err) except -1:
        cdef int fd = self.fd
        cdef object h
        self._teardown()
        if BS_DEBUG:
            (<_SocketWriter>self)._check()
        if self.flags & F_TLS:
            (<_TlsHook>self.ext.tls).closed(self, err)   # a running handshake hears it first
        if not (self.flags & F_OPENED):
            # Ended before `open` fired (while connecting, or during a TLS handshake that holds
            # `open` back): no `close`. A client hears why through `connect_error`; a close()
            # of the user's own while connecting is silent.
            if fd >= 0:
                c_close(fd)
            self.fd = -1
            if err is not None and (self.flags & F_CLIENT):
                self._fire_connect_error(err)
            return 0
        try:
            h = self.ctx.on_close
            if h is not None:
                call_handler(self.loop, h, self, self.ctx.on_error, 1, err)
        finally:
            # The fd outlives the handler so remote_address etc. still answer inside `close`.
            if fd >= 0:
                c_close(fd)
            self.fd = -1
        return 0

    cdef int _fail(self, int err) except -1:
        return self._close(_oserror(err))

    cdef int _fire_connect_error(self, exc) except -1:
        cdef object h = self.ctx.on_connect_error
        if h is None:
            _unraisable(exc, self)
            return 0
        return call_handler(self.loop, h, self, self.ctx.on_error, 1, exc)


cdef Socket _new_socket(Loop loop, _Ctx ctx, data, int fd, Listener listener):
    cdef Socket s = Socket.__new__(Socket)
    s.loop = loop
    s.ctx = ctx
    s.data = data
    s.fd = fd
    s._listener = listener
    s.flags = F_REFED
    loop.refs += 1
    _touch(s, True)
    if ctx.framing is not None:
        _frames_attach(s, <_FrameRule>ctx.framing)
    Py_INCREF(s)     # the loop's reference, dropped after the batch in which it closes
    return s


cdef int _accept_socket(Listener l, int fd) except -1:
    cdef Loop loop = l.loop
    cdef _Ctx ctx = l.ctx
    cdef Socket s = _new_socket(loop, ctx, l.data, fd, l)
    if bs_poller_add(&loop.poller, fd, <void *>s, BS_READABLE) < 0:
        # Registering fails only for lack of kernel memory; the peer sees the close.
        s._teardown()
        c_close(fd)
        s.fd = -1
        return 0
    s.state = ST_OPEN
    s.flags |= F_REGISTERED
    s.mask = BS_READABLE
    if l._unix is not None:
        s.flags |= F_UNIX
    elif not l.own_nodelay:        # (a TCP_NODELAY in listen(sockopts=) is inherited: it wins)
        bs_set_nodelay(fd, 1)      # as Bun: small writes go out now
    l._link(s)
    if ctx.idle_ms:
        s.timeout_ms = ctx.idle_ms
        if loop.wheel.count == 0:
            loop.now = bs_monotonic_ms()    # not kept current while no timer is armed
        _touch(s, True)
        bs_wheel_arm(&loop.wheel, &s.t, loop.now + ctx.idle_ms)
    if ctx.tls is not None:
        return _start_tls_from_ctx(s)      # (_connect.pxi)
    s._fire_open()
    return 0


# TLS hook (bunsock._tls.TLSState overrides every method; a socket's ext.tls is one of those)


cdef class _TlsHook:
    """What the loop calls on a socket's TLS layer instead of its plaintext paths."""

    cdef int feed(self, Socket s, char *p, Py_ssize_t n) except -1:
        return 0

    cdef int eof(self, Socket s) except -1:
        return 0

    cdef Py_ssize_t write(self, Socket s, const char *p, Py_ssize_t n, object keep) except -2:
        return -1

    cdef int closed(self, Socket s, object err) except -1:
        return 0

    cdef int before_fin(self, Socket s) except -1:
        return 1

    cdef int resumed(self, Socket s) except -1:
        return 0

    cdef Py_ssize_t buffered(self) noexcept:
        return 0

    cdef bint handshaking(self) noexcept:
        return False

    cdef int timed_out(self, Socket s) except -1:
        return 0

    cdef int seal_corked(self, Socket s) except -1:
        return 0

    cdef Py_ssize_t corked_len(self) noexcept:
        return 0
