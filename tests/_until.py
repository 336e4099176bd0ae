"""run_until(loop, predicate, timeout): conftest's once the suite's harness has it."""
try:
    from conftest import run_until  # noqa: F401
except ImportError:
    import time

    def run_until(loop, predicate, timeout=10.0):
        """Run `loop` until predicate() is true; fail the test if it is not within `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0, "condition not reached within %.1f s" % timeout
            loop.run_once(min(0.05, left))
