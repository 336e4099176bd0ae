"""Every code block in README.md and docs/ runs, as written, and does what it says.

A fenced ```python block is run as a program in a subprocess (through tests/docs_prelude.py,
which maps the ports and addresses it names onto loopback ports this test picked) and must exit
0 with no exception reported. A block may be followed by one or more HTML comments that say how
to test it (GitHub and the docs site show nothing of them):

    <!-- test: server [upstream=HOST:PORT] [down=HOST:PORT] [certs] [systemd]
    client:
        with conn(8080) as c: ...          # Python, run here while the block serves
    -->

- `run` (the default, no comment needed): the block is a program that finishes by itself.
  An `after:` section is appended to it (hidden asserts); a `before:` section is prepended
  (the setup a fragment inside prose assumes: imports, the names it uses).
- `server`: the block serves until it is stopped. Once it calls run()/serve()/aio.listen(), the
  `client:` section runs in this process (helpers: port(n), conn(n), roundtrip(n, payload),
  udp_roundtrip(n, payload), printed(text), output(), proc), then the block is stopped
  with SIGTERM; a handler exception it reported fails the test too. Several comments after
  one block: one run each.
- Options: `upstream=H:P` puts a loopback echo server where the block connects to H:P;
  `down=H:P` a closed port; `certs` writes cert.pem/key.pem/ca.pem (trustme) into the block's
  working directory; `systemd` hands the block a listening socket as fd 3 with LISTEN_FDS/
  LISTEN_PID set, on the port the block names for 8080; `exits`: the client section makes the
  block end by itself (a graceful shutdown), so it is not required to be alive after it.

Blocks in other languages (sh, ini, ...) are not run. A ```python block with an unknown marker,
or that does not run, fails.
"""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRELUDE = Path(__file__).resolve().parent / "docs_prelude.py"
# Absent when the suite runs from a copy of tests/ against an installed wheel (check-dist.sh).
DOC_FILES = [p for p in [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
             if p.is_file() and "_build" not in p.parts]
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
MARK = re.compile(r"^\s*<!--\s*test:(.*?)(-->)?\s*$")

pytestmark = pytest.mark.skipif(not (ROOT / "docs").is_dir(), reason="docs/ not beside tests/")


def blocks(path):
    """(line, lang, code, [marker dicts]) for each fenced block of a Markdown file; the test
    comments that follow a block (blank lines between allowed) are its markers."""
    lines = path.read_text().splitlines()
    out, i, adjacent = [], 0, False
    while i < len(lines):
        line = lines[i]
        m = MARK.match(line)
        if m:
            head, body = m.group(1).strip(), []
            if not m.group(2):
                i += 1
                while "-->" not in lines[i]:
                    body.append(lines[i])
                    i += 1
            assert adjacent, "%s:%d: a test comment must follow its code block" % (path, i)
            out[-1][3].append(parse_mark(head, body, path, i))
            i += 1
            continue
        f = FENCE.match(line)
        if f:
            indent, fence, lang = f.groups()
            start, code = i + 1, []
            i += 1
            while not lines[i].strip().startswith(fence):
                code.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            out.append((start, lang, "\n".join(code) + "\n", []))
            adjacent = True
        elif line.strip():
            adjacent = False
        i += 1
    return out


def parse_mark(head, body, path, line):
    words = head.split()
    mark = {"kind": words[0] if words else "run", "sections": {}, "opts": {}}
    assert mark["kind"] in ("run", "server"), "%s:%d: unknown test marker %r" % (path, line, head)
    for w in words[1:]:
        k, _, v = w.partition("=")
        assert k in ("upstream", "down", "certs", "systemd", "exits"), (
            "%s:%d: unknown option %r" % (path, line, w))
        mark["opts"].setdefault(k, []).append(v)
    section = None
    for b in body:
        s = re.match(r"^\s*(client|before|after):\s*$", b)
        if s:
            section = s.group(1)
            mark["sections"][section] = []
        elif section:
            mark["sections"][section].append(b)
    for k, v in mark["sections"].items():
        mark["sections"][k] = dedent(v)
    return mark


def dedent(lines):
    import textwrap
    return textwrap.dedent("\n".join(lines)) + "\n"


def cases():
    for path in DOC_FILES:
        for line, lang, code, marks in blocks(path):
            if lang != "python":
                continue
            rel = path.relative_to(ROOT)
            for n, mark in enumerate(marks or [{"kind": "run", "sections": {}, "opts": {}}]):
                yield pytest.param(code, mark, id="%s:%d%s" % (rel, line, "#%d" % n if n else ""))


def same_bunsock_path():
    """PYTHONPATH for a subprocess that imports the bunsock this test imported (the in-place
    build under src/, or the installed one when the suite runs against an install)."""
    import bunsock
    here = str(Path(bunsock.__file__).resolve().parents[1])
    return os.pathsep.join([here] + [p for p in [os.environ.get("PYTHONPATH")] if p])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EchoUpstream:
    """A loopback echo server standing in for the `10.0.0.5:80` a block connects to."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.done = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.done:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self.echo, args=(c,), daemon=True).start()

    @staticmethod
    def echo(c):
        with c:
            c.settimeout(30)
            try:
                while True:
                    b = c.recv(65536)
                    if not b:
                        return
                    c.sendall(b)
            except OSError:
                pass

    def close(self):
        self.done = True
        self.thread.join(5)
        self.sock.close()


class Block:
    """One run of a block: the subprocess, its ports, its output."""

    def __init__(self, code, mark, tmp_path):
        self.code, self.mark, self.tmp = code, mark, tmp_path
        text = code + "".join(mark["sections"].values())
        wanted = {8080} | {int(p) for p in re.findall(r"port=(\d+)", text)}
        self.ports = {p: free_port() for p in wanted}
        self.helpers = []
        connect = {}
        for target in mark["opts"].get("upstream", []):
            up = EchoUpstream()
            self.helpers.append(up)
            connect[target] = "127.0.0.1:%d" % up.port
        for target in mark["opts"].get("down", []):
            connect[target] = "127.0.0.1:%d" % free_port()
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", PORT=str(self.ports[8080]),
                        DOCS_PORTS=",".join("%d=%d" % kv for kv in self.ports.items()),
                        DOCS_CONNECT=",".join("%s=%s" % kv for kv in connect.items()))
        self.env["PYTHONPATH"] = same_bunsock_path()
        if "certs" in mark["opts"]:
            trustme = pytest.importorskip("trustme")
            ca = trustme.CA()
            cert = ca.issue_cert("localhost", "127.0.0.1")
            cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
            cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
            ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        self.listen_fd = None
        if "systemd" in mark["opts"]:
            self.listen_fd = socket.socket()
            self.listen_fd.bind(("127.0.0.1", self.ports[8080]))
            self.listen_fd.listen(16)
            self.env["DOCS_SYSTEMD"] = "1"
        script = tmp_path / "block.py"
        script.write_text(mark["sections"].get("before", "") + code
                          + mark["sections"].get("after", ""))
        self.script = script
        self.out = []

    def start(self):
        r, w = os.pipe()
        if w == 3:                      # fd 3 is where a `systemd` block's socket goes
            w2 = os.dup(w)
            os.close(w)
            w = w2
        self.env["DOCS_READY_FD"] = str(w)
        fds = [w]
        pre = None
        if self.listen_fd is not None:
            lfd = self.listen_fd.fileno()
            fds += [lfd, 3]             # 3: kept open in the child after pre() made it the socket

            def pre():
                os.dup2(lfd, 3)
                os.set_inheritable(3, True)
        self.proc = subprocess.Popen(
            [sys.executable, str(PRELUDE), str(self.script)], cwd=str(self.tmp), env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds, preexec_fn=pre,
            start_new_session=True)
        os.close(w)
        self.readers = [threading.Thread(target=self.pump, args=(f, tag), daemon=True)
                        for f, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for t in self.readers:
            t.start()
        return r

    def pump(self, f, tag):
        for line in iter(f.readline, b""):
            self.out.append((tag, line.decode(errors="replace")))

    def text(self, tag=None):
        return "".join(l for t, l in list(self.out) if tag is None or t == tag)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for t in self.readers:
            t.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def close(self):
        for h in self.helpers:
            h.close()
        if self.listen_fd is not None:
            self.listen_fd.close()


def client_namespace(block):
    def port(n):
        return block.ports[n]

    def conn(n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = socket.create_connection(("127.0.0.1", block.ports[n]), timeout=timeout)
                return c
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def recv_exactly(c, n):
        got = b""
        while len(got) < n:
            chunk = c.recv(n - len(got))
            if not chunk:
                break
            got += chunk
        return got

    def roundtrip(n, payload):
        with conn(n) as c:
            c.sendall(payload)
            return recv_exactly(c, len(payload))

    def udp_roundtrip(n, payload, timeout=10.0):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(timeout)
            u.sendto(payload, ("127.0.0.1", block.ports[n]))
            return u.recvfrom(65536)[0]

    def printed(text, timeout=10.0):
        """Whether the block printed `text` (waits for it: its output arrives by a thread)."""
        deadline = time.monotonic() + timeout
        while text not in block.text("out"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    return {"port": port, "conn": conn, "recv_exactly": recv_exactly, "roundtrip": roundtrip,
            "udp_roundtrip": udp_roundtrip, "printed": printed, "output": lambda: block.text("out"),
            "socket": socket, "time": time, "os": os, "proc": block.proc}


def assert_clean(block):
    err = block.text("err")
    assert "Traceback" not in err and "Exception ignored" not in err, (
        "the block reported an exception:\n" + err)


@pytest.mark.parametrize("code, mark", cases())
def test_doc_block(code, mark, tmp_path):
    block = Block(code, mark, tmp_path)
    try:
        r = block.start()
        if mark["kind"] == "run":
            try:
                rc = block.proc.wait(90)
            except subprocess.TimeoutExpired:
                block.stop()
                pytest.fail("the block did not finish in 90 s:\n" + block.text())
            finally:
                os.close(r)
            block.stop()
            assert rc == 0, "exit status %d:\n%s" % (rc, block.text())
            assert_clean(block)
            return
        ready, _, _ = select.select([r], [], [], 60)
        got = os.read(r, 1) if ready else b""
        os.close(r)
        if not got:
            block.stop()
            pytest.fail("the block never started serving:\n" + block.text())
        try:
            exec(compile(mark["sections"].get("client", "pass\n"), "<client>", "exec"),
                 client_namespace(block))
        except (AssertionError, OSError) as e:
            block.stop()
            raise AssertionError("%s: %s\n--- the block's output:\n%s"
                                 % (type(e).__name__, e, block.text())) from e
        finally:
            alive = block.proc.poll() is None
            block.stop()
        assert alive or mark["opts"].get("exits"), (
            "the block exited while being tested:\n" + block.text())
        assert_clean(block)
    finally:
        block.close()


def test_every_python_block_in_the_docs_is_collected():
    """The collector sees the blocks (a broken fence regex would make the suite pass vacuously)."""
    found = list(cases())
    assert len(found) >= 10
    assert any("README.md" in p.id for p in found)
    assert any("guide" in p.id for p in found)


# Under AddressSanitizer (scripts/asan-tests.sh) shadow memory and the quarantine make RSS
# meaningless; the pause (the sender stalls) and the bytes are still checked there.
ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def rss_peak_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (VmHWM)")
def test_readme_first_example_is_bounded_against_a_client_that_never_reads(tmp_path):
    """The README's first example, run as written: a client sends 200 MiB and does not read.
    The server must stop reading it (its peak RSS stays under 64 MiB), keep echoing correctly
    to a client that does read, and lose nothing: once the first client reads, it gets back
    exactly its 200 MiB."""
    import hashlib
    first = next(code for _, lang, code, _ in blocks(ROOT / "README.md") if lang == "python")
    script = tmp_path / "echo.py"
    script.write_text(first)
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PORT=str(port))
    env["PYTHONPATH"] = same_bunsock_path()
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        assert line.split()[-1] == str(port), line + proc.stderr.read().decode()
        chunk, total = os.urandom(1 << 20), 200
        state = {"sent": 0, "error": None}
        hog = socket.create_connection(("127.0.0.1", port), timeout=60)

        def send_all():
            try:
                for _ in range(total):
                    hog.sendall(chunk)
                    state["sent"] += len(chunk)
            except OSError as e:
                state["error"] = e
        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        # Wait until the sender stalls: the server stopped reading it.
        last, still = -1, 0
        deadline = time.monotonic() + 60
        while still < 10 and time.monotonic() < deadline and sender.is_alive():
            time.sleep(0.1)
            still = still + 1 if state["sent"] == last else 0
            last = state["sent"]
        stalled_at = state["sent"]
        assert sender.is_alive() and state["sent"] < total * len(chunk) // 2, (
            "the client sent %d bytes without reading: the server never paused" % state["sent"])
        peak = rss_peak_mib(proc.pid)
        assert ASAN or peak < 64, (
            "server RSS peaked at %.1f MiB with a client that never reads" % peak)
        # Meanwhile a client that reads is served correctly.
        payload = os.urandom(3 << 20)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            got = bytearray()
            writer = threading.Thread(target=c.sendall, args=(payload,), daemon=True)
            writer.start()
            while len(got) < len(payload):
                b = c.recv(1 << 20)
                assert b, "the echo closed early"
                got += b
            writer.join(30)
        assert bytes(got) == payload
        # Now the hog reads: every byte it sent comes back, in order.
        expect = hashlib.sha256()
        for _ in range(total):
            expect.update(chunk)
        want = expect.hexdigest()
        h, n = hashlib.sha256(), 0
        while n < total * len(chunk):
            b = hog.recv(1 << 20)
            assert b, "the echo closed after %d of %d bytes" % (n, total * len(chunk))
            h.update(b)
            n += len(b)
        sender.join(60)
        assert state["error"] is None and state["sent"] == total * len(chunk)
        assert h.hexdigest() == want
        hog.close()
        peak = rss_peak_mib(proc.pid)
        print("README echo: peak RSS %.1f MiB, the non-reader got %d MiB in before it stalled"
              % (peak, stalled_at >> 20))
        assert ASAN or peak < 64, "server RSS peaked at %.1f MiB" % peak
    finally:
        proc.kill()
        proc.wait(10)
        err = proc.stderr.read().decode()
        proc.stdout.close()
        proc.stderr.close()
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_every_public_property_has_a_docstring():
    """help(bunsock.Socket) and the site's reference describe every property, not only methods."""
    import inspect
    import bunsock
    missing = []
    for name in bunsock.__all__:
        cls = getattr(bunsock, name)
        if not inspect.isclass(cls):
            continue
        # Socket's properties live on its base classes (the rooms of _loop.pyx): walk them all.
        members = {}
        for klass in reversed(cls.__mro__):
            if klass.__module__.startswith("bunsock"):
                members.update(vars(klass))
        for attr, member in members.items():
            if attr.startswith("_") or not inspect.isdatadescriptor(member):
                continue
            doc = member.__doc__ or ""
            if not doc.strip() or doc == type(member).__doc__:
                missing.append("%s.%s" % (name, attr))
    assert not missing, "properties without a docstring: %s" % ", ".join(missing)


@pytest.mark.parametrize("fn, handlers", [
    ("listen", ["open(sock)", "data(sock, buf)", "drain(sock)", "end(sock)", "close(sock, err)",
                "error(sock, exc)", "timeout(sock)", "handshake(sock, success, auth_error)"]),
    ("connect", ["connect_error(sock, exc)"]),
    ("udp_socket", ["data(sock, buf, port, address)", "drain(sock)", "error(sock, exc)",
                    "close(sock, err)"]),
])
def test_help_shows_handler_signatures(fn, handlers):
    import bunsock
    doc = getattr(bunsock, fn).__doc__
    for h in handlers:
        assert h in doc, "help(bunsock.%s) does not show %s" % (fn, h)


def test_every_connect_in_the_docs_handles_connect_error():
    """A snippet that connects without a connect_error handler hangs or leaks when the peer is
    down, and users copy snippets: each block that calls bunsock.connect() defines one (and
    each bunsock.aio.connect() is inside a try)."""
    bad = []
    for path in DOC_FILES:
        for line, lang, code, _ in blocks(path):
            if lang != "python":
                continue
            if "bunsock.connect(" in code and "def connect_error" not in code:
                bad.append("%s:%d" % (path.relative_to(ROOT), line))
            if "aio.connect(" in code and "try:" not in code:
                bad.append("%s:%d (aio)" % (path.relative_to(ROOT), line))
    assert not bad, "connect() without connect_error: %s" % ", ".join(bad)


def test_the_site_reference_covers_the_public_api():
    """docs/reference.md generates the reference from docstrings: a public name left out of it
    would be missing from the site."""
    import bunsock
    ref = (ROOT / "docs" / "reference.md").read_text()
    missing = [n for n in bunsock.__all__
               if not re.search(r"\.\. auto(function|class|exception|module):: bunsock\.%s\s"
                                % n, ref)]
    assert not missing, "not in docs/reference.md: %s" % ", ".join(missing)


def test_troubleshooting_quotes_the_real_messages(tmp_path):
    """The troubleshooting page quotes bunsock's error messages: each quote must still be what
    bunsock says (the parts that vary, a port or a path, are put back as the page has them)."""
    import bunsock
    page = " ".join((ROOT / "docs" / "troubleshooting.md").read_text().split())
    loop = bunsock.Loop()
    said = []

    class Echo:
        def data(self, sock, buf):
            pass

    def expect(exc_type, fn, *subs):
        with pytest.raises(exc_type) as info:
            fn()
        import errno
        text = "%s: %s" % (exc_type.__name__, info.value)
        text = text.replace("[Errno %d]" % errno.EADDRINUSE, "[Errno 98]")   # 48 on macOS
        for real, shown in subs:
            text = text.replace(real, shown)
        said.append(" ".join(text.split()))

    first = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
    try:
        expect(OSError, lambda: bunsock.listen(hostname="127.0.0.1", port=first.port,
                                               socket=Echo(), loop=loop),
               (str(first.port), "8080"))
    finally:
        first.stop()
    expect(FileNotFoundError, lambda: bunsock.listen(
        hostname="127.0.0.1", port=0, socket=Echo(), loop=loop,
        tls={"cert": "cert.pem", "key": "key.pem"}))
    expect(TypeError, lambda: bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo,
                                             loop=loop))

    class Typo:
        def data(self, sock, buf):
            pass

        def conect_error(self, sock, exc):
            pass
    expect(TypeError, lambda: bunsock.connect(hostname="127.0.0.1", port=1, socket=Typo(),
                                              loop=loop))
    expect(TypeError, lambda: bunsock.listen(hostname="127.0.0.1", port=0, loop=loop,
                                             socket={"open": lambda sock: None}))
    path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    expect(OSError, lambda: bunsock.listen(unix=path, socket=Echo(), loop=loop),
           (path, "/run/app.sock"))
    loop.close()
    for text in said:
        assert text in page, "docs/troubleshooting.md does not quote:\n  %s" % text
