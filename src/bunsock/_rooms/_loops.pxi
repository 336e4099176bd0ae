# Loops per thread and per process: the default loop of each thread, the fresh start a forked
# child needs, and the listeners serve() hands to its workers.

cdef object _tls_loops = threading.local()
# Every live Loop, for the at-fork hook.
cdef object _live_loops = weakref.WeakSet()


def get_loop():
    """The calling thread's default loop (created on first use; after os.fork() the child
    gets a new one)."""
    try:
        return _tls_loops.loop
    except AttributeError:
        loop = Loop()
        _tls_loops.loop = loop
        if threading.current_thread() is not threading.main_thread():
            # Warns at thread exit if this loop got work but never ran (_unrun.py says why).
            from ._unrun import UnrunLoopGuard
            _tls_loops.guard = UnrunLoopGuard(loop)
        return loop


def _peek_default_loop():
    """The calling thread's default loop if it was ever created, else None (serve())."""
    return getattr(_tls_loops, "loop", None)


def _after_fork_in_child():
    # The child shares every inherited epoll instance with its parent: an epoll_ctl here would
    # change the parent's registrations, an epoll_wait would steal its events. So the child
    # starts with fresh default loops, and inherited loops refuse all use (_check_thread).
    global _pid, _tls_loops
    _pid = getpid()
    _tls_loops = threading.local()
    for loop in list(_live_loops):
        (<Loop>loop)._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _listeners_of(Loop loop):
    """The listeners `loop` is accepting on (serve() shares them with its workers)."""
    return [l for l in loop.listeners if not (<Listener>l).stopped]


def _adopt_listeners(list listeners, Loop loop):
    """In a forked worker: register the parent's listeners with this process's `loop`."""
    for l in listeners:
        (<Listener>l)._adopt(loop)
