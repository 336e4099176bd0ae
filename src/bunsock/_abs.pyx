"""ArrayBufferSink: a growable C byte sink for assembling output from many small pieces (API.md §8)."""
from cpython.buffer cimport (PyBUF_FULL_RO, PyBuffer_IsContiguous, PyBuffer_Release,
                             PyObject_CheckBuffer, PyObject_GetBuffer)
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.number cimport PyIndex_Check
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
cimport cython

from operator import index as _index


from ._core cimport (bs_sink, bs_sink_append, bs_sink_consume, bs_sink_extend, bs_sink_free, bs_sink_init,
                    bs_sink_linearize, bs_sink_reserve, bs_sink_truncate)


cdef extern from "Python.h":
    # cpython.buffer declares it without an error value; it does set an exception on -1.
    int to_contiguous "PyBuffer_ToContiguous" (void *buf, Py_buffer *view, Py_ssize_t len,
                                               char order) except -1


cdef class ArrayBufferSink:
    """A growable byte sink. ``start()`` is optional: an unstarted sink behaves as after
    ``start()`` with the defaults (as in Bun)."""

    cdef bs_sink sink
    cdef size_t unflushed       # bytes written since the last flush()
    cdef bint stream
    cdef bint as_bytearray
    cdef bint ended

    def __cinit__(self):
        bs_sink_init(&self.sink)

    def __dealloc__(self):
        bs_sink_free(&self.sink)

    def start(self, *, stream=False, high_water_mark=None, as_bytearray=False):
        """Clear the sink (re-opening it after end()) and reserve ``high_water_mark`` bytes."""
        cdef Py_ssize_t reserve = 0
        if high_water_mark is not None:
            # bool is an int, but True as a byte count is surely a mistake.
            if type(high_water_mark) is bool or not PyIndex_Check(high_water_mark):
                raise TypeError("high_water_mark must be an int or None, not %s"
                                % type(high_water_mark).__name__)
            reserve = _index(high_water_mark)  # OverflowError beyond Py_ssize_t, like bytearray(n)
            if reserve < 0:
                raise ValueError("high_water_mark must be >= 0, not %d" % reserve)
        self.stream = bool(stream)
        self.as_bytearray = bool(as_bytearray)
        self.ended = False
        self.unflushed = 0
        bs_sink_truncate(&self.sink, 0)
        if reserve and bs_sink_reserve(&self.sink, <size_t>reserve) < 0:
            raise MemoryError("ArrayBufferSink: cannot reserve %d bytes" % reserve)

    @cython.always_allow_keywords(False)  # METH_O: the hot call skips argument parsing
    def write(self, data):
        """Append a bytes-like object, or a str as UTF-8. Returns the number of bytes appended."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef Py_buffer view
        cdef char *dst
        if self.ended:
            raise ValueError("ArrayBufferSink has ended")
        if type(data) is bytes:
            p = PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        elif isinstance(data, str):
            p = PyUnicode_AsUTF8AndSize(data, &n)
        elif PyObject_CheckBuffer(data):
            # FULL_RO: accept whatever layout the exporter has (strided, suboffsets, read-only),
            # and flatten the rare non-contiguous one straight into the sink.
            PyObject_GetBuffer(data, &view, PyBUF_FULL_RO)
            try:
                n = view.len
                if n == 0:
                    return 0
                if PyBuffer_IsContiguous(&view, b'C'):
                    if bs_sink_append(&self.sink, view.buf, <size_t>n) < 0:
                        raise MemoryError()
                else:
                    dst = bs_sink_extend(&self.sink, <size_t>n)
                    if dst == NULL:
                        raise MemoryError()
                    try:
                        to_contiguous(dst, &view, n, b'C')
                    except BaseException:
                        bs_sink_truncate(&self.sink, self.sink.len - <size_t>n)
                        raise
                self.unflushed += <size_t>n
                return n
            finally:
                PyBuffer_Release(&view)
        else:
            raise TypeError("ArrayBufferSink.write() takes a bytes-like object or str, not %s"
                            % type(data).__name__)
        if n and bs_sink_append(&self.sink, p, <size_t>n) < 0:
            raise MemoryError()
        self.unflushed += <size_t>n
        return n

    def flush(self):
        """Stream mode: the bytes written since the last flush (the sink is emptied).
        Otherwise: the number of bytes written since the last flush (the data is kept)."""
        cdef size_t n
        if self.ended:
            raise ValueError("ArrayBufferSink has ended")
        if not self.stream:
            n = self.unflushed
            self.unflushed = 0
            return n
        out = self._take()
        self.unflushed = 0
        return out

    def end(self):
        """Everything still held (bytes, or bytearray with as_bytearray=True); the sink is then
        finished until start() re-opens it. Calling end() again returns an empty result."""
        out = self._take()
        bs_sink_free(&self.sink)
        self.ended = True
        self.unflushed = 0
        return out

    def __len__(self):
        return self.sink.len

    cdef object _take(self):
        cdef size_t n = self.sink.len
        cdef char *p = bs_sink_linearize(&self.sink)
        if p == NULL and n:
            raise MemoryError()
        if self.as_bytearray:
            out = PyByteArray_FromStringAndSize(p, <Py_ssize_t>n)
        else:
            out = PyBytes_FromStringAndSize(p, <Py_ssize_t>n)
        bs_sink_consume(&self.sink, n)
        return out
