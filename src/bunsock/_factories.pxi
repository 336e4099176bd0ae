# Factories the Python API (bunsock/_api.py) calls: listeners (bound here or adopted) and sockets
# adopted already connected. A socket bunsock connects itself is made in _connect.pxi.


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
    r = bs_adopt(fd, &family, &listening)
    if r == 0 and o is not None:
        r = bs_apply_sockopts(fd, o.opts, o.n)
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
    r = bs_adopt(fd, &family, &listening)
    if r == 0 and o is not None:
        r = bs_apply_sockopts(fd, o.opts, o.n)
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
