# Timers: call_later / call_every / call_soon. An armed Timer holds a reference to itself for
# the wheel (its bs_timer is embedded; the wheel only has the C pointer).


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
        _check_thread(self.loop)
        self._deactivate()

    def ref(self):
        """Make the timer keep run() going (the default)."""
        _check_thread(self.loop)
        if not self.refed:
            self.refed = True
            if self.active:
                self.loop.refs += 1
        return self

    def unref(self):
        """Let run() return even while this timer is pending."""
        _check_thread(self.loop)
        if self.refed:
            self.refed = False
            if self.active:
                self.loop.refs -= 1
        return self

    @property
    def active(self):
        """Whether the timer is still scheduled (False once a call_later has fired, or after
        cancel())."""
        return self.active

    @property
    def when(self):
        """When the next call is due, in seconds on the loop's clock (`Loop.time()`), or None."""
        return self.t.deadline / 1000.0 if bs_timer_armed(&self.t) else None

    def __repr__(self):
        fn = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        if not self.active:
            state = "cancelled or done"
        elif self.interval:
            state = "every %gs" % (self.interval / 1000.0)
        else:
            state = "once"
        return "<bunsock.Timer %s %s%s%s>" % (
            fn, state, "" if self.when is None else " due=%.3f" % self.when,
            "" if self.refed else " unref")

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
        return call_callback(loop, self.fn, self.args)
