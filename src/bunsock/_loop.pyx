# cython: language_level=3
"""The bunsock event loop: one poller, one receive buffer, one timer wheel per loop.

Hot path: poller wait (keeping the GIL while events are ready, Loop._poll) -> recv into the loop
buffer -> one vectorcall of the shared `data` handler -> sock.write() (its C entry, corked: the
bytes object is held, not copied) -> one send when the handler returns. Every handler call goes
through `call_handler` (the `data` call in _deliver is the same sequence spelled out), so writes
made inside it are coalesced and a handler's exception is routed to `error` instead of escaping
into the loop. benchmarks/instr_pingpong.py --breakdown shows what each step costs.

The module is one C extension (calls between its parts are direct C calls) assembled from rooms,
one concern each, in src/bunsock/_rooms/ (the TLS extension's rooms, _tls_*.pxi, are there too):
  _validate.pxi     argument checks: one for ints, one for seconds (one cap), C strings
  _timer.pxi        Timer (call_later / call_every / call_soon)
  _sockopt.pxi      socket option lists (before bind/connect), named options, TCP statistics
  _loopcore.pxi     Loop: iteration, handler scope and cork list, timers
  _loops.pxi        the default loop per thread (get_loop), fork, serve's listener hand-over
  _factories.pxi    listeners (bound or adopted), adopted connected sockets, UDP sockets
  _recvbuf.pxi      the loop's receive buffers (TCP, UDP slots) and the memoryviews lent out
  _listener.pxi     Listener: accept
  _sock_base.pxi    socket state, lifecycle (close/teardown), poller interest; the TLS hook
  _sock_write.pxi   the write path: sink, cork, flush, high_water_mark, drain (one state machine);
                    with _sock_sink.pxi (when a sink's storage is given back)
  _sock_read.pxi    socket events: read, EOF, writable, idle timer
  _connect.pxi      connecting: resolution, address after address or Happy Eyeballs, open
  _sock_info.pxi    Socket's properties: state, counters, addresses, TLS identity
  _sock_ctl.pxi     Socket's options: setsockopt, TCP_NODELAY, keepalive, user timeout, tcp_info
  _sock_api.pxi     Socket: the public write, flow and lifecycle methods
  _write_fast.pxi   Socket.write's C entry: sock.write(bytes) without generic argument parsing
  _udp_peers.pxi    UDP: the per-socket cache of recent peers' addresses
  _udp.pxi          UdpSocket: datagrams in recvmmsg batches, send/send_many
  _group.pxi        Group: one write to many sockets (broadcast)
  _relay.pxi        pipe/relay: bytes from one socket to another inside the loop (splice or buffer);
                    with _relay_splice.pxi (pipe pool, splice pump), _relay_pipe.pxi (pipe/unpipe)
  _framing.pxi      framing: rules compiled for the C scanner, a socket's framing state
  _frame_read.pxi   framing: whole messages to `data` (scanned in C)
  _frame_write.pxi  framing: write_frame, Group.write_frame
The parts of Socket extend one another (_SocketBase <- _SocketWriter <- _SocketReader <-
_SocketInfo <- _SocketControl <- Socket: Cython cannot split one class body across files), so
their methods are virtual; hot-path calls name the
class (`_SocketWriter._flush(self)`), which Cython compiles to a direct C call the compiler can
inline.
"""
cimport cython
from cpython.buffer cimport (PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_FillInfo, PyBuffer_Release,
                            PyObject_GetBuffer)
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.exc cimport PyErr_CheckSignals
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.errno cimport (EAGAIN, ECONNABORTED, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM, ENOTCONN,
                         errno)
from libc.math cimport INFINITY, ceil, isfinite
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport strerror
from posix.unistd cimport close as c_close, getpid

from ._core cimport *

import collections
import errno as _errno
import os
import struct as _struct
import sys as _sys
import threading
import weakref

cdef extern from "<errno.h>":
    int EWOULDBLOCK

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

cdef extern from *:
    """
    /* volatile: compilers delete a malloc that is freed unused, and this one is for its effect. */
    static void _prime_malloc(size_t n) {
        void *volatile p = malloc(n);
        free(p);
    }
    """
    void _prime_malloc(size_t n) nogil

cdef extern from "Python.h":
    object PyMemoryView_FromObject(object obj)
    void PyErr_WriteUnraisable(object obj)
    void PyErr_Restore(PyObject *type, PyObject *value, PyObject *tb)

cdef extern from *:
    """
    #include <limits.h>
    #include <sys/uio.h>
    #ifndef IOV_MAX
    #define IOV_MAX 1024
    #endif
    #ifdef BUNSOCK_DEBUG
    #define BS_DEBUG 1
    #else
    #define BS_DEBUG 0
    #endif
    """
    # Debug builds check the write path's invariants after every step (_sock_write.pxi); in
    # release builds the C compiler drops those branches.
    const bint BS_DEBUG
    const int IOV_MAX          # most buffers one sendmsg takes
    const int INT_MAX

cdef enum:
    MAX_EVENTS = 1024
    ACCEPT_BATCH = 128       # then let other ready fds have a turn; the listener stays ready
    # Due timers run per iteration at most: a flood of expiring timers must not starve I/O.
    TIMER_BUDGET = 100000
    # The poller takes an int timeout in ms; a later deadline just wakes once early.
    MAX_WAIT_MS = INT_MAX
    # Writes made inside a handler are held (corked) up to this much; beyond it coalescing
    # saves nothing and the kernel should see the bytes now (so that buffered_amount is real).
    CORK_LIMIT = 65536
    # Loop._poll: most iterations a missed non-blocking try skips, and most tries in a row
    TRY_BACKOFF_MAX = 64
    # Loop.run() in the main thread waits at most this long before looking for signals.
    SIGNAL_CHECK_MS = 250
    # ... and how many tries in a row before the clock is read to see whether the GIL is due.
    TRY_STREAK_MAX = 256

# Out of descriptors on accept: stop accepting this long (seconds) and let closes free some.
cdef double ACCEPT_BACKOFF_S = 0.1

# Live-object counters for leak tests (debug_counts()).
cdef Py_ssize_t _n_sockets = 0
cdef Py_ssize_t _n_listeners = 0
cdef Py_ssize_t _n_timers = 0
cdef Py_ssize_t _n_loops = 0
cdef Py_ssize_t _n_udp = 0


def debug_counts():
    """Live bunsock objects (sockets, listeners, timers, loops, UDP sockets), for leak tests."""
    return {"sockets": _n_sockets, "listeners": _n_listeners, "timers": _n_timers, "loops": _n_loops,
            "udp": _n_udp}


def backend():
    """Name of the readiness poller: "epoll" or "kqueue"."""
    return bs_poller_name().decode()


cdef object _oserror(int err):
    # OSError(errno, msg) picks the PEP 3151 subclass (ConnectionResetError, TimeoutError, ...).
    return OSError(err, strerror(err).decode())


cdef int _raise_errno(int err) except -1:
    raise _oserror(err)


cdef void _unraisable(object exc, object where) noexcept:
    """Report an exception nobody can catch, through sys.unraisablehook."""
    cdef object t = type(exc)
    cdef object tb = exc.__traceback__
    Py_INCREF(t)
    Py_INCREF(exc)
    if tb is None:
        PyErr_Restore(<PyObject *>t, <PyObject *>exc, NULL)
    else:
        Py_INCREF(tb)
        PyErr_Restore(<PyObject *>t, <PyObject *>exc, <PyObject *>tb)
    PyErr_WriteUnraisable(where)


# A test suite's window on handler failures: every Exception a handler or callback raised is shown
# to this function before the error policy routes it (to `error`, or to sys.unraisablehook), so a
# test can fail when an assert inside a handler did, whatever the handler table does with it.
cdef object _exc_observer = None


def _observe_handler_exceptions(fn):
    """Call fn(exc, where) for every Exception a handler, timer or call_soon callback raises,
    before it is routed; None stops. Returns the previous observer. For test suites: the loop
    itself never depends on it."""
    global _exc_observer
    if fn is not None and not callable(fn):
        raise TypeError("observer must be callable or None, not %s" % type(fn).__name__)
    old = _exc_observer
    _exc_observer = fn
    return old


cdef void _observe(object exc, object where) noexcept:
    if _exc_observer is None:
        return
    try:
        _exc_observer(exc, where)
    except BaseException as e:
        _unraisable(e, _exc_observer)



# ---------------------------------------------------------------------------------------------
# Who may touch a loop: its own thread while it runs, and never a process forked from its creator

# This process; a forked child sets its own (_after_fork_in_child, _loops.pxi). A Loop records
# the value it was created under, so "inherited over fork" is one integer compare.
cdef long _pid = getpid()


cdef extern from *:
    """
    /* The calling thread's identity as the address of a thread-local byte, so the thread check
     * on every write costs next to nothing. initial-exec: one %fs-relative address with no
     * __tls_get_addr call (the default model for a dlopen()ed module calls it on every use);
     * one byte fits in the static TLS surplus glibc keeps for modules loaded later. glibc only:
     * musl keeps no such surplus for dlopen()ed modules. */
    #if defined(__GNUC__) && defined(__ELF__) && defined(__GLIBC__)
    static __thread char bs_thread_marker __attribute__((tls_model("initial-exec")));
    #else
    static __thread char bs_thread_marker;
    #endif
    static inline unsigned long bs_thread_id(void) { return (unsigned long)(size_t)&bs_thread_marker; }
    """
    unsigned long bs_thread_id() nogil


cdef inline int _check_thread(Loop loop) except -1:
    """First thing in every public mutator of a loop's objects (Socket, Listener, Timer, the
    loop's call_* and factories). Nothing in a loop is locked: it is only ever touched by the
    thread running it, which the GIL alone does not guarantee (another thread's write() would
    interleave with the loop's own flush of the same socket between two bytecodes)."""
    if loop.pid != _pid or (loop.run_thread != 0 and
                            loop.run_thread != bs_thread_id()):
        return _wrong_caller(loop)
    return 0


cdef int _wrong_caller(Loop loop) except -1:
    if loop.pid != _pid:
        return _raise_forked(loop)
    raise RuntimeError(
        "this bunsock loop is running in another thread; its sockets, listeners and timers may "
        "only be used from that thread. From here, hand the call to it: "
        "loop.call_soon_threadsafe(fn, *args)")


cdef int _raise_forked(Loop loop) except -1:
    raise RuntimeError(
        "this bunsock Loop belongs to process %d and was inherited over fork(): its poller is "
        "shared with that process, so using it here would corrupt both. Use a new loop in the "
        "child (bunsock.get_loop() gives a fresh one); bunsock.serve() workers get the "
        "parent's listeners re-registered for them" % loop.pid)


cdef int _forked_in_callback(Loop loop) except -1:
    """os.fork() inside a handler: the child returns into the parent's loop. Its corked writes
    are the parent's to send (the parent sends them too), and dispatching on would read the
    parent's sockets: drop the cork list unsent and leave run() with the RuntimeError."""
    cdef Socket s
    while loop.cork_head is not None:
        s = loop.cork_head
        loop.cork_head = s.cork_next
        s.cork_next = None
        s.flags &= ~F_CORKED
    return _raise_forked(loop)


# ---------------------------------------------------------------------------------------------
# Calling user code: the one place that decides what a handler's exception does


cdef extern from *:
    """
    /* A handler call without argument tuples or a bound-method object: h(owner[, a[, b[, c]]]),
     * or fn(self, owner, ...) for a bound method resolved once per table (_Ctx.set_handlers).
     * The function's own vectorcall entry is called directly (what PyObject_Vectorcall does,
     * minus its thread-state lookup and result check, which Python functions do not need).
     * The result is dropped here; -1 means an exception is set. */
    static inline int bs_call_handler(PyObject *fn, PyObject *self, PyObject *owner, int nargs,
                                      PyObject *a, PyObject *b, PyObject *c) {
        PyObject *args[6];
        PyObject *const *argv;
        size_t n;
        PyObject *r;
        vectorcallfunc f;
        args[0] = NULL;   /* the PY_VECTORCALL_ARGUMENTS_OFFSET slot callees may borrow */
        args[1] = self;
        args[2] = owner;
        args[3] = a;
        args[4] = b;
        args[5] = c;
        if (self != NULL) {
            argv = args + 1;
            n = (size_t)nargs + 2;
        } else {
            argv = args + 2;
            n = (size_t)nargs + 1;
        }
        /* PyVectorcall_Function, inline (in 3.11 it is an exported function call) */
        f = NULL;
        if (PyType_HasFeature(Py_TYPE(fn), Py_TPFLAGS_HAVE_VECTORCALL))
            memcpy(&f, (char *)fn + Py_TYPE(fn)->tp_vectorcall_offset, sizeof(f));
        if (f != NULL)
            r = f(fn, argv, n | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        else
            r = PyObject_Vectorcall(fn, argv, n | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    /* Raises the exception already set (to re-enter Cython's try/except with it). */
    static inline int bs_pending_error(void) { return -1; }
    """
    int bs_call_handler(PyObject *fn, PyObject *self, PyObject *owner, int nargs, PyObject *a,
                        PyObject *b, PyObject *c)
    int bs_pending_error() except -1
    bint PyMethod_Check(object o)
    PyObject *PyMethod_GET_FUNCTION(object o)
    PyObject *PyMethod_GET_SELF(object o)


cdef int call_handler(Loop loop, object h, object owner, object on_error, int nargs,
                      object a=None, object b=None, object c=None) except -1:
    """Call h(owner[, a[, b[, c]]]) as a handler: writes inside it are corked and flushed when the
    outermost handler returns (also when it raises anything, KeyboardInterrupt included, so a
    reply it wrote is never stranded). An Exception goes to on_error(owner, exc) when given (an
    exception there, or without one, to sys.unraisablehook); a BaseException propagates after
    the flush. Returns 1 when h raised an Exception, else 0."""
    if PyMethod_Check(h):
        return _call_handler(loop, PyMethod_GET_FUNCTION(h), PyMethod_GET_SELF(h), h, owner,
                             on_error, nargs, a, b, c)
    return _call_handler(loop, <PyObject *>h, NULL, h, owner, on_error, nargs, a, b, c)


cdef inline int _call_handler(Loop loop, PyObject *fn, PyObject *bound, object h, object owner,
                              object on_error, int nargs, object a, object b,
                              object c) except -1:
    # call_handler's body, inline so that the `data` path (_deliver) gets it specialised to one
    # argument. fn/bound: h, or its function and self when h is a bound method (the caller keeps
    # h, and so both, alive). The normal return runs no try/except machinery: only a handler
    # that raised goes through _handler_raised.
    loop.depth += 1
    if bs_call_handler(fn, bound, <PyObject *>owner, nargs, <PyObject *>a, <PyObject *>b,
                       <PyObject *>c) < 0:
        return _handler_raised(loop, h, owner, on_error)
    _leave_callback(loop)
    return 0


cdef int _handler_raised(Loop loop, object h, object owner, object on_error) except -1:
    """The handler h raised (the exception is set): route it as documented in call_handler,
    end the handler's scope, return 1 (or propagate a BaseException)."""
    try:
        bs_pending_error()
    except Exception as e:
        if _exc_observer is not None:
            _observe(e, h)
        if loop.pid != _pid:
            pass          # a forked child: the finally clause leaves the parent's loop
        elif on_error is not None and on_error is not h:
            call_handler(loop, on_error, owner, None, 1, e)
        else:
            _unraisable(e, h)
    finally:
        _leave_callback(loop)
    return 1


cdef int call_callback(Loop loop, object fn, tuple args) except -1:
    """A timer or call_soon callback: fn(*args), corked like a handler; an Exception goes to
    sys.unraisablehook (there is no socket to pass to `error`)."""
    loop.depth += 1
    try:
        fn(*args)
    except Exception as e:
        if loop.pid == _pid:
            if _exc_observer is not None:
                _observe(e, fn)
            _unraisable(e, fn)
    finally:
        _leave_callback(loop)
    return 0


cdef inline int _leave_callback(Loop loop) except -1:
    """The end of a handler's or callback's scope (also when it raised): the outermost one
    flushes what was corked."""
    loop.depth -= 1
    if loop.pid != _pid:
        _forked_in_callback(loop)
    elif loop.depth == 0 and loop.cork_head is not None:
        Loop._uncork(loop)
    return 0


# ---------------------------------------------------------------------------------------------
# Handler table and the codes shared with the Python API (one source: _api.py reads these)

HANDLER_NAMES = ("open", "data", "drain", "close", "error", "end", "timeout", "connect_error",
                 "handshake")
BINARY_TYPES = {"bytes": BT_BYTES, "bytearray": BT_BYTEARRAY, "memoryview": BT_MEMORYVIEW}
FAMILY_INET = BS_AF_INET
FAMILY_INET6 = BS_AF_INET6
FAMILY_UNIX = BS_AF_UNIX


cdef class _Ctx:
    """The handler table and settings shared by every socket of one listener (or one client)."""

    cdef set_handlers(self, tuple h):
        (self.on_open, self.on_data, self.on_drain, self.on_close, self.on_error, self.on_end,
         self.on_timeout, self.on_connect_error, self.on_handshake) = h
        if self.on_data is not None and PyMethod_Check(self.on_data):
            self.data_fn = <object>PyMethod_GET_FUNCTION(self.on_data)
            self.data_self = <object>PyMethod_GET_SELF(self.on_data)
        else:
            self.data_fn = self.on_data
            self.data_self = None

    cdef _Ctx copy(self):
        return _make_ctx(self.handlers(), self.binary_type, self.allow_half_open, self.hwm,
                         self.idle_ms, self.tls, self.tls_server_side, self.server_hostname,
                         self.pause_on_connect, self.lwm, self.idle_read, self.framing)

    cdef tuple handlers(self):
        return (self.on_open, self.on_data, self.on_drain, self.on_close, self.on_error,
                self.on_end, self.on_timeout, self.on_connect_error, self.on_handshake)


def _make_ctx(tuple handlers, int binary_type, bint allow_half_open, Py_ssize_t hwm,
              uint32_t idle_ms, tls=None, tls_server_side=False, server_hostname=None,
              bint pause_on_connect=False, Py_ssize_t lwm=0, bint idle_read=False,
              framing=None):
    cdef _Ctx c = _Ctx.__new__(_Ctx)
    c.idle_read = idle_read
    c.framing = framing
    c.lwm = lwm
    c.set_handlers(handlers)
    c.binary_type = binary_type
    c.allow_half_open = allow_half_open
    c.hwm = hwm
    c.idle_ms = idle_ms
    c.tls = tls
    c.tls_server_side = tls_server_side
    c.server_hostname = server_hostname
    c.pause_on_connect = pause_on_connect
    return c


# ---------------------------------------------------------------------------------------------
# Poller registrants: the loop dispatches Socket and Listener directly by type; anything else
# registered with the poller (the waker, UDP sockets) through the virtual _on_event.


cdef class _Handle:

    cdef int _on_event(self, uint32_t ev) except -1:
        return 0


cdef class _Waker(_Handle):

    cdef int _on_event(self, uint32_t ev) except -1:
        bs_waker_drain(&self.w)
        return 0


cdef inline int errno_value() noexcept nogil:
    return errno


include "_rooms/_validate.pxi"
include "_rooms/_timer.pxi"
include "_rooms/_sockopt.pxi"
include "_rooms/_loopcore.pxi"
include "_rooms/_loops.pxi"
include "_rooms/_factories.pxi"
include "_rooms/_recvbuf.pxi"
include "_rooms/_listener.pxi"
include "_rooms/_sock_base.pxi"
include "_rooms/_sock_write.pxi"
include "_rooms/_sock_read.pxi"
include "_rooms/_connect.pxi"
include "_rooms/_sock_info.pxi"
include "_rooms/_sock_ctl.pxi"
include "_rooms/_sock_api.pxi"
include "_rooms/_write_fast.pxi"
include "_rooms/_udp_peers.pxi"
include "_rooms/_udp.pxi"
include "_rooms/_group.pxi"
include "_rooms/_relay.pxi"
include "_rooms/_framing.pxi"
include "_rooms/_frame_read.pxi"
include "_rooms/_frame_write.pxi"
