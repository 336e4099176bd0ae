#!/usr/bin/env bash
# The soak (benchmarks/soak.py) against an AddressSanitizer build of bunsock, 2 minutes by default.
#
#   scripts/asan-soak.sh                    # == taskset -c 1 ... soak.py --minutes 2 --no-rss-check
#   scripts/asan-soak.sh --minutes 5 --json asan-soak.json
#   ASAN_SOAK_CPUS=0,1 scripts/asan-soak.sh # other CPUs (default: CPU 1 when the machine has it)
#
# The extensions are built exactly as scripts/asan-tests.sh builds them (BUNSOCK_DEBUG=1
# BUNSOCK_ASAN=1) but in a temporary copy of the sources, so the in-place build in src/ is left
# alone (no rebuild needed afterwards); the copy is removed on exit. The ASan runtime is preloaded
# (CPython is not built with ASan) and abort_on_error=1 turns any report into a crash of the server,
# which the soak reports as a failure. Leak detection is off: CPython's interned objects look like
# leaks to LSan; the soak's own fd / Socket / RSS checks are the leak checks. RSS is reported but
# not judged (--no-rss-check): ASan's quarantine holds freed memory, so RSS climbs by design. The
# fd, Socket and bytes checks stay on.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/bunsock-asan-soak.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src"
cp -r setup.py pyproject.toml csrc "$tmp/"
cp -r src/bunsock "$tmp/src/"
rm -f "$tmp"/src/bunsock/*.so "$tmp"/src/bunsock/*.c
echo "asan-soak: building the ASan extensions in $tmp ..."
(cd "$tmp" && BUNSOCK_DEBUG=1 BUNSOCK_ASAN=1 python3 setup.py build_ext --inplace --force \
    --build-temp build/asan >/dev/null)
cpus="${ASAN_SOAK_CPUS:-}"
if [ -z "$cpus" ]; then
    if [ "$(nproc)" -ge 2 ]; then cpus=1; else cpus=0; fi
fi
export LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export PYTHONPATH="$tmp/src"
set +e
taskset -c "$cpus" python3 "$repo/benchmarks/soak.py" --minutes 2 --no-rss-check "$@"
rc=$?
set -e
exit $rc
