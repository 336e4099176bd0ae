#!/usr/bin/env bash
# Check bunsock's distribution end to end, as a user without a compiler would meet it.
#
#   scripts/check-dist.sh [--sdist-out DIR]
#       From this checkout: build the sdist; build a wheel from the sdist alone in an isolated
#       environment; check what both contain; `auditwheel show` (manylinux, nothing linked beyond
#       glibc); install the wheel into a fresh venv where no compiler is reachable; then, from a
#       scratch directory holding only the sdist's tests/ and examples/, run --installed below.
#       --sdist-out DIR keeps a copy of the checked sdist (the release workflow uploads that one).
#
#   scripts/check-dist.sh --installed
#       Test the bunsock already installed for $PYTHON (default: python), from the current
#       directory, which must hold tests/ (and examples/, pyproject.toml) but not the package:
#       bunsock must import from site-packages, then the test suite and `bunsock bench --quick`
#       run against it. cibuildwheel runs exactly this for every wheel (pyproject.toml).
#
# Prints one line per step; exits non-zero at the first failing step, after showing the end of
# that step's log. Everything it makes lives in one temporary directory, removed on exit.
# Environment: PYTHON (the interpreter to check), CHECK_DIST_KEEP=1 (keep the temporary directory).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
MODE=full
SDIST_OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --installed) MODE=installed ;;
        --sdist-out) SDIST_OUT="$2"; shift ;;
        --sdist-out=*) SDIST_OUT="${1#--sdist-out=}" ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check-dist: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/check-dist.XXXXXX")"
cleanup() {
    if [ "${CHECK_DIST_KEEP:-}" = 1 ]; then
        echo "check-dist: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# step NAME DETAIL: a passed step's line. fail NAME DETAIL [LOG]: a failed one, then exit.
step() { printf 'check-dist: %-4s %-18s %s\n' ok "$1" "$2"; }
skip() { printf 'check-dist: %-4s %-18s %s\n' skip "$1" "$2"; }
fail() {
    printf 'check-dist: %-4s %-18s %s\n' FAIL "$1" "$2"
    if [ -n "${3:-}" ] && [ -f "$3" ]; then
        echo "---- last lines of $1's log ----"
        tail -n 60 "$3"
        echo "----"
    fi
    exit 1
}
# run NAME LOG CMD...: run CMD with its output in LOG; fail NAME if it fails.
run() {
    local name="$1" log="$2"
    shift 2
    if ! "$@" >"$log" 2>&1; then
        fail "$name" "command failed: $*" "$log"
    fi
}
kb() { echo "$(( ($(wc -c <"$1") + 1023) / 1024 )) KB"; }

# ------------------------------------------------------------------------------------------------
# --installed: the installed bunsock, tested from a directory that holds its tests but not its code

check_installed() {
    local py="${PYTHON:-python}" log="$WORK/installed.log" here
    here="$(pwd -P)"
    [ -d tests ] || fail import "no tests/ in $here (run from a directory holding a copy of tests/)"
    if [ -e bunsock ] || [ -e src/bunsock ]; then
        fail import "$here holds the bunsock package: it must be tested as installed"
    fi
    if ! env -u PYTHONPATH "$py" - "$here" >"$log" 2>&1 <<'EOF'
import os, sys
from importlib.metadata import version
import bunsock
here = sys.argv[1]
where = os.path.realpath(bunsock.__file__)
assert not where.startswith(here + os.sep), "bunsock imported from the test directory: %s" % where
parts = where.split(os.sep)
assert "site-packages" in parts or "dist-packages" in parts, "bunsock not installed: %s" % where
assert bunsock.__version__ == version("bunsock"), (bunsock.__version__, version("bunsock"))
print("bunsock %s (%s backend, Python %s) from %s" % (
    bunsock.__version__, bunsock.backend(), sys.version.split()[0], os.path.dirname(where)))
EOF
    then
        fail import "bunsock is not importable as an installed package" "$log"
    fi
    step import "$(tail -n 1 "$log")"

    if ! env -u PYTHONPATH "$py" -m pytest -q -p no:cacheprovider -rs tests >"$log" 2>&1; then
        fail tests "pytest failed" "$log"
    fi
    step tests "$(grep -E '(passed|failed|error)' "$log" | tail -n 1 | sed 's/^=* *//; s/ *=*$//')"

    if ! env -u PYTHONPATH "$py" -m bunsock bench --quick >"$log" 2>&1 || grep -q '^ERROR' "$log"; then
        fail "bench --quick" "python -m bunsock bench --quick failed" "$log"
    fi
    step "bench --quick" "$(bench_summary "$py" "$log")"
}

# The bunsock rows' "CPU/msg vs ..." columns of bench's table, one scenario after another.
bench_summary() {
    "$1" - "$2" <<'EOF'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
head = next((l for l in lines if l.startswith("scenario")), "")
refs = [c.split()[-1] for c in re.split(r"\s{2,}", head) if c.startswith("CPU/msg vs")]
out = []
for l in lines:
    cells = re.split(r"\s{2,}", l.strip())
    if len(cells) > 2 and cells[1] == "bunsock" and refs:
        out.append("%s %s" % (cells[0], "/".join(cells[-len(refs):])))
print(("bunsock CPU per message vs %s: " % "/".join(refs) + "; ".join(out)) if out else "ran")
EOF
}

if [ "$MODE" = installed ]; then
    check_installed
    exit 0
fi

# ------------------------------------------------------------------------------------------------
# full: sdist -> wheel -> audit -> install without a compiler -> --installed

PYTHON="${PYTHON:-python3}"
PLATFORM="$(uname -s)"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/src/bunsock/_version.py")"
[ -n "$VERSION" ] || fail version "no __version__ in src/bunsock/_version.py"
unset BUNSOCK_DEBUG BUNSOCK_ASAN BUNSOCK_ONLY PYTHONPATH

run tools "$WORK/tools.log" "$PYTHON" -m venv "$WORK/tools"
TOOLS="$WORK/tools/bin/python"
run tools "$WORK/tools.log" "$TOOLS" -m pip install --quiet --disable-pip-version-check \
    "build>=1" "auditwheel>=6"
step tools "$("$TOOLS" -c 'import sys; from importlib.metadata import version as v; print("Python %s; build %s, auditwheel %s" % (sys.version.split()[0], v("build"), v("auditwheel")))')"

# The sdist is built from a copy of the checkout's files (git's view when it is a git checkout:
# tracked and untracked-but-not-ignored files), so nothing here touches the checkout.
mkdir -p "$WORK/checkout" "$WORK/dist"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
        tar --null -T - -cf -) | tar -xf - -C "$WORK/checkout"
else
    (cd "$ROOT" && tar --exclude=.git --exclude=build --exclude=dist --exclude='*.so' \
        --exclude='*.egg-info' --exclude=__pycache__ -cf - .) | tar -xf - -C "$WORK/checkout"
fi
run sdist "$WORK/sdist.log" "$TOOLS" -m build --sdist --outdir "$WORK/dist" "$WORK/checkout"
SDIST="$WORK/dist/bunsock-$VERSION.tar.gz"
[ -f "$SDIST" ] || fail sdist "expected $(basename "$SDIST"), got: $(ls "$WORK/dist")" "$WORK/sdist.log"
step sdist "$(basename "$SDIST") ($(kb "$SDIST"))"

# The sdist alone must be enough: README's links, the license, the C core, tests and examples.
mkdir -p "$WORK/unpacked"
tar -xzf "$SDIST" -C "$WORK/unpacked"
SRC="$WORK/unpacked/bunsock-$VERSION"
missing=""
for f in LICENSE README.md pyproject.toml setup.py src/bunsock/_version.py src/bunsock/_loop.pyx \
         csrc/poller.h csrc/tests tests/conftest.py examples docs/API.md scripts/check-dist.sh; do
    [ -e "$SRC/$f" ] || missing="$missing $f"
done
for link in $(grep -oE '\]\([^) ]+\)' "$SRC/README.md" | sed -E 's/^\]\(//; s/\)$//; s/#.*//'); do
    case "$link" in *://*|mailto:*|"") continue ;; esac
    [ -e "$SRC/$link" ] || missing="$missing $link(README link)"
done
[ -z "$missing" ] || fail "sdist contents" "missing from the sdist (MANIFEST.in?):$missing"
stray="$(cd "$SRC" && find . \( -name '*.so' -o -name '*.o' -o -path './src/bunsock/*.c' \) | head -n 5)"
[ -z "$stray" ] || fail "sdist contents" "build products in the sdist: $stray"
step "sdist contents" "$(find "$SRC" -type f | wc -l | tr -d ' ') files; LICENSE, docs/, README links, tests/, examples/ present"

# A wheel from the unpacked sdist alone, in build's isolated environment (fresh setuptools and
# Cython from the index, nothing of this machine's site-packages).
run "wheel from sdist" "$WORK/wheel.log" "$TOOLS" -m build --wheel --outdir "$WORK/dist" "$SRC"
WHEEL="$(ls "$WORK"/dist/bunsock-"$VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
[ -n "$WHEEL" ] || fail "wheel from sdist" "no bunsock-$VERSION-*.whl built" "$WORK/wheel.log"
step "wheel from sdist" "$(basename "$WHEEL") ($(kb "$WHEEL"))"

if ! "$TOOLS" - "$WHEEL" "$PLATFORM" >"$WORK/contents.log" 2>&1 <<'EOF'
import io, sys, zipfile
wheel, platform = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(wheel)
names = z.namelist()
problems = []
exts = [n for n in names if n.startswith("bunsock/") and n.endswith(".so")]
for mod in ("_loop", "_abs", "_tls", "bench/_loadgen"):
    if not any(n.startswith("bunsock/%s." % mod) for n in exts):
        problems.append("no compiled bunsock.%s" % mod.replace("/", "."))
for want in ("bunsock/py.typed", "bunsock/__init__.pyi", "bunsock/_version.py"):
    if want not in names:
        problems.append("missing " + want)
if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
    problems.append("no LICENSE in .dist-info/licenses/")
problems += ["ships generated C: " + n for n in names if n.startswith("bunsock/") and n.endswith(".c")]
so_bytes = sum(z.getinfo(n).file_size for n in exts)
detail = "%d extension modules, %d KB unpacked" % (len(exts), so_bytes // 1024)
if platform == "Linux":
    from elftools.elf.elffile import ELFFile
    for n in exts:
        elf = ELFFile(io.BytesIO(z.read(n)))
        extra = [s.name for s in elf.iter_sections() if s.name == ".symtab" or s.name.startswith(".debug")]
        if extra:
            problems.append("%s not stripped (%s)" % (n, ", ".join(extra)))
    detail += ", stripped (no .symtab, no .debug_*)"
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(detail)
EOF
then
    fail "wheel contents" "$(head -n 1 "$WORK/contents.log")" "$WORK/contents.log"
fi
step "wheel contents" "$(tail -n 1 "$WORK/contents.log")"

if [ "$PLATFORM" = Linux ]; then
    run "auditwheel show" "$WORK/audit.log" "$WORK/tools/bin/auditwheel" show "$WHEEL"
    TAG="$(tr '\n' ' ' <"$WORK/audit.log" | grep -oE '"(manylinux|musllinux)_[0-9]+_[0-9]+_[a-z0-9_]+"' | head -n 1 | tr -d '"' || true)"
    [ -n "$TAG" ] || fail "auditwheel show" "no manylinux/musllinux platform tag" "$WORK/audit.log"
    # Every DT_NEEDED of every extension must be part of the C library itself.
    if ! "$TOOLS" - "$WHEEL" >"$WORK/needed.log" 2>&1 <<'EOF'
import io, re, sys, zipfile
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
libc = re.compile(r"^(libc|libm|libpthread|libdl|librt|ld-linux[-\w.]*|ld-musl-\w+)\.so(\.\d+)*$")
z = zipfile.ZipFile(sys.argv[1])
needed, bad = set(), []
for n in z.namelist():
    if n.endswith(".so"):
        for sec in ELFFile(io.BytesIO(z.read(n))).iter_sections():
            if isinstance(sec, DynamicSection):
                for tag in sec.iter_tags("DT_NEEDED"):
                    needed.add(tag.needed)
                    if not libc.match(tag.needed):
                        bad.append("%s needs %s" % (n, tag.needed))
print("\n".join(bad) if bad else "links only " + ", ".join(sorted(needed)))
sys.exit(1 if bad else 0)
EOF
    then
        fail "auditwheel show" "links beyond the C library: $(head -n 1 "$WORK/needed.log")" "$WORK/needed.log"
    fi
    step "auditwheel show" "$TAG-compatible; $(cat "$WORK/needed.log")"
else
    skip "auditwheel show" "not Linux ($PLATFORM): cibuildwheel's delocate checks macOS wheels"
fi

# A fresh venv in which no compiler can be found: cc/gcc/clang/... on PATH are /bin/false and
# CC/CXX/LDSHARED point there too, so the install can only succeed from binaries.
mkdir -p "$WORK/nocc"
for tool in cc gcc clang c++ g++ clang++ ld; do
    printf '#!/bin/sh\necho "check-dist: no compiler here ($0)" >&2\nexit 1\n' >"$WORK/nocc/$tool"
    chmod +x "$WORK/nocc/$tool"
done
run venv "$WORK/venv.log" "$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
export PATH="$WORK/nocc:$WORK/venv/bin:$PATH" CC=/bin/false CXX=/bin/false LDSHARED=/bin/false
if gcc --version >/dev/null 2>&1 || cc --version >/dev/null 2>&1; then
    fail venv "a compiler is still reachable"
fi
run install "$WORK/install.log" "$VPY" -m pip install --quiet --disable-pip-version-check \
    --only-binary=:all: "$WHEEL[test,bench]"
step install "$(basename "$WHEEL")[test,bench] into a fresh venv, binaries only, no compiler on PATH"

# The scratch directory holds the sdist's tests/, examples/, pytest config and this script: no
# package source, and not the checkout.
mkdir -p "$WORK/run/scripts"
cp -R "$SRC/tests" "$SRC/examples" "$SRC/pyproject.toml" "$WORK/run/"
cp "$SRC/scripts/check-dist.sh" "$WORK/run/scripts/"
(cd "$WORK/run" && PYTHON="$VPY" bash scripts/check-dist.sh --installed)

if [ -n "$SDIST_OUT" ]; then
    mkdir -p "$SDIST_OUT"
    cp "$SDIST" "$SDIST_OUT/"
    step "sdist kept" "$SDIST_OUT/$(basename "$SDIST")"
fi
echo "check-dist: all steps passed"
