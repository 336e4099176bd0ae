"""Build the bunsock extensions.

Each extension links the C core files it needs directly (no shared library to install).
BUNSOCK_DEBUG=1 builds with -O0 -g, C assertions on and Cython's safety checks on.
Release builds (the default, and every published wheel) carry no debug info and are stripped at
link time; BUNSOCK_DEBUG=1 and BUNSOCK_ASAN=1 builds keep their symbols. BUNSOCK_SYMBOLS=1 is a
release build (-O2, same code) that keeps symbols and line info, so that
benchmarks/instr_pingpong.py --breakdown can attribute instructions to functions.
"""
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("BUNSOCK_DEBUG", "") not in ("", "0")
ASAN = os.environ.get("BUNSOCK_ASAN", "") not in ("", "0")
SYMBOLS = os.environ.get("BUNSOCK_SYMBOLS", "") not in ("", "0")

# Only the C core is held to -Wall -Wextra -Werror (tests/test_csrc.py compiles it that way);
# Cython's generated code trips -Wextra in ways that are not ours to fix.
cflags = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
macros = []
if DEBUG:
    cflags += ["-O0", "-g3", "-UNDEBUG"]
    macros += [("BUNSOCK_DEBUG", "1")]
else:
    cflags += ["-O2"]
    macros += [("NDEBUG", "1")]
ldflags = []
if ASAN:
    # Run with LD_PRELOAD=$(gcc -print-file-name=libasan.so): see scripts/asan-tests.sh.
    cflags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
    ldflags += ["-fsanitize=address"]
elif SYMBOLS and not DEBUG:
    cflags += ["-g"]
elif not DEBUG:
    # Python's own CFLAGS usually carry -g: -g0 (last wins) drops the debug info, and the linker
    # strips the symbol table (the module's exported PyInit_* stays in the dynamic table).
    cflags += ["-g0"]
    ldflags += ["-Wl,-S,-x"] if sys.platform == "darwin" else ["-Wl,-s"]

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    # The loops take no locks and the module keeps unlocked counters: on a free-threaded CPython,
    # importing bunsock re-enables the GIL (with the interpreter's warning). See README.
    "freethreading_compatible": False,
}

CORE = ["csrc/poller_epoll.c", "csrc/poller_kqueue.c", "csrc/net.c", "csrc/sockopt.c", "csrc/sink.c",
        "csrc/splice.c", "csrc/timers.c", "csrc/waker.c", "csrc/udp.c", "csrc/framing.c"]


def ext(name, sources):
    """name: the module under bunsock, dotted ("_loop", "bench._loadgen")."""
    return Extension(
        "bunsock." + name,
        sources=["src/bunsock/%s.pyx" % name.replace(".", "/")] + sources,
        include_dirs=["csrc", "csrc/loadgen"],
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )


extensions = [
    ext("_loop", CORE),
    ext("_abs", ["csrc/sink.c"]),
    # Benchmark tooling, not core: it ships in the wheel for `python -m bunsock bench` and uses the
    # core's poller.
    ext("bench._loadgen", ["csrc/loadgen/loadgen.c", "csrc/poller_epoll.c", "csrc/poller_kqueue.c"]),
    ext("_tls", []),
]
# BUNSOCK_ONLY=_abs,_loop builds a subset (quicker while working on one extension).
only = [n for n in os.environ.get("BUNSOCK_ONLY", "").split(",") if n]
if only:
    extensions = [e for e in extensions if e.name.split(".")[-1] in only]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        gdb_debug=DEBUG,
        quiet=True,
    ),
)
