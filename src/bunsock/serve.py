"""Pre-forked workers sharing one port: one process (and one loop) per core.

    def setup():
        bunsock.listen(hostname="0.0.0.0", port=8080, socket=Handlers(), reuse_port=True)

    bunsock.serve(workers=4, setup=setup)

Each worker calls setup() and then bunsock.run(). The kernel spreads new connections over the
listeners (SO_REUSEPORT). A worker that dies is replaced; SIGINT or SIGTERM to the parent stops
every worker (SIGTERM to each, then SIGKILL after `grace` seconds) and serve() returns.

Listeners the parent created on its default loop before serve() are shared instead: each worker
registers the inherited listening socket with its own fresh loop (the parent's loop is not
usable after fork), and the kernel hands each connection to one of them.

    bunsock.listen(hostname="0.0.0.0", port=8080, socket=Handlers())
    bunsock.serve(workers=4)
"""
import os
import signal
import sys
import time

from . import _loop

__all__ = ["serve"]


class _Stop(Exception):
    pass


# Blocked across fork() in the parent: a SIGINT/SIGTERM arriving then is held until the child has
# its own handlers (else the parent's handler runs in the child, raises inside its at-fork hooks
# and the signal is lost) and until the parent has recorded the child's pid (else it is never
# told to stop).
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _worker(setup, inherited):
    # The parent's handlers must not run in the child; SIGTERM ends a worker, Ctrl-C in a
    # terminal reaches the whole process group and the parent coordinates the stop.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)   # a pending SIGTERM ends us now
    code = 0
    try:
        from . import run
        if inherited:
            # The at-fork hook gave this process a fresh default loop.
            _loop._adopt_listeners(inherited, _loop.get_loop())
        if setup is not None:
            setup()
        run()
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(workers=None, setup=None, *, grace=5.0, restart_delay=0.5):
    """Fork `workers` processes (default: one per CPU) that each take over the listeners the
    calling thread's default loop already has, run setup() (when given), then the loop; keep
    that many alive until SIGINT/SIGTERM. Returns after every worker has exited.

    Raises TypeError when setup is not callable, or is None and there is no listener to share;
    ValueError when workers is not a positive int."""
    default = _loop._peek_default_loop()
    inherited = _loop._listeners_of(default) if default is not None else []
    if setup is not None and not callable(setup):
        raise TypeError("serve() setup= must be a callable that creates this worker's "
                        "listeners, not %s" % type(setup).__name__)
    if setup is None and not inherited:
        raise TypeError("serve() needs setup=, a callable that creates this worker's listeners "
                        "(or listeners created with bunsock.listen() before serve())")
    n = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError("workers must be a positive int, not %r" % (workers,))
    stopping = []
    children = {}

    def spawn(slot):
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                _worker(setup, inherited)
            children[pid] = slot
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def on_signal(signum, frame):
        # Raising is what interrupts os.waitpid: PEP 475 retries it after a handler returns.
        stopping.append(signum)
        raise _Stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for slot in range(n):
            spawn(slot)
        while children and not stopping:
            try:
                pid, _status = os.waitpid(-1, 0)
                slot = children.pop(pid, None)
                if slot is not None:
                    time.sleep(restart_delay)     # a worker that crashes at start must not spin
                    spawn(slot)
            except ChildProcessError:
                break
    except _Stop:
        pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break     # all gone already (the same signal reached the whole group)
            if pid:
                children.pop(pid, None)
            else:
                time.sleep(0.02)
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
