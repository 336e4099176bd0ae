# Factories the Python API (bunsock/_api.py, _udp_api.py) calls: listeners (bound here or
# adopted), stream sockets adopted already connected, UDP sockets. A stream socket bunsock
# connects itself is made in _connect.pxi.


cdef int _adopt_fd(int fd, _OptList o, int *family, int *listening) noexcept:
    """Check a descriptor handed to listen(fd=)/connect(sock=) (a stream socket: its family and
    whether it listens) and apply the options to it: 0, or -errno."""
    cdef int r = bs_adopt(fd, family, listening)
    if r == 0 and o is not None:
        r = bs_apply_sockopts(fd, o.opts, o.n)
    return r


def _listen_tcp(Loop loop, _Ctx ctx, data, int family, str ip, int port, int backlog,
                bint reuse_port, bint ipv6_only, hostname, sockopts=None):
    cdef int fd
    cdef _OptList o = _opt_list(sockopts)
    _check_thread(loop)
    loop._check_open()
    fd = bs_listen_tcp(family, ip.encode(), port, backlog, reuse_port, ipv6_only,
                       _opts_of(o), _nopts_of(o))
    if fd < 0:
        _raise_errno(-fd)
    lst = Listener._new(loop, ctx, data, fd)
    lst.own_nodelay = _sets_nodelay(o)
    lst._hostname = hostname
    lst._port = lst.address[1]      # the real port (port=0 picks one); address is cached
    return lst


def _listen_unix(Loop loop, _Ctx ctx, data, bytes path, display, int backlog, sockopts=None):
    cdef int fd
    cdef _OptList o = _opt_list(sockopts)
    _check_thread(loop)
    loop._check_open()
    fd = bs_listen_unix(path, len(path), backlog, _opts_of(o), _nopts_of(o))
    if fd < 0:
        _raise_errno(-fd)
    lst = Listener._new(loop, ctx, data, fd)
    lst.own_nodelay = _sets_nodelay(o)
    lst._unix = display
    lst._unix_path = path
    if path[:1] != b"\0":
        st = os.stat(path)
        lst._unix_id = (st.st_dev, st.st_ino)
    return lst


def _adopt_listener(Loop loop, _Ctx ctx, data, int fd, int backlog, hostname, unix,
                    sockopts=None):
    """listen(fd=/sock=): a descriptor someone else bound (systemd socket activation, a
    supervisor's hand-off) becomes a Listener as if listen() had made it; listen(backlog)
    is called when it is not listening yet. On success bunsock owns fd (stop() closes it);
    on failure fd is left open."""
    cdef int family = 0, listening = 0, r
    cdef _OptList o = _opt_list(sockopts)
    _check_thread(loop)
    loop._check_open()
    r = _adopt_fd(fd, o, &family, &listening)
    if r == 0 and not listening:
        r = bs_listen_fd(fd, backlog)
    if r < 0:
        _raise_errno(-r)
    lst = Listener._new(loop, ctx, data, fd)
    lst.own_nodelay = _sets_nodelay(o)
    lst._unix = unix
    if family != BS_AF_UNIX:
        lst._port = lst.address[1]
        lst._hostname = hostname if hostname is not None else lst.address[0]
    return lst


def _adopt_connected(Loop loop, _Ctx ctx, data, int fd, host, sockopts=None):
    """connect(sock=): an already connected stream socket (socketpair(), a hand-off) gets
    the client table. It is registered for writability, so `open` fires from the loop on
    the first iteration exactly as for a connect bunsock made."""
    cdef int family = 0, listening = 0, r
    cdef Socket s
    cdef _OptList o = _opt_list(sockopts)
    _check_thread(loop)
    loop._check_open()
    r = _adopt_fd(fd, o, &family, &listening)
    if r < 0:
        _raise_errno(-r)
    s = _new_socket(loop, ctx, data, -1, None)
    s.state = ST_CONNECTING
    s.flags |= F_CLIENT | (F_UNIX if family == BS_AF_UNIX else 0)
    ext = s._get_ext()
    ext.host = host
    ext.sockopts = o        # (applied above; kept so that `open` leaves TCP_NODELAY alone)
    ext.addrs = []          # nothing to fall back to: a failure is the connect_error
    r = -bs_poller_add(&loop.poller, fd, <void *>s, BS_WRITABLE)
    if r > 0:
        s._teardown()
        _raise_errno(r)
    s.fd = fd
    s.flags |= F_REGISTERED
    s.mask = BS_WRITABLE
    return s


def _udp_new(Loop loop, tuple handlers, data, int binary_type, int family, str ip, int port,
             bint reuse_port, bint ipv6_only, hostname, connect_ip, int connect_port):
    """Bind (and connect) a UdpSocket; the argument checking is bunsock._udp_api's."""
    cdef int fd, r, err
    cdef bs_addr peer
    _check_thread(loop)
    loop._check_open()
    fd = bs_udp_open(family, ip.encode(), port, reuse_port, ipv6_only)
    if fd < 0:
        _raise_errno(-fd)
    if connect_ip is not None:
        r = bs_addr_parse((<str>connect_ip).encode(), connect_port, family, &peer)
        if r == 0:
            r = bs_udp_connect(fd, &peer)
        if r < 0:
            c_close(fd)
            if r == -_errno.EAFNOSUPPORT:
                raise ValueError("cannot connect an IPv4 socket to the IPv6 address %r"
                                 % (connect_ip,))
            _raise_errno(-r)
    return _udp_register(loop, handlers, data, binary_type, family, fd, hostname,
                         connect_ip is not None)


def _udp_wrap(Loop loop, tuple handlers, data, int binary_type, int family, int fd, hostname,
              bint connected):
    """Register a datagram socket made and checked by bunsock._udp_api (sockopts=, fd=/sock=),
    already detached by the caller: from here on the descriptor is the UdpSocket's (closed if
    this fails)."""
    try:
        loop._check_open()
    except BaseException:
        c_close(fd)
        raise
    return _udp_register(loop, handlers, data, binary_type, family, fd, hostname, connected)


def _udp_adopt(Loop loop, tuple handlers, data, int binary_type, int fd):
    """Tests only: wrap a connected unix datagram socket (socketpair) as a UdpSocket. Loopback
    UDP never refuses a send (the kernel frees the buffer at once), a unix datagram socket does,
    so this is how the send-returns-False / drain path is exercised on real sockets."""
    return _udp_register(loop, handlers, data, binary_type, BS_AF_UNIX, fd, None, True)


cdef UdpSocket _udp_register(Loop loop, tuple handlers, data, int binary_type, int family, int fd,
                             hostname, bint connected):
    cdef UdpSocket u = UdpSocket.__new__(UdpSocket)
    u.loop = loop
    u.fd = fd
    u.data = data
    u.binary_type = binary_type
    u.fam = family
    u._hostname = hostname
    u.on_data, u.on_drain, u.on_error, u.on_close = handlers
    if loop.udp_rx is None:
        loop.udp_rx = _UdpArea.__new__(_UdpArea)
    err = -bs_poller_add(&loop.poller, fd, <void *>u, BS_READABLE)
    if err > 0:
        c_close(fd)
        u.fd = -1
        u.uflags = U_CLOSED
        _raise_errno(err)
    u.mask = BS_READABLE
    u.uflags = U_REFED | (U_CONNECTED if connected else 0)
    loop.refs += 1
    Py_INCREF(u)     # the poller's reference, dropped by close()
    # Read now, so port/address (and the peer's) still answer after close().
    u._name(False)
    u._name(True)
    return u
