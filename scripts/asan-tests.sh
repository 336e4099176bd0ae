#!/usr/bin/env bash
# Build every extension with AddressSanitizer (debug flags too) in place, then run the suite with
# the ASan runtime preloaded: CPython itself is not built with ASan, so the runtime must come first.
# Leak detection is off because CPython's own interned objects look like leaks to LSan; our leak
# checks are the fd/object counts in the tests. Tests that provoke ENOMEM need malloc to return NULL.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNSOCK_DEBUG=1 BUNSOCK_ASAN=1 python3 setup.py build_ext --inplace --force --build-temp build/asan >/dev/null
export LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
PYTHONPATH=src python3 -m pytest -q -p no:cacheprovider "$@"
