"""Framing (bunsock.framing): whole messages to `data`, write_frame, switching rules mid-stream,
bad input, pause/resume, pipe, TLS and the asyncio bridge (docs/API.md §18)."""
import asyncio
import gc
import socket
import struct

import pytest

import bunsock
from bunsock import framing

from conftest import run_until

pytestmark = pytest.mark.timeout(120)


def frame4(m):
    return struct.pack(">I", len(m)) + m


class Recorder:
    """A handler table that records what it sees; `reply` (if set) is called in `data`."""

    def __init__(self, reply=None):
        self.msgs = []
        self.errors = []
        self.closed = []
        self.socks = []
        self.reply = reply
        self.ends = 0

    def open(self, sock):
        self.socks.append(sock)

    def data(self, sock, msg):
        self.msgs.append(bytes(msg))
        if self.reply is not None:
            self.reply(sock, msg)

    def error(self, sock, exc):
        self.errors.append(exc)

    def close(self, sock, err):
        self.closed.append(err)

    def end(self, sock):
        self.ends += 1


def pair(loop, rule, server=None, client_rule=None, client=None, **kw):
    """A listener with `rule` and a raw (or `client_rule`) client connected to it; returns
    (server table, server socket, client table, client socket, listener)."""
    server = server or Recorder()
    client = client or Recorder()
    lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=server, framing=rule, loop=loop,
                         **kw)
    c = bunsock.connect(hostname="127.0.0.1", port=lst.port, socket=client, loop=loop,
                        framing=client_rule)
    run_until(loop, lambda: server.socks and c.ready_state == "open")
    return server, server.socks[0], client, c, lst


def shut(loop, lst, *socks):
    for s in socks:
        s.close()
    lst.stop(True)
    loop.run_once(0)


# ---------------------------------------------------------------------------------------------
# The rules


def test_rule_objects_validate_and_compare():
    assert framing.lines() == framing.lines(b"\n", max_size=65536)
    assert framing.length_prefixed() == framing.length_prefixed(4, byteorder="big")
    assert framing.lines() != framing.length_prefixed()
    assert "max_size=10" in repr(framing.lines(max_size=10))
    with pytest.raises(ValueError, match="empty"):
        framing.lines(b"")
    with pytest.raises(TypeError, match="str"):
        framing.lines("\n")
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        framing.length_prefixed(3)
    with pytest.raises(ValueError, match="byteorder"):
        framing.length_prefixed(byteorder="middle")
    with pytest.raises(TypeError):
        framing.length_prefixed(max_size=1.5)
    with pytest.raises(ValueError):
        framing.lines(max_size=-1)
    assert issubclass(bunsock.FramingError, ValueError)
    assert "FramingError" in bunsock.__all__
    assert bunsock.framing.FramingError is bunsock.FramingError


def test_listen_rejects_a_framing_that_is_not_a_rule(loop):
    with pytest.raises(TypeError, match="framing"):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Recorder(), framing=b"\n", loop=loop)
    with pytest.raises(TypeError, match="framing"):
        bunsock.connect(hostname="127.0.0.1", port=1, socket=Recorder(), framing="lines",
                        loop=loop)


def test_lines_delivers_each_line_without_its_delimiter(loop, no_leaks):
    srv, s, cli, c, lst = pair(loop, framing.lines())
    assert s.framing == framing.lines()
    assert c.framing is None
    c.write(b"hello\nworld\n\npartial")
    run_until(loop, lambda: len(srv.msgs) == 3)
    assert srv.msgs == [b"hello", b"world", b""]
    c.write(b" line\n")
    run_until(loop, lambda: len(srv.msgs) == 4)
    assert srv.msgs[3] == b"partial line"
    shut(loop, lst, c, s)


@pytest.mark.parametrize("keep", [False, True])
def test_crlf_lines_and_keep_delimiter(loop, keep):
    srv, s, cli, c, lst = pair(loop, framing.lines(b"\r\n", keep_delimiter=keep))
    c.write(b"EHLO x\r\nA\rB\r\n")
    run_until(loop, lambda: len(srv.msgs) == 2)
    if keep:
        assert srv.msgs == [b"EHLO x\r\n", b"A\rB\r\n"]
    else:
        assert srv.msgs == [b"EHLO x", b"A\rB"]
    shut(loop, lst, c, s)


@pytest.mark.parametrize("rule,encode", [
    (framing.length_prefixed(1), lambda m: bytes([len(m)]) + m),
    (framing.length_prefixed(2, byteorder="little"), lambda m: struct.pack("<H", len(m)) + m),
    (framing.length_prefixed(4), frame4),
    (framing.length_prefixed(8), lambda m: struct.pack(">Q", len(m)) + m),
    (framing.length_prefixed(2, includes_header=True), lambda m: struct.pack(">H", len(m) + 2) + m),
    (framing.lines(b"\r\n"), lambda m: m + b"\r\n"),
])
def test_write_frame_round_trip_with_every_rule(loop, rule, encode):
    """write_frame encodes exactly what a peer of that protocol expects, and both ends frame."""
    msgs = [b"", b"a", b"hello", bytes(range(48, 48 + 60))]
    srv, s, cli, c, lst = pair(loop, rule, server=Recorder(lambda so, m: so.write_frame(m)),
                               client_rule=rule)
    raw = []
    for m in msgs:
        assert c.write_frame(m) == len(encode(m))
        raw.append(encode(m))
    run_until(loop, lambda: len(cli.msgs) == len(msgs))
    assert srv.msgs == msgs and cli.msgs == msgs
    assert c.framing is rule
    shut(loop, lst, c, s)


def test_framing_setter_and_getter(loop):
    srv, s, cli, c, lst = pair(loop, None)
    assert s.framing is None
    rule = framing.lines()
    s.framing = rule
    assert s.framing is rule
    with pytest.raises(TypeError, match="framing"):
        s.framing = 4
    assert s.framing is rule
    s.framing = None
    assert s.framing is None
    shut(loop, lst, c, s)


# ---------------------------------------------------------------------------------------------
# Splits and floods


def test_every_split_point_gives_the_same_messages(loop):
    """A peer that cuts the stream at every byte boundary (each part read separately)."""
    msgs = [b"alpha", b"", b"x" * 9, b"\n\r\0"]
    for rule, enc in [(framing.length_prefixed(4), frame4),
                      (framing.lines(b"\r\n"), lambda m: m.replace(b"\r", b"") + b"\r\n")]:
        want = [enc(m) for m in msgs]
        expected = [enc(m)[4:] if rule.__class__ is framing.LengthPrefixed else enc(m)[:-2]
                    for m in msgs]
        stream = b"".join(want)
        srv, s, cli, c, lst = pair(loop, rule)
        for k in range(len(stream) + 1):
            before = s.bytes_read
            c.write(stream[:k])
            run_until(loop, lambda: s.bytes_read == before + k)
            c.write(stream[k:])
            run_until(loop, lambda: len(srv.msgs) == len(expected) * (k + 1))
        assert srv.msgs == expected * (len(stream) + 1)
        # and one byte per read
        srv.msgs.clear()
        for i in range(len(stream)):
            before = s.bytes_read
            c.write(stream[i:i + 1])
            run_until(loop, lambda: s.bytes_read == before + 1)
        run_until(loop, lambda: len(srv.msgs) == len(expected))
        assert srv.msgs == expected
        shut(loop, lst, c, s)


def test_thousands_of_frames_in_one_read_are_delivered_in_order_and_replies_corked(loop):
    n = 5000
    srv, s, cli, c, lst = pair(loop, framing.length_prefixed(2),
                               server=Recorder(lambda so, m: so.write_frame(m)),
                               client_rule=framing.length_prefixed(2))
    stream = b"".join(struct.pack(">H", 6) + b"%06d" % i for i in range(n))
    before = loop.stats()
    c.write(stream)
    run_until(loop, lambda: len(cli.msgs) == n)
    assert srv.msgs == [b"%06d" % i for i in range(n)]
    assert cli.msgs == srv.msgs
    after = loop.stats()
    # 40 KB is one or a few reads for the server; each read's replies leave in one send (the
    # client's side adds a few sends of its own).
    assert after["sends"] - before["sends"] < 20, (before, after)
    shut(loop, lst, c, s)


def test_messages_of_one_read_are_replied_in_one_send(loop):
    srv, s, cli, c, lst = pair(loop, framing.lines(),
                               server=Recorder(lambda so, m: so.write_frame(m.upper())))
    before = loop.stats()["sends"]
    c.write(b"a\nb\nc\nd\n")
    run_until(loop, lambda: len(cli.msgs) >= 1 and b"".join(cli.msgs) == b"A\nB\nC\nD\n")
    # the client's write and the server's one reply
    assert loop.stats()["sends"] - before == 2
    shut(loop, lst, c, s)


# ---------------------------------------------------------------------------------------------
# binary_type


@pytest.mark.parametrize("bt,kind", [("bytes", bytes), ("bytearray", bytearray),
                                     ("memoryview", memoryview)])
def test_binary_type_applies_to_messages(loop, bt, kind):
    seen = []
    srv = Recorder(lambda so, m: seen.append(type(m)))
    srv, s, cli, c, lst = pair(loop, framing.length_prefixed(4), server=srv, binary_type=bt)
    c.write(frame4(b"one") + frame4(b"two")[:5])
    run_until(loop, lambda: len(srv.msgs) == 1)
    c.write(frame4(b"two")[5:])
    run_until(loop, lambda: len(srv.msgs) == 2)
    assert srv.msgs == [b"one", b"two"] and seen == [kind, kind]
    shut(loop, lst, c, s)


def test_kept_memoryview_messages_stay_intact(loop):
    """A memoryview kept past its call (a slice) keeps its bytes: later reads do not overwrite
    them (the loop hands its buffer over and reads into a new one)."""
    kept = []
    srv = Recorder(lambda so, m: kept.append(m[0:]))
    srv, s, cli, c, lst = pair(loop, framing.length_prefixed(4), server=srv,
                               binary_type="memoryview")
    for i in range(20):
        c.write(frame4(b"msg%03d" % i) + frame4(b"second%03d" % i))
        run_until(loop, lambda: len(kept) == 2 * (i + 1))
    assert [bytes(k) for k in kept] == [x for i in range(20)
                                        for x in (b"msg%03d" % i, b"second%03d" % i)]
    del kept[:]
    shut(loop, lst, c, s)


# ---------------------------------------------------------------------------------------------
# write_frame


def test_write_frame_details(loop):
    srv, s, cli, c, lst = pair(loop, framing.length_prefixed(1))
    with pytest.raises(TypeError, match="str"):
        s.write_frame("text")
    with pytest.raises(ValueError, match="does not fit"):
        s.write_frame(b"x" * 256)
    assert s.write_frame(b"x" * 255) == 256
    assert s.write_frame(bytearray(b"ab")) == 3
    assert s.write_frame(memoryview(b"abc")) == 4
    with pytest.raises(ValueError, match="framing"):
        c.write_frame(b"x")          # the client has no rule
    s.framing = framing.lines(b"\r\n")
    with pytest.raises(ValueError, match="delimiter"):
        s.write_frame(b"two\r\nlines")
    assert s.write_frame(b"ok") == 4
    run_until(loop, lambda: c.bytes_read == 256 + 3 + 4 + 4)
    s.close()
    assert s.write_frame(b"x") == -1
    with pytest.raises(TypeError):
        s.write_frame("x")
    shut(loop, lst, c)


def test_write_frame_is_all_or_nothing_under_high_water_mark(loop):
    from conftest import shrink_sndbuf
    drains = []
    srv = Recorder()
    srv.drain = lambda so: drains.append(so.buffered_amount)
    srv, s, cli, c, lst = pair(loop, framing.length_prefixed(4), server=srv,
                               high_water_mark=100_000, pause_on_connect=False)
    c.pause()                     # the client stops reading: the server backs up
    shrink_sndbuf(s, 4096)
    payload = b"p" * 30_000
    results = []
    for _ in range(200):
        r = s.write_frame(payload)
        results.append(r)
        if r == 0:
            break
    assert results[-1] == 0, results
    assert all(r == 30_004 for r in results[:-1])
    # nothing partial was buffered: what is held is a whole number of frames minus what the
    # kernel took
    held = s.buffered_amount
    assert 0 < held <= 100_000
    c.resume()
    run_until(loop, lambda: drains)
    frames = len(results) - 1
    run_until(loop, lambda: c.bytes_read == frames * 30_004)
    shut(loop, lst, c, s)


def test_group_write_frame_uses_each_members_rule(loop):
    rules = [framing.length_prefixed(2), framing.lines(), framing.length_prefixed(4), None]
    clients = []
    lsts = []
    group = bunsock.Group()
    for rule in rules:
        srv, s, cli, c, lst = pair(loop, rule)
        group.add(s)
        clients.append((cli, c))
        lsts.append((lst, s, c))
    skipped = []
    assert group.write_frame(b"tick", skipped) == 3
    assert skipped == [lsts[3][1]]
    want = [b"\0\4tick", b"tick\n", b"\0\0\0\4tick"]
    for (cli, c), w in zip(clients, want):
        run_until(loop, lambda: c.bytes_read == len(w))
    with pytest.raises(TypeError):
        group.write_frame("tick")
    with pytest.raises(ValueError, match="delimiter"):
        group.write_frame(b"a\nb")
    assert all(c.bytes_read == len(w) for (cli, c), w in zip(clients, want))   # nobody got it
    for lst, s, c in lsts:
        shut(loop, lst, c, s)


def test_group_write_frame_inside_a_handler_shares_one_frame(loop):
    rule = framing.lines()
    group = bunsock.Group()
    srv = Recorder(lambda so, m: group.write_frame(b"echo:" + m))
    lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=srv, framing=rule, loop=loop)
    cls = []
    for _ in range(5):
        cli = Recorder()
        c = bunsock.connect(hostname="127.0.0.1", port=lst.port, socket=cli, loop=loop,
                            framing=rule)
        cls.append((cli, c))
    run_until(loop, lambda: len(srv.socks) == 5)
    for s in srv.socks:
        group.add(s)
    cls[0][1].write(b"hi\n")
    run_until(loop, lambda: all(cli.msgs == [b"echo:hi"] for cli, c in cls))
    for cli, c in cls:
        c.close()
    shut(loop, lst, *srv.socks)


# ---------------------------------------------------------------------------------------------
# Bad input


def roomy(rule):
    """The same rule with the default max_size (the client reads the longer replies)."""
    if isinstance(rule, framing.Lines):
        return framing.lines(rule.delimiter)
    return framing.length_prefixed(rule.header_size, byteorder=rule.byteorder,
                                   includes_header=rule.includes_header)


def bad_input_case(loop, rule, payload, expect_msgs, match, end=False):
    srv = Recorder(lambda so, m: so.write_frame(b"ack:" + m))
    srv, s, cli, c, lst = pair(loop, rule, server=srv, client_rule=roomy(rule))
    c.write(payload)
    if end:
        c.end()
    run_until(loop, lambda: srv.closed)
    assert srv.msgs == expect_msgs
    assert len(srv.errors) == 1 and isinstance(srv.errors[0], bunsock.FramingError)
    assert match in str(srv.errors[0])
    assert srv.closed == [srv.errors[0]]        # close(sock, err) receives the FramingError
    assert s.ready_state == "closed"
    # the replies to the messages before the bad one reach the peer
    run_until(loop, lambda: len(cli.msgs) == len(expect_msgs))
    assert cli.msgs == [b"ack:" + m for m in expect_msgs]
    run_until(loop, lambda: c.ready_state == "closed")
    lst.stop(True)


def test_oversize_header_fails_at_once(loop):
    rule = framing.length_prefixed(4, max_size=100)
    # the bad header's payload never comes: the error must not wait for it, nor for EOF
    bad_input_case(loop, rule, frame4(b"ok") + frame4(b"fine") + struct.pack(">I", 101),
                   [b"ok", b"fine"], "max_size (100 bytes)")


def test_max_size_itself_is_allowed(loop):
    rule = framing.length_prefixed(4, max_size=100)
    srv, s, cli, c, lst = pair(loop, rule)
    c.write(frame4(b"m" * 100))
    run_until(loop, lambda: srv.msgs)
    assert srv.msgs == [b"m" * 100] and not srv.errors
    shut(loop, lst, c, s)


def test_includes_header_length_below_the_header_size(loop):
    rule = framing.length_prefixed(2, includes_header=True)
    bad_input_case(loop, rule, b"\0\4hi" + b"\0\2" + b"\0\1", [b"hi", b""], "below the header")


def test_line_over_max_size_without_delimiter_fails_at_once(loop):
    rule = framing.lines(b"\r\n", max_size=10)
    # 10 + 2 + 1 bytes with no delimiter: more than max_size + the delimiter's length
    bad_input_case(loop, rule, b"ok\r\n" + b"x" * 13, [b"ok"], "max_size (10 bytes)")


def test_line_of_max_size_passes_and_one_more_fails(loop):
    rule = framing.lines(max_size=10)
    bad_input_case(loop, rule, b"0123456789\n" + b"0123456789a\n", [b"0123456789"],
                   "longer than max_size")


def test_eof_in_the_middle_of_a_frame(loop):
    bad_input_case(loop, framing.length_prefixed(4), frame4(b"whole") + frame4(b"cut")[:5],
                   [b"whole"], "EOF in the middle of a message (5 bytes", end=True)


def test_eof_inside_an_unterminated_line_is_not_delivered(loop):
    bad_input_case(loop, framing.lines(), b"one\ntwo", [b"one"], "EOF in the middle", end=True)


def test_eof_on_a_frame_boundary_is_a_clean_end(loop):
    srv, s, cli, c, lst = pair(loop, framing.lines())
    c.write(b"a\nb\n")
    c.end()
    run_until(loop, lambda: srv.closed)
    assert srv.msgs == [b"a", b"b"] and srv.ends == 1 and srv.closed == [None]
    assert not srv.errors
    run_until(loop, lambda: c.ready_state == "closed")
    lst.stop(True)


def test_framing_error_without_an_error_handler_still_closes_with_it(loop, unraisable):
    closed = []
    table = {"data": lambda so, m: None, "close": lambda so, err: closed.append(err)}
    lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=table,
                         framing=framing.length_prefixed(1, max_size=3), loop=loop)
    c = socket.create_connection(("127.0.0.1", lst.port))
    c.sendall(b"\x09")
    run_until(loop, lambda: closed)
    assert isinstance(closed[0], bunsock.FramingError)
    assert not unraisable           # the peer's fault: not reported as a program error
    c.close()
    lst.stop(True)


def test_memory_stays_bounded_against_a_peer_that_never_ends_a_line(loop):
    """10 MB without a delimiter: the socket fails after max_size (+ one read), it does not
    buffer what the peer sends; a partial line is held up to max_size + the delimiter."""
    from bunsock._loop import _frames_info
    srv, s, cli, c, lst = pair(loop, framing.lines(b"\r\n", max_size=64 * 1024))
    for i in range(64):
        before = s.bytes_read
        c.write(b"q" * 1023 + (b"\r" if i == 63 else b"q"))
        run_until(loop, lambda: s.bytes_read == before + 1024)
        assert _frames_info(s)[0] == 1024 * (i + 1)        # held: the partial line, no more
    c.write(b"x\r\n")                 # 65,535 q + "\rx" + "\r\n": a line of max_size + 1 bytes
    run_until(loop, lambda: srv.closed)
    assert isinstance(srv.closed[0], bunsock.FramingError) and not srv.msgs
    run_until(loop, lambda: c.ready_state == "closed")
    srv, s, cli, c, lst2 = pair(loop, framing.lines(max_size=64 * 1024))
    lst.stop(True)
    lst = lst2
    chunk = b"z" * 65536
    sent = 0
    while sent < 10 << 20 and not srv.closed:
        if c.ready_state != "open":
            break
        c.write(chunk)
        sent += len(chunk)
        loop.run_once(0)
    run_until(loop, lambda: srv.closed)
    assert isinstance(srv.closed[0], bunsock.FramingError)
    # it failed long before the peer was done
    assert s.bytes_read < 2 << 20
    run_until(loop, lambda: c.ready_state == "closed")
    lst.stop(True)


# ---------------------------------------------------------------------------------------------
# pause / resume


def test_pause_inside_data_holds_the_rest_of_the_read(loop):
    def reply(so, m):
        if m == b"3":
            so.pause()
            loop.call_later(0.05, so.resume)
    srv, s, cli, c, lst = pair(loop, framing.lines(), server=Recorder(reply))
    c.write(b"1\n2\n3\n4\n5\n6")
    run_until(loop, lambda: len(srv.msgs) == 3)
    assert s.paused
    loop.run_once(0.01)
    assert srv.msgs == [b"1", b"2", b"3"]       # nothing delivered while paused
    c.write(b"\n7\n")                            # more arrives meanwhile
    run_until(loop, lambda: len(srv.msgs) == 7)
    assert srv.msgs == [b"%d" % i for i in range(1, 8)]
    shut(loop, lst, c, s)


def test_pause_on_every_message(loop):
    """pause() in every call, resume() from a callback: none lost or reordered, and the FIN comes
    after the last message."""
    def reply(so, m):
        so.pause()
        loop.call_soon(so.resume)
    srv = Recorder(reply)
    srv.close = lambda so, err: (srv.closed.append(err), loop.stop())
    srv, s, cli, c, lst = pair(loop, framing.length_prefixed(2), server=srv)
    msgs = [b"m%d" % i for i in range(300)]
    c.write(b"".join(struct.pack(">H", len(m)) + m for m in msgs))
    c.end()
    guard = loop.call_later(20, loop.stop)     # (run_until's 50 ms polls would pace this test)
    loop.run()
    assert guard.active, "not done within 20 s"
    guard.cancel()
    assert srv.msgs == msgs and srv.ends == 1 and srv.closed == [None]
    run_until(loop, lambda: c.ready_state == "closed")
    lst.stop(True)


def test_eof_while_paused_with_held_messages(loop):
    def reply(so, m):
        if m == b"a":
            so.pause()
            loop.call_later(0.1, so.resume)
    srv, s, cli, c, lst = pair(loop, framing.lines(), server=Recorder(reply))
    c.write(b"a\nb\nc\n")
    c.end()
    run_until(loop, lambda: srv.closed)
    assert srv.msgs == [b"a", b"b", b"c"] and srv.ends == 1 and srv.closed == [None]
    lst.stop(True)
    loop.run_once(0)


# ---------------------------------------------------------------------------------------------
# Switching mid-stream, pipe


def test_text_handshake_then_binary_frames_in_the_same_read(loop):
    def reply(so, m):
        if m == b"HELLO v1":
            so.framing = framing.length_prefixed(2)
    srv, s, cli, c, lst = pair(loop, framing.lines(), server=Recorder(reply))
    c.write(b"HELLO v1\n" + b"\0\3abc" + b"\0\2\n\n" + b"\0\5ab")
    run_until(loop, lambda: len(srv.msgs) == 3)
    c.write(b"cde")
    run_until(loop, lambda: len(srv.msgs) == 4)
    assert srv.msgs == [b"HELLO v1", b"abc", b"\n\n", b"abcde"]
    shut(loop, lst, c, s)


def test_frames_then_raw(loop):
    """framing = None inside `data`: the rest of that read, and what follows, come raw."""
    def reply(so, m):
        if m == b"RAW":
            so.framing = None
    srv, s, cli, c, lst = pair(loop, framing.lines(), server=Recorder(reply))
    c.write(b"x\nRAW\nrest\nof it")
    run_until(loop, lambda: b"".join(srv.msgs[2:]) == b"rest\nof it")
    c.write(b" more\n")
    run_until(loop, lambda: b"".join(srv.msgs[2:]) == b"rest\nof it more\n")
    assert srv.msgs[:2] == [b"x", b"RAW"]
    assert s.framing is None
    shut(loop, lst, c, s)


def test_switch_outside_data_reframes_the_held_partial(loop):
    srv, s, cli, c, lst = pair(loop, framing.lines())
    c.write(b"one\n\0\0\0\2h")
    run_until(loop, lambda: srv.msgs == [b"one"] and s.bytes_read == 9)
    s.framing = framing.length_prefixed(4)        # from outside any handler
    c.write(b"i")
    run_until(loop, lambda: len(srv.msgs) == 2)
    assert srv.msgs == [b"one", b"hi"]
    # and back to raw from outside: the held partial frame comes as raw bytes at once
    c.write(b"\0\0\0\5ab")
    run_until(loop, lambda: s.bytes_read == 16)
    s.framing = None
    run_until(loop, lambda: len(srv.msgs) == 3)
    assert srv.msgs[2] == b"\0\0\0\5ab"
    shut(loop, lst, c, s)


def test_pipe_after_switching_takes_the_undelivered_bytes(loop):
    """A proxy that reads a header line, then relays the rest unchanged."""
    sink = Recorder()
    sink_lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=sink, loop=loop)
    up = bunsock.connect(hostname="127.0.0.1", port=sink_lst.port, socket=Recorder(), loop=loop)
    run_until(loop, lambda: sink.socks and up.ready_state == "open")

    def reply(so, m):
        if m.startswith(b"CONNECT"):
            so.framing = None
            so.pipe(up)
    srv, s, cli, c, lst = pair(loop, framing.lines(), server=Recorder(reply))
    c.write(b"CONNECT x\nbody 1\n\0\0binary")
    run_until(loop, lambda: b"".join(sink.msgs) == b"body 1\n\0\0binary")
    c.write(b" and later")
    run_until(loop, lambda: b"".join(sink.msgs) == b"body 1\n\0\0binary and later")
    assert srv.msgs == [b"CONNECT x"]
    shut(loop, lst, c, s, up, *sink.socks)
    sink_lst.stop(True)
    loop.run_once(0)


def test_pipe_while_paused_with_held_frames(loop):
    sink = Recorder()
    sink_lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=sink, loop=loop)
    up = bunsock.connect(hostname="127.0.0.1", port=sink_lst.port, socket=Recorder(), loop=loop)
    run_until(loop, lambda: sink.socks and up.ready_state == "open")
    srv, s, cli, c, lst = pair(loop, framing.lines(),
                               server=Recorder(lambda so, m: so.pause()))
    c.write(b"first\nsecond\nthird")
    run_until(loop, lambda: srv.msgs == [b"first"])
    s.pipe(up)          # the held "second\nthird" goes first, unframed
    c.write(b"!")
    run_until(loop, lambda: b"".join(sink.msgs) == b"second\nthird!")
    shut(loop, lst, c, s, up, *sink.socks)
    sink_lst.stop(True)
    loop.run_once(0)


# ---------------------------------------------------------------------------------------------
# TLS and asyncio


def test_framing_over_tls(loop, tmp_path):
    trustme = pytest.importorskip("trustme")
    import ssl
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(sctx)
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    rule = framing.length_prefixed(4)

    def reply(so, m):
        so.write_frame(m[::-1])
        if m.endswith(b"77"):                   # pause now and then: TLS and framing both hold
            so.pause()
            loop.call_soon(so.resume)
    srv = Recorder(reply)
    lst = bunsock.listen(hostname="127.0.0.1", port=0, socket=srv, framing=rule, tls=sctx,
                         loop=loop)
    cli = Recorder()
    c = bunsock.connect(hostname="127.0.0.1", port=lst.port, socket=cli, framing=rule,
                        tls=cctx, loop=loop)
    msgs = [b"m%04d" % i for i in range(2000)] + [b"big" * 20000]
    c.write_frame(msgs[0])                      # before the handshake: held, then sent
    run_until(loop, lambda: c.ready_state == "open" and srv.socks)
    stream = b"".join(frame4(m) for m in msgs[1:])
    for i in range(0, len(stream), 777):        # cut at places unrelated to frames or records
        c.write(stream[i:i + 777])
    run_until(loop, lambda: len(cli.msgs) == len(msgs))
    assert srv.msgs == msgs
    assert cli.msgs == [m[::-1] for m in msgs]
    shut(loop, lst, c, *srv.socks)


def test_framing_through_the_asyncio_bridge():
    async def main():
        got = []
        done = asyncio.get_running_loop().create_future()

        class Echo:
            def data(self, sock, msg):
                sock.write_frame(b"re:" + msg)

        class Client:
            def data(self, sock, msg):
                got.append(msg)
                if len(got) == 3 and not done.done():
                    done.set_result(None)

        srv = await bunsock.aio.listen(hostname="127.0.0.1", port=0, socket=Echo(),
                                       framing=framing.lines(b"\r\n"))
        sock = await bunsock.aio.connect(hostname="127.0.0.1", port=srv.port, socket=Client(),
                                         framing=framing.lines(b"\r\n"))
        sock.write(b"a\r\nb")
        await asyncio.sleep(0.01)
        sock.write(b"\r\nc\r\n")
        await asyncio.wait_for(done, 10)
        assert got == [b"re:a", b"re:b", b"re:c"]
        sock.close()
        srv.stop(True)

    import bunsock.aio
    asyncio.run(main())


def test_no_leak_of_framing_state(loop, no_leaks):
    for _ in range(3):
        srv, s, cli, c, lst = pair(loop, framing.lines(), client_rule=framing.length_prefixed())
        c.write(b"partial")
        run_until(loop, lambda: s.bytes_read == 7)
        shut(loop, lst, c, s)
    gc.collect()


# ---------------------------------------------------------------------------------------------
# Handlers that change the socket during delivery


def test_close_inside_data_stops_delivery(loop):
    srv = Recorder(lambda so, m: so.close() if m == b"2" else None)
    srv, s, cli, c, lst = pair(loop, framing.lines(), server=srv)
    c.write(b"1\n2\n3\n4\n")
    run_until(loop, lambda: srv.closed)
    assert srv.msgs == [b"1", b"2"] and srv.closed == [None]
    run_until(loop, lambda: c.ready_state == "closed")
    lst.stop(True)


def test_a_raising_handler_does_not_lose_the_next_messages(loop, expected_errors):
    def reply(so, m):
        if m == b"bad":
            raise RuntimeError("handler bug")
    srv, s, cli, c, lst = pair(loop, framing.lines(), server=Recorder(reply))
    c.write(b"a\nbad\nb\n")
    run_until(loop, lambda: len(srv.msgs) == 3)
    assert srv.msgs == [b"a", b"bad", b"b"]
    assert [type(e) for e in srv.errors] == [RuntimeError]
    assert [type(e) for e, where in expected_errors] == [RuntimeError]
    assert s.ready_state == "open"
    shut(loop, lst, c, s)


def test_memoryview_messages_from_held_bytes(loop):
    """Frames completed across reads (held) and frames delivered after pause() come as
    memoryviews too, with the right bytes."""
    seen = []

    def reply(so, m):
        seen.append((type(m), bytes(m)))
        if bytes(m) == b"p":
            so.pause()
            loop.call_soon(so.resume)
    srv, s, cli, c, lst = pair(loop, framing.lines(), server=Recorder(reply),
                               binary_type="memoryview")
    c.write(b"ab")
    run_until(loop, lambda: s.bytes_read == 2)
    c.write(b"c\np\nq\nr\n")
    run_until(loop, lambda: len(seen) == 4)
    assert seen == [(memoryview, b"abc"), (memoryview, b"p"), (memoryview, b"q"),
                    (memoryview, b"r")]
    shut(loop, lst, c, s)


def test_group_write_frame_all_or_nothing_per_member(loop):
    """A member whose backlog plus the frame passes its high_water_mark is skipped whole (and
    owes a drain); the others take it."""
    from conftest import shrink_sndbuf
    rule = framing.length_prefixed(4)
    drains = []
    slow = Recorder()
    slow.drain = lambda so: drains.append(so)
    slow, s_slow, cli_slow, c_slow, lst1 = pair(loop, rule, server=slow, high_water_mark=50_000)
    fast, s_fast, cli_fast, c_fast, lst2 = pair(loop, rule, high_water_mark=50_000)
    c_slow.pause()
    shrink_sndbuf(s_slow, 4096)
    group = bunsock.Group([s_slow, s_fast])
    payload = b"g" * 20_000
    taken = []
    for _ in range(100):
        skipped = []
        taken.append(group.write_frame(payload, skipped))
        if skipped:
            assert skipped == [s_slow]
            break
        run_until(loop, lambda: c_fast.bytes_read == 20_004 * len(taken))
    assert taken[-1] == 1 and all(t == 2 for t in taken[:-1])
    run_until(loop, lambda: c_fast.bytes_read == 20_004 * len(taken))
    c_slow.resume()
    run_until(loop, lambda: drains)
    # the slow member got whole frames only
    run_until(loop, lambda: c_slow.bytes_read == 20_004 * (len(taken) - 1))
    shut(loop, lst1, c_slow, s_slow)
    shut(loop, lst2, c_fast, s_fast)


def test_group_write_frame_exclude(loop):
    rule = framing.lines()
    group = bunsock.Group()
    pairs = [pair(loop, rule) for _ in range(3)]
    for srv, s, cli, c, lst in pairs:
        group.add(s)
    sender = pairs[0][1]
    skipped = []
    assert group.write_frame(b"hi", skipped, exclude=sender) == 2 and skipped == []
    run_until(loop, lambda: all(p[3].bytes_read == 3 for p in pairs[1:]))
    loop.run_once(0.05)
    assert pairs[0][3].bytes_read == 0
    with pytest.raises(TypeError, match="exclude"):
        group.write_frame(b"x", exclude="me")
    for srv, s, cli, c, lst in pairs:
        shut(loop, lst, c, s)


def test_the_api_doc_example_runs():
    """docs/API.md §18's example, as written."""
    from pathlib import Path
    doc = Path(__file__).resolve().parents[1] / "docs" / "API.md"
    if not doc.exists():
        pytest.skip("docs/ not beside tests/")
    text = doc.read_text()
    section = text[text.index("## 18. Framing"):]
    code = section[section.index("```python\n") + 10:]
    code = code[:code.index("```")]
    exec(compile(code, "API.md §18", "exec"), {})


def test_replies_past_the_cork_limit_inside_one_read(loop):
    """Replies written to one read's messages that add up to more than the cork holds (64 KiB)
    go out in order, whole."""
    big = Recorder(lambda so, m: so.write_frame(m * 2000))      # 10-byte message -> 20 KB reply
    srv, s, cli, c, lst = pair(loop, framing.length_prefixed(4), server=big,
                               client_rule=framing.length_prefixed(4))
    msgs = [b"%010d" % i for i in range(12)]
    c.write(b"".join(frame4(m) for m in msgs))
    run_until(loop, lambda: len(cli.msgs) == 12)
    assert cli.msgs == [m * 2000 for m in msgs]
    shut(loop, lst, c, s)
