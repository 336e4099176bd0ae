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

    python benchmarks/instr_pingpong.py --breakdown         # where the instructions go

--breakdown builds a copy of the checkout with BUNSOCK_SYMBOLS=1 (the same -O2 code, with symbols
and line info; ~1 min) and attributes every instruction of a round trip to one part of the path:
each instruction in _loop by the C function whose source line it executes (so code the compiler
inlined still counts for the function it came from), each call out of _loop (libpython, libc) by
what it calls, and the handlers' own Python code as the calls into them minus what they spend
back inside _loop (write).
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


# -------------------------------------------------------------------------------- breakdown

# Parts of the path, matched in order against the C function an instruction belongs to (the
# definition its source line is in, for _loop) or, for a call out of _loop, the callee.
PARTS = [
    ("handler bodies (the benchmark's Python code)", r"^_PyFunction_Vectorcall$|^_PyEval_Vector$|"
     r"^PyObject_Vectorcall$"),
    ("handler invocation (_deliver, bs_call_handler, scope)", r"_deliver$|bs_call_handler|"
     r"_call_handler|_handler_raised|_leave_callback|PyVectorcall_Function|"
     r"__Pyx_PyObject_FastCall|_PyThreadState_UncheckedGet"),
    ("bytes creation and release", r"^PyBytes_FromStringAndSize$|^_Py_Dealloc$"),
    ("write: argument parsing (C entry) and result int", r"bs_write_entry|bs_write_slow|bs_int|"
     r"PyLong_FromSsize_t|Socket_1write|__Pyx_CyFunction_Vectorcall"),
    ("thread check", r"_check_thread|__tls_get_addr"),
    ("write: corked path (_write_bytes, _write, _write_raw)", r"_write_bytes|SocketWriter__write"),
    ("_settle", r"_settle"),
    ("cork bookkeeping (_uncork)", r"_uncork"),
    ("flush + send (_flush, bs_send, libc send)", r"_flush|bs_send|^send$|^__send$"),
    ("read (_on_event, _on_readable, bs_recv, libc recv)", r"_on_event|_on_readable|bs_recv|"
     r"^recv$|^__recv$"),
    ("GIL release/re-take around a blocking wait", r"PyEval_SaveThread|PyEval_RestoreThread"),
    ("poll + iteration (_iterate, _poll, run, epoll_wait)", r"_iterate|_poll|_timeout|Loop_\d+run|"
     r"bs_poller_wait|epoll_wait|PyErr_CheckSignals"),
]


def _c_functions(csrc):
    """[(first line, name)] of the function definitions in a generated C file."""
    defs = []
    rx = re.compile(r"^\s{0,4}(?:static\s+)?(?:CYTHON_INLINE\s+|inline\s+)?[A-Za-z_][\w\s\*]*?"
                    r"\b(\w+)\s*\(")
    with open(csrc) as f:
        for i, line in enumerate(f, 1):
            if ";" in line or line.startswith((" *", "/*", "#")) or "=" in line.split("(")[0]:
                continue
            m = rx.match(line)
            if m and m.group(1) not in ("if", "for", "while", "switch", "return", "sizeof"):
                defs.append((i, m.group(1)))
    return defs


def _parse_callgrind(path):
    """Yield (object, file, function, line, cost, callee) from a callgrind output file; callee is
    None for an instruction's own cost, else (object, function) of a call's inclusive cost."""
    names = {"ob": {}, "fl": {}, "fn": {}}
    kind = {"ob": "ob", "cob": "ob", "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl",
            "fn": "fn", "cfn": "fn"}
    cur = dict.fromkeys(("ob", "fl", "fi", "fn", "cob", "cfn"))
    line, call = 0, False
    rx = re.compile(r"^(ob|fl|fi|fe|fn|cob|cfi|cfl|cfn)=\((\d+)\)(?: (.*))?$")
    with open(path) as f:
        for raw in f:
            c0 = raw[:1]
            if c0.isdigit() or c0 in "+-*":
                parts = raw.split()
                pos = parts[0]
                if pos[0] in "+-":
                    line += int(pos)
                elif pos != "*":
                    line = int(pos)
                cost = int(parts[1]) if len(parts) > 1 else 0
                fl = cur["fi"] or cur["fl"]
                if call:
                    yield cur["ob"], fl, cur["fn"], line, cost, (cur["cob"] or cur["ob"], cur["cfn"])
                    call, cur["cob"] = False, None
                else:
                    yield cur["ob"], fl, cur["fn"], line, cost, None
                continue
            if raw.startswith("calls="):
                call = True
                continue
            m = rx.match(raw.rstrip("\n"))
            if not m:
                continue
            key, idx, name = m.groups()
            table = names[kind[key]]
            if name is not None:
                table[idx] = name
            val = table.get(idx)
            if key in ("fi", "fe"):
                cur["fi"] = val if val != cur["fl"] else None
            elif key == "fl":
                cur["fl"], cur["fi"] = val, None
            else:
                cur[key] = val


def _parts(path, csrc):
    import bisect
    defs = _c_functions(csrc)
    starts = [d[0] for d in defs]
    rules = [(name, re.compile(rx)) for name, rx in PARTS]

    def part(fn):
        fn = re.sub(r"'\d+$", "", fn or "?")
        for name, rx in rules:
            if rx.search(fn):
                return name
        return None

    out = {}
    total = reentry = 0
    for ob, fl, fn, line, cost, callee in _parse_callgrind(path):
        if callee is None:
            total += cost
        in_loop = ob is not None and "_loop.cpython" in ob
        if callee is not None and not in_loop and callee[0] and "_loop.cpython" in callee[0]:
            # Python code calling back into _loop from a handler (write): the write entry, or a
            # recursive entry ('2) of the wrapper Loop.run came through. Loop.run itself is
            # the whole loop, not a re-entry.
            if re.search(r"'\d+$|bs_write_entry|6Socket_", callee[1] or ""):
                reentry += cost
            continue
        if not in_loop or (callee is not None and "_loop.cpython" in (callee[0] or "")):
            continue
        if callee is not None:
            name = part(callee[1]) or "other calls out of _loop: " + re.sub(r"'\d+$", "",
                                                                              callee[1] or "?")
        else:
            where = fn
            if fl and fl.endswith("_loop.c"):
                k = bisect.bisect_right(starts, line) - 1
                where = defs[k][1] if k >= 0 else fn
            name = part(where) or part(fn) or "other _loop code"
        out[name] = out.get(name, 0) + cost
    body = PARTS[0][0]
    out[body] = out.get(body, 0) - reentry
    out["(outside the loop: interpreter, start-up)"] = total - sum(out.values())
    out["TOTAL"] = total
    return out


def breakdown(src, n1, n2, tmp):
    checkout = os.path.dirname(os.path.abspath(src))
    work = os.path.join(tmp, "symbols")
    os.makedirs(work)
    for name in ("src", "csrc", "setup.py", "pyproject.toml"):
        p = os.path.join(checkout, name)
        (shutil.copytree if os.path.isdir(p) else shutil.copy)(p, os.path.join(work, name))
    pkg = os.path.join(work, "src", "bunsock")
    for f in os.listdir(pkg):
        if f.startswith("_loop.") and f.endswith((".so", ".c")):
            os.remove(os.path.join(pkg, f))
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=work,
                   env=dict(os.environ, BUNSOCK_SYMBOLS="1", BUNSOCK_ONLY="_loop"), check=True,
                   capture_output=True)
    wsrc = os.path.join(work, "src")
    outs = []
    for n in (n1, n2):
        out = os.path.join(tmp, "bd.%d.out" % n)
        env = dict(os.environ, PYTHONPATH=wsrc, PYTHONHASHSEED="0")
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                        os.path.realpath(sys.executable), "-c", CHILD, str(n)],
                       env=env, check=True, capture_output=True, timeout=900)
        outs.append(_parts(out, os.path.join(pkg, "_loop.c")))
    a, b = outs
    per = {k: (b.get(k, 0) - a.get(k, 0)) / (n2 - n1) for k in set(a) | set(b)}
    print("\nwhere a round trip's instructions go (%s, symbols build):" % src)
    rows = sorted(((v, k) for k, v in per.items() if k != "TOTAL"), reverse=True)
    for v, k in rows:
        if abs(v) >= 0.5:
            print("  %7.0f  %s" % (v, k))
    print("  %7.0f  total" % per["TOTAL"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", action="append", help="a src/ folder holding a built bunsock "
                    "(repeat to compare; default: this checkout's src/)")
    ap.add_argument("-n", type=int, nargs=2, default=[3000, 6000], metavar=("N1", "N2"))
    ap.add_argument("--breakdown", action="store_true",
                    help="also attribute each round trip's instructions to parts of the path")
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
        if args.breakdown:
            for i, src in enumerate(srcs):
                breakdown(src, n1, n2, os.path.join(tmp, str(i)))


if __name__ == "__main__":
    main()
