# Socket: the public methods and properties users call.


cdef class Socket(_SocketReader):
    """One TCP or unix connection. Handlers live in the shared table, context in `sock.data`."""

    # -- public API --

    def write(self, data, Py_ssize_t offset=0, length=None):
        """Send what the kernel takes now and buffer the rest; returns the bytes accepted
        (short only when high_water_mark caps the buffer), or -1 on a closed socket."""
        cdef Py_buffer view
        cdef Py_ssize_t n, r
        if self.flags & F_PIPE_DST:
            _relay_spill_in(self)     # bytes a splice left in the kernel pipe go first
        if PyBytes_CheckExact(data) and offset == 0 and length is None:
            return self._write(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), data)
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
        The socket keeps reading until the peer's FIN (half-close)."""
        if self.flags & F_PIPE_DST:
            _relay_spill_in(self)     # the FIN follows what the relay already read
        if data is not None:
            self.write(data)
        self._end()

    def shutdown(self, bint read=False):
        """shutdown(SHUT_WR) now (SHUT_RD with read=True), without waiting for the sink."""
        cdef int r
        if self.state != ST_OPEN:
            return
        r = bs_shutdown(self.fd, read)
        if r < 0:
            _raise_errno(-r)
        if not read:
            # Nothing buffered can be sent after our FIN; no `drain` is owed for dropped bytes.
            self.flags |= F_SHUT_WR | F_ENDING
            self.flags &= ~(F_BACKED_UP | F_DRAIN_OWED)
            bs_sink_free(&self.sink)
            self.cork_obj = None
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
        if self.state == ST_OPEN and not (self.flags & F_BACKED_UP) and self._pending():
            # Only corked bytes are pending (no send refused them): without the cork they would
            # already be in the kernel, so `write(resp); close()` in a handler must still send
            # them. One non-blocking attempt; whatever the kernel refuses is dropped as documented.
            self._flush()
        self._close(None)

    def terminate(self):
        """Abortive close: the peer gets a RST; buffered bytes are dropped. A relay partner
        (pipe()/relay()) is reset too."""
        if self.state == ST_OPEN:
            bs_set_linger0(self.fd)
        if self.flags & (F_PIPE_SRC | F_PIPE_DST):
            _relay_reset_partners(self)
        self._close(None)

    def flush(self):
        """Try to push buffered bytes to the kernel now."""
        if self.state == ST_OPEN and self._pending():
            self._flush()

    def cork(self):
        """Context manager: writes inside it go out together, in one send, when it exits."""
        cdef _CorkCtx c = _CorkCtx.__new__(_CorkCtx)
        c.s = self
        return c

    def pause(self):
        """Stop reading: no `data` until resume(); the kernel buffers and the peer slows down."""
        if self.state == ST_CLOSED or (self.flags & F_PAUSED):
            return
        self.flags |= F_PAUSED
        if self.state == ST_OPEN and (self.mask & BS_READABLE):
            self._set_mask(self.mask & ~BS_READABLE)

    def resume(self):
        """Restart reading: data that arrived meanwhile comes first, then any FIN."""
        if self.state == ST_CLOSED or not (self.flags & F_PAUSED):
            return
        self.flags &= ~F_PAUSED
        if self.state == ST_OPEN and not (self.flags & (F_EOF | F_PIPE_HELD)):
            self._set_mask(self.mask | BS_READABLE)
        if self.flags & F_TLS:
            (<_TlsHook>self.ext.tls).resumed(self)    # records already decrypted-able in the BIO

    def timeout(self, seconds):
        """Set the idle timeout in seconds (restarted by any read or write); 0 or None clears.
        Raises ValueError for a negative, infinite or too large (> 24 days) value."""
        cdef double s = 0.0
        if seconds is not None:
            s = float(seconds)
            if not isfinite(s) or s < 0:
                raise ValueError("timeout must be a finite number of seconds >= 0, not %r"
                                 % (seconds,))
            if s * 1000.0 > MAX_WAIT_MS:
                raise ValueError("timeout too large: %r (at most %d s)" % (seconds, MAX_WAIT_MS // 1000))
        if self.state == ST_CONNECTING:
            self.flags |= F_USER_TIMEOUT      # it wins over connect(timeout=) once connected
        self.timeout_ms = <uint32_t>ceil(s * 1000.0)
        if self.state == ST_OPEN and not ((self.flags & F_TLS) and
                                          (<_TlsHook>self.ext.tls).handshaking()):
            self._arm_idle()

    def set_no_delay(self, bint on=True):
        cdef int r
        if self.state == ST_OPEN and not (self.flags & F_UNIX):
            r = bs_set_nodelay(self.fd, on)
            if r < 0:
                _raise_errno(-r)

    def set_keep_alive(self, bint on=True, int initial_delay=0):
        cdef int r
        if initial_delay < 0:
            raise ValueError("initial_delay must be >= 0")
        if self.state == ST_OPEN and not (self.flags & F_UNIX):
            r = bs_set_keepalive(self.fd, on, initial_delay)
            if r < 0:
                _raise_errno(-r)

    def reload(self, socket):
        """Swap this socket's handler table (an accepted socket gets its own copy)."""
        from ._api import resolve_handlers
        handlers = resolve_handlers(socket)
        if self._listener is not None and self.ctx is self._listener.ctx:
            self.ctx = self.ctx.copy()
        self.ctx.set_handlers(handlers)

    def ref(self):
        if not (self.flags & F_REFED):
            self.flags |= F_REFED
            if self.state != ST_CLOSED:
                self.loop.refs += 1
        return self

    def unref(self):
        if self.flags & F_REFED:
            self.flags &= ~F_REFED
            if self.state != ST_CLOSED:
                self.loop.refs -= 1
        return self

    def fileno(self):
        return -1 if self.state == ST_CLOSED else self.fd

    def pipe(self, dest, *, high_water_mark=None, low_water_mark=None, splice=None):
        """Relay everything this socket reads from now on into `dest`, inside the loop (no
        `data` call per chunk): reading stops while `dest` holds `high_water_mark` bytes
        (default 128 KiB) and restarts at `low_water_mark` (default a quarter of it); this
        socket's FIN becomes dest.end() after the relayed bytes; a reset or error on either side
        resets the other. splice=None picks the faster path measured for plain TCP (see
        docs/API.md §12), True asks for splice(2) (Linux, plaintext both sides), False for the
        buffered path. Returns `dest`. Raises TypeError for a non-Socket, ValueError for a
        closed socket, itself, a socket already piped, bad marks, or splice=True with TLS."""
        return _pipe(self, dest, high_water_mark, low_water_mark, splice)

    def unpipe(self):
        """Stop relaying what this socket reads; later bytes go to its `data` handler. Bytes
        already read for the destination are still delivered to it. Returns the destination,
        or None when this socket was not piped."""
        return _unpipe(self)

    @property
    def piped_to(self):
        """The Socket this one relays into (pipe()), or None."""
        return self.ext.pipe_out.dst if self.flags & F_PIPE_SRC else None

    def upgrade_tls(self, tls, *, bint server_side=False, server_hostname=None):
        """STARTTLS on this connection: same fd, same Socket, now encrypted."""
        from ._tls import upgrade
        upgrade(self, tls, server_side, server_hostname)
        return self

    # -- properties --

    @property
    def ready_state(self):
        if self.state == ST_CONNECTING:
            return "connecting"
        if self.state == ST_CLOSED:
            return "closed"
        if self.flags & (F_ENDING | F_SHUT_WR):
            return "closing"
        return "open"

    @property
    def buffered_amount(self):
        """Bytes accepted by write() that the kernel has refused so far (waiting in the sink),
        plus plaintext TLS holds until its handshake is done. While it is above 0 a `drain` is
        owed. Bytes a handler wrote that are only corked until it returns are not counted."""
        if self.flags & F_PIPE_DST:
            return self._backlog() + self.ext.pipe_in.inpipe
        return self._backlog()

    @property
    def bytes_written(self):
        return self.bytes_written

    @property
    def bytes_read(self):
        return self.bytes_read

    @property
    def listener(self):
        return self._listener

    @property
    def loop(self):
        return self.loop

    @property
    def paused(self):
        return bool(self.flags & F_PAUSED)

    @property
    def high_water_mark(self):
        return None if self.ctx.hwm < 0 else self.ctx.hwm

    @property
    def low_water_mark(self):
        """`drain` fires once buffered_amount is down to this many bytes (0: once empty)."""
        return self.ctx.lwm

    cdef object _addr(self, bint peer):
        cdef char buf[128]
        cdef int port = 0, fam
        cdef _SockExt ext = self._get_ext()
        cached = ext.peer if peer else ext.local
        if cached is not None:
            return cached
        if self.fd < 0 or (self.flags & F_UNIX):
            return (None, None, None)
        fam = bs_sockname(self.fd, peer, buf, sizeof(buf), &port)
        if fam <= 0 or fam == BS_AF_UNIX:
            return (None, None, None)
        res = (buf.decode(), port, "IPv6" if fam == BS_AF_INET6 else "IPv4")
        if peer:
            ext.peer = res
        else:
            ext.local = res
        return res

    @property
    def remote_address(self):
        return self._addr(True)[0]

    @property
    def remote_port(self):
        return self._addr(True)[1]

    @property
    def local_address(self):
        return self._addr(False)[0]

    @property
    def local_port(self):
        return self._addr(False)[1]

    @property
    def family(self):
        return self._addr(True)[2] if self.state != ST_CONNECTING else None

    # TLS accessors (None on a plaintext socket)
    @property
    def authorized(self):
        t = self._tls()
        return False if t is None else t.authorized

    @property
    def alpn_protocol(self):
        t = self._tls()
        return None if t is None else t.sslobj.selected_alpn_protocol()

    def getpeercert(self, binary_form=False):
        t = self._tls()
        return None if t is None else t.sslobj.getpeercert(binary_form)

    def cipher(self):
        t = self._tls()
        return None if t is None else t.sslobj.cipher()

    def version(self):
        t = self._tls()
        return None if t is None else t.sslobj.version()

    cdef object _tls(self):
        return self.ext.tls if self.flags & F_TLS else None

    def __repr__(self):
        return "<bunsock.Socket fd=%d %s>" % (self.fd, self.ready_state)


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
