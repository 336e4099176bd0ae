# Socket: the public write, flow and lifecycle methods (its properties are _SocketInfo's in
# _sock_info.pxi, its option methods _SocketControl's in _sock_ctl.pxi).


cdef class Socket(_SocketControl):
    """One TCP or unix connection. Handlers live in the shared table, context in `sock.data`."""

    # -- public API --

    def write(self, data, Py_ssize_t offset=0, length=None):
        """Send what the kernel takes now and buffer the rest; returns the bytes accepted
        (short only when high_water_mark caps the buffer), or -1 on a closed socket."""
        _check_thread(self.loop)
        cdef Py_buffer view
        cdef Py_ssize_t n, r
        if self.flags & F_PIPE_DST:
            _relay_spill_in(self)     # bytes a splice left in the kernel pipe go first
        if PyBytes_CheckExact(data) and offset == 0 and length is None:
            return _SocketWriter._write(self, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), data)
        if isinstance(data, str):
            raise TypeError("write() needs a bytes-like object, not str: encode it first")
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except BufferError:
            data = memoryview(data).tobytes()       # non-contiguous views
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            n = _slice_len(view.len, offset, length)
            r = self._write(<const char *>view.buf + offset, n, None)
        finally:
            PyBuffer_Release(&view)
        return r

    def writelines(self, lines):
        """Write several buffers with one gather send; returns the total bytes accepted."""
        _check_thread(self.loop)
        cdef list bufs = []
        cdef Py_ssize_t total = 0, r
        for item in lines:
            if isinstance(item, str):
                raise TypeError("writelines() needs bytes-like objects, not str")
            bufs.append(item if PyBytes_CheckExact(item) else memoryview(item).cast("B"))
        if not bufs:
            return 0
        if self.flags & F_PIPE_DST:
            _relay_spill_in(self)
        if self.state == ST_CLOSED or (self.flags & (F_ENDING | F_SHUT_WR)):
            return -1
        if (self.loop.depth > 0 or self.cork_depth > 0 or self._pending() or
                self.state != ST_OPEN or (self.flags & F_TLS)):
            for b in bufs:
                r = self.write(b)
                if r < 0:
                    return -1 if total == 0 else total
                total += r
                if r < len(b):
                    break
            return total
        return self._writev(bufs)

    def end(self, data=None):
        """Optional last write, then FIN once everything buffered has reached the kernel.
        The socket keeps reading until the peer's FIN (half-close). Returns what write(data)
        returned (a short count when high_water_mark cut it: the tail was not sent), 0 without
        data, or -1 when the socket was already closed or ending."""
        _check_thread(self.loop)
        cdef object r = 0
        if self.flags & F_PIPE_DST:
            _relay_spill_in(self)     # the FIN follows what the relay already read
        if data is not None:
            r = self.write(data)
        elif self.state == ST_CLOSED or (self.flags & (F_ENDING | F_SHUT_WR)):
            r = -1
        self._end()
        return r

    def shutdown(self, bint read=False):
        """shutdown(SHUT_WR) now (SHUT_RD with read=True), without waiting for the sink."""
        _check_thread(self.loop)
        cdef int r
        if self.state != ST_OPEN:
            return
        r = bs_shutdown(self.fd, read)
        if r < 0:
            _raise_errno(-r)
        if not read:
            # Nothing buffered can be sent after our FIN; no `drain` is owed for dropped bytes.
            self.flags |= F_SHUT_WR | F_ENDING
            self._drop_pending()
            if self.flags & F_EOF:
                self._close(None)
            else:
                self._settle()
        elif not (self.flags & F_EOF):
            # After SHUT_RD the kernel reports EOF on every read; that is not the peer's FIN, so
            # no `end` (and no automatic close): stop reading, as if the input were finished.
            self.flags |= F_EOF
            if self.flags & F_SHUT_WR:
                self._close(None)
            elif self.mask & BS_READABLE:
                self._set_mask(self.mask & ~BS_READABLE)

    def close(self):
        """Close now; buffered bytes are dropped; `close(sock, None)` fires."""
        _check_thread(self.loop)
        if self.state == ST_OPEN and not (self.flags & F_BACKED_UP) and self._held():
            # Only corked bytes are pending (no send refused them): without the cork they would
            # already be in the kernel, so `write(resp); close()` in a handler must still send
            # them. One non-blocking attempt; whatever the kernel refuses is dropped as documented.
            self._flush()
        self._close(None)

    def terminate(self):
        """Abortive close: the peer gets a RST; buffered bytes are dropped. A relay partner
        (pipe()/relay()) is reset too."""
        _check_thread(self.loop)
        if self.state == ST_OPEN:
            bs_set_linger0(self.fd)
        if self.flags & (F_PIPE_SRC | F_PIPE_DST):
            _relay_reset_partners(self)
        self._close(None)

    def flush(self):
        """Try to push buffered bytes to the kernel now."""
        _check_thread(self.loop)
        if self.state == ST_OPEN and self._held():
            self._flush()      # (TLS: the plaintext a handler corked is sealed and sent too)

    def cork(self):
        """Context manager: writes inside it go out together, in one send, when it exits."""
        _check_thread(self.loop)
        cdef _CorkCtx c = _CorkCtx.__new__(_CorkCtx)
        c.s = self
        return c

    def pause(self):
        """Stop reading: no `data` until resume(); the kernel buffers and the peer slows down."""
        _check_thread(self.loop)
        if self.state == ST_CLOSED or (self.flags & F_PAUSED):
            return
        self.flags |= F_PAUSED
        if self.state == ST_OPEN and (self.mask & BS_READABLE):
            self._set_mask(self.mask & ~BS_READABLE)

    def resume(self):
        """Restart reading: data that arrived meanwhile comes first, then any FIN."""
        _check_thread(self.loop)
        if self.state == ST_CLOSED or not (self.flags & F_PAUSED):
            return
        self.flags &= ~F_PAUSED
        if self.state == ST_OPEN and not (self.flags & (F_EOF | F_PIPE_HELD)):
            self._set_mask(self.mask | BS_READABLE)
        if self.flags & F_FRAMED:
            _frames_resumed(self)      # messages held back by pause() go first
        if self.flags & F_TLS:
            (<_TlsHook>self.ext.tls).resumed(self)    # records already decrypted-able in the BIO

    def timeout(self, seconds):
        """Set the idle timeout in seconds (restarted by any read or write; with
        idle_timeout_mode="read", by reads only); 0 or None clears.
        Raises TypeError for a non-number, ValueError for a negative, NaN or too large value
        (above 2,000,000 s, about 23 days: docs/API.md §6)."""
        _check_thread(self.loop)
        cdef double s = _seconds_arg("timeout", seconds)
        if self.state == ST_CONNECTING:
            self.flags |= F_USER_TIMEOUT      # it wins over connect(timeout=) once connected
        self.timeout_ms = <uint32_t>ceil(s * 1000.0)
        if self.state == ST_OPEN and not ((self.flags & F_TLS) and
                                          (<_TlsHook>self.ext.tls).handshaking()):
            self._arm_idle()

    def reload(self, socket):
        """Swap this socket's handler table (an accepted socket gets its own copy)."""
        _check_thread(self.loop)
        from ._api import resolve_handlers
        handlers = resolve_handlers(socket)
        if self._listener is not None and self.ctx is self._listener.ctx:
            self.ctx = self.ctx.copy()
        self.ctx.set_handlers(handlers)

    def ref(self):
        """Make this socket keep run() going (the default). Returns self."""
        _check_thread(self.loop)
        if not (self.flags & F_REFED):
            self.flags |= F_REFED
            if self.state != ST_CLOSED:
                self.loop.refs += 1
        return self

    def unref(self):
        """Let run() return while only this socket is left. Returns self."""
        _check_thread(self.loop)
        if self.flags & F_REFED:
            self.flags &= ~F_REFED
            if self.state != ST_CLOSED:
                self.loop.refs -= 1
        return self

    def fileno(self):
        """The OS descriptor, or -1 once closed."""
        return -1 if self.state == ST_CLOSED else self.fd

    def pipe(self, dest, *, high_water_mark=None, low_water_mark=None, splice=None):
        """Relay everything this socket reads from now on into `dest`, inside the loop (no
        `data` call per chunk): reading stops while `dest` holds `high_water_mark` bytes
        (default 128 KiB) and restarts at `low_water_mark` (default a quarter of it); this
        socket's FIN becomes dest.end() after the relayed bytes; a reset or error on either side
        resets the other. splice=None picks the faster path measured for plain TCP (see
        docs/API.md §14), True asks for splice(2) (Linux, plaintext both sides), False for the
        buffered path. Returns `dest`. Raises TypeError for a non-Socket, ValueError for a
        closed socket, itself, a socket already piped, bad marks, or splice=True with TLS."""
        return _pipe(self, dest, high_water_mark, low_water_mark, splice)

    def unpipe(self):
        """Stop relaying what this socket reads; later bytes go to its `data` handler. Bytes
        already read for the destination are still delivered to it. Returns the destination,
        or None when this socket was not piped."""
        return _unpipe(self)

    @property
    def framing(self):
        """The framing rule `data` messages are cut by (bunsock.framing.lines(...) or
        length_prefixed(...)), or None for raw bytes. Setting it switches at once, also inside
        `data`: bytes already read but not delivered are framed by the new rule (None: they
        come as one raw chunk). Raises TypeError for anything but a rule or None."""
        return _frames_get(self)

    @framing.setter
    def framing(self, value):
        _frames_set(self, value)

    @cython.always_allow_keywords(False)  # METH_O: one call per message, no argument parsing
    def write_frame(self, payload):
        """Write payload as one frame of this socket's framing rule: the length header (or
        the delimiter) is added in C, one append. The frame is taken whole or not at all
        under high_water_mark (with nothing buffered it is always taken). Returns the bytes
        accepted (header or delimiter included, > 0), 0 when high_water_mark refused the frame
        (a `drain` follows), -1 on a closed or ending socket. Raises TypeError for a str,
        ValueError without a framing rule, for a payload too long for the header, or for a
        line payload that contains the delimiter."""
        return _write_frame(self, payload)

    @property
    def piped_to(self):
        """The Socket this one relays into (pipe()), or None."""
        return self.ext.pipe_out.dst if self.flags & F_PIPE_SRC else None

    def upgrade_tls(self, tls, *, bint server_side=False, server_hostname=None):
        """STARTTLS on this connection: same fd, same Socket, now encrypted.

        Raises ValueError on a socket relayed with splice (its bytes never enter the process:
        unpipe() first)."""
        _check_thread(self.loop)
        if ((self.flags & F_PIPE_SRC and self.ext.pipe_out.splice)
                or (self.flags & F_PIPE_DST and self.ext.pipe_in.splice)):
            # splice(2) moves this socket's bytes without them entering the process: TLS
            # would be bypassed (and the handshake's bytes relayed raw).
            raise ValueError("upgrade_tls() on a socket relayed with splice: call unpipe() "
                             "on the relay first")
        from ._tls import upgrade
        upgrade(self, tls, server_side, server_hostname)
        return self

    # -- flow control settings --

    @property
    def high_water_mark(self):
        """Cap on the bytes this socket buffers (None: unbounded); settable: an int >= 0 not
        below low_water_mark, or None (TypeError / ValueError otherwise). Setting it on an
        accepted socket gives that socket its own settings (the listener's stay)."""
        return None if self.ctx.hwm < 0 else self.ctx.hwm

    @high_water_mark.setter
    def high_water_mark(self, value):
        _check_thread(self.loop)
        cdef Py_ssize_t hwm = _hwm_for(self.ctx, value)      # (checked before _own_ctx copies)
        self._own_ctx().hwm = hwm

    @property
    def low_water_mark(self):
        """`drain` fires once buffered_amount is down to this many bytes (0: once empty);
        settable: an int >= 0 not above high_water_mark."""
        return self.ctx.lwm

    @low_water_mark.setter
    def low_water_mark(self, value):
        _check_thread(self.loop)
        cdef Py_ssize_t lwm = _lwm_for(self.ctx, value)
        self._own_ctx().lwm = lwm

    cdef _Ctx _own_ctx(self):
        # An accepted socket shares its listener's settings until it changes one of them.
        if self._listener is not None and self.ctx is self._listener.ctx:
            self.ctx = self.ctx.copy()
        return self.ctx

    def __enter__(self):
        """`with sock:` returns the socket itself; leaving the block closes it."""
        return self

    def __exit__(self, t, v, tb):
        """Leaving a `with sock:` block closes the socket (buffered bytes as close() does).
        A socket still connecting with writes made in the block keeps them: it ends (FIN after
        them) once connected, then closes."""
        _check_thread(self.loop)
        if self.state == ST_CONNECTING and self._held():
            self.flags |= F_CLOSE_AFTER
            self._end()
            return False
        self.close()
        return False


cdef Py_ssize_t _hwm_for(_Ctx ctx, object value) except -2:
    """A high_water_mark set after creation (Socket's or Listener's) for a table with `ctx`'s
    low_water_mark: an int >= 0 not below it, or None (unbounded: -1)."""
    value = _int_arg("high_water_mark", value, 0, 2 ** 62, True)
    if value is None:
        return -1
    if ctx.lwm > value:
        raise ValueError("high_water_mark (%d) must not be below low_water_mark (%d)"
                         % (value, ctx.lwm))
    return value


cdef Py_ssize_t _lwm_for(_Ctx ctx, object value) except -2:
    """A low_water_mark set after creation: an int >= 0 not above `ctx`'s high_water_mark."""
    value = _int_arg("low_water_mark", value, 0, 2 ** 62)
    if ctx.hwm >= 0 and value > ctx.hwm:
        raise ValueError("low_water_mark (%d) must not exceed high_water_mark (%d)"
                         % (value, ctx.hwm))
    return value


cdef Py_ssize_t _slice_len(Py_ssize_t size, Py_ssize_t offset, object length) except -1:
    cdef Py_ssize_t n
    if offset < 0 or offset > size:
        raise ValueError("offset %d is outside the buffer (length %d)" % (offset, size))
    if length is None:
        return size - offset
    n = length
    if n < 0 or n > size - offset:
        raise ValueError("length %d does not fit the buffer (length %d, offset %d)"
                         % (n, size, offset))
    return n
