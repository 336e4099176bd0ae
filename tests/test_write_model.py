"""A randomized model test of the write path (docs/WRITE_PATH.md).

Hypothesis drives random sequences of write / writelines / cork / flush / pause / resume /
buffered_amount / handler-scope writes / Group writes / pipe / unpipe / end / close against a
real loopback peer that reads at random moments (small receive buffer, so backlogs form), on a
plaintext or a TLS socket, under a random high_water_mark, and checks them against a model:
- the peer receives exactly the bytes accepted, in order (a prefix of them after a `close()`
  that dropped a backlog; all of them when only corked bytes were pending). Accepted: what
  `write` took, the messages `Group.write` gave this member (whole: every write has its own
  byte pattern, so a torn message is seen), and what a relay read for it while piped;
- `drain` fires only when one is owed (a short write, a skipped Group message, or a backlog
  seen; never for relayed bytes, also after unpipe()), only with nothing buffered, and always
  once the backlog is gone;
- reading `buffered_amount` changes nothing; `close` fires exactly once.
Bounded: a few dozen examples of a few dozen steps, each step bounded in time.
"""
import socket
import ssl
import time

import pytest

import bunsock

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,  # noqa: E402
                                 precondition, rule)

SIZES = st.sampled_from([1, 7, 100, 1000, 16 * 1024, 64 * 1024, 100_000, 300_000])
KINDS = st.sampled_from(["bytes", "bytearray", "memoryview"])


def pattern(offset, n, salt=0):
    """n bytes of a stream whose every position is distinct enough to catch reordering; salt
    (one per write) tells apart two writes that would start at the same offset."""
    return bytes(((offset + i) * 131 + salt * 71) % 251 for i in range(n))


_TLS = {}


def tls_contexts():
    """(server, client) contexts from one throwaway CA, made once per session."""
    if not _TLS:
        trustme = pytest.importorskip("trustme")
        ca = trustme.CA()
        sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(sctx)
        cctx = ssl.create_default_context()
        ca.configure_trust(cctx)
        _TLS["ctx"] = (sctx, cctx)
    return _TLS["ctx"]


class WriteModel(RuleBasedStateMachine):

    @initialize(hwm=st.sampled_from([None, 0, 4096, 200_000]), tls=st.booleans())
    def start(self, hwm, tls):
        self.loop = bunsock.Loop()
        self.accepted = bytearray()
        self.received = bytearray()
        self.owed = False
        self.drains = 0
        self.closes = []
        self.wrong = []
        self.handler_failures = []
        self.sock = None
        self.ended = self.closed = False
        self.salt = 0
        self.tls = tls
        self.room = bunsock.Group()
        self.src = self.feeder = self.src_srv = None
        self.fed = bytearray()          # what the feeder sent towards `src`
        self.piped_from = None          # src.bytes_read when the pipe started (None: no pipe)
        self.relayed = 0                # of fed[piped_from:], how much is in `accepted`
        model = self

        class H:
            def open(self, s):
                model.sock = s

            def data(self, s, b):
                pass

            def drain(self, s):
                # Recorded, and asserted by the `drains_are_owed` invariant: the test fails
                # at the step where it happened, whatever the loop does with a handler's error.
                if not model.owed:
                    model.wrong.append("drain fired though none was owed")
                if s.buffered_amount:
                    model.wrong.append("drain fired with %d bytes still buffered"
                                       % s.buffered_amount)
                model.owed = False
                model.drains += 1

            def close(self, s, err):
                model.closes.append(err)

            def error(self, s, exc):
                # Anything a handler raised lands here; the invariant below raises it inside the
                # step, so Hypothesis sees the failure and shrinks it.
                model.handler_failures.append(exc)

        sctx, cctx = tls_contexts() if tls else (None, None)
        self.srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=H(), loop=self.loop,
                                  high_water_mark=hwm, tls=sctx)
        self.peer = socket.socket()
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.peer.connect(("127.0.0.1", self.srv.port))
        self.peer.setblocking(False)
        event("tls" if tls else "plaintext")
        if tls:
            self.peer = cctx.wrap_socket(self.peer, server_hostname="127.0.0.1",
                                         do_handshake_on_connect=False)
            self._handshake()
        deadline = time.monotonic() + 5
        while self.sock is None and time.monotonic() < deadline:
            self.loop.run_once(0.01)
        assert self.sock is not None
        self.srv.stop()

    def _handshake(self):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                self.peer.do_handshake()
                return
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                self.loop.run_once(0.001)
        raise AssertionError("TLS handshake did not complete")

    # -- helpers --

    def _data(self, n, kind):
        self.salt += 1
        raw = pattern(len(self.accepted), n, self.salt)
        return {"bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw)}[kind]

    def _took(self, data, r):
        if r < 0:
            return
        self.accepted += bytes(data)[:r]
        if r < len(data):
            self.owed = True            # a short write owes a drain
        if self.sock.buffered_amount > 0:
            self.owed = True            # a backlog seen owes one too

    def _recv(self, n):
        """One read of the peer: bytes, b"" at EOF, None when nothing is there now."""
        try:
            return self.peer.recv(n)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return b""

    def _peer_read(self, limit):
        got = 0
        while got < limit:
            chunk = self._recv(min(65536, limit - got))
            if not chunk:
                break
            self.received += chunk
            got += len(chunk)
        return got

    def _sync_relay(self):
        """Everything src read while piped went into sock's write path, in order."""
        if self.piped_from is not None:
            upto = self.src.bytes_read - self.piped_from
            if upto > self.relayed:
                self.accepted += self.fed[self.piped_from + self.relayed:self.piped_from + upto]
                self.relayed = upto

    def _spin(self, n=3):
        for _ in range(n):
            self.loop.run_once(0)

    # -- rules --

    def writable(self):
        return not (self.ended or self.closed or self.piped_from is not None)

    @precondition(lambda self: self.writable())
    @rule(n=SIZES, kind=KINDS)
    def write(self, n, kind):
        data = self._data(n, kind)
        self._took(data, self.sock.write(data))

    @precondition(lambda self: self.writable())
    @rule(sizes=st.lists(SIZES, min_size=1, max_size=4))
    def writelines(self, sizes):
        parts, off = [], len(self.accepted)
        for n in sizes:
            self.salt += 1
            parts.append(pattern(off, n, self.salt))
            off += n
        r = self.sock.writelines(parts)
        self._took(b"".join(parts), r)

    @precondition(lambda self: self.writable())
    @rule(sizes=st.lists(SIZES, min_size=1, max_size=4))
    def write_in_handler(self, sizes):
        self.loop.call_soon(self._write_all, sizes)     # call_soon callbacks are corked
        self.loop.run_once(0)

    @precondition(lambda self: self.writable())
    @rule(sizes=st.lists(SIZES, min_size=1, max_size=4))
    def cork(self, sizes):
        with self.sock.cork():
            self._write_all(sizes)

    @precondition(lambda self: self.writable())
    @rule(sizes=st.lists(SIZES, min_size=1, max_size=3), in_callback=st.booleans())
    def group_write(self, sizes, in_callback):
        """Group.write: each message whole or not at all; a skipped one owes a drain."""
        def tick():
            for n in sizes:
                data = self._data(n, "bytes")
                took = self.room.write(data)
                if took:
                    self.accepted += data
                else:
                    event("a Group message skipped whole")
                    self.owed = True
            if self.sock.buffered_amount > 0:
                self.owed = True
        if self.sock not in self.room:
            self.room.add(self.sock)
        if in_callback:
            self.loop.call_soon(tick)       # corked: several messages, one send
            self.loop.run_once(0)
        else:
            tick()

    def _start_feeder(self):
        model = self

        def src_open(s):
            model.src = s

        self.src_srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=self.loop, socket={
            "open": src_open, "data": lambda s, b: None})
        self.feeder = socket.create_connection(("127.0.0.1", self.src_srv.port))
        self.feeder.setblocking(False)
        deadline = time.monotonic() + 5
        while self.src is None and time.monotonic() < deadline:
            self.loop.run_once(0.01)
        assert self.src is not None
        self.src_srv.stop()

    @precondition(lambda self: self.writable())
    @rule(splice=st.sampled_from([None, False]), hi=st.sampled_from([None, 8192]),
          n=st.sampled_from([0, 1000, 1 << 20]))
    def pipe(self, splice, hi, n):
        """A relay into sock: what src reads goes into sock's write path, in order."""
        if self.src is None:
            self._start_feeder()
        # Bytes src read before the pipe went to its own `data`: not part of sock's stream.
        self.loop.run_once(0)
        self.src.pipe(self.sock, splice=splice, high_water_mark=hi)
        self.piped_from = self.src.bytes_read
        self.relayed = 0
        self.owed = False           # the relay owns sock's flow control now: no `drain`
        if n:
            self.feed(n)

    @precondition(lambda self: self.piped_from is not None)
    @rule(n=st.sampled_from([1, 1000, 100_000, 1 << 20]))
    def feed(self, n):
        self.salt += 1
        data = pattern(len(self.fed), n, self.salt)
        try:
            sent = self.feeder.send(data)
        except BlockingIOError:
            sent = 0
        self.fed += data[:sent]
        self._spin(10)

    @precondition(lambda self: self.piped_from is not None)
    @rule()
    def unpipe(self):
        assert self.src.unpipe() is self.sock
        self._sync_relay()
        event("unpipe with relayed bytes still buffered" if self.sock.buffered_amount
              else "unpipe")
        self.piped_from = None          # later reads of src go to its `data`

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

    @precondition(lambda self: self.writable())
    @rule()
    def drain_everything(self):
        """The peer reads until the backlog is gone: an owed drain must then have fired."""
        deadline = time.monotonic() + 10
        while (self.sock.buffered_amount or self.owed) and time.monotonic() < deadline:
            self._peer_read(1 << 20)
            self.loop.run_once(0.001)
        assert not self.owed, "the backlog is gone but the owed drain never fired"

    @precondition(lambda self: self.writable())
    @rule()
    def end(self):
        self.sock.end()
        self.ended = True

    @precondition(lambda self: not self.closed and self.piped_from is None)
    @rule()
    def close(self):
        backlog = self.sock.buffered_amount
        self.sock.close()
        self.closed = True
        self.dropped_backlog = backlog > 0

    @invariant()
    def drains_are_owed(self):
        assert not getattr(self, "wrong", None), self.wrong

    @invariant()
    def handlers_did_not_fail(self):
        if getattr(self, "handler_failures", None):
            raise self.handler_failures[0]

    @invariant()
    def received_is_a_prefix_of_accepted(self):
        if getattr(self, "sock", None) is None:
            return
        self._sync_relay()
        n = len(self.received)
        assert self.received == self.accepted[:n], "bytes arrived that were not accepted, or " \
                                                   "out of order"

    def teardown(self):
        if getattr(self, "sock", None) is None:
            if getattr(self, "loop", None) is not None:
                self.loop.close()
            return
        try:
            if self.piped_from is not None:
                self.unpipe()
            if not self.closed and not self.ended:
                self.sock.end()
            deadline = time.monotonic() + 20
            eof = False
            while not eof and time.monotonic() < deadline:
                self.loop.run_once(0.001)
                try:
                    chunk = self._recv(1 << 20)
                except ConnectionResetError:
                    break
                if chunk is None:
                    continue
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
            assert not self.wrong, self.wrong
        finally:
            self.peer.close()
            if not self.sock.ready_state == "closed":
                self.sock.close()
            if self.feeder is not None:
                self.feeder.close()
                self.src.close()
            self.loop.run_once(0)
            self.loop.close()


TestWriteModel = WriteModel.TestCase
TestWriteModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                   suppress_health_check=list(HealthCheck))
