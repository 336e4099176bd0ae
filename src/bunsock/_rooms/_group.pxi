# Group: a set of sockets (a game room) written to with one call.
#
# write() runs one C loop over the members, each through its own write path (cork, sink,
# high_water_mark, drain, TLS), so a tick costs one Python call however many members there are.
# Inside a handler or timer callback every member's copy is corked (the same bytes object, not
# copied) and each member gets one send when the callback returns.
#
# Membership is tracked on both sides: the group's list (with a position index for O(1) removal)
# and the socket's ext.groups, so a socket that closes leaves every group (_SocketBase._teardown).


cdef class Group:
    """A set of sockets written to with one call: group.write(data) sends data to every member.
    Members must belong to one loop; a member leaves every group when it closes."""

    def __cinit__(self, *args, **kwargs):
        self.members = []
        self.index = {}

    def __init__(self, sockets=()):
        """Group(sockets=()): a group holding the given sockets (see add())."""
        for s in sockets:
            self.add(s)

    def add(self, sock):
        """Add a Socket (no-op if it is a member already or closed). Raises TypeError for
        anything but a Socket, ValueError for a socket of another loop than the members'."""
        cdef Socket s
        cdef _SockExt ext
        if type(sock) is not Socket:
            raise TypeError("a Group holds bunsock.Socket objects, not %s" % type(sock).__name__)
        s = <Socket>sock
        # The socket's loop, not only the group's: the first add has no group loop yet.
        _check_thread(s.loop)
        if s.state == ST_CLOSED or s in self.index:
            return
        if self.loop is not None and self.index and s.loop is not self.loop:
            raise ValueError("every member of a Group must belong to the same loop")
        self.loop = s.loop
        self.index[s] = len(self.members)
        self.members.append(s)
        ext = s._get_ext()
        if ext.groups is None:
            ext.groups = [self]
        else:
            ext.groups.append(self)

    def discard(self, sock):
        """Remove a socket if it is a member; no error otherwise."""
        if self.loop is not None:
            _check_thread(self.loop)
        cdef Socket s
        if type(sock) is not Socket or sock not in self.index:
            return
        s = <Socket>sock
        self._remove(s)
        s.ext.groups.remove(self)
        if not s.ext.groups:
            s.ext.groups = None

    def clear(self):
        """Remove every member."""
        if self.loop is not None:
            _check_thread(self.loop)
        for s in list(self):
            self.discard(s)

    cdef int _remove(self, Socket s) except -1:
        cdef Py_ssize_t i = self.index.pop(s)
        cdef object last
        if self.busy:
            # write() is iterating: leave a hole, compacted when it is done.
            self.members[i] = None
            self.holes += 1
            return 0
        last = self.members.pop()
        if last is not s:
            self.members[i] = last
            self.index[last] = i
        return 0

    cdef int _end_write(self) except -1:
        """A write() is done: members that left during it leave their holes now."""
        self.busy -= 1
        if self.busy == 0 and self.holes:
            self._compact()
        return 0

    cdef int _compact(self) except -1:
        cdef Py_ssize_t i
        self.members = [m for m in self.members if m is not None]
        self.holes = 0
        for i in range(len(self.members)):
            self.index[self.members[i]] = i
        return 0

    def write(self, data, skipped=None, *, exclude=None):
        """Write `data` (bytes-like) to every member. Each member takes the whole message or
        none of it: one whose buffered bytes (sink, cork, TLS) plus the message would exceed its
        high_water_mark is skipped (it owes a `drain`), as is one that is ending; a member with
        nothing buffered always takes it whole, the part the kernel refuses being buffered.
        Returns how many members took it. skipped: a list to which the members that did not
        take it are appended. exclude: a member (e.g. the sender) that is not written to (nor
        counted, nor added to skipped). Raises TypeError for a str."""
        cdef bytes msg = _group_message(self, "write", data, skipped, exclude)
        cdef const char *p = PyBytes_AS_STRING(msg)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(msg), i, taken = 0
        cdef object o
        cdef Socket s
        cdef Py_ssize_t r
        cdef list members = self.members
        self.busy += 1
        try:
            for i in range(PyList_GET_SIZE(members)):
                o = <object>PyList_GET_ITEM(members, i)
                if o is None or o is exclude:
                    continue          # None: left during this write
                s = <Socket>o
                if s.state == ST_CLOSED or (s.flags & (F_ENDING | F_SHUT_WR)):
                    if skipped is not None:
                        skipped.append(s)
                    continue
                # _group_put and _write_whole spelled out: the per-member path of a broadcast
                # tick, where this shape measured 295 instructions per member and the calls 310
                # (benchmarks/instr_broadcast.py). Whole or not at all under the member's mark.
                s.flags |= F_WHOLE
                try:
                    if s._hwm_room(n) < n:
                        s._owe_drain()         # a drain when its backlog has gone: resync it
                        r = -1
                    else:
                        r = s._write(p, n, msg)
                finally:
                    s.flags &= ~F_WHOLE
                if r == n:
                    taken += 1
                elif skipped is not None:
                    skipped.append(s)
        finally:
            self._end_write()
        return taken

    def write_frame(self, payload, skipped=None, *, exclude=None):
        """Write payload as one frame to every member, framed by each member's own rule
        (Socket.write_frame): whole or not at all per member under its high_water_mark; a
        member without framing, closed or ending does not take it. Returns how many members
        took it. skipped: a list to which the members that did not are appended. exclude: a
        member (e.g. the sender) that is not written to (nor counted, nor added to skipped).
        Raises TypeError for a str, ValueError when some member's rule cannot frame the
        payload (then no member gets it)."""
        return _group_write_frame(self, payload, skipped, exclude)

    def __len__(self):
        return len(self.index)

    def __contains__(self, sock):
        return sock in self.index

    def __iter__(self):
        """Iterate over a snapshot of the members (order unspecified)."""
        return iter([m for m in self.members if m is not None])

    def __repr__(self):
        return "<bunsock.Group members=%d>" % len(self.index)


cdef bytes _group_message(Group g, str what, object data, object skipped, object exclude):
    """A Group write's arguments checked (TypeError naming the one that is wrong), and the
    message as one bytes object: the members' corks then share it (one copy at most)."""
    cdef Py_buffer view
    if g.loop is not None:
        _check_thread(g.loop)
    if isinstance(data, str):
        raise TypeError("%s() needs a bytes-like object, not str: encode it first" % what)
    if skipped is not None and not isinstance(skipped, list):
        raise TypeError("skipped must be a list or None, not %s" % type(skipped).__name__)
    if exclude is not None and not isinstance(exclude, Socket):
        raise TypeError("exclude must be a Socket or None, not %s" % type(exclude).__name__)
    if PyBytes_CheckExact(data):
        return <bytes>data
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return PyBytes_FromStringAndSize(<const char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


cdef int _group_put(Socket s, const char *p, Py_ssize_t n, object keep, object skipped) except -1:
    """One member's share of a Group write: the whole message or none of it. A member that is
    closed or ending does not take it; one whose mark refuses it gets a `drain` when its
    backlog has gone, so the game can resync it. 1 when the member took it, else 0 (and the
    member is appended to skipped, when given)."""
    if (s.state != ST_CLOSED and not (s.flags & (F_ENDING | F_SHUT_WR))
            and _write_whole(s, p, n, keep) == n):
        return 1
    if skipped is not None:
        skipped.append(s)
    return 0


cdef int _leave_groups(_SocketBase s) except -1:
    """A socket is closing: it leaves every group it is in."""
    cdef list groups = s.ext.groups
    cdef Group g
    s.ext.groups = None
    for g in groups:
        if s in g.index:
            g._remove(<Socket>s)
    return 0
