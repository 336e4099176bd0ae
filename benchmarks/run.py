#!/usr/bin/env python3
"""Echo benchmark harness: bunsock vs uvloop vs asyncio vs a C epoll floor (vs Bun, if found).

    python benchmarks/run.py                     # everything: ~6 min on 2 cores
    python benchmarks/run.py --quick             # 1 s windows, 2,000 idle conns: ~2 min
    python benchmarks/run.py --servers bunsock,uvloop --scenarios c50,c50p16 --no-memory

What it does, and why:
  * the load generator is C (csrc/loadgen/loadgen.c + loadgen_main.c, built here with gcc) so that it is
    not the weak part: it checks every echoed byte and reports rate, p50/p99 and the server's
    CPU time over the measured window (from /proc/PID/task/*/schedstat);
  * on a 2-core machine the load generator saturates its core before the faster servers do, so
    requests/s tops out near the same value for all of them; **server CPU per echoed message** is
    the comparison that stays fair, and it is what the ratio columns use;
  * the server is pinned to one core and the load generator to the other (`taskset -c`), except
    for the 1-connection latency scenario, where both share a core: waking an idle vCPU costs tens
    of µs here, so across cores it would measure the VM, not the server;
  * servers are interleaved A B C A B C, --reps times (>= 3), so slow drift of a noisy machine hits
    every server alike; medians are reported with min–max;
  * memory: RSS of a fresh server before and after N idle connections (each echoed once, so the
    server has really accepted it and built its per-connection state).

Results: benchmarks/results/<stamp>.{md,json} and latest.{md,json}; the markdown is also printed.
"""
import argparse
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

from bunsock.bench._loadgen import derive  # the same rates `python -m bunsock bench` reports
from bunsock.bench import SCENARIOS  # the same scenarios too

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUILD = os.path.join(HERE, ".build")
SERVERS_DIR = os.path.join(HERE, "servers")


SERVER_ORDER = ["bunsock", "bunsock@base", "uvloop", "asyncio", "c", "bun"]


# ---------------------------------------------------------------------------------------- build

def build():
    """Compile the C floor and the load generator; returns {name: path} of what built."""
    os.makedirs(BUILD, exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    targets = {
        "echo_c": [os.path.join(SERVERS_DIR, "echo_c.c")],
        "loadgen": [os.path.join(REPO, "csrc", "loadgen", "loadgen.c"),
                    os.path.join(REPO, "csrc", "poller_epoll.c"),
                    os.path.join(REPO, "csrc", "poller_kqueue.c"), os.path.join(HERE, "loadgen_main.c")],
    }
    built = {}
    for name, srcs in targets.items():
        out = os.path.join(BUILD, name)
        deps = srcs + [os.path.join(REPO, "csrc", "loadgen", "loadgen.h"),
                       os.path.join(REPO, "csrc", "poller.h")]
        if not os.path.exists(out) or os.path.getmtime(out) < max(os.path.getmtime(d) for d in deps):
            cmd = [cc, "-O2", "-Wall", "-Wextra", "-I", os.path.join(REPO, "csrc"),
                   "-I", os.path.join(REPO, "csrc", "loadgen"), "-o", out] + srcs
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                sys.stderr.write("build of %s failed:\n%s\n" % (name, r.stderr))
                continue
        built[name] = out
    return built


def find_bun():
    for cand in (os.environ.get("BUN"), shutil.which("bun"),
                 os.path.join(REPO, "node_modules", ".bin", "bun"),
                 os.path.join(HERE, "node_modules", ".bin", "bun")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def python_env():
    """Use the in-place build in src/ when there is one, else whatever bunsock is installed."""
    env = dict(os.environ)
    src = os.path.join(REPO, "src")
    pkg = os.path.join(src, "bunsock")
    if os.path.isdir(pkg) and any(f.startswith("_loop.") and f.endswith((".so", ".pyd")) for f in os.listdir(pkg)):
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def importable(code, env):
    try:
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def available_servers(built, env, baseline=None):
    py = sys.executable
    cmds = {
        "bunsock": [py, os.path.join(SERVERS_DIR, "echo_bunsock.py")],
        "uvloop": [py, os.path.join(SERVERS_DIR, "echo_uvloop.py")],
        "asyncio": [py, os.path.join(SERVERS_DIR, "echo_asyncio.py")],
    }
    avail, why = {}, {}
    if importable("import bunsock; bunsock.listen; bunsock.run", env):
        avail["bunsock"] = cmds["bunsock"]
    else:
        why["bunsock"] = "`import bunsock; bunsock.listen` failed"
    if importable("import uvloop", env):
        avail["uvloop"] = cmds["uvloop"]
    else:
        why["uvloop"] = "uvloop not installed"
    avail["asyncio"] = cmds["asyncio"]
    if baseline:
        # Another checkout's in-place build (e.g. the previous commit), run by the same echo
        # script: a before/after comparison in one interleaved run.
        base_env = dict(env, PYTHONPATH=os.path.join(baseline, "src"))
        if importable("import bunsock; bunsock.listen", base_env):
            avail["bunsock@base"] = ["env", "PYTHONPATH=" + os.path.join(baseline, "src"),
                                     py, os.path.join(SERVERS_DIR, "echo_bunsock.py")]
        else:
            why["bunsock@base"] = "no in-place build of bunsock in %s/src" % baseline
    else:
        why["bunsock@base"] = "no --baseline given"
    if "echo_c" in built:
        avail["c"] = [built["echo_c"]]
    else:
        why["c"] = "gcc build failed"
    bun = find_bun()
    if bun:
        avail["bun"] = [bun, os.path.join(SERVERS_DIR, "echo_bun.js")]
    else:
        why["bun"] = "no bun binary (npm install bun)"
    return avail, why


# -------------------------------------------------------------------------------------- processes

def pinned(cmd, cpu):
    return (["taskset", "-c", str(cpu)] + cmd) if cpu is not None else cmd


class Server:
    """One echo server process; taskset execs the server, so Popen's pid is the server's pid."""

    def __init__(self, name, cmd, cpu, env):
        self.name = name
        self.err = open(os.path.join(BUILD, "server-%s.log" % name), "w")
        self.proc = subprocess.Popen(pinned(cmd + ["0"], cpu), stdout=subprocess.PIPE, stderr=self.err,
                                     env=env, start_new_session=True)
        self.pid = self.proc.pid
        self.port = self._read_port(timeout=20)
        self._wait_accepting(timeout=10)

    def _read_port(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError("server %s did not print its port (see %s)" % (self.name, self.err.name))
        return int(line)

    def _wait_accepting(self, timeout):
        end = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)

    def rss(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.err.close()


def loadgen_args(lg, port, **kw):
    args = [lg, "--port", str(port)]
    for k, v in kw.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return args


def run_echo(lg, server, sc, cpu, duration, warmup):
    cmd = pinned(loadgen_args(lg, server.port, conns=sc.conns, pipeline=sc.pipeline, size=sc.size,
                              duration=duration, warmup=warmup, server_pid=server.pid), cpu)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 30)
    if not r.stdout.strip():
        raise RuntimeError("load generator failed: %s" % r.stderr)
    return derive(json.loads(r.stdout))


def run_memory(lg, name, cmd, conns, cpus, env):
    server = Server(name, cmd, cpus[0], env)
    try:
        time.sleep(0.3)  # let the import-time allocations settle
        before = server.rss()
        proc = subprocess.Popen(pinned(loadgen_args(lg, server.port, mode="idle", conns=conns, size=16,
                                                    duration=120, connect_timeout=90), cpus[1]),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 100)
            line = proc.stdout.readline() if ready else ""
            time.sleep(0.3)
            after = server.rss()
            # EOF on its stdin: the load generator closes everything and reports.
            out = proc.communicate(input="", timeout=30)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        res = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"connected": 0, "error": "no output"}
        ok = line.strip() == "ready" and res.get("connected") == conns and not res.get("error")
        return {"server": name, "conns": conns, "connected": res.get("connected", 0), "rss_before": before,
                "rss_after": after, "bytes_per_conn": (after - before) / conns if ok else None,
                "error": None if ok else (res.get("error") or "not ready")}
    finally:
        server.stop()


# -------------------------------------------------------------------------------------- summary

METRICS = ["requests_per_s", "mb_per_s", "p50_us", "p99_us", "server_cpu_us_per_msg", "server_cpu_util",
           "client_cpu_util"]


def summarize(runs):
    out = {}
    for m in METRICS:
        vals = [r[m] for r in runs if r.get(m) is not None]
        out[m] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)} if vals else None
    out["errors"] = sum(r["errors"] for r in runs)
    out["first_error"] = next((r["error"] for r in runs if r.get("error")), None)
    out["reps"] = len(runs)
    return out


def ratio(summary, scen, name, ref, metric):
    a, b = summary.get(scen, {}).get(name), summary.get(scen, {}).get(ref)
    if not a or not b or not a.get(metric) or not b.get(metric) or not b[metric]["median"]:
        return None
    return a[metric]["median"] / b[metric]["median"]


def fmt_num(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return "{:,.0f}".format(v)
    return "{:,.{}f}".format(v, digits)


def fmt_range(s, digits=0):
    if not s:
        return "–"
    return "%s (%s–%s)" % (fmt_num(s["median"], digits), fmt_num(s["min"], digits), fmt_num(s["max"], digits))


def fmt_ratio(v):
    return "–" if v is None else "%.2f×" % v


def markdown(meta, summary, memory, names, scenarios):
    lines = ["# bunsock echo benchmark", "",
             "`%s` — %s" % (meta["command"], meta["date"]), "",
             "Machine: %s, %d CPUs, Linux %s, Python %s%s. Server on CPU %s, load generator on CPU %s "
             "(latency scenario: both on CPU %s). %d repetitions interleaved (A B C A B C), %.1f s windows "
             "after %.1f s warm-up; median (min–max)." % (
                 meta["cpu_model"], meta["cpus"], meta["kernel"], meta["python"],
                 ", uvloop %s" % meta["uvloop"] if meta.get("uvloop") else "",
                 meta["server_cpu"], meta["loadgen_cpu"], meta["server_cpu"], meta["reps"], meta["duration"],
                 meta["warmup"]), "",
             "**Server CPU µs per echoed message** is the fair comparison: on 2 cores the load generator "
             "saturates its core first (see *lg CPU*), which caps req/s for every fast server alike. "
             "Ratios are of the medians; for CPU/msg lower is better.", ""]
    if meta.get("skipped"):
        lines += ["Not run: " + "; ".join("%s (%s)" % kv for kv in meta["skipped"].items()), ""]
    notes = []
    for sc in scenarios:
        lines += ["## %s" % sc.title, "",
                  "| server | req/s | MB/s | p50 µs | p99 µs | server CPU µs/msg | CPU/msg vs uvloop | "
                  "CPU/msg vs C | req/s vs uvloop | srv CPU | lg CPU |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name in names:
            s = summary.get(sc.key, {}).get(name)
            if not s:
                continue
            util = lambda m: "–" if not s[m] else "%.0f%%" % (100 * s[m]["median"])  # noqa: E731
            label = name + (" ⚠ %d errors" % s["errors"] if s["errors"] else "")
            if s["errors"]:
                notes.append("%s / %s: %s" % (sc.key, name, s["first_error"]))
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label, fmt_range(s["requests_per_s"]), fmt_num(s["mb_per_s"]["median"] if s["mb_per_s"] else None, 1),
                fmt_num(s["p50_us"]["median"] if s["p50_us"] else None, 1),
                fmt_num(s["p99_us"]["median"] if s["p99_us"] else None, 1),
                fmt_range(s["server_cpu_us_per_msg"], 2),
                fmt_ratio(ratio(summary, sc.key, name, "uvloop", "server_cpu_us_per_msg")),
                fmt_ratio(ratio(summary, sc.key, name, "c", "server_cpu_us_per_msg")),
                fmt_ratio(ratio(summary, sc.key, name, "uvloop", "requests_per_s")),
                util("server_cpu_util"), util("client_cpu_util")))
        lines.append("")
    if memory:
        lines += ["## Memory per idle connection", "",
                  "RSS of a fresh server before and after %s idle connections (each echoed once)." %
                  "{:,}".format(memory[0]["conns"]), "",
                  "| server | RSS before MiB | RSS after MiB | KiB per connection | vs uvloop | vs C |",
                  "|---|---:|---:|---:|---:|---:|"]
        per = {}
        for name in names:
            rows = [m for m in memory if m["server"] == name]
            vals = [m["bytes_per_conn"] for m in rows if m["bytes_per_conn"] is not None]
            if rows:
                per[name] = statistics.median(vals) if vals else None
        for name in per:
            rows = [m for m in memory if m["server"] == name]
            errs = [m["error"] for m in rows if m["error"]]
            if errs:
                notes.append("memory / %s: %s" % (name, errs[0]))
            rel = lambda ref: fmt_ratio(per[name] / per[ref]) if per.get(ref) and per[name] else "–"  # noqa: E731
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                name + (" ⚠" if errs else ""),
                fmt_num(statistics.median(m["rss_before"] for m in rows) / 2**20, 1),
                fmt_num(statistics.median(m["rss_after"] for m in rows) / 2**20, 1),
                fmt_num(per[name] / 1024 if per[name] is not None else None, 2), rel("uvloop"), rel("c")))
        lines.append("")
    if notes:
        lines += ["## Errors", ""] + ["- " + n for n in notes] + [""]
    return "\n".join(lines)


def machine_meta(args, names, skipped, cpus):
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    meta = {"command": " ".join(["python", "benchmarks/run.py"] + sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu_model": model, "cpus": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(), "servers": names,
            "skipped": skipped, "reps": args.reps, "duration": args.duration, "warmup": args.warmup,
            "server_cpu": cpus[0], "loadgen_cpu": cpus[1]}
    try:
        import uvloop
        meta["uvloop"] = uvloop.__version__
    except ImportError:
        pass
    try:
        meta["git"] = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return meta


# ----------------------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 s windows, 0.3 s warm-up, 2,000 idle connections")
    ap.add_argument("--servers", default=",".join(SERVER_ORDER), help="comma list of " + ",".join(SERVER_ORDER))
    ap.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS),
                    help="comma list of " + ",".join(s.key for s in SCENARIOS) + " (and/or 'memory')")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--baseline", default=None,
                    help="a checkout with an in-place build (python setup.py build_ext --inplace) "
                         "to run as the server 'bunsock@base', e.g. the previous commit")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 3)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run (default 1)")
    ap.add_argument("--memory-conns", type=int, default=None, help="idle connections (default 10000)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    args.memory_conns = args.memory_conns or (2000 if args.quick else 10000)
    if args.reps < 1:
        ap.error("--reps must be >= 1")

    built = build()
    if "loadgen" not in built:
        sys.exit("cannot build the load generator (needs a C compiler)")
    env = python_env()
    avail, skipped = available_servers(built, env, args.baseline)
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    names = [n for n in SERVER_ORDER if n in wanted and n in avail] + \
            [n for n in wanted if n not in SERVER_ORDER and n in avail]
    skipped = {k: v for k, v in skipped.items() if k in wanted}
    keys = [k.strip() for k in args.scenarios.split(",")]
    scenarios = [s for s in SCENARIOS if s.key in keys]
    do_memory = not args.no_memory and ("memory" in keys or args.scenarios == ap.get_default("scenarios"))
    unknown = set(wanted) - set(SERVER_ORDER)
    if unknown:
        ap.error("unknown server(s): %s" % ", ".join(sorted(unknown)))
    unknown = set(keys) - {s.key for s in SCENARIOS} - {"memory"}
    if unknown:
        ap.error("unknown scenario(s): %s" % ", ".join(sorted(unknown)))
    if not names:
        sys.exit("no server to run (skipped: %s)" % skipped)

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if shutil.which("taskset") and len(cpus) >= 2:
        cpu_pair = (cpus[0], cpus[1])
    else:
        cpu_pair = (None, None)
        sys.stderr.write("note: not pinning (needs taskset and 2 CPUs)\n")
    meta = machine_meta(args, names, skipped, cpu_pair)
    lg = built["loadgen"]
    runs, summary, memory = [], {}, []

    total = len(scenarios) * args.reps * len(names)
    done = 0
    for sc in scenarios:
        servers = {}
        try:
            for name in names:  # one process per server for the scenario, all pinned to the server core
                servers[name] = Server(name, avail[name], cpu_pair[0], env)
            per = {name: [] for name in names}
            for rep in range(args.reps):
                for name in names:  # interleaved: A B C A B C
                    cpu = cpu_pair[0] if sc.same_core else cpu_pair[1]
                    done += 1
                    sys.stderr.write("[%d/%d] %s rep %d %s\n" % (done, total, sc.key, rep + 1, name))
                    r = run_echo(lg, servers[name], sc, cpu, args.duration, args.warmup)
                    r.update(scenario=sc.key, server=name, rep=rep)
                    runs.append(r)
                    per[name].append(r)
            summary[sc.key] = {name: summarize(per[name]) for name in names}
        finally:
            for s in servers.values():
                s.stop()

    if do_memory:
        for rep in range(args.reps):
            for name in names:
                sys.stderr.write("[memory %d/%d] %s, %d idle connections\n" % (rep + 1, args.reps, name,
                                                                               args.memory_conns))
                m = run_memory(lg, name, avail[name], args.memory_conns, cpu_pair, env)
                m["rep"] = rep
                memory.append(m)

    md = markdown(meta, summary, memory, names, scenarios)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    doc = {"meta": meta, "scenarios": [vars(s) for s in scenarios], "summary": summary,
           "ratios": {sc.key: {name: {
               "cpu_per_msg_vs_uvloop": ratio(summary, sc.key, name, "uvloop", "server_cpu_us_per_msg"),
               "cpu_per_msg_vs_c": ratio(summary, sc.key, name, "c", "server_cpu_us_per_msg"),
               "rps_vs_uvloop": ratio(summary, sc.key, name, "uvloop", "requests_per_s"),
               "rps_vs_c": ratio(summary, sc.key, name, "c", "requests_per_s")} for name in names}
               for sc in scenarios},
           "memory": memory, "runs": runs}
    for base in (stamp, "latest"):
        with open(os.path.join(args.out, base + ".md"), "w") as f:
            f.write(md)
        with open(os.path.join(args.out, base + ".json"), "w") as f:
            json.dump(doc, f, indent=1)
    print(md)
    sys.stderr.write("wrote %s.{md,json}\n" % os.path.join(args.out, stamp))
    return 1 if any(r["errors"] for r in runs) or any(m["error"] for m in memory) else 0


if __name__ == "__main__":
    sys.exit(main())
