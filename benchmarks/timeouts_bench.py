#!/usr/bin/env python3
"""Idle-timeout benchmark: CPU per event on 10,000 sockets, with and without idle timeouts.

    PYTHONPATH=src python benchmarks/timeouts_bench.py              # ~1.5 min
    PYTHONPATH=src python benchmarks/timeouts_bench.py --conns 10000 --duration 3 --reps 3

Part 1, echo traffic. The server (a child process pinned to CPU 0) echoes 64-byte messages on
--conns connections driven by the C load generator (pinned to CPU 1). Variants:

  none        no idle timeout
  idle60      listen(idle_timeout=60): every socket has an armed timer, restarted by every read
              and write (the restart is one store; the wheel is touched only when the timer pops)
  idle1       listen(idle_timeout=1): the timers pop every second on every socket and are
              re-armed lazily (with 10,000 sockets that is ~10,000 wheel operations per second on
              top of the traffic); no connection is idle long enough to time out

Reported: server CPU µs per echoed message (from /proc/PID schedstat, measured by the load
generator), requests/s; median of --reps interleaved runs with min-max.

Part 2, timeouts firing. --conns idle connections (load generator "idle" mode), server
listen(idle_timeout=1) with a `timeout` handler: all of them fire about 1 s after their last
activity. Reported: how many fired, how late the last one was, and the server's CPU per fired
timeout (process CPU between the first and the last firing, divided by the count).
"""
import argparse
import json
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VARIANTS = {"none": None, "idle60": 60.0, "idle1": 1.0}


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_setup():
    # Pinned to CPU 0. SIGINT back to default: a harness started in the background (nohup, `&`)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.sched_setaffinity(0, {0})


# --------------------------------------------------------------------------------------- server

def serve(variant):
    import bunsock
    _raise_nofile()
    st = {"fired": 0, "first_fire": None, "last_fire": None, "cpu_first": None,
          "cpu_last": None, "opened": 0, "last_open": None}

    class Echo:
        def data(self, sock, buf):
            sock.write(buf)

    class Fire:
        def open(self, sock):
            st["opened"] += 1
            st["last_open"] = time.monotonic()

        def data(self, sock, buf):
            sock.write(buf)

        def timeout(self, sock):
            now = time.monotonic()
            if st["fired"] == 0:
                st["first_fire"], st["cpu_first"] = now, time.process_time()
            st["fired"] += 1
            st["last_fire"], st["cpu_last"] = now, time.process_time()

    if variant == "fire":
        srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Fire(), backlog=4096,
                             idle_timeout=1.0)
    else:
        srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), backlog=4096,
                             idle_timeout=VARIANTS[variant])
    print(srv.port, flush=True)
    try:
        bunsock.run()
    except KeyboardInterrupt:
        pass
    st.update(bunsock.get_loop().stats())
    print(json.dumps(st), flush=True)


# ------------------------------------------------------------------------------------ harness

def start_server(variant):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", variant],
                             stdout=subprocess.PIPE, text=True, env=env,
                             preexec_fn=_child_setup)
    return child, int(child.stdout.readline())


def stop_server(child):
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=60)
    return json.loads(out.strip().splitlines()[-1])


def echo_run(variant, args):
    from bunsock.bench import _loadgen
    child, port = start_server(variant)
    try:
        r = _loadgen.run("127.0.0.1", port, conns=args.conns, pipeline=1, size=64,
                         duration=args.duration, warmup=args.warmup, server_pid=child.pid,
                         connect_timeout=30.0)
    finally:
        stop_server(child)
    return {"rps": r["requests_per_s"], "cpu_us": r["server_cpu_us_per_msg"],
            "errors": r["errors"], "connected": r["connected"]}


def fire_run(args):
    import threading
    from bunsock.bench import _loadgen
    child, port = start_server("fire")
    rfd, wfd = os.pipe()
    out = {}

    def gen():
        try:
            out["r"] = _loadgen.run("127.0.0.1", port, conns=args.conns, mode="idle",
                                    duration=30.0, ready_fd=wfd, stop_fd=rfd_stop,
                                    connect_timeout=30.0)
        except Exception as e:  # noqa: BLE001
            out["exc"] = e

    rfd_stop, wfd_stop = os.pipe()
    th = threading.Thread(target=gen)
    th.start()
    try:
        ready, _, _ = select.select([rfd], [], [], 60)
        if not ready:
            raise RuntimeError("load generator never reported ready")
        os.read(rfd, 64)
        time.sleep(3.0)           # every connection's 1 s idle timeout has passed
    finally:
        os.write(wfd_stop, b"x")
        th.join(60)
        st = stop_server(child)
        for fd in (rfd, wfd, rfd_stop, wfd_stop):
            os.close(fd)
    if "exc" in out:
        raise out["exc"]
    return st, out["r"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default="none,idle60,idle1")
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve)

    sys.path.insert(0, os.path.join(REPO, "src"))
    limit = _raise_nofile()
    if limit < args.conns + 100:
        ap.error("RLIMIT_NOFILE is %d; --conns %d needs more" % (limit, args.conns))
    os.sched_setaffinity(0, {1} if (os.cpu_count() or 1) > 1 else {0})
    variants = args.variants.split(",")
    runs = {v: [] for v in variants}
    for rep in range(args.reps):
        for v in variants:
            res = echo_run(v, args)
            runs[v].append(res)
            print("  rep %d %-7s %8.0f req/s  %6.2f us CPU/msg  connected=%d errors=%d"
                  % (rep + 1, v, res["rps"], res["cpu_us"] or float("nan"), res["connected"],
                     res["errors"]), file=sys.stderr, flush=True)

    def med(v, key):
        xs = [r[key] for r in runs[v] if r[key] is not None]
        return statistics.median(xs), min(xs), max(xs)

    print("\n## Idle timeouts on %d sockets\n" % args.conns)
    print("Echo, 64 B, pipeline 1, all %d connections active; %.1f s windows, %d reps (median, "
          "min-max). Server pinned to CPU 0, load generator to CPU 1.\n"
          % (args.conns, args.duration, args.reps))
    print("| variant | server CPU µs / msg | req/s |")
    print("|---|---|---|")
    for v in variants:
        c, r = med(v, "cpu_us"), med(v, "rps")
        print("| %s | %.2f (%.2f–%.2f) | %.0f (%.0f–%.0f) |" % (v, c[0], c[1], c[2], r[0], r[1],
                                                             r[2]))
    if "none" in runs:
        # Per-rep ratios against the run right next to it: slow drift of a shared machine
        # cancels out better than in a ratio of medians.
        for v in variants:
            if v != "none":
                ratios = sorted(a["cpu_us"] / b["cpu_us"] for a, b in zip(runs[v], runs["none"])
                                if a["cpu_us"] and b["cpu_us"])
                print("\n%s vs none: server CPU per message x%.3f (median of per-rep ratios; "
                      "range %.3f–%.3f)" % (v, statistics.median(ratios), ratios[0], ratios[-1]))

    st, r = fire_run(args)
    print("\nTimeouts firing: %d idle connections, idle_timeout=1 s with a `timeout` handler."
          % args.conns)
    if st["fired"]:
        span = st["last_fire"] - st["first_fire"]
        cpu = st["cpu_last"] - st["cpu_first"]
        print("fired %d of %d; last fired %.2f s after the last accept; firing spread over "
              "%.2f s; server CPU %.1f µs per fired timeout (handler call included)."
              % (st["fired"], st["opened"], st["last_fire"] - st["last_open"], span,
                 cpu * 1e6 / max(1, st["fired"] - 1)))
    else:
        print("no timeout fired (opened %d)" % st["opened"])
    errors = sum(x["errors"] for v in variants for x in runs[v])
    bad = errors or st["fired"] != args.conns
    if bad:
        print("\nWARNING: errors=%d, fired=%d of %d" % (errors, st["fired"], args.conns))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
