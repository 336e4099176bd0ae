# TLS, writing: plaintext from write() is encrypted into the outgoing BIO and pulled out as raw
# writes; inside a handler it is corked (CORK_PLAIN) and sealed when the handler returns; before
# the handshake completes it is kept in order (`pending`). Also the state every part shares.


cdef class _TlsWriter(_TlsHook):
    """TLSState's state and its write side (TLSState extends _TlsHandshake extends this: one
    class body cannot span files). Calls between these parts name the class
    (`_TlsWriter._pull(self, s)`): a direct C call, as when TLSState was one final class."""
    cdef public object sslobj
    cdef public bint authorized
    cdef public bint server_side
    cdef object _ssl            # sslobj's _ssl._SSLSocket: called directly on the hot path
    cdef object _read           # bound methods, looked up once per connection
    cdef object _encrypt
    cdef object _bio_in         # incoming.write
    cdef object _bio_out        # outgoing.read
    cdef object incoming, outgoing
    cdef list pending           # plaintext written before the handshake completed
    cdef Py_ssize_t pending_len
    cdef Py_ssize_t held        # plaintext encrypted, not yet pulled (only while `coalescing`)
    cdef int hs
    cdef int coalescing         # releasing held writes: pull once after them all
    cdef bint fire_open         # fire `open` after the handshake (no `handshake` handler)
    cdef bint notify_sent       # close_notify written
    cdef bint notify_seen       # the peer's close_notify was read
    cdef bint pause_at_done     # pause_on_connect with a `handshake` handler: pause before it
    cdef object cork_buf        # plaintext written while corked: a bytes, then a bytearray
    cdef Py_ssize_t corked      # its length

    # -- moving ciphertext --

    cdef int _pull(self, Socket s) except -1:
        """Everything in the outgoing BIO goes to the socket as one raw write."""
        cdef bytes data
        cdef Py_ssize_t n
        self.held = 0
        data = self._bio_out()
        n = PyBytes_GET_SIZE(data)
        if n and s.state == ST_OPEN and not (s.flags & F_SHUT_WR):
            s._write_raw(PyBytes_AS_STRING(data), n, data)
        return 0

    # -- writing --

    cdef Py_ssize_t write(self, Socket s, const char *p, Py_ssize_t n, object keep) except -2:
        cdef Py_ssize_t room
        cdef object data
        if self.hs == HS_FAILED:
            return -1
        # high_water_mark caps plaintext before it is encrypted (ciphertext cannot be taken
        # back), before the handshake as after it: the write room applies it (_hwm_room, with
        # Group's whole-message rule) and owes the drain.
        if s.ctx.hwm >= 0:
            room = s._hwm_room(n)
            if (room < n and not (s.flags & (F_WHOLE | F_BACKED_UP))
                    and s._held() > _TlsWriter.buffered(self)):
                # Only corked bytes (no send refused them) stand in the way: they go to the
                # kernel first, as a plaintext write past the mark writes through its cork.
                # (Not for a Group message: its members get one send per tick.)
                s._flush()
                if s.state != ST_OPEN:
                    return -1
                room = s._hwm_room(n)
            if room < n:
                s._owe_drain()
                if s.state == ST_CLOSED:
                    return -1
                if room <= 0:
                    return 0
                n = room
        if self.hs == HS_DONE:
            # As for plaintext: a socket whose kernel buffer is full queues at once (its
            # backlog is what buffered_amount and high_water_mark see), it does not cork.
            if (s.loop.depth > 0 or s.cork_depth > 0) and not (s.flags & F_BACKED_UP):
                if self.corked + n <= CORK_PLAIN:
                    _TlsWriter._cork(self, s, p, n, keep)
                    return n
                _TlsWriter.seal_corked(self, s)          # what came before goes first
                if s.state != ST_OPEN:
                    return n
            _TlsWriter._seal(self, s, p, n, keep)
            return n
        if keep is not None and PyBytes_GET_SIZE(keep) == n:
            data = keep
        else:
            data = PyBytes_FromStringAndSize(p, n)
        self.pending.append(data)
        self.pending_len += n
        return n

    cdef int _seal(self, Socket s, const char *p, Py_ssize_t n, object keep) except -1:
        """Encrypt into the outgoing BIO and pull it out as a raw (corked) write: at once, or,
        while releasing held writes, once after them all (at least every CHUNK_OUT bytes)."""
        cdef Py_ssize_t k
        if n <= CHUNK_OUT:
            if keep is not None and PyBytes_GET_SIZE(keep) == n:
                self._encrypt(keep)
            else:
                self._encrypt(PyMemoryView_FromMemory(<char *>p, n, PyBUF_READ))
            self.held += n
            if self.coalescing and self.held <= CHUNK_OUT:
                return 0
            return _TlsWriter._pull(self, s)
        while n > 0 and s.state == ST_OPEN:
            k = CHUNK_OUT if n > CHUNK_OUT else n
            self._encrypt(PyMemoryView_FromMemory(<char *>p, k, PyBUF_READ))
            _TlsWriter._pull(self, s)
            p += k
            n -= k
        return 0

    cdef int _cork(self, Socket s, const char *p, Py_ssize_t n, object keep) except -1:
        """Keep plaintext written inside a handler; the handler's return seals it all (the
        socket goes on the loop's cork list, whose flush calls seal_corked)."""
        cdef Loop loop = s.loop
        cdef object buf = self.cork_buf
        if self.corked == 0:
            if keep is not None and PyBytes_GET_SIZE(keep) == n:
                self.cork_buf = keep          # one write: held, not copied
            else:
                self.cork_buf = PyBytes_FromStringAndSize(p, n)
        else:
            if type(buf) is bytes:
                buf = PyByteArray_FromStringAndSize(PyBytes_AS_STRING(buf), self.corked)
                self.cork_buf = buf
            PyByteArray_Resize(buf, self.corked + n)
            memcpy(PyByteArray_AS_STRING(buf) + self.corked, p, n)
        self.corked += n
        if loop.depth > 0 and not (s.flags & F_CORKED):
            s.flags |= F_CORKED
            s.cork_next = loop.cork_head
            loop.cork_head = s
        return 0

    cdef int seal_corked(self, Socket s) except -1:
        """Encrypt the corked plaintext (records of up to 16 KiB) and queue the ciphertext
        behind whatever raw bytes are already pending (the caller flushes them together)."""
        cdef object data = self.cork_buf
        cdef Py_ssize_t n = self.corked
        if n == 0:
            return 0
        self.cork_buf = None
        self.corked = 0
        if s.state != ST_OPEN or self.hs != HS_DONE:
            return 0
        s.cork_depth += 1        # the ciphertext joins the raw cork: order kept, one send
        try:
            if type(data) is bytes:
                _TlsWriter._seal(self, s, PyBytes_AS_STRING(data), n, data)
            else:
                _TlsWriter._seal(self, s, PyByteArray_AS_STRING(data), n, None)
        finally:
            s.cork_depth -= 1
        return 0

    cdef Py_ssize_t corked_len(self) noexcept:
        return self.corked

    cdef Py_ssize_t buffered(self) noexcept:
        return self.pending_len + self.held
