"""Instructions per echo round trip, counted by valgrind's callgrind: a repeatable measure of the
loop's own cost (hot-path changes of a few percent are visible here; wall-clock benchmarks on a
shared VM are ±10-30 %).

One bunsock client and one bunsock echo server on one loop exchange N 64-byte messages; the run
is repeated for two N and the difference divided by the extra round trips, so start-up cancels.

    apt-get install -y valgrind
    python benchmarks/instr_pingpong.py                     # this checkout's in-place build
    python benchmarks/instr_pingpong.py --src /other/checkout/src --src src   # before / after

Prints instructions per round trip in total, in the _loop extension, and in libpython. The
libpython figure moves by a few percent between runs even with PYTHONHASHSEED=0 (type-cache and
dict probe lengths depend on addresses); the _loop figure is exact.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, bunsock
N = int(sys.argv[1])
loop = bunsock.Loop()
msg = b"x" * 64
state = {"n": 0, "got": 0}
class Echo:
    def data(self, s, b): s.write(b)
class Cli:
    def open(self, s): s.write(msg)
    def data(self, s, b):
        state["got"] += len(b)
        while state["got"] >= 64:
            state["got"] -= 64
            state["n"] += 1
            if state["n"] >= N:
                s.close(); srv.stop(True); return
            s.write(msg)
srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop)
bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), loop=loop)
loop.run()
assert state["n"] == N
"""


def count(src, n, tmp):
    out = os.path.join(tmp, "cg.%d.out" % n)
    env = dict(os.environ, PYTHONPATH=src, PYTHONHASHSEED="0")
    subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                    os.path.realpath(sys.executable), "-c", CHILD, str(n)],
                   env=env, check=True, capture_output=True, timeout=900)
    ann = subprocess.run(["callgrind_annotate", "--threshold=100", out], capture_output=True,
                         text=True, check=True).stdout
    totals = {"total": 0, "_loop": 0, "libpython": 0}
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(", line)
        if not m:
            continue
        v = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            totals["total"] = v
        elif "_loop.cpython" in line:
            totals["_loop"] += v
        elif "libpython" in line:
            totals["libpython"] += v
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", action="append", help="a src/ folder holding a built bunsock "
                    "(repeat to compare; default: this checkout's src/)")
    ap.add_argument("-n", type=int, nargs=2, default=[3000, 6000], metavar=("N1", "N2"))
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind (apt-get install -y valgrind)")
    srcs = args.src or [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")]
    n1, n2 = args.n
    with tempfile.TemporaryDirectory() as tmp:
        for src in srcs:
            a, b = count(src, n1, tmp), count(src, n2, tmp)
            per = {k: (b[k] - a[k]) / (n2 - n1) for k in a}
            print("%-40s per round trip: total %6.0f  _loop %5.0f  libpython %5.0f"
                  % (src, per["total"], per["_loop"], per["libpython"]))


if __name__ == "__main__":
    main()
