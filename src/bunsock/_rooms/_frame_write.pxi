# Framing, writing: write_frame() and Group.write_frame() add the rule's header or delimiter in
# C, one append per frame, the frame taken whole or not at all under high_water_mark.

from libc.string cimport memcpy
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE

cdef enum:
    FRAME_STACK = 2048      # write_frame builds frames up to this size on the stack


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
    cdef Py_ssize_t total = _frame_encode(rule, p, n, hdr)
    cdef object keep = None
    cdef char *out = stack
    if not _SocketWriter._whole_room(s, total):
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
    return _write_whole(s, out, total, keep)


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
    cdef bytes msg = _group_message(g, "write_frame", payload, skipped, exclude)
    cdef unsigned char hdr[8]
    cdef const char *p = PyBytes_AS_STRING(msg)
    cdef Py_ssize_t i, j, total, n = PyBytes_GET_SIZE(msg), taken = 0
    cdef Socket s
    cdef object o, frame = None
    cdef _FrameRule rule, last = None
    cdef list members, rules = [], frames = []
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
            if rule is None:
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
            taken += _group_put(s, PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), frame,
                                skipped)
    finally:
        g._end_write()
    return taken
