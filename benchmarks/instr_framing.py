"""Instructions per framed message, counted by valgrind's callgrind (exact, unlike wall-clock
runs on a shared VM): a bunsock client sends batches of 16 framed 64-byte messages to a bunsock
server with framing= that echoes each one with write_frame; two run lengths are counted and the
difference divided by the extra messages, so start-up cancels.

    apt-get install -y valgrind
    python benchmarks/instr_framing.py                      # this checkout's in-place build
    python benchmarks/instr_framing.py --src /other/checkout/src --src src   # before / after

Prints instructions per message in total and in the _loop extension, for both rules. (The client's
side, one write and one `data` call per batch of 16, is included: about 1/16 of its cost.)
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, struct, bunsock
from bunsock import framing
N, mode = int(sys.argv[1]), sys.argv[2]
loop = bunsock.Loop()
if mode == "lines":
    rule, one = framing.lines(), b"x" * 64 + b"\n"
else:
    rule, one = framing.length_prefixed(4), struct.pack(">I", 64) + b"x" * 64
batch = one * 16
state = {"n": 0, "got": 0}
class Echo:
    def data(self, s, m): s.write_frame(m)
class Cli:
    def open(self, s): s.write(batch)
    def data(self, s, b):
        state["got"] += len(b)
        if state["got"] >= len(batch):
            state["got"] -= len(batch)
            state["n"] += 1
            if state["n"] >= N:
                s.close(); srv.stop(True); return
            s.write(batch)
srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop, framing=rule)
bunsock.connect(hostname="127.0.0.1", port=srv.port, socket=Cli(), loop=loop)
loop.run()
assert state["n"] == N
"""


def count(src, n, mode, tmp):
    out = os.path.join(tmp, "cg.%s.%d.out" % (mode, n))
    env = dict(os.environ, PYTHONPATH=src, PYTHONHASHSEED="0")
    subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                    os.path.realpath(sys.executable), "-c", CHILD, str(n), mode],
                   env=env, check=True, capture_output=True, timeout=900)
    ann = subprocess.run(["callgrind_annotate", "--threshold=100", out], capture_output=True,
                         text=True, check=True).stdout
    totals = {"total": 0, "_loop": 0}
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(", line)
        if not m:
            continue
        v = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            totals["total"] = v
        elif "_loop.cpython" in line:
            totals["_loop"] += v
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", action="append", help="a src/ folder holding a built bunsock "
                    "(repeat to compare; default: this checkout's src/)")
    ap.add_argument("-n", type=int, nargs=2, default=[500, 1000], metavar=("N1", "N2"),
                    help="batches of 16 messages in the two runs")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind (apt-get install -y valgrind)")
    srcs = args.src or [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")]
    n1, n2 = args.n
    with tempfile.TemporaryDirectory() as tmp:
        for src in srcs:
            for mode in ("length", "lines"):
                a, b = count(src, n1, mode, tmp), count(src, n2, mode, tmp)
                per = {k: (b[k] - a[k]) / ((n2 - n1) * 16) for k in a}
                print("%-40s %-6s per message: total %5.0f  _loop %4.0f"
                      % (src, mode, per["total"], per["_loop"]))


if __name__ == "__main__":
    main()
