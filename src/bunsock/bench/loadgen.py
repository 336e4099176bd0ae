"""The echo load generator as a command (no compiler needed: it is the wheel's bunsock.bench._loadgen).

    python -m bunsock.bench.loadgen --port P [--host 127.0.0.1] [--conns 1] [--pipeline 1]
        [--size 64] [--duration 5] [--warmup 1] [--mode echo|idle] [--server-pid PID]
        [--connect-timeout 10]

Same flags and JSON keys as benchmarks/.build/loadgen. Idle mode prints "ready" once every
connection is up and echoed once, then holds them until stdin is readable or closed (or for
--duration seconds if > 0). Exit status 1 when any connection failed.
"""
import argparse
import json
import sys

from ._loadgen import run


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bunsock.bench.loadgen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--mode", choices=["echo", "idle"], default="echo")
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    a = ap.parse_args(argv)
    idle = a.mode == "idle"
    sys.stdout.flush()  # "ready" is written straight to fd 1 by C; nothing of ours may be buffered before it
    try:
        res = run(a.host, a.port, conns=a.conns, pipeline=a.pipeline, size=a.size, duration=a.duration,
                  warmup=a.warmup, mode=a.mode, server_pid=a.server_pid, connect_timeout=a.connect_timeout,
                  ready_fd=1 if idle else -1, stop_fd=0 if idle else -1)
    except (ValueError, OSError) as e:
        sys.exit("loadgen: %s" % e)
    print(json.dumps(res))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
