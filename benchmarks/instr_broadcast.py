"""User-space instructions per broadcast tick, counted by callgrind: the exact counterpart of
broadcast_bench.py's user CPU column (which getrusage samples too coarsely on a shared VM to
separate 0.25x from 0.4x).

A server with --clients connections (benchmarks/game_load.c reads and discards) writes a 64 B
state to all of them per tick, back to back, for T1 and then T2 ticks; the difference divided by
T2 - T1 is one tick, start-up and accept cancel out. Servers: bunsock (one Group.write), uvloop
(transport.write per client, as in broadcast_bench.py), c (benchmarks/broadcast_c.c: one send()
per client). Valgrind counts user-space instructions only: the kernel's send is not in them.

    python benchmarks/instr_broadcast.py                 # ~2 min
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from broadcast_bench import build_c  # noqa: E402

SERVER = r"""
import sys
kind, n, ticks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
state = bytes(i % 256 for i in range(64))
if kind == "bunsock":
    import bunsock
    loop = bunsock.Loop()
    room = bunsock.Group()
    left = [ticks]
    def tick():
        room.write(state)
        left[0] -= 1
        if left[0] > 0:
            loop.call_soon(tick)
        else:
            srv.stop(True)
            for s in list(room):
                s.close()
    def open_(s):
        room.add(s)
        if len(room) == n:
            loop.call_soon(tick)
    srv = bunsock.listen(hostname="127.0.0.1", port=0, backlog=4096, loop=loop,
                         socket={"open": open_, "data": lambda s, b: None})
    print("port", srv.port, flush=True)
    loop.run()
else:
    import asyncio
    import uvloop
    clients = []
    done = None
    class P(asyncio.Protocol):
        def connection_made(self, t):
            clients.append(t)
            if len(clients) == n:
                asyncio.get_running_loop().call_soon(tick, ticks)
    def tick(k):
        for t in clients:
            t.write(state)
        if k > 1:
            asyncio.get_running_loop().call_soon(tick, k - 1)
        else:
            for t in clients:
                t.close()
            done.set()
    async def main():
        global done
        done = asyncio.Event()
        server = await asyncio.get_running_loop().create_server(P, "127.0.0.1", 0, backlog=4096)
        print("port", server.sockets[0].getsockname()[1], flush=True)
        await done.wait()
        server.close()
    uvloop.run(main())
"""


def count(kind, n, ticks, load, tmp, src):
    out = os.path.join(tmp, "cg.%s.%d" % (kind, ticks))
    env = dict(os.environ, PYTHONPATH=src, PYTHONHASHSEED="0")
    if kind == "c":
        cmd = [build_c("broadcast_c"), str(n), "64", "1e6", str(ticks)]
    else:
        cmd = [os.path.realpath(sys.executable), "-c", SERVER, kind, str(n), str(ticks)]
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + cmd,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    port = int(p.stdout.readline().split()[1])
    lg = subprocess.Popen([load, "tcp", str(port), str(n), "600"], stdout=subprocess.DEVNULL)
    try:
        p.wait(timeout=900)
    finally:
        lg.kill()
        lg.wait()
    ann = subprocess.run(["callgrind_annotate", "--threshold=100", out], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"([\d,]+)\s+\(100.0%\)\s+PROGRAM TOTALS", ann)
    return int(m.group(1).replace(",", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--ticks", type=int, nargs=2, default=[20, 60])
    ap.add_argument("--servers", default="bunsock,uvloop,c")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind (apt-get install -y valgrind)")
    load = build_c("game_load")
    src = os.path.join(os.path.dirname(HERE), "src")
    t1, t2 = args.ticks
    per = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.servers.split(","):
            a = count(kind, args.clients, t1, load, tmp, src)
            b = count(kind, args.clients, t2, load, tmp, src)
            per[kind] = (b - a) / (t2 - t1)
    print("%d clients, 64 B per tick: user-space instructions per tick (per client)"
          % args.clients)
    for kind, v in per.items():
        rel = ["%.2fx %s" % (v / per[r], r) for r in ("uvloop", "c") if r in per and r != kind]
        print("  %-8s %10.0f  (%6.0f)   %s" % (kind, v, v / args.clients, ", ".join(rel)))


if __name__ == "__main__":
    main()
