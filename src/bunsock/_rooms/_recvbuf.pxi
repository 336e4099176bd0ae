# The loop's receive buffers (TCP's one buffer, UDP's batch of slots) and the memoryviews lent out
# of them (binary_type="memoryview").

cdef enum:
    UDP_BATCH = 32          # datagrams per recvmmsg
    # Bytes per receive slot: the largest UDP payload (65,507 over IPv4, 65,527 over IPv6) fits,
    # so no datagram is ever truncated. Only the pages a datagram touches become resident.
    UDP_SLOT = 65536


cdef class _LentBuf:
    """A receive buffer the `data` handler may get a read-only memoryview of: buf[lent_off:
    lent_off + lent], exported by this object. A view that outlives the call (a slice kept by
    the user, numpy.frombuffer of it) keeps this object, and so the memory, alive: the loop then
    hands the buffer over to those views and takes a new one for itself, so a kept view stays
    valid and never sees later reads."""

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("the data handler's memoryview is read-only")
        PyBuffer_FillInfo(view, self, self.buf + self.lent_off, self.lent, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1

    def __dealloc__(self):
        free(self.buf)


cdef class _RecvBuf(_LentBuf):
    """One loop's receive buffer for stream sockets (framing lends single messages of it)."""

    cdef int alloc(self, Py_ssize_t size) except -1:
        # Page-aligned: the kernel's copy into it (rep movsb) is several times slower into a
        # destination that is not cache-line aligned, and malloc's large blocks are at page+16.
        if posix_memalign(<void **>&self.buf, 4096, size) != 0:
            self.buf = NULL
            raise MemoryError()
        return 0


cdef class _UdpArea(_LentBuf):
    """One loop's UDP receive slots (UDP_BATCH of UDP_SLOT bytes); a view lends one slot."""

    def __cinit__(self):
        cdef int i
        if posix_memalign(<void **>&self.buf, 4096, UDP_BATCH * UDP_SLOT) != 0:
            self.buf = NULL
            raise MemoryError()
        self.slots = <bs_udp_in *>malloc(UDP_BATCH * sizeof(bs_udp_in))
        if self.slots == NULL:
            raise MemoryError()
        for i in range(UDP_BATCH):
            self.slots[i].buf = self.buf + i * UDP_SLOT
            self.slots[i].cap = UDP_SLOT

    def __dealloc__(self):
        free(self.slots)      # (buf: _LentBuf's)


cdef object _lend_view(Loop loop, Py_ssize_t n):
    loop.recv.lent = n
    loop.recv.lent_off = 0
    return PyMemoryView_FromObject(loop.recv)


cdef int _return_view(Loop loop, object mv) except -1:
    try:
        mv.release()
    except BufferError:
        pass      # something exports the view itself (numpy.frombuffer): handled below
    if loop.recv.exports:
        # A view of this buffer outlives the call: it keeps the old buffer; reads go to a new one.
        loop._new_rbuf()
    return 0
