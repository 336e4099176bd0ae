"""``python -m bunsock bench``: bunsock vs asyncio (and uvloop, if installed) on this machine, now.

    python -m bunsock bench            # 5 scenarios x 3 runs each: about 2 minutes
    python -m bunsock bench --quick    # 4 scenarios, 1 run each: under 20 s
    python -m bunsock bench --json     # the same, as JSON on stdout

Each server is a separate Python process (sys.executable) pinned to one core; the load generator
(bunsock.bench._loadgen, C, shipped in the wheel) runs in this process on another core with the GIL
released, checks every echoed byte, and reads the server's CPU time from /proc. On a 2-core
machine the load generator's core saturates first, so req/s tends to tie between fast servers:
**server CPU per echoed message** is the number that compares them. The full harness (C floor,
Bun, memory per connection) is benchmarks/run.py in the repository.
"""
import argparse
import importlib.util
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from . import _loadgen

HERE = os.path.dirname(os.path.abspath(__file__))


class Scenario:
    def __init__(self, key, title, conns, pipeline, size, same_core=False):
        self.key, self.title = key, title
        self.conns, self.pipeline, self.size, self.same_core = conns, pipeline, size, same_core


# Also used by benchmarks/run.py. The 1-connection one shares a core between server and load
# generator: waking an idle vCPU can cost tens of µs, which would measure the VM instead.
SCENARIOS = [
    Scenario("lat", "1 conn, 64 B (latency, one shared core)", 1, 1, 64, same_core=True),
    Scenario("c50", "50 conns, 64 B", 50, 1, 64),
    Scenario("c50p16", "50 conns, 64 B, x16 pipelined", 50, 16, 64),
    Scenario("c10_16k", "10 conns, 16 KiB", 10, 1, 16 * 1024),
    Scenario("c10_1m", "10 conns, 1 MiB", 10, 1, 1024 * 1024),
]
QUICK = ["lat", "c50", "c50p16", "c10_16k"]
METRICS = ["requests_per_s", "mb_per_s", "p50_us", "p99_us", "server_cpu_us_per_msg"]


# ------------------------------------------------------------------------------------ servers

class Server:
    """An echo server process from echo_servers.py; prints its port, we wait until it accepts."""

    def __init__(self, kind, cpu):
        env = dict(os.environ)
        # The server must import the very bunsock that is running this benchmark.
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(HERE)) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, os.path.join(HERE, "echo_servers.py"), kind, "0"]
        if cpu is not None:
            cmd.append(str(cpu))
        self.kind = kind
        # stderr to a file, not a pipe: a server printing a traceback per connection would fill a
        # pipe nobody reads and stall mid-benchmark.
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, env=env,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.port = None

    def wait_ready(self, timeout=30.0):
        end = time.monotonic() + timeout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stop(keep_log=True)
            self.err.seek(0)
            err = self.err.read().decode("utf-8", "replace").strip().splitlines()
            self.err.close()
            raise RuntimeError("%s echo server did not start: %s" % (self.kind, err[-1] if err else "no output"))
        self.port = int(line)
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.02)

    def stop(self, keep_log=False):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        if not keep_log:
            self.err.close()


def pick_cpus():
    """(server cpu, load generator cpu), or (None, None) when there is no second core to use."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


# ----------------------------------------------------------------------------------- progress

class Progress:
    """A bar on stderr when it is a terminal; otherwise one short line per scenario."""

    def __init__(self, total_seconds, enabled=True):
        self.total = max(total_seconds, 1e-9)
        self.done = 0.0
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled

    def scenario(self, title):
        if self.enabled and not self.tty:
            sys.stderr.write("bench: %s\n" % title)
            sys.stderr.flush()

    def draw(self, label, extra=0.0):
        if not self.tty:
            return
        frac = min(1.0, (self.done + extra) / self.total)
        width = 30
        fill = int(frac * width)
        sys.stderr.write("\r[%s%s] %3d%%  %-40s" % ("#" * fill, "." * (width - fill), frac * 100, label[:40]))
        sys.stderr.flush()

    def close(self):
        if self.tty:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


def run_one(server, sc, cpu, duration, warmup, progress, label):
    """One load-generator pass on a worker thread (GIL released in C) while the bar moves."""
    box = {}

    def work():
        try:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})  # Linux: pins this thread only
            box["r"] = _loadgen.run("127.0.0.1", server.port, conns=sc.conns, pipeline=sc.pipeline, size=sc.size,
                                    duration=duration, warmup=warmup, server_pid=server.pid)
        except BaseException as e:  # re-raised on the main thread
            box["e"] = e

    t = threading.Thread(target=work, name="bunsock-loadgen", daemon=True)
    start = time.monotonic()
    t.start()
    while t.is_alive():
        progress.draw(label, min(time.monotonic() - start, duration + warmup))
        t.join(0.1)
    progress.done += duration + warmup
    if "e" in box:
        raise box["e"]
    return box["r"]


# ------------------------------------------------------------------------------------- report

def summarize(runs):
    out = {}
    for m in METRICS:
        vals = [r[m] for r in runs if r.get(m) is not None]
        out[m] = statistics.median(vals) if vals else None
        out[m + "_min"] = min(vals) if vals else None
        out[m + "_max"] = max(vals) if vals else None
    out["errors"] = sum(r["errors"] for r in runs)
    out["error"] = next((r["error"] for r in runs if r.get("error")), None)
    return out


def fmt(v, digits=0):
    return "-" if v is None else "{:,.{}f}".format(v, digits)


def table(meta, results, kinds, scenarios):
    refs = [k for k in ("asyncio", "uvloop") if k in kinds]
    head = ["scenario", "server", "req/s", "MB/s", "p50 us", "p99 us", "CPU us/msg"] + \
           ["CPU/msg vs %s" % r for r in refs]
    rows = []
    for sc in scenarios:
        for i, kind in enumerate(kinds):
            s = results[sc.key][kind]
            row = [sc.title if i == 0 else "", kind + (" (%d ERRORS)" % s["errors"] if s["errors"] else ""),
                   fmt(s["requests_per_s"]), fmt(s["mb_per_s"], 1), fmt(s["p50_us"], 1), fmt(s["p99_us"], 1),
                   fmt(s["server_cpu_us_per_msg"], 2)]
            for r in refs:
                a, b = s["server_cpu_us_per_msg"], results[sc.key][r]["server_cpu_us_per_msg"]
                row.append("%.2fx" % (a / b) if a and b else "-")
            rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if j < 2 else str(c).rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))
    pin = ("server on CPU %s, load generator on CPU %s (1 conn: both on CPU %s)" %
           (meta["server_cpu"], meta["loadgen_cpu"], meta["server_cpu"])
           if meta["server_cpu"] is not None else "not pinned (one CPU available)")
    out = ["bunsock bench: Python %s, %s %s, %d CPUs, bunsock %s%s" % (
               meta["python"], meta["system"], meta["machine"], meta["cpus"], meta["bunsock"],
               ", uvloop %s" % meta["uvloop"] if meta.get("uvloop") else ""),
           "%s; %.1f s windows, %d run(s) each, median" % (pin, meta["duration"], meta["reps"]), "",
           line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out += ["", "CPU us/msg: the server's CPU time per echoed message (lower is better). With 2 cores the",
            "load generator usually saturates first and caps req/s, so this is the fair comparison."]
    errors = [(sc.key, k, results[sc.key][k]["error"]) for sc in scenarios for k in kinds
              if results[sc.key][k]["errors"]]
    out += ["ERROR %s/%s: %s" % e for e in errors]
    return "\n".join(out)


def meta_info(args, cpus):
    from .. import __version__
    meta = {"python": platform.python_version(), "system": platform.system(), "machine": platform.machine(),
            "cpus": os.cpu_count() or 1, "bunsock": __version__, "server_cpu": cpus[0], "loadgen_cpu": cpus[1],
            "duration": args.duration, "warmup": args.warmup, "reps": args.reps}
    if importlib.util.find_spec("uvloop") is not None:
        try:
            import uvloop
            meta["uvloop"] = uvloop.__version__
        except ImportError:
            pass
    return meta


# --------------------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bunsock bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 scenarios, 1 short run each (< 20 s)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--servers", default=None, help="comma list of bunsock,asyncio,uvloop")
    ap.add_argument("--reps", type=int, default=None, help="runs per server and scenario (default 3; quick 1)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run")
    args = ap.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 3)
    args.duration = args.duration or (0.6 if args.quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 0.5)

    kinds = ["bunsock", "asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") is not None else [])
    if args.servers:
        wanted = [k.strip() for k in args.servers.split(",") if k.strip()]
        bad = [k for k in wanted if k not in ("bunsock", "asyncio", "uvloop")]
        if bad:
            ap.error("unknown server(s): %s" % ", ".join(bad))
        kinds = [k for k in kinds if k in wanted]
        if not kinds:
            ap.error("none of those servers is available here")
    scenarios = [s for s in SCENARIOS if not args.quick or s.key in QUICK]
    cpus = pick_cpus()
    meta = meta_info(args, cpus)

    progress = Progress(len(scenarios) * len(kinds) * args.reps * (args.duration + args.warmup))
    servers = {}
    results, runs = {}, []
    try:
        for kind in kinds:  # start them all at once: their start-up overlaps
            servers[kind] = Server(kind, cpus[0])
        for kind in kinds:
            servers[kind].wait_ready()
        for sc in scenarios:
            progress.scenario(sc.title)
            per = {k: [] for k in kinds}
            for rep in range(args.reps):
                for kind in kinds:  # interleaved, so drift on a noisy machine hits all alike
                    cpu = cpus[0] if sc.same_core else cpus[1]
                    r = run_one(servers[kind], sc, cpu, args.duration, args.warmup, progress,
                                "%s: %s" % (sc.title, kind))
                    r.update(scenario=sc.key, server=kind, rep=rep)
                    per[kind].append(r)
                    runs.append(r)
            results[sc.key] = {k: summarize(per[k]) for k in kinds}
    except KeyboardInterrupt:
        progress.close()
        sys.stderr.write("interrupted\n")
        return 130
    except RuntimeError as e:
        progress.close()
        sys.stderr.write("bench: %s\n" % e)
        return 1
    finally:
        for s in servers.values():
            s.stop()
    progress.close()

    if args.json:
        print(json.dumps({"meta": meta, "scenarios": [vars(s) for s in scenarios],
                          "results": results, "runs": runs}, indent=1))
    else:
        print(table(meta, results, kinds, scenarios))
    return 1 if any(r["errors"] for r in runs) else 0
