"""TLS (stdlib ssl over MemoryBIO, driven by the loop), STARTTLS, ALPN, leaks."""
import gc
import hashlib
import os
import socket
import ssl
import threading

import pytest

trustme = pytest.importorskip("trustme")

import bunsock
from bunsock._loop import debug_counts
from conftest import shrink_sndbuf, open_fds, run

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def files(tmp_path_factory, ca, server_cert):
    d = tmp_path_factory.mktemp("certs")
    paths = {"ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    server_cert.cert_chain_pems[0].write_to_path(paths["cert"])
    server_cert.private_key_pem.write_to_path(paths["key"])
    client = ca.issue_cert("client@example.com")
    paths["client_cert"] = str(d / "ccert.pem")
    paths["client_key"] = str(d / "ckey.pem")
    client.cert_chain_pems[0].write_to_path(paths["client_cert"])
    client.private_key_pem.write_to_path(paths["client_key"])
    return paths


class Echo:
    def data(self, sock, buf):
        sock.write(buf)


def tls_echo(loop, sctx, cctx, payload, chunk=None, binary_type="bytes", srv_binary="bytes"):
    got = bytearray()
    res = {}

    class Cli:
        def open(self, sock):
            res["authorized"] = sock.authorized
            if chunk is None:
                sock.write(payload)
            else:
                for i in range(0, len(payload), chunk):
                    sock.write(payload[i:i + chunk])

        def data(self, sock, buf):
            got.extend(buf)
            if len(got) >= len(payload):
                sock.end()

        def close(self, sock, err):
            res["err"] = err
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=sctx, loop=loop,
                         binary_type=srv_binary)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx, loop=loop,
                    binary_type=binary_type)
    run(loop, 30)
    assert res["err"] is None
    assert res["authorized"] is True
    assert len(got) == len(payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_tls_echo_one_byte(loop, sctx, cctx, no_leaks):
    tls_echo(loop, sctx, cctx, b"x")


def test_tls_echo_8mib(loop, sctx, cctx, no_leaks):
    tls_echo(loop, sctx, cctx, os.urandom(8 * 1024 * 1024))


def test_tls_echo_many_small_writes(loop, sctx, cctx):
    tls_echo(loop, sctx, cctx, os.urandom(200_000), chunk=777)


@pytest.mark.parametrize("bt", ["bytearray", "memoryview"])
def test_tls_binary_types(loop, sctx, cctx, bt):
    tls_echo(loop, sctx, cctx, os.urandom(100_000), binary_type=bt, srv_binary=bt)


def test_tls_data_types_delivered(loop, sctx, cctx):
    types = set()

    class Srv:
        def data(self, sock, buf):
            types.add(type(buf))
            sock.end()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), tls=sctx, loop=loop,
                         binary_type="bytearray")
    bunsock.connect(hostname="127.0.0.1", port=srv.port, tls=cctx, loop=loop,
                    socket={"open": lambda s: s.write(b"q"), "data": lambda s, b: None,
                            "close": lambda s, e: srv.stop()})
    run(loop)
    assert types == {bytearray}


def test_handshake_handler_success(loop, sctx, cctx, no_leaks):
    events = []

    class Srv(Echo):
        def open(self, sock):
            events.append(("srv-open",))

        def handshake(self, sock, ok, err):
            events.append(("srv-hs", ok, err, sock.authorized))

    class Cli:
        def open(self, sock):
            events.append(("cli-open",))

        def handshake(self, sock, ok, err):
            events.append(("cli-hs", ok, err, sock.authorized, sock.version(),
                           sock.cipher() is not None, sock.getpeercert()["subjectAltName"]))
            sock.write(b"ping")

        def data(self, sock, buf):
            events.append(("cli-data", buf))
            sock.end()

        def close(self, sock, err):
            events.append(("cli-close", err))
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), tls=sctx, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx, loop=loop)
    run(loop)
    # With a handshake handler, open fires first (as in Bun), then handshake.
    assert events.index(("cli-open",)) < [e[0] for e in events].index("cli-hs")
    assert events.index(("srv-open",)) < [e[0] for e in events].index("srv-hs")
    cli_hs = [e for e in events if e[0] == "cli-hs"][0]
    assert cli_hs[1:4] == (True, None, True)
    assert cli_hs[4] in ("TLSv1.2", "TLSv1.3") and cli_hs[5]
    assert ("IP Address", "127.0.0.1") in cli_hs[6]
    srv_hs = [e for e in events if e[0] == "srv-hs"][0]
    assert srv_hs[1:] == (True, None, False)  # no client certificate: not authorized
    assert ("cli-data", b"ping") in events
    assert events[-1] == ("cli-close", None)


def test_open_fires_after_handshake_without_handler(loop, sctx, cctx):
    seen = {}

    class Cli:
        def open(self, sock):
            # the handshake is done when open fires
            seen["version"] = sock.version()
            seen["authorized"] = sock.authorized
            sock.end()

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=sctx, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx, loop=loop)
    run(loop)
    assert seen["version"] is not None and seen["authorized"] is True


def _failing_handshake(loop, sctx, cli_tls, with_handler, hostname="127.0.0.1"):
    res = {"srv": [], "cli": []}

    class Srv(Echo):
        def handshake(self, sock, ok, err):
            res["srv"].append(("hs", ok, type(err)))

        def close(self, sock, err):
            res["srv"].append(("close", type(err)))

    class Cli:
        def open(self, sock):
            res["cli"].append(("open",))

        def data(self, sock, buf):
            res["cli"].append(("data", buf))

        def close(self, sock, err):
            res["cli"].append(("close", err))
            srv.stop(True)

        def connect_error(self, sock, exc):
            res["cli"].append(("connect_error", exc))
            srv.stop(True)

    if with_handler:
        def hs(self, sock, ok, err):
            res["cli"].append(("hs", ok, err))
        Cli.handshake = hs
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), tls=sctx, loop=loop)
    sock = bunsock.connect(hostname=hostname, port=srv.port, socket=Cli(), tls=cli_tls, loop=loop)
    sock.write(b"never sent in clear")
    run(loop)
    return res


def test_untrusted_certificate_fails_handshake_handler(loop, sctx, no_leaks):
    other = trustme.CA()
    cctx = ssl.create_default_context()
    other.configure_trust(cctx)
    res = _failing_handshake(loop, sctx, cctx, with_handler=True)
    cli = res["cli"]
    assert cli[0] == ("open",)
    assert cli[1][0] == "hs" and cli[1][1] is False
    assert isinstance(cli[1][2], ssl.SSLCertVerificationError)
    assert cli[2][0] == "close" and isinstance(cli[2][1], ssl.SSLCertVerificationError)
    assert len(cli) == 3
    assert res["srv"] and res["srv"][-1][0] == "close"


def test_untrusted_certificate_without_handler_is_a_connect_error(loop, sctx):
    cctx = ssl.create_default_context()
    trustme.CA().configure_trust(cctx)
    res = _failing_handshake(loop, sctx, cctx, with_handler=False)
    cli = res["cli"]
    # `open` never fired, so no `close` either: the client hears why through connect_error.
    assert len(cli) == 1, cli
    assert cli[0][0] == "connect_error" and isinstance(cli[0][1], ssl.SSLCertVerificationError)


def test_default_context_rejects_unknown_ca(loop, sctx):
    # tls=True: system trust store, verification on -> trustme's CA is unknown
    res = _failing_handshake(loop, sctx, True, with_handler=False)
    assert isinstance(res["cli"][0][1], ssl.SSLCertVerificationError)


def test_hostname_mismatch_rejected(loop, ca, cctx):
    wrong = ca.issue_cert("other.example")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    wrong.configure_cert(ctx)
    res = _failing_handshake(loop, ctx, cctx, with_handler=True)
    hs = res["cli"][1]
    assert hs[1] is False and isinstance(hs[2], ssl.SSLCertVerificationError)
    assert "mismatch" in str(hs[2]).lower() or "match" in str(hs[2]).lower()


def test_hostname_checked_against_server_name(loop, sctx, cctx):
    # the certificate is valid for localhost/127.0.0.1, not for the name we ask to verify
    seen = []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=sctx, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop,
                    tls={"ca": _ca_pem(cctx), "server_name": "evil.example"},
                    socket={"data": lambda s, b: None,
                            "connect_error": lambda s, e: (seen.append(e), srv.stop())})
    run(loop)
    assert isinstance(seen[0], ssl.SSLCertVerificationError)


def _ca_pem(ctx):
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in ctx.get_ca_certs(binary_form=True))


def test_writes_before_handshake_are_delivered(loop, sctx, cctx, no_leaks):
    got = {"srv": bytearray(), "cli": bytearray()}

    class Srv:
        def open(self, sock):
            # the handshake has not happened yet (handshake handler present)
            sock.write(b"hello from server ")
            assert sock.buffered_amount >= len(b"hello from server ")

        def handshake(self, sock, ok, err):
            assert ok
            sock.write(b"after")

        def data(self, sock, buf):
            got["srv"].extend(buf)
            if got["srv"].endswith(b"END"):
                sock.end()

    class Cli:
        def data(self, sock, buf):
            got["cli"].extend(buf)

        def close(self, sock, err):
            assert err is None
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), tls=sctx, loop=loop)
    s = bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx, loop=loop)
    # still connecting: kept and sent after the handshake, in order
    s.write(b"one ")
    s.write(bytearray(b"two "))
    s.writelines([b"three ", memoryview(b"END")])
    assert s.buffered_amount == len(b"one two three END")
    run(loop)
    assert bytes(got["srv"]) == b"one two three END"
    assert bytes(got["cli"]) == b"hello from server after"


def test_end_before_handshake_sends_everything_then_fin(loop, sctx, cctx):
    got = bytearray()
    ends = []

    class Srv:
        def data(self, sock, buf):
            got.extend(buf)

        def end(self, sock):
            ends.append(bytes(got))

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), tls=sctx, loop=loop)
    s = bunsock.connect(hostname="127.0.0.1", port=srv.port, tls=cctx, loop=loop,
                        socket={"data": lambda s, b: None, "close": lambda s, e: srv.stop()})
    s.write(b"x" * 50_000)
    s.end(b"tail")
    run(loop)
    assert ends == [b"x" * 50_000 + b"tail"]


def test_end_sends_close_notify_then_fin(loop, sctx, cctx):
    """A stdlib client sees a clean TLS shutdown (close_notify), not a ragged EOF."""
    srv = bunsock.listen(hostname="127.0.0.1", port=0, tls=sctx, loop=loop,
                         socket={"data": lambda s, b: s.end(b"bye " + bytes(b))})
    result = {}

    def client():
        try:
            raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            with cctx.wrap_socket(raw, server_hostname="localhost",
                                  suppress_ragged_eofs=False) as c:
                c.sendall(b"now")
                data = b""
                while True:
                    chunk = c.recv(100)   # SSLEOFError on a FIN without close_notify
                    if not chunk:
                        break
                    data += chunk
                result["data"] = data
        except Exception as e:  # pragma: no cover - reported below
            result["exc"] = e
        finally:
            loop.call_soon_threadsafe(srv.stop, True)

    t = threading.Thread(target=client)
    t.start()
    run(loop)
    t.join(10)
    assert "exc" not in result, result
    assert result["data"] == b"bye now"


def test_end_over_tls_between_bunsock_peers(loop, sctx, cctx, no_leaks):
    events = []

    class Srv:
        def data(self, sock, buf):
            events.append(("srv-data", bytes(buf)))

        def end(self, sock):
            events.append(("srv-end",))
            sock.write(b"late reply")    # half-open: still writable
            sock.end()

        def close(self, sock, err):
            events.append(("srv-close", err))

    class Cli:
        def open(self, sock):
            sock.end(b"request")
            assert sock.ready_state == "closing"
            assert sock.write(b"too late") == -1

        def data(self, sock, buf):
            events.append(("cli-data", bytes(buf)))

        def end(self, sock):
            events.append(("cli-end",))

        def close(self, sock, err):
            events.append(("cli-close", err))
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), tls=sctx, loop=loop,
                         allow_half_open=True)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx, loop=loop)
    run(loop)
    assert ("srv-data", b"request") in events
    assert events.index(("srv-end",)) > events.index(("srv-data", b"request"))
    assert ("cli-data", b"late reply") in events
    assert ("cli-end",) in events
    assert ("cli-close", None) in events and ("srv-close", None) in events


def test_drain_and_buffered_amount_over_tls(loop, sctx, cctx):
    total = 8 * 1024 * 1024
    state = {"drains": 0, "max_buffered": 0, "received": 0}

    class Srv:
        def open(self, sock):
            sock.pause()
            loop.call_later(0.3, sock.resume)

        def data(self, sock, buf):
            state["received"] += len(buf)
            if state["received"] >= total:
                sock.end()

    class Cli:
        def open(self, sock):
            shrink_sndbuf(sock)             # the kernel must refuse most of it, on any machine
            r = sock.write(b"z" * total)
            assert r == total
            state["max_buffered"] = sock.buffered_amount

        def drain(self, sock):
            state["drains"] += 1
            state["after_drain"] = sock.buffered_amount

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), tls=sctx, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx, loop=loop)
    run(loop, 30)
    assert state["received"] == total
    assert state["max_buffered"] >= total // 2     # a 64 KiB send buffer cannot take 8 MiB
    assert state["drains"] == 1 and state["after_drain"] == 0


def test_high_water_mark_caps_plaintext(loop, sctx, cctx):
    # Independent of the machine's socket buffer sizes: the server does not read until the
    # client has written until a write came back short (the kernel refused and the mark is hit).
    hwm = 64 * 1024
    chunk = b"a" * 1_000_000
    state = {"accepted": 0, "received": 0}

    class Srv:
        def open(self, sock):
            sock.pause()
            loop.call_later(0.3, sock.resume)

        def data(self, sock, buf):
            state["received"] += len(buf)

        def close(self, sock, err):
            srv.stop()

    class Cli:
        def open(self, sock):
            for _ in range(64):             # bounded: 64 MB
                n = sock.write(chunk)       # nothing buffered: the first is taken whole
                state["accepted"] += n
                if n < len(chunk):
                    break
            state["short"] = n < len(chunk)
            state["buffered"] = sock.buffered_amount
            state["next"] = sock.write(b"b" * 1000)

        def drain(self, sock):
            state["drained"] = sock.buffered_amount
            sock.end()

        def data(self, sock, buf):
            pass

    srv = bunsock.listen(hostname="127.0.0.1", port=0, tls=sctx, loop=loop, socket=Srv(),
                         allow_half_open=False)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx, loop=loop,
                    high_water_mark=hwm)
    run(loop, 60)
    assert state["short"], "the kernel never refused 64 MB with the reader paused"
    assert state["buffered"] >= hwm and state["next"] == 0
    assert state["drained"] == 0
    assert state["received"] == state["accepted"]


def test_pause_resume_over_tls_keeps_buffered_records(loop, sctx, cctx):
    got = bytearray()
    payload = os.urandom(300_000)

    class Srv:
        def data(self, sock, buf):
            got.extend(buf)
            # pause after every chunk: what is left in TLS must come after resume
            sock.pause()
            loop.call_later(0.001, sock.resume)
            if len(got) == len(payload):
                sock.end()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), tls=sctx, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, tls=cctx, loop=loop,
                    socket={"open": lambda s: s.write(payload), "data": lambda s, b: None,
                            "close": lambda s, e: srv.stop()})
    run(loop, 30)
    assert bytes(got) == payload


def test_close_notify_while_paused_ends_after_resume(loop, sctx, cctx):
    events = []

    class Srv:
        def data(self, sock, buf):
            events.append(("data", bytes(buf)))
            sock.pause()
            loop.call_later(0.05, lambda: (events.append(("resume",)), sock.resume()))

        def end(self, sock):
            events.append(("end",))

        def close(self, sock, err):
            events.append(("close", err))
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), tls=sctx, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, tls=cctx, loop=loop,
                    socket={"open": lambda s: s.end(b"last words"), "data": lambda s, b: None})
    run(loop)
    assert events == [("data", b"last words"), ("resume",), ("end",), ("close", None)]


def test_corrupt_record_after_handshake_reports_error_and_closes(loop, sctx, cctx):
    seen = []

    class Srv(Echo):
        def error(self, sock, exc):
            seen.append(("error", exc))

        def close(self, sock, err):
            seen.append(("close", err))
            srv.stop(True)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), tls=sctx, loop=loop)

    def client():
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        c = cctx.wrap_socket(raw, server_hostname="localhost")
        try:
            c.sendall(b"hi")
            c.recv(10)
            # an application-data record that does not decrypt
            os.write(c.fileno(), b"\x17\x03\x03\x00\x20" + os.urandom(32))
            try:
                c.recv(10)
            except (OSError, ssl.SSLError):
                pass
        finally:
            c.close()

    t = threading.Thread(target=client)
    t.start()
    run(loop)
    t.join(10)
    assert [k for k, _ in seen] == ["error", "close"]
    assert isinstance(seen[0][1], ssl.SSLError) and seen[1][1] is seen[0][1]


def test_handshake_handler_raising_reports_and_closes(loop, sctx, cctx, expected_errors):
    seen = []

    class Cli:
        def handshake(self, sock, ok, err):
            raise RuntimeError("boom")

        def error(self, sock, exc):
            seen.append(("error", type(exc)))

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            seen.append(("close", err))
            srv.stop(True)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=sctx, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx, loop=loop)
    run(loop)
    assert seen == [("error", RuntimeError), ("close", None)]
    assert [str(e) for e, _ in expected_errors] == ["boom"]


def test_write_then_close_in_handler_sends_reply(loop, sctx, cctx):
    got = []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, tls=sctx, loop=loop,
                         socket={"data": lambda s, b: (s.write(b"reply:" + bytes(b)), s.close())})
    bunsock.connect(hostname="127.0.0.1", port=srv.port, tls=cctx, loop=loop,
                    socket={"open": lambda s: s.write(b"q"), "data": lambda s, b: got.append(b),
                            "close": lambda s, e: srv.stop()})
    run(loop)
    assert b"".join(got) == b"reply:q"


def test_many_small_writes_in_one_handler_one_send(loop, sctx, cctx):
    stats = {}

    class Srv:
        def data(self, sock, buf):
            before = loop.stats()["sends"]
            for i in range(50):
                sock.write(b"%d," % i)
            stats["buffered"] = sock.buffered_amount
            stats["before"] = before

        def drain(self, sock):
            pass

    got = bytearray()
    expect = b"".join(b"%d," % i for i in range(50))
    srv = bunsock.listen(hostname="127.0.0.1", port=0, tls=sctx, loop=loop, socket=Srv())

    def cli_data(s, b):
        got.extend(b)
        if len(got) >= len(expect):
            stats["after"] = loop.stats()["sends"]
            s.close()
            srv.stop(True)

    bunsock.connect(hostname="127.0.0.1", port=srv.port, tls=cctx, loop=loop,
                    socket={"open": lambda s: s.write(b"go"), "data": cli_data})
    run(loop)
    assert bytes(got) == expect
    assert stats["buffered"] == 0       # corked, not refused by the kernel: not a backlog
    assert stats["after"] - stats["before"] == 1    # one send for the 50 writes


def test_alpn_negotiation(loop, files):
    seen = {}

    class Srv(Echo):
        def handshake(self, sock, ok, err):
            seen["srv"] = sock.alpn_protocol

    class Cli:
        def handshake(self, sock, ok, err):
            seen["cli"] = (ok, sock.alpn_protocol)
            sock.end()

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), loop=loop,
                         tls={"cert": files["cert"], "key": files["key"], "alpn": ["h2", "http/1.1"]})
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), loop=loop,
                    tls={"ca": files["ca"], "alpn": ["spdy/3", "http/1.1"]})
    run(loop)
    assert seen == {"srv": "http/1.1", "cli": (True, "http/1.1")}


def test_mutual_tls_with_mapping(loop, files):
    seen = {}

    class Srv(Echo):
        def handshake(self, sock, ok, err):
            seen["srv"] = (ok, sock.authorized, dict(x[0] for x in
                                                      sock.getpeercert()["subject"]))

    class Cli:
        def handshake(self, sock, ok, err):
            seen["cli"] = (ok, sock.authorized)
            sock.end()

        def data(self, sock, buf):
            pass

        def close(self, sock, err):
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), loop=loop,
                         tls={"cert": files["cert"], "key": files["key"], "ca": files["ca"]})
    bunsock.connect(hostname="localhost", port=srv.port, socket=Cli(), loop=loop,
                    tls={"ca": files["ca"], "cert": files["client_cert"],
                         "key": files["client_key"]})
    run(loop)
    assert seen["cli"] == (True, True)
    assert seen["srv"][0:2] == (True, True)


def test_mtls_required_rejects_client_without_certificate(loop, files):
    seen = []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, loop=loop, socket=Echo(),
                         tls={"cert": files["cert"], "key": files["key"], "ca": files["ca"]})

    class Cli:
        def open(self, sock):
            sock.write(b"x")   # TLS 1.3: the client learns of the rejection after its Finished

        def data(self, sock, buf):
            seen.append(buf)

        def close(self, sock, err):
            seen.append(err)
            srv.stop(True)

    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), loop=loop,
                    tls={"ca": files["ca"]})
    run(loop)
    assert isinstance(seen[-1], ssl.SSLError)


def test_verify_false_connects_unauthorized(loop, sctx):
    seen = {}
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=sctx, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop,
                    tls={"reject_unauthorized": False},
                    socket={"open": lambda s: (seen.setdefault("auth", s.authorized), s.end()),
                            "data": lambda s, b: None, "close": lambda s, e: srv.stop()})
    run(loop)
    assert seen["auth"] is False


@pytest.mark.parametrize("tls, exc, words", [
    ({"cert": "x", "bogus": 1}, TypeError, "bogus"),
    ({"verify": "yes"}, TypeError, "bool"),
    ({"alpn": "h2"}, TypeError, "alpn"),
    ({"key": "k.pem"}, ValueError, "without 'cert'"),
    (42, TypeError, "tls"),
    ({"verify": True, "reject_unauthorized": False}, ValueError, "disagree"),
])
def test_bad_client_tls_options(loop, tls, exc, words):
    with pytest.raises(exc, match=words):
        bunsock.connect(hostname="127.0.0.1", port=1, tls=tls, socket=Echo(), loop=loop)


def test_bad_server_tls_options(loop, files):
    with pytest.raises(ValueError, match="certificate"):
        bunsock.listen(hostname="127.0.0.1", port=0, tls=True, socket=Echo(), loop=loop)
    with pytest.raises(ValueError, match="cert"):
        bunsock.listen(hostname="127.0.0.1", port=0, tls={"alpn": ["h2"]}, socket=Echo(),
                       loop=loop)
    with pytest.raises(TypeError, match="unknown"):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop,
                       tls={"cert": files["cert"], "key": files["key"], "sni": "x"})
    with pytest.raises(ValueError):   # a client context cannot serve
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop,
                       tls=ssl.create_default_context())
    with pytest.raises(FileNotFoundError):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop,
                       tls={"cert": "/nonexistent.pem"})


def test_unix_socket_needs_server_name_for_verification(loop, tmp_path, sctx, cctx):
    path = str(tmp_path / "t.sock")
    with pytest.raises(ValueError, match="server_name"):
        bunsock.connect(unix=path, tls=True, socket=Echo(), loop=loop)
    got = bytearray()
    srv = bunsock.listen(unix=path, socket=Echo(), tls=sctx, loop=loop)
    bunsock.connect(unix=path, loop=loop, tls={"ca": _ca_pem(cctx), "server_name": "localhost"},
                    socket={"open": lambda s: s.write(b"over unix"),
                            "data": lambda s, b: (got.extend(b), s.end()),
                            "close": lambda s, e: srv.stop()})
    run(loop)
    assert bytes(got) == b"over unix"


def test_tls_interop_stdlib_server(loop, sctx, cctx):
    """bunsock client against a plain stdlib ssl server (blocking, in a thread)."""
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def serve():
        conn, _ = lsock.accept()
        with sctx.wrap_socket(conn, server_side=True) as c:
            data = b""
            while not data.endswith(b"!"):
                data += c.recv(65536)
            c.sendall(data.upper())
            c.unwrap()
        lsock.close()

    t = threading.Thread(target=serve)
    t.start()
    got = bytearray()
    bunsock.connect(hostname="localhost", port=port, tls=cctx, loop=loop,
                    socket={"open": lambda s: s.write(b"a" * 100_000 + b"!"),
                            "data": lambda s, b: got.extend(b)})
    run(loop)
    t.join(10)
    assert bytes(got) == b"A" * 100_000 + b"!"


# --- STARTTLS ------------------------------------------------------------------------------


def test_starttls_smtp_like_exchange(loop, sctx, cctx, no_leaks):
    log = []

    class Srv:
        def open(self, sock):
            sock.write(b"220 bunsock ESMTP\r\n")

        def data(self, sock, buf):
            line = bytes(buf)
            log.append(("S<", line))
            if line == b"STARTTLS\r\n":
                sock.write(b"220 go ahead\r\n")      # plaintext, flushed before the handshake
                sock.upgrade_tls(sctx, server_side=True)
                sock.write(b"250 first words over TLS\r\n")   # held until the handshake is done
            elif line == b"EHLO me\r\n":
                assert sock.version() is not None
                sock.write(b"250 hello " + str(sock.authorized).encode() + b"\r\n")
            elif line == b"QUIT\r\n":
                sock.end(b"221 bye\r\n")

        def handshake(self, sock, ok, err):
            log.append(("S-hs", ok, err))

    class Cli:
        def data(self, sock, buf):
            line = bytes(buf)
            log.append(("C<", line))
            if line.startswith(b"220 bunsock"):
                sock.write(b"STARTTLS\r\n")
            elif line == b"220 go ahead\r\n":
                same = sock.upgrade_tls(cctx, server_hostname="localhost")
                assert same is sock
            elif line.startswith(b"250 first"):
                sock.write(b"EHLO me\r\n")
            elif line.startswith(b"250 hello"):
                sock.write(b"QUIT\r\n")

        def handshake(self, sock, ok, err):
            log.append(("C-hs", ok, err, sock.authorized))

        def close(self, sock, err):
            log.append(("C-close", err))
            srv.stop()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), loop=loop)
    c = bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), loop=loop)
    run(loop)
    lines = [e[1] for e in log if e[0] == "C<"]
    assert lines == [b"220 bunsock ESMTP\r\n", b"220 go ahead\r\n",
                     b"250 first words over TLS\r\n", b"250 hello False\r\n", b"221 bye\r\n"]
    assert ("S-hs", True, None) in log
    assert ("C-hs", True, None, True) in log
    assert log[-1] == ("C-close", None)


def test_starttls_with_stdlib_client(loop, sctx, cctx):
    """The server upgrades after a plaintext greeting; a stdlib client wraps its socket."""
    class Srv:
        def open(self, sock):
            sock.write(b"READY\n")

        def data(self, sock, buf):
            if bytes(buf) == b"STARTTLS\n":
                sock.write(b"GO\n")
                sock.upgrade_tls(sctx, server_side=True)
            else:
                sock.write(b"secure:" + bytes(buf))

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), loop=loop)
    result = {}

    def client():
        try:
            raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            f = b""
            while not f.endswith(b"READY\n"):
                f += raw.recv(100)
            raw.sendall(b"STARTTLS\n")
            g = b""
            while not g.endswith(b"GO\n"):
                g += raw.recv(100)
            with cctx.wrap_socket(raw, server_hostname="localhost") as c:
                c.sendall(b"hello")
                result["reply"] = c.recv(100)
                result["cipher"] = c.cipher()
        except Exception as e:  # pragma: no cover
            result["exc"] = e
        finally:
            loop.call_soon_threadsafe(srv.stop, True)

    t = threading.Thread(target=client)
    t.start()
    run(loop)
    t.join(10)
    assert "exc" not in result, result
    assert result["reply"] == b"secure:hello"


def test_upgrade_tls_errors(loop, sctx, cctx):
    seen = []

    class Srv(Echo):
        def open(self, sock):
            with pytest.raises(ValueError, match="certificate"):
                sock.upgrade_tls(True, server_side=True)
            sock.upgrade_tls(sctx, server_side=True)
            with pytest.raises(ValueError, match="already"):
                sock.upgrade_tls(sctx, server_side=True)
            seen.append("ok")
            sock.close()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop,
                    socket={"data": lambda s, b: None, "close": lambda s, e: srv.stop()})
    run(loop)
    assert seen == ["ok"]


# --- scale and leaks -------------------------------------------------------------------------


def test_200_concurrent_tls_connections(loop, sctx, cctx, no_leaks):
    n = 200
    state = {"done": 0, "errors": [], "echoed": 0}
    msg = os.urandom(2000)

    class Cli:
        def open(self, sock):
            sock.data = bytearray()
            sock.write(msg)

        def data(self, sock, buf):
            sock.data.extend(buf)
            if len(sock.data) == len(msg):
                assert bytes(sock.data) == msg
                state["echoed"] += 1
                sock.end()

        def close(self, sock, err):
            if err is not None:
                state["errors"].append(err)
            state["done"] += 1
            if state["done"] == n:
                srv.stop(True)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=sctx, loop=loop)
    peak = {"n": 0}
    sampler = loop.call_every(0.01, lambda: peak.__setitem__("n", max(peak["n"],
                                                                       srv.connections)))
    sampler.unref()
    for _ in range(n):
        bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx, loop=loop)
    run(loop, 60)
    sampler.cancel()
    assert state["done"] == n and not state["errors"]
    assert state["echoed"] == n        # every echo was checked whole
    assert peak["n"] > n // 2      # they really were open at the same time


def _heap_in_use():
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                                                   "hblkhd", "usmblks", "fsmblks", "uordblks",
                                                   "fordblks", "keepcost")]
    try:
        f = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    f.restype = MallInfo2
    m = f()
    return m.uordblks + m.hblkhd


def test_bulk_transfer_leaves_no_big_buffers_per_connection(loop, sctx, cctx):
    """After 4 MiB each way, an idle TLS connection holds no per-connection buffer of that size
    (OpenSSL's memory BIOs never shrink: bunsock feeds and encrypts in small pieces)."""
    conns, size = 8, 4 * 1024 * 1024
    payload = os.urandom(size)
    st = {"open": 0, "done": 0}

    class Cli:
        def open(self, sock):
            sock.data = 0
            st["open"] += 1
            if st["open"] == conns:
                gc.collect()
                st["base"] = _heap_in_use()
                for s in socks:
                    s.write(payload)

        def data(self, sock, buf):
            sock.data += len(buf)
            if sock.data == size:
                st["done"] += 1
                if st["done"] == conns:
                    # Sinks keep their storage across drains (hysteresis) and release it once
                    # it has stayed unused for a sweep period (0.5 s): measure after two.
                    loop.call_later(1.1, measure)

    def measure():
        gc.collect()
        st["after"] = _heap_in_use()
        srv.stop(True)
        for s in socks:
            s.close()

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=sctx, loop=loop)
    socks = [bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx,
                             loop=loop) for _ in range(conns)]
    run(loop, 60)
    assert st["done"] == conns
    per_conn = (st["after"] - st["base"]) / conns   # client and server side together
    print("heap growth per connection: %.0f KiB" % (per_conn / 1024))
    assert per_conn < 512 * 1024, "%.0f KiB left per connection" % (per_conn / 1024)


@pytest.fixture
def no_heap_trim():
    # After a burst of handshakes the TLS layer arms one short unref'd timer to malloc_trim():
    # a Timer object that is alive for ~0.1 s and would make Timer counts flicker.
    from bunsock import _tls
    prev = _tls._heap_trim(False)
    yield
    _tls._heap_trim(prev)


def test_no_leaks_after_500_tls_cycles(loop, sctx, cctx, no_heap_trim):
    cycles = 500
    state = {"left": cycles, "errors": []}

    class Cli:
        def open(self, sock):
            sock.write(b"ping")

        def data(self, sock, buf):
            sock.close()

        def close(self, sock, err):
            if err is not None:
                state["errors"].append(err)
            state["left"] -= 1
            if state["left"]:
                bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx,
                                loop=loop)
            else:
                srv.stop(True)

    def start():
        bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=cctx, loop=loop)

    # warm-up (first-use allocations in ssl/OpenSSL), then measure
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=sctx, loop=loop)
    state["left"] = 5
    start()
    run(loop, 30)
    gc.collect()
    fds, counts = open_fds(), debug_counts()
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=sctx, loop=loop)
    state["left"] = cycles
    start()
    run(loop, 60)
    assert state["left"] == 0 and not state["errors"]
    gc.collect()
    assert open_fds() == fds
    assert debug_counts() == counts
    assert not [o for o in gc.get_objects() if type(o).__name__ == "TLSState"]


def test_starttls_reply_before_a_cut_tls_write_survives_close(loop, sctx, no_leaks):
    """Inside one handler: a plaintext reply (corked), upgrade_tls(), a TLS write that
    high_water_mark refuses, close(). The reply was never refused by the kernel: close() must
    still send it, as it does for any corked write (it is not a backlog to drop)."""
    from conftest import run_until
    seen = {}

    class Srv:
        def data(self, sock, buf):
            sock.write(b"220 go ahead\r\n")
            sock.upgrade_tls(sctx, server_side=True)
            seen["accepted"] = sock.write(b"x" * 100)
            seen["buffered"] = sock.buffered_amount
            sock.close()

    got = bytearray()
    closed = []
    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), loop=loop,
                         high_water_mark=20)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop, socket={
        "open": lambda s: s.write(b"STARTTLS\r\n"), "data": lambda s, b: got.extend(b),
        "close": lambda s, e: closed.append(e)})
    run_until(loop, lambda: closed)
    assert bytes(got) == b"220 go ahead\r\n"
    # the corked reply went to the kernel first; then nothing was held: the TLS write was
    # taken whole, held for the handshake that never came
    assert seen == {"accepted": 100, "buffered": 100}
    srv.stop()
    run(loop)


def test_flush_sends_plaintext_a_callback_wrote(loop, sctx, cctx, no_leaks):
    """flush() inside a callback pushes what TLS corked (as close() does), not only raw bytes."""
    from conftest import run_until
    got = bytearray()
    res = []

    def tick(sock):
        before = sock.bytes_written
        sock.write(b"ping")
        sock.flush()
        res.append(sock.bytes_written - before)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, tls=sctx, loop=loop,
                         socket={"data": lambda s, b: got.extend(b)})
    c = bunsock.connect(hostname="127.0.0.1", port=srv.port, loop=loop, tls=cctx,
                        socket={"open": lambda s: loop.call_soon(tick, s),
                                "data": lambda s, b: None})
    run_until(loop, lambda: got == b"ping")
    assert res and res[0] > 4           # a TLS record went out inside flush()
    c.close()
    srv.stop(True)
    run(loop)
