# Connecting: connect() makes a Socket in ST_CONNECTING; its address is resolved off the loop
# thread (unless given), then each candidate address is tried in turn (or, with several and
# he_delay, raced: Happy Eyeballs below) until one connects and the socket opens
# (_on_connected), or the last failure is its connect_error. connect(timeout=) is the socket's
# timer (_sock_read.pxi's _on_timer ends a connect that outlives it).


def _connect(Loop loop, _Ctx ctx, data, addrs, host, int port, local_ip, int local_port,
             bytes unix_path, double timeout, sockopts=None, double he_delay=0.0):
    """addrs: list of (family, ip) to try in order, or None to resolve `host` off-thread.
    he_delay: with several addresses, start the next attempt after this many seconds
    without waiting for the previous one to fail (Happy Eyeballs; 0: one at a time)."""
    cdef Socket s
    _check_thread(loop)
    loop._check_open()
    s = _new_socket(loop, ctx, data, -1, None)
    s.state = ST_CONNECTING
    s.flags |= F_CLIENT | (F_UNIX if unix_path is not None else 0)
    ext = s._get_ext()
    ext.port = port
    ext.host = host
    ext.local_ip = local_ip
    ext.local_port = local_port
    ext.unix_path = unix_path
    ext.sockopts = _opt_list(sockopts)
    ext.he_delay = he_delay
    if timeout > 0:
        loop._arm(&s.t, timeout)      # bounds resolution + connect (+ TLS handshake)
    if unix_path is not None or addrs is not None:
        ext.addrs = addrs
        # connect_error must fire from the loop, never from inside connect().
        loop.call_soon(_try_connect, s)
    else:
        if loop.executor is None:
            from concurrent.futures import ThreadPoolExecutor
            loop.executor = ThreadPoolExecutor(max_workers=4,
                                               thread_name_prefix="bunsock-resolve")
        loop.executor.submit(_resolve_job, loop, host, port, s)
    return s


def _resolve_job(Loop loop, host, int port, Socket s):
    """(On an executor thread.) Look `host` up and hand the result to the loop."""
    from ._resolve import lookup
    try:
        result = lookup(host, port)
    except Exception as e:
        result = e
    try:
        loop.call_soon_threadsafe(_resolved, s, result)
    except RuntimeError:
        pass  # the loop was closed meanwhile


def _resolved(Socket s, result):
    if s.state != ST_CONNECTING:
        return
    if isinstance(result, BaseException):
        _connect_failed(s, result)
        return
    if not result:
        _connect_failed(s, OSError(_errno.EHOSTUNREACH, "no address for %r" % s.ext.host))
        return
    s.ext.addrs = result
    _try_connect(s)


def _try_connect(Socket s):
    """Start connecting to the next candidate address; the last failure is reported."""
    cdef int fd, r, in_progress = 0
    cdef _SockExt ext = s.ext
    cdef object last = ext.last_exc
    if s.state != ST_CONNECTING:
        return
    if ext.he_delay > 0 and ext.unix_path is None and len(ext.addrs) > 1:
        _he_next(s)       # several addresses: they race (below)
        return
    while True:
        if ext.unix_path is not None:
            if ext.addr_index > 0:
                break
            ext.addr_index = 1
            fd = _start_connect_unix(ext, &in_progress)
            if fd == -EAGAIN:
                last = OSError(EAGAIN, "cannot connect to %r: its listener's backlog is full"
                               % (ext.host if ext.host is not None else ext.unix_path,))
                continue
        else:
            if ext.addr_index >= len(ext.addrs):
                break
            family, ip = ext.addrs[ext.addr_index]
            ext.addr_index += 1
            fd = _start_connect_tcp(ext, family, ip, &in_progress)
        if fd < 0:
            last = _oserror(-fd)
            continue
        s.fd = fd
        s.mask = 0
        r = bs_poller_add(&s.loop.poller, fd, <void *>s, BS_WRITABLE)
        if r < 0:
            last = _oserror(-r)
            c_close(fd)
            s.fd = -1
            continue
        s.flags |= F_REGISTERED
        s.mask = BS_WRITABLE
        return
    _connect_failed(s, last if last is not None else OSError(_errno.ECONNREFUSED,
                                                             "connection refused"))


cdef int _on_connected(Socket s) except -1:
    """The connecting fd became writable: open, or try the next address."""
    cdef int err = -bs_socket_error(s.fd)
    cdef Loop loop = s.loop
    if err != 0:
        s._deregister_quiet()
        c_close(s.fd)
        s.fd = -1
        s.mask = 0
        s.ext.last_exc = _oserror(err)
        _try_connect(s)
        return 0
    s.state = ST_OPEN
    if not (s.flags & F_UNIX) and not _sets_nodelay(s.ext.sockopts):
        bs_set_nodelay(s.fd, 1)
    # pause() while connecting holds: no read interest until resume().
    s._set_mask(0 if s.flags & F_PAUSED else BS_READABLE)
    bs_wheel_cancel(&loop.wheel, &s.t)
    if s.ctx.idle_ms and not (s.flags & F_USER_TIMEOUT):
        s.timeout_ms = s.ctx.idle_ms
    s._arm_idle()
    if s.ctx.tls is not None:
        return _start_tls_from_ctx(s)
    s._fire_open()
    # Writes made while connecting go out now; end() while connecting (even with nothing
    # written) owes the peer a FIN.
    if s.state == ST_OPEN:
        s._flush()
    return 0


cdef int _connect_failed(Socket s, exc) except -1:
    if s.state != ST_CONNECTING:
        return 0
    if s.ext is not None:
        s.ext.addrs = None
    return s._close(exc)      # never opened: `connect_error(sock, exc)`


cdef int _start_tls_from_ctx(Socket s) except -1:
    """The table has tls=: the handshake starts as the socket opens (connected or accepted)."""
    from ._tls import start_from_ctx
    start_from_ctx(s, s.ctx.tls, s.ctx.tls_server_side, s.ctx.server_hostname)
    return 0


cdef int _start_connect_tcp(_SockExt ext, int family, str ip, int *in_progress) except? -1:
    """One non-blocking TCP connect to (family, ip) with the socket's local address and options
    applied before it: the fd, or -errno."""
    cdef _OptList o = ext.sockopts
    cdef bytes bip = ip.encode()
    cdef bytes blocal = ext.local_ip.encode() if ext.local_ip is not None else None
    cdef const char *local = NULL
    if blocal is not None:
        local = blocal
    return bs_connect_tcp(family, bip, ext.port, local, ext.local_port, _opts_of(o),
                          _nopts_of(o), in_progress)


cdef int _start_connect_unix(_SockExt ext, int *in_progress) except? -1:
    cdef _OptList o = ext.sockopts
    return bs_connect_unix(ext.unix_path, len(ext.unix_path), _opts_of(o), _nopts_of(o),
                           in_progress)


# Happy Eyeballs (RFC 8305) for connect() to a name with several addresses: the next address is
# tried `he_delay` seconds after the previous attempt started (or at once when it fails), without
# waiting for it to time out; the first to connect wins, the others are closed. Each attempt is
# its own fd registered with the poller (an _Attempt); the winner's fd is handed to the Socket,
# which then opens as after a single connect. connect(timeout=) (the socket's timer) bounds the
# whole race; closing the socket ends every attempt.


@cython.final
cdef class _Attempt(_Handle):
    """One address's non-blocking connect, racing the others for its Socket."""
    cdef Socket sock

    cdef int _on_event(self, uint32_t ev) except -1:
        cdef Socket s = self.sock
        cdef _SockExt ext = s.ext
        cdef int err = -bs_socket_error(self.fd)
        cdef int fd
        if s.state != ST_CONNECTING:
            return 0
        if err != 0:
            ext.last_exc = _oserror(err)
            self.discard()
            ext.attempts.remove(self)
            return _he_next(s)       # a failure starts the next address at once
        # The winner: its fd becomes the socket's; the other attempts are closed.
        fd = self.fd
        bs_poller_del(&s.loop.poller, fd, self.mask)
        self.fd = -1
        self.mask = 0
        ext.attempts.remove(self)
        s.loop._retire(self)
        self.sock = None
        _he_abort(s)
        s.fd = fd
        s.mask = 0
        s.flags &= ~F_REGISTERED
        return _on_connected(s)

    cdef int discard(self) except -1:
        """Close this attempt's fd and drop the poller's reference to it."""
        if self.fd >= 0:
            bs_poller_del(&self.loop.poller, self.fd, self.mask)
            c_close(self.fd)
            self.fd = -1
            self.mask = 0
            self.loop._retire(self)
        self.sock = None
        return 0

    cdef int setopts(self, tuple opts) except -1:
        if self.fd >= 0:
            _fd_setopts(self.fd, opts)
        return 0


cdef int _he_next(Socket s) except -1:
    """Start the next address's attempt (arming the delay before the one after it); when no
    address is left and no attempt is still running, the connect has failed."""
    cdef _SockExt ext = s.ext
    cdef Loop loop = s.loop
    cdef _Attempt a
    cdef int fd, in_progress = 0
    if ext.he_timer is not None:
        ext.he_timer.cancel()
        ext.he_timer = None
    if ext.attempts is None:
        ext.attempts = []
    while s.state == ST_CONNECTING and ext.addr_index < len(ext.addrs):
        family, ip = ext.addrs[ext.addr_index]
        ext.addr_index += 1
        fd = _start_connect_tcp(ext, family, ip, &in_progress)
        if fd < 0:
            ext.last_exc = _oserror(-fd)
            continue
        a = _Attempt.__new__(_Attempt)
        a.loop = loop
        a.sock = s
        a.fd = fd
        r = bs_poller_add(&loop.poller, fd, <void *>a, BS_WRITABLE)
        if r < 0:
            ext.last_exc = _oserror(-r)
            c_close(fd)
            a.fd = -1
            continue
        a.mask = BS_WRITABLE
        Py_INCREF(a)          # the poller's reference (loop._retire drops it)
        ext.attempts.append(a)
        if ext.addr_index < len(ext.addrs):
            # Unreferenced: the connecting Socket already keeps run() going.
            ext.he_timer = loop.call_later(ext.he_delay, _he_fire, s)
            ext.he_timer.unref()
        return 0
    if s.state == ST_CONNECTING and not ext.attempts:
        _connect_failed(s, ext.last_exc if ext.last_exc is not None else
                        OSError(_errno.ECONNREFUSED, "connection refused"))
    return 0


def _he_fire(Socket s):
    """The delay passed without a winner: start the next address alongside the running ones."""
    if s.state == ST_CONNECTING and s.ext is not None:
        s.ext.he_timer = None
        _he_next(s)


cdef int _he_abort(Socket s) except -1:
    """End the race: cancel the delay and close every attempt still connecting."""
    cdef _SockExt ext = s.ext
    if ext.he_timer is not None:
        ext.he_timer.cancel()
        ext.he_timer = None
    attempts = ext.attempts
    ext.attempts = None
    if attempts:
        for a in attempts:
            (<_Attempt>a).discard()
    return 0
