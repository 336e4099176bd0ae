# Socket.write's entry point. Almost every call is `sock.write(some_bytes)`: one positional bytes
# argument. Cython's generic wrapper for `def write(self, data, offset=0, length=None)` spent
# about 100 instructions per call on that shape (a CyFunction hop, keyword-capable argument
# parsing, references taken and dropped on each argument and default). So `write` in Socket's
# type dict is replaced by a plain method descriptor (METH_FASTCALL | METH_KEYWORDS, which the
# interpreter specialises and calls directly) whose C entry sends that shape straight to
# _write_bytes and hands every other shape, unchanged, to the Cython method (same parsing, same
# errors, same docstring).

from cpython.object cimport PyTypeObject

cdef extern from *:
    """
    typedef PyObject *(*bs_write_bytes_t)(PyObject *self, PyObject *data);
    static bs_write_bytes_t bs_write_bytes;   /* _write_bytes */
    static PyObject *bs_write_generic;        /* the Cython `def write`, for any other call */
    static PyObject *bs_write_doc;            /* keeps the descriptor's ml_doc alive */

    #if defined(__GNUC__)
    __attribute__((noinline))
    #endif
    static PyObject *bs_write_slow(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames) {
        PyObject *stack[8];
        PyObject **argv = stack;
        Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, i;
        PyObject *r;
        /* self, then the positional and keyword values as they came */
        if (nargs + nkw + 1 > (Py_ssize_t)(sizeof(stack) / sizeof(stack[0]))) {
            argv = (PyObject **)PyMem_Malloc((size_t)(nargs + nkw + 1) * sizeof(PyObject *));
            if (argv == NULL)
                return PyErr_NoMemory();
        }
        argv[0] = self;
        for (i = 0; i < nargs + nkw; i++)
            argv[i + 1] = args[i];
        r = PyObject_Vectorcall(bs_write_generic, argv, (size_t)(nargs + 1), kwnames);
        if (argv != stack)
            PyMem_Free(argv);
        return r;
    }

    /* write() returns the count it accepted, nearly always the same one (the message size):
     * one cached int object saves creating it (PyLong_FromSsize_t) per call. */
    static Py_ssize_t bs_last_n = -1;
    static PyObject *bs_last_int;

    static PyObject *bs_int(Py_ssize_t n) {
        if (n != bs_last_n) {
            PyObject *o = PyLong_FromSsize_t(n);
            if (o == NULL)
                return NULL;
            Py_XSETREF(bs_last_int, o);
            bs_last_n = n;
        }
        Py_INCREF(bs_last_int);
        return bs_last_int;
    }

    /* Kept small (the slow shapes are out of line) so the common call costs a few compares. */
    static PyObject *bs_write_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames) {
        if (nargs == 1 && kwnames == NULL && PyBytes_CheckExact(args[0]))
            return bs_write_bytes(self, args[0]);
        return bs_write_slow(self, args, nargs, kwnames);
    }

    static PyMethodDef bs_write_def = {
        "write", (PyCFunction)(void (*)(void))bs_write_entry, METH_FASTCALL | METH_KEYWORDS, NULL};

    /* Put the descriptor in tp's dict in place of `generic` (which it keeps and calls). The
     * docstring is generic's, under a text signature so inspect.signature() still works. */
    static int bs_install_write(PyTypeObject *tp, PyObject *generic, bs_write_bytes_t fast,
                                PyObject *doc) {
        PyObject *descr;
        bs_write_doc = doc;
        Py_INCREF(doc);
        bs_write_def.ml_doc = PyUnicode_AsUTF8(doc);
        if (bs_write_def.ml_doc == NULL)
            return -1;
        bs_write_generic = generic;
        Py_INCREF(generic);
        bs_write_bytes = fast;
        descr = PyDescr_NewMethod(tp, &bs_write_def);
        if (descr == NULL)
            return -1;
        if (PyDict_SetItemString(tp->tp_dict, "write", descr) < 0) {
            Py_DECREF(descr);
            return -1;
        }
        Py_DECREF(descr);
        PyType_Modified(tp);
        return 0;
    }
    """
    ctypedef PyObject *(*bs_write_bytes_t)(PyObject *self, PyObject *data)
    int bs_install_write(PyTypeObject *tp, object generic, bs_write_bytes_t fast,
                         object doc) except -1
    object bs_int(Py_ssize_t n)


cdef object _write_bytes(Socket self, object data):
    """write(data) with data an exact bytes object: what Socket.write does for it."""
    # The loop, borrowed: it outlives its sockets (and Cython would take and drop a reference).
    cdef PyObject *lp = <PyObject *>self.loop
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    _check_thread(<Loop>lp)
    # The common case, decided here in one test: a handler's first write on an open plaintext
    # socket with nothing pending, within the cork limit and high_water_mark. It is exactly what
    # _write + _write_raw do then (the corked branch: hold the object, join the cork list), and
    # every other state takes the full path below.
    if ((<Loop>lp).depth > 0 and self.state == ST_OPEN and self.cork_obj is None and
            self.sink.len == 0 and 0 < n <= CORK_LIMIT and
            not (self.flags & (F_ENDING | F_SHUT_WR | F_TLS | F_BACKED_UP | F_PIPE_DST)) and
            (self.ctx.hwm < 0 or n <= self.ctx.hwm)):
        _touch(self, False)
        self.cork_obj = data
        if not (self.flags & F_CORKED):
            self.flags |= F_CORKED
            self.cork_next = (<Loop>lp).cork_head
            (<Loop>lp).cork_head = self
        return bs_int(n)
    if self.flags & F_PIPE_DST:
        _relay_spill_in(self)     # bytes a splice left in the kernel pipe go first
    return bs_int(_SocketWriter._write(self, PyBytes_AS_STRING(data), n, data))


def _install_write_entry():
    generic = Socket.__dict__["write"]
    doc = generic.__doc__.split("\n\n", 1)[1]
    bs_install_write(<PyTypeObject *>Socket, generic, <bs_write_bytes_t>_write_bytes,
                     "write($self, /, data, offset=0, length=None)\n--\n\n" + doc)


_install_write_entry()
