"""The sink's storage release policy (src/bunsock/_rooms/_sock_write.pxi): a socket whose backlog once
needed a large buffer gives it back once a whole period passes without needing it (memory per
idle connection), and keeps it while backpressure episodes keep needing it (no regrowth churn).

The server's writes back up against a bunsock client on the same loop that reads everything;
small kernel buffers on both sides make the kernel refuse most of each burst.
"""
import pytest

import bunsock
from bunsock._loop import _sink_release_period, _sink_storage
from conftest import run_until, shrink_sndbuf

HOST = "127.0.0.1"
KEEP = 64 * 1024            # BS_SINK_KEEP: storage up to this is never released
BURST = 512 * 1024
PERIOD = 0.1


@pytest.fixture
def short_period():
    _sink_release_period(PERIOD)
    yield
    _sink_release_period(0.5)


def _pair(loop, server_handlers, got):
    """A listener with `server_handlers`, and a client that counts what it reads into got[0]."""
    class Client:
        def data(self, s, b):
            got[0] += len(b)

    lst = bunsock.listen(hostname=HOST, port=0, socket=server_handlers, loop=loop)
    cli = bunsock.connect(hostname=HOST, port=lst.port, socket=Client(), loop=loop,
                          recv_buffer_size=16 * 1024)
    return lst, cli


def test_idle_socket_gives_large_storage_back(loop, no_leaks, short_period):
    got = [0]
    seen = {}

    class Server:
        def open(self, s):
            shrink_sndbuf(s, 16 * 1024)
            seen["s"] = s
            s.write(b"x" * BURST)

        def drain(self, s):
            seen["at_drain"] = _sink_storage(s)

    lst, cli = _pair(loop, Server(), got)
    run_until(loop, lambda: got[0] == BURST and "at_drain" in seen)
    s = seen["s"]
    # The burst really needed large storage, and it was still there when the backlog drained.
    assert seen["at_drain"][0] > KEEP, seen
    # Nothing more is written: within a couple of periods the storage is released.
    run_until(loop, lambda: _sink_storage(s)[0] == 0, timeout=5.0,
              what="the idle socket's sink released its storage")
    # And the socket still works after it: a new backlog allocates again.
    s.write(b"y" * BURST)
    run_until(loop, lambda: got[0] == 2 * BURST)
    cli.close()
    s.close()
    lst.stop()


def test_busy_socket_keeps_its_storage(loop, no_leaks, short_period):
    """Bursts that each back up past KEEP and drain quickly, several per period, over many
    periods: the sink is empty most of the time, but it keeps needing its storage, so the storage
    is never released and re-grown (same buffer throughout)."""
    got = [0]
    seen = {"bursts": 0, "storage": []}
    nbursts = 40            # one every ~PERIOD/4: ~10 periods

    class Server:
        def open(self, s):
            shrink_sndbuf(s, 16 * 1024)
            seen["s"] = s
            self.burst(s)

        def burst(self, s):
            if s.ready_state == "closed":
                return
            if seen["bursts"]:
                seen["storage"].append(_sink_storage(s))
            seen["bursts"] += 1
            s.write(b"z" * BURST)

        def drain(self, s):
            if seen["bursts"] < nbursts:
                loop.call_later(PERIOD / 4, self.burst, s)

    lst, cli = _pair(loop, Server(), got)
    run_until(loop, lambda: got[0] == nbursts * BURST, timeout=30.0)
    storage = seen["storage"]
    assert len(storage) == nbursts - 1
    assert storage[0][0] > KEEP, storage[0]
    # One buffer, never released between bursts (each burst backs up again into the same one).
    assert set(storage) == {storage[0]}, sorted(set(storage))
    s = seen["s"]
    # Once the bursts stop, it is released after all.
    run_until(loop, lambda: _sink_storage(s)[0] == 0, timeout=5.0)
    cli.close()
    s.close()
    lst.stop()
