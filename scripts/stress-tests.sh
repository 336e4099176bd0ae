#!/usr/bin/env bash
# Run the test suite N times in a row (default 3) while another process keeps a core busy, the
# way a shared CI machine or a developer's laptop under load runs it. Stops at the first red run:
# a test that fails only under load is flaky, and a flaky test blocks every landing.
#   scripts/stress-tests.sh [N] [pytest args...]
# Uses the bunsock that `python3 -c "import bunsock"` finds from src/ (an in-place build) if there
# is one, else the installed one.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
shift || true
if ls src/bunsock/_loop*.so >/dev/null 2>&1; then
    export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
fi
# The load: one busy process per core but one, so the suite always competes for a CPU.
cores="$(python3 -c 'import os; print(os.cpu_count() or 1)')"
burners=()
cleanup() { for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq 1 "$(( cores > 1 ? cores - 1 : 1 ))"); do
    python3 -c 'while True: pass' &
    burners+=("$!")
done
logs="$(mktemp -d "${TMPDIR:-/tmp}/bunsock-stress.XXXXXX")"
for i in $(seq 1 "$runs"); do
    start=$(date +%s)
    log="$logs/run-$i.log"
    if python3 -m pytest -q -p no:cacheprovider "$@" > "$log" 2>&1; then
        echo "run $i/$runs: $(tail -1 "$log") ($(( $(date +%s) - start )) s)"
    else
        echo "run $i/$runs FAILED ($(( $(date +%s) - start )) s): $log"
        grep -E "^(FAILED|ERROR)" "$log" || tail -20 "$log"
        exit 1
    fi
done
echo "stress: $runs runs in a row passed under load"
