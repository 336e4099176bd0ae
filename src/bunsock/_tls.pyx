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

TLSState is one class assembled from rooms (each extends the one before; Cython cannot split a
class body across files): _tls_write.pxi (_TlsWriter: the shared state, encrypting and corking
writes), _tls_handshake.pxi (_TlsHandshake: handshake, close_notify, teardown), _tls_read.pxi
(TLSState: feeding and decrypting reads). This file: constants and the entry points.
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


include "_rooms/_heaptrim.pxi"


cdef object SSLWantReadError = ssl.SSLWantReadError
cdef object SSLZeroReturnError = ssl.SSLZeroReturnError
cdef object CERT_NONE = ssl.CERT_NONE


include "_rooms/_tls_write.pxi"
include "_rooms/_tls_handshake.pxi"
include "_rooms/_tls_read.pxi"


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
