"""Pre-forked workers sharing one port: one process (and one loop) per core.

    def setup():
        bunsock.listen(hostname="0.0.0.0", port=8080, socket=Handlers(), reuse_port=True)

    bunsock.serve(workers=4, setup=setup)

Each worker calls setup() and then bunsock.run(). The kernel spreads new connections over the
listeners (SO_REUSEPORT). A worker that dies is replaced; SIGINT or SIGTERM to the parent stops
every worker (SIGTERM to each, then SIGKILL after `grace` seconds) and serve() returns.
SIGUSR1 (and any other signal in `forward_signals`) sent to the parent is passed on to every
worker; a worker ignores those signals unless its setup() installs a handler.

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


def _worker(setup, inherited, forwarded):
    # The parent's handlers must not run in the child; SIGTERM ends a worker, Ctrl-C in a
    # terminal reaches the whole process group and the parent coordinates the stop.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forwarded signal's default action (SIGUSR1: terminate) must not kill a worker whose
    # setup() did not ask for it; the parent's forwarder must not run here either.
    for s in forwarded:
        signal.signal(s, signal.SIG_IGN)
    # Unblocked only now (see spawn): a pending SIGTERM ends this worker here.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(forwarded) | _STOP_SIGNALS)
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


def serve(workers=None, setup=None, *, grace=5.0, restart_delay=0.5,
          forward_signals=(signal.SIGUSR1,)):
    """Fork `workers` processes (default: one per CPU) that each take over the listeners the
    calling thread's default loop already has, run setup() (when given), then the loop; keep
    that many alive until SIGINT/SIGTERM. Returns after every worker has exited.

    forward_signals: signals the parent passes on to every worker (default: SIGUSR1); workers
    start with them ignored, so only a handler installed by setup() acts on them.
    Raises TypeError when setup is not callable, or is None and there is no listener to share;
    ValueError when workers is not a positive int or forward_signals holds SIGINT/SIGTERM."""
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
    forwarded = tuple(signal.Signals(s) for s in forward_signals)
    if signal.SIGINT in forwarded or signal.SIGTERM in forwarded:
        raise ValueError("forward_signals cannot hold SIGINT or SIGTERM: serve() handles them")
    stopping = []
    children = {}

    def spawn(slot):
        # Blocked across fork: until the child has its own handlers, a forwarded signal would
        # run the parent's forwarder in the child (which knows its siblings' pids) and a stop
        # signal the parent's handler (lost there); until the parent has recorded the pid, a
        # stop signal would leave this child unstopped.
        blocked = set(forwarded) | _STOP_SIGNALS
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            pid = os.fork()
            if pid == 0:
                _worker(setup, inherited, forwarded)
            children[pid] = slot
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)

    def on_signal(signum, frame):
        # Raising is what interrupts os.waitpid: PEP 475 retries it after a handler returns.
        stopping.append(signum)
        raise _Stop()

    def forward(signum, frame):
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass      # died meanwhile; waitpid replaces it

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    old.update((s, signal.signal(s, forward)) for s in forwarded)
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
