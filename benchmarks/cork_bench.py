#!/usr/bin/env python3
"""Corking benchmark: a handler that writes each response in several pieces.

    PYTHONPATH=src python benchmarks/cork_bench.py                 # ~1 min
    PYTHONPATH=src python benchmarks/cork_bench.py --duration 2 --reps 3 --pieces 4

The server (a child process, pinned to one core) answers every 64-byte request of the C load
generator (csrc/loadgen/loadgen.c, pinned to the other core, which checks every byte) with the same bytes
written as `--pieces` separate sock.write() calls. Variants:

  corked    the default: writes inside a handler are coalesced, one send per socket per handler
  uncorked  the same handler with high_water_mark=0, which bypasses the cork (every write goes to
            the kernel at once, as in Bun) -- the cost corking saves
  joined    the handler joins the pieces itself and calls write() once (the hand-made optimum)

Reported per variant (median of --reps interleaved runs, min-max): send syscalls per message
(from loop.stats()["sends"] in the server), server CPU per message (from the server's
/proc/PID schedstat, measured by the load generator over the measured window) and requests/s.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _child_setup():
    # Pinned to CPU 0. SIGINT back to default: a harness started in the background (nohup, `&`)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.sched_setaffinity(0, {0})


# --------------------------------------------------------------------------------------- server

def serve(variant, pieces):
    import bunsock

    total = [0]
    loop = bunsock.get_loop()

    if variant == "joined":
        class H:
            def data(self, sock, buf):
                total[0] += len(buf)
                q = max(1, len(buf) // pieces)
                sock.write(b"".join([buf[i * q:(i + 1) * q] if i < pieces - 1 else buf[i * q:]
                                     for i in range(pieces)]))
    else:
        class H:
            def data(self, sock, buf):
                total[0] += len(buf)
                q = max(1, len(buf) // pieces)
                for i in range(pieces - 1):
                    sock.write(buf[i * q:(i + 1) * q])
                sock.write(buf[(pieces - 1) * q:])

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=H(), backlog=4096,
                         high_water_mark=0 if variant == "uncorked" else None)
    print(srv.port, flush=True)
    try:
        bunsock.run()
    except KeyboardInterrupt:
        pass
    st = loop.stats()
    st["bytes_in"] = total[0]
    print(json.dumps(st), flush=True)


# ------------------------------------------------------------------------------------ harness

def one_run(variant, args):
    from bunsock.bench import _loadgen
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", variant,
                              "--pieces", str(args.pieces)],
                             stdout=subprocess.PIPE, text=True, env=env,
                             preexec_fn=_child_setup)
    try:
        port = int(child.stdout.readline())
        r = _loadgen.run("127.0.0.1", port, conns=args.conns, pipeline=args.pipeline,
                         size=args.size, duration=args.duration, warmup=args.warmup,
                         server_pid=child.pid)
    finally:
        child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    st = json.loads(out.strip().splitlines()[-1])
    msgs_total = st["bytes_in"] / args.size
    return {
        "variant": variant,
        "errors": r["errors"],
        "rps": r["requests_per_s"],
        "cpu_us": r["server_cpu_us_per_msg"],
        "sends_per_msg": st["sends"] / msgs_total if msgs_total else float("nan"),
        "recvs_per_msg": st["recvs"] / msgs_total if msgs_total else float("nan"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--pieces", type=int, default=4)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default="corked,uncorked,joined")
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve, args.pieces)
    if args.size < args.pieces:
        ap.error("--size must be >= --pieces")

    sys.path.insert(0, os.path.join(REPO, "src"))
    os.sched_setaffinity(0, {1} if os.cpu_count() and os.cpu_count() > 1 else {0})
    variants = args.variants.split(",")
    runs = {v: [] for v in variants}
    for rep in range(args.reps):
        for v in variants:            # interleaved, so a noisy neighbour hits every variant
            res = one_run(v, args)
            runs[v].append(res)
            print("  rep %d %-9s %8.0f req/s  %6.2f us CPU/msg  %.2f sends/msg  errors=%d"
                  % (rep + 1, v, res["rps"], res["cpu_us"] or float("nan"),
                     res["sends_per_msg"], res["errors"]), file=sys.stderr, flush=True)

    def med(v, key):
        xs = [r[key] for r in runs[v] if r[key] is not None]
        return statistics.median(xs), min(xs), max(xs)

    print("\n## Corking: a handler writing each %d-byte response in %d pieces\n"
          % (args.size, args.pieces))
    print("%d conns, pipeline %d, %.1f s windows, %d reps (median, min-max). Server pinned to "
          "CPU 0, load generator to CPU 1.\n" % (args.conns, args.pipeline, args.duration,
                                                 args.reps))
    print("| variant | send syscalls / msg | server CPU µs / msg | req/s |")
    print("|---|---|---|---|")
    for v in variants:
        s, c, r = med(v, "sends_per_msg"), med(v, "cpu_us"), med(v, "rps")
        print("| %s | %.2f | %.2f (%.2f–%.2f) | %.0f (%.0f–%.0f) |"
              % (v, s[0], c[0], c[1], c[2], r[0], r[1], r[2]))
    if "corked" in runs and "uncorked" in runs:
        c, u = med("corked", "cpu_us")[0], med("uncorked", "cpu_us")[0]
        if "joined" in runs:
            j = med("joined", "cpu_us")[0]
            print("\ncorked vs joined by hand: server CPU per message x%.2f" % (c / j))
        print("\ncorked saves %.0f%% of server CPU per message and %.1f send syscalls per "
              "message versus uncorked." % (100.0 * (u - c) / u,
                                            med("uncorked", "sends_per_msg")[0]
                                            - med("corked", "sends_per_msg")[0]))
    errors = sum(r["errors"] for v in variants for r in runs[v])
    if errors:
        print("\nWARNING: %d load-generator errors (content/connection)" % errors)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
