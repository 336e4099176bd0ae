"""Unix-domain sockets: listen(unix=...) / connect(unix=...), abstract names, unlink on stop,
stale socket files."""
import errno
import os
import select
import socket
import sys
import uuid

import pytest

import bunsock
from conftest import run, run_until

pytestmark = pytest.mark.timeout(60)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="abstract unix names are Linux-only")


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "s.sock")


class Echo:
    def data(self, sock, buf):
        sock.write(buf)


def _echo_roundtrip(loop, srv_kwargs, cli_kwargs, payload):
    got = bytearray()
    seen = {}

    class Cli:
        def open(self, sock):
            seen["addr"] = (sock.remote_address, sock.remote_port, sock.local_address,
                            sock.local_port, sock.family)
            sock.write(payload)

        def data(self, sock, buf):
            got.extend(buf)
            if len(got) >= len(payload):
                sock.end()

        def close(self, sock, err):
            seen["err"] = err
            srv.stop()

        def connect_error(self, sock, exc):
            seen["err"] = exc
            srv.stop()

    class Srv(Echo):
        def open(self, sock):
            seen["srv_addr"] = (sock.remote_address, sock.remote_port, sock.local_address,
                                sock.local_port)

    srv = bunsock.listen(socket=Srv(), loop=loop, **srv_kwargs)
    bunsock.connect(socket=Cli(), loop=loop, **cli_kwargs)
    run(loop)
    assert seen.get("err") is None
    assert bytes(got) == payload
    return srv, seen


def test_unix_echo_and_unlink_on_stop(loop, path, no_leaks):
    payload = os.urandom(300_000)
    srv, seen = _echo_roundtrip(loop, dict(unix=path), dict(unix=path), payload)
    assert srv.unix == path and srv.port is None and srv.hostname is None
    # addresses make no sense on a unix socket
    assert seen["addr"] == (None, None, None, None, None)
    assert seen["srv_addr"] == (None, None, None, None)
    assert not os.path.exists(path), "stop() must unlink the socket file"


def test_unix_path_as_pathlike_and_bytes(loop, tmp_path, no_leaks):
    p = tmp_path / "b.sock"
    srv = bunsock.listen(unix=p, socket=Echo(), loop=loop)
    assert os.path.exists(p)
    srv.stop()
    assert not os.path.exists(p)
    srv = bunsock.listen(unix=os.fsencode(str(p)), socket=Echo(), loop=loop)
    assert os.path.exists(p)
    srv.stop()
    assert not os.path.exists(p)


def test_unix_one_byte_echo_with_stdlib_client(loop, path):
    srv = bunsock.listen(unix=path, socket=Echo(), loop=loop)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    c.sendall(b"x")
    run_until(loop, lambda: select.select([c], [], [], 0)[0], what="the echo reached the client")
    assert c.recv(10) == b"x"
    c.close()
    srv.stop(True)


@linux_only
def test_abstract_name_echo_and_no_unlink(loop, tmp_path, no_leaks):
    name = "\0bunsock-test-" + uuid.uuid4().hex
    before = set(os.listdir(tmp_path))
    srv, _ = _echo_roundtrip(loop, dict(unix=name), dict(unix=name), b"abstract!" * 1000)
    assert srv.unix == name
    assert set(os.listdir(tmp_path)) == before
    # the name is free again once the listener is gone
    srv2 = bunsock.listen(unix=name, socket=Echo(), loop=loop)
    with pytest.raises(OSError) as ei:
        bunsock.listen(unix=name, socket=Echo(), loop=loop)
    assert ei.value.errno == errno.EADDRINUSE
    srv2.stop()


@linux_only
def test_abstract_name_reachable_by_stdlib(loop):
    name = "\0bunsock-test-" + uuid.uuid4().hex
    srv = bunsock.listen(unix=name, socket=Echo(), loop=loop)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(name)
    c.sendall(b"ping")
    run_until(loop, lambda: select.select([c], [], [], 0)[0], what="the echo reached the client")
    assert c.recv(10) == b"ping"
    c.close()
    srv.stop(True)


def test_stale_socket_file_is_reported_not_removed(loop, path):
    # A process that died without stop() leaves its socket file behind.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.listen(1)
    dead.close()
    assert os.path.exists(path)
    with pytest.raises(OSError) as ei:
        bunsock.listen(unix=path, socket=Echo(), loop=loop)
    assert ei.value.errno == errno.EADDRINUSE
    assert "stale" in str(ei.value) and path in str(ei.value)
    assert os.path.exists(path), "a stale socket file must never be removed silently"
    # the documented remedy
    os.unlink(path)
    srv = bunsock.listen(unix=path, socket=Echo(), loop=loop)
    srv.stop()
    assert not os.path.exists(path)


def test_live_listener_path_in_use(loop, path):
    srv = bunsock.listen(unix=path, socket=Echo(), loop=loop)
    with pytest.raises(OSError) as ei:
        bunsock.listen(unix=path, socket=Echo(), loop=loop)
    assert ei.value.errno == errno.EADDRINUSE
    srv.stop()


def test_regular_file_at_path_is_not_removed(loop, path):
    with open(path, "w") as f:
        f.write("precious")
    with pytest.raises(OSError) as ei:
        bunsock.listen(unix=path, socket=Echo(), loop=loop)
    assert ei.value.errno == errno.EADDRINUSE
    with open(path) as f:
        assert f.read() == "precious"


def test_connect_to_missing_path_reports_connect_error(loop, path, no_leaks):
    seen = []
    bunsock.connect(unix=path, socket={"data": lambda s, b: None,
                                       "connect_error": lambda s, e: seen.append(e),
                                       "open": lambda s: seen.append("open")}, loop=loop)
    run(loop)
    assert len(seen) == 1 and isinstance(seen[0], FileNotFoundError)


def test_connect_to_stale_file_is_refused(loop, path, no_leaks):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()
    seen = []
    bunsock.connect(unix=path, socket={"data": lambda s, b: None,
                                       "connect_error": lambda s, e: seen.append(e)}, loop=loop)
    run(loop)
    assert len(seen) == 1 and isinstance(seen[0], ConnectionRefusedError)


def test_unix_path_errors(loop, tmp_path):
    with pytest.raises(ValueError, match="too long"):
        bunsock.listen(unix=str(tmp_path / ("x" * 200)), socket=Echo(), loop=loop)
    with pytest.raises(ValueError, match="empty"):
        bunsock.listen(unix="", socket=Echo(), loop=loop)
    with pytest.raises(ValueError, match="not both"):
        bunsock.connect(unix=str(tmp_path / "a"), hostname="x", port=1, socket=Echo(), loop=loop)


def test_unix_stop_close_active_and_peer_close(loop, path, no_leaks):
    closes = []

    class Srv(Echo):
        def close(self, sock, err):
            closes.append(("srv", err))

    class Cli:
        def open(self, sock):
            sock.write(b"hi")

        def data(self, sock, buf):
            srv.stop(True)

        def close(self, sock, err):
            closes.append(("cli", err))

    srv = bunsock.listen(unix=path, socket=Srv(), loop=loop)
    bunsock.connect(unix=path, socket=Cli(), loop=loop)
    run(loop)
    assert sorted(c[0] for c in closes) == ["cli", "srv"]
    assert all(c[1] is None for c in closes)
    assert not os.path.exists(path)
