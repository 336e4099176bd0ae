# cython: language_level=3
"""TLS for bunsock: the standard library's ``ssl`` (an ``SSLObject`` over two ``MemoryBIO``s),
driven by the bunsock loop.

The loop calls the `_TlsHook` methods of a socket's `TLSState` instead of its plaintext paths:
every raw read goes to `feed`, every user write to `write`, the peer's FIN to `eof`, our FIN waits
for `before_fin` (close_notify first).

Hot path, one 1 KiB echo message on a server: `feed` copies the ciphertext from the loop's receive
buffer into the incoming BIO, decrypts straight back into that buffer (`read(n, buffer)`: no
per-call allocation; CPython's `SSLObject.read(n)` would allocate n bytes), calls `data` once with
exactly what arrived, and the writes made by that handler are encrypted into the outgoing BIO and
pulled out as ONE bytes object, written raw once (corked like any handler write). The
`_ssl._SSLSocket` under the public `SSLObject` is called directly (the public wrapper is a Python
frame per call), and the read loop stops on ``incoming.pending == 0`` instead of waiting for the
`SSLWantReadError` that a read of an empty BIO raises (raising it costs more than the decryption of
a small record).

Writes made before the handshake completes are kept (in order) and sent after it (Bun loses them).
"""
cimport cython
from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_FromStringAndSize,
                               PyByteArray_GET_SIZE, PyByteArray_Resize)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from ._loop cimport *

import errno
import os
import ssl

from ._tlsconfig import client_context, server_context

cdef extern from "Python.h":
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    int PyBUF_READ
    int PyBUF_WRITE

# handshake state
cdef enum:
    HS_IDLE = 0        # attached to a client that is still connecting
    HS_RUNNING = 1
    HS_DONE = 2
    HS_FAILED = 3      # or closed

cdef enum:
    # A TLS record carries at most 16 KiB of plaintext. A read() with at least this much room
    # takes a whole record, so nothing can stay buffered inside OpenSSL: `incoming.pending == 0`
    # then proves there is nothing more to read.
    RECORD_ROOM = 16384 + 1024
    # Ciphertext goes into the incoming BIO, and plaintext into the outgoing one, this much at a
    # time: a MemoryBIO's buffer grows to its largest content and never shrinks, so feeding a
    # 256 KiB read (or encrypting an 8 MiB write) at once would leave that much allocated for
    # the rest of the connection's life.
    CHUNK_IN = 16384
    CHUNK_OUT = 65536
    # Plaintext written inside one handler (or cork() block) is kept up to this much and sealed
    # when it returns: records of up to 16 KiB instead of one record per write() (the same
    # limit as the loop's raw cork).
    CORK_PLAIN = 65536

# Bound on a handshake when the socket has no idle timeout (seconds; Node's default is 120 s).
cdef double HANDSHAKE_TIMEOUT_S = 30.0


include "_heaptrim.pxi"


cdef object SSLWantReadError = ssl.SSLWantReadError
cdef object SSLZeroReturnError = ssl.SSLZeroReturnError
cdef object CERT_NONE = ssl.CERT_NONE


@cython.final
cdef class TLSState(_TlsHook):
    """One connection's TLS layer. `sslobj` is the public ssl.SSLObject (for the accessors)."""
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

    # -- handshake --

    cdef int start(self, Socket s) except -1:
        self.hs = HS_RUNNING
        # A handshake that stalls is bounded: by the socket's idle timeout when it has one,
        # else by HANDSHAKE_TIMEOUT_S (the socket's timer; _done puts the idle timeout back).
        s.loop._arm(&s.t, s.timeout_ms / 1000.0 if s.timeout_ms else HANDSHAKE_TIMEOUT_S)
        if self.server_side:
            return 0      # nothing to say before the ClientHello
        return self._handshake(s)

    cdef int _handshake(self, Socket s) except -1:
        cdef object err = None
        try:
            self._ssl.do_handshake()
        except SSLWantReadError:
            return self._pull(s)
        except Exception as e:
            err = e
        if err is not None:
            return self._failed(s, err)
        return self._done(s)

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
                self._seal(s, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), data)
            finally:
                self.coalescing -= 1
            if s.state != ST_OPEN:
                return 0
        self._pull(s)
        if s.state != ST_OPEN:
            return 0
        h = s.ctx.on_handshake
        if self.pause_at_done:
            self.pause_at_done = False
            s.pause()
        if h is not None:
            self._call_handshake(s, h, True, None)
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
            self._pull(s)          # the alert, if OpenSSL wrote one (best effort)
        h = s.ctx.on_handshake
        if h is not None and s.state != ST_CLOSED:
            self._call_handshake(s, h, False, err)
        if s.state != ST_CLOSED:
            s._close(err)
        return 0

    cdef int _call_handshake(self, Socket s, object h, object ok, object err) except -1:
        if call_handler(s.loop, h, s, s.ctx.on_error, 2, ok, err) and s.state != ST_CLOSED:
            s._close(None)      # the handshake handler raised: the socket closes
        return 0

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

    cdef int eof(self, Socket s) except -1:
        if self.hs == HS_RUNNING:
            return self._failed(s, ssl.SSLEOFError(ssl.SSL_ERROR_EOF,
                                                   "EOF occurred during the TLS handshake"))
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
                    and s._held() > self.buffered()):
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
                    self._cork(s, p, n, keep)
                    return n
                self.seal_corked(s)          # what came before goes first
                if s.state != ST_OPEN:
                    return n
            self._seal(s, p, n, keep)
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
            return self._pull(s)
        while n > 0 and s.state == ST_OPEN:
            k = CHUNK_OUT if n > CHUNK_OUT else n
            self._encrypt(PyMemoryView_FromMemory(<char *>p, k, PyBUF_READ))
            self._pull(s)
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
                self._seal(s, PyBytes_AS_STRING(data), n, data)
            else:
                self._seal(s, PyByteArray_AS_STRING(data), n, None)
        finally:
            s.cork_depth -= 1
        return 0

    cdef Py_ssize_t corked_len(self) noexcept:
        return self.corked

    cdef Py_ssize_t buffered(self) noexcept:
        return self.pending_len + self.held

    cdef int before_fin(self, Socket s) except -1:
        if self.hs < HS_DONE:
            return 0        # the FIN follows the handshake and the writes it releases
        if self.hs == HS_DONE and not self.notify_sent:
            self.notify_sent = True
            try:
                self._ssl.shutdown()     # writes close_notify; then wants the peer's: ignored
            except Exception:
                pass
            self._pull(s)
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

    cdef bint handshaking(self) noexcept:
        return self.hs < HS_DONE

    cdef int timed_out(self, Socket s) except -1:
        return self._failed(s, TimeoutError(errno.ETIMEDOUT, "TLS handshake timed out"))


cdef TLSState _new_state(sslctx, bint server_side, server_hostname, session=None):
    cdef TLSState t = TLSState.__new__(TLSState)
    t.incoming = ssl.MemoryBIO()
    t.outgoing = ssl.MemoryBIO()
    t.sslobj = sslctx.wrap_bio(t.incoming, t.outgoing, server_side=server_side,
                               server_hostname=None if server_side else server_hostname,
                               session=session)
    t._ssl = getattr(t.sslobj, "_sslobj", t.sslobj)
    t._read = t._ssl.read
    t._encrypt = t._ssl.write
    t._bio_in = t.incoming.write
    t._bio_out = t.outgoing.read
    t.server_side = server_side
    t.pending = []
    return t


# ---------------------------------------------------------------------------------------------
# Entry points used by the loop (_loop.pyx) and the API (_api.py)


def attach(Socket s, sslctx, server_side, server_hostname, session=None):
    """Give a client socket that is still connecting its TLS layer, so that writes made before
    the connection and the handshake complete are kept in order and sent after the handshake.
    session: an ssl.SSLSession to resume (checked against sslctx by client_context)."""
    cdef TLSState t = _new_state(sslctx, server_side, server_hostname, session)
    t.fire_open = True
    s._get_ext().tls = t
    s.flags |= F_TLS


def start_from_ctx(Socket s, sslctx, server_side, server_hostname):
    """Called by the loop instead of `open` for an accepted or connected socket of a TLS
    listener/client. With a `handshake` handler, `open` fires now and `handshake` later; without
    one, `open` fires after a successful handshake."""
    cdef _SockExt ext = s._get_ext()
    cdef TLSState t = ext.tls
    if t is None:
        try:
            t = _new_state(sslctx, server_side, server_hostname)
        except Exception as e:
            s._close(e)
            return
        ext.tls = t
        s.flags |= F_TLS
    t.fire_open = True
    if s.ctx.on_handshake is not None:
        t.fire_open = False
        t.pause_at_done = s.ctx.pause_on_connect
        s._fire_open()
        if s.state != ST_OPEN:
            return
    t.start(s)


def upgrade(Socket s, tls, server_side, server_hostname):
    """STARTTLS: switch an open plaintext socket to TLS in place (same fd, same Socket).

    Bytes already written in plaintext stay ahead of the handshake in the socket's buffer; every
    byte read from now on goes to TLS. `handshake(sock, ok, err)` fires when done; without that
    handler a failure closes the socket with `close(sock, err)`. `open` does not fire again."""
    cdef _SockExt ext
    cdef TLSState t
    if s.state != ST_OPEN or (s.flags & (F_ENDING | F_SHUT_WR)):
        raise ValueError("upgrade_tls() needs an open socket that has not ended")
    ext = s._get_ext()
    if ext.tls is not None:
        raise ValueError("this socket already uses TLS")
    if server_side:
        sslctx = server_context(tls)
        server_hostname = None
    else:
        sslctx, server_hostname = client_context(
            tls, server_hostname if server_hostname is not None else ext.host)
    t = _new_state(sslctx, server_side, server_hostname)
    t.fire_open = False
    ext.tls = t
    s.flags |= F_TLS
    t.start(s)
