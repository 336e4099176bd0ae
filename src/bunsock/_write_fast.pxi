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

    static PyObject *bs_write_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames) {
        PyObject *stack[8];
        PyObject **argv = stack;
        Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, i;
        PyObject *r;
        if (nargs == 1 && nkw == 0 && PyBytes_CheckExact(args[0]))
            return bs_write_bytes(self, args[0]);
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


cdef object _write_bytes(Socket self, object data):
    """write(data) with data an exact bytes object: what Socket.write does for it."""
    _check_thread(self.loop)
    if self.flags & F_PIPE_DST:
        _relay_spill_in(self)     # bytes a splice left in the kernel pipe go first
    return _SocketWriter._write(self, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), data)


def _install_write_entry():
    generic = Socket.__dict__["write"]
    doc = generic.__doc__.split("\n\n", 1)[1]
    bs_install_write(<PyTypeObject *>Socket, generic, <bs_write_bytes_t>_write_bytes,
                     "write($self, /, data, offset=0, length=None)\n--\n\n" + doc)


_install_write_entry()
