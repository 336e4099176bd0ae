"""The C core (csrc/) on its own: every file compiles warning-free, and the C unit tests pass
(under AddressSanitizer + UBSan when this gcc can build and run such a binary)."""
import functools
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CSRC = ROOT / "csrc"
GCC = shutil.which("gcc")
WARN = ["-std=gnu11", "-Wall", "-Wextra", "-Werror"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]

pytestmark = [
    pytest.mark.skipif(not CSRC.is_dir(), reason="csrc/ not here: testing an installed bunsock without "
                                                 "its source tree (the C core is tested from a checkout)"),
    pytest.mark.skipif(GCC is None, reason="gcc not found"),
]


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@functools.lru_cache(maxsize=None)
def _sanitizer_flags(scratch):
    """ASan needs its runtime installed and a kernel/ptrace setup it can live with: probe once by
    building and running a trivial program."""
    src = Path(scratch) / "probe.c"
    exe = Path(scratch) / "probe"
    src.write_text("int main(void) { return 0; }\n")
    built = _run([GCC, *SANITIZE, str(src), "-o", str(exe)])
    if built.returncode != 0 or _run([str(exe)], timeout=60).returncode != 0:
        return ()
    return tuple(SANITIZE)


@pytest.fixture(scope="session")
def sanitize(tmp_path_factory):
    return list(_sanitizer_flags(str(tmp_path_factory.mktemp("asan-probe"))))


# The core and the load generator (benchmark tooling in its own folder, on the core's poller).
C_FILES = sorted(CSRC.glob("*.c")) + sorted(CSRC.glob("loadgen/*.c"))


@pytest.mark.parametrize("src", C_FILES, ids=[p.name for p in C_FILES])
def test_compiles_warning_free(src, tmp_path):
    res = _run([GCC, *WARN, "-c", "-I" + str(CSRC), "-I" + str(CSRC / "loadgen"), str(src),
                "-o", str(tmp_path / "out.o")])
    assert res.returncode == 0, "gcc failed on %s:\n%s%s" % (src.name, res.stdout, res.stderr)


def test_found_c_files():
    names = {p.name for p in C_FILES}
    assert {"sink.c", "timers.c"} <= names


@pytest.mark.parametrize("name,sources", [
    ("test_sink", ["sink.c"]),
    ("test_timers", ["timers.c"]),
    ("test_framing", ["framing.c"]),
])
def test_c_unit(name, sources, tmp_path, sanitize):
    exe = tmp_path / name
    cmd = [GCC, *WARN, "-O1", "-g", *sanitize, "-I" + str(CSRC),
           str(CSRC / "tests" / (name + ".c")), *[str(CSRC / s) for s in sources], "-o", str(exe)]
    built = _run(cmd)
    assert built.returncode == 0, "build failed:\n%s\n%s%s" % (" ".join(cmd), built.stdout, built.stderr)
    res = _run([str(exe)], timeout=300)
    assert res.returncode == 0, "%s failed (rc=%d, sanitizers: %s):\n%s%s" % (
        name, res.returncode, bool(sanitize), res.stdout, res.stderr[-5000:])
    assert "0 failures" in res.stdout
