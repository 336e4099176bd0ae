"""The TLS surface Bun has, as far as Python's ssl allows: session resumption, the local
certificate, server_hostname, certificates and keys from memory (and chains as lists),
pause_on_connect with TLS, and one record per handler's writes."""
import ssl

import pytest

trustme = pytest.importorskip("trustme")

import bunsock
from conftest import run

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def leaf(ca):
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def pems(ca, leaf):
    return {"ca": ca.cert_pem.bytes().decode(),
            "cert": leaf.cert_chain_pems[0].bytes(),          # bytes PEM
            "key": leaf.private_key_pem.bytes().decode()}     # str PEM


class Echo:
    def data(self, sock, buf):
        sock.write(buf)


def one_exchange(loop, server_tls, client_tls, msg=b"hello", **connect_kw):
    """Connect, send msg, read the echo, close; returns what the client saw."""
    seen = {}

    class Cli:
        def open(self, sock):
            sock.write(msg)

        def data(self, sock, buf):
            seen.setdefault("echo", b"")
            seen["echo"] += buf
            if len(seen["echo"]) >= len(msg):
                seen["session"] = sock.session
                seen["reused"] = sock.session_reused
                seen["server_hostname"] = sock.server_hostname
                seen["cert"] = sock.getcertificate()
                seen["peer"] = sock.getpeercert(True)
                sock.close()

        def close(self, sock, err):
            seen["err"] = err
            srv.stop(True)

        def connect_error(self, sock, exc):
            seen["connect_error"] = exc
            srv.stop(True)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=server_tls, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), tls=client_tls,
                    loop=loop, **connect_kw)
    run(loop, 20)
    return seen


def test_cert_key_and_ca_from_memory(loop, no_leaks, pems, leaf):
    server_tls = {"cert": pems["cert"], "key": pems["key"]}
    seen = one_exchange(loop, server_tls, {"ca": pems["ca"], "server_name": "localhost"})
    assert seen["echo"] == b"hello" and seen["err"] is None
    assert seen["peer"] == ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def test_cert_chain_as_a_list(loop, no_leaks):
    root = trustme.CA()
    inter = root.create_child_ca()
    leaf = inter.issue_cert("localhost")
    chain = [leaf.cert_chain_pems[0].bytes(), inter.cert_pem.bytes()]
    server_tls = {"cert": chain, "key": leaf.private_key_pem.bytes()}
    # The client trusts only the root: the intermediate must come from the server's list.
    seen = one_exchange(loop, server_tls, {"ca": root.cert_pem.bytes().decode(),
                                           "server_name": "localhost"})
    assert seen["echo"] == b"hello" and seen["err"] is None


def test_bad_pem_raises_at_listen(loop, no_leaks, pems):
    with pytest.raises(ssl.SSLError):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop,
                       tls={"cert": "-----BEGIN CERTIFICATE-----\nnope\n-----END "
                                    "CERTIFICATE-----\n", "key": pems["key"]})
    with pytest.raises(ValueError):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop,
                       tls={"cert": [], "key": pems["key"]})


def test_a_missing_certificate_key_or_ca_file_is_named(loop, no_leaks, pems, tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_bytes(pems["cert"])
    key = tmp_path / "key.pem"
    key.write_text(pems["key"])
    missing = tmp_path / "nope.pem"
    for where, tls, listening in (
            ("cert", {"cert": str(missing), "key": str(key)}, True),
            ("key", {"cert": cert, "key": missing}, True),        # os.PathLike too
            ("ca", {"ca": str(missing)}, False),
            ("cert", {"cert": [str(cert), str(missing)], "key": str(key)}, True)):
        with pytest.raises(FileNotFoundError) as e:
            if listening:
                bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=tls, loop=loop)
            else:
                bunsock.connect(hostname="127.0.0.1", port=9, socket=Echo(), tls=tls, loop=loop)
        assert e.value.filename == str(missing)
        assert "tls[%r] file not found" % where in str(e.value) and str(missing) in str(e.value)


def test_a_file_that_is_not_pem_is_named(loop, no_leaks, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ssl.SSLError, match=r"\(loading tls\['cert'\] %s, tls\['key'\] %s\)"
                       % (bad, bad)):
        bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop,
                       tls={"cert": str(bad), "key": str(bad)})
    with pytest.raises(ssl.SSLError, match=r"\(loading tls\['ca'\] %s\)" % bad):
        bunsock.connect(hostname="127.0.0.1", port=9, socket=Echo(), loop=loop,
                        tls={"ca": str(bad)})


@pytest.mark.parametrize("key, meant", [("rejectUnauthorized", "reject_unauthorized"),
                                        ("serverName", "server_name"),
                                        ("ALPNProtocols", "alpn"), ("cafile", "ca"),
                                        ("certfile", "cert"), ("pasphrase", "passphrase")])
def test_bun_and_python_spellings_in_tls_get_a_did_you_mean(loop, key, meant):
    with pytest.raises(TypeError, match=r"unknown tls option\(s\) %r \(did you mean %r\?\)"
                       % (key, meant)):
        bunsock.connect(hostname="127.0.0.1", port=9, socket=Echo(), tls={key: False},
                        loop=loop)


def test_local_certificate_and_server_hostname(loop, no_leaks, pems, leaf):
    seen = one_exchange(loop, {"cert": pems["cert"], "key": pems["key"]},
                        {"ca": pems["ca"], "server_name": "localhost"})
    assert seen["server_hostname"] == "localhost"
    assert seen["cert"] is None              # this client presented no certificate
    got = {}

    class Srv:
        def data(self, sock, buf):
            got["cert"] = sock.getcertificate()
            got["server_hostname"] = sock.server_hostname
            sock.write(buf)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), loop=loop,
                         tls={"cert": pems["cert"], "key": pems["key"]})

    class Cli:
        def open(self, sock):
            sock.write(b"x")

        def data(self, sock, buf):
            sock.close()
            srv.stop(True)

    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), loop=loop,
                    tls={"ca": pems["ca"], "server_name": "localhost"})
    run(loop, 20)
    assert got["cert"] == ssl.PEM_cert_to_DER_cert(pems["cert"].decode())
    assert got["server_hostname"] is None


def test_plaintext_socket_has_no_tls_identity(loop, no_leaks):
    seen = {}

    class Cli:
        def open(self, sock):
            seen.update(session=sock.session, reused=sock.session_reused,
                        name=sock.server_hostname, cert=sock.getcertificate())
            sock.close()
            srv.stop(True)

        def data(self, sock, buf):
            pass

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), loop=loop)
    run(loop, 10)
    assert seen == {"session": None, "reused": False, "name": None, "cert": None}


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_session_resumption(loop, no_leaks, pems, version):
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_verify_locations(cadata=pems["ca"])
    server = {"cert": pems["cert"], "key": pems["key"]}
    sctx = bunsock._tlsconfig.server_context(server)
    v = getattr(ssl.TLSVersion, version)
    sctx.minimum_version = sctx.maximum_version = v
    client = {"ca": pems["ca"], "server_name": "localhost"}
    first = one_exchange(loop, sctx, client)
    assert first["reused"] is False
    sess = first["session"]
    assert isinstance(sess, ssl.SSLSession)
    # The same tls= mapping gives the same context: the session can be resumed with it.
    second = one_exchange(loop, sctx, client, session=sess)
    assert second["echo"] == b"hello" and second["reused"] is True


def test_session_argument_checks(loop, pems):
    with pytest.raises(TypeError, match="SSLSession"):
        bunsock.connect(hostname="127.0.0.1", port=1, socket=Echo(), loop=loop,
                        tls={"ca": pems["ca"], "server_name": "localhost"}, session="x")
    with pytest.raises(ValueError, match="tls="):
        bunsock.connect(hostname="127.0.0.1", port=1, socket=Echo(), loop=loop,
                        session=object())


def test_session_from_another_context_is_refused(loop, no_leaks, pems):
    first = one_exchange(loop, {"cert": pems["cert"], "key": pems["key"]},
                         {"ca": pems["ca"], "server_name": "localhost"})
    other = ssl.create_default_context(cadata=pems["ca"])
    with pytest.raises(ValueError, match="same tls="):
        bunsock.connect(hostname="127.0.0.1", port=1, socket=Echo(), loop=loop, tls=other,
                        session=first["session"])
    assert loop.refs == 0


def test_pause_on_connect_with_tls(loop, no_leaks, pems):
    events = []

    class Srv:
        def open(self, sock):
            events.append(("srv-open", sock.paused, sock.authorized is not None))
            loop.call_later(0.2, sock.resume)

        def data(self, sock, buf):
            events.append(("srv-data", buf))
            sock.write(buf)

    class Hs:
        # With a handshake handler, open fires before the handshake: the pause comes at the
        # handshake, once it has run.
        def open(self, sock):
            events.append(("cli-open", sock.paused))

        def handshake(self, sock, ok, err):
            events.append(("cli-handshake", ok, sock.paused))
            sock.write(b"tls early")
            sock.resume()

        def data(self, sock, buf):
            events.append(("cli-data", buf))
            sock.close()
            srv.stop(True)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(), pause_on_connect=True,
                         tls={"cert": pems["cert"], "key": pems["key"]}, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Hs(), pause_on_connect=True,
                    tls={"ca": pems["ca"], "server_name": "localhost"}, loop=loop)
    run(loop, 20)
    assert ("cli-open", False) in events and ("cli-handshake", True, True) in events
    assert ("srv-open", True, True) in events
    assert events[-2:] == [("srv-data", b"tls early"), ("cli-data", b"tls early")]


def test_writes_in_one_handler_become_one_record(loop, no_leaks, pems):
    """Ten small writes in one handler are sealed into one TLS record, not ten: counted on the
    wire, 100 bytes of plaintext cost one record's overhead (22 bytes with TLS 1.3 AES-GCM)."""
    sizes = {}
    got = bytearray()

    class Srv:
        def data(self, sock, buf):
            got.extend(buf)
            if len(got) >= 100:
                sock.close()
                srv.stop(True)

    class Cli:
        def handshake(self, sock, ok, err):
            sizes["before"] = sock.bytes_written
            for i in range(10):
                sock.write(b"%010d" % i)
            sizes["corked"] = sock.bytes_written
            loop.call_soon(lambda: sizes.__setitem__("after", sock.bytes_written))

        def data(self, sock, buf):
            pass

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(),
                         tls={"cert": pems["cert"], "key": pems["key"]}, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(),
                    tls={"ca": pems["ca"], "server_name": "localhost"}, loop=loop)
    run(loop, 20)
    assert bytes(got) == b"".join(b"%010d" % i for i in range(10))
    assert sizes["corked"] == sizes["before"]          # nothing leaves inside the handler
    # TLS 1.3 record: 5-byte header + plaintext + 1 content-type byte + 16-byte tag.
    assert sizes["after"] - sizes["before"] == 100 + 22


def test_large_and_corked_tls_writes_keep_order(loop, no_leaks, pems):
    """Coalescing keeps bytes in order across small writes, a write past the cork limit, and
    a cork() block outside handlers."""
    parts = [b"a" * 10, b"b" * 70000, b"c" * 5, bytes(range(256)) * 300, b"end"]
    want = b"".join(parts) * 2
    got = bytearray()

    class Srv:
        def data(self, sock, buf):
            got.extend(buf)
            if len(got) >= len(want):
                sock.close()
                srv.stop(True)

    class Cli:
        def open(self, sock):
            for p in parts:
                sock.write(p)
            loop.call_soon(self.more, sock)

        def more(self, sock):
            with sock.cork():
                for p in parts:
                    sock.write(p)

        def data(self, sock, buf):
            pass

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Srv(),
                         tls={"cert": pems["cert"], "key": pems["key"]}, loop=loop)
    bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(),
                    tls={"ca": pems["ca"], "server_name": "localhost"}, loop=loop)
    run(loop, 20)
    assert bytes(got) == want
