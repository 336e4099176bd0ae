"""The warning for a thread whose default loop got sockets, listeners or timers but never ran.

`bunsock.connect()` in a worker thread without `loop=` goes to that thread's own default loop;
if nobody calls `bunsock.run()` there, the socket stays "connecting" forever. bunsock cannot
know at creation time (setting up first and running later is the normal order), so it tells
when the thread ends: the guard below lives in the same thread-local as the loop and is dropped
with it."""
import threading
import warnings


class UnrunLoopGuard:
    __slots__ = ("loop", "thread")

    def __init__(self, loop):
        self.loop = loop
        self.thread = threading.current_thread().name

    def __del__(self):
        loop = self.loop
        try:
            if loop.refs > 0 and loop.stats()["polls"] == 0:
                warnings.warn(
                    "thread %r ended while its default bunsock loop, which never ran, held %d "
                    "referenced socket(s)/listener(s)/timer(s): they never did anything. Call "
                    "bunsock.run() in that thread, or create them on a loop another thread "
                    "runs, from that thread (loop.call_soon_threadsafe(bunsock.connect, ...))"
                    % (self.thread, loop.refs), RuntimeWarning, stacklevel=1)
        except (AttributeError, TypeError):
            pass        # interpreter shutdown: modules already torn down
