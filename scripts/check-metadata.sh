#!/usr/bin/env bash
# What CI can check of files that never run here: each GitHub workflow against GitHub's workflow
# schema, and pyproject.toml against the packaging specs. Installs the two checkers (pip) when
# they are missing. Usage: scripts/check-metadata.sh   (from anywhere; exits non-zero on a problem)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need() {   # need MODULE PACKAGE
    "$PY" -c "import $1" 2>/dev/null || "$PY" -m pip install -q "$2"
}
need check_jsonschema check-jsonschema
need validate_pyproject "validate-pyproject[all]"

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if [ ${#workflows[@]} -gt 0 ]; then
    "$PY" -m check_jsonschema --builtin-schema vendor.github-workflows "${workflows[@]}"
fi
"$PY" -m validate_pyproject pyproject.toml
