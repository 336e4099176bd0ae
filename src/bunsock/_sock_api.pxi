# Socket: the public methods and properties users call.


cdef class Socket(_SocketReader):
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
        Raises ValueError for a negative, infinite or too large (> 24 days) value."""
        _check_thread(self.loop)
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
        """TCP_NODELAY on or off (on by default, as in Bun). No effect on unix or closed
        sockets. Raises OSError if the kernel refuses."""
        _check_thread(self.loop)
        cdef int r
        if self.state == ST_CONNECTING and not (self.flags & F_UNIX):
            # Kept with the connect's options: applied to each attempt, and not overwritten
            # by the default when the connection opens.
            self._setopts(((IPPROTO_TCP, TCP_NODELAY, _opt_value(1 if on else 0)),))
        elif self.state == ST_OPEN and not (self.flags & F_UNIX):
            r = bs_set_nodelay(self.fd, on)
            if r < 0:
                _raise_errno(-r)

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

    # -- properties --

    @property
    def ready_state(self):
        """The socket's state: "connecting", "open", "closing" (ended, flushing its writes) or
        "closed"."""
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
        """Bytes handed to the kernel so far (relayed bytes included)."""
        return self.bytes_written

    @property
    def bytes_read(self):
        """Bytes read from the kernel so far (relayed bytes included)."""
        return self.bytes_read

    @property
    def listener(self):
        """The Listener that accepted this socket; None for a client made by connect()."""
        return self._listener

    @property
    def loop(self):
        """The Loop this socket belongs to."""
        return self.loop

    @property
    def paused(self):
        """Whether reading is paused (pause() or pause_on_connect=True; resume() restarts it)."""
        return bool(self.flags & F_PAUSED)

    @property
    def proxy_header(self):
        """The PROXY protocol header this connection began with (a
        bunsock.proxy_protocol.ProxyHeader, set by proxy_protocol.accept), or None."""
        return None if self.ext is None else self.ext.proxy_header

    @proxy_header.setter
    def proxy_header(self, value):
        _check_thread(self.loop)
        self._get_ext().proxy_header = value

    @property
    def high_water_mark(self):
        """Cap on the bytes this socket buffers (None: unbounded); settable: an int >= 0 not
        below low_water_mark, or None (TypeError / ValueError otherwise). Setting it on an
        accepted socket gives that socket its own settings (the listener's stay)."""
        return None if self.ctx.hwm < 0 else self.ctx.hwm

    @high_water_mark.setter
    def high_water_mark(self, value):
        _check_thread(self.loop)
        hwm = _mark_value("high_water_mark", value, True)
        if hwm >= 0 and self.ctx.lwm > hwm:
            raise ValueError("high_water_mark (%d) must not be below low_water_mark (%d)"
                             % (hwm, self.ctx.lwm))
        self._own_ctx().hwm = hwm

    @property
    def low_water_mark(self):
        """`drain` fires once buffered_amount is down to this many bytes (0: once empty);
        settable: an int >= 0 not above high_water_mark."""
        return self.ctx.lwm

    @low_water_mark.setter
    def low_water_mark(self, value):
        _check_thread(self.loop)
        lwm = _mark_value("low_water_mark", value, False)
        if self.ctx.hwm >= 0 and lwm > self.ctx.hwm:
            raise ValueError("low_water_mark (%d) must not exceed high_water_mark (%d)"
                             % (lwm, self.ctx.hwm))
        self._own_ctx().lwm = lwm

    cdef _Ctx _own_ctx(self):
        # An accepted socket shares its listener's settings until it changes one of them.
        if self._listener is not None and self.ctx is self._listener.ctx:
            self.ctx = self.ctx.copy()
        return self.ctx

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
        """The peer's IP address as text, or None (unix socket, or not connected yet)."""
        return self._addr(True)[0]

    @property
    def remote_port(self):
        """The peer's port, or None (unix socket, or not connected yet)."""
        return self._addr(True)[1]

    @property
    def local_address(self):
        """This end's IP address as text, or None (unix socket, or not connected yet)."""
        return self._addr(False)[0]

    @property
    def local_port(self):
        """This end's port, or None (unix socket, or not connected yet)."""
        return self._addr(False)[1]

    @property
    def family(self):
        """"IPv4" or "IPv6"; None for a unix socket or while connecting."""
        return self._addr(True)[2] if self.state != ST_CONNECTING else None

    # TLS accessors (None on a plaintext socket)
    @property
    def authorized(self):
        """TLS: whether the peer's certificate was verified; False on a plaintext socket."""
        t = self._tls()
        return False if t is None else t.authorized

    @property
    def alpn_protocol(self):
        """TLS: the protocol ALPN settled on (e.g. "h2"), or None."""
        t = self._tls()
        return None if t is None else t.sslobj.selected_alpn_protocol()

    def getpeercert(self, binary_form=False):
        """TLS: the peer's certificate as ssl.SSLSocket.getpeercert() gives it (DER bytes with
        binary_form=True); None on a plaintext socket or before the handshake."""
        t = self._tls()
        return None if t is None else t.sslobj.getpeercert(binary_form)

    def cipher(self):
        """TLS: (name, protocol, bits) of the negotiated cipher; None on a plaintext socket."""
        t = self._tls()
        return None if t is None else t.sslobj.cipher()

    def version(self):
        """TLS: the negotiated protocol version, e.g. "TLSv1.3"; None on a plaintext socket."""
        t = self._tls()
        return None if t is None else t.sslobj.version()

    cdef object _tls(self):
        return self.ext.tls if self.flags & F_TLS else None

    def __repr__(self):
        return "<bunsock.Socket fd=%d %s>" % (self.fd, self.ready_state)

    # -- socket control: options, keepalive, statistics, context manager --

    cdef int _setopts(self, tuple opts) except -1:
        """Apply ((level, option, bytes), ...) now. While connecting they also go on the list
        applied to each connect attempt before connect() (Happy Eyeballs makes several)."""
        cdef _SockExt ext
        cdef _OptList o
        cdef int r
        if self.state == ST_CLOSED:
            raise OSError(_errno.EBADF, "the socket is closed")
        if self.state == ST_CONNECTING:
            ext = self._get_ext()
            if self.fd < 0 and not ext.attempts:
                # No descriptor yet: a throwaway one reports the kernel's refusal now, not
                # later as a connect_error.
                o = _opt_list(opts)
                r = bs_probe_sockopts(BS_AF_UNIX if self.flags & F_UNIX else BS_AF_INET,
                                      o.opts, o.n)
                if r < 0:
                    _raise_errno(-r)
            o = ext.sockopts
            ext.sockopts = _opt_list((o.items if o is not None else ()) + opts)
            if ext.attempts:
                for a in ext.attempts:
                    (<_Attempt>a).setopts(opts)
        if self.fd >= 0:
            for level, name, value in opts:
                r = bs_setsockopt(self.fd, level, name, PyBytes_AS_STRING(value),
                                  <unsigned int>PyBytes_GET_SIZE(value))
                if r < 0:
                    _raise_errno(-r)
        return 0

    def setsockopt(self, int level, int option, value):
        """Set a socket option, as socket.socket.setsockopt: `value` is an int (bool) or a
        bytes-like object. On a socket still connecting it applies now and to every connect
        attempt, before connect(). Raises OSError (with the kernel's errno, EBADF once closed),
        TypeError for another value type."""
        _check_thread(self.loop)
        self._setopts(((level, option, _opt_value(value)),))

    def getsockopt(self, int level, int option, int buflen=0):
        """Read a socket option, as socket.socket.getsockopt: an int, or with buflen > 0 the
        raw bytes (at most buflen). Raises OSError (EBADF once closed, ENOTCONN before the
        connection has a descriptor), ValueError for a buflen outside 0..1024."""
        cdef char buf[1024]
        cdef unsigned int n
        cdef int r
        if buflen < 0 or buflen > 1024:
            raise ValueError("buflen must be in 0..1024, not %d" % buflen)
        if self.state == ST_CLOSED:
            raise OSError(_errno.EBADF, "the socket is closed")
        if self.fd < 0:
            raise OSError(_errno.ENOTCONN, "the socket has no descriptor yet (its connect has "
                          "not started)")
        n = buflen if buflen else sizeof(int)
        r = bs_getsockopt(self.fd, level, option, buf, &n)
        if r < 0:
            _raise_errno(-r)
        if buflen:
            return PyBytes_FromStringAndSize(buf, n)
        return (<int *>buf)[0]

    def set_keep_alive(self, bint on=True, initial_delay=0, *, idle=None, interval=None,
                       count=None):
        """TCP keepalive: with `on`, probes start after `idle` seconds without traffic (alias
        `initial_delay`, Bun's name; in seconds, not Bun's milliseconds), repeat every
        `interval` seconds, and the connection is dropped after `count` unanswered probes
        (close gets TimeoutError); None or 0 keeps the system default. Times are rounded up
        to whole seconds. Returns True, or False on a unix socket (nothing to do). Raises
        OSError (EBADF once closed; ENOPROTOOPT for a setting this platform lacks),
        ValueError/TypeError for bad values."""
        _check_thread(self.loop)
        cdef int idle_s = _whole_seconds("initial_delay", initial_delay)
        cdef int n
        opts = []
        if idle is not None:
            n = _whole_seconds("idle", idle)
            if idle_s and n and n != idle_s:
                raise ValueError("initial_delay and idle are the same setting: give one")
            idle_s = n or idle_s
        if self.state == ST_CLOSED:
            raise OSError(_errno.EBADF, "the socket is closed")
        if self.flags & F_UNIX:
            return False
        opts.append(_named("SO_KEEPALIVE", BS_OPT_KEEPALIVE) + (_opt_value(1 if on else 0),))
        if on:
            if idle_s:
                opts.append(_named("TCP_KEEPIDLE", BS_OPT_KEEPIDLE) + (_opt_value(idle_s),))
            if interval is not None and _whole_seconds("interval", interval):
                opts.append(_named("TCP_KEEPINTVL", BS_OPT_KEEPINTVL)
                            + (_opt_value(_whole_seconds("interval", interval)),))
            if count is not None:
                if isinstance(count, bool) or not isinstance(count, int):
                    raise TypeError("count must be an int, not %s" % type(count).__name__)
                if not 0 <= count <= 127:
                    raise ValueError("count must be in 0..127, not %d" % count)
                if count:
                    opts.append(_named("TCP_KEEPCNT", BS_OPT_KEEPCNT) + (_opt_value(count),))
        self._setopts(tuple(opts))
        return True

    def set_user_timeout(self, seconds):
        """TCP_USER_TIMEOUT: close the connection (close gets TimeoutError) when sent data stays
        unacknowledged this many seconds (ms precision; 0 or None: the system default). With
        keepalive it bounds how long a dead peer goes unnoticed. Returns True, or False on a
        unix socket. Raises OSError (EBADF once closed; ENOPROTOOPT where the platform has no
        TCP_USER_TIMEOUT), ValueError for a negative or too large value."""
        _check_thread(self.loop)
        cdef double s = 0.0
        if seconds is not None:
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                raise TypeError("seconds must be a number, not %s" % type(seconds).__name__)
            s = seconds
            if not isfinite(s) or s < 0 or s > 2_000_000:
                raise ValueError("seconds must be between 0 and 2e6, not %r" % (seconds,))
        if self.state == ST_CLOSED:
            raise OSError(_errno.EBADF, "the socket is closed")
        if self.flags & F_UNIX:
            return False
        self._setopts((_named("TCP_USER_TIMEOUT", BS_OPT_USER_TIMEOUT)
                       + (_opt_value(<int>ceil(s * 1000.0)),),))
        return True

    def tcp_info(self):
        """The kernel's view of this TCP connection, for monitoring: a bunsock.TcpInfo named
        tuple (rtt, rttvar in seconds; retransmits; cwnd and unacked in segments;
        delivery_rate in bytes/s or None). None on a unix socket. Raises OSError (EBADF once
        closed, ENOTCONN while connecting, ENOPROTOOPT where the platform has no TCP_INFO)."""
        if self.state == ST_CLOSED:
            raise OSError(_errno.EBADF, "the socket is closed")
        if self.state == ST_CONNECTING:
            raise OSError(_errno.ENOTCONN, "the socket is still connecting")
        if self.flags & F_UNIX:
            return None
        return _tcp_stat(self.fd)

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

    # -- TLS session and identity (None on a plaintext socket) --

    @property
    def session(self):
        """The TLS session (ssl.SSLSession) to resume later with connect(tls=..., session=...),
        Bun's getSession(); None on a plaintext socket or before the handshake. With TLS 1.3
        the server sends its tickets after the handshake: read it once data has arrived."""
        t = self._tls()
        return None if t is None else t.sslobj.session

    @property
    def session_reused(self):
        """True when this connection resumed a previous TLS session (Bun's isSessionReused)."""
        t = self._tls()
        return False if t is None else t.sslobj.session_reused

    @property
    def server_hostname(self):
        """The server name a TLS client verified and sent as SNI, or None (server side,
        plaintext socket)."""
        t = self._tls()
        return None if t is None else t.sslobj.server_hostname

    def getcertificate(self):
        """This side's own certificate (the leaf loaded from tls['cert']) in DER, Bun's
        getCertificate(); None on a plaintext socket, without a certificate, or when tls= was
        an ssl.SSLContext the caller built (Python's ssl cannot read the certificate back out
        of a context: ssl.DER_cert_to_PEM_cert() converts what this returns)."""
        t = self._tls()
        if t is None:
            return None
        return getattr(t.sslobj.context, "_bunsock_cert_der", None)


cdef Py_ssize_t _mark_value(str name, object value, bint allow_none) except -2:
    """A high/low water mark given after creation: an int >= 0 (None: unbounded, -1)."""
    if value is None and allow_none:
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int%s, not %s"
                        % (name, " or None" if allow_none else "", type(value).__name__))
    if not 0 <= value <= 2 ** 62:
        raise ValueError("%s must be in 0..2**62, not %d" % (name, value))
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
