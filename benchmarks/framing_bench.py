#!/usr/bin/env python3
"""Framing: server CPU per message for a framed echo, bunsock's C framing vs framing in Python.

    PYTHONPATH=src python benchmarks/framing_bench.py                     # ~2.5 min
    PYTHONPATH=src python benchmarks/framing_bench.py --reps 3 --seconds 3 --modes length,lines

50 connections (benchmarks/framing_load.c, pinned to CPU 1) each send 16 messages of 64 B in one
write, framed (length: a 4-byte big-endian length prefix; lines: "\\n"-terminated), and wait for
the 16 to come back as frames of the same rule (the echoed bytes are checked against the sent
ones), then send the next 16. The server (pinned to CPU 0) is one of:

  bunsock        framing= on listen(): `data` gets each message, replies with sock.write_frame
  bunsock-py     bunsock without framing: the Python framing below in `data`, sock.write per
                 message (bunsock corks them: one send per read)
  uvloop         an asyncio Protocol on uvloop with the same Python framing, transport.write
                 per message (what the same code does on asyncio)
  uvloop-joined  the same, but the replies of one read joined into one transport.write (the
                 stronger contender: what a careful asyncio programmer writes)
  c              benchmarks/servers/framing_c.c: epoll, bunsock's C scanner, one send per read
                 (the floor)

The Python framing is what such a server usually carries (examples/game_server.py did it this
way): a bytearray per connection and a scan for complete frames. Reported: server CPU
(schedstat over the window) per message, the median of --reps interleaved runs (every server
once per repetition, in turn), min-max beside it; ratios against both uvloop variants and C.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUILD = os.path.join(HERE, ".build")
KINDS = ["bunsock", "bunsock-py", "uvloop", "uvloop-joined", "c"]


# ---------------------------------------------------------------------------------------------
# The servers (run as `framing_bench.py --serve KIND MODE` in a child process)


class PyFraming:
    """Framing in Python, as an application does it without library support (the pattern of
    examples/game_server.py before framing=): one instance per connection, a bytearray of what
    is not complete yet, reply(frame) called for every complete message with its reply frame."""

    __slots__ = ("buf", "lines")

    def __init__(self, lines):
        self.buf = bytearray()
        self.lines = lines

    def feed(self, data, reply):
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        if self.lines:
            while True:
                i = buf.find(b"\n", pos)
                if i < 0:
                    break
                msg = bytes(buf[pos:i])
                pos = i + 1
                reply(msg + b"\n")
        else:
            while n - pos >= 4:
                size = int.from_bytes(buf[pos:pos + 4], "big")
                if n - pos - 4 < size:
                    break
                msg = bytes(buf[pos + 4:pos + 4 + size])
                pos += 4 + size
                reply(len(msg).to_bytes(4, "big") + msg)
        if pos:
            del buf[:pos]


def serve(kind, mode):
    lines = mode == "lines"
    if kind == "bunsock":
        import bunsock
        from bunsock import framing
        rule = framing.lines() if lines else framing.length_prefixed(4)

        class Echo:
            def data(self, sock, msg):
                sock.write_frame(msg)

        srv = bunsock.listen(hostname="127.0.0.1", port=0, backlog=4096, socket=Echo(),
                             framing=rule)
        print("port", srv.port, flush=True)
        bunsock.run()
    elif kind == "bunsock-py":
        import bunsock

        class PyEcho:
            def open(self, sock):
                sock.data = PyFraming(lines)

            def data(self, sock, buf):
                sock.data.feed(buf, sock.write)     # corked: one send per read

        srv = bunsock.listen(hostname="127.0.0.1", port=0, backlog=4096, socket=PyEcho())
        print("port", srv.port, flush=True)
        bunsock.run()
    else:
        import asyncio

        import uvloop

        joined = kind == "uvloop-joined"

        class P(asyncio.Protocol):
            def connection_made(self, t):
                self.t = t
                self.f = PyFraming(lines)

            def data_received(self, data):
                if joined:
                    out = []
                    self.f.feed(data, out.append)
                    if out:
                        self.t.write(b"".join(out))     # one write per read
                else:
                    self.f.feed(data, self.t.write)     # a write per message

        async def main():
            srv = await asyncio.get_running_loop().create_server(P, "127.0.0.1", 0, backlog=4096)
            print("port", srv.sockets[0].getsockname()[1], flush=True)
            await asyncio.Event().wait()

        uvloop.install()
        asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# The harness


def build():
    os.makedirs(BUILD, exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    out = {}
    for name, srcs in {
        "framing_c": [os.path.join(HERE, "servers", "framing_c.c"),
                      os.path.join(REPO, "csrc", "framing.c")],
        "framing_load": [os.path.join(HERE, "framing_load.c")],
    }.items():
        exe = os.path.join(BUILD, name)
        deps = srcs + [os.path.join(REPO, "csrc", "framing.h")]
        if not os.path.exists(exe) or os.path.getmtime(exe) < max(map(os.path.getmtime, deps)):
            subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-I", os.path.join(REPO, "csrc"),
                            "-o", exe] + srcs, check=True, timeout=120)
        out[name] = exe
    return out


def available(env):
    kinds = ["bunsock", "bunsock-py", "c"]
    if subprocess.run([sys.executable, "-c", "import uvloop"], env=env,
                      capture_output=True).returncode == 0:
        kinds[2:2] = ["uvloop", "uvloop-joined"]
    else:
        print("uvloop not installed (pip install uvloop): skipped", file=sys.stderr)
    return kinds


def start(kind, mode, exes, env):
    if kind == "c":
        cmd = [exes["framing_c"], mode]
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", kind, mode]
    p = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.PIPE, env=env,
                         text=True)
    line = p.stdout.readline().split()
    if not line or line[0] != "port":
        p.kill()
        p.wait()
        raise RuntimeError("%s server did not start" % kind)
    return p, int(line[1])


def one(kind, mode, exes, env, args):
    p, port = start(kind, mode, exes, env)
    try:
        r = subprocess.run(["taskset", "-c", "1", exes["framing_load"], str(port),
                            str(args.conns), str(args.batch), str(args.size), mode,
                            str(args.warmup), str(args.seconds), str(p.pid)],
                           capture_output=True, text=True, timeout=args.warmup + args.seconds + 60)
        if r.returncode != 0:
            raise RuntimeError("load against %s failed: %s" % (kind, r.stderr.strip()))
        res = json.loads(r.stdout)
    finally:
        p.kill()          # our own child, by its handle
        p.wait()
    if res["content_errors"]:
        raise RuntimeError("%s echoed wrong bytes" % kind)
    res["us_per_msg"] = res["server_cpu_ns"] / 1000.0 / max(res["messages"], 1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", nargs=2, metavar=("KIND", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--modes", default="length,lines")
    ap.add_argument("--servers", default=",".join(KINDS))
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args()
    if args.serve:
        return serve(*args.serve)
    env = dict(os.environ)
    src = os.path.join(REPO, "src")
    if os.path.isdir(os.path.join(src, "bunsock")):
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    exes = build()
    kinds = [k for k in available(env) if k in args.servers.split(",")]
    modes = args.modes.split(",")
    runs = {(k, m): [] for k in kinds for m in modes}
    for rep in range(args.reps):
        for mode in modes:
            for kind in kinds:
                res = one(kind, mode, exes, env, args)
                runs[kind, mode].append(res)
                print("rep %d %-6s %-10s %7.3f us/msg  %8.0f msg/s" % (
                    rep + 1, mode, kind, res["us_per_msg"], res["messages"] / res["elapsed"]),
                    file=sys.stderr, flush=True)
    print("\n%d connections x %d messages of %d B in flight, %s s windows, median of %d "
          "(interleaved); server pinned to CPU 0, load to CPU 1\n"
          % (args.conns, args.batch, args.size, args.seconds, args.reps))
    for mode in modes:
        med = {k: statistics.median(r["us_per_msg"] for r in runs[k, mode]) for k in kinds}
        print("%s framing | server CPU us/msg (min-max) | msg/s | x uvloop | x uvloop-joined | x C"
              % mode)
        print("---|---|---|---|---|---")
        for k in kinds:
            v = [r["us_per_msg"] for r in runs[k, mode]]
            rate = statistics.median(r["messages"] / r["elapsed"] for r in runs[k, mode])
            print("%s | %.3f (%.3f-%.3f) | %.0f | %s | %s | %s" % (
                k, med[k], min(v), max(v), rate,
                "%.2f" % (med[k] / med["uvloop"]) if "uvloop" in med else "-",
                "%.2f" % (med[k] / med["uvloop-joined"]) if "uvloop-joined" in med else "-",
                "%.2f" % (med[k] / med["c"]) if "c" in med else "-"))
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"%s/%s" % key: v for key, v in runs.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
