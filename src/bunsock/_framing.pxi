# Framing: `data` gets whole messages; write_frame() adds the header or delimiter (docs/API.md §18).
#
# The rule is scanned in C (csrc/framing.c) over the loop's receive buffer in place: a read that
# holds a thousand frames is a thousand scans and no copy. Only the frame cut by the end of a
# read is copied, into the socket's held buffer (_FrameState.b), and only up to the bytes that
# complete it. So the held buffer holds "received, not delivered" bytes in order, which is what
# makes switching rules, pause() and pipe() exact:
#   - a partial frame (the normal tail), at most max_size + header or delimiter;
#   - or, once delivery stopped with bytes left (pause() or a new rule set inside `data`), the
#     rest of that read as it is (`stalled`): it is scanned again from its start.
# A socket without framing pays one flag test in _deliver (F_FRAMED shares it with F_PIPE_SRC).
# Every message of one read is delivered inside one handler scope (loop.depth), so the replies
# written to them leave in one send when the last one returns.

cdef extern from "framing.h" nogil:
    enum:
        BS_FRAME_RAW
        BS_FRAME_LINES
        BS_FRAME_LENGTH
        BS_FRAME_ETOOBIG
        BS_FRAME_ESHORT
        BS_FRAME_ENOMEM
    ctypedef struct bs_frame_rule:
        int kind
        uint64_t max_size
        const char *delim
        size_t dlen
        int keep_delim
        int hsize
        int little
        int includes_header
    ctypedef struct bs_frame:
        size_t off
        size_t len
        size_t consumed
    ctypedef struct bs_frame_buf:
        char *buf
        size_t head, len, cap
        size_t scanned
    int bs_frame_find(const bs_frame_rule *r, const char *p, size_t n, size_t frm, bs_frame *out)
    void bs_fbuf_init(bs_frame_buf *b)
    void bs_fbuf_free(bs_frame_buf *b)
    size_t bs_fbuf_pending(const bs_frame_buf *b)
    int bs_fbuf_append(bs_frame_buf *b, const char *p, size_t n)
    void bs_fbuf_consume(bs_frame_buf *b, size_t n)
    void bs_fbuf_compact(bs_frame_buf *b)
    ssize_t bs_frame_complete(const bs_frame_rule *r, bs_frame_buf *b, const char *p, size_t n)
    int bs_frame_header(const bs_frame_rule *r, uint64_t n, unsigned char *out)
    int bs_frame_has_delim(const bs_frame_rule *r, const char *p, size_t n)

from libc.string cimport memcpy
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE

from .framing import FramingError, LengthPrefixed as _LengthPrefixed, Lines as _Lines

cdef enum:
    FRAME_STACK = 2048      # write_frame builds frames up to this size on the stack


@cython.final
cdef class _FrameRule:
    """A framing spec (bunsock.framing.lines()/length_prefixed()) compiled for the C scanner."""
    cdef bs_frame_rule r
    cdef bytes delim          # owns r.delim
    cdef object spec


@cython.final
cdef class _FrameState:
    """One socket's framing: its rule (None: going back to raw once the held bytes are out)
    and the bytes received but not delivered yet."""
    cdef _FrameRule rule
    cdef bs_frame_buf b
    cdef unsigned int gen     # bumped by every change of rule: a delivery loop notices it
    cdef int busy             # delivery loops running over this state (b is not moved meanwhile)
    cdef bint stalled         # b may hold whole frames: scan it from its start
    cdef bint eof_pending     # the peer's FIN came while held frames waited for resume()
    cdef bint scheduled       # a call_soon delivers the held bytes

    def __cinit__(self):
        bs_fbuf_init(&self.b)

    def __dealloc__(self):
        bs_fbuf_free(&self.b)


cdef _FrameRule _rule_of(object spec):
    """The compiled rule of a spec (cached on it), or TypeError."""
    cdef _FrameRule c
    if type(spec) is not _Lines and type(spec) is not _LengthPrefixed:
        raise TypeError("framing must be bunsock.framing.lines(...), "
                        "bunsock.framing.length_prefixed(...) or None, not %s"
                        % type(spec).__name__)
    if spec._rule is not None:
        return <_FrameRule>spec._rule
    c = _FrameRule.__new__(_FrameRule)
    c.spec = spec
    c.r.max_size = spec.max_size
    if type(spec) is _Lines:
        c.r.kind = BS_FRAME_LINES
        c.delim = spec.delimiter
        c.r.delim = PyBytes_AS_STRING(c.delim)
        c.r.dlen = PyBytes_GET_SIZE(c.delim)
        c.r.keep_delim = spec.keep_delimiter
    else:
        c.r.kind = BS_FRAME_LENGTH
        c.r.hsize = spec.header_size
        c.r.little = spec.byteorder == "little"
        c.r.includes_header = spec.includes_header
    spec._rule = c
    return c


def _compile_framing(spec):
    """listen()/connect(framing=...): the compiled rule for the handler table, or None."""
    return None if spec is None else _rule_of(spec)


cdef int _frames_attach(Socket s, _FrameRule rule) except -1:
    cdef _FrameState st = _FrameState.__new__(_FrameState)
    st.rule = rule
    s._get_ext().frames = st
    s.flags |= F_FRAMED
    return 0


cdef int _frames_drop(Socket s) except -1:
    s.ext.frames = None
    s.flags &= ~F_FRAMED
    return 0


# ---------------------------------------------------------------------------------------------
# Reading


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
            _call_handler(loop, h, s, ctx.on_error, 1, buf, None, None)
        finally:
            try:
                buf.release()
            except BufferError:
                pass      # something exports the view itself (numpy.frombuffer)
            if owner.exports and owner is loop.recv:
                loop._new_rbuf()     # the kept view owns the old buffer; reads go to a new one
        return 0
    _call_handler(loop, h, s, ctx.on_error, 1, buf, None, None)
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


# ---------------------------------------------------------------------------------------------
# The property and writing


cdef object _frames_get(Socket s):
    cdef _FrameState st
    if not (s.flags & F_FRAMED):
        return None
    st = <_FrameState>s.ext.frames
    return None if st.rule is None else st.rule.spec


cdef int _frames_set(Socket s, object spec) except -1:
    cdef _FrameRule rule = None if spec is None else _rule_of(spec)
    cdef _FrameState st
    _check_thread(s.loop)
    if not (s.flags & F_FRAMED):
        if rule is not None:
            _frames_attach(s, rule)
        return 0
    st = <_FrameState>s.ext.frames
    st.rule = rule
    st.gen += 1
    if bs_fbuf_pending(&st.b):
        st.stalled = True            # read under the old rule: scanned again under this one
        if not st.busy and s.state != ST_CLOSED:
            _frames_kick(s, st)
    elif rule is None and not st.busy:
        _frames_drop(s)
    return 0


cdef Py_ssize_t _frame_room(Socket s, Py_ssize_t total):
    """All or nothing under high_water_mark: 1 when a frame of `total` bytes may be written, 0
    when the mark refuses it (a `drain` is then owed). With nothing buffered it is taken whole,
    so a frame larger than the mark still goes."""
    cdef Py_ssize_t hwm = s.ctx.hwm, used
    if hwm < 0:
        return 1
    used = s._pending() + s._tls_held()
    if s.flags & F_TLS:
        used += (<_TlsHook>s.ext.tls).corked_len()
    if used == 0 or used + total <= hwm:
        return 1
    s.flags |= F_DRAIN_OWED
    if not (s.flags & F_CORKED) and s.cork_depth == 0:
        s._settle()
    return 0


cdef Py_ssize_t _frame_encode(_FrameRule rule, const char *p, Py_ssize_t n,
                              unsigned char *hdr) except -1:
    """The header of a frame (into hdr) and the frame's total size; ValueError when the
    payload cannot be framed by this rule."""
    cdef int h
    if rule.r.kind == BS_FRAME_LINES:
        if bs_frame_has_delim(&rule.r, p, n):
            raise ValueError("write_frame(): the payload contains the delimiter %r, so the peer "
                             "would read it as more than one line" % (rule.delim,))
        return n + <Py_ssize_t>rule.r.dlen
    h = bs_frame_header(&rule.r, n, hdr)
    if h < 0:
        raise ValueError("write_frame(): a payload of %d bytes does not fit a %d-byte length "
                         "header" % (n, rule.r.hsize))
    return h + n


cdef inline void _frame_fill(_FrameRule rule, char *out, const unsigned char *hdr,
                             const char *p, Py_ssize_t n) noexcept:
    if rule.r.kind == BS_FRAME_LINES:
        memcpy(out, p, n)
        memcpy(out + n, rule.r.delim, rule.r.dlen)
    else:
        memcpy(out, hdr, rule.r.hsize)
        memcpy(out + rule.r.hsize, p, n)


cdef Py_ssize_t _frame_write(Socket s, _FrameRule rule, const char *p, Py_ssize_t n) except -2:
    cdef unsigned char hdr[8]
    cdef char stack[FRAME_STACK]
    cdef Py_ssize_t total = _frame_encode(rule, p, n, hdr), r
    cdef object keep = None
    cdef char *out = stack
    if not _frame_room(s, total):
        return 0
    out = _cork_extend(s, total)
    if out != NULL:
        _frame_fill(rule, out, hdr, p, n)      # inside a handler: straight into the cork
        return total
    out = stack
    if total > FRAME_STACK:
        keep = PyBytes_FromStringAndSize(NULL, total)
        out = PyBytes_AS_STRING(keep)
    _frame_fill(rule, out, hdr, p, n)
    s.flags |= F_WHOLE
    try:
        r = _SocketWriter._write(s, out, total, keep)
    finally:
        s.flags &= ~F_WHOLE
    return r


cdef object _write_frame(Socket s, object payload):
    cdef Py_buffer view
    cdef _FrameRule rule
    _check_thread(s.loop)
    if not PyBytes_CheckExact(payload) and isinstance(payload, str):
        raise TypeError("write_frame() needs a bytes-like object, not str: encode it first")
    if s.flags & F_PIPE_DST:
        _relay_spill_in(s)
    if s.state == ST_CLOSED or (s.flags & (F_ENDING | F_SHUT_WR)):
        return -1
    rule = (<_FrameState>s.ext.frames).rule if s.flags & F_FRAMED else None
    if rule is None:
        raise ValueError("write_frame() needs a framing rule on this socket: pass framing= to "
                         "listen()/connect() or set sock.framing")
    if PyBytes_CheckExact(payload):
        return _frame_write(s, rule, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        return _frame_write(s, rule, <const char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


cdef object _group_write_frame(Group g, object payload, object skipped, object exclude):
    """Group.write_frame: each member gets the payload framed by its own rule (one frame built
    per distinct rule, shared by the members' corks), whole or not at all."""
    cdef Py_buffer view
    cdef unsigned char hdr[8]
    cdef Py_ssize_t i, j, total, n, r, taken = 0
    cdef const char *p
    cdef Socket s
    cdef object o, frame = None
    cdef _FrameRule rule, last = None
    cdef list members, rules = [], frames = []
    if g.loop is not None:
        _check_thread(g.loop)
    if isinstance(payload, str):
        raise TypeError("write_frame() needs a bytes-like object, not str: encode it first")
    if skipped is not None and not isinstance(skipped, list):
        raise TypeError("skipped must be a list or None, not %s" % type(skipped).__name__)
    if exclude is not None and not isinstance(exclude, Socket):
        raise TypeError("exclude must be a Socket or None, not %s" % type(exclude).__name__)
    if not PyBytes_CheckExact(payload):
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            payload = PyBytes_FromStringAndSize(<const char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
    p = PyBytes_AS_STRING(payload)
    n = PyBytes_GET_SIZE(payload)
    members = g.members
    # Every distinct rule's frame first: a payload one of them cannot frame fails before any
    # member has it.
    for i in range(PyList_GET_SIZE(members)):
        o = <object>PyList_GET_ITEM(members, i)
        if o is None or not ((<Socket>o).flags & F_FRAMED):
            continue
        rule = (<_FrameState>(<Socket>o).ext.frames).rule
        if rule is None or rule is last or rule in rules:
            continue
        total = _frame_encode(rule, p, n, hdr)
        frame = PyBytes_FromStringAndSize(NULL, total)
        _frame_fill(rule, PyBytes_AS_STRING(frame), hdr, p, n)
        rules.append(rule)
        frames.append(frame)
        last = rule
    last = None
    g.busy += 1
    try:
        for i in range(PyList_GET_SIZE(members)):
            o = <object>PyList_GET_ITEM(members, i)
            if o is None or o is exclude:
                continue
            s = <Socket>o
            rule = (<_FrameState>s.ext.frames).rule if s.flags & F_FRAMED else None
            if (rule is None or s.state == ST_CLOSED
                    or (s.flags & (F_ENDING | F_SHUT_WR))):
                if skipped is not None:
                    skipped.append(s)
                continue
            if rule is not last:
                for j in range(len(rules)):
                    if rules[j] is rule:
                        frame = frames[j]
                        break
                else:
                    continue      # a rule set inside this write (by a drain handler): skip
                last = rule
            total = PyBytes_GET_SIZE(frame)
            if not _frame_room(s, total):
                if skipped is not None:
                    skipped.append(s)
                continue
            s.flags |= F_WHOLE
            try:
                r = s._write(PyBytes_AS_STRING(frame), total, frame)
            finally:
                s.flags &= ~F_WHOLE
            if r == total:
                taken += 1
            elif skipped is not None:
                skipped.append(s)
    finally:
        g.busy -= 1
        if g.busy == 0 and g.holes:
            g._compact()
    return taken


def _frames_info(Socket s):
    """For tests: (held bytes, stalled, scheduled, eof_pending) of a framed socket, or None."""
    cdef _FrameState st
    if not (s.flags & F_FRAMED):
        return None
    st = <_FrameState>s.ext.frames
    return (bs_fbuf_pending(&st.b), st.stalled, st.scheduled, st.eof_pending)
