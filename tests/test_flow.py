"""Flow control: end()/half-close, peer FIN, shutdown(), pause()/resume(), corking,
high_water_mark, zero-copy memoryview delivery, and a bounded-memory proxy.

Peers are plain blocking sockets driven from a thread (so what they see is what a foreign peer
would see), or bunsock sockets on the same loop. A "slow reader" has a small SO_RCVBUF and starts
reading late, so the server's writes must back up into its sink.
"""
import hashlib
import os
import socket
import threading
import time

import pytest

import bunsock
from conftest import run, run_until, shrink_sndbuf

MiB = 1024 * 1024
HOST = "127.0.0.1"


def payload(n, seed=0):
    """n bytes that catch loss, duplication and reordering (a counter pattern, cheap to make)."""
    block = b"".join(i.to_bytes(4, "big") for i in range(seed * 100003, seed * 100003 + 16384))
    reps = n // len(block) + 1
    # Rotating each repetition makes every 64 KiB block distinct.
    out = b"".join(block[r % 64 * 4:] + block[:r % 64 * 4] for r in range(reps))
    return out[:n]


class Peer(threading.Thread):
    """A blocking client in a thread: connects, then runs `script(sock)`; exceptions re-raised in
    join()."""

    def __init__(self, port, script, rcvbuf=None):
        super().__init__(daemon=True)
        self.port, self.script, self.rcvbuf = port, script, rcvbuf
        self.exc = None
        self.result = None

    def run(self):
        try:
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if self.rcvbuf:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            c.settimeout(30)
            c.connect((HOST, self.port))
            with c:
                self.result = self.script(c)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            self.exc = e

    def join_checked(self, timeout=30):
        self.join(timeout)
        assert not self.is_alive(), "peer thread still running"
        if self.exc is not None:
            raise self.exc
        return self.result


def read_to_eof(c, chunk=65536, delay=0.0, every=64):
    """Read until EOF; sleep `delay` every `every` reads (a slow consumer)."""
    parts = []
    i = 0
    while True:
        b = c.recv(chunk)
        if not b:
            return b"".join(parts)
        parts.append(b)
        i += 1
        if delay and i % every == 0:
            time.sleep(delay)


def wait_for(predicate, timeout=10.0):
    """In a peer thread: poll until `predicate()` (something the loop thread records) is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "peer waited %.0f s in vain" % timeout
        time.sleep(0.002)


def sample_every(loop, interval, fn):
    t = loop.call_every(interval, fn)
    t.unref()
    return t


# ---------------------------------------------------------------------------------------------
# end(): last write, FIN after the sink flushed, still readable until the peer's FIN


@pytest.mark.parametrize("size", [1, 32 * MiB], ids=["1B", "32MiB"])
def test_end_delivers_all_then_eof_and_stays_readable(loop, size):
    data = payload(size)
    events = []
    states = []
    server_sock = []

    class H:
        def open(self, sock):
            server_sock.append(sock)
            sock.end(data)
            states.append(("after end", sock.ready_state, sock.buffered_amount))

        def data(self, sock, buf):
            events.append(("data", bytes(buf)))

        def end(self, sock):
            events.append(("end", sock.ready_state))

        def close(self, sock, err):
            events.append(("close", err))
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)

    def sample():
        if server_sock and server_sock[0].ready_state != "closed":
            states.append(("sample", server_sock[0].ready_state, server_sock[0].buffered_amount))

    sample_every(loop, 0.01, sample)

    def script(c):
        time.sleep(0.3)                       # stalled at first: the server's sink fills
        got = read_to_eof(c, delay=0.001)
        c.sendall(b"bye")                     # the server ended, but still reads
        wait_for(lambda: ("data", b"bye") in events)     # then the FIN, on its own
        c.shutdown(socket.SHUT_WR)
        c.settimeout(5)
        return got, c.recv(10)

    peer = Peer(srv.port, script, rcvbuf=16384)
    peer.start()
    run(loop, 40)
    got, after = peer.join_checked()

    assert len(got) == size
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert after == b""
    assert events == [("data", b"bye"), ("end", "closing"), ("close", None)]
    assert states[0][:2] == ("after end", "closing")
    # Between end() and the close, the socket reports "closing" and nothing else.
    assert {s[1] for s in states} == {"closing"}
    if size > 1:
        # The slow reader really forced the tail into the sink, and end() did not drop it.
        assert states[0][2] > MiB
        assert any(s[0] == "sample" for s in states)
    assert server_sock[0].ready_state == "closed"
    assert server_sock[0].bytes_written == size


def test_end_inside_handler_after_corked_writes_keeps_order(loop):
    """end() inside a handler must send the FIN after the corked bytes, not before."""

    class H:
        def data(self, sock, buf):
            sock.write(b"a")
            sock.write(b"b")
            sock.end(b"c")
            assert sock.write(b"d") == -1        # nothing after end()

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)

    def script(c):
        c.sendall(b"go")
        got = read_to_eof(c)
        c.shutdown(socket.SHUT_WR)
        return got

    peer = Peer(srv.port, script)
    peer.start()
    run(loop, 10)
    assert peer.join_checked() == b"abc"


def test_end_while_connecting_sends_fin(loop):
    """end() before the connection completed: the FIN still goes out once connected."""
    got = []

    class Server:
        def data(self, sock, buf):
            got.append(bytes(buf))

        def end(self, sock):
            got.append(b"<EOF>")

        def close(self, sock, err):
            srv.stop()

    class Client:
        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            got.append(("client close", err))

    srv = bunsock.listen(hostname=HOST, port=0, socket=Server(), loop=loop)
    c1 = bunsock.connect(hostname=HOST, port=srv.port, socket=Client(), loop=loop)
    assert c1.ready_state == "connecting"
    c1.end()
    run(loop, 5)
    assert got[0] == b"<EOF>"
    assert ("client close", None) in got


# ---------------------------------------------------------------------------------------------
# The peer's FIN


def test_peer_fin_finishes_pending_writes_then_closes(loop):
    tail = payload(4 * MiB, seed=1)
    events = []

    class H:
        def data(self, sock, buf):
            events.append(("data", bytes(buf)))

        def end(self, sock):
            events.append(("end", sock.ready_state))
            shrink_sndbuf(sock)                    # so the kernel refuses most of the tail
            assert sock.write(tail) == len(tail)   # more than the slow peer's kernel takes
            events.append(("buffered", sock.buffered_amount > 0))

        def close(self, sock, err):
            events.append(("close", err, sock.bytes_written))
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)

    def script(c):
        c.sendall(b"hello")
        c.shutdown(socket.SHUT_WR)
        time.sleep(0.3)
        return read_to_eof(c, delay=0.001)

    peer = Peer(srv.port, script, rcvbuf=16384)
    peer.start()
    run(loop, 20)
    got = peer.join_checked()
    assert got == tail
    # end() was called once the corked writes flushed, so `end` sees "open"; the write after
    # the peer's FIN was accepted whole and delivered before our FIN.
    assert events == [("data", b"hello"), ("end", "open"), ("buffered", True),
                      ("close", None, len(tail))]


def test_peer_fin_with_allow_half_open_stays_writable(loop):
    events = []

    class H:
        def data(self, sock, buf):
            events.append(("data", bytes(buf)))

        def end(self, sock):
            events.append(("end", sock.ready_state))
            loop.call_later(0.2, later, sock)

        def close(self, sock, err):
            events.append(("close", err))
            srv.stop()

    def later(sock):
        events.append(("later", sock.ready_state))
        assert sock.write(b"written ") == 8
        sock.end(b"after the peer's FIN")
        events.append(("ended", sock.ready_state))

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop, allow_half_open=True)

    def script(c):
        c.sendall(b"hi")
        c.shutdown(socket.SHUT_WR)
        return read_to_eof(c)

    peer = Peer(srv.port, script)
    peer.start()
    run(loop, 10)
    assert peer.join_checked() == b"written after the peer's FIN"
    assert events == [("data", b"hi"), ("end", "open"), ("later", "open"), ("ended", "closing"),
                      ("close", None)]


def test_client_peer_fin_without_half_open_closes_both(loop):
    """Both ends bunsock: the server ends, the client (default allow_half_open=False) answers
    with its own FIN and both close cleanly, each exactly once."""
    closes = []

    class Server:
        def open(self, sock):
            sock.end(b"bye")

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            closes.append(("server", err))
            srv.stop()

    class Client:
        def data(self, sock, buf):
            closes.append(("data", bytes(buf)))

        def end(self, sock):
            closes.append(("client end", sock.ready_state))

        def close(self, sock, err):
            closes.append(("client", err))

    srv = bunsock.listen(hostname=HOST, port=0, socket=Server(), loop=loop)
    bunsock.connect(hostname=HOST, port=srv.port, socket=Client(), loop=loop)
    run(loop, 5)
    assert closes[:2] == [("data", b"bye"), ("client end", "open")]
    assert sorted(closes[2:], key=str) == [("client", None), ("server", None)]


# ---------------------------------------------------------------------------------------------
# shutdown()


def test_shutdown_write_now_drops_sink_keeps_reading(loop):
    big = payload(8 * MiB, seed=2)
    events = []

    class H:
        def open(self, sock):
            sock.write(big)
            sock.flush()  # inside a handler: push the cork now so the sink really holds a tail
            events.append(("buffered before", sock.buffered_amount > 0))
            sock.shutdown()
            events.append(("after", sock.ready_state, sock.buffered_amount, sock.write(b"x")))

        def data(self, sock, buf):
            events.append(("data", bytes(buf)))

        def drain(self, sock):
            events.append(("drain",))

        def end(self, sock):
            events.append(("end",))

        def close(self, sock, err):
            events.append(("close", err))
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)

    def script(c):
        time.sleep(0.2)
        got = read_to_eof(c)
        c.sendall(b"ping")
        wait_for(lambda: ("data", b"ping") in events)    # read before our FIN follows
        return got

    peer = Peer(srv.port, script, rcvbuf=16384)
    peer.start()
    run(loop, 10)
    got = peer.join_checked()
    assert 0 < len(got) < len(big)
    assert got == big[:len(got)]
    assert events == [("buffered before", True), ("after", "closing", 0, -1), ("data", b"ping"),
                      ("end",), ("close", None)]


def test_shutdown_read_keeps_write_side(loop):
    """shutdown(read=True) stops reading; the write side stays open until end()."""
    events = []

    class H:
        def open(self, sock):
            sock.shutdown(read=True)
            loop.call_later(0.3, later, sock)

        def data(self, sock, buf):
            events.append(("data", bytes(buf)))

        def end(self, sock):
            events.append(("end",))

        def close(self, sock, err):
            events.append(("close", err))
            srv.stop()

    def later(sock):
        events.append(("later", sock.ready_state))
        assert sock.write(b"still writable") == 14
        sock.end()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)

    def script(c):
        # Nothing is sent to the server: Linux queues bytes that arrive after SHUT_RD, and a close
        # with unread bytes turns into a RST that could destroy what the server wrote.
        return read_to_eof(c)

    peer = Peer(srv.port, script)
    peer.start()
    run(loop, 10)
    assert peer.join_checked() == b"still writable"
    # No `end`: the peer never sent a FIN; our own SHUT_RD is not one.
    assert events == [("later", "open"), ("close", None)]


# ---------------------------------------------------------------------------------------------
# pause() / resume()


def test_pause_during_burst_then_resume_delivers_all_then_end(loop):
    burst = payload(6 * MiB, seed=3)
    chunks = []
    log = []
    paused_at = []

    class H:
        def data(self, sock, buf):
            if paused_at and sock.paused:
                log.append("data while paused")
            chunks.append(bytes(buf))
            if len(chunks) == 1:
                sock.pause()
                paused_at.append((time.monotonic(), loop.stats()["recvs"]))
                loop.call_later(0.5, resume, sock)

        def end(self, sock):
            log.append(("end", sum(map(len, chunks))))

        def close(self, sock, err):
            log.append(("close", err))
            srv.stop()

    def resume(sock):
        # While paused, the loop did not even try to read: read interest was removed.
        log.append(("recvs while paused", loop.stats()["recvs"] - paused_at[0][1]))
        log.append(("chunks while paused", len(chunks)))
        sock.resume()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)

    def script(c):
        c.sendall(burst)               # sent whole into kernel buffers while the server pauses
        c.shutdown(socket.SHUT_WR)     # the FIN arrives while paused
        return c.recv(1)

    peer = Peer(srv.port, script)
    peer.start()
    run(loop, 20)
    assert peer.join_checked() == b""
    got = b"".join(chunks)
    assert got == burst
    assert log == [("recvs while paused", 0), ("chunks while paused", 1),
                   ("end", len(burst)), ("close", None)]


def test_pause_inside_handler_stops_the_read_loop(loop):
    """A pause() in `data` takes effect at once: the rest of the burst waits for resume()."""
    chunks = []

    class H:
        def data(self, sock, buf):
            chunks.append(len(buf))
            sock.pause()
            assert sock.paused
            loop.call_later(0.01, sock.resume)

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)
    blob = b"z" * (3 * MiB)

    def script(c):
        c.sendall(blob)
        c.shutdown(socket.SHUT_WR)
        return c.recv(1)

    peer = Peer(srv.port, script)
    peer.start()
    run(loop, 20)
    peer.join_checked()
    assert sum(chunks) == len(blob)
    # One data call per resume: far more calls than an unpaused read loop would make.
    assert len(chunks) >= len(blob) // (256 * 1024)


def test_pause_before_connected_is_honoured(loop):
    got = []

    class Server:
        def open(self, sock):
            sock.write(b"hello")

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop()

    class Client:
        def open(self, sock):
            got.append(("open", sock.paused))
            loop.call_later(0.2, resume, sock)

        def data(self, sock, buf):
            got.append(("data", bytes(buf), sock.paused))
            sock.close()

    def resume(sock):
        got.append("resume")
        sock.resume()

    srv = bunsock.listen(hostname=HOST, port=0, socket=Server(), loop=loop)
    c = bunsock.connect(hostname=HOST, port=srv.port, socket=Client(), loop=loop)
    c.pause()
    run(loop, 5)
    srv.stop(True)
    assert got == [("open", True), "resume", ("data", b"hello", False)]


# ---------------------------------------------------------------------------------------------
# Corking


def test_corked_handler_ten_writes_one_syscall(loop):
    pieces = [("piece %d;" % i).encode() * (i + 1) for i in range(10)]
    expected = b"".join(pieces)
    rounds = 20
    srv_sock = []

    class H:
        def open(self, sock):
            srv_sock.append(sock)

        def data(self, sock, buf):
            for p in pieces:                # 10 separate writes...
                sock.write(p)

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)
    before = loop.stats()["sends"]

    def script(c):
        for _ in range(rounds):
            c.sendall(b"?")
            got = b""
            while len(got) < len(expected):
                got += c.recv(65536)
            assert got == expected
        c.shutdown(socket.SHUT_WR)
        return c.recv(1)

    peer = Peer(srv.port, script)
    peer.start()
    run(loop, 10)
    peer.join_checked()
    # ...one send per response (the FIN is a shutdown(), not a send).
    assert loop.stats()["sends"] - before == rounds

    # Outside any handler, writes go out at once: one syscall each...
    held = []
    s = bunsock.listen(hostname=HOST, port=0, loop=loop,
                       socket={"open": lambda sock: held.append(sock),
                               "data": lambda *a: None})
    cl = Peer(s.port, read_to_eof)
    cl.start()
    run_until(loop, lambda: held, what="the reader connected")
    sock = held[0]
    n0 = loop.stats()["sends"]
    for p in pieces:
        assert sock.write(p) == len(p)
    n1 = loop.stats()["sends"]
    # ...and `with sock.cork()` coalesces them explicitly.
    with sock.cork():
        for p in pieces:
            assert sock.write(p) == len(p)
        assert loop.stats()["sends"] == n1
    n2 = loop.stats()["sends"]
    sock.end()
    s.stop()
    run(loop, 5)
    assert cl.join_checked() == expected * 2
    assert n1 - n0 == 10
    assert n2 - n1 == 1


def test_write_then_close_in_handler_still_sends(loop):
    """Auto-corking must not change what a handler's write(); close() sends: without the cork
    the bytes would have reached the kernel before the close."""

    class H:
        def data(self, sock, buf):
            sock.write(b"HTTP/1.0 200 OK\r\n\r\n")
            sock.write(b"body")
            sock.close()

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)

    def script(c):
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return read_to_eof(c)

    peer = Peer(srv.port, script)
    peer.start()
    run(loop, 10)
    assert peer.join_checked() == b"HTTP/1.0 200 OK\r\n\r\nbody"


def test_cork_in_drain_and_writelines(loop):
    """Writes inside `drain` are corked too, and writelines() is one gather send."""
    sends = []
    big = b"q" * (4 * MiB)

    class H:
        def open(self, sock):
            sock.write(big)

        def drain(self, sock):
            n = loop.stats()["sends"]
            sock.write(b"x")
            sock.write(b"y")
            sock.write(b"z")
            sends.append(loop.stats()["sends"] - n)     # nothing sent yet: corked
            sock.end()

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)

    def script(c):
        time.sleep(0.2)
        return read_to_eof(c)

    peer = Peer(srv.port, script, rcvbuf=16384)
    peer.start()
    run(loop, 10)
    assert peer.join_checked() == big + b"xyz"
    assert sends == [0]

    # writelines outside a handler: one sendmsg for three buffers.
    s = bunsock.listen(hostname=HOST, port=0, socket={"data": lambda *a: None,
                                                      "open": lambda sock: held.append(sock)},
                       loop=loop)
    held = []
    cl = Peer(s.port, lambda c: read_to_eof(c))
    cl.start()
    run_until(loop, lambda: held, what="the reader connected")
    n0 = loop.stats()["sends"]
    assert held[0].writelines([b"one ", bytearray(b"two "), memoryview(b"three")]) == 13
    assert loop.stats()["sends"] - n0 == 1
    held[0].end()
    s.stop()
    run(loop, 5)
    assert cl.join_checked() == b"one two three"


# ---------------------------------------------------------------------------------------------
# high_water_mark


@pytest.mark.parametrize("hwm", [0, 64 * 1024, None], ids=["0", "64KiB", "None"])
def test_high_water_mark_against_stalled_reader(loop, hwm):
    total = payload(6 * MiB, seed=4)
    log = {"returns": [], "max_buffered": 0, "drains": 0, "short": 0}

    def pump(sock):
        while log.setdefault("off", 0) < len(total):
            off = log["off"]
            want = min(len(total) - off, 1 * MiB)
            n = sock.write(total, off, want)
            assert 0 <= n <= want
            log["returns"].append((want, n))
            log["off"] = off + n
            log["max_buffered"] = max(log["max_buffered"], sock.buffered_amount)
            if n < want:
                log["short"] += 1
                return                       # the caller keeps the rest; `drain` says when
        sock.end()

    class H:
        def open(self, sock):
            pump(sock)

        def drain(self, sock):
            log["drains"] += 1
            pump(sock)

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            log["close"] = err
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop, high_water_mark=hwm)

    def script(c):
        time.sleep(0.4)                      # stalled: the kernel buffers fill
        return read_to_eof(c, delay=0.001)

    peer = Peer(srv.port, script, rcvbuf=16384)
    peer.start()
    run(loop, 30)
    got = peer.join_checked()
    assert hashlib.sha256(got).digest() == hashlib.sha256(total).digest()
    assert log["close"] is None
    if hwm is None:
        # Unbounded: every write is accepted whole; one drain when the backlog has flushed.
        assert all(n == want for want, n in log["returns"])
        assert log["short"] == 0
        assert log["max_buffered"] > 2 * MiB
        assert log["drains"] == 1
    else:
        assert log["short"] >= 1
        assert log["drains"] >= 1
        assert log["max_buffered"] <= hwm
        if hwm == 0:
            # Bun's behaviour: nothing is ever buffered, a full kernel returns 0 or a short count.
            assert log["max_buffered"] == 0
        # A short write is followed by exactly one drain before the next write is accepted.
        assert log["drains"] == log["short"]


def test_high_water_mark_zero_write_returns_zero_when_kernel_full(loop):
    res = {}

    class H:
        def open(self, sock):
            blob = b"k" * (8 * MiB)
            first = sock.write(blob)
            second = sock.write(blob)
            res.update(first=first, second=second, buffered=sock.buffered_amount)
            sock.close()

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop, high_water_mark=0)
    peer = Peer(srv.port, lambda c: (time.sleep(0.3), c.recv(1)), rcvbuf=16384)
    peer.start()
    run(loop, 10)
    peer.join_checked()
    assert 0 < res["first"] < 8 * MiB
    assert res["second"] == 0
    assert res["buffered"] == 0


# ---------------------------------------------------------------------------------------------
# binary_type="memoryview"


def test_memoryview_delivery_is_zero_copy_and_released(loop):
    kept = []
    echoed = []
    ended = []
    sent = [payload(300_000, seed=s) for s in range(5)]

    class H:
        def data(self, sock, buf):
            assert type(buf) is memoryview and buf.readonly
            kept.append(buf)
            echoed.append(len(buf))
            sock.write(buf)               # corked: must be copied, the buffer is reused

        def end(self, sock):
            with pytest.raises(ValueError):
                bytes(kept[0])
            with pytest.raises(ValueError):
                len(kept[-1])
            ended.append(True)

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop, binary_type="memoryview")

    def script(c):
        got = b""
        for blob in sent:
            c.sendall(blob)
            while len(got) < sum(map(len, sent[:sent.index(blob) + 1])):
                got += c.recv(1 << 20)
        c.shutdown(socket.SHUT_WR)
        return got + read_to_eof(c)

    peer = Peer(srv.port, script)
    peer.start()
    run(loop, 10)
    assert peer.join_checked() == b"".join(sent)
    assert len(kept) >= 5 and sum(echoed) == sum(map(len, sent))
    assert ended == [True]            # the released-view checks in `end` ran


# ---------------------------------------------------------------------------------------------
# A proxy: pause/resume tied to drain keeps memory bounded between a fast sender and a slow
# receiver.


def test_proxy_bounded_memory_no_loss(loop):
    size = 64 * MiB
    pause_above = 1 * MiB
    stats = {"max_sink": 0, "pauses": 0, "resumes": 0, "forwarded": 0}

    # The slow receiver: a blocking socket server in a thread, small receive buffer.
    backend = socket.socket()
    backend.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    backend.bind((HOST, 0))
    backend.listen(1)
    result = {}

    def slow_receiver():
        try:
            conn, _ = backend.accept()
            with conn:
                conn.settimeout(30)
                h = hashlib.sha256()
                n = 0
                i = 0
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    h.update(b)
                    n += len(b)
                    i += 1
                    if i % 16 == 0:
                        time.sleep(0.002)
                result["n"], result["hash"] = n, h.digest()
        except BaseException as e:  # noqa: BLE001
            result["exc"] = e

    recv_thread = threading.Thread(target=slow_receiver, daemon=True)
    recv_thread.start()

    class Downstream:                     # proxy -> slow receiver
        def open(self, sock):
            up = sock.data
            up.resume()

        def data(self, sock, buf):
            pass

        def drain(self, sock):
            up = sock.data
            if up.paused:
                stats["resumes"] += 1
                up.resume()

        def close(self, sock, err):
            stats["down_close"] = err
            if sock.data.ready_state != "closed":
                sock.data.close()

    class Upstream:                       # fast sender -> proxy
        def open(self, sock):
            sock.pause()                  # until the downstream connection is open
            sock.data = bunsock.connect(hostname=HOST, port=backend.getsockname()[1],
                                        socket=Downstream(), data=sock, loop=loop)

        def data(self, sock, buf):
            down = sock.data
            n = down.write(buf)
            assert n == len(buf)
            stats["forwarded"] += n
            b = down.buffered_amount
            if b > stats["max_sink"]:
                stats["max_sink"] = b
            if b > pause_above and not sock.paused:
                stats["pauses"] += 1
                sock.pause()

        def end(self, sock):
            sock.data.end()

        def close(self, sock, err):
            stats["up_close"] = err
            proxy.stop()

    proxy = bunsock.listen(hostname=HOST, port=0, socket=Upstream(), loop=loop,
                           allow_half_open=True)

    block = os.urandom(MiB)
    want = hashlib.sha256()
    for i in range(size // MiB):
        want.update(block[i:] + block[:i])

    def fast_sender(c):
        for i in range(size // MiB):
            c.sendall(block[i:] + block[:i])
        c.shutdown(socket.SHUT_WR)
        return c.recv(1)

    sender = Peer(proxy.port, fast_sender)
    sender.start()
    run(loop, 60)
    assert sender.join_checked() == b""
    recv_thread.join(30)
    backend.close()
    assert "exc" not in result, result.get("exc")
    assert result["n"] == size
    assert result["hash"] == want.digest()
    assert stats["forwarded"] == size
    assert stats["pauses"] >= 3 and stats["resumes"] >= 3, stats
    # Bounded memory: the mark plus at most one read's worth (the loop's 256 KiB buffer).
    assert stats["max_sink"] <= pause_above + 256 * 1024, stats
    assert stats["up_close"] is None and stats["down_close"] is None


def test_buffered_amount_above_zero_always_gets_a_drain(loop):
    """buffered_amount counts what the kernel refused; whenever a handler sees it above 0, a
    `drain` is owed and comes once the backlog is gone (a proxy that pauses its other side on
    it is always resumed), and reading it changes nothing else."""
    events = []
    chunk = b"y" * (256 * 1024)
    written = []

    class H:
        def data(self, sock, buf):
            for _ in range(256):            # bounded: 64 MiB
                written.append(sock.write(chunk))
                if sock.buffered_amount > 0:
                    break
            events.append(("buffered", sock.buffered_amount > 0))

        def drain(self, sock):
            events.append(("drain", sock.buffered_amount))
            sock.end()

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)

    def script(c):
        c.sendall(b"x")
        time.sleep(0.3)                     # the server's writes back up meanwhile
        return len(read_to_eof(c))

    peer = Peer(srv.port, script, rcvbuf=64 * 1024)
    peer.start()
    run(loop, 20)
    assert peer.join_checked() == sum(written)
    assert events == [("buffered", True), ("drain", 0)], events


def test_reading_buffered_amount_does_not_change_what_close_sends(loop):
    """write(reply); buffered_amount; close() in a handler sends the reply, exactly as
    write(reply); close() does: reading a property has no side effect."""

    class H:
        def data(self, sock, buf):
            sock.write(b"reply:" + bytes(buf))
            assert sock.buffered_amount == 0     # corked, not refused by the kernel
            sock.close()

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname=HOST, port=0, socket=H(), loop=loop)

    def script(c):
        c.sendall(b"q")
        return read_to_eof(c)

    peer = Peer(srv.port, script)
    peer.start()
    run(loop, 10)
    assert peer.join_checked() == b"reply:q"


# -- end(data) returns the write count; water marks settable after creation (issue 18) --

def test_end_returns_what_write_would(loop, no_leaks):
    got = []
    srv = bunsock.listen(hostname=HOST, port=0, loop=loop, allow_half_open=True,
                         socket={"data": lambda s, b: got.append(b),
                                 "end": lambda s: got.append(None)})
    c = bunsock.connect(hostname=HOST, port=srv.port, loop=loop, high_water_mark=10,
                        socket={"data": lambda s, b: None})
    # While connecting the bytes wait in the socket's buffer, capped by the mark: the tail of
    # this last write is cut, and end() says so instead of returning None.
    assert c.end(b"x" * 100) == 10
    assert c.end(b"more") == -1            # already ending
    assert c.end() == -1
    run_until(loop, lambda: None in got)
    assert b"".join(g for g in got if g) == b"x" * 10
    c2 = bunsock.connect(hostname=HOST, port=srv.port, loop=loop,
                         socket={"data": lambda s, b: None})
    assert c2.end() == 0
    c.close()
    c2.close()
    srv.stop(True)
    run(loop)


def test_water_marks_can_be_changed_after_creation(loop, no_leaks):
    accepted = []
    srv = bunsock.listen(hostname=HOST, port=0, loop=loop, high_water_mark=100,
                         socket={"open": accepted.append, "data": lambda s, b: None})
    c = bunsock.connect(hostname=HOST, port=srv.port, loop=loop, high_water_mark=10,
                        socket={"data": lambda s, b: None})
    assert c.write(b"a" * 50) == 10        # connecting: the mark caps what is held
    c.high_water_mark = 30
    assert c.high_water_mark == 30
    assert c.write(b"b" * 50) == 20
    c.low_water_mark = 5
    assert c.low_water_mark == 5
    with pytest.raises(ValueError, match="must not exceed high_water_mark"):
        c.low_water_mark = 31
    with pytest.raises(ValueError, match="must not be below low_water_mark"):
        c.high_water_mark = 4
    with pytest.raises(TypeError, match="high_water_mark must be an int or None"):
        c.high_water_mark = 1.5
    with pytest.raises(TypeError, match="low_water_mark must be an int, not NoneType"):
        c.low_water_mark = None
    with pytest.raises(ValueError):
        c.high_water_mark = -1
    c.high_water_mark = None
    assert c.high_water_mark is None
    assert c.write(b"c" * 1000) == 1000
    run_until(loop, lambda: len(accepted) >= 1)
    a = accepted[0]
    assert a.high_water_mark == 100 and srv.high_water_mark == 100
    a.high_water_mark = 7                  # this socket only
    assert a.high_water_mark == 7 and srv.high_water_mark == 100
    srv.high_water_mark = 200              # the listener's sockets without their own
    srv.low_water_mark = 50
    assert (srv.high_water_mark, srv.low_water_mark) == (200, 50)
    assert a.high_water_mark == 7
    with pytest.raises(ValueError):
        srv.low_water_mark = 201
    c2 = bunsock.connect(hostname=HOST, port=srv.port, loop=loop,
                         socket={"data": lambda s, b: None})
    run_until(loop, lambda: len(accepted) >= 2)
    assert accepted[1].high_water_mark == 200 and accepted[1].low_water_mark == 50
    c.close()
    c2.close()
    srv.stop(True)
    run(loop)
