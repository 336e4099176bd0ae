# a.pipe(b) and a.unpipe(): the public side of the relay (_relay.pxi): arguments checked, the
# path chosen (splice or buffered), the pipe set up and ended.


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
