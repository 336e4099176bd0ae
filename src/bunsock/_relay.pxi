# The relay: a.pipe(b) moves what `a` reads into `b`'s write path inside the loop, in C, with no
# Python object per chunk (docs/API.md §14).
#
# Two ways to move the bytes, chosen per pipe:
#   buffered  recv into the loop's receive buffer and send from it (b's sink keeps what the kernel
#             refuses; when b is already backed up, recv goes straight into b's sink); TLS on
#             either side decrypts/encrypts here (a's TLS layer hands plaintext to _deliver,
#             which comes to _relay_put; b's TLS layer seals what _relay_put writes).
#   splice    Linux, plaintext both sides: splice(2) a -> kernel pipe -> b; the bytes never enter
#             the process. Pipes come from a small per-process pool, are taken when bytes move and
#             given back once empty (so only connections moving bytes hold one), and are bounded.
# Backpressure: `used` = what b holds (b._held(): its sink, cork, TLS-held plaintext) plus the
# kernel pipe. At `hi` a stops being read (F_PIPE_HELD, its read interest off) and b owes the
# relay a drain (b._owe_drain()); b's writable event (the write room's _on_writable, which calls
# _relay_writable for a destination) restarts it at `lo`. So memory per relayed direction stays
# below hi + one read however slow b is. The relay never writes b's drain flags or writable
# interest itself: it asks the write room (_owe_drain, _backlog_grew, _settle, _pipe_ended).
# Half-close: a's FIN becomes b.end() once everything read from a is in b's write path; a relayed
# socket never closes itself on FIN (a relay is half-open by construction).
# Closing: a closed socket's pipes end first; then its partner closes (reset on an error) unless
# the partner is already finishing a clean shutdown of its own.

cdef extern from "splice.h" nogil:
    int bs_splice_supported()
    int bs_pipe_open(int *fds, int size)
    ssize_t bs_splice(int fd_in, int fd_out, size_t n)

cdef extern from "<unistd.h>" nogil:
    ssize_t c_read "read"(int fd, void *buf, size_t n)

cdef enum:
    RELAY_HWM = 128 * 1024
    # splice=None splices only while reads are at least this large: for small messages the two
    # splices and the pipe cost more than one recv and one send (benchmarks/RESULTS.md).
    BULK_READ = 16 * 1024
    PIPE_SIZE = 256 * 1024      # asked of F_SETPIPE_SZ: fewer splices per MB than the 64 KiB default
    PIPE_POOL_MAX = 64          # empty pipes kept for reuse
    PIPE_LIVE_MAX = 4096        # pipes holding bytes at once (per process); beyond: buffered path

# The pool: triples (read fd, write fd, capacity). One per process: fds are process-wide, and the
# GIL serialises the loops of several threads.
cdef int _pool[PIPE_POOL_MAX * 3]
cdef int _npool = 0
cdef int _nlive = 0
# Pooled pipes are bounded in time as well as in number: a sweep every _pool_idle_s closes the
# pool when no pipe was taken during the whole period, so a process that stopped splicing gives
# its pipes (2 fds and up to PIPE_SIZE of kernel memory each) back.
cdef unsigned long _ntakes = 0
cdef unsigned long _ntakes_swept = 0
cdef double _pool_idle_s = 10.0
cdef object _pool_timer = None

# splice=None: which path a plain TCP pipe takes. splice measured at 0.14-0.26 proxy CPU-s per GB
# on loopback against 0.37-0.63 for the buffered path (benchmarks/RESULTS.md, "Relay").
SPLICE_DEFAULT = True


def _pool_after_fork():
    # A pipe shared with the parent would mix two processes' bytes: the child drops the pool.
    global _npool, _nlive
    cdef int i
    for i in range(_npool):
        c_close(_pool[3 * i])
        c_close(_pool[3 * i + 1])
    _npool = 0
    _nlive = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool_after_fork)


def relay_pool_clear():
    """Close the pooled empty pipes (tests count fds; a process may also want them back)."""
    global _npool
    cdef int i
    for i in range(_npool):
        c_close(_pool[3 * i])
        c_close(_pool[3 * i + 1])
    _npool = 0


def _relay_pool_idle(double seconds):
    """(tests) How long pooled pipes may sit unused before the sweep closes them."""
    global _pool_idle_s
    if not seconds > 0:
        raise ValueError("the pool's idle period must be > 0 seconds, not %r" % seconds)
    _pool_idle_s = seconds


def _pool_sweep(Loop loop):
    global _ntakes_swept, _pool_timer
    _pool_timer = None
    if _ntakes == _ntakes_swept:
        relay_pool_clear()
    _ntakes_swept = _ntakes
    if _npool or _nlive:
        _pool_arm(loop)


cdef int _pool_arm(Loop loop) except -1:
    # Armed when a splice pipe is set up (not per chunk); the timer does not keep the loop alive.
    global _pool_timer
    if _pool_timer is not None and (<Timer>_pool_timer).active and (<Timer>_pool_timer).loop is loop:
        return 0
    if loop.closed:
        return 0
    _pool_timer = loop._timer(_pool_idle_s, 0, _pool_sweep, (loop,))
    _pool_timer.unref()
    return 0


def relay_stats():
    """Pipes of the splice path: {"pooled": empty pipes kept, "live": pipes holding bytes}."""
    return {"pooled": _npool, "live": _nlive}


cdef bint _pipe_take(_Pipe p) noexcept:
    global _npool, _nlive, _ntakes
    cdef int fds[2]
    cdef int cap
    _ntakes += 1
    if _npool:
        _npool -= 1
        p.rfd = _pool[3 * _npool]
        p.wfd = _pool[3 * _npool + 1]
        p.pcap = _pool[3 * _npool + 2]
    else:
        if _nlive >= PIPE_LIVE_MAX:
            return False
        cap = bs_pipe_open(fds, PIPE_SIZE)
        if cap <= 0:
            return False       # EMFILE and the like: this read takes the buffered path
        p.rfd = fds[0]
        p.wfd = fds[1]
        p.pcap = cap
    _nlive += 1
    return True


cdef void _pipe_give(_Pipe p) noexcept:
    """Back to the pool when empty; a pipe still holding bytes (its relay died) is closed."""
    global _npool, _nlive
    if p.rfd < 0:
        return
    _nlive -= 1
    if p.inpipe == 0 and _npool < PIPE_POOL_MAX:
        _pool[3 * _npool] = p.rfd
        _pool[3 * _npool + 1] = p.wfd
        _pool[3 * _npool + 2] = <int>p.pcap
        _npool += 1
    else:
        c_close(p.rfd)
        c_close(p.wfd)
    p.rfd = p.wfd = -1
    p.inpipe = 0


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


cdef int _splice_out(_Pipe p) except -1:
    """Kernel pipe -> dst, after anything dst's own sink holds (that is older)."""
    cdef Socket d = p.dst
    cdef ssize_t m
    cdef Py_ssize_t want
    if d.state != ST_OPEN or d._pending():
        return d._settle()      # the bytes in the pipe keep dst's writable event coming
    while p.inpipe > 0:
        want = p.inpipe
        m = bs_splice(p.rfd, d.fd, want)
        d.loop.n_send += 1
        if m > 0:
            p.inpipe -= m
            d.bytes_written += m
            _touch(d, False)
            if m < want:
                break         # the socket buffer is full: skip the EAGAIN round trip
        elif m == -EAGAIN or m == -EWOULDBLOCK or m == 0:
            break
        else:
            return d._fail(<int>-m)
    if p.inpipe:
        return d._settle()      # dst's writable event continues
    _pipe_give(p)
    if p.eof:
        p.eof = False
        d._end()          # src's FIN, now that everything read before it is in the kernel
    return d._settle()


cdef int _spill(_Pipe p) except -1:
    """Move what the kernel pipe holds into dst's sink (behind what the sink holds): before a
    user write or end() on dst, and when the pipe ends. Nothing is lost and order is kept."""
    cdef Socket d = p.dst
    cdef Py_ssize_t n = p.inpipe, got = 0
    cdef ssize_t r
    cdef char *buf
    if n == 0 or p.rfd < 0:
        return 0
    if d.state != ST_CLOSED:
        d._spill_cork()
        buf = bs_sink_extend(&d.sink, n)
        if buf == NULL:
            raise MemoryError()
        while got < n:
            r = c_read(p.rfd, buf + got, n - got)
            if r <= 0:
                if r < 0 and errno_value() == EINTR:
                    continue
                break
            got += r
        if got < n:
            bs_sink_truncate(&d.sink, d.sink.len - (n - got))
        p.inpipe = 0
        _pipe_give(p)
        d._backlog_grew()
    else:
        _pipe_give(p)      # closes it: the bytes had nowhere to go
    return 0


cdef int _relay_spill_in(Socket d) except -1:
    cdef _Pipe p = d.ext.pipe_in
    if p.inpipe:
        _spill(p)
    return 0


cdef inline void _count_read(Socket s, Py_ssize_t n) noexcept:
    s.bytes_read += n
    _touch(s, True)    # relayed bytes are activity (reads) for idle timeouts


cdef int _relay_readable(Socket s) except -1:
    """src is readable: move up to its read budget (and dst's room) across."""
    cdef Loop loop = s.loop
    cdef _Pipe p = s.ext.pipe_out
    cdef Socket d = p.dst
    cdef Py_ssize_t budget = loop.read_budget, room, want
    cdef ssize_t n
    cdef char *buf
    while True:
        room = p.hi - _used(p)
        if room <= 0:
            return _hold(p)
        if p.splice and (p.rfd >= 0 or ((p.bulk or not p.adaptive) and _pipe_take(p))):
            want = p.pcap - p.inpipe
            if want > room:
                want = room
            if want <= 0:
                return _hold(p)
            n = bs_splice(s.fd, p.wfd, want)
            loop.n_recv += 1
            if n > 0:
                if n < BULK_READ:
                    p.bulk = False        # (adaptive: back to recv/send once the pipe is empty)
                p.inpipe += n
                _count_read(s, n)
                _splice_out(p)
            elif (n == 0 or n == -EAGAIN or n == -EWOULDBLOCK) and p.inpipe:
                # The socket is drained, or the pipe is full in slots though not in bytes (a
                # slot per segment): wait for dst to take some, then read on. (Linux's
                # tcp_splice_read returns 0, not EAGAIN, when the pipe cannot take the queued
                # data: 0 means end of input only when the pipe is empty.)
                return _hold(p)
        else:
            want = loop.rbuf_size if room > loop.rbuf_size else room
            if ((d.flags & F_BACKED_UP) and d.cork_obj is None and d.state != ST_CLOSED
                    and not (d.flags & (F_TLS | F_ENDING | F_SHUT_WR)) and not (s.flags & F_TLS)):
                # Plaintext into a backed-up dst: its sink is where these bytes would be copied
                # to, so read them there.
                buf = bs_sink_extend(&d.sink, want)
                if buf == NULL:
                    raise MemoryError()
                n = bs_recv(s.fd, buf, want)
                loop.n_recv += 1
                bs_sink_truncate(&d.sink, d.sink.len - want + (n if n > 0 else 0))
                if n > 0:
                    _count_read(s, n)
                    _touch(d, False)
                    d._backlog_grew()
            else:
                n = bs_recv(s.fd, loop.rbuf, want)
                loop.n_recv += 1
                if n > 0:
                    if n >= BULK_READ:
                        p.bulk = True     # (adaptive: splice from the next read on)
                    _count_read(s, n)
                    if s.flags & F_TLS:
                        (<_TlsHook>s.ext.tls).feed(s, loop.rbuf, n)     # -> _deliver -> _relay_put
                    else:
                        _relay_put(p, loop.rbuf, n)
        if n > 0:
            if (s.state == ST_CLOSED or (s.flags & (F_PAUSED | F_EOF | F_PIPE_HELD))
                    or not (s.flags & F_PIPE_SRC)):
                return 0      # (the pipe ended inside: the next event reads for `data`)
            if n < want:
                return 0      # the kernel queue is empty (level-triggered polling tells us more)
            budget -= n
            if budget <= 0:
                return 0
        elif n == 0:
            if p.rfd >= 0 and p.inpipe == 0:
                _pipe_give(p)
            return s._on_eof()
        elif n == -EAGAIN or n == -EWOULDBLOCK:
            if p.rfd >= 0 and p.inpipe == 0:
                _pipe_give(p)
            return 0
        else:
            return s._fail(<int>-n)


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


cdef object _pipe(Socket s, object dest, object hwm, object lwm, object splice):
    cdef Socket d
    cdef _Pipe p
    cdef Py_ssize_t hi, lo
    cdef bint use_splice
    _check_thread(s.loop)
    if not isinstance(dest, Socket):
        raise TypeError("pipe() needs a bunsock.Socket to relay into, not %s"
                        % type(dest).__name__)
    d = <Socket>dest
    if d is s:
        raise ValueError("a socket cannot be piped into itself")
    if s.state == ST_CLOSED or d.state == ST_CLOSED:
        raise ValueError("pipe() needs two sockets that are not closed")
    if s.loop is not d.loop:
        raise ValueError("pipe() needs two sockets of the same loop")
    if s.flags & F_PIPE_SRC:
        raise ValueError("this socket is already piped; call unpipe() first")
    if d.flags & F_PIPE_DST:
        raise ValueError("the destination already has a pipe into it")
    if d.flags & (F_ENDING | F_SHUT_WR):
        raise ValueError("the destination has ended: nothing can be relayed into it")
    hi = RELAY_HWM if hwm is None else _mark("high_water_mark", hwm, 1)
    lo = hi // 4 if lwm is None else _mark("low_water_mark", lwm, 0)
    if lo > hi:
        raise ValueError("low_water_mark (%d) must not exceed high_water_mark (%d)" % (lo, hi))
    plain = not (s.flags & F_TLS or d.flags & F_TLS or s.ctx.tls is not None
                 or d.ctx.tls is not None)
    if splice is None:
        use_splice = SPLICE_DEFAULT and plain and bs_splice_supported()
    elif splice:
        if not bs_splice_supported():
            raise OSError(_errno.ENOSYS, "splice(2) is not available on this platform")
        if not plain:
            raise ValueError("splice=True needs plaintext sockets on both sides (TLS is "
                             "decrypted in the process: use the buffered path)")
        use_splice = True
    else:
        use_splice = False
    p = _Pipe.__new__(_Pipe)
    p.src = s
    p.dst = d
    p.hi = hi
    p.lo = lo
    p.rfd = p.wfd = -1
    p.splice = use_splice
    p.adaptive = splice is None
    if use_splice:
        _pool_arm(s.loop)
    s._get_ext().pipe_out = p
    d._get_ext().pipe_in = p
    s.flags |= F_PIPE_SRC
    d.flags |= F_PIPE_DST
    if s.flags & F_FRAMED:
        _frames_to_pipe(s, d)        # bytes read and not yet delivered go first
    if s.flags & F_EOF:
        # The FIN was read before the pipe existed (its `end` fired): forward it now.
        d._end()
        return d
    # pipe() resumes the source: reading is what a relay is for.
    if s.flags & F_PAUSED:
        (<Socket>s).resume()
    elif s.state == ST_OPEN and not (s.mask & BS_READABLE):
        s._set_mask(s.mask | BS_READABLE)
    if _used(p) >= p.hi:
        _hold(p)
    return d


cdef Py_ssize_t _mark(str name, object v, Py_ssize_t lo) except -1:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("%s must be an int, not %s" % (name, type(v).__name__))
    if v < lo or v > (1 << 40):
        raise ValueError("%s must be in %d..%d, not %d" % (name, lo, 1 << 40, v))
    return v


cdef object _unpipe(Socket s):
    cdef _Pipe p
    cdef Socket d
    _check_thread(s.loop)
    if not (s.flags & F_PIPE_SRC):
        return None
    p = s.ext.pipe_out
    d = p.dst
    _dissolve(p, True)        # (what it left in d's sink keeps d's writable interest)
    return d
