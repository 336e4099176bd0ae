"""A randomized model test of the write path (docs/WRITE_PATH.md).

Hypothesis drives random sequences of write / writelines / cork / flush / pause / resume /
buffered_amount / handler-scope writes / end / close against a real loopback peer that reads at
random moments (small receive buffer, so backlogs form), and checks them against a simple model:
- the peer receives exactly the bytes `write` accepted, in order (a prefix of them after a
  `close()` that dropped a backlog; all of them when only corked bytes were pending);
- `drain` fires only when one is owed (a short write, or a backlog seen), only with nothing
  buffered, and always once the backlog is gone;
- reading `buffered_amount` changes nothing; `close` fires exactly once.
Bounded: a few dozen examples of a few dozen steps, each step bounded in time.
"""
import socket
import time

import pytest

import bunsock

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,  # noqa: E402
                                 precondition, rule)

SIZES = st.sampled_from([1, 7, 100, 1000, 16 * 1024, 64 * 1024, 100_000, 300_000])
KINDS = st.sampled_from(["bytes", "bytearray", "memoryview"])


def pattern(offset, n):
    """n bytes of a stream whose every position is distinct enough to catch reordering."""
    return bytes((offset + i) * 131 % 251 for i in range(n))


class WriteModel(RuleBasedStateMachine):

    @initialize(hwm=st.sampled_from([None, 0, 4096, 200_000]))
    def start(self, hwm):
        self.loop = bunsock.Loop()
        self.accepted = bytearray()
        self.received = bytearray()
        self.owed = False
        self.drains = 0
        self.closes = []
        self.handler_failures = []
        self.sock = None
        self.ended = self.closed = False
        model = self

        class H:
            def open(self, s):
                model.sock = s

            def data(self, s, b):
                pass

            def drain(self, s):
                assert model.owed, "drain fired though none was owed"
                assert s.buffered_amount == 0, "drain fired with bytes still buffered"
                model.owed = False
                model.drains += 1

            def close(self, s, err):
                model.closes.append(err)

            def error(self, s, exc):
                # A failed assert in `drain` lands here; the invariant below raises it inside the
                # step, so Hypothesis sees the failure and shrinks it.
                model.handler_failures.append(exc)

        self.srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=H(), loop=self.loop,
                                  high_water_mark=hwm)
        self.peer = socket.socket()
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.peer.connect(("127.0.0.1", self.srv.port))
        self.peer.setblocking(False)
        deadline = time.monotonic() + 5
        while self.sock is None and time.monotonic() < deadline:
            self.loop.run_once(0.01)
        assert self.sock is not None
        self.srv.stop()

    # -- helpers --

    def _data(self, n, kind):
        raw = pattern(len(self.accepted), n)
        return {"bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw)}[kind]

    def _took(self, data, r):
        if r < 0:
            return
        self.accepted += bytes(data)[:r]
        if r < len(data):
            self.owed = True            # a short write owes a drain
        if self.sock.buffered_amount > 0:
            self.owed = True            # a backlog seen owes one too

    def _peer_read(self, limit):
        got = 0
        while got < limit:
            try:
                chunk = self.peer.recv(min(65536, limit - got))
            except BlockingIOError:
                break
            if not chunk:
                break
            self.received += chunk
            got += len(chunk)
        return got

    def _spin(self, n=3):
        for _ in range(n):
            self.loop.run_once(0)

    # -- rules --

    @precondition(lambda self: not (self.ended or self.closed))
    @rule(n=SIZES, kind=KINDS)
    def write(self, n, kind):
        data = self._data(n, kind)
        self._took(data, self.sock.write(data))

    @precondition(lambda self: not (self.ended or self.closed))
    @rule(sizes=st.lists(SIZES, min_size=1, max_size=4))
    def writelines(self, sizes):
        parts, off = [], len(self.accepted)
        for n in sizes:
            parts.append(pattern(off, n))
            off += n
        r = self.sock.writelines(parts)
        self._took(b"".join(parts), r)

    @precondition(lambda self: not (self.ended or self.closed))
    @rule(sizes=st.lists(SIZES, min_size=1, max_size=4))
    def write_in_handler(self, sizes):
        self.loop.call_soon(self._write_all, sizes)     # call_soon callbacks are corked
        self.loop.run_once(0)

    @precondition(lambda self: not (self.ended or self.closed))
    @rule(sizes=st.lists(SIZES, min_size=1, max_size=4))
    def cork(self, sizes):
        with self.sock.cork():
            self._write_all(sizes)

    def _write_all(self, sizes):
        for n in sizes:
            data = self._data(n, "bytes")
            r = self.sock.write(data)
            self._took(data, r)
            if r < len(data):
                break

    @precondition(lambda self: not self.closed)
    @rule()
    def flush(self):
        self.sock.flush()

    @precondition(lambda self: not self.closed)
    @rule(pause=st.booleans())
    def pause_resume(self, pause):
        (self.sock.pause if pause else self.sock.resume)()

    @precondition(lambda self: not self.closed)
    @rule()
    def buffered_amount_has_no_side_effect(self):
        a = self.sock.buffered_amount
        b = self.sock.buffered_amount
        assert a == b and a >= 0

    @rule(limit=st.sampled_from([1, 1000, 50_000, 1 << 20]))
    def peer_reads(self, limit):
        self._peer_read(limit)

    @rule()
    def spin(self):
        self._spin()

    @precondition(lambda self: not (self.ended or self.closed))
    @rule()
    def drain_everything(self):
        """The peer reads until the backlog is gone: an owed drain must then have fired."""
        deadline = time.monotonic() + 10
        while (self.sock.buffered_amount or self.owed) and time.monotonic() < deadline:
            self._peer_read(1 << 20)
            self.loop.run_once(0.001)
        assert not self.owed, "the backlog is gone but the owed drain never fired"

    @precondition(lambda self: not (self.ended or self.closed))
    @rule()
    def end(self):
        self.sock.end()
        self.ended = True

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self):
        backlog = self.sock.buffered_amount
        self.sock.close()
        self.closed = True
        self.dropped_backlog = backlog > 0

    @invariant()
    def handlers_did_not_fail(self):
        if getattr(self, "handler_failures", None):
            raise self.handler_failures[0]

    @invariant()
    def received_is_a_prefix_of_accepted(self):
        if getattr(self, "sock", None) is None:
            return
        n = len(self.received)
        assert self.received == self.accepted[:n], "bytes arrived that were not accepted, or " \
                                                   "out of order"

    def teardown(self):
        if getattr(self, "sock", None) is None:
            return
        try:
            if not self.closed and not self.ended:
                self.sock.end()
            deadline = time.monotonic() + 20
            eof = False
            while not eof and time.monotonic() < deadline:
                self.loop.run_once(0.001)
                try:
                    chunk = self.peer.recv(1 << 20)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    break
                if not chunk:
                    eof = True
                self.received += chunk
            if self.closed and getattr(self, "dropped_backlog", False):
                assert self.received == self.accepted[:len(self.received)]
            else:
                assert eof, "no FIN after end()/close()"
                assert len(self.received) == len(self.accepted)
                assert self.received == self.accepted
            self.peer.close()
            self.sock.resume()          # a paused socket would never read the peer's FIN
            deadline = time.monotonic() + 5
            while not self.closes and time.monotonic() < deadline:
                self.loop.run_once(0.005)
            assert len(self.closes) == 1, self.closes
        finally:
            self.peer.close()
            if not self.sock.ready_state == "closed":
                self.sock.close()
            self.loop.close()


TestWriteModel = WriteModel.TestCase
TestWriteModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                                   suppress_health_check=list(HealthCheck))
