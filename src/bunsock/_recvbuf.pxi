# The loop's receive buffer, and the memoryviews lent out of it (binary_type="memoryview").


cdef class _RecvBuf:
    """One loop's receive buffer. With binary_type="memoryview" the `data` handler gets a view
    exported by this object. A view that outlives the call (a slice kept by the user,
    numpy.frombuffer of it) keeps this object, and so the memory, alive: the loop then hands the
    buffer over to those views and allocates itself a new one, so a kept view stays valid and
    never sees later reads."""

    cdef int alloc(self, Py_ssize_t size) except -1:
        # Page-aligned: the kernel's copy into it (rep movsb) is several times slower into a
        # destination that is not cache-line aligned, and malloc's large blocks are at page+16.
        if posix_memalign(<void **>&self.buf, 4096, size) != 0:
            self.buf = NULL
            raise MemoryError()
        return 0

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("the data handler's memoryview is read-only")
        PyBuffer_FillInfo(view, self, self.buf + self.lent_off, self.lent, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1

    def __dealloc__(self):
        free(self.buf)


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
