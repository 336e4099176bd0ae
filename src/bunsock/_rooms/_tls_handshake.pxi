# TLS, handshake and shutdown: the handshake (bounded by the socket's timer), its `handshake`
# handler or the delayed `open`, close_notify before our FIN, the end of the connection.


cdef class _TlsHandshake(_TlsWriter):
    """(TLSState's handshake and shutdown: see _TlsWriter.)"""

    # -- handshake --

    cdef int start(self, Socket s) except -1:
        self.hs = HS_RUNNING
        # A handshake that stalls is bounded: by the socket's idle timeout when it has one,
        # else by HANDSHAKE_TIMEOUT_S (the socket's timer; _done puts the idle timeout back).
        s.loop._arm(&s.t, s.timeout_ms / 1000.0 if s.timeout_ms else HANDSHAKE_TIMEOUT_S)
        if self.server_side:
            return 0      # nothing to say before the ClientHello
        return _TlsHandshake._handshake(self, s)

    cdef int _handshake(self, Socket s) except -1:
        cdef object err = None
        try:
            self._ssl.do_handshake()
        except SSLWantReadError:
            return _TlsWriter._pull(self, s)
        except Exception as e:
            err = e
        if err is not None:
            return _TlsHandshake._failed(self, s, err)
        return _TlsHandshake._done(self, s)

    cdef int _done(self, Socket s) except -1:
        cdef object h
        cdef list pend
        self.hs = HS_DONE
        _note_churn(s.loop)
        s._arm_idle()
        if self.sslobj.context.verify_mode != CERT_NONE:
            self.authorized = self._ssl.getpeercert(True) is not None
        pend = self.pending
        self.pending = None
        self.pending_len = 0
        if pend:
            # Many small held writes -> as few records as their size allows, one raw write.
            data = pend[0] if len(pend) == 1 else b"".join(pend)
            pend = None
            self.coalescing += 1
            try:
                _TlsWriter._seal(self, s, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), data)
            finally:
                self.coalescing -= 1
            if s.state != ST_OPEN:
                return 0
        _TlsWriter._pull(self, s)
        if s.state != ST_OPEN:
            return 0
        h = s.ctx.on_handshake
        if self.pause_at_done:
            self.pause_at_done = False
            s.pause()
        if h is not None:
            _TlsHandshake._call_handshake(self, s, h, True, None)
        elif self.fire_open:
            self.fire_open = False
            s._fire_open()
        if s.state == ST_OPEN:
            # What the handshake held is queued now: an owed drain may be due, and end() called
            # before the handshake sends close_notify + FIN.
            s._flush()
        return 0

    cdef int _failed(self, Socket s, object err) except -1:
        cdef object h
        self.hs = HS_FAILED
        self.pending = None
        self.pending_len = 0
        if s.state == ST_OPEN:
            _TlsWriter._pull(self, s)          # the alert, if OpenSSL wrote one (best effort)
        h = s.ctx.on_handshake
        if h is not None and s.state != ST_CLOSED:
            _TlsHandshake._call_handshake(self, s, h, False, err)
        if s.state != ST_CLOSED:
            s._close(err)
        return 0

    cdef int _call_handshake(self, Socket s, object h, object ok, object err) except -1:
        if call_handler(s.loop, h, s, s.ctx.on_error, 2, ok, err) and s.state != ST_CLOSED:
            s._close(None)      # the handshake handler raised: the socket closes
        return 0

    cdef bint handshaking(self) noexcept:
        return self.hs < HS_DONE

    cdef int timed_out(self, Socket s) except -1:
        return _TlsHandshake._failed(self, s, TimeoutError(errno.ETIMEDOUT,
                                                           "TLS handshake timed out"))

    cdef int eof(self, Socket s) except -1:
        if self.hs == HS_RUNNING:
            return _TlsHandshake._failed(self, s, ssl.SSLEOFError(
                ssl.SSL_ERROR_EOF, "EOF occurred during the TLS handshake"))
        return 0

    cdef int before_fin(self, Socket s) except -1:
        if self.hs < HS_DONE:
            return 0        # the FIN follows the handshake and the writes it releases
        if self.hs == HS_DONE and not self.notify_sent:
            self.notify_sent = True
            try:
                self._ssl.shutdown()     # writes close_notify; then wants the peer's: ignored
            except Exception:
                pass
            _TlsWriter._pull(self, s)
            if s.state != ST_OPEN:
                return 0
        return 0 if s._pending() else 1

    cdef int closed(self, Socket s, object err) except -1:
        cdef object h = s.ctx.on_handshake
        cdef bint running = self.hs == HS_RUNNING
        _note_churn(s.loop)
        if self.hs != HS_DONE:
            self.hs = HS_FAILED
        self.pending = None
        self.pending_len = 0
        self.cork_buf = None
        self.corked = 0
        if running and h is not None and (s.flags & F_OPENED):
            # The handshake ends with the connection (a reset, a timeout, a local close): the
            # handshake handler hears it before `close`.
            if err is None:
                err = ConnectionAbortedError(errno.ECONNABORTED,
                                             "socket closed during the TLS handshake")
            call_handler(s.loop, h, s, s.ctx.on_error, 2, False, err)
        return 0
