# Socket, control: socket options (also while connecting: kept for each attempt), TCP_NODELAY,
# keepalive, TCP_USER_TIMEOUT, the kernel's TCP statistics.


cdef class _SocketControl(_SocketInfo):
    """(Socket's option methods: a base class of Socket, see _loop.pxd.)"""

    cdef int _setopts(self, tuple opts) except -1:
        """Apply ((level, option, bytes), ...) now. While connecting they also go on the list
        applied to each connect attempt before connect() (Happy Eyeballs makes several)."""
        cdef _SockExt ext
        cdef _OptList o
        cdef int r
        if self.state == ST_CLOSED:
            raise OSError(_errno.EBADF, "the socket is closed")
        if self.state == ST_CONNECTING:
            ext = self._get_ext()
            if self.fd < 0 and not ext.attempts:
                # No descriptor yet: a throwaway one reports the kernel's refusal now, not
                # later as a connect_error.
                o = _opt_list(opts)
                r = bs_probe_sockopts(BS_AF_UNIX if self.flags & F_UNIX else BS_AF_INET,
                                      o.opts, o.n)
                if r < 0:
                    _raise_errno(-r)
            o = ext.sockopts
            ext.sockopts = _opt_list((o.items if o is not None else ()) + opts)
            if ext.attempts:
                for a in ext.attempts:
                    (<_Attempt>a).setopts(opts)
        if self.fd >= 0:
            _fd_setopts(self.fd, opts)
        return 0

    def setsockopt(self, int level, int option, value):
        """Set a socket option, as socket.socket.setsockopt: `value` is an int (bool) or a
        bytes-like object. On a socket still connecting it applies now and to every connect
        attempt, before connect(). Raises OSError (with the kernel's errno, EBADF once closed),
        TypeError for another value type."""
        _check_thread(self.loop)
        self._setopts(((level, option, _opt_value(value)),))

    def getsockopt(self, int level, int option, int buflen=0):
        """Read a socket option, as socket.socket.getsockopt: an int, or with buflen > 0 the
        raw bytes (at most buflen). Raises OSError (EBADF once closed, ENOTCONN before the
        connection has a descriptor), ValueError for a buflen outside 0..1024."""
        _int_arg("buflen", buflen, 0, 1024)      # (before the state: a bad call is a bad call)
        if self.state == ST_CLOSED:
            raise OSError(_errno.EBADF, "the socket is closed")
        if self.fd < 0:
            raise OSError(_errno.ENOTCONN, "the socket has no descriptor yet (its connect has "
                          "not started)")
        return _fd_getsockopt(self.fd, level, option, buflen)

    def set_keep_alive(self, bint on=True, initial_delay=0, *, idle=None, interval=None,
                       count=None):
        """TCP keepalive: with `on`, probes start after `idle` seconds without traffic (alias
        `initial_delay`, Bun's name; in seconds, not Bun's milliseconds), repeat every
        `interval` seconds, and the connection is dropped after `count` unanswered probes
        (close gets TimeoutError); None or 0 keeps the system default. Times are rounded up
        to whole seconds. Returns True, or False on a unix socket (nothing to do). Raises
        OSError (EBADF once closed; ENOPROTOOPT for a setting this platform lacks),
        ValueError/TypeError for bad values."""
        _check_thread(self.loop)
        cdef int idle_s = _keepalive_s("initial_delay", initial_delay)
        cdef int n
        opts = []
        if idle is not None:
            n = _keepalive_s("idle", idle)
            if idle_s and n and n != idle_s:
                raise ValueError("initial_delay and idle are the same setting: give one")
            idle_s = n or idle_s
        if self.state == ST_CLOSED:
            raise OSError(_errno.EBADF, "the socket is closed")
        if self.flags & F_UNIX:
            return False
        opts.append(_named("SO_KEEPALIVE", BS_OPT_KEEPALIVE) + (_opt_value(1 if on else 0),))
        if on:
            if idle_s:
                opts.append(_named("TCP_KEEPIDLE", BS_OPT_KEEPIDLE) + (_opt_value(idle_s),))
            if interval is not None and _keepalive_s("interval", interval):
                opts.append(_named("TCP_KEEPINTVL", BS_OPT_KEEPINTVL)
                            + (_opt_value(_keepalive_s("interval", interval)),))
            if count is not None:
                if _int_arg("count", count, 0, 127):
                    opts.append(_named("TCP_KEEPCNT", BS_OPT_KEEPCNT) + (_opt_value(count),))
        self._setopts(tuple(opts))
        return True

    def set_user_timeout(self, seconds):
        """TCP_USER_TIMEOUT: close the connection (close gets TimeoutError) when sent data stays
        unacknowledged this many seconds (ms precision; 0 or None: the system default). With
        keepalive it bounds how long a dead peer goes unnoticed. Returns True, or False on a
        unix socket. Raises OSError (EBADF once closed; ENOPROTOOPT where the platform has no
        TCP_USER_TIMEOUT), ValueError for a negative or too large value."""
        _check_thread(self.loop)
        cdef double s = _seconds_arg("seconds", seconds)
        if self.state == ST_CLOSED:
            raise OSError(_errno.EBADF, "the socket is closed")
        if self.flags & F_UNIX:
            return False
        self._setopts((_named("TCP_USER_TIMEOUT", BS_OPT_USER_TIMEOUT)
                       + (_opt_value(<int>ceil(s * 1000.0)),),))
        return True

    def tcp_info(self):
        """The kernel's view of this TCP connection, for monitoring: a bunsock.TcpInfo named
        tuple (rtt, rttvar in seconds; retransmits; cwnd and unacked in segments;
        delivery_rate in bytes/s or None). None on a unix socket. Raises OSError (EBADF once
        closed, ENOTCONN while connecting, ENOPROTOOPT where the platform has no TCP_INFO)."""
        if self.state == ST_CLOSED:
            raise OSError(_errno.EBADF, "the socket is closed")
        if self.state == ST_CONNECTING:
            raise OSError(_errno.ENOTCONN, "the socket is still connecting")
        if self.flags & F_UNIX:
            return None
        return _tcp_stat(self.fd)

    def set_no_delay(self, bint on=True):
        """TCP_NODELAY on or off (on by default, as in Bun). No effect on unix or closed
        sockets. Raises OSError if the kernel refuses."""
        _check_thread(self.loop)
        cdef int r
        if self.state == ST_CONNECTING and not (self.flags & F_UNIX):
            # Kept with the connect's options: applied to each attempt, and not overwritten
            # by the default when the connection opens.
            self._setopts(((IPPROTO_TCP, TCP_NODELAY, _opt_value(1 if on else 0)),))
        elif self.state == ST_OPEN and not (self.flags & F_UNIX):
            r = bs_set_nodelay(self.fd, on)
            if r < 0:
                _raise_errno(-r)


cdef int _keepalive_s(str name, object value) except -1:
    """Keepalive times: seconds rounded up to whole ones (the kernel's unit), at most 32767 (the
    kernel's limit for TCP_KEEPIDLE/TCP_KEEPINTVL, below _MAX_SECONDS)."""
    return <int>ceil(_seconds_arg(name, value, False, 32767.0))
