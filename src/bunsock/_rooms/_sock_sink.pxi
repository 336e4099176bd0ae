# The sink's storage: one release policy, here (the C sink never frees storage by itself).
# Storage up to BS_SINK_KEEP (64 KiB) stays for the socket's life: a typical backlog fits it, and
# an idle socket that never backed up holds none. Storage above it is released once a whole
# period of SPARE_SWEEP_S passes in which the sink never needed more than BS_SINK_KEEP (the sink
# marks `wide` when it does). That trades at most ~1 s of a large buffer per connection that went
# quiet (memory per idle connection) against regrowing 16 KiB -> 2 MiB, recopying at every
# doubling, in each backpressure episode of a busy one (a proxy towards a slow reader): a sink
# that keeps needing its storage, however briefly each time, keeps it. A socket enters the
# sweep's list (F_SPARE) when a flush empties a large sink; the sweep runs only while the list
# is not empty and does not keep the loop alive.

cdef double SPARE_SWEEP_S = 0.5


cdef int _spare_add(_SocketWriter s) except -1:
    cdef Loop loop = s.loop
    s.flags |= F_SPARE
    if loop.spare is None:
        loop.spare = []
    loop.spare.append(s)
    if loop.spare_timer is None or not loop.spare_timer.active:
        _spare_arm(loop)
    return 0


cdef int _spare_arm(Loop loop) except -1:
    loop.spare_timer = loop._timer(SPARE_SWEEP_S, 0, _spare_sweep, (loop,))
    loop.spare_timer.unref()
    return 0


def _spare_sweep(Loop loop):
    cdef _SocketWriter s
    cdef list keep = []
    for s in loop.spare:
        if s.state == ST_CLOSED or s.sink.cap <= BS_SINK_KEEP:
            s.flags &= ~F_SPARE
        elif s.sink.wide or s.sink.len:
            s.sink.wide = 0          # used (or in use) this period: looked at again next period
            keep.append(s)
        else:
            bs_sink_free(&s.sink)    # a whole period without needing it
            s.flags &= ~F_SPARE
    loop.spare_timer = None
    if keep:
        loop.spare = keep
        _spare_arm(loop)
    else:
        loop.spare = None


cdef int _spare_drop(_SocketWriter s) except -1:
    """A closing socket leaves the list at once (its sink is freed by the teardown anyway)."""
    s.flags &= ~F_SPARE
    if s.loop.spare is not None:
        s.loop.spare.remove(s)
    return 0


def _sink_storage(_SocketWriter s):
    """(tests) The socket's sink: (bytes of storage, its address), to see it released or kept."""
    return (s.sink.cap, <size_t>s.sink.buf)


def _sink_release_period(double seconds):
    """(tests) How long a large sink's storage may go unneeded before it is released."""
    global SPARE_SWEEP_S
    if not seconds > 0:
        raise ValueError("the sink release period must be > 0 seconds, not %r" % seconds)
    SPARE_SWEEP_S = seconds
