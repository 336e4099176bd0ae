# The write path: one state machine for plaintext and TLS (docs/WRITE_PATH.md draws it).
#
# Bytes a socket accepted but the kernel has not taken are `pending`: one bytes object held while
# corked (`cork_obj`, not copied) or the C ring-buffer sink. Two facts, kept apart:
#   F_BACKED_UP   the kernel refused bytes (or the socket is not open yet): the sink holds a
#                 backlog, writable interest is armed, buffered_amount reports it;
#   F_DRAIN_OWED  a write could not complete at once (backlog, or high_water_mark refused
#                 bytes), or a relay waits to restart its source: the writable event delivers
#                 it (`drain`, or the relay's restart) once nothing is pending.
# Corked bytes that no send has refused yet are neither: they go out when the handler returns.
# This room is the only code that writes those two flags and the writable interest: `_settle()`
# decides the interest after every write and flush, and the relay, TLS and Group ask it
# (`_owe_drain`, `_backlog_grew`, `_pipe_ended`). `_held()` is the one measure of what a socket
# holds and `_hwm_room()` the one place that applies high_water_mark (docs/WRITE_PATH.md).


cdef class _CorkCtx:

    def __enter__(self):
        self.s.cork_depth += 1
        return self.s

    def __exit__(self, *exc):
        cdef Socket s = self.s
        s.cork_depth -= 1
        if s.cork_depth == 0 and s.loop.depth == 0 and s.state != ST_CLOSED:
            s._flush()          # as at a handler's return (inside one, that return flushes)
        return False


cdef inline bint _settled(_SocketWriter s) noexcept:
    """Nothing pending, no writable interest, nothing owed or ending: _settle has nothing to
    decide (the state after nearly every flush)."""
    return (s.sink.len == 0 and s.cork_obj is None and not (s.mask & BS_WRITABLE) and
            not (s.flags & (F_BACKED_UP | F_DRAIN_OWED | F_ENDING | F_PIPE_DST)))


cdef class _SocketWriter(_SocketBase):

    cdef Py_ssize_t _pending(self) noexcept:
        if self.cork_obj is not None:
            return self.sink.len + PyBytes_GET_SIZE(self.cork_obj)
        return self.sink.len

    cdef Py_ssize_t _tls_held(self) noexcept:
        """Plaintext TLS holds back (written before the handshake finished)."""
        return (<_TlsHook>self.ext.tls).buffered() if self.flags & F_TLS else 0

    cdef Py_ssize_t _held(self) noexcept:
        """Every byte accepted for this socket that the kernel has not taken: pending (sink or
        cork), plus, with TLS, plaintext held for the handshake and plaintext a handler corked
        (not sealed yet). high_water_mark, Group and the relay all measure this."""
        cdef Py_ssize_t n = _SocketWriter._pending(self)
        cdef _TlsHook t
        if self.flags & F_TLS:
            t = <_TlsHook>self.ext.tls
            n += t.buffered() + t.corked_len()
        return n

    cdef Py_ssize_t _backlog(self) noexcept:
        """What buffered_amount reports: _held() without what is only corked (a backlog the
        kernel refused, plus the plaintext TLS holds for its handshake)."""
        cdef Py_ssize_t n = self._pending() if self.flags & F_BACKED_UP else 0
        return n + self._tls_held()

    cdef Py_ssize_t _hwm_room(self, Py_ssize_t n) noexcept:
        """The one place high_water_mark is applied: how many of n more bytes this socket may
        hold (on top of _held()). Pure: the caller owes the drain when it is short (_owe_drain).
        - no mark, or a relay's destination (the relay keeps its own limits): all n;
        - nothing held and a Group message (F_WHOLE) or TLS plaintext (marked before sealing,
          when what the kernel will take is unknown): all n, so a write always makes progress;
        - a Group message otherwise: all n if it fits under the mark, else none (never a torn
          message);
        - otherwise (plaintext the kernel refused, TLS plaintext) up to the mark."""
        cdef Py_ssize_t hwm = self.ctx.hwm, used
        if hwm < 0 or (self.flags & F_PIPE_DST):
            return n
        used = self._held()
        if used == 0 and (self.flags & (F_WHOLE | F_TLS)):
            return n
        if self.flags & F_WHOLE:
            return n if used + n <= hwm else 0
        if used >= hwm:
            return 0
        return n if n < hwm - used else hwm - used

    cdef bint _whole_room(self, Py_ssize_t n) except -1:
        """Whether one message of n bytes may go whole (Group's and write_frame's rule: never a
        torn message, _hwm_room with F_WHOLE). When it may not, a drain is owed: the sender
        learns when the backlog is gone and can resync this peer."""
        cdef Py_ssize_t room
        self.flags |= F_WHOLE
        room = _SocketWriter._hwm_room(self, n)
        self.flags &= ~F_WHOLE
        if room >= n:
            return 1
        _SocketWriter._owe_drain(self)
        return 0

    cdef bint _wants_writable(self):
        """Writable interest is needed while the kernel refused bytes (a backlog), while a
        relay's kernel pipe holds bytes for this socket, and while a drain is owed that can be
        delivered (not while TLS holds plaintext for its handshake: the flush that releases it
        settles again)."""
        if self.flags & F_BACKED_UP:
            return True
        if (self.flags & F_PIPE_DST) and self.ext.pipe_in.inpipe:
            return True
        return (self.flags & F_DRAIN_OWED) != 0 and self._tls_held() == 0

    cdef int _check(self) except -1:
        """BUNSOCK_DEBUG builds: the write path's invariants, after every settle and at
        teardown (docs/WRITE_PATH.md lists them)."""
        if self.cork_obj is not None and self.sink.len:
            raise AssertionError("corked object and a non-empty sink at once")
        if self.state == ST_CLOSED:
            if (self._pending() or self.mask or
                    (self.flags & (F_BACKED_UP | F_DRAIN_OWED | F_LWM_FIRED | F_SPARE))):
                raise AssertionError("closed socket with pending bytes, interest or drain")
            if self.flags & (F_PIPE_SRC | F_PIPE_DST):
                raise AssertionError("closed socket still in a relay")
            return 0
        if self.state == ST_OPEN:
            if (self.flags & F_BACKED_UP) and not self._pending():
                raise AssertionError("backed up with nothing pending")
            if self._wants_writable() and not (self.mask & BS_WRITABLE):
                raise AssertionError("backlog, relay bytes or an owed drain without writable "
                                     "interest")
        if (self.flags & F_CORKED) and self.loop.depth == 0 and self.loop.cork_head is None:
            raise AssertionError("on the cork list outside any handler")
        return 0

    cdef int _spill_cork(self) except -1:
        cdef object o = self.cork_obj
        if o is not None:
            self.cork_obj = None
            if bs_sink_append(&self.sink, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o)) < 0:
                raise MemoryError()
        return 0

    cdef int _settle(self) except -1:
        """After a write, a flush or a writable event: the backlog ends when nothing is
        pending (then the FIN that end() asked for goes out), and writable interest is armed
        exactly while _wants_writable(). Corked bytes are never taken for a backlog here:
        only a refused send makes one (_buffer, _flush)."""
        cdef uint32_t want
        if self.state != ST_OPEN or _settled(self):
            return 0      # everything went out and nothing was owed: the common case, decided
        if not _SocketWriter._pending(self):
            self.flags &= ~F_BACKED_UP
            if (self.flags & F_ENDING) and not (self.flags & F_SHUT_WR):
                self._finish_end()
                if self.state != ST_OPEN:
                    return 0
        want = BS_WRITABLE if self._wants_writable() else 0
        if (self.mask & BS_WRITABLE) != want:
            self._set_mask((self.mask & ~BS_WRITABLE) | want)
        if BS_DEBUG:
            self._check()
        return 0

    cdef int _owe_drain(self) except -1:
        """Someone waits for this socket to take bytes: a write high_water_mark refused in part
        or whole (a short write(), a Group member skipped, a TLS write cut), or a relay holding
        its source. Delivered by the writable event once nothing is pending; a new episode."""
        self.flags = (self.flags | F_DRAIN_OWED) & ~F_LWM_FIRED
        return self._settle()

    cdef int _backlog_grew(self) except -1:
        """Bytes went into the sink behind refused ones without a send (the relay reads
        straight into a backed-up sink, or spills its kernel pipe there): a backlog like any."""
        if self.sink.len:
            self.flags = (self.flags | F_BACKED_UP | F_DRAIN_OWED) & ~F_LWM_FIRED
        return self._settle()

    cdef int _pipe_ended(self) except -1:
        """The relay into this socket ended (unpipe(), or its source closed). The drain owed
        was the relay's (no `drain` for relayed bytes, docs/API.md §14); what it left in the
        sink still goes out."""
        self.flags &= ~(F_DRAIN_OWED | F_LWM_FIRED)
        return self._settle()

    cdef int _drop_pending(self) except -1:
        """shutdown() or close: bytes not in the kernel yet are dropped, and so is any drain
        owed for them."""
        bs_sink_free(&self.sink)
        if self.flags & F_SPARE:
            _spare_drop(self)
        self.cork_obj = None
        self.flags &= ~(F_BACKED_UP | F_DRAIN_OWED | F_LWM_FIRED)
        return 0

    cdef int _on_writable(self) except -1:
        """The writable event: the backlog goes to the kernel (a relay's kernel pipe after it),
        then what is owed: `drain` at low_water_mark or once nothing is pending (one per
        episode), or, on a relay's destination, the restart of its source (the relay owns that
        socket's flow control: no `drain`). _settle then drops the interest if nothing is owed."""
        cdef bint relay
        if _SocketWriter._pending(self):
            self._flush()
            if self.state != ST_OPEN:
                return 0
        relay = (self.flags & F_PIPE_DST) != 0
        if relay:
            _relay_writable(<Socket>self)
            if self.state != ST_OPEN:
                return 0
        if _SocketWriter._pending(self) or (relay and self.ext.pipe_in is not None
                                             and self.ext.pipe_in.inpipe):
            # low_water_mark: `drain` fires once the backlog is down to it (once per episode),
            # so a writer can refill before the kernel runs dry.
            if (not relay and (self.flags & (F_DRAIN_OWED | F_LWM_FIRED)) == F_DRAIN_OWED
                    and self._backlog() <= self.ctx.lwm):
                self.flags |= F_LWM_FIRED
                self._drained()
        elif (self.flags & F_DRAIN_OWED) and self._tls_held() == 0:
            if relay or (self.flags & F_LWM_FIRED):
                self.flags &= ~(F_DRAIN_OWED | F_LWM_FIRED)    # the relay's, or already had
            else:
                self._drained()
        return self._settle()

    cdef Py_ssize_t _buffer(self, const char *p, Py_ssize_t n) except -2:
        """Queue bytes the kernel cannot take now behind the backlog, up to high_water_mark;
        returns how many were taken. A drain is owed either way. (On a TLS socket these are
        ciphertext of plaintext already accepted under the mark: all of it is taken.)"""
        cdef Py_ssize_t room = n if self.flags & F_TLS else self._hwm_room(n)
        if room > 0:
            self._spill_cork()
            if bs_sink_append(&self.sink, p, room) < 0:
                raise MemoryError()
            self.flags |= F_BACKED_UP
        self._owe_drain()      # a new episode; settles
        return room

    cdef Py_ssize_t _write(self, const char *p, Py_ssize_t n, object keep) except -2:
        """A user write: plaintext, or TLS's sealing of it. -1: the socket cannot write."""
        if self.state == ST_CLOSED or (self.flags & (F_ENDING | F_SHUT_WR)):
            return -1
        if n == 0:
            return 0
        _touch(self, False)
        if self.flags & F_TLS:
            return (<_TlsHook>self.ext.tls).write(self, p, n, keep)
        return _SocketWriter._write_raw(self, p, n, keep)

    cdef Py_ssize_t _write_raw(self, const char *p, Py_ssize_t n, object keep) except -2:
        """Bytes as they go on the wire. keep: the bytes object p points into, or None."""
        cdef Loop loop = self.loop
        cdef ssize_t sent
        cdef Py_ssize_t pending
        if self.state == ST_CONNECTING or (self.flags & F_BACKED_UP):
            return self._buffer(p, n)      # the writable event (or open) sends them in order
        if loop.depth > 0 or self.cork_depth > 0:
            pending = _SocketWriter._pending(self)
            if pending + n <= CORK_LIMIT and (self.ctx.hwm < 0 or self._hwm_room(n) == n):
                if pending == 0 and keep is not None:
                    self.cork_obj = keep
                else:
                    self._spill_cork()
                    if bs_sink_append(&self.sink, p, n) < 0:
                        raise MemoryError()
                if loop.depth > 0 and not (self.flags & F_CORKED):
                    self.flags |= F_CORKED
                    self.cork_next = loop.cork_head
                    loop.cork_head = <Socket>self
                return n
            # Past what corking is for: push what the cork holds and write through.
            self._flush()
            if self.state != ST_OPEN:
                return -1
            if self.flags & F_BACKED_UP:
                return self._buffer(p, n)
        sent = _sent(self, loop, bs_send(self.fd, p, n))
        if sent < 0:
            return -1
        if sent == n:
            return n
        return sent + self._buffer(p + sent, n - sent)

    cdef int _flush(self) except -1:
        """Push what is pending to the kernel, then settle (interest, drain, FIN)."""
        cdef Loop loop = self.loop
        cdef iovec iov[2]
        cdef int cnt
        cdef ssize_t r
        cdef size_t total
        cdef object o
        if self.state != ST_OPEN:
            return 0
        if self.flags & F_TLS:
            # Plaintext a handler wrote is sealed now, as few records as possible, ahead of
            # whatever this flush sends.
            (<_TlsHook>self.ext.tls).seal_corked(<Socket>self)
            if self.state != ST_OPEN:
                return 0
        o = self.cork_obj
        if o is not None:
            self.cork_obj = None
            total = PyBytes_GET_SIZE(o)
            r = _sent(self, loop, bs_send(self.fd, PyBytes_AS_STRING(o), total))
            if r < 0:
                return 0      # (failed)
            if <size_t>r < total:
                if bs_sink_append(&self.sink, PyBytes_AS_STRING(o) + r, total - r) < 0:
                    raise MemoryError()
                _refused(self)
        else:
            while self.sink.len > 0:
                cnt = bs_sink_iov(&self.sink, iov)
                total = iov[0].iov_len + (iov[1].iov_len if cnt > 1 else 0)
                if cnt == 1:
                    r = _sent(self, loop, bs_send(self.fd, iov[0].iov_base, iov[0].iov_len))
                else:
                    r = _sent(self, loop, bs_sendv(self.fd, iov, cnt))
                if r <= 0:
                    if r < 0:
                        return 0      # (failed)
                    break
                bs_sink_consume(&self.sink, r)
                # A backlog draining to a slow reader is activity, not idleness.
                _touch(self, False)
                if <size_t>r < total:
                    break     # kernel buffer full: skip the EAGAIN round trip
            if self.sink.len == 0 and self.sink.cap > BS_SINK_KEEP and not (self.flags & F_SPARE):
                _spare_add(self)
            elif self.sink.len:
                _refused(self)
        if _settled(self):
            return 0      # _settle's own first test, here so the common flush makes no call
        return _SocketWriter._settle(self)

    cdef int _drained(self) except -1:
        """The writable event found nothing pending and a drain owed."""
        cdef object h = self.ctx.on_drain
        self.flags &= ~F_DRAIN_OWED
        if h is not None:
            call_handler(self.loop, h, self, self.ctx.on_error, 0)
        return 0

    cdef int _finish_end(self) except -1:
        cdef int r
        if self.flags & F_TLS:
            # close_notify goes before the FIN. 0: not yet (handshake running, or ciphertext
            # still buffered: the _flush that empties the sink calls us again).
            if (<_TlsHook>self.ext.tls).before_fin(self) == 0 or self.state == ST_CLOSED:
                return 0
        self.flags |= F_SHUT_WR
        if self.flags & F_EOF:
            # Both directions are done; close() sends the FIN itself.
            return self._close(None)
        r = bs_shutdown(self.fd, 0)
        if r < 0 and r != -ENOTCONN:   # the peer already reset; the read side will report it
            return self._fail(-r)
        if self.flags & F_CLOSE_AFTER:
            return self._close(None)   # a `with` block left while connecting: its writes are out
        return 0

    cdef int _end(self) except -1:
        if self.state == ST_CLOSED or (self.flags & F_ENDING):
            return 0
        self.flags |= F_ENDING
        if self.state == ST_CONNECTING:
            return 0
        if self.loop.depth > 0 and (self.flags & F_CORKED):
            return 0      # the cork flush sends the FIN after the corked bytes
        return self._flush()

    cdef Py_ssize_t _writev(self, list bufs) except -2:
        """writelines() on an open, idle, uncorked plaintext socket: one gather send."""
        cdef Py_ssize_t nb = len(bufs), i, total = 0, sent, k, accepted, off, rem
        cdef iovec *iov
        cdef Py_buffer *views
        cdef int cnt
        if nb > IOV_MAX:
            nb = IOV_MAX        # the rest follows through write()
        iov = <iovec *>malloc(nb * sizeof(iovec))
        views = <Py_buffer *>malloc(nb * sizeof(Py_buffer))
        if iov == NULL or views == NULL:
            free(iov)
            free(views)
            raise MemoryError()
        cnt = 0
        try:
            for i in range(nb):
                PyObject_GetBuffer(bufs[i], &views[i], PyBUF_SIMPLE)
                cnt += 1
                iov[i].iov_base = views[i].buf
                iov[i].iov_len = views[i].len
                total += views[i].len
            sent = _sent(self, self.loop, bs_sendv(self.fd, iov, cnt))
            if sent < 0:
                return -1
            _touch(self, False)
            accepted = sent
            off = sent
            for i in range(cnt):
                if off >= views[i].len:
                    off -= views[i].len
                    continue
                rem = views[i].len - off
                k = self._buffer(<const char *>views[i].buf + off, rem)
                accepted += k
                off = 0
                if k < rem:
                    break
        finally:
            for i in range(cnt):
                PyBuffer_Release(&views[i])
            free(iov)
            free(views)
        for i in range(nb, len(bufs)):
            k = (<Socket>self).write(bufs[i])
            if k <= 0:
                break
            accepted += k
        return accepted


cdef inline Py_ssize_t _write_whole(_SocketWriter s, const char *p, Py_ssize_t n,
                                    object keep) except -2:
    """One message written whole or not at all: n (or -1 when the socket cannot write), or -1
    with a drain owed when _whole_room() refuses it. F_WHOLE stays set through the socket's
    own write path (the cork's and TLS's mark checks), so no step cuts it."""
    if not _SocketWriter._whole_room(s, n):
        return -1
    s.flags |= F_WHOLE
    try:
        return _SocketWriter._write(s, p, n, keep)
    finally:
        s.flags &= ~F_WHOLE


cdef char *_cork_extend(_SocketWriter s, Py_ssize_t n) except? NULL:
    """A corked plaintext write of n bytes the caller fills in place (write_frame builds its
    frame straight into the sink: no copy on the way): what _write_raw's cork branch does,
    minus the copy. NULL when the write must go through _write instead (not corked, not open,
    TLS, backed up, or past CORK_LIMIT or high_water_mark)."""
    cdef Loop loop = s.loop
    cdef Py_ssize_t pending
    cdef char *out
    if ((loop.depth == 0 and s.cork_depth == 0) or s.state != ST_OPEN
            or (s.flags & (F_TLS | F_BACKED_UP | F_ENDING | F_SHUT_WR))):
        return NULL
    pending = _SocketWriter._pending(s)
    if pending + n > CORK_LIMIT or s._hwm_room(n) < n:
        return NULL
    s._spill_cork()
    out = bs_sink_extend(&s.sink, n)
    if out == NULL:
        raise MemoryError()
    _touch(s, False)
    if loop.depth > 0 and not (s.flags & F_CORKED):
        s.flags |= F_CORKED
        s.cork_next = loop.cork_head
        loop.cork_head = s
    return out


cdef inline ssize_t _sent(_SocketWriter s, Loop loop, ssize_t r) except -2:
    """The one reading of what a send into s returned (send, sendmsg, or the relay's splice from
    its kernel pipe): the bytes the kernel took, counted as written (0: it took none, EAGAIN);
    -1 once s has failed (any other error). Every caller stops at a short count: the socket
    buffer is full, and the EAGAIN round trip that would confirm it is skipped."""
    loop.n_send += 1
    if r < 0:
        if r == -EAGAIN or r == -EWOULDBLOCK:
            return 0
        s._fail(<int>-r)
        return -1
    s.bytes_written += r
    return r


cdef inline void _refused(_SocketWriter s) noexcept:
    """A flush left bytes (a handler's cork) that the kernel refused: they are a backlog now, and
    a drain is owed for them, a new episode. (Already backed up: the episode goes on.)"""
    if not (s.flags & F_BACKED_UP):
        s.flags = (s.flags | F_BACKED_UP | F_DRAIN_OWED) & ~F_LWM_FIRED


include "_sock_sink.pxi"     # the sink's storage release policy
