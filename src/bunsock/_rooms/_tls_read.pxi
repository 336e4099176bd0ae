# TLS, reading: ciphertext read by the loop is fed to the incoming BIO and decrypted back into the
# loop's receive buffer, then delivered (see the module docstring); paused sockets keep it.


@cython.final
cdef class TLSState(_TlsHandshake):
    """One connection's TLS layer. `sslobj` is the public ssl.SSLObject (for the accessors)."""

    # -- reading --

    cdef int feed(self, Socket s, char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t fed = 0, k
        if self.hs >= HS_FAILED:
            return 0
        while self.hs != HS_DONE:
            k = n - fed
            if k > CHUNK_IN:
                k = CHUNK_IN
            self._bio_in(PyMemoryView_FromMemory(p + fed, k, PyBUF_READ))
            fed += k
            self._handshake(s)
            if self.hs == HS_FAILED or s.state != ST_OPEN:
                return 0
            if self.hs != HS_DONE:
                if fed >= n:
                    return 0
            elif fed >= n and self.incoming.pending == 0:
                return 0
        return self._read_records(s, p, fed, n)

    cdef int _read_records(self, Socket s, char *src, Py_ssize_t fed, Py_ssize_t n) except -1:
        """Decrypt and deliver. src[fed:n] is ciphertext not yet in the incoming BIO; it is fed
        CHUNK_IN at a time, about one record ahead of the reads, so the BIO (whose buffer never
        shrinks) stays small per connection. src is normally the loop buffer that the plaintext
        is decrypted into: plaintext is never written past `fed` there."""
        cdef Loop loop = s.loop
        cdef Py_ssize_t off = 0, r, k, room, limit, size = loop.rbuf_size
        cdef bint overlap = src == loop.rbuf
        # A `data` call that keeps a memoryview hands the receive buffer to that view and the
        # loop allocates another (_recvbuf.pxi); the ciphertext still waiting in src must not be
        # freed when the view is dropped in a later call of this same pass.
        cdef _RecvBuf src_owner = loop.recv if overlap else None
        cdef object err = None
        cdef bint eof = False
        if s.flags & F_PAUSED:
            return self._stash(src, fed, n)
        while True:
            while fed < n and (self.incoming.pending < RECORD_ROOM
                               or (overlap and fed - off < RECORD_ROOM)):
                k = n - fed
                if k > CHUNK_IN:
                    k = CHUNK_IN
                self._bio_in(PyMemoryView_FromMemory(src + fed, k, PyBUF_READ))
                fed += k
            limit = fed if (overlap and fed < n) else size
            if limit - off < RECORD_ROOM and off > 0:
                s._deliver(off)
                off = 0
                if s.state != ST_OPEN or (s.flags & F_PAUSED) or self.hs != HS_DONE:
                    return self._stash(src, fed, n)
            room = limit - off
            try:
                r = self._read(room, PyMemoryView_FromMemory(loop.rbuf + off, room, PyBUF_WRITE))
            except SSLWantReadError:
                if fed < n:
                    continue
                break
            except SSLZeroReturnError:
                eof = True
                break
            except Exception as e:
                err = e
                break
            if r == 0:
                eof = True      # the peer's close_notify
                break
            off += r
            if (fed >= n and self.incoming.pending == 0
                    and (room >= RECORD_ROOM or self._ssl.pending() == 0)):
                break
        if off:
            s._deliver(off)
        elif self.outgoing.pending:
            self._pull(s)       # what OpenSSL said while reading (a key update, an alert)
        if s.state != ST_OPEN:
            return 0
        if err is not None:
            # A fatal TLS error after the handshake (bad record, alert from the peer): `error`
            # hears of it if the table has one (never the unraisable hook: it is the peer's
            # fault), then the socket closes with it.
            if self.outgoing.pending:
                self._pull(s)
            self.hs = HS_FAILED
            if s.ctx.on_error is not None:
                s._report(err)
                if s.state != ST_OPEN:
                    return 0
            return s._close(err)
        if eof:
            self.notify_seen = True
            if not (s.flags & (F_EOF | F_PAUSED)):
                # The peer's close_notify is its end of stream: `end` fires as on a FIN.
                return s._on_eof()
        return 0

    cdef int _stash(self, char *src, Py_ssize_t fed, Py_ssize_t n) except -1:
        # Reading stopped (paused) with ciphertext still in the loop buffer, which the next recv
        # overwrites: it all goes to the BIO, read after resume().
        if fed < n and self.hs == HS_DONE:
            self._bio_in(PyMemoryView_FromMemory(src + fed, n - fed, PyBUF_READ))
        return 0

    def _resume_read(self, Socket s):
        if s.state == ST_OPEN and self.hs == HS_DONE and not (s.flags & F_PAUSED):
            self._read_records(s, NULL, 0, 0)

    cdef int resumed(self, Socket s) except -1:
        # Records left in the BIO when the socket was paused: no readiness event will announce
        # them, so read them on the next iteration.
        if self.hs == HS_DONE and (self.incoming.pending or self._ssl.pending()
                                   or (self.notify_seen and not (s.flags & F_EOF))):
            s.loop.call_soon(self._resume_read, s)
        return 0
