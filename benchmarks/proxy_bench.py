"""Proxies side by side: bunsock's relay (buffered and splice), a bunsock proxy written with
handlers, the same on uvloop, and HAProxy in TCP mode (with and without forced splicing).

    python benchmarks/proxy_bench.py                      # everything, 3 reps (~6 min on 2 cores)
    python benchmarks/proxy_bench.py --reps 5 --only iperf --seconds 3
    python benchmarks/proxy_bench.py --contenders relay-buffer,relay-splice --only iperf

Measured as a user would: iperf3 through each proxy (1 and 8 streams, both directions: proxy
CPU-seconds per GB relayed), redis-benchmark through each proxy to a real redis-server (PING,
SET, GET; 50 clients; pipelining 1 and 16: proxy CPU µs per request, p50/p99 latency), and the
proxy's RSS while 50 clients push into a stalled upstream. Proxy CPU is read from
/proc/<pid>/stat (utime + stime, all threads; 10 ms ticks, so runs are long enough for
hundreds of them). The proxy is pinned to CPU 0 and the load
(iperf3, redis) to CPU 1 with taskset; contenders are interleaved, the order rotating per rep.

The relay runs with --idle-timeout 3600; HAProxy runs without splice, with forced splice
(option splice-request + splice-response) and with option splice-auto. After the tables, each
contender's median is given as a ratio to HAProxy's best mode (lowest median) of the same case.

    python benchmarks/proxy_bench.py --only iperf --only redis --pipelines 1 \
        --contenders relay-auto,haproxy,haproxy-splice,haproxy-splice-auto
    python benchmarks/proxy_bench.py --only iperf --contenders relay-auto,haproxy-splice \
        --variant "before=/tmp/old/src" --variant "hwm512k=:--high-water-mark 524288"

Needs Linux, taskset, and the Debian packages iperf3, haproxy, redis-server, redis-tools
(apt-get install -y iperf3 haproxy redis-server redis-tools); whatever is missing is skipped
with that hint. uvloop (pip install uvloop) for the uvloop contender.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
PROXY_CPU, LOAD_CPU = "0", "1"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process exited early (rc=%s)" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_ns(pid):
    """(user, system) CPU time of the process, all threads, in ns, from /proc/<pid>/stat."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return (0, 0)
    # After "pid (comm)": state is field 3, utime 14 and stime 15 (proc(5)).
    return (int(fields[11]) * 10 ** 9 // TICK, int(fields[12]) * 10 ** 9 // TICK)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


HAPROXY_CFG = """global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
%(splice)s
frontend f
    bind 127.0.0.1:%(port)d
    default_backend b
backend b
    server s1 127.0.0.1:%(up)d
"""


def _relay(*extra, src=None):
    # --idle-timeout 3600: where the proxy still turns its connect timeout into an idle timeout
    # (issue 20, bug 1), iperf3's control connection, idle during a run, would be cut.
    env = ["env", "PYTHONPATH=%s" % src] if src else []
    return lambda p, u: env + [PY, "-m", "bunsock", "proxy", "--quiet", "--listen",
                               "127.0.0.1:%d" % p, "--upstream", "127.0.0.1:%d" % u,
                               "--idle-timeout", "3600", *extra]


def variant(spec):
    """--variant NAME=[SRC][:ARGS]: the relay from another build (SRC: a directory holding the
    bunsock package, e.g. a copy of src/ built from another commit) and/or with extra proxy
    flags (ARGS, space-separated), as one more contender of the same interleaved run."""
    name, _, rest = spec.partition("=")
    src, _, args = rest.partition(":")
    return name, _relay(*args.split(), src=src or None)


def contenders():
    c = {
        "relay-buffer": _relay("--relay", "buffer"),
        "relay-splice": _relay("--relay", "splice"),
        "relay-auto": _relay(),
        "bunsock-handlers": lambda p, u: [PY, str(ROOT / "examples" / "proxy.py"), str(p),
                                          "127.0.0.1", str(u)],
    }
    try:
        import uvloop  # noqa: F401
        c["uvloop-handlers"] = lambda p, u: [PY, str(ROOT / "benchmarks" / "servers" /
                                                     "proxy_uvloop.py"), str(p), "127.0.0.1", str(u)]
    except ImportError:
        print("# uvloop not installed (pip install uvloop): uvloop contender skipped")
    if shutil.which("haproxy"):
        c["haproxy"] = lambda p, u: _haproxy(p, u, "")
        c["haproxy-splice"] = lambda p, u: _haproxy(p, u, "    option splice-request\n"
                                                           "    option splice-response")
        c["haproxy-splice-auto"] = lambda p, u: _haproxy(p, u, "    option splice-auto")
    else:
        print("# haproxy not found (apt-get install -y haproxy): HAProxy contenders skipped")
    return c


def _haproxy(port, up, splice):
    fd, path = tempfile.mkstemp(suffix=".cfg")
    with os.fdopen(fd, "w") as f:
        f.write(HAPROXY_CFG % {"port": port, "up": up, "splice": splice})
    return ["haproxy", "-db", "-f", path]


class Proxy:
    def __init__(self, name, make, upstream):
        self.port = free_port()
        cmd = make(self.port, upstream)
        self.cfg = cmd[-1] if cmd[0] == "haproxy" else None     # its temporary config file
        self.p = subprocess.Popen(["taskset", "-c", PROXY_CPU] + cmd, env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port, self.p)
        except BaseException:
            self.stop()
            raise
        time.sleep(0.1)

    def cpu(self):
        return cpu_ns(self.p.pid)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        if self.cfg:
            os.unlink(self.cfg)


def spent(c0, c1):
    """(total, user, system) seconds between two cpu() readings."""
    u, k = (c1[0] - c0[0]) / 1e9, (c1[1] - c0[1]) / 1e9
    return u + k, u, k


# -- iperf3 ---------------------------------------------------------------------------------------

def iperf_case(name, make, streams, reverse, seconds, iperf_port):
    px = Proxy(name, make, iperf_port)
    try:
        c0 = px.cpu()
        cmd = ["taskset", "-c", LOAD_CPU, "iperf3", "-c", "127.0.0.1", "-p", str(px.port),
               "-t", str(seconds), "-P", str(streams), "-J"] + (["-R"] if reverse else [])
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
        c1 = px.cpu()
    finally:
        px.stop()
    res = json.loads(out)
    if "error" in res:
        raise RuntimeError(res["error"])
    nbytes = res["end"]["sum_received"]["bytes"]
    total, user, kern = spent(c0, c1)
    return {"cpu_s_per_gb": total / (nbytes / 1e9), "user_frac": user / total if total else 0,
            "gbit_s": nbytes * 8 / seconds / 1e9}


# -- redis ----------------------------------------------------------------------------------------

def redis_case(name, make, test, pipeline, requests, redis_port):
    px = Proxy(name, make, redis_port)
    try:
        c0 = px.cpu()
        cmd = ["taskset", "-c", LOAD_CPU, "redis-benchmark", "-p", str(px.port), "-c", "50",
               "-n", str(requests), "-t", test, "-P", str(pipeline), "--csv"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
        c1 = px.cpu()
    finally:
        px.stop()
    rows = [line.replace('"', "").split(",") for line in out.strip().splitlines()]
    head, row = rows[0], rows[-1]
    col = {h: i for i, h in enumerate(head)}
    total, user, kern = spent(c0, c1)
    return {"cpu_us_per_req": total * 1e6 / requests, "user_frac": user / total if total else 0,
            "rps": float(row[col["rps"]]),
            "p50_ms": float(row[col["p50_latency_ms"]]), "p99_ms": float(row[col["p99_latency_ms"]])}


# -- stalled upstream -----------------------------------------------------------------------------

def stalled_case(name, make, conns=50, seconds=2.0):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    held = []
    stop = threading.Event()

    def accept():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(lsock.accept()[0])      # never read
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    px = Proxy(name, make, lsock.getsockname()[1])
    clients = []
    try:
        for _ in range(conns):
            c = socket.create_connection(("127.0.0.1", px.port))
            c.setblocking(False)
            clients.append(c)
        time.sleep(0.5)
        base = rss_kib(px.p.pid)
        chunk = b"x" * (256 << 10)
        pushed = 0
        end = time.time() + seconds
        while time.time() < end:
            moved = 0
            for c in clients:
                try:
                    n = c.send(chunk)
                    pushed += n
                    moved += n
                except BlockingIOError:
                    pass
            if not moved:
                time.sleep(0.01)
        peak = rss_kib(px.p.pid)
    finally:
        for c in clients:
            c.close()
        px.stop()
        stop.set()
        t.join()
        for h in held:
            h.close()
        lsock.close()
    return {"rss_kib_per_conn": (peak - base) / conns, "pushed_mib": pushed / 2 ** 20}


# -- driver ---------------------------------------------------------------------------------------

def med(vals):
    vals = sorted(vals)
    return "%.3g (%.3g–%.3g)" % (statistics.median(vals), vals[0], vals[-1]) if vals else "–"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=2, help="iperf3 run length")
    ap.add_argument("--requests", type=int, default=100000, help="redis-benchmark -n")
    ap.add_argument("--only", choices=("iperf", "redis", "stalled"), action="append")
    ap.add_argument("--contenders", help="comma-separated subset")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=[SRC][:ARGS]: a relay from another build and/or with other flags")
    ap.add_argument("--pipelines", default="1,16", help="redis-benchmark -P values (e.g. 1)")
    ap.add_argument("--tests", default="ping,set,get", help="redis-benchmark -t values")
    args = ap.parse_args(argv)
    if not sys.platform.startswith("linux") or not shutil.which("taskset"):
        print("needs Linux and taskset (util-linux)")
        return 0
    cons = contenders()
    if args.contenders:
        cons = {k: v for k, v in cons.items() if k in args.contenders.split(",")}
    cons.update(variant(v) for v in args.variant)
    parts = args.only or ["iperf", "redis", "stalled"]
    results = {}
    helpers = []
    try:
        if "iperf" in parts:
            if not shutil.which("iperf3"):
                print("# iperf3 not found (apt-get install -y iperf3): iperf cases skipped")
                parts.remove("iperf")
            else:
                iport = free_port()
                helpers.append(subprocess.Popen(["taskset", "-c", LOAD_CPU, "iperf3", "-s", "-p",
                                                 str(iport)], stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL))
                time.sleep(0.5)
        if "redis" in parts:
            if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
                print("# redis not found (apt-get install -y redis-server redis-tools): "
                      "redis cases skipped")
                parts.remove("redis")
            else:
                rport = free_port()
                helpers.append(subprocess.Popen(["taskset", "-c", LOAD_CPU, "redis-server",
                                                 "--port", str(rport), "--save", "",
                                                 "--appendonly", "no"],
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL))
                wait_port(rport, helpers[-1])
        names = list(cons)
        for rep in range(args.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                make = cons[name]
                if "iperf" in parts:
                    for streams in (1, 8):
                        for rev in (False, True):
                            key = ("iperf", "%d stream%s %s" % (streams, "s" if streams > 1 else "",
                                                                  "down" if rev else "up"), name)
                            try:
                                r = iperf_case(name, make, streams, rev, args.seconds, iport)
                            except Exception as e:       # one failed run is reported, not fatal
                                print("# %s: %s" % (key, e))
                                continue
                            results.setdefault(key, []).append(r)
                if "redis" in parts:
                    for test in args.tests.split(","):
                        for pl in map(int, args.pipelines.split(",")):
                            key = ("redis", "%s P%d" % (test.upper(), pl), name)
                            n = args.requests * (4 if pl > 1 else 1)
                            try:
                                r = redis_case(name, make, test, pl, n, rport)
                            except Exception as e:
                                print("# %s: %s" % (key, e))
                                continue
                            results.setdefault(key, []).append(r)
                if "stalled" in parts:
                    key = ("stalled", "50 conns", name)
                    results.setdefault(key, []).append(stalled_case(name, make))
            print("# rep %d done" % (rep + 1), flush=True)
    finally:
        for h in helpers:
            h.terminate()
            h.wait()
    report(results, names)
    ratios(results, names)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"|".join(k): v for k, v in results.items()}, f, indent=1)
    return 0


def report(results, names):
    cases = {}
    for (kind, case, name), runs in results.items():
        cases.setdefault((kind, case), {})[name] = runs
    metric = {"iperf": ("cpu_s_per_gb", "proxy CPU-s per GB"),
              "redis": ("cpu_us_per_req", "proxy CPU µs per request"),
              "stalled": ("rss_kib_per_conn", "proxy RSS KiB per stalled connection")}
    for kind in ("iperf", "redis", "stalled"):
        ks = [k for k in cases if k[0] == kind]
        if not ks:
            continue
        field, title = metric[kind]
        print("\n### %s: %s, median (min–max)\n" % (kind, title))
        print("| case | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for k in ks:
            row = [med([r[field] for r in cases[k].get(n, [])]) for n in names]
            print("| %s | %s |" % (k[1], " | ".join(row)))
        if kind == "redis":
            print("\np50 / p99 latency ms (median of reps)\n")
            print("| case | " + " | ".join(names) + " |")
            print("|---|" + "---:|" * len(names))
            for k in ks:
                row = []
                for n in names:
                    rs = cases[k].get(n, [])
                    row.append("%.3f / %.3f" % (statistics.median(r["p50_ms"] for r in rs),
                                                statistics.median(r["p99_ms"] for r in rs))
                               if rs else "–")
                print("| %s | %s |" % (k[1], " | ".join(row)))
        if kind == "iperf":
            print("\nthroughput Gbit/s (median)\n")
            print("| case | " + " | ".join(names) + " |")
            print("|---|" + "---:|" * len(names))
            for k in ks:
                row = ["%.1f" % statistics.median(r["gbit_s"] for r in cases[k][n])
                       if cases[k].get(n) else "–" for n in names]
                print("| %s | %s |" % (k[1], " | ".join(row)))


def ratios(results, names):
    """Each contender against HAProxy's best mode in the same case (ratio of medians)."""
    metric = {"iperf": "cpu_s_per_gb", "redis": "cpu_us_per_req"}
    ha = [n for n in names if n.startswith("haproxy")]
    mine = [n for n in names if not n.startswith("haproxy")]
    if not ha or not mine:
        return
    print("\n### ratio of proxy CPU to HAProxy's best mode in the same case (median / median)\n")
    print("| case | best HAProxy mode | " + " | ".join(mine) + " | user-time share (%s, best "
          "HAProxy) |" % ", ".join(mine))
    print("|---|---|" + "---:|" * len(mine) + "---|")
    for (kind, case, name) in sorted({(k[0], k[1], None) for k in results if k[0] in metric}):
        f = metric[kind]
        meds = {n: statistics.median(r[f] for r in results[(kind, case, n)])
                for n in names if results.get((kind, case, n))}
        has = {n: v for n, v in meds.items() if n in ha}
        if not has:
            continue
        best = min(has, key=has.get)
        row = ["%.2f×" % (meds[n] / has[best]) if n in meds else "–" for n in mine]
        share = ["%.0f%%" % (100 * statistics.median(r["user_frac"]
                                                   for r in results[(kind, case, n)]))
                 for n in mine + [best] if results.get((kind, case, n))]
        print("| %s %s | %s | %s | %s |" % (kind, case, best, " | ".join(row), ", ".join(share)))


if __name__ == "__main__":
    sys.exit(main())
