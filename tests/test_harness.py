"""The suite's own harness: an assert that fails inside a handler or a timer fails its test.

Runs small test files through pytest (the pytester plugin) with this suite's conftest.py, so what
is checked is what every test file in the suite gets."""
import os
from pathlib import Path

import bunsock

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent

BODY = '''
import socket
import bunsock
from conftest import run, run_until


def serve_one(loop, handlers):
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=handlers, loop=loop)
    c = socket.create_connection(("127.0.0.1", srv.port))
    c.sendall(b"x")
    return srv, c


def test_assert_in_data(loop):
    got = []

    class H:
        def data(self, sock, buf):
            got.append(buf)
            assert buf == b"never this"

    srv, c = serve_one(loop, H())
    run_until(loop, lambda: got)
    c.close()
    srv.stop(True)


def test_assert_in_data_with_an_error_handler(loop):
    got, routed = [], []

    class H:
        def data(self, sock, buf):
            got.append(buf)
            assert buf == b"never this"

        def error(self, sock, exc):
            routed.append(exc)          # the table swallows it; the test must fail anyway

    srv, c = serve_one(loop, H())
    run_until(loop, lambda: routed)
    c.close()
    srv.stop(True)


def test_assert_in_timer(loop):
    fired = []

    def tick():
        fired.append(1)
        assert False, "timer assert"

    loop.call_later(0.01, tick)
    run(loop)
    assert fired


def test_expected_errors_pass(loop, expected_errors):
    def tick():
        raise KeyError("provoked")

    loop.call_soon(tick)
    run(loop)
    assert [type(e) for e, _ in expected_errors] == [KeyError]


def test_run_until_times_out(loop):
    run_until(loop, lambda: False, timeout=0.2)
'''


def test_failures_inside_handlers_fail_their_tests(pytester, monkeypatch):
    # The inner pytest must import the bunsock this suite tests (an in-place build or the wheel).
    where = str(Path(bunsock.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [where,
                                                                  os.environ.get("PYTHONPATH")])))
    pytester.makeconftest((HERE / "conftest.py").read_text())
    pytester.makepyfile(test_inner=BODY)
    pytester.makeini("[pytest]\nfilterwarnings =\n    error::pytest.PytestUnraisableExceptionWarning\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 4, result.stdout.str()
    assert outcomes.get("passed") == 1, result.stdout.str()
    out = result.stdout.str()
    assert "never this" in out and "timer assert" in out
    assert "condition" in out and "not met within 0.2 s" in out
