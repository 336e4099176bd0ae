# Socket events: readiness from the poller (read, EOF; writable goes to the write room; a connect
# completing to _connect.pxi), the idle timer.


cdef class _SocketReader(_SocketWriter):

    cdef int _on_event(self, uint32_t ev) except -1:
        cdef uint32_t handled = ev & self.mask
        if self.state == ST_CONNECTING:
            if ev & (BS_WRITABLE | BS_HANGUP):
                return _on_connected(<Socket>self)      # (_connect.pxi)
            return 0
        if handled & BS_READABLE:
            _SocketReader._on_readable(self)
            if self.fd < 0 or self.state == ST_CLOSED:
                return 0
        if handled & BS_WRITABLE:
            _SocketWriter._on_writable(self)      # the write room's (_sock_write.pxi)
        elif (ev & BS_HANGUP) and not (handled & BS_READABLE):
            # A hang-up on a paused socket with nothing to write: level-triggered HUP would be
            # reported on every wait, so step out of the poller until resume() or a write.
            self._set_mask(0)
            if self.mask == 0:
                self._deregister_quiet()
        return 0

    cdef int _on_readable(self) except -1:
        if self.flags & F_PIPE_SRC:
            return _relay_readable(<Socket>self)      # the same loop, with the relay's chunks
        return _read_loop(self, <_ToHandlers>0)

    cdef int _deliver(self, Py_ssize_t n) except -1:
        """Hand the first n bytes of the loop's receive buffer to `data` (plaintext read, or
        what TLS decrypted there), as the socket's binary_type; its writes are corked."""
        return _deliver(self, n)

    cdef int _on_eof(self) except -1:
        cdef object h
        self.flags |= F_EOF
        # EOF stays readable forever under level triggering.
        self._set_mask(self.mask & ~BS_READABLE)
        if self.state == ST_CLOSED:
            return 0
        if self.flags & F_TLS:
            (<_TlsHook>self.ext.tls).eof(self)
            if self.state == ST_CLOSED:
                return 0
        if self.flags & F_PIPE_SRC:
            return _relay_eof(<Socket>self)      # the FIN goes on to the destination
        if (self.flags & F_FRAMED) and _frames_eof(<Socket>self):
            return 0      # held messages wait for resume(), or EOF cut one (FramingError)
        h = self.ctx.on_end
        if h is not None:
            self._call(h)
            if self.state == ST_CLOSED:
                return 0
        if self.flags & F_SHUT_WR:
            return self._close(None)
        if not self.ctx.allow_half_open:
            self._end()
        return 0

    cdef int _on_timer(self) except -1:
        cdef Loop loop = self.loop
        cdef uint32_t idle
        cdef uint32_t fired = F_IDLE_FIRED
        cdef object h
        if self.state == ST_CONNECTING:
            return _connect_failed(<Socket>self, _oserror(_errno.ETIMEDOUT))
        if self.state == ST_CLOSED:
            return 0
        if (self.flags & F_TLS) and (<_TlsHook>self.ext.tls).handshaking():
            # A stalled handshake ends here, however it is timed (TLS re-arms the idle
            # timeout once it completes).
            return (<_TlsHook>self.ext.tls).timed_out(self)
        if self.timeout_ms == 0:
            return 0
        if self.ctx.idle_read:
            # Only inbound bytes count: the socket's own writes do not keep it alive.
            idle = <uint32_t>loop.now - self.last_read
            fired = F_READ_FIRED
        else:
            idle = <uint32_t>loop.now - self.last_active
        if idle < self.timeout_ms:
            # Activity restarted the period; re-arming lazily here keeps the I/O path to one store.
            bs_wheel_arm(&loop.wheel, &self.t, loop.now + (self.timeout_ms - idle))
            return 0
        bs_wheel_arm(&loop.wheel, &self.t, loop.now + self.timeout_ms)
        if self.flags & fired:
            return 0      # once per idle period
        self.flags |= fired
        h = self.ctx.on_timeout
        if h is None:
            return self._close(_oserror(_errno.ETIMEDOUT))
        return self._call(h)

    cdef int _arm_idle(self) except -1:
        """(Re)start the idle timeout period now, or cancel the timer when there is none."""
        cdef Loop loop = self.loop
        if self.timeout_ms == 0:
            bs_wheel_cancel(&loop.wheel, &self.t)
            return 0
        loop._arm(&self.t, self.timeout_ms / 1000.0)
        _touch(self, True)
        return 0


cdef inline int _deliver(_SocketReader self, Py_ssize_t n) except -1:
    # _SocketReader._deliver, inline into the read loop: the common case (bytes to a `data`
    # handler) here, the others (a relay, framing, bytearray, memoryview, no handler) out of
    # line. This is
    # _call_handler spelled out with borrowed references where they are safe (the loop outlives
    # its sockets); the function and the object it is bound to are held, since the handler may
    # reload() the table during the call, and only a handler that raised reads the table again.
    cdef _Ctx ctx = self.ctx
    cdef object fn = ctx.data_fn
    cdef object bound = ctx.data_self
    cdef PyObject *lp = <PyObject *>self.loop
    cdef object buf
    if ctx.binary_type != BT_BYTES or fn is None or (self.flags & (F_PIPE_SRC | F_FRAMED)):
        return _deliver_other(self, n)
    buf = PyBytes_FromStringAndSize((<Loop>lp).rbuf, n)
    (<Loop>lp).depth += 1
    if bs_call_handler(<PyObject *>fn, NULL if bound is None else <PyObject *>bound,
                       <PyObject *>self, 1, <PyObject *>buf, NULL, NULL) < 0:
        return _handler_raised(<Loop>lp, self.ctx.on_data, self, self.ctx.on_error)
    return _leave_callback(<Loop>lp)


cdef int _deliver_other(_SocketReader self, Py_ssize_t n) except -1:
    cdef Loop loop = self.loop
    cdef _Ctx ctx = self.ctx
    cdef object fn = ctx.data_fn
    cdef object bound = ctx.data_self
    cdef PyObject *pself = NULL if bound is None else <PyObject *>bound
    cdef object buf
    if self.flags & (F_PIPE_SRC | F_FRAMED):
        if self.flags & F_PIPE_SRC:      # what TLS decrypted for a relay
            return _relay_put(self.ext.pipe_out, loop.rbuf, n)
        return _frames_feed(<Socket>self, loop.rbuf, n)      # whole messages (_framing.pxi)
    if fn is None:
        return 0
    if ctx.binary_type == BT_BYTES:
        buf = PyBytes_FromStringAndSize(loop.rbuf, n)
    elif ctx.binary_type == BT_BYTEARRAY:
        buf = PyByteArray_FromStringAndSize(loop.rbuf, n)
    else:
        buf = _lend_view(loop, n)
        try:
            _call_handler(loop, <PyObject *>fn, pself, ctx.on_data, self, ctx.on_error, 1, buf,
                          None, None)
        finally:
            _return_view(loop, buf)
        return 0
    _call_handler(loop, <PyObject *>fn, pself, ctx.on_data, self, ctx.on_error, 1, buf, None,
                  None)
    return 0


# The read loop's two ways with its chunks, as types: Cython compiles _read_loop once per way (a
# fused type), so the socket's copy has no relay test in it and no call is added to either.
ctypedef char _ToHandlers       # recv into the loop's buffer, then TLS or `data`
ctypedef short _ToRelay         # a relay's source: _relay_read picks the chunk's way
ctypedef fused _ChunkWay:
    _ToHandlers
    _ToRelay


cdef int _read_loop(_SocketReader self, _ChunkWay way) except -1:
    """The one read loop, for a socket and for a relay's source alike: read until the kernel
    queue is empty, the read budget is spent, or the socket stops reading (closed, paused, EOF,
    its relay holding it, or it entered or left a relay); EOF, EAGAIN and errors are interpreted
    here only. What a chunk becomes differs: bytes recv'd into the loop's buffer go to TLS or
    `data` (a relay's source: to its destination, _relay_put; TLS's plaintext gets there through
    _deliver_other); a relay may instead splice the chunk or recv it straight into its
    destination's sink (_relay_read).
    `way` only picks the compiled copy (_ChunkWay); its value is unused."""
    # The loop, borrowed: it outlives its sockets (a Loop local costs a reference).
    cdef PyObject *lp = <PyObject *>self.loop
    cdef ssize_t n
    cdef Py_ssize_t want
    cdef Py_ssize_t budget = (<Loop>lp).read_budget
    cdef uint32_t was = F_PIPE_SRC if _ChunkWay is _ToRelay else 0
    while True:
        if _ChunkWay is _ToRelay:
            # The relay moves this chunk itself (n = -EAGAIN: it holds its source), or asks for
            # a recv into the buffer.
            n = _relay_read(<Socket>self, &want)
        else:
            n = RELAY_RECV
            want = (<Loop>lp).rbuf_size
        if n == RELAY_RECV:
            n = bs_recv(self.fd, (<Loop>lp).rbuf, want)
            (<Loop>lp).n_recv += 1
            if n > 0:
                self.bytes_read += n
                _touch(self, True)
                if self.flags & F_TLS:
                    (<_TlsHook>self.ext.tls).feed(self, (<Loop>lp).rbuf, n)
                elif _ChunkWay is _ToRelay:
                    _relay_put(self.ext.pipe_out, (<Loop>lp).rbuf, n)
                else:
                    _deliver(self, n)
        if n > 0:
            # (F_EOF: TLS saw close_notify and ran _on_eof. The xor turns "entered or left a
            # relay" into one more bit of the same test.)
            if self.state == ST_CLOSED or ((self.flags ^ was) &
                                           (F_PAUSED | F_EOF | F_PIPE_HELD | F_PIPE_SRC)):
                return 0
            # A short read means the kernel queue is empty; level-triggered polling reports any
            # later bytes, so the EAGAIN read that would confirm it is skipped.
            if n < want:
                return 0
            budget -= n
            if budget <= 0:
                return 0
        elif n == 0:
            return self._on_eof()      # (a relay's source: _relay_eof forwards the FIN)
        elif n == -EAGAIN or n == -EWOULDBLOCK:
            return 0
        else:
            return self._fail(<int>-n)
