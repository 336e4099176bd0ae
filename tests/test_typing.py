"""Types: the examples pass `mypy --strict` against bunsock's stubs, and a wrong handler
signature is a type error (runs when mypy is installed: `pip install mypy`)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bunsock

pytest.importorskip("mypy")
ROOT = Path(__file__).resolve().parent.parent
PKG_PARENT = str(Path(bunsock.__file__).resolve().parent.parent)   # src/ or site-packages
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def mypy(*paths, cwd=None):
    env = dict(os.environ)
    if "site-packages" not in PKG_PARENT:
        # An in-place build: point mypy at it. (An installed bunsock mypy finds by itself, and
        # it refuses site-packages in MYPYPATH.)
        env["MYPYPATH"] = PKG_PARENT
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", os.devnull, *map(str, paths)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not EXAMPLES, reason="no examples/ beside the tests")
def test_examples_pass_mypy_strict():
    out = mypy(*EXAMPLES)
    assert out.returncode == 0, out.stdout + out.stderr


def test_wrong_handler_signatures_are_type_errors(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('''\
import bunsock
import bunsock.aio


class NoBuf:
    def data(self, sock: bunsock.Socket) -> None: ...


class Good:
    def data(self, sock: bunsock.Socket, buf: bytes) -> None:
        sock.write(buf)


class Udp:
    def data(self, sock: bunsock.UdpSocket, buf: bytes, port: int, address: str) -> None: ...


bunsock.listen(hostname="127.0.0.1", port=0, socket=Good(), idle_timeout_mode="read")
bunsock.udp_socket(socket=Udp())
bunsock.listen(hostname="127.0.0.1", port=0, socket=NoBuf())                      # line 20
bunsock.connect(hostname="h", port=1, socket={"data": lambda s: None})            # line 21
bunsock.connect(hostname="h", port=1, socket=Good(), idle_timeout_mode="reads")  # line 22
bunsock.udp_socket(socket=Good())                                                 # line 23


async def main(lst: bunsock.Listener) -> None:
    await bunsock.aio.wait_closed(lst)
    n: int = bunsock.get_loop().call_later(1, print).when                          # line 28
''')
    out = mypy(bad, cwd=tmp_path)
    lines = sorted({int(l.split(":")[1]) for l in out.stdout.splitlines()
                    if ": error:" in l})
    assert lines == [20, 21, 22, 23, 28], out.stdout
