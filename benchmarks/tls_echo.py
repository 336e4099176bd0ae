#!/usr/bin/env python3
"""TLS echo benchmark: bunsock vs uvloop (asyncio Protocol with ssl=), same run, same certificate.

    PYTHONPATH=src python benchmarks/tls_echo.py                 # 3 interleaved reps, 3 s windows
    PYTHONPATH=src python benchmarks/tls_echo.py --reps 5 --seconds 5 --conns 50 --size 1024
    PYTHONPATH=src python benchmarks/tls_echo.py --split 8   # server echoes in 8 write() calls

Metric: **server CPU time per echoed message** (µs), from /proc/PID/task/*/schedstat sampled at
the start and end of the measured window, divided by the messages the client completed in that
window. The server runs pinned to core 0, the client to core 1 (`taskset`). The client is a
bunsock TLS client (the fastest TLS client at hand in Python) doing ping-pong: each of the
`--conns` connections sends `--size` random bytes, waits for all of them to come back (checked
byte for byte), and sends the next message. Both servers use the same certificate, the same
default ssl context (TLS 1.3, TLS_AES_256_GCM_SHA384) and the same client, interleaved
A B A B ... `--reps` times; medians are reported with min-max.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SERVERS = ["bunsock", "uvloop"]


def server_ctx(cert, key):
    import ssl
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def split_of(buf):
    """--split K: the echo is written in K pieces (a header + body + trailer style server), to
    show what sealing one handler's writes into one TLS record saves."""
    k = int(os.environ.get("TLS_ECHO_SPLIT", "1"))
    if k <= 1:
        return [buf]
    step = max(1, -(-len(buf) // k))
    return [buf[i:i + step] for i in range(0, len(buf), step)]


def serve_bunsock(port_file, cert, key):
    import bunsock

    class Echo:
        def data(self, sock, buf):
            for piece in split_of(buf):
                sock.write(piece)

    srv = bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), tls=server_ctx(cert, key))
    with open(port_file + ".tmp", "w") as f:
        f.write(str(srv.port))
    os.rename(port_file + ".tmp", port_file)
    bunsock.run()


def serve_uvloop(port_file, cert, key):
    import asyncio

    import uvloop

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport

        def data_received(self, data):
            for piece in split_of(data):
                self.t.write(piece)

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx(cert, key),
                                       backlog=1024)
        with open(port_file + ".tmp", "w") as f:
            f.write(str(srv.sockets[0].getsockname()[1]))
        os.rename(port_file + ".tmp", port_file)
        await asyncio.Event().wait()

    uvloop.run(main())


def hold_client(port, ca, conns):
    """Open `conns` TLS connections, echo 1 KiB once on each, print 'ready', hold them until
    stdin closes."""
    import ssl

    import bunsock
    ctx = ssl.create_default_context(cafile=ca)
    loop = bunsock.get_loop()
    st = {"echoed": 0, "errors": 0}
    msg = os.urandom(1024)

    class Cli:
        def open(self, sock):
            sock.data = 0
            sock.write(msg)

        def data(self, sock, buf):
            sock.data += len(buf)
            if sock.data == len(msg):
                st["echoed"] += 1
                if st["echoed"] == conns:
                    print("ready", flush=True)

        def close(self, sock, err):
            st["errors"] += 1

        connect_error = close

    socks = []
    for i in range(conns):
        socks.append(bunsock.connect(hostname="127.0.0.1", port=port, socket=Cli(), tls=ctx))
    import threading

    def wait_stdin():
        sys.stdin.read()
        loop.call_soon_threadsafe(loop.stop)
    threading.Thread(target=wait_stdin, daemon=True).start()
    bunsock.run()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def client(port, ca, conns, size, warmup, seconds):
    """Ping-pong over `conns` TLS connections; prints 'start' when the measured window opens and
    a JSON line with the messages completed in it when it closes."""
    import ssl

    import bunsock
    ctx = ssl.create_default_context(cafile=ca)
    msg = os.urandom(size)
    st = {"count": 0, "errors": 0, "open": 0, "phase": 0}
    loop = bunsock.get_loop()

    class Cli:
        def open(self, sock):
            st["open"] += 1
            sock.data = 0
            sock.write(msg)

        def data(self, sock, buf):
            n = sock.data + len(buf)
            if n < size:
                sock.data = n
                return
            if n > size:
                st["errors"] += 1
            sock.data = 0
            st["count"] += 1
            sock.write(msg)

        def close(self, sock, err):
            if st["phase"] < 2:
                st["errors"] += 1

        def connect_error(self, sock, exc):
            st["errors"] += 1

    # content check: the first chunk of every echoed message is compared with what was sent
    class Checked(Cli):
        def data(self, sock, buf):
            if sock.data == 0 and bytes(buf) != msg[:len(buf)]:
                st["errors"] += 1
            Cli.data(self, sock, buf)

    socks = [bunsock.connect(hostname="127.0.0.1", port=port, socket=Checked(), tls=ctx,
                             data=0) for _ in range(conns)]

    def begin():
        st["phase"] = 1
        st["base"] = st["count"]
        st["t0"] = time.perf_counter()
        print("start", flush=True)
        loop.call_later(seconds, finish)

    def finish():
        st["phase"] = 2
        done = st["count"] - st["base"]
        el = time.perf_counter() - st["t0"]
        print(json.dumps({"messages": done, "elapsed": el, "errors": st["errors"],
                          "open": st["open"]}), flush=True)
        for s in socks:
            s.close()
        loop.stop()

    loop.call_later(warmup, begin)
    bunsock.run()


def cpu_ns(pid):
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def start_server(name, certs, env):
    port_file = os.path.join(certs, "port-%s" % name)
    if os.path.exists(port_file):
        os.unlink(port_file)
    srv = subprocess.Popen(["taskset", "-c", "0", sys.executable, __file__, "--serve", name,
                            "--port-file", port_file, "--cert", certs + "/cert.pem",
                            "--key", certs + "/key.pem"], env=env)
    t_end = time.time() + 10
    while not os.path.exists(port_file):
        if time.time() > t_end or srv.poll() is not None:
            srv.kill()
            raise RuntimeError("server %s did not start" % name)
        time.sleep(0.02)
    return srv, int(open(port_file).read())


def memory_run(name, conns, certs, env):
    """Server RSS growth per idle TLS connection (each echoed once)."""
    srv, port = start_server(name, certs, env)
    try:
        time.sleep(0.3)
        before = rss_kib(srv.pid)
        cli = subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "--hold",
                                "--port", str(port), "--ca", certs + "/ca.pem",
                                "--conns", str(conns)], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
        line = cli.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError("hold client failed: %r" % line)
        time.sleep(0.3)
        after = rss_kib(srv.pid)
        cli.stdin.close()
        cli.wait(10)
        return (after - before) / conns
    finally:
        srv.terminate()
        srv.wait(5)


def one_run(name, args, certs, env):
    srv, port = start_server(name, certs, env)
    try:
        cli = subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "--client",
                                "--port", str(port), "--ca", certs + "/ca.pem",
                                "--conns", str(args.conns), "--size", str(args.size),
                                "--warmup", str(args.warmup), "--seconds", str(args.seconds)],
                               env=env, stdout=subprocess.PIPE, text=True)
        line = cli.stdout.readline()
        if line.strip() != "start":
            raise RuntimeError("client failed: %r" % line)
        c0 = cpu_ns(srv.pid)
        line = cli.stdout.readline()
        c1 = cpu_ns(srv.pid)
        cli.wait(10)
        res = json.loads(line)
        if res["errors"] or res["open"] != args.conns:
            raise RuntimeError("client errors: %r" % res)
        res["server_cpu_s"] = (c1 - c0) / 1e9
        res["us_per_msg"] = (c1 - c0) / 1e3 / res["messages"]
        res["msgs_per_s"] = res["messages"] / res["elapsed"]
        res["server_cpu_pct"] = 100.0 * res["server_cpu_s"] / res["elapsed"]
        return res
    finally:
        srv.terminate()
        srv.wait(5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--split", type=int, default=1,
                    help="servers write each echo in this many write() calls")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--serve", choices=SERVERS)
    ap.add_argument("--client", action="store_true")
    ap.add_argument("--hold", action="store_true")
    ap.add_argument("--memory", type=int, default=1000,
                    help="idle TLS connections for the RSS-per-connection figure (0: skip)")
    ap.add_argument("--port-file")
    ap.add_argument("--port", type=int)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--ca")
    args = ap.parse_args()
    if args.serve:
        {"bunsock": serve_bunsock, "uvloop": serve_uvloop}[args.serve](args.port_file, args.cert,
                                                                      args.key)
        return
    if args.hold:
        hold_client(args.port, args.ca, args.conns)
        return
    if args.client:
        client(args.port, args.ca, args.conns, args.size, args.warmup, args.seconds)
        return
    if not shutil.which("taskset"):
        sys.exit("taskset (util-linux) is required")
    import trustme
    certs = tempfile.mkdtemp(prefix="bunsock-tls-bench-")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(certs + "/ca.pem")
    cert.cert_chain_pems[0].write_to_path(certs + "/cert.pem")
    cert.private_key_pem.write_to_path(certs + "/key.pem")
    env = dict(os.environ)
    env["TLS_ECHO_SPLIT"] = str(args.split)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(REPO, "src"), env.get("PYTHONPATH", "")])
    servers = args.servers.split(",")
    results = {s: [] for s in servers}
    try:
        for rep in range(args.reps):
            for name in servers:
                r = one_run(name, args, certs, env)
                results[name].append(r)
                print("rep %d %-8s %7.2f us/msg  %8.0f msg/s  server CPU %5.1f%%"
                      % (rep + 1, name, r["us_per_msg"], r["msgs_per_s"], r["server_cpu_pct"]),
                      flush=True)
        mem = {name: memory_run(name, args.memory, certs, env) for name in servers} \
            if args.memory else {}
    finally:
        shutil.rmtree(certs, ignore_errors=True)
    print()
    print("TLS echo, %d conns x %d B ping-pong, %d reps x %.0f s (median [min-max])"
          % (args.conns, args.size, args.reps, args.seconds))
    print("| server | server CPU µs/msg | msg/s | server CPU % |")
    print("|---|---|---|---|")
    med = {}
    for name in servers:
        us = [r["us_per_msg"] for r in results[name]]
        rate = [r["msgs_per_s"] for r in results[name]]
        pct = [r["server_cpu_pct"] for r in results[name]]
        med[name] = statistics.median(us)
        print("| %s | %.2f [%.2f-%.2f] | %.0f | %.0f |" % (name, med[name], min(us), max(us),
                                                         statistics.median(rate),
                                                         statistics.median(pct)))
    if mem:
        print("\nserver RSS per idle TLS connection (%d conns, each echoed once): %s"
              % (args.memory, ", ".join("%s %.1f KiB" % kv for kv in mem.items())))
    if "bunsock" in med and "uvloop" in med:
        print("\nbunsock / uvloop server CPU per message: %.2fx" % (med["bunsock"] / med["uvloop"]))


if __name__ == "__main__":
    main()
