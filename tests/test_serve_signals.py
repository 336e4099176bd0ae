"""bunsock.serve(): a SIGTERM that arrives while workers are being forked still stops everything.

Found by the deploying guide's test (tests/test_docs.py), which stops a `serve()` block with
SIGTERM to its process group as a service manager does: a worker forked just before the signal
still had the parent's handler, which raised inside the child's at-fork hooks ("Exception
ignored in: <function _after_at_fork_child_reinit_locks ...>"); the signal was lost there and
the worker lived on until the parent's grace period ran out and it was killed.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    import bunsock

    class Echo:
        def data(self, sock, buf):
            sock.write(buf)

    bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo())
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    bunsock.serve(workers=4, grace=10)
""")


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="serve() needs fork")
def test_sigterm_to_the_group_while_workers_start_stops_them_all_at_once():
    for attempt in range(12):
        p = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True, text=True)
        try:
            assert p.stdout.readline() == "ready\n"
            # Land in the middle of the forks: a little later on each attempt.
            time.sleep(0.002 * attempt)
            t0 = time.monotonic()
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(30)
            while group_alive(p.pid) and time.monotonic() - t0 < 8:
                time.sleep(0.02)
            took = time.monotonic() - t0
            orphans = group_alive(p.pid)
        finally:
            if group_alive(p.pid):
                os.killpg(p.pid, signal.SIGKILL)
            if p.poll() is None:
                p.wait(10)
            while group_alive(p.pid):
                time.sleep(0.02)
        err = p.stderr.read()
        p.stdout.close()
        p.stderr.close()
        assert not orphans, "a worker outlived serve() by 8 s (attempt %d):\n%s" % (attempt, err)
        assert "Traceback" not in err and "Exception ignored" not in err, err
        # A worker that lost its SIGTERM is only killed after grace (10 s).
        assert took < 8, "serve() took %.1f s to stop: a worker ignored SIGTERM" % took
