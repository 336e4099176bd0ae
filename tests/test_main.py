"""The command line: `bunsock` (console script) and `python -m bunsock` (bunsock.__main__)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bunsock
from bunsock.__main__ import main

SRC = str(Path(bunsock.__file__).resolve().parent.parent)


def test_version_flag(capsys):
    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        assert capsys.readouterr().out == "bunsock %s\n" % bunsock.__version__


def test_python_dash_m_version():
    env = dict(os.environ, PYTHONPATH=SRC)
    out = subprocess.run([sys.executable, "-m", "bunsock", "--version"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "bunsock %s\n" % bunsock.__version__


def test_console_script_is_declared():
    """pyproject.toml declares the `bunsock` script (its target is main(), tested above) and
    the authors."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("no pyproject.toml beside the tests")
    text = pyproject.read_text()
    assert '[project.scripts]\nbunsock = "bunsock.__main__:main"' in text
    assert "authors = [" in text


def test_unknown_command_and_usage(capsys):
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "--version" in capsys.readouterr().out


def test_bunsock_proxy_and_aio_are_attributes_of_the_package():
    env = dict(os.environ, PYTHONPATH=SRC)
    code = ("import bunsock; print(bunsock.proxy.Proxy.__name__, "
            "bunsock.aio.wait_closed.__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["Proxy", "wait_closed"], out.stderr
