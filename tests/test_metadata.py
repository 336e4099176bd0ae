"""scripts/check-metadata.sh: the workflows against GitHub's schema, pyproject.toml against the
packaging specs (runs when both checkers are installed; CI runs the script itself, which
installs them)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check-metadata.sh"


@pytest.mark.skipif(not SCRIPT.exists(), reason="no scripts/ beside the tests")
def test_workflows_and_pyproject_are_valid():
    pytest.importorskip("check_jsonschema")
    pytest.importorskip("validate_pyproject")
    out = subprocess.run(["bash", str(SCRIPT)], env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Valid file: pyproject.toml" in out.stdout + out.stderr
