# Listener: a listening socket, accepting in batches and handing sockets to the shared table.


cdef class Listener(_Handle):
    """A listening socket: accepts connections and hands them to the shared handler table."""

    def __cinit__(self):
        global _n_listeners
        _n_listeners += 1
        self.fd = -1

    def __dealloc__(self):
        global _n_listeners
        _n_listeners -= 1
        if self.fd >= 0:
            c_close(self.fd)

    @staticmethod
    cdef Listener _new(Loop loop, _Ctx ctx, data, int fd):
        cdef Listener l = Listener.__new__(Listener)
        cdef int err
        l.loop = loop
        l.ctx = ctx
        l.data = data
        l.fd = fd
        err = -bs_poller_add(&loop.poller, fd, <void *>l, BS_READABLE)
        if err > 0:
            c_close(fd)
            l.fd = -1
            _raise_errno(err)
        l.mask = BS_READABLE
        Py_INCREF(l)     # the poller's reference
        l.refed = True
        loop.refs += 1
        loop.listeners.add(l)
        return l

    cdef int _adopt(self, Loop loop) except -1:
        """In a forked serve() worker: take over this listener, created by the parent on a loop
        the child may not use. Its fd (inherited, shared with the parent: the kernel hands each
        connection to one process) is registered with `loop`, this process's own. The
        connections the parent had accepted are the parent's: this listener starts with none."""
        cdef int err
        if self.stopped or self.fd < 0:
            return 0
        err = -bs_poller_add(&loop.poller, self.fd, <void *>self, BS_READABLE)
        if err > 0:
            _raise_errno(err)
        self.loop.listeners.discard(self)
        self.loop = loop      # the poller's reference moves with it
        self.mask = BS_READABLE
        self.backoff = None   # a timer of the old loop
        self.head = None
        self._connections = 0
        if self.refed:
            loop.refs += 1
        loop.listeners.add(self)
        return 0

    cdef int _on_event(self, uint32_t ev) except -1:
        cdef int fd, i
        cdef Loop loop = self.loop
        for i in range(ACCEPT_BATCH):
            fd = bs_accept(self.fd)
            loop.n_accept += 1
            if fd < 0:
                if fd == -EAGAIN or fd == -EWOULDBLOCK:
                    return 0
                if fd == -ECONNABORTED:
                    continue
                if fd == -EMFILE or fd == -ENFILE or fd == -ENOBUFS or fd == -ENOMEM:
                    # Out of descriptors: level-triggered readiness would spin at 100% CPU, so
                    # stop listening briefly and let closes free some.
                    self._pause_accept()
                return 0
            _accept_socket(self, fd)
            if self.stopped:
                return 0
            if self.max_conns and self._connections >= self.max_conns:
                # At the limit: leave further connections in the kernel's backlog (they are
                # accepted when a socket closes) instead of accepting and closing them.
                self.full = True
                self._update_accept()
                return 0
        return 0

    cdef _pause_accept(self):
        if self.backoff is not None or self.stopped:
            return
        self.backoff = self.loop.call_later(ACCEPT_BACKOFF_S, self._resume_accept)
        self.backoff.unref()
        self._update_accept()

    def _resume_accept(self):
        self.backoff = None
        self._update_accept()

    cdef _update_accept(self):
        """Accept interest on while neither the EMFILE back-off nor max_connections holds it."""
        cdef uint32_t want
        if self.stopped:
            return
        want = 0 if (self.backoff is not None or self.full) else BS_READABLE
        if want != self.mask and bs_poller_mod(&self.loop.poller, self.fd, <void *>self,
                                               self.mask, want) == 0:
            self.mask = want

    cdef _link(self, Socket s):
        s.lnext = self.head
        if self.head is not None:
            self.head.lprev = s
        self.head = s
        self._connections += 1

    cdef _unlink(self, Socket s):
        if s.lprev is not None:
            s.lprev.lnext = s.lnext
        else:
            self.head = s.lnext
        if s.lnext is not None:
            s.lnext.lprev = s.lprev
        s.lprev = None
        s.lnext = None
        self._connections -= 1
        if self.stopped and self._connections == 0 and self._on_closed:
            self._closed_now()
        if self.full and self._connections < self.max_conns:
            self.full = False
            self._update_accept()

    def stop(self, bint close_active=False, callback=None):
        """Stop accepting. With close_active=True, close every accepted socket now (each `close`
        handler runs before stop() returns). Idempotent. callback: called as callback(listener)
        on the loop (as call_soon) once the listener is stopped and its last accepted socket
        has closed (at the next iteration if none is open; each stop() call may add one).
        Raises TypeError for a callback that is not callable."""
        cdef Socket s
        _check_thread(self.loop)
        if callback is not None:
            self._when_closed(callback)
        if not self.stopped:
            self.stopped = True
            if self.backoff is not None:
                self.backoff.cancel()
                self.backoff = None
            bs_poller_del(&self.loop.poller, self.fd, self.mask)
            c_close(self.fd)
            self.fd = -1
            if self.refed:
                self.loop.refs -= 1
            if self._unix_path is not None and self._unix_path[:1] != b"\0":
                self._unlink_own_path()
            self.loop.listeners.discard(self)
            self.loop._retire(self)
        if close_active:
            victims = []
            s = self.head
            while s is not None:
                victims.append(s)
                s = s.lnext
            for s in victims:
                s.close()
        if self._on_closed and self._connections == 0:
            self._closed_now()     # (callback= given to an idempotent second stop())

    def _when_closed(self, callback):
        """Call callback(listener) on the loop once closed (stopped, no live socket), without
        stopping it (bunsock.aio.wait_closed)."""
        _check_thread(self.loop)
        if not callable(callback):
            raise TypeError("callback must be callable, not %s" % type(callback).__name__)
        if self._on_closed is None:
            self._on_closed = []
        self._on_closed.append(callback)
        if self.stopped and self._connections == 0:
            self._closed_now()

    cdef _closed_now(self):
        cbs, self._on_closed = self._on_closed, None
        for fn in cbs:
            self.loop.call_soon(fn, self)

    @property
    def closed(self):
        """True once stop() was called and the last accepted socket has closed."""
        return self.stopped and self._connections == 0

    cdef _unlink_own_path(self):
        # Remove the socket file only while it is still the one this listener bound: another
        # listener may have removed it and bound a new socket at the same path meanwhile.
        try:
            st = os.stat(self._unix_path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self._unix_id:
            try:
                os.unlink(self._unix_path)
            except OSError:
                pass

    def reload(self, socket):
        """Swap the handler table in place: this listener and all its live sockets switch now.
        Raises TypeError for a bad table (as listen does), ValueError for
        proxy_protocol.accept(...) on a TLS listener."""
        _check_thread(self.loop)
        from ._api import check_plain_table, resolve_handlers
        check_plain_table(socket, self.ctx.tls is not None)
        self.ctx.set_handlers(resolve_handlers(socket))

    def ref(self):
        """Make the listening socket keep run() going (the default). Returns self."""
        _check_thread(self.loop)
        if not self.refed:
            self.refed = True
            if not self.stopped:
                self.loop.refs += 1
        return self

    def unref(self):
        """Let run() return while only this listener is left. Returns self."""
        _check_thread(self.loop)
        if self.refed:
            self.refed = False
            if not self.stopped:
                self.loop.refs -= 1
        return self

    def fileno(self):
        """The listening socket's descriptor, or -1 after stop()."""
        return self.fd

    @property
    def port(self):
        """The bound TCP port (the one picked when listen() was given port=0); None for a unix
        listener."""
        return None if self._unix is not None else self._port

    @property
    def hostname(self):
        """The hostname given to listen() (for listen(fd=/sock=): the address read from the
        socket)."""
        return self._hostname

    @property
    def unix(self):
        """The unix socket path of a unix listener, else None."""
        return self._unix

    @property
    def connections(self):
        """How many accepted sockets of this listener are open now."""
        return self._connections

    @property
    def high_water_mark(self):
        """The high_water_mark of the sockets this listener accepts (None: unbounded);
        settable (as Socket.high_water_mark): applies at once to every accepted socket that has
        not been given its own."""
        return None if self.ctx.hwm < 0 else self.ctx.hwm

    @high_water_mark.setter
    def high_water_mark(self, value):
        _check_thread(self.loop)
        self.ctx.hwm = _hwm_for(self.ctx, value)

    @property
    def low_water_mark(self):
        """The low_water_mark of the sockets this listener accepts; settable, as
        high_water_mark."""
        return self.ctx.lwm

    @low_water_mark.setter
    def low_water_mark(self, value):
        _check_thread(self.loop)
        self.ctx.lwm = _lwm_for(self.ctx, value)

    # -- added by the socket-control work (issue 14) --

    @property
    def address(self):
        """The bound address: (ip, port) for TCP, the real one (so "0.0.0.0"/"::" read back as
        given, and port=0 as the port picked); the path (str) for a unix listener. Still
        answers after stop()."""
        cdef char buf[128]
        cdef int port = 0, fam
        if self._address is None:
            if self._unix is not None:
                return self._unix
            if self.fd < 0:
                return None
            fam = bs_sockname(self.fd, 0, buf, sizeof(buf), &port)
            if fam < 0:
                _raise_errno(-fam)
            if fam == BS_AF_UNIX:
                return None
            self._address = (buf.decode(), port)
        return self._address

    def _set_max_connections(self, Py_ssize_t n):
        self.max_conns = n

    @property
    def max_connections(self):
        """The max_connections given to listen(), or None."""
        return self.max_conns if self.max_conns else None

    @property
    def loop(self):
        """The Loop this listener belongs to."""
        return self.loop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop(True)
        return False

    def __repr__(self):
        where = self._unix if self._unix is not None else "%s:%s" % (self._hostname, self._port)
        return "<bunsock.Listener %s%s connections=%d>" % (
            where, " stopped" if self.stopped else "", self._connections)
