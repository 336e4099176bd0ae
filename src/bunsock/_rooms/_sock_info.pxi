# Socket, introspection: state, counters, addresses and the TLS session and identity
# (read-only views; the proxy_header setter is the one assignment).


cdef class _SocketInfo(_SocketReader):
    """(Socket's properties: a base class of Socket, see _loop.pxd.)"""

    @property
    def ready_state(self):
        """The socket's state: "connecting", "open", "closing" (ended, flushing its writes) or
        "closed"."""
        if self.state == ST_CONNECTING:
            return "connecting"
        if self.state == ST_CLOSED:
            return "closed"
        if self.flags & (F_ENDING | F_SHUT_WR):
            return "closing"
        return "open"

    @property
    def buffered_amount(self):
        """Bytes accepted by write() that the kernel has refused so far (waiting in the sink),
        plus plaintext TLS holds until its handshake is done. While it is above 0 a `drain` is
        owed. Bytes a handler wrote that are only corked until it returns are not counted."""
        if self.flags & F_PIPE_DST:
            return self._backlog() + self.ext.pipe_in.inpipe
        return self._backlog()

    @property
    def bytes_written(self):
        """Bytes handed to the kernel so far (relayed bytes included)."""
        return self.bytes_written

    @property
    def bytes_read(self):
        """Bytes read from the kernel so far (relayed bytes included)."""
        return self.bytes_read

    @property
    def listener(self):
        """The Listener that accepted this socket; None for a client made by connect()."""
        return self._listener

    @property
    def loop(self):
        """The Loop this socket belongs to."""
        return self.loop

    @property
    def paused(self):
        """Whether reading is paused (pause() or pause_on_connect=True; resume() restarts it)."""
        return bool(self.flags & F_PAUSED)

    @property
    def proxy_header(self):
        """The PROXY protocol header this connection began with (a
        bunsock.proxy_protocol.ProxyHeader, set by proxy_protocol.accept), or None."""
        return None if self.ext is None else self.ext.proxy_header

    @proxy_header.setter
    def proxy_header(self, value):
        _check_thread(self.loop)
        self._get_ext().proxy_header = value

    cdef object _addr(self, bint peer):
        cdef char buf[128]
        cdef int port = 0, fam
        cdef _SockExt ext = self._get_ext()
        cached = ext.peer if peer else ext.local
        if cached is not None:
            return cached
        if self.fd < 0 or (self.flags & F_UNIX):
            return (None, None, None)
        fam = bs_sockname(self.fd, peer, buf, sizeof(buf), &port)
        if fam <= 0 or fam == BS_AF_UNIX:
            return (None, None, None)
        res = (buf.decode(), port, "IPv6" if fam == BS_AF_INET6 else "IPv4")
        if peer:
            ext.peer = res
        else:
            ext.local = res
        return res

    @property
    def remote_address(self):
        """The peer's IP address as text, or None (unix socket, or not connected yet)."""
        return self._addr(True)[0]

    @property
    def remote_port(self):
        """The peer's port, or None (unix socket, or not connected yet)."""
        return self._addr(True)[1]

    @property
    def local_address(self):
        """This end's IP address as text, or None (unix socket, or not connected yet)."""
        return self._addr(False)[0]

    @property
    def local_port(self):
        """This end's port, or None (unix socket, or not connected yet)."""
        return self._addr(False)[1]

    @property
    def family(self):
        """"IPv4" or "IPv6"; None for a unix socket or while connecting."""
        return self._addr(True)[2] if self.state != ST_CONNECTING else None

    # TLS accessors (None on a plaintext socket)
    @property
    def authorized(self):
        """TLS: whether the peer's certificate was verified; False on a plaintext socket."""
        t = self._tls()
        return False if t is None else t.authorized

    @property
    def alpn_protocol(self):
        """TLS: the protocol ALPN settled on (e.g. "h2"), or None."""
        t = self._tls()
        return None if t is None else t.sslobj.selected_alpn_protocol()

    def getpeercert(self, binary_form=False):
        """TLS: the peer's certificate as ssl.SSLSocket.getpeercert() gives it (DER bytes with
        binary_form=True); None on a plaintext socket or before the handshake."""
        t = self._tls()
        return None if t is None else t.sslobj.getpeercert(binary_form)

    def cipher(self):
        """TLS: (name, protocol, bits) of the negotiated cipher; None on a plaintext socket."""
        t = self._tls()
        return None if t is None else t.sslobj.cipher()

    def version(self):
        """TLS: the negotiated protocol version, e.g. "TLSv1.3"; None on a plaintext socket."""
        t = self._tls()
        return None if t is None else t.sslobj.version()

    cdef object _tls(self):
        return self.ext.tls if self.flags & F_TLS else None

    def __repr__(self):
        return "<bunsock.Socket fd=%d %s>" % (self.fd, self.ready_state)

    # -- TLS session and identity (None on a plaintext socket) --

    @property
    def session(self):
        """The TLS session (ssl.SSLSession) to resume later with connect(tls=..., session=...),
        Bun's getSession(); None on a plaintext socket or before the handshake. With TLS 1.3
        the server sends its tickets after the handshake: read it once data has arrived."""
        t = self._tls()
        return None if t is None else t.sslobj.session

    @property
    def session_reused(self):
        """True when this connection resumed a previous TLS session (Bun's isSessionReused)."""
        t = self._tls()
        return False if t is None else t.sslobj.session_reused

    @property
    def server_hostname(self):
        """The server name a TLS client verified and sent as SNI, or None (server side,
        plaintext socket)."""
        t = self._tls()
        return None if t is None else t.sslobj.server_hostname

    def getcertificate(self):
        """This side's own certificate (the leaf loaded from tls['cert']) in DER, Bun's
        getCertificate(); None on a plaintext socket, without a certificate, or when tls= was
        an ssl.SSLContext the caller built (Python's ssl cannot read the certificate back out
        of a context: ssl.DER_cert_to_PEM_cert() converts what this returns)."""
        t = self._tls()
        if t is None:
            return None
        return getattr(t.sslobj.context, "_bunsock_cert_der", None)
