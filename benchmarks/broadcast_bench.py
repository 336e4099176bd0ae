#!/usr/bin/env python3
"""Tick broadcast: server CPU per tick, bunsock Group.write vs uvloop transport.write per client
vs a C floor.

    PYTHONPATH=src python benchmarks/broadcast_bench.py                 # ~1.5 min
    PYTHONPATH=src python benchmarks/broadcast_bench.py --clients 1000 --reps 3 --seconds 4

A server (child process pinned to CPU 0) accepts --clients TCP connections (benchmarks/game_load.c,
pinned to CPU 1, reads and discards) and, once all are in, ticks at a fixed rate writing the same
state to every client: bunsock with one Group.write per tick, uvloop with a Python loop calling
transport.write per client, and `c` (benchmarks/broadcast_c.c), the floor: one send() per client
per tick and nothing else. Scenarios: 64 B at 60 Hz, 256 B at 30 Hz. The server reports, once a
second, its tick count and its own CPU time (getrusage: user and system apart); the window is
the --seconds after a 1 s warm-up. Servers are interleaved, median of --reps.

The broadcast is kernel-bound (a loopback TCP send is several µs of system time per member), so
the figures that show the library's own cost are total CPU per tick against the C floor and
user CPU per tick against uvloop.
"""
import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUILD = os.path.join(HERE, ".build")


def _usage():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def serve(kind, n, size, hz):
    state = bytes(i % 256 for i in range(size))
    report = {"ticks": 0}

    def emit():
        u, s = _usage()
        print("tick %d %.6f %.6f" % (report["ticks"], u, s), flush=True)

    if kind == "bunsock":
        import bunsock
        room = bunsock.Group()
        loop = bunsock.get_loop()

        def tick():
            room.write(state)
            report["ticks"] += 1

        def open_(sock):
            room.add(sock)
            if len(room) == n:
                loop.call_every(1.0 / hz, tick)
                loop.call_every(1.0, emit)

        srv = bunsock.listen(hostname="127.0.0.1", port=0, backlog=4096,
                             socket={"open": open_, "data": lambda s, b: None})
        print("port", srv.port, flush=True)
        bunsock.run()
    else:
        import asyncio

        import uvloop

        clients = set()

        class P(asyncio.Protocol):
            def connection_made(self, t):
                self.t = t
                clients.add(t)
                if len(clients) == n:
                    start()

            def connection_lost(self, exc):
                clients.discard(self.t)

        def start():
            loop = asyncio.get_running_loop()
            period = 1.0 / hz
            t0 = loop.time()

            def tick(k):
                for t in clients:
                    t.write(state)
                report["ticks"] += 1
                loop.call_at(t0 + (k + 1) * period, tick, k + 1)   # fixed rate, like call_every

            def every_second():
                emit()
                loop.call_later(1.0, every_second)

            loop.call_at(t0 + period, tick, 1)
            loop.call_later(1.0, every_second)

        async def main():
            loop = asyncio.get_running_loop()
            server = await loop.create_server(P, "127.0.0.1", 0, backlog=4096)
            print("port", server.sockets[0].getsockname()[1], flush=True)
            await asyncio.Event().wait()

        uvloop.run(main())


def build_c(name):
    os.makedirs(BUILD, exist_ok=True)
    exe = os.path.join(BUILD, name)
    src = os.path.join(HERE, name + ".c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        subprocess.check_call(["gcc", "-O2", "-Wall", "-Wextra", "-o", exe, src])
    return exe


def build_load():
    return build_c("game_load")


def one_run(kind, load, args, size, hz):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src") + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    if kind == "c":
        cmd = ["taskset", "-c", "0", build_c("broadcast_c"), str(args.clients), str(size), str(hz)]
    else:
        cmd = ["taskset", "-c", "0", sys.executable, os.path.abspath(__file__), "--serve", kind,
               "--clients", str(args.clients), "--size", str(size), "--hz", str(hz)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lg = None
    try:
        port = int(p.stdout.readline().split()[1])
        total = args.warmup + args.seconds + 3
        lg = subprocess.Popen(["taskset", "-c", "1", load, "tcp", str(port), str(args.clients),
                               str(total)], stdout=subprocess.PIPE, text=True)
        samples = []
        deadline = time.monotonic() + total + 10
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            _, ticks, u, s = line.split()
            samples.append((int(ticks), float(u), float(s)))
            if len(samples) >= args.warmup + args.seconds + 1:
                break
        a, b = samples[int(args.warmup)], samples[-1]
        out = lg.communicate(timeout=total + 10)[0]
        got = json.loads(out.strip().splitlines()[-1])
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
        if lg is not None and lg.poll() is None:
            lg.kill()
            lg.wait()
    ticks = b[0] - a[0]
    return {"ticks": ticks, "tick_hz": ticks / (len(samples) - 1 - int(args.warmup)),
            "us_per_tick": (b[1] - a[1] + b[2] - a[2]) * 1e6 / max(1, ticks),
            "user_us_per_tick": (b[1] - a[1]) * 1e6 / max(1, ticks),
            "sys_us_per_tick": (b[2] - a[2]) * 1e6 / max(1, ticks),
            "client_min_bytes": got["min_bytes"], "client_max_bytes": got["max_bytes"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--hz", type=float, default=60)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--scenarios", default="64@60,256@30")
    ap.add_argument("--servers", default="bunsock,uvloop,c")
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve, args.clients, args.size, args.hz)
    load = build_load()
    kinds = args.servers.split(",")
    for scen in args.scenarios.split(","):
        size, hz = scen.split("@")
        size, hz = int(size), float(hz)
        runs = {k: [] for k in kinds}
        for rep in range(args.reps):
            for k in kinds:
                r = one_run(k, load, args, size, hz)
                runs[k].append(r)
                print("rep %d %-8s %4d B @ %2.0f Hz: %7.1f us/tick (user %.1f, sys %.1f), "
                      "%.1f ticks/s, client bytes %d-%d" % (
                          rep + 1, k, size, hz, r["us_per_tick"], r["user_us_per_tick"],
                          r["sys_us_per_tick"], r["tick_hz"], r["client_min_bytes"],
                          r["client_max_bytes"]), file=sys.stderr)
        med = {k: statistics.median(r["us_per_tick"] for r in runs[k]) for k in kinds}
        base = med.get("uvloop")
        print("\n%d clients, %d B state at %.0f Hz, %d reps of %d s, median (min-max)"
              % (args.clients, size, hz, args.reps, args.seconds))
        print("\n| server | server CPU us/tick | user us/tick | sys us/tick | vs C floor (total) "
              "| vs uvloop (total) | vs uvloop (user) |\n|---|---:|---:|---:|---:|---:|---:|")
        cbase = med.get("c")
        ubase = statistics.median(r["user_us_per_tick"] for r in runs["uvloop"]) \
            if "uvloop" in runs else None
        for k in kinds:
            t = [r["us_per_tick"] for r in runs[k]]
            u = statistics.median(r["user_us_per_tick"] for r in runs[k])
            s = statistics.median(r["sys_us_per_tick"] for r in runs[k])
            print("| %s | %.0f (%.0f-%.0f) | %.0f | %.0f | %s | %s | %s |" % (
                k, med[k], min(t), max(t), u, s, "%.2fx" % (med[k] / cbase) if cbase else "-",
                "%.2fx" % (med[k] / base) if base else "-",
                "%.2fx" % (u / ubase) if ubase else "-"))


if __name__ == "__main__":
    sys.exit(main())
