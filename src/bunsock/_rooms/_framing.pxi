# Framing: `data` gets whole messages; write_frame() adds the header or delimiter (docs/API.md §18).
# This room: the rules compiled for the C scanner, a socket's framing state, the `framing`
# property; delivery is _frame_read.pxi's, writing _frame_write.pxi's.
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

from .framing import FramingError, LengthPrefixed as _LengthPrefixed, Lines as _Lines


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
# The `framing` property (Socket.framing)


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


def _frames_info(Socket s):
    """For tests: (held bytes, stalled, scheduled, eof_pending) of a framed socket, or None."""
    cdef _FrameState st
    if not (s.flags & F_FRAMED):
        return None
    st = <_FrameState>s.ext.frames
    return (bs_fbuf_pending(&st.b), st.stalled, st.scheduled, st.eof_pending)
