# cython: language_level=3
"""The bunsock event loop: one poller, one receive buffer, one timer wheel per loop.

Hot path: poller wait -> recv into the loop buffer -> one call of the shared `data` handler ->
sock.write() (corked: the bytes object is held, not copied) -> one send when the handler returns.
Every handler call goes through `_enter`/`_leave` so writes made inside it are coalesced and a
handler's exception is routed to `error` instead of escaping into the loop.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.exc cimport PyErr_CheckSignals
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.errno cimport (EAGAIN, ECONNABORTED, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM, ENOTCONN,
                         errno)
from libc.math cimport ceil, isfinite
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport strerror
from posix.unistd cimport close as c_close

from ._core cimport *

import collections
import errno as _errno
import os
import threading

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
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    int PyBUF_READ
    void PyErr_WriteUnraisable(object obj)
    void PyErr_Restore(PyObject *type, PyObject *value, PyObject *tb)

cdef enum:
    MAX_EVENTS = 1024
    ACCEPT_BATCH = 128       # then let other ready fds have a turn; the listener stays ready

# Live-object counters for leak tests (debug_counts()).
cdef Py_ssize_t _n_sockets = 0
cdef Py_ssize_t _n_listeners = 0
cdef Py_ssize_t _n_timers = 0
cdef Py_ssize_t _n_loops = 0


def debug_counts():
    """Live bunsock objects (sockets, listeners, timers, loops), for leak tests."""
    return {"sockets": _n_sockets, "listeners": _n_listeners, "timers": _n_timers, "loops": _n_loops}


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


# ---------------------------------------------------------------------------------------------
# Handler table


cdef class _Ctx:
    """The handler table and settings shared by every socket of one listener (or one client)."""

    cdef set_handlers(self, tuple h):
        (self.on_open, self.on_data, self.on_drain, self.on_close, self.on_error, self.on_end,
         self.on_timeout, self.on_connect_error, self.on_handshake) = h

    cdef _Ctx copy(self):
        return _make_ctx(self.handlers(), self.binary_type, self.allow_half_open, self.hwm,
                         self.idle_ms, self.tls, self.tls_server_side, self.server_hostname)

    cdef tuple handlers(self):
        return (self.on_open, self.on_data, self.on_drain, self.on_close, self.on_error,
                self.on_end, self.on_timeout, self.on_connect_error, self.on_handshake)


def _make_ctx(tuple handlers, int binary_type, bint allow_half_open, Py_ssize_t hwm,
              uint32_t idle_ms, tls=None, tls_server_side=False, server_hostname=None):
    cdef _Ctx c = _Ctx.__new__(_Ctx)
    c.set_handlers(handlers)
    c.binary_type = binary_type
    c.allow_half_open = allow_half_open
    c.hwm = hwm
    c.idle_ms = idle_ms
    c.tls = tls
    c.tls_server_side = tls_server_side
    c.server_hostname = server_hostname
    return c


# ---------------------------------------------------------------------------------------------
# Poller registrants


cdef class _Handle:
    pass


cdef class _Waker(_Handle):

    cdef int _on_event(self, uint32_t ev) except -1:
        bs_waker_drain(&self.w)
        return 0


# ---------------------------------------------------------------------------------------------
# Timers


cdef class Timer:
    """A loop timer from call_later / call_every / call_soon. cancel(), ref(), unref()."""

    def __cinit__(self):
        global _n_timers
        _n_timers += 1
        bs_timer_init(&self.t, <void *>self)
        self.refed = True

    def __dealloc__(self):
        global _n_timers
        _n_timers -= 1

    cdef _deactivate(self):
        if self.active:
            self.active = False
            if self.refed:
                self.loop.refs -= 1
            if bs_timer_armed(&self.t):
                bs_wheel_cancel(&self.loop.wheel, &self.t)
                Py_DECREF(self)

    def cancel(self):
        """Stop the timer; a pending call does not happen. Idempotent."""
        self._deactivate()

    def ref(self):
        """Make the timer keep run() going (the default)."""
        if not self.refed:
            self.refed = True
            if self.active:
                self.loop.refs += 1
        return self

    def unref(self):
        """Let run() return even while this timer is pending."""
        if self.refed:
            self.refed = False
            if self.active:
                self.loop.refs -= 1
        return self

    @property
    def active(self):
        return self.active

    @property
    def when(self):
        """Loop-clock milliseconds of the next call, or None."""
        return self.t.deadline if bs_timer_armed(&self.t) else None

    cdef int _fire(self) except -1:
        cdef Loop loop = self.loop
        cdef uint64_t now = loop.now, due
        if self.interval:
            # Fixed rate: due times are start + n*interval. After a stall, skip the missed ones
            # instead of firing a burst of catch-up calls.
            due = self.t.deadline + self.interval
            if due <= now:
                due = now + self.interval - (now - self.start) % self.interval
            Py_INCREF(self)
            bs_wheel_arm(&loop.wheel, &self.t, due)
        else:
            self._deactivate()
        loop._enter()
        try:
            self.fn(*self.args)
        except Exception as e:
            _unraisable(e, self.fn)
        finally:
            loop._leave()
        return 0


# ---------------------------------------------------------------------------------------------
# Loop


cdef object _tls_loops = threading.local()


def get_loop():
    """The calling thread's default loop (created on first use)."""
    try:
        return _tls_loops.loop
    except AttributeError:
        loop = Loop()
        _tls_loops.loop = loop
        return loop


cdef class Loop:
    """An event loop: bunsock.run() drives the thread's default one; Loop() makes a private one."""
    # counters (stats())

    def __cinit__(self, Py_ssize_t read_buffer_size=256 * 1024):
        global _n_loops
        cdef int r
        self.poller.fd = -1
        if read_buffer_size < 4096:
            raise ValueError("read_buffer_size must be at least 4096")
        if bs_poller_open(&self.poller, MAX_EVENTS) < 0:
            _raise_errno(errno_value())
        self.events = <bs_event *>malloc(MAX_EVENTS * sizeof(bs_event))
        # Page-aligned: the kernel's copy into it (rep movsb) is several times slower into a
        # destination that is not cache-line aligned, and malloc's large blocks are at page+16.
        if posix_memalign(<void **>&self.rbuf, 4096, read_buffer_size) != 0:
            self.rbuf = NULL
        if self.events == NULL or self.rbuf == NULL:
            raise MemoryError()
        # Every read becomes a bytes object of up to read_buffer_size, several of them alive at
        # once under load. glibc serves blocks above its mmap threshold (128 KiB in a fresh
        # process) with mmap/munmap and gives the heap top back above twice that, so a busy
        # server would pay brk/mmap and page faults on every large read (measured: 3 brk calls
        # per 1 MiB echo). Freeing one mmapped 4 MiB block raises both thresholds through
        # glibc's own dynamic-threshold rule: up to 8 MiB of free heap stays mapped.
        _prime_malloc(max(4 << 20, read_buffer_size + 4096))
        self.rbuf_size = read_buffer_size
        # One busy socket may take this much per iteration before the others get their turn.
        self.read_budget = 4 * read_buffer_size
        self.now = bs_monotonic_ms()
        bs_wheel_init(&self.wheel, self.now)
        self.dead = []
        self.ready = collections.deque()
        self.waker = _Waker.__new__(_Waker)
        self.waker.loop = self
        self.waker.w.rfd = self.waker.w.wfd = -1
        r = bs_waker_open(&self.waker.w)
        if r < 0:
            _raise_errno(-r)
        self.waker.fd = self.waker.w.rfd
        if bs_poller_add(&self.poller, self.waker.fd, <void *>self.waker, BS_READABLE) < 0:
            _raise_errno(errno_value())
        self.waker.mask = BS_READABLE
        _n_loops += 1

    def __dealloc__(self):
        global _n_loops
        _n_loops -= 1
        self._close_c()

    cdef _close_c(self):
        if self.waker is not None:
            bs_waker_close(&self.waker.w)
            self.waker.fd = -1
        bs_poller_close(&self.poller)
        free(self.events)
        self.events = NULL
        free(self.rbuf)
        self.rbuf = NULL

    def close(self):
        """Release the poller and buffers. Close sockets and stop listeners first."""
        if self.running:
            raise RuntimeError("cannot close a running loop")
        cdef bs_timer *t
        if self.closed:
            return
        self.closed = True
        if self.executor is not None:
            self.executor.shutdown(wait=False)
            self.executor = None
        # An armed Timer holds the wheel's reference to itself (and so to this loop): timers still
        # pending (e.g. unref'd ones) would keep both alive forever. Empty the wheel.
        while True:
            t = bs_wheel_pop_expired(&self.wheel, self.now + (<uint64_t>1 << 50))
            if t == NULL:
                break
            owner = <object>t.owner
            if type(owner) is Timer:
                (<Timer>owner).active = False
                if (<Timer>owner).refed:
                    self.refs -= 1
                Py_DECREF(owner)
        self.ready.clear()
        self._close_c()

    def stop(self):
        """Make run() return after the current iteration."""
        self.stopping = True
        if self.thread_ident is not None and self.thread_ident != threading.get_ident():
            bs_waker_signal(&self.waker.w)

    def time(self):
        """The loop's monotonic clock in seconds."""
        return bs_monotonic_ms() / 1000.0

    def stats(self):
        """Syscall counters: sends (send/sendmsg calls), recvs, polls, accepts."""
        return {"sends": self.n_send, "recvs": self.n_recv, "polls": self.n_poll,
                "accepts": self.n_accept}

    @property
    def refs(self):
        """How many referenced listeners, sockets and timers keep run() going."""
        return self.refs

    cdef int _check_open(self) except -1:
        if self.closed:
            raise RuntimeError("the loop is closed")
        return 0

    # -- handler scope: writes are corked until the outermost handler returns --

    cdef void _enter(self) noexcept:
        self.depth += 1

    cdef int _leave(self) except -1:
        self.depth -= 1
        if self.depth == 0 and self.cork_head is not None:
            self._uncork()
        return 0

    cdef int _retire(self, object handle) except -1:
        """Drop the poller's reference to a closed handle. While a batch of events is being
        dispatched the handle may still have an entry later in it, so it is kept alive until
        the batch ends (its fd is -1 by then, and the entry is skipped)."""
        if self.running:
            self.dead.append(handle)
        Py_DECREF(handle)
        return 0

    cdef int _uncork(self) except -1:
        cdef Socket s
        while self.cork_head is not None:
            s = self.cork_head
            self.cork_head = s.cork_next
            s.cork_next = None
            s.flags &= ~F_CORKED
            if s.state != ST_CLOSED and s.cork_depth == 0:
                s._flush()
                # buffered_amount was read while these bytes were corked (a proxy deciding to
                # pause its other side) and the kernel took them all: that reader is owed its
                # `drain` now, as no writable event will come.
                if (s.flags & F_NEED_DRAIN) and s.state == ST_OPEN and \
                        not (s.mask & BS_WRITABLE) and s._pending() == 0:
                    s._drained()
        return 0

    # -- timers --

    cdef Timer _timer(self, double delay, uint64_t interval, fn, tuple args):
        cdef Timer t
        self._check_open()
        if not callable(fn):
            raise TypeError("callback must be callable, not %s" % type(fn).__name__)
        if not isfinite(delay) or delay < 0 or delay > 1e9:
            raise ValueError("delay must be a finite number >= 0 (and below 1e9 s), not %r" % delay)
        t = Timer.__new__(Timer)
        t.loop = self
        t.fn = fn
        t.args = args
        t.interval = interval
        t.active = True
        self.refs += 1
        self.now = bs_monotonic_ms()
        t.start = self.now
        Py_INCREF(t)
        bs_wheel_arm(&self.wheel, &t.t, self.now + <uint64_t>ceil(delay * 1000.0))
        if self.embedded:
            bs_waker_signal(&self.waker.w)     # the host loop must re-read next_timeout()
        return t

    def call_later(self, delay, fn, *args):
        """Call fn(*args) once after `delay` seconds. Returns a Timer."""
        return self._timer(float(delay), 0, fn, args)

    def call_every(self, interval, fn, *args):
        """Call fn(*args) every `interval` seconds at a fixed rate (no drift, no catch-up bursts)."""
        cdef double iv = float(interval)
        if not isfinite(iv) or iv <= 0:
            raise ValueError("interval must be a finite number > 0, not %r" % interval)
        cdef uint64_t ms = <uint64_t>ceil(iv * 1000.0)
        return self._timer(iv, ms, fn, args)

    def call_soon(self, fn, *args):
        """Call fn(*args) on the next loop iteration. Returns a Timer (cancel() works)."""
        cdef Timer t
        self._check_open()
        if not callable(fn):
            raise TypeError("callback must be callable, not %s" % type(fn).__name__)
        t = Timer.__new__(Timer)
        t.loop = self
        t.fn = fn
        t.args = args
        t.active = True
        self.refs += 1
        self.ready.append(t)
        self.nready += 1
        if self.embedded:
            bs_waker_signal(&self.waker.w)
        return t

    def call_soon_threadsafe(self, fn, *args):
        """call_soon from another thread: wakes the loop if it is waiting."""
        t = self.call_soon(fn, *args)
        bs_waker_signal(&self.waker.w)
        return t

    cdef int _run_ready(self) except -1:
        cdef Timer t
        cdef Py_ssize_t n = len(self.ready)
        self.nready = 0
        # Only what was queued before this pass: a callback that re-queues itself must not
        # starve the poller.
        while n > 0 and self.ready:
            n -= 1
            t = self.ready.popleft()
            if t.active:
                t._deactivate()
                self._enter()
                try:
                    t.fn(*t.args)
                except Exception as e:
                    _unraisable(e, t.fn)
                finally:
                    self._leave()
        return 0

    cdef int _run_timers(self) except -1:
        cdef bs_timer *t
        cdef object owner
        cdef int budget = 100000
        while budget > 0:
            budget -= 1
            t = bs_wheel_pop_expired(&self.wheel, self.now)
            if t == NULL:
                break
            owner = <object>t.owner
            if type(owner) is Timer:
                # The wheel's reference is handed to `owner` for the duration of the call.
                Py_DECREF(owner)
                (<Timer>owner)._fire()
            else:
                (<Socket>owner)._on_timer()
        return 0

    # -- running --

    cdef int64_t _timeout(self):
        """How long the poller may sleep: -2 when nothing keeps the loop going."""
        cdef int64_t timeout
        if self.nready:
            return 0
        if self.refs <= 0:
            return -2
        if self.wheel.count:
            timeout = bs_wheel_timeout(&self.wheel, self.now)
            return 0x7fffffff if timeout > 0x7fffffff else timeout
        return -1

    cdef int _iterate(self, int timeout) except -1:
        """One poll, its events, then due timers and call_soon callbacks."""
        cdef int n, i, err
        cdef bs_event *ev
        cdef _Handle h
        # A signal that arrived while we were running Python code must not wait for the next
        # event: check before blocking.
        PyErr_CheckSignals()
        with nogil:
            n = bs_poller_wait(&self.poller, self.events, timeout)
            err = errno_value()
        self.n_poll += 1
        # The clock only matters to armed timers; code that arms one while none is armed reads
        # the clock itself.
        if self.wheel.count:
            self.now = bs_monotonic_ms()
        if n < 0:
            if err == EINTR:
                PyErr_CheckSignals()
                return 0
            _raise_errno(err)
        for i in range(n):
            ev = &self.events[i]
            h = <_Handle>ev.ptr
            # A handle closed earlier in this batch is still alive (see `dead`) but has fd -1:
            # its stale events are dropped here.
            if h.fd < 0:
                continue
            if type(h) is Socket:
                (<Socket>h)._on_event(ev.mask)
            elif type(h) is Listener:
                (<Listener>h)._on_event(ev.mask)
            else:
                (<_Waker>h)._on_event(ev.mask)
        if self.dead:
            self.dead.clear()
        if self.wheel.count:
            self._run_timers()
        if self.nready:
            self._run_ready()
        return 0

    cdef int _begin(self) except -1:
        self._check_open()
        if self.running:
            raise RuntimeError("this loop is already running")
        self.running = True
        self.thread_ident = threading.get_ident()
        self.now = bs_monotonic_ms()
        return 0

    cdef void _end(self) noexcept:
        self.running = False
        self.thread_ident = None
        self.dead.clear()

    def run(self):
        """Run until no referenced listener, socket or timer is left, or stop() is called."""
        cdef int64_t timeout
        self._begin()
        self.stopping = False
        try:
            while not self.stopping:
                timeout = self._timeout()
                if timeout == -2:
                    break
                self._iterate(<int>timeout)
        finally:
            self._end()

    def run_once(self, timeout=0):
        """One iteration: wait up to `timeout` seconds (None: until something happens) for
        events, dispatch them, then run due timers and callbacks. For embedding the loop in
        another one (bunsock.aio registers fileno() with asyncio and calls this)."""
        cdef int ms = -1 if timeout is None else <int>ceil(float(timeout) * 1000.0)
        self._begin()
        try:
            self._iterate(ms)
        finally:
            self._end()

    def next_timeout(self):
        """Seconds until the loop needs run_once() without an event: 0.0 when callbacks are
        queued, None when only events can wake it."""
        cdef int64_t t
        if self.nready:
            return 0.0
        if not self.wheel.count:
            return None
        t = bs_wheel_timeout(&self.wheel, bs_monotonic_ms())
        return t / 1000.0

    def fileno(self):
        """The poller's descriptor: readable whenever run_once() has events to dispatch."""
        return self.poller.fd

    def _embed(self, bint on=True):
        """Embedded in another loop: call_soon and new timers wake the poller fd, so the host
        notices work queued from its own callbacks."""
        self.embedded = on

    # -- resolution off the loop thread --

    cdef _resolve(self, host, int port, callback):
        if self.executor is None:
            from concurrent.futures import ThreadPoolExecutor
            self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bunsock-resolve")
        self.executor.submit(_resolve_job, self, host, port, callback)

    # -- factories used by the Python API (bunsock/_api.py) --

    def _listen_tcp(self, _Ctx ctx, data, int family, str ip, int port, int backlog,
                    bint reuse_port, bint ipv6_only, hostname):
        cdef int fd
        self._check_open()
        fd = bs_listen_tcp(family, ip.encode(), port, backlog, reuse_port, ipv6_only)
        if fd < 0:
            _raise_errno(-fd)
        lst = Listener._new(self, ctx, data, fd)
        lst._hostname = hostname
        lst._port = bs_local_port(fd)
        return lst

    def _listen_unix(self, _Ctx ctx, data, bytes path, display, int backlog):
        cdef int fd
        self._check_open()
        fd = bs_listen_unix(path, len(path), backlog)
        if fd < 0:
            _raise_errno(-fd)
        lst = Listener._new(self, ctx, data, fd)
        lst._unix = display
        lst._unix_path = path
        return lst

    def _connect(self, _Ctx ctx, data, addrs, host, int port, local_ip, int local_port,
                 bytes unix_path, double timeout):
        """addrs: list of (family, ip) to try in order, or None to resolve `host` off-thread."""
        cdef Socket s
        self._check_open()
        s = Socket._new(self, ctx, data, -1, None)
        s.state = ST_CONNECTING
        s.flags |= F_CLIENT | (F_UNIX if unix_path is not None else 0)
        ext = s._get_ext()
        ext.port = port
        ext.host = host
        ext.local_ip = local_ip
        ext.local_port = local_port
        ext.unix_path = unix_path
        if timeout > 0:
            self.now = bs_monotonic_ms()
            bs_wheel_arm(&self.wheel, &s.t, self.now + <uint64_t>ceil(timeout * 1000.0))
        if unix_path is not None or addrs is not None:
            ext.addrs = addrs
            # connect_error must fire from the loop, never from inside connect().
            self.call_soon(s._try_connect)
        else:
            self._resolve(host, port, s._resolved)
        return s


def _resolve_job(Loop loop, host, int port, callback):
    import socket as _socket
    try:
        infos = _socket.getaddrinfo(host, port, type=_socket.SOCK_STREAM)
        addrs = [(BS_AF_INET6 if fam == _socket.AF_INET6 else BS_AF_INET, sa[0].split("%")[0])
                 for fam, _t, _p, _c, sa in infos if fam in (_socket.AF_INET, _socket.AF_INET6)]
        result = addrs
    except Exception as e:
        result = e
    try:
        loop.call_soon_threadsafe(callback, result)
    except RuntimeError:
        pass  # the loop was closed meanwhile


cdef inline int errno_value() noexcept nogil:
    return errno


# ---------------------------------------------------------------------------------------------
# Listener


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
        l.loop = loop
        l.ctx = ctx
        l.data = data
        l.fd = fd
        if bs_poller_add(&loop.poller, fd, <void *>l, BS_READABLE) < 0:
            err = errno_value()
            c_close(fd)
            l.fd = -1
            _raise_errno(err)
        l.mask = BS_READABLE
        Py_INCREF(l)     # the poller's reference
        l.refed = True
        loop.refs += 1
        return l

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
            Socket._accepted(self, fd)
            if self.stopped:
                return 0
        return 0

    cdef _pause_accept(self):
        if self.backoff is not None or self.stopped:
            return
        if bs_poller_mod(&self.loop.poller, self.fd, <void *>self, self.mask, 0) == 0:
            self.mask = 0
        self.backoff = self.loop.call_later(0.1, self._resume_accept)
        self.backoff.unref()

    def _resume_accept(self):
        self.backoff = None
        if not self.stopped and bs_poller_mod(&self.loop.poller, self.fd, <void *>self, self.mask,
                                              BS_READABLE) == 0:
            self.mask = BS_READABLE

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

    def stop(self, bint close_active=False):
        """Stop accepting. With close_active=True, close every accepted socket now (each `close`
        handler runs before stop() returns). Idempotent."""
        cdef Socket s
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
                try:
                    os.unlink(self._unix_path)
                except OSError:
                    pass
            self.loop._retire(self)
        if close_active:
            victims = []
            s = self.head
            while s is not None:
                victims.append(s)
                s = s.lnext
            for s in victims:
                s.close()

    def reload(self, socket):
        """Swap the handler table in place: this listener and all its live sockets switch now."""
        from ._api import resolve_handlers
        self.ctx.set_handlers(resolve_handlers(socket))

    def ref(self):
        if not self.refed:
            self.refed = True
            if not self.stopped:
                self.loop.refs += 1
        return self

    def unref(self):
        if self.refed:
            self.refed = False
            if not self.stopped:
                self.loop.refs -= 1
        return self

    def fileno(self):
        return self.fd

    @property
    def port(self):
        return None if self._unix is not None else self._port

    @property
    def hostname(self):
        return self._hostname

    @property
    def unix(self):
        return self._unix

    @property
    def connections(self):
        return self._connections

    @property
    def loop(self):
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


# ---------------------------------------------------------------------------------------------
# Socket


cdef class _SockExt:
    """Rarely used per-socket state, kept off the Socket so an idle connection stays small."""


cdef class _CorkCtx:

    def __enter__(self):
        self.s.cork_depth += 1
        return self.s

    def __exit__(self, *exc):
        cdef Socket s = self.s
        s.cork_depth -= 1
        if s.cork_depth == 0 and s.loop.depth == 0 and s.state != ST_CLOSED:
            s._flush()
            if (s.flags & F_NEED_DRAIN) and s.state == ST_OPEN and not (s.mask & BS_WRITABLE):
                s._set_mask(s.mask | BS_WRITABLE)     # the owed `drain` comes from the loop
        return False


cdef class Socket(_Handle):
    """One TCP or unix connection. Handlers live in the shared table, context in `sock.data`."""

    def __cinit__(self):
        global _n_sockets
        _n_sockets += 1
        self.fd = -1
        bs_sink_init(&self.sink)
        bs_timer_init(&self.t, <void *>self)

    def __dealloc__(self):
        global _n_sockets
        _n_sockets -= 1
        bs_sink_free(&self.sink)

    @staticmethod
    cdef Socket _new(Loop loop, _Ctx ctx, data, int fd, Listener listener):
        cdef Socket s = Socket.__new__(Socket)
        s.loop = loop
        s.ctx = ctx
        s.data = data
        s.fd = fd
        s._listener = listener
        s.flags = F_REFED
        loop.refs += 1
        s.last_active = <uint32_t>loop.now
        Py_INCREF(s)     # the loop's reference, dropped after the batch in which it closes
        return s

    @staticmethod
    cdef int _accepted(Listener l, int fd) except -1:
        cdef Loop loop = l.loop
        cdef Socket s
        cdef _Ctx ctx = l.ctx
        s = Socket._new(loop, ctx, l.data, fd, l)
        if bs_poller_add(&loop.poller, fd, <void *>s, BS_READABLE) < 0:
            # Registering fails only for lack of kernel memory; the peer sees the close.
            s._teardown()
            c_close(fd)
            s.fd = -1
            return 0
        s.state = ST_OPEN
        s.flags |= F_REGISTERED | F_OPENED
        s.mask = BS_READABLE
        if l._unix is not None:
            s.flags |= F_UNIX
        else:
            bs_set_nodelay(fd, 1)      # as Bun: small writes go out now
        l._link(s)
        if ctx.idle_ms:
            s.timeout_ms = ctx.idle_ms
            if loop.wheel.count == 0:
                loop.now = bs_monotonic_ms()    # not kept current while no timer is armed
            s.last_active = <uint32_t>loop.now
            bs_wheel_arm(&loop.wheel, &s.t, loop.now + ctx.idle_ms)
        if ctx.tls is not None:
            return s._start_tls_from_ctx()
        s._fire_open()
        return 0

    cdef int _fire_open(self) except -1:
        cdef Loop loop = self.loop
        cdef object h = self.ctx.on_open
        cdef bint failed = False
        if h is None:
            return 0
        loop._enter()
        try:
            h(self)
        except Exception as e:
            failed = True
            self._report(e)
        finally:
            loop._leave()
        if failed:
            self._close(None)
        return 0

    cdef _SockExt _get_ext(self):
        if self.ext is None:
            self.ext = _SockExt.__new__(_SockExt)
        return self.ext

    # -- handler plumbing --

    cdef int _report(self, exc) except -1:
        """Route a handler's exception to `error`, or to sys.unraisablehook."""
        cdef object h = self.ctx.on_error
        if h is None:
            _unraisable(exc, self)
            return 0
        self.loop._enter()
        try:
            h(self, exc)
        except Exception as e2:
            _unraisable(e2, h)
        finally:
            self.loop._leave()
        return 0

    cdef int _call(self, object h) except -1:
        cdef Loop loop = self.loop
        loop._enter()
        try:
            h(self)
        except Exception as e:
            self._report(e)
        finally:
            loop._leave()
        return 0

    # -- events --

    cdef int _on_event(self, uint32_t ev) except -1:
        cdef uint32_t handled = ev & self.mask
        if self.state == ST_CONNECTING:
            if ev & (BS_WRITABLE | BS_HANGUP):
                return self._on_connected()
            return 0
        if handled & BS_READABLE:
            self._on_readable()
            if self.fd < 0 or self.state == ST_CLOSED:
                return 0
        if handled & BS_WRITABLE:
            self._on_writable()
        elif (ev & BS_HANGUP) and not (handled & BS_READABLE):
            # A hang-up on a paused socket with nothing to write: level-triggered HUP would be
            # reported on every wait, so step out of the poller until resume() or a write.
            self._set_mask(0)
            if self.mask == 0:
                self._deregister_quiet()
        return 0

    cdef int _deregister_quiet(self) except -1:
        if self.flags & F_REGISTERED:
            bs_poller_del(&self.loop.poller, self.fd, self.mask)
            self.flags &= ~F_REGISTERED
        return 0

    cdef int _set_mask(self, uint32_t mask) except -1:
        cdef int r
        if mask == self.mask and (self.flags & F_REGISTERED):
            return 0
        if self.flags & F_REGISTERED:
            r = bs_poller_mod(&self.loop.poller, self.fd, <void *>self, self.mask, mask)
        else:
            r = bs_poller_add(&self.loop.poller, self.fd, <void *>self, mask)
            if r == 0:
                self.flags |= F_REGISTERED
        if r < 0:
            return self._fail(errno_value())
        self.mask = mask
        return 0

    cdef int _on_readable(self) except -1:
        cdef Loop loop = self.loop
        cdef ssize_t n
        cdef Py_ssize_t budget = loop.read_budget
        while True:
            n = bs_recv(self.fd, loop.rbuf, loop.rbuf_size)
            loop.n_recv += 1
            if n > 0:
                self.bytes_read += n
                self.last_active = <uint32_t>loop.now
                self.flags &= ~F_IDLE_FIRED
                if self.ext is not None and self.ext.tls is not None:
                    (<_TlsHook>self.ext.tls).feed(self, loop.rbuf, n)
                else:
                    self._deliver(n)
                if self.state == ST_CLOSED or (self.flags & (F_PAUSED | F_EOF)):
                    return 0      # (F_EOF: TLS saw close_notify and ran _on_eof)
                # A short read means the kernel queue is empty; level-triggered polling reports
                # any later bytes, so the EAGAIN read that would confirm it is skipped.
                if n < loop.rbuf_size:
                    return 0
                budget -= n
                if budget <= 0:
                    return 0
            elif n == 0:
                return self._on_eof()
            elif n == -EAGAIN or n == -EWOULDBLOCK:
                return 0
            else:
                return self._fail(<int>-n)

    cdef int _deliver(self, Py_ssize_t n) except -1:
        """Hand the first n bytes of the loop's receive buffer to `data` (plaintext read, or
        what TLS decrypted there), as the socket's binary_type; its writes are corked."""
        cdef Loop loop = self.loop
        cdef _Ctx ctx = self.ctx
        cdef object h = ctx.on_data
        cdef object buf
        cdef int bt = ctx.binary_type
        if h is None:
            return 0
        if bt == BT_BYTES:
            buf = PyBytes_FromStringAndSize(loop.rbuf, n)
        elif bt == BT_BYTEARRAY:
            buf = PyByteArray_FromStringAndSize(loop.rbuf, n)
        else:
            buf = PyMemoryView_FromMemory(loop.rbuf, n, PyBUF_READ)
        loop.depth += 1
        try:
            h(self, buf)
        except Exception as e:
            self._report(e)
        finally:
            loop.depth -= 1
            if bt == BT_MEMORYVIEW:
                _release_view(buf)
        if loop.depth == 0 and loop.cork_head is not None:
            loop._uncork()
        return 0

    cdef int _on_eof(self) except -1:
        cdef object h
        self.flags |= F_EOF
        # EOF stays readable forever under level triggering.
        self._set_mask(self.mask & ~BS_READABLE)
        if self.state == ST_CLOSED:
            return 0
        if self.ext is not None and self.ext.tls is not None:
            (<_TlsHook>self.ext.tls).eof(self)
            if self.state == ST_CLOSED:
                return 0
        h = self.ctx.on_end
        if h is not None:
            self._call(h)
            if self.state == ST_CLOSED:
                return 0
        if self.flags & F_SHUT_WR:
            return self._close(None)
        if not self.ctx.allow_half_open:
            self._end()
        return 0

    cdef int _on_writable(self) except -1:
        cdef object h
        if self._pending():
            self._flush()
            if self.state == ST_CLOSED:
                return 0
        if self._pending() == 0:
            self._set_mask(self.mask & ~BS_WRITABLE)
            if self.state == ST_CLOSED:
                return 0
            if self.flags & F_NEED_DRAIN:
                self._drained()
        return 0

    cdef int _drained(self) except -1:
        cdef object h = self.ctx.on_drain
        self.flags &= ~F_NEED_DRAIN
        if h is not None:
            self._call(h)
        if self.ext is not None and self.ext.tls is not None and self.state != ST_CLOSED:
            (<_TlsHook>self.ext.tls).drained(self)
        return 0

    cdef int _on_timer(self) except -1:
        cdef Loop loop = self.loop
        cdef uint32_t idle
        cdef object h
        if self.state == ST_CONNECTING:
            return self._connect_failed(_oserror(_errno.ETIMEDOUT))
        if self.state == ST_CLOSED or self.timeout_ms == 0:
            return 0
        idle = <uint32_t>loop.now - self.last_active
        if idle < self.timeout_ms:
            # Activity restarted the period; re-arming lazily here keeps the I/O path to one store.
            bs_wheel_arm(&loop.wheel, &self.t, loop.now + (self.timeout_ms - idle))
            return 0
        bs_wheel_arm(&loop.wheel, &self.t, loop.now + self.timeout_ms)
        if self.flags & F_IDLE_FIRED:
            return 0      # once per idle period
        self.flags |= F_IDLE_FIRED
        h = self.ctx.on_timeout
        if h is None:
            return self._close(_oserror(_errno.ETIMEDOUT))
        return self._call(h)

    # -- connecting --

    def _resolved(self, result):
        if self.state != ST_CONNECTING:
            return
        if isinstance(result, BaseException):
            self._connect_failed(result)
            return
        if not result:
            self._connect_failed(OSError(_errno.EHOSTUNREACH, "no address for %r" % self.ext.host))
            return
        self.ext.addrs = result
        self._try_connect()

    def _try_connect(self):
        """Start connecting to the next candidate address; the last failure is reported."""
        cdef int fd, in_progress = 0
        cdef _SockExt ext = self.ext
        cdef object last = ext.last_exc
        if self.state != ST_CONNECTING:
            return
        while True:
            if ext.unix_path is not None:
                if ext.addr_index > 0:
                    break
                ext.addr_index = 1
                fd = bs_connect_unix(ext.unix_path, len(ext.unix_path), &in_progress)
            else:
                if ext.addr_index >= len(ext.addrs):
                    break
                family, ip = ext.addrs[ext.addr_index]
                ext.addr_index += 1
                bip = ip.encode()
                if ext.local_ip is not None:
                    blocal = ext.local_ip.encode()
                    fd = bs_connect_tcp(family, bip, ext.port, blocal, ext.local_port, &in_progress)
                else:
                    fd = bs_connect_tcp(family, bip, ext.port, NULL, ext.local_port, &in_progress)
            if fd < 0:
                last = _oserror(-fd)
                continue
            self.fd = fd
            self.mask = 0
            if bs_poller_add(&self.loop.poller, fd, <void *>self, BS_WRITABLE) < 0:
                last = _oserror(errno_value())
                c_close(fd)
                self.fd = -1
                continue
            self.flags |= F_REGISTERED
            self.mask = BS_WRITABLE
            return
        self._connect_failed(last if last is not None else OSError(_errno.ECONNREFUSED,
                                                                   "connection refused"))

    cdef int _on_connected(self) except -1:
        cdef int err = -bs_socket_error(self.fd)
        cdef Loop loop = self.loop
        if err != 0:
            self._deregister_quiet()
            c_close(self.fd)
            self.fd = -1
            self.mask = 0
            self.ext.last_exc = _oserror(err)
            self._try_connect()
            return 0
        self.state = ST_OPEN
        self.flags |= F_OPENED
        if not (self.flags & F_UNIX):
            bs_set_nodelay(self.fd, 1)
        # pause() while connecting holds: no read interest until resume().
        self._set_mask((0 if self.flags & F_PAUSED else BS_READABLE) |
                       (BS_WRITABLE if self._pending() else 0))
        bs_wheel_cancel(&loop.wheel, &self.t)
        if self.ctx.idle_ms and not (self.flags & F_USER_TIMEOUT):
            self.timeout_ms = self.ctx.idle_ms
        if self.timeout_ms:
            if loop.wheel.count == 0:
                loop.now = bs_monotonic_ms()    # not kept current while no timer is armed
            self.last_active = <uint32_t>loop.now
            bs_wheel_arm(&loop.wheel, &self.t, loop.now + self.timeout_ms)
        if self.ctx.tls is not None:
            return self._start_tls_from_ctx()
        self._fire_open()
        # end() while connecting (even with nothing written) owes the peer a FIN now.
        if self.state != ST_CLOSED and (self._pending() or (self.flags & F_ENDING)):
            self._flush()
        return 0

    cdef int _connect_failed(self, exc) except -1:
        cdef object h
        cdef Loop loop = self.loop
        if self.state != ST_CONNECTING:
            return 0
        self._teardown()
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1
        if self.ext is not None:
            self.ext.addrs = None
        h = self.ctx.on_connect_error
        if h is None:
            _unraisable(exc, self)
            return 0
        loop._enter()
        try:
            h(self, exc)
        except Exception as e:
            self._report(e)
        finally:
            loop._leave()
        return 0

    # -- closing --

    cdef int _teardown(self) except -1:
        """Everything close() does except calling the handler and closing the fd."""
        cdef Loop loop = self.loop
        self.state = ST_CLOSED
        if self.flags & F_REGISTERED:
            bs_poller_del(&loop.poller, self.fd, self.mask)
            self.flags &= ~F_REGISTERED
        self.mask = 0
        bs_wheel_cancel(&loop.wheel, &self.t)
        bs_sink_free(&self.sink)
        self.cork_obj = None
        if self.flags & F_REFED:
            loop.refs -= 1
        if self._listener is not None and (self.lprev is not None or self._listener.head is self):
            self._listener._unlink(self)
        loop._retire(self)
        return 0

    cdef int _close(self, object err) except -1:
        cdef int fd = self.fd
        cdef object h
        if self.state == ST_CLOSED:
            return 0
        if self.state == ST_CONNECTING:
            # Closing before connect finished: neither `open` nor `close` fires.
            self._teardown()
            if fd >= 0:
                c_close(fd)
            self.fd = -1
            return 0
        self._teardown()
        if self.ext is not None and self.ext.tls is not None:
            (<_TlsHook>self.ext.tls).closed(self)
        try:
            h = self.ctx.on_close
            if h is not None and (self.flags & F_OPENED):
                self.loop._enter()
                try:
                    h(self, err)
                except Exception as e:
                    self._report(e)
                finally:
                    self.loop._leave()
        finally:
            # The fd outlives the handler so remote_address etc. still answer inside `close`.
            if fd >= 0:
                c_close(fd)
            self.fd = -1
        return 0

    cdef int _fail(self, int err) except -1:
        return self._close(_oserror(err))

    # -- writing --

    cdef Py_ssize_t _pending(self):
        if self.cork_obj is not None:
            return self.sink.len + PyBytes_GET_SIZE(self.cork_obj)
        return self.sink.len

    cdef int _spill_cork(self) except -1:
        cdef object o = self.cork_obj
        if o is not None:
            self.cork_obj = None
            if bs_sink_append(&self.sink, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o)) < 0:
                raise MemoryError()
        return 0

    cdef Py_ssize_t _buffer(self, const char *p, Py_ssize_t n) except -2:
        """Queue bytes behind the backlog, up to high_water_mark; returns how many were taken."""
        cdef Py_ssize_t room = n, hwm = self.ctx.hwm, pending
        if hwm >= 0 and (self.ext is None or self.ext.tls is None):  # TLS: capped on plaintext
            pending = self._pending()
            room = hwm - pending if hwm > pending else 0
            if room > n:
                room = n
        if room > 0:
            self._spill_cork()
            if bs_sink_append(&self.sink, p, room) < 0:
                raise MemoryError()
        self.flags |= F_NEED_DRAIN
        if self.state == ST_OPEN and not (self.mask & BS_WRITABLE):
            self._set_mask(self.mask | BS_WRITABLE)
        return room

    cdef Py_ssize_t _write(self, const char *p, Py_ssize_t n, object keep) except -2:
        cdef Loop loop = self.loop
        if self.state == ST_CLOSED or (self.flags & (F_ENDING | F_SHUT_WR)):
            return -1
        if n == 0:
            return 0
        self.last_active = <uint32_t>loop.now
        self.flags &= ~F_IDLE_FIRED
        if self.ext is not None and self.ext.tls is not None:
            return (<_TlsHook>self.ext.tls).write(self, p, n, keep)
        return self._write_raw(p, n, keep)

    cdef Py_ssize_t _write_raw(self, const char *p, Py_ssize_t n, object keep) except -2:
        cdef Loop loop = self.loop
        cdef ssize_t sent
        cdef Py_ssize_t hwm
        if self.state == ST_CONNECTING:
            return self._buffer(p, n)
        if loop.depth > 0 or self.cork_depth > 0:
            hwm = self.ctx.hwm
            if hwm < 0 or self._pending() + n <= hwm:
                if self.sink.len == 0 and self.cork_obj is None and keep is not None:
                    self.cork_obj = keep
                else:
                    self._spill_cork()
                    if bs_sink_append(&self.sink, p, n) < 0:
                        raise MemoryError()
                if loop.depth > 0 and not (self.flags & F_CORKED):
                    self.flags |= F_CORKED
                    self.cork_next = loop.cork_head
                    loop.cork_head = self
                return n
            # The cork would exceed high_water_mark: push what it holds and write through.
            self._flush()
            if self.state == ST_CLOSED:
                return -1
        if self._pending():
            return self._buffer(p, n)
        sent = bs_send(self.fd, p, n)
        loop.n_send += 1
        if sent < 0:
            if sent == -EAGAIN or sent == -EWOULDBLOCK:
                sent = 0
            else:
                self._fail(<int>-sent)
                return -1
        self.bytes_written += sent
        if sent == n:
            return n
        return sent + self._buffer(p + sent, n - sent)

    cdef int _flush(self) except -1:
        """Push the sink (and a held corked object) to the kernel; FIN after it if ending."""
        cdef Loop loop = self.loop
        cdef iovec iov[2]
        cdef int cnt
        cdef ssize_t r
        cdef size_t total
        cdef object o
        if self.state != ST_OPEN:
            return 0
        o = self.cork_obj
        if o is not None:
            self.cork_obj = None
            total = PyBytes_GET_SIZE(o)
            r = bs_send(self.fd, PyBytes_AS_STRING(o), total)
            loop.n_send += 1
            if r < 0:
                if r != -EAGAIN and r != -EWOULDBLOCK:
                    return self._fail(<int>-r)
                r = 0
            self.bytes_written += r
            if <size_t>r < total:
                if bs_sink_append(&self.sink, PyBytes_AS_STRING(o) + r, total - r) < 0:
                    raise MemoryError()
        else:
            while self.sink.len > 0:
                cnt = bs_sink_iov(&self.sink, iov)
                total = iov[0].iov_len + (iov[1].iov_len if cnt > 1 else 0)
                if cnt == 1:
                    r = bs_send(self.fd, iov[0].iov_base, iov[0].iov_len)
                else:
                    r = bs_sendv(self.fd, iov, cnt)
                loop.n_send += 1
                if r < 0:
                    if r == -EAGAIN or r == -EWOULDBLOCK:
                        break
                    return self._fail(<int>-r)
                self.bytes_written += r
                bs_sink_consume(&self.sink, r)
                # A backlog draining to a slow reader is activity, not idleness.
                self.last_active = <uint32_t>loop.now
                self.flags &= ~F_IDLE_FIRED
                if <size_t>r < total:
                    break     # kernel buffer full: skip the EAGAIN round trip
        if self.sink.len > 0:
            self.flags |= F_NEED_DRAIN
            if not (self.mask & BS_WRITABLE):
                self._set_mask(self.mask | BS_WRITABLE)
            return 0
        if (self.flags & F_ENDING) and not (self.flags & F_SHUT_WR):
            return self._finish_end()
        return 0

    cdef int _finish_end(self) except -1:
        cdef int r
        if self.ext is not None and self.ext.tls is not None:
            # close_notify goes before the FIN. 0: not yet (handshake running, or ciphertext
            # still buffered: the _flush that empties the sink calls us again).
            if (<_TlsHook>self.ext.tls).before_fin(self) == 0 or self.state == ST_CLOSED:
                return 0
        self.flags |= F_SHUT_WR
        if self.flags & F_EOF:
            # Both directions are done; close() sends the FIN itself.
            return self._close(None)
        r = bs_shutdown(self.fd, 0)
        if r < 0 and r != -ENOTCONN:   # the peer already reset; the read side will report it
            return self._fail(-r)
        return 0

    cdef int _end(self) except -1:
        if self.state == ST_CLOSED or (self.flags & F_ENDING):
            return 0
        self.flags |= F_ENDING
        if self.state == ST_CONNECTING:
            return 0
        if self.loop.depth > 0 and (self.flags & F_CORKED):
            return 0      # the cork flush sends the FIN after the corked bytes
        return self._flush()

    # -- public API --

    def write(self, data, Py_ssize_t offset=0, length=None):
        """Send what the kernel takes now and buffer the rest; returns the bytes accepted
        (short only when high_water_mark caps the buffer), or -1 on a closed socket."""
        cdef Py_buffer view
        cdef Py_ssize_t n, r
        if PyBytes_CheckExact(data) and offset == 0 and length is None:
            return self._write(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), data)
        if isinstance(data, str):
            raise TypeError("write() needs a bytes-like object, not str: encode it first")
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except BufferError:
            data = memoryview(data).tobytes()       # non-contiguous views
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            n = _slice_len(view.len, offset, length)
            r = self._write(<const char *>view.buf + offset, n, None)
        finally:
            PyBuffer_Release(&view)
        return r

    def writelines(self, lines):
        """Write several buffers with one gather send; returns the total bytes accepted."""
        cdef list bufs = []
        cdef Py_ssize_t total = 0, r
        for item in lines:
            if isinstance(item, str):
                raise TypeError("writelines() needs bytes-like objects, not str")
            bufs.append(item if PyBytes_CheckExact(item) else memoryview(item).cast("B"))
        if not bufs:
            return 0
        if self.state == ST_CLOSED or (self.flags & (F_ENDING | F_SHUT_WR)):
            return -1
        if (self.loop.depth > 0 or self.cork_depth > 0 or self._pending() or
                self.state != ST_OPEN or (self.ext is not None and self.ext.tls is not None)):
            for b in bufs:
                r = self.write(b)
                if r < 0:
                    return -1 if total == 0 else total
                total += r
                if r < len(b):
                    break
            return total
        return self._writev(bufs)

    cdef Py_ssize_t _writev(self, list bufs) except -2:
        cdef Py_ssize_t nb = len(bufs), i, total = 0, sent, k, accepted, off, rem
        cdef iovec *iov
        cdef Py_buffer *views
        cdef int cnt
        if nb > 1024:
            nb = 1024        # IOV_MAX; the rest follows through the sink
        iov = <iovec *>malloc(nb * sizeof(iovec))
        views = <Py_buffer *>malloc(nb * sizeof(Py_buffer))
        if iov == NULL or views == NULL:
            free(iov)
            free(views)
            raise MemoryError()
        cnt = 0
        try:
            for i in range(nb):
                PyObject_GetBuffer(bufs[i], &views[i], PyBUF_SIMPLE)
                cnt += 1
                iov[i].iov_base = views[i].buf
                iov[i].iov_len = views[i].len
                total += views[i].len
            sent = bs_sendv(self.fd, iov, cnt)
            self.loop.n_send += 1
            if sent < 0:
                if sent != -EAGAIN and sent != -EWOULDBLOCK:
                    self._fail(<int>-sent)
                    return -1
                sent = 0
            self.bytes_written += sent
            self.last_active = <uint32_t>self.loop.now
            accepted = sent
            off = sent
            for i in range(cnt):
                if off >= views[i].len:
                    off -= views[i].len
                    continue
                rem = views[i].len - off
                k = self._buffer(<const char *>views[i].buf + off, rem)
                accepted += k
                off = 0
                if k < rem:
                    break
        finally:
            for i in range(cnt):
                PyBuffer_Release(&views[i])
            free(iov)
            free(views)
        for i in range(nb, len(bufs)):
            r = self.write(bufs[i])
            if r <= 0:
                break
            accepted += r
        return accepted

    def end(self, data=None):
        """Optional last write, then FIN once everything buffered has reached the kernel.
        The socket keeps reading until the peer's FIN (half-close)."""
        if data is not None:
            self.write(data)
        self._end()

    def shutdown(self, bint read=False):
        """shutdown(SHUT_WR) now (SHUT_RD with read=True), without waiting for the sink."""
        cdef int r
        if self.state != ST_OPEN:
            return
        r = bs_shutdown(self.fd, read)
        if r < 0:
            _raise_errno(-r)
        if not read:
            # Nothing buffered can be sent after our FIN; no `drain` is owed for dropped bytes.
            self.flags |= F_SHUT_WR | F_ENDING
            self.flags &= ~F_NEED_DRAIN
            bs_sink_free(&self.sink)
            self.cork_obj = None
            if self.flags & F_EOF:
                self._close(None)
            elif self.mask & BS_WRITABLE:
                self._set_mask(self.mask & ~BS_WRITABLE)
        elif not (self.flags & F_EOF):
            # After SHUT_RD the kernel reports EOF on every read; that is not the peer's FIN, so
            # no `end` (and no automatic close): stop reading, as if the input were finished.
            self.flags |= F_EOF
            if self.flags & F_SHUT_WR:
                self._close(None)
            elif self.mask & BS_READABLE:
                self._set_mask(self.mask & ~BS_READABLE)

    def close(self):
        """Close now; buffered bytes are dropped; `close(sock, None)` fires."""
        if self.state == ST_OPEN and self._pending() and not (self.flags & F_NEED_DRAIN):
            # Only corked bytes are pending (no write ever backed up): without the cork they would
            # already be in the kernel, so `write(resp); close()` in a handler must still send
            # them. One non-blocking attempt; whatever the kernel refuses is dropped as documented.
            self._flush()
        self._close(None)

    def terminate(self):
        """Abortive close: the peer gets a RST; buffered bytes are dropped."""
        if self.state == ST_OPEN:
            bs_set_linger0(self.fd)
        self._close(None)

    def flush(self):
        """Try to push buffered bytes to the kernel now."""
        if self.state == ST_OPEN and self._pending():
            self._flush()

    def cork(self):
        """Context manager: writes inside it go out together, in one send, when it exits."""
        cdef _CorkCtx c = _CorkCtx.__new__(_CorkCtx)
        c.s = self
        return c

    def pause(self):
        """Stop reading: no `data` until resume(); the kernel buffers and the peer slows down."""
        if self.state == ST_CLOSED or (self.flags & F_PAUSED):
            return
        self.flags |= F_PAUSED
        if self.state == ST_OPEN and (self.mask & BS_READABLE):
            self._set_mask(self.mask & ~BS_READABLE)

    def resume(self):
        """Restart reading: data that arrived meanwhile comes first, then any FIN."""
        if self.state == ST_CLOSED or not (self.flags & F_PAUSED):
            return
        self.flags &= ~F_PAUSED
        if self.state == ST_OPEN and not (self.flags & F_EOF):
            self._set_mask(self.mask | BS_READABLE)
        if self.ext is not None and self.ext.tls is not None:
            (<_TlsHook>self.ext.tls).resumed(self)    # records already decrypted-able in the BIO

    def timeout(self, seconds):
        """Set the idle timeout in seconds (restarted by any read or write); 0 or None clears."""
        cdef double s
        cdef Loop loop = self.loop
        if self.state == ST_CONNECTING:
            self.flags |= F_USER_TIMEOUT
        if seconds is None or seconds == 0:
            self.timeout_ms = 0
            if self.state != ST_CONNECTING:
                bs_wheel_cancel(&loop.wheel, &self.t)
            return
        s = float(seconds)
        if not isfinite(s) or s < 0:
            raise ValueError("timeout must be a finite number of seconds >= 0, not %r" % seconds)
        if s * 1000.0 > 0x7fffffff:
            raise ValueError("timeout too large: %r" % seconds)
        self.timeout_ms = <uint32_t>ceil(s * 1000.0)
        if self.state == ST_OPEN:
            loop.now = bs_monotonic_ms()
            self.last_active = <uint32_t>loop.now
            self.flags &= ~F_IDLE_FIRED
            bs_wheel_arm(&loop.wheel, &self.t, loop.now + self.timeout_ms)

    def set_no_delay(self, bint on=True):
        cdef int r
        if self.state == ST_OPEN and not (self.flags & F_UNIX):
            r = bs_set_nodelay(self.fd, on)
            if r < 0:
                _raise_errno(-r)

    def set_keep_alive(self, bint on=True, int initial_delay=0):
        cdef int r
        if initial_delay < 0:
            raise ValueError("initial_delay must be >= 0")
        if self.state == ST_OPEN and not (self.flags & F_UNIX):
            r = bs_set_keepalive(self.fd, on, initial_delay)
            if r < 0:
                _raise_errno(-r)

    def reload(self, socket):
        """Swap this socket's handler table (an accepted socket gets its own copy)."""
        from ._api import resolve_handlers
        handlers = resolve_handlers(socket)
        if self._listener is not None and self.ctx is self._listener.ctx:
            self.ctx = self.ctx.copy()
        self.ctx.set_handlers(handlers)

    def ref(self):
        if not (self.flags & F_REFED):
            self.flags |= F_REFED
            if self.state != ST_CLOSED:
                self.loop.refs += 1
        return self

    def unref(self):
        if self.flags & F_REFED:
            self.flags &= ~F_REFED
            if self.state != ST_CLOSED:
                self.loop.refs -= 1
        return self

    def fileno(self):
        return -1 if self.state == ST_CLOSED else self.fd

    def upgrade_tls(self, tls, *, bint server_side=False, server_hostname=None):
        """STARTTLS on this connection: same fd, same Socket, now encrypted."""
        from ._tls import upgrade
        upgrade(self, tls, server_side, server_hostname)
        return self

    cdef int _start_tls_from_ctx(self) except -1:
        from ._tls import start_from_ctx
        start_from_ctx(self, self.ctx.tls, self.ctx.tls_server_side, self.ctx.server_hostname)
        return 0

    # -- properties --

    @property
    def ready_state(self):
        if self.state == ST_CONNECTING:
            return "connecting"
        if self.state == ST_CLOSED:
            return "closed"
        if self.flags & (F_ENDING | F_SHUT_WR):
            return "closing"
        return "open"

    @property
    def buffered_amount(self):
        cdef Py_ssize_t n = self._pending()
        if self.ext is not None and self.ext.tls is not None:   # + plaintext held for the handshake
            n += (<_TlsHook>self.ext.tls).buffered()
        if n and self.state == ST_OPEN:
            # Whoever saw a backlog (a proxy deciding to pause its other side) must hear when it
            # is gone, even when it was only corked bytes that the kernel then takes at once:
            # a `drain` is owed (fired after the cork's flush, or by the writable event).
            self.flags |= F_NEED_DRAIN
        return n

    @property
    def bytes_written(self):
        return self.bytes_written

    @property
    def bytes_read(self):
        return self.bytes_read

    @property
    def listener(self):
        return self._listener

    @property
    def loop(self):
        return self.loop

    @property
    def paused(self):
        return bool(self.flags & F_PAUSED)

    @property
    def high_water_mark(self):
        return None if self.ctx.hwm < 0 else self.ctx.hwm

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
        return self._addr(True)[0]

    @property
    def remote_port(self):
        return self._addr(True)[1]

    @property
    def local_address(self):
        return self._addr(False)[0]

    @property
    def local_port(self):
        return self._addr(False)[1]

    @property
    def family(self):
        return self._addr(True)[2] if self.state != ST_CONNECTING else None

    # TLS accessors (None on a plaintext socket)
    @property
    def authorized(self):
        t = self._tls()
        return False if t is None else t.authorized

    @property
    def alpn_protocol(self):
        t = self._tls()
        return None if t is None else t.sslobj.selected_alpn_protocol()

    def getpeercert(self, binary_form=False):
        t = self._tls()
        return None if t is None else t.sslobj.getpeercert(binary_form)

    def cipher(self):
        t = self._tls()
        return None if t is None else t.sslobj.cipher()

    def version(self):
        t = self._tls()
        return None if t is None else t.sslobj.version()

    cdef object _tls(self):
        return None if self.ext is None else self.ext.tls

    def __repr__(self):
        return "<bunsock.Socket fd=%d %s>" % (self.fd, self.ready_state)


cdef void _release_view(object mv) noexcept:
    # The view points into the loop's receive buffer, which the next read overwrites.
    try:
        mv.release()
    except BufferError:
        pass      # something still exports it (e.g. numpy.frombuffer); it sees later reads


cdef Py_ssize_t _slice_len(Py_ssize_t size, Py_ssize_t offset, object length) except -1:
    cdef Py_ssize_t n
    if offset < 0 or offset > size:
        raise ValueError("offset %d is outside the buffer (length %d)" % (offset, size))
    if length is None:
        return size - offset
    n = length
    if n < 0 or n > size - offset:
        raise ValueError("length %d does not fit the buffer (length %d, offset %d)"
                         % (n, size, offset))
    return n


# ---------------------------------------------------------------------------------------------
# TLS hook (bunsock._tls.TLSState overrides every method; a socket's ext.tls is one of those)


cdef class _TlsHook:
    """What the loop calls on a socket's TLS layer instead of its plaintext paths."""

    cdef int feed(self, Socket s, char *p, Py_ssize_t n) except -1:
        return 0

    cdef int eof(self, Socket s) except -1:
        return 0

    cdef Py_ssize_t write(self, Socket s, const char *p, Py_ssize_t n, object keep) except -2:
        return -1

    cdef int drained(self, Socket s) except -1:
        return 0

    cdef int closed(self, Socket s) except -1:
        return 0

    cdef int before_fin(self, Socket s) except -1:
        return 1

    cdef int resumed(self, Socket s) except -1:
        return 0

    cdef Py_ssize_t buffered(self) noexcept:
        return 0
