# The relay: a.pipe(b) moves what `a` reads into `b`'s write path inside the loop, in C, with no
# Python object per chunk (docs/API.md §14).
#
# Two ways to move the bytes, chosen per pipe:
# (a's read loop is the socket's own, _SocketReader._on_readable; _relay_read picks the chunk's way)
#   buffered  recv into the loop's receive buffer and send from it (b's sink keeps what the kernel
#             refuses; when b is already backed up, recv goes straight into b's sink); TLS on
#             either side decrypts/encrypts here (a's TLS layer hands plaintext to _deliver,
#             which comes to _relay_put; b's TLS layer seals what _relay_put writes).
#   splice    Linux, plaintext both sides: splice(2) a -> kernel pipe -> b; the bytes never enter
#             the process (_relay_splice.pxi: the pump and its pool of kernel pipes).
# Backpressure: `used` = what b holds (b._held(): its sink, cork, TLS-held plaintext) plus the
# kernel pipe. At `hi` a stops being read (F_PIPE_HELD, its read interest off) and b owes the
# relay a drain (b._owe_drain()); b's writable event (the write room's _on_writable, which calls
# _relay_writable for a destination) restarts it at `lo`. So memory per relayed direction stays
# below hi + one read however slow b is. The relay never writes b's drain flags or writable
# interest itself: it asks the write room (_owe_drain, _backlog_grew, _settle, _pipe_ended).
# Half-close: a's FIN becomes b.end() once everything read from a is in b's write path; a relayed
# socket never closes itself on FIN (a relay is half-open by construction).
# Closing: a closed socket's pipes end first; then its partner closes (reset on an error) unless
# the partner is already finishing a clean shutdown of its own. pipe()/unpipe(): _relay_pipe.pxi.

cdef enum:
    RELAY_HWM = 128 * 1024
    RELAY_RECV = -0x40000000    # _relay_read: "recv into the loop's buffer" (no errno is this)
    # splice=None splices only while reads are at least this large: for small messages the two
    # splices and the pipe cost more than one recv and one send (benchmarks/RESULTS.md).
    BULK_READ = 16 * 1024

# splice=None: which path a plain TCP pipe takes. splice measured at 0.14-0.26 proxy CPU-s per GB
# on loopback against 0.37-0.63 for the buffered path (benchmarks/RESULTS.md, "Relay").
SPLICE_DEFAULT = True


include "_relay_splice.pxi"   # the pipe pool and the splice pump


# ---------------------------------------------------------------------------------------------
# Flow control


cdef inline Py_ssize_t _used(_Pipe p):
    return p.dst._held() + p.inpipe


cdef int _hold(_Pipe p) except -1:
    """dst holds hi bytes: stop reading src until dst's writable event brings it down to lo."""
    cdef Socket s = p.src, d = p.dst
    s.flags |= F_PIPE_HELD
    if s.state == ST_OPEN and (s.mask & BS_READABLE):
        s._set_mask(s.mask & ~BS_READABLE)
    # The writable event that releases src is owed by dst (armed now, or, while TLS holds
    # plaintext for its handshake, by the flush that ends the handshake).
    return d._owe_drain()


cdef int _release(_Pipe p) except -1:
    cdef Socket s = p.src
    s.flags &= ~F_PIPE_HELD
    if s.state == ST_OPEN and not (s.flags & (F_PAUSED | F_EOF)):
        s._set_mask(s.mask | BS_READABLE)
    return 0


# ---------------------------------------------------------------------------------------------
# Moving bytes


cdef int _relay_put(_Pipe p, char *buf, Py_ssize_t n) except -1:
    """n bytes read from src (plaintext) go to dst's write path; src is held at hi."""
    cdef Socket s = p.src, d = p.dst
    if n >= BULK_READ:
        p.bulk = True     # (adaptive: splice from the next read on)
    if d._write(buf, n, None) < 0:
        # dst can take no more (the user ended it): the pipe ends and these bytes, and what
        # follows, go to src's own `data` handler: nothing read is lost.
        if d.state == ST_CLOSED or s.state == ST_CLOSED:
            return 0
        _dissolve(p, True)
        return s._deliver(n)
    if (s.flags & F_PIPE_SRC) and d.state != ST_CLOSED and _used(p) >= p.hi:
        _hold(p)
    return 0


cdef inline void _count_read(Socket s, Py_ssize_t n) noexcept:
    s.bytes_read += n
    _touch(s, True)    # relayed bytes are activity (reads) for idle timeouts


cdef ssize_t _relay_read(Socket s, Py_ssize_t *want) except? -2:
    """One chunk of a relay source's read (the read loop is _read_loop, _sock_read.pxi), at most
    dst's room under hi: a splice, or a recv straight into a backed-up dst's sink; the result is
    the syscall's (or -EAGAIN: dst is full, src is held). RELAY_RECV: the read loop recv's at
    most *want into its buffer instead, and the chunk comes to _relay_put."""
    cdef Loop loop = s.loop
    cdef _Pipe p = s.ext.pipe_out
    cdef Socket d = p.dst
    cdef Py_ssize_t room = p.hi - _used(p)
    cdef ssize_t r
    cdef char *buf
    want[0] = 0
    if room <= 0:
        _hold(p)
        return -EAGAIN
    if p.splice and (p.rfd >= 0 or ((p.bulk or not p.adaptive) and _pipe_take(p))):
        want[0] = p.pcap - p.inpipe if p.pcap - p.inpipe < room else room
        if want[0] <= 0:
            _hold(p)
            return -EAGAIN
        r = bs_splice(s.fd, p.wfd, want[0])
        loop.n_recv += 1
        if r > 0:
            if r < BULK_READ:
                p.bulk = False        # (adaptive: back to recv/send once the pipe is empty)
            p.inpipe += r
            _count_read(s, r)
            _splice_out(p)
        elif r == 0 or r == -EAGAIN or r == -EWOULDBLOCK:
            if p.inpipe:
                # The socket is drained, or the pipe is full in slots though not in bytes (a
                # slot per segment): wait for dst to take some, then read on. (Linux's
                # tcp_splice_read returns 0, not EAGAIN, when the pipe cannot take the queued
                # data: 0 means end of input only when the pipe is empty.)
                _hold(p)
                r = -EAGAIN
            else:
                _pipe_give(p)         # an empty pipe goes back to the pool while src is quiet
        return r
    want[0] = loop.rbuf_size if loop.rbuf_size < room else room
    if ((d.flags & F_BACKED_UP) and d.cork_obj is None and d.state != ST_CLOSED
            and not (d.flags & (F_TLS | F_ENDING | F_SHUT_WR)) and not (s.flags & F_TLS)):
        # Plaintext into a backed-up dst: its sink is where these bytes would be copied to, so
        # read them there.
        buf = bs_sink_extend(&d.sink, want[0])
        if buf == NULL:
            raise MemoryError()
        r = bs_recv(s.fd, buf, want[0])
        loop.n_recv += 1
        bs_sink_truncate(&d.sink, d.sink.len - want[0] + (r if r > 0 else 0))
        if r > 0:
            _count_read(s, r)
            _touch(d, False)
            d._backlog_grew()
        return r
    return RELAY_RECV


cdef int _relay_readable(Socket s) except -1:
    """src is readable: the socket's read loop, with the relay's chunks (_relay_read)."""
    return _read_loop(s, <_ToRelay>0)


cdef int _relay_writable(Socket d) except -1:
    """dst's writable event, after the write room flushed dst's own sink: the kernel pipe's
    bytes follow; src restarts at lo. (The write room then settles dst's interest and takes
    the drain owed to the relay: no `drain` while piped into.)"""
    cdef _Pipe p = d.ext.pipe_in
    cdef Socket s = p.src
    if p.inpipe and not d._pending():
        _splice_out(p)
        if d.state != ST_OPEN or not (d.flags & F_PIPE_DST):
            return 0
    if (s.flags & F_PIPE_HELD) and _used(p) <= p.lo:
        _release(p)
    return 0


cdef int _relay_eof(Socket s) except -1:
    """src's FIN: dst.end() once what was read is in dst's write path (for splice, once the
    kernel pipe is empty). No `end` handler: the relay handles it."""
    cdef _Pipe p = s.ext.pipe_out
    cdef Socket d = p.dst
    if p.inpipe:
        p.eof = True
        _splice_out(p)
    elif d.state != ST_CLOSED:
        d._end()
    if s.state == ST_CLOSED:
        return 0
    if s.flags & F_SHUT_WR:
        return s._close(None)       # both directions are done
    if not (s.flags & F_PIPE_DST) and not s.ctx.allow_half_open:
        s._end()                    # a one-way pipe: the source follows its own half-open rule
    return 0


# ---------------------------------------------------------------------------------------------
# Starting, stopping, closing


cdef int _dissolve(_Pipe p, bint keep) except -1:
    """End one pipe: flags and references go; bytes read for dst are kept for it (keep) and a
    FIN still owed to it is sent after them."""
    cdef Socket s = p.src, d = p.dst
    cdef bint eof = p.eof
    s.flags &= ~F_PIPE_SRC
    s.ext.pipe_out = None
    d.flags &= ~F_PIPE_DST
    d.ext.pipe_in = None
    p.eof = False
    if p.inpipe and keep and d.state != ST_CLOSED:
        _spill(p)
    _pipe_give(p)
    if keep and d.state != ST_CLOSED:
        d._pipe_ended()           # the drain owed was the relay's
    if s.flags & F_PIPE_HELD:
        _release(p)
    if eof and keep and d.state != ST_CLOSED:
        d._end()
    return 0


cdef object _relay_detach(Socket s):
    """s is closing: end its pipes; returns [(partner, partner_was_feeding_s)]."""
    cdef _SockExt ext = s.ext
    cdef _Pipe p = ext.pipe_out, q = ext.pipe_in
    cdef list out = []
    # The pipe into s first (no side effects): then nothing the partner does while the pipe out
    # of s ends (its end() may close it) comes back to s.
    if q is not None:
        out.append([q.src, True])
        _dissolve(q, False)       # bytes on their way into s have nowhere to go
    if p is not None:
        if out and out[0][0] is p.dst:
            pass
        else:
            out.append([p.dst, False])
        _dissolve(p, True)        # what s sent on is still delivered
    return out


cdef int _relay_after_close(Socket s, list partners, object err) except -1:
    """After s closed: its partner closes too (reset, with the same error, when s failed)
    unless it is already finishing a clean shutdown (its FIN owed or sent, and nothing more to
    read for s)."""
    cdef Socket x
    for x, fed_s in partners:
        if x.state == ST_CLOSED:
            continue
        if (x.flags & (F_ENDING | F_SHUT_WR)) and (not fed_s or (x.flags & F_EOF)):
            continue
        if err is not None:
            if x.state == ST_OPEN:
                bs_set_linger0(x.fd)
            x._close(err)
        else:
            x.close()
    return 0


cdef int _relay_reset_partners(Socket s) except -1:
    """terminate() on a relayed socket: its partners are reset as well."""
    cdef _SockExt ext = s.ext
    if ext.pipe_out is not None and ext.pipe_out.dst.state == ST_OPEN:
        bs_set_linger0(ext.pipe_out.dst.fd)
    if ext.pipe_in is not None and ext.pipe_in.src.state == ST_OPEN:
        bs_set_linger0(ext.pipe_in.src.fd)
    return 0


include "_relay_pipe.pxi"     # pipe() and unpipe(): validation and setup
