# The Loop: one poller, one receive buffer, one timer wheel, the handler scope and its cork list.

# Later than any deadline a timer can have (about 35,000 years of milliseconds).
cdef uint64_t FOREVER_MS = (<uint64_t>1) << 50


cdef class Loop:
    """An event loop: bunsock.run() drives the thread's default one; Loop() makes a private one."""
    # counters (stats())

    def __cinit__(self, Py_ssize_t read_buffer_size=256 * 1024):
        global _n_loops
        cdef int r
        _n_loops += 1      # first: __dealloc__ runs (and counts down) even when this raises
        self.poller.fd = -1
        self.pid = _pid
        self.listeners = set()
        if read_buffer_size < 4096:
            raise ValueError("read_buffer_size must be at least 4096")
        r = bs_poller_open(&self.poller, MAX_EVENTS)
        if r < 0:
            _raise_errno(-r)
        self.events = <bs_event *>malloc(MAX_EVENTS * sizeof(bs_event))
        if self.events == NULL:
            raise MemoryError()
        self.rbuf_size = read_buffer_size
        # Loop._poll keeps the GIL through busy iterations for at most twice the interpreter's
        # switch interval (see there).
        self.gil_hold_ms = max(1, <int64_t>(2000.0 * _sys.getswitchinterval()))
        self.gil_since = <int64_t>bs_monotonic_ms()
        self.signal_cap = -1
        self._new_rbuf()
        # Every read becomes a bytes object of up to read_buffer_size, several of them alive at
        # once under load. glibc serves blocks above its mmap threshold (128 KiB in a fresh
        # process) with mmap/munmap and gives the heap top back above twice that, so a busy
        # server would pay brk/mmap and page faults on every large read (measured: 3 brk calls
        # per 1 MiB echo). Freeing one mmapped 4 MiB block raises both thresholds through
        # glibc's own dynamic-threshold rule: up to 8 MiB of free heap stays mapped.
        _prime_malloc(max(4 << 20, read_buffer_size + 4096))
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
        r = bs_poller_add(&self.poller, self.waker.fd, <void *>self.waker, BS_READABLE)
        if r < 0:
            _raise_errno(-r)
        self.waker.mask = BS_READABLE
        _live_loops.add(self)

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
        self.recv = None      # frees the buffer, or leaves it to views still holding it
        self.rbuf = NULL

    cdef _forked(self):
        """In a forked child: release this process's copies of the loop's own descriptors
        (closing is safe: the parent's stay open, so its registrations are untouched)."""
        if bs_poller_name() == b"epoll":
            bs_poller_close(&self.poller)
        else:
            # A kqueue is not inherited at all: its number may already be someone else's.
            self.poller.fd = -1
        if self.waker is not None:
            bs_waker_close(&self.waker.w)
            self.waker.fd = -1
        # Its threads were not forked with us; the parent's pool is the parent's.
        self.executor = None

    def close(self):
        """Release the poller and buffers. Close sockets and stop listeners first. Also allowed
        on a loop inherited over fork (it then only lets go of this process's copies)."""
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
            t = bs_wheel_pop_expired(&self.wheel, self.now + FOREVER_MS)
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
        """Make run() return after the current iteration. Callable from any thread."""
        self.stopping = True
        if self.run_thread != 0 and self.run_thread != bs_thread_id():
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
        if self.pid != _pid:
            _wrong_caller(self)
        if self.closed:
            raise RuntimeError("the loop is closed")
        return 0

    cdef int _new_rbuf(self) except -1:
        self.recv = _RecvBuf.__new__(_RecvBuf)
        self.recv.alloc(self.rbuf_size)
        self.rbuf = self.recv.buf
        return 0

    # -- handler scope: writes are corked until the outermost handler returns (call_handler) --

    cdef int _retire(self, object handle) except -1:
        """Drop the poller's reference to a closed handle. While a batch of events is being
        dispatched the handle may still have an entry later in it, so it is kept alive until
        the batch ends (its fd is -1 by then, and the entry is skipped)."""
        if self.running:
            self.dead.append(handle)
        Py_DECREF(handle)
        return 0

    cdef int _uncork(self) except -1:
        """The outermost handler returned: flush every socket it wrote to."""
        cdef Socket s
        while self.cork_head is not None:
            s = self.cork_head
            self.cork_head = s.cork_next
            s.cork_next = None
            s.flags &= ~F_CORKED
            if s.state != ST_CLOSED and s.cork_depth == 0:
                _SocketWriter._flush(s)
        return 0

    cdef int _arm(self, bs_timer *t, double delay) except -1:
        """Arm a wheel timer `delay` seconds from now. Outside a dispatch, an embedding host
        (bunsock.aio) must hear that the next deadline changed."""
        self.now = bs_monotonic_ms()
        bs_wheel_arm(&self.wheel, t, self.now + <uint64_t>ceil(delay * 1000.0))
        if self.embedded and not self.running:
            bs_waker_signal(&self.waker.w)
        return 0

    # -- timers --

    cdef Timer _new_timer(self, fn, tuple args):
        """An active, referenced Timer for fn(*args); the caller arms or queues it."""
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
        return t

    cdef Timer _timer(self, double delay, uint64_t interval, fn, tuple args):
        cdef Timer t
        _check_thread(self)
        t = self._new_timer(fn, args)
        t.interval = interval
        Py_INCREF(t)
        self._arm(&t.t, delay)
        t.start = self.now
        return t

    def call_later(self, delay, fn, *args):
        """Call fn(*args) once after `delay` seconds (0 to 2e6: docs/API.md §6). Returns a Timer."""
        return self._timer(_seconds_arg("delay", delay, False), 0, fn, args)

    def call_every(self, interval, fn, *args):
        """Call fn(*args) every `interval` seconds at a fixed rate (no drift, no catch-up bursts)."""
        cdef double iv = _seconds_arg("interval", interval, False)
        if iv <= 0:
            raise ValueError("interval must be a number of seconds > 0, not %r" % (interval,))
        cdef uint64_t ms = <uint64_t>ceil(iv * 1000.0)
        return self._timer(iv, ms, fn, args)

    def call_soon(self, fn, *args):
        """Call fn(*args) on the next loop iteration. Returns a Timer (cancel() works)."""
        _check_thread(self)
        return self._soon(fn, args)

    cdef Timer _soon(self, fn, tuple args):
        cdef Timer t = self._new_timer(fn, args)
        self.ready.append(t)
        self.nready += 1
        if self.embedded:
            bs_waker_signal(&self.waker.w)
        return t

    def call_soon_threadsafe(self, fn, *args):
        """call_soon from another thread: wakes the loop if it is waiting."""
        t = self._soon(fn, args)
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
                call_callback(self, t.fn, t.args)
        return 0

    cdef int _run_timers(self) except -1:
        cdef bs_timer *t
        cdef object owner
        cdef int budget = TIMER_BUDGET
        self.now = bs_monotonic_ms()      # the batch before may have run long
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

    cdef int64_t _due(self) noexcept:
        """Milliseconds until the loop has work that no event brings: 0 with callbacks queued,
        the next timer's deadline (unref'd timers too), or -1 when only an event can."""
        cdef int64_t timeout
        if self.nready:
            return 0
        if self.wheel.count:
            # The batch and the callbacks before this may have run long: measure from now, or
            # every timer would fire late by that much.
            self.now = bs_monotonic_ms()
            timeout = bs_wheel_timeout(&self.wheel, self.now)
            return MAX_WAIT_MS if timeout > MAX_WAIT_MS else timeout
        return -1

    cdef int64_t _timeout(self) noexcept:
        """How long run()'s poller may sleep: -2 when nothing keeps the loop going."""
        if self.refs <= 0 and not self.nready:
            return -2
        return Loop._due(self)

    cdef int _poll(self, int timeout) except? -1:
        """Wait for events: the poller's count, or -errno. Letting the GIL go and taking it back
        costs about 400 instructions, more than the rest of the loop's work for one message; it
        is needed only to block. So a busy loop first asks the poller without waiting and
        keeping the GIL: when events are ready (a server under load, a ping-pong) that is the
        whole wait. A try that finds nothing costs one syscall, so after one the tries stop for
        a number of iterations that doubles with each miss (up to TRY_BACKOFF_MAX): a mostly
        idle loop goes straight to the blocking wait.
        Other threads: CPython hands the GIL over once a waiter has waited a whole switch
        interval with no switch (the holder's next drop then waits for the hand-over). Brief
        drops every few dozen iterations defeat that (each counts as a switch and restarts the
        waiter's timer: a waiting thread got 6 turns in 5 s), so the blocking path is taken
        only after the GIL was held for two switch intervals (clock read once per
        TRY_STREAK_MAX tries): a waiter gets it, and a relay running no Python code still
        lets threads and signals in."""
        cdef int n
        if timeout != 0 and self.try_skip > 0:
            self.try_skip -= 1
        elif self.try_streak < TRY_STREAK_MAX or _gil_kept(self):
            n = bs_poller_wait(&self.poller, self.events, 0)
            if n != 0:
                self.try_streak += 1
                self.try_backoff = 0
                return n
            if timeout == 0:
                return 0
            self.try_backoff = 1 if self.try_backoff == 0 else min(self.try_backoff * 2,
                                                                   TRY_BACKOFF_MAX)
            self.try_skip = self.try_backoff
        self.try_streak = 0
        # A signal that arrived while we were running Python code must not wait for the next
        # event: check before blocking.
        PyErr_CheckSignals()
        # Ctrl-C: the kernel may deliver a process-wide SIGINT to another thread (a resolver
        # thread, a timer thread), and then this epoll_wait is not interrupted. Python has
        # noted the signal by then, so run()'s waits in the main thread are capped: it looks
        # (just above, on its next wait) within SIGNAL_CHECK_MS. Only blocking waits are
        # capped, so a busy loop pays nothing for it. One unsigned compare: a wait of -1
        # (forever) is above any cap, a cap of -1 (none) above any wait.
        if <unsigned int>timeout > <unsigned int>self.signal_cap:
            timeout = self.signal_cap
        with nogil:
            n = bs_poller_wait(&self.poller, self.events, timeout)
        self.gil_since = <int64_t>bs_monotonic_ms()
        return n

    cdef int _iterate(self, int timeout) except -1:
        """One poll, its events, then due timers and call_soon callbacks."""
        cdef int n, i, err
        cdef bs_event *ev
        cdef _Handle h
        if self.pid != _pid:
            _wrong_caller(self)
        n = Loop._poll(self, timeout)      # (Loop.x(self): a direct C call, not the vtable)
        err = -n
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
            if self.wheel.count and i:
                # While timers are armed, I/O is stamped with the time it really happens (idle
                # timeouts count from it): an earlier handler in this batch may have run long.
                self.now = bs_monotonic_ms()
            if type(h) is Socket:
                _SocketReader._on_event(<Socket>h, ev.mask)
            elif type(h) is Listener:
                (<Listener>h)._on_event(ev.mask)
            else:
                h._on_event(ev.mask)
        if self.dead:
            self.dead.clear()
        if self.wheel.count:
            self._run_timers()
        if self.nready:
            self._run_ready()
        return 0

    cdef int _begin(self) except -1:
        if self.pid != _pid or self.pid != getpid():
            # getpid() too: a fork() from C code bypasses os.fork() and so the at-fork hook.
            _raise_forked(self)
        self._check_open()
        if self.running:
            raise RuntimeError("this loop is already running")
        self.running = True
        self.run_thread = bs_thread_id()
        self.now = bs_monotonic_ms()
        return 0

    cdef void _end(self) noexcept:
        self.running = False
        self.run_thread = 0
        self.signal_cap = -1
        self.dead.clear()

    def run(self):
        """Run until no referenced listener, socket or timer is left, or stop() is called;
        returns None. Ctrl-C (KeyboardInterrupt) stops it promptly and propagates (within 250 ms
        in the main thread, even when the kernel hands the signal to another thread). Raises
        RuntimeError when the loop is closed, already running, or was created before a fork()
        in this process's parent."""
        cdef int64_t timeout
        cdef bint main = threading.current_thread() is threading.main_thread()
        self._begin()
        self.stopping = False
        if main:
            self.signal_cap = SIGNAL_CHECK_MS     # see _poll: Ctrl-C reaches run() in time
        try:
            while not self.stopping:
                timeout = Loop._timeout(self)
                if timeout == -2:
                    break
                Loop._iterate(self, <int>timeout)
        finally:
            self._end()

    def run_once(self, timeout=0):
        """One iteration: wait up to `timeout` seconds (None: until something happens) for
        events, but no longer than until the next timer is due (not at all with callbacks
        queued), dispatch them, then run due timers and callbacks. For embedding the loop in
        another one (bunsock.aio registers fileno() with asyncio and calls this). A timeout
        above MAX_WAIT (2**31 - 1 ms, about 24.8 days; inf included) waits that long. Raises
        ValueError for a negative or NaN timeout, TypeError for a non-number."""
        cdef int ms = -1 if timeout is None else _wait_ms(_seconds_arg("run_once timeout",
                                                                        timeout, False, INFINITY))
        cdef int64_t due
        self._begin()
        try:
            # Queued callbacks and due timers are work too: the wait is only until the first.
            due = self._due()
            if due >= 0 and (ms < 0 or due < ms):
                ms = <int>due
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

    def __repr__(self):
        state = "closed" if self.closed else ("running" if self.running else "idle")
        return "<bunsock.Loop %s %s refs=%d>" % (backend(), state, self.refs)

    def _embed(self, bint on=True):
        """Embedded in another loop: call_soon and new timers wake the poller fd, so the host
        notices work queued from its own callbacks."""
        self.embedded = on


cdef int _wait_ms(double t) noexcept:
    """A wait of t seconds (>= 0, inf included) in whole ms, rounded up and capped at
    MAX_WAIT_MS: a C int, which is what the poller takes (a larger value would wrap)."""
    if t * 1000.0 >= MAX_WAIT_MS:
        return MAX_WAIT_MS
    return <int>ceil(t * 1000.0)


cdef inline bint _gil_kept(Loop loop) noexcept:
    """Loop._poll's streak of non-blocking tries ran out: keep the GIL (and start a new streak)
    unless it has been held for loop.gil_hold_ms."""
    if <int64_t>bs_monotonic_ms() - loop.gil_since < loop.gil_hold_ms:
        loop.try_streak = 0
        return True
    return False
