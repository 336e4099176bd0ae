# Framing, delivery: bytes read (or decrypted) for a framed socket are cut into whole messages by
# the C scanner and handed to `data`; what a read leaves unfinished is held (_framing.pxi says
# how). Also pause()/resume(), EOF and pipe() for a framed socket.


cdef inline bint _halted(Socket s, _FrameState st, unsigned int gen):
    """Delivery stops: closed, paused, piped (pipe() inside `data`), or a new rule."""
    return (s.state == ST_CLOSED or (s.flags & (F_PAUSED | F_PIPE_SRC)) != 0
            or st.gen != gen)


cdef int _frames_feed(Socket s, char *p, Py_ssize_t n) except -1:
    """_deliver on a framed socket: p[0, n) just read (the loop buffer; TLS: plaintext)."""
    cdef Loop loop = s.loop
    cdef _FrameState st = <_FrameState>s.ext.frames
    loop.depth += 1          # every message of this read in one cork scope
    st.busy += 1
    try:
        _frames_feed_in(s, st, p, n)
    finally:
        st.busy -= 1
        if st.busy == 0:
            _frames_tidy(s, st)
        _leave_callback(loop)
    return 0


cdef int _frames_tidy(Socket s, _FrameState st) except -1:
    """After a delivery loop: reset an emptied held buffer; a socket switched to raw whose
    held bytes are out drops its framing state."""
    if st.b.head == st.b.len:
        bs_fbuf_consume(&st.b, 0)
    if (st.rule is None and not bs_fbuf_pending(&st.b) and s.ext is not None
            and s.ext.frames is st):
        _frames_drop(s)
    return 0


cdef int _frames_feed_in(Socket s, _FrameState st, char *p, Py_ssize_t n) except -1:
    # The buffer p points into: a memoryview message kept past its call takes it over from the
    # loop (which then reads into a new one), and this reference keeps p valid until we are done.
    cdef _RecvBuf owner = s.loop.recv
    cdef Py_ssize_t pos = 0, k
    cdef unsigned int gen = st.gen
    cdef int r
    cdef bs_frame f
    f.consumed = 0
    if bs_fbuf_pending(&st.b) or st.rule is None:
        if st.rule is not None and not st.stalled:
            # The held partial frame: take from this read just what completes it.
            k = bs_frame_complete(&st.rule.r, &st.b, p, n)
            if k < 0:
                return _frames_fail(s, st, <int>k)
            pos = k
        else:
            if bs_fbuf_append(&st.b, p, n) < 0:
                raise MemoryError()
            pos = n
        _frames_go(s, st)
        if s.state == ST_CLOSED:
            return 0
        if pos == n:
            return 0
        if bs_fbuf_pending(&st.b) or _halted(s, st, gen) or st.rule is None:
            return _frames_rest(s, st, p + pos, n - pos, 0, gen)
    if s.flags & F_PAUSED:
        # (bytes handed over while paused: a relay whose destination ended) held as they are
        return _frames_rest(s, st, p + pos, n - pos, 0, gen)
    # Nothing held: the frames are scanned where they were read.
    while pos < n:
        r = bs_frame_find(&st.rule.r, p + pos, n - pos, 0, &f)
        if r == 0:
            break
        if r < 0:
            return _frames_fail(s, st, r)
        pos += f.consumed        # before the call: what follows it is what is undelivered
        _frames_emit(s, p + pos - f.consumed + f.off, f.len, owner)
        f.consumed = 0
        if _halted(s, st, gen):
            break
    return _frames_rest(s, st, p + pos, n - pos, f.consumed, gen)


cdef int _frames_rest(Socket s, _FrameState st, char *p, Py_ssize_t n, size_t scanned,
                      unsigned int gen) except -1:
    """Delivery stopped at p with n bytes of the read left: they go to the relay (pipe() inside
    `data`), or are held (a partial frame; or, after pause() or a new rule, as they are)."""
    cdef _Pipe pipe
    if n == 0 or s.state == ST_CLOSED:
        return 0
    if s.flags & F_PIPE_SRC:
        pipe = s.ext.pipe_out
        if pipe.dst._write(p, n, None) >= 0:
            if (s.flags & F_PIPE_SRC) and _used(pipe) >= pipe.hi:
                _hold(pipe)
            return 0
        # The destination ended: the pipe goes and these bytes stay this socket's.
        if s.state == ST_CLOSED:
            return 0
        if s.flags & F_PIPE_SRC:
            _dissolve(pipe, True)
    if (not bs_fbuf_pending(&st.b) and st.gen == gen and st.rule is not None
            and not (s.flags & F_PAUSED)):
        # The common tail: the start of the next frame, already scanned this far.
        if bs_fbuf_append(&st.b, p, n) < 0:
            raise MemoryError()
        st.b.scanned = scanned
        return 0
    if bs_fbuf_append(&st.b, p, n) < 0:
        raise MemoryError()
    st.stalled = True
    return _frames_go(s, st)


cdef int _frames_go(Socket s, _FrameState st) except -1:
    """Deliver what the held bytes make whole, under the current rule, until they run out or
    delivery stops (a partial frame stays held)."""
    cdef bs_frame f
    cdef int r
    cdef size_t start
    cdef const char *m
    st.busy += 1
    try:
        while True:
            if s.state == ST_CLOSED or (s.flags & (F_PAUSED | F_PIPE_SRC)):
                return 0
            if st.rule is None:
                # framing = None: what was held goes out as one raw chunk, then the socket is raw.
                if bs_fbuf_pending(&st.b):
                    start = st.b.head
                    f.len = bs_fbuf_pending(&st.b)
                    st.b.head = st.b.len
                    _frames_emit(s, st.b.buf + start, f.len, None)
                    if st.rule is not None or bs_fbuf_pending(&st.b):
                        continue       # a rule set again inside that call
                if st.busy == 1:
                    bs_fbuf_consume(&st.b, 0)
                if s.ext is not None and s.ext.frames is st and st.rule is None:
                    _frames_drop(s)
                return 0
            if not bs_fbuf_pending(&st.b):
                st.stalled = False
                return 0
            r = bs_frame_find(&st.rule.r, st.b.buf + st.b.head, bs_fbuf_pending(&st.b),
                              0 if st.stalled else st.b.scanned, &f)
            if r < 0:
                return _frames_fail(s, st, r)
            if r == 0:
                st.stalled = False
                if st.busy == 1:
                    bs_fbuf_compact(&st.b)
                st.b.scanned = f.consumed
                return 0
            start = st.b.head
            st.b.head += f.consumed
            st.b.scanned = 0
            _frames_emit(s, st.b.buf + start + f.off, f.len, None)
            if st.busy == 1 and st.b.head == st.b.len:
                bs_fbuf_consume(&st.b, 0)
    finally:
        st.busy -= 1


cdef int _frames_emit(Socket s, const char *m, Py_ssize_t n, _RecvBuf owner) except -1:
    """One message to `data`, as the socket's binary_type. owner: the receive buffer m lies in
    (a memoryview is lent from it), or None for held bytes (a memoryview of a copy: the held
    buffer moves as it fills)."""
    cdef _Ctx ctx = s.ctx
    cdef object h = ctx.on_data
    # on_data resolved once per table (a bound method split in two), held for the call
    cdef object fn = ctx.data_fn
    cdef object bound = ctx.data_self
    cdef PyObject *pself = NULL if bound is None else <PyObject *>bound
    cdef object buf
    cdef int bt = ctx.binary_type
    cdef Loop loop = s.loop
    if h is None:
        return 0
    if bt == BT_BYTES:
        buf = PyBytes_FromStringAndSize(m, n)
    elif bt == BT_BYTEARRAY:
        buf = PyByteArray_FromStringAndSize(m, n)
    elif owner is None:
        buf = PyMemoryView_FromObject(PyBytes_FromStringAndSize(m, n))
    else:
        owner.lent_off = m - owner.buf
        owner.lent = n
        buf = PyMemoryView_FromObject(owner)
        try:
            _call_handler(loop, <PyObject *>fn, pself, h, s, ctx.on_error, 1, buf, None, None)
        finally:
            try:
                buf.release()
            except BufferError:
                pass      # something exports the view itself (numpy.frombuffer)
            if owner.exports and owner is loop.recv:
                loop._new_rbuf()     # the kept view owns the old buffer; reads go to a new one
        return 0
    _call_handler(loop, <PyObject *>fn, pself, h, s, ctx.on_error, 1, buf, None, None)
    return 0


cdef int _frames_fail(Socket s, _FrameState st, int code) except -1:
    """The peer broke the rule: `error(sock, FramingError)`, then the socket closes with it.
    Replies already written to the messages before the bad one are sent first."""
    cdef _FrameRule rule = st.rule
    cdef object exc, where
    if code == BS_FRAME_ENOMEM:
        raise MemoryError()
    where = s._addr(True)[0]
    where = "" if where is None else " from %s port %s" % (where, s._addr(True)[1])
    if code == BS_FRAME_ESHORT:
        exc = FramingError("a declared length below the header's own %d bytes "
                           "(includes_header=True)%s" % (rule.r.hsize, where))
    elif code == BS_FRAME_ETOOBIG and rule.r.kind == BS_FRAME_LINES:
        exc = FramingError("a line longer than max_size (%d bytes) without its delimiter %r%s"
                           % (rule.r.max_size, rule.delim, where))
    elif code == BS_FRAME_ETOOBIG:
        exc = FramingError("a message over max_size (%d bytes) declared in its %d-byte "
                           "header%s" % (rule.r.max_size, rule.r.hsize, where))
    else:
        exc = FramingError("EOF in the middle of a message (%d bytes of it received)%s"
                           % (bs_fbuf_pending(&st.b), where))
    return _frames_close(s, st, exc)


cdef int _frames_close(Socket s, _FrameState st, object exc) except -1:
    st.b.head = st.b.len          # nothing after the bad frame is delivered
    st.stalled = False
    if s.ctx.on_error is not None:
        # The peer's fault, not the program's: `error` hears of it if the table has one (as
        # for a bad TLS record), never sys.unraisablehook.
        s._report(exc)
    if s.state != ST_CLOSED:
        if s.state == ST_OPEN and not (s.flags & F_BACKED_UP) and s._pending():
            s._flush()            # the replies corked for the messages before it
        s._close(exc)
    return 0


cdef int _frames_eof(Socket s) except -1:
    """The peer's FIN on a framed socket, before `end`: held whole frames are delivered first;
    a partial one left is a FramingError. Returns 1 when `end` must not run now."""
    cdef _FrameState st = <_FrameState>s.ext.frames
    cdef Loop loop = s.loop
    if bs_fbuf_pending(&st.b) and (st.stalled or st.rule is None):
        loop.depth += 1
        try:
            _frames_go(s, st)
        finally:
            _leave_callback(loop)
        if s.state == ST_CLOSED:
            return 1
        if s.flags & F_PAUSED:
            st.eof_pending = True        # resume() delivers the rest, then `end`
            return 1
    if (s.flags & F_FRAMED) and bs_fbuf_pending(&st.b):
        _frames_fail(s, st, 0)
        return 1
    return 0


def _frames_resume_cb(Socket s, _FrameState st):
    st.scheduled = False
    if s.state == ST_CLOSED or s.ext is None or s.ext.frames is not st:
        return
    if s.flags & (F_PAUSED | F_PIPE_SRC):
        return
    _frames_go(s, st)
    if st.eof_pending and s.state != ST_CLOSED and not (s.flags & F_PAUSED):
        st.eof_pending = False
        s._on_eof()


cdef int _frames_kick(Socket s, _FrameState st) except -1:
    """Held bytes that no read will announce (after resume(), or a rule set outside `data`)
    are delivered on the next iteration."""
    if not st.scheduled and (st.eof_pending or (bs_fbuf_pending(&st.b) and
                                                (st.stalled or st.rule is None))):
        st.scheduled = True
        s.loop.call_soon(_frames_resume_cb, s, st)
    return 0


cdef int _frames_resumed(Socket s) except -1:
    return _frames_kick(s, <_FrameState>s.ext.frames)


cdef int _frames_to_pipe(Socket s, Socket d) except -1:
    """pipe(): the bytes read and not delivered go to the destination first."""
    cdef _FrameState st = <_FrameState>s.ext.frames
    cdef size_t n = bs_fbuf_pending(&st.b)
    if n:
        d._write(st.b.buf + st.b.head, n, None)
        st.b.head = st.b.len
    st.stalled = False
    if not st.busy:
        _frames_tidy(s, st)
    return 0
