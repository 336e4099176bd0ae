"""A thread's default loop that got work but never ran warns when the thread ends
(bunsock._unrun): a connect() in a worker thread without loop= must not hang silently."""
import threading
import warnings

import bunsock


def _in_thread(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = threading.Thread(target=fn, name="worker-x")
        t.start()
        t.join(30)
        assert not t.is_alive()
    return [w for w in caught if issubclass(w.category, RuntimeWarning)
            and "default bunsock loop" in str(w.message)]


def test_connect_in_a_thread_that_never_runs_its_loop_warns():
    made = []

    def work():
        made.append(bunsock.connect(hostname="127.0.0.1", port=9,
                                    socket={"data": lambda s, b: None}))

    found = _in_thread(work)
    assert len(found) == 1
    msg = str(found[0].message)
    assert "'worker-x'" in msg and "never ran" in msg and "bunsock.run()" in msg
    assert made[0].ready_state == "connecting"        # what the warning is about
    made[0].close()                                   # (a loop not running: any thread may)
    made[0].loop.close()


def test_a_thread_that_runs_its_loop_or_creates_nothing_does_not_warn():
    def runs():
        bunsock.connect(hostname="127.0.0.1", port=1, socket={
            "data": lambda s, b: None, "connect_error": lambda s, e: None})
        bunsock.run()

    def idle():
        bunsock.get_loop()

    def private_loop():
        lp = bunsock.Loop()
        bunsock.connect(hostname="127.0.0.1", port=9, socket={"data": lambda s, b: None},
                        loop=lp).close()
        lp.close()

    for fn in (runs, idle, private_loop):
        assert _in_thread(fn) == [], fn.__name__
