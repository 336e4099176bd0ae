#!/usr/bin/env python3
"""UDP echo: server CPU per datagram, bunsock vs uvloop (DatagramProtocol) vs Bun (udpSocket).

    PYTHONPATH=src python benchmarks/udp_bench.py                  # ~1 min
    PYTHONPATH=src python benchmarks/udp_bench.py --reps 5 --seconds 3
    BUN=/path/to/bun PYTHONPATH=src python benchmarks/udp_bench.py   # Bun also found on PATH

Each server (a child process pinned to CPU 0) echoes every datagram to its sender. The load
(benchmarks/game_load.c, pinned to CPU 1) keeps --senders UDP sockets with --inflight 64-byte
datagrams each in flight, and reads the server's CPU time (all its threads, from
/proc/PID/task/*/schedstat) at the start and end of its measured window. Servers are
interleaved (A B C A B C ...) and the median of --reps runs is reported.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUILD = os.path.join(HERE, ".build")

BUN_SERVER = """
const s = await Bun.udpSocket({
  hostname: "127.0.0.1", port: 0,
  socket: { data(sock, buf, port, addr) { sock.send(buf, port, addr); } },
});
console.log("port", s.port);
"""


def serve(kind):
    if kind == "bunsock":
        import bunsock

        class Echo:
            def data(self, sock, buf, port, address):
                sock.send(buf, port, address)

        u = bunsock.udp_socket(hostname="127.0.0.1", socket=Echo())
        print("port", u.port, flush=True)
        bunsock.run()
    elif kind == "uvloop":
        import asyncio

        import uvloop

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.t = transport

            def datagram_received(self, data, addr):
                self.t.sendto(data, addr)

        async def main():
            loop = asyncio.get_running_loop()
            t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
            print("port", t.get_extra_info("sockname")[1], flush=True)
            await asyncio.Event().wait()

        uvloop.run(main())


def build_load():
    os.makedirs(BUILD, exist_ok=True)
    exe = os.path.join(BUILD, "game_load")
    src = os.path.join(HERE, "game_load.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        subprocess.check_call(["gcc", "-O2", "-Wall", "-o", exe, src])
    return exe


def find_bun():
    cand = os.environ.get("BUN") or shutil.which("bun")
    if not cand:
        local = os.path.join(REPO, "node_modules", ".bin", "bun")
        cand = local if os.path.exists(local) else None
    return cand


def start_server(kind, bun):
    if kind == "bun":
        path = os.path.join(BUILD, "udp_echo_bun.mjs")
        with open(path, "w") as f:
            f.write(BUN_SERVER)
        cmd = [bun, path]
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", kind]
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src") + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = p.stdout.readline()
    if not line.startswith("port"):
        p.kill()
        raise RuntimeError("%s server did not start: %r" % (kind, line))
    return p, int(line.split()[1])


def one_run(kind, load, args, bun):
    p, port = start_server(kind, bun)
    try:
        out = subprocess.run(["taskset", "-c", "1", load, "udp", str(port), str(args.senders),
                              str(args.inflight), str(args.size), str(args.warmup),
                              str(args.seconds), str(p.pid)],
                             capture_output=True, text=True, timeout=args.warmup + args.seconds + 30)
        r = json.loads(out.stdout)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    r["us_per_dgram"] = r["server_cpu_ns"] / 1000.0 / max(1, r["datagrams"])
    r["rate"] = r["datagrams"] / r["seconds"]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--servers", default="bunsock,uvloop,bun")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve)
    load = build_load()
    bun = find_bun()
    kinds = [k for k in args.servers.split(",") if k != "bun" or bun]
    runs = {k: [] for k in kinds}
    for rep in range(args.reps):
        for k in kinds:
            r = one_run(k, load, args, bun)
            runs[k].append(r)
            print("rep %d %-8s %8.0f dgram/s  %.2f us/dgram  (resends %d)"
                  % (rep + 1, k, r["rate"], r["us_per_dgram"], r["resends"]), file=sys.stderr)
    base = statistics.median(r["us_per_dgram"] for r in runs["uvloop"]) if "uvloop" in runs else None
    print("\nUDP echo, %d B datagrams, %d senders x %d in flight, %d reps of %.0f s, median (min-max)"
          % (args.size, args.senders, args.inflight, args.reps, args.seconds))
    print("\n| server | datagrams/s | server CPU us/datagram | vs uvloop |\n|---|---:|---:|---:|")
    summary = {}
    for k in kinds:
        us = [r["us_per_dgram"] for r in runs[k]]
        rate = [r["rate"] for r in runs[k]]
        med = statistics.median(us)
        summary[k] = {"us_per_dgram": med, "rate": statistics.median(rate), "runs": runs[k]}
        print("| %s | %s | %.2f (%.2f-%.2f) | %s |" % (
            k, format(int(statistics.median(rate)), ","), med, min(us), max(us),
            "%.2fx" % (med / base) if base else "-"))
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
