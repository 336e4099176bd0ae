# The relay's splice path (Linux, plaintext both sides): src -> kernel pipe -> dst with splice(2),
# the bytes never entering the process; the pool of kernel pipes it borrows from; and the spill of
# a kernel pipe's bytes into dst's sink when a user write, end() or the pipe's end needs them in
# order there. The relay (_relay.pxi) decides when to splice; this file moves the bytes.
#
# Pipes come from a small per-process pool, are taken when bytes move and given back once empty
# (so only connections moving bytes hold one), and are bounded in number and in idle time.

cdef extern from "splice.h" nogil:
    int bs_splice_supported()
    int bs_pipe_open(int *fds, int size)
    ssize_t bs_splice(int fd_in, int fd_out, size_t n)

cdef extern from "<unistd.h>" nogil:
    ssize_t c_read "read"(int fd, void *buf, size_t n)

cdef enum:
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




cdef int _splice_out(_Pipe p) except -1:
    """Kernel pipe -> dst, after anything dst's own sink holds (that is older)."""
    cdef Socket d = p.dst
    cdef ssize_t m
    cdef Py_ssize_t want
    if d.state != ST_OPEN or d._pending():
        return d._settle()      # the bytes in the pipe keep dst's writable event coming
    while p.inpipe > 0:
        want = p.inpipe
        m = _sent(d, d.loop, bs_splice(p.rfd, d.fd, want))     # (the write room's reading)
        if m <= 0:
            if m < 0:
                return 0      # (d failed)
            break
        p.inpipe -= m
        _touch(d, False)
        if m < want:
            break
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
