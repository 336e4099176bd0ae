"""docs/guide/proxy.md says what the proxy does: every flag of --help is in its table (and the
table has no flag --help lacks), every shell command in it is a valid command line (run with
--check, next to the TOML files it shows), and the access-log and metrics it documents are the
ones the proxy emits. (Its python block is run by tests/test_docs.py.)"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bunsock.proxy import build_parser
from proxy_support import ENV

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "proxy.md"
pytestmark = pytest.mark.skipif(not GUIDE.is_file(), reason="docs/ not beside tests/")


def fenced(lang):
    return re.findall(r"^```%s\n(.*?)^```" % lang, GUIDE.read_text(), re.S | re.M)


def test_every_flag_is_documented_and_every_documented_flag_exists():
    flags = {o for a in build_parser()._actions for o in a.option_strings if o.startswith("--")}
    flags.discard("--help")
    table = GUIDE.read_text().split("## Every flag", 1)[1]
    documented = set(re.findall(r"^\| `(--[a-z-]+)", table, re.M))
    documented |= set(re.findall(r"^\| `--[a-z-]+[^`]*`, `(--[a-z-]+)", table, re.M))
    assert flags == documented
    out = subprocess.run([sys.executable, "-m", "bunsock", "proxy", "--help"], env=ENV,
                         capture_output=True, text=True, timeout=30).stdout
    for f in flags:
        assert f in out, f
    for sig in ("SIGTERM", "SIGUSR1", "SIGHUP"):
        assert sig in out


def commands():
    for block in fenced("sh"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("python -m bunsock proxy"):
                yield line.rstrip().rstrip("&").strip()


def test_every_shell_command_is_a_valid_command_line(tmp_path):
    for block in fenced("toml"):
        name = block.splitlines()[0].lstrip("# ").strip()
        (tmp_path / name).write_text(block)
    (tmp_path / "ca.pem").write_text("")          # --upstream-ca must name a file
    cmds = list(commands())
    assert len(cmds) >= 8
    for cmd in cmds:
        argv = shlex.split(cmd)[4:]
        if "--check" not in argv:
            argv.append("--check")
        r = subprocess.run([sys.executable, "-m", "bunsock", "proxy", *argv], env=ENV,
                           cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "configuration ok" in r.stdout, (cmd, r.stderr)


def test_documented_access_log_line_and_metrics_are_the_real_ones():
    from test_proxy_ops import LOG_LINE
    samples = [b for b in fenced("text") if "client=" in b]
    assert samples and all(LOG_LINE.match(s.strip().replace("203.0.113.7", "127.0.0.1"))
                           for s in samples)
    import bunsock
    from bunsock.proxy import Proxy
    from bunsock.proxy.metrics import render
    loop = bunsock.Loop()
    try:
        text = render(Proxy([("127.0.0.1", 1)], loop=loop, log=None))
    finally:
        loop.close()
    emitted = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    documented = set(re.findall(r"^\| `(bunsock_proxy_\w+)`", GUIDE.read_text(), re.M))
    assert emitted == documented
