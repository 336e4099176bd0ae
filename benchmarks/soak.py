#!/usr/bin/env python3
"""Soak: a bunsock server under a mixed workload for minutes; fails if it leaks or loses a byte.

    taskset -c 1 python benchmarks/soak.py                   # 5 minutes
    taskset -c 1 python benchmarks/soak.py --minutes 0.5     # quick check
    taskset -c 1 python benchmarks/soak.py --minutes 10 --json soak.json
    scripts/asan-soak.sh                                     # 2 minutes under AddressSanitizer

Three processes (children inherit the CPU affinity):
  * the **server** (the subject; bunsock from $PYTHONPATH, else this checkout's src/): five
    listeners on 127.0.0.1 --
      echo      plaintext echo with flow control: pause() when buffered_amount > 1 MiB, resume()
                on drain; an idle timeout of 120 s is armed (and restarted by every read/write) on
                every socket; its handler table is swapped with reload() every 10 s;
      tls       the same over TLS (a trustme certificate);
      abort     echo, but a per-socket call_later() ends each connection 50-800 ms after accept,
                with terminate() (RST) or close() (buffered bytes discarded) at random;
      idle_a    idle_timeout=1.0 with a timeout handler that end()s the socket (memoryview reads);
      idle_b    sock.timeout(1.5) set in open, no timeout handler: closed with TimeoutError;
    plus timer churn: call_every(10 ms) creates call_later timers (0-300 ms) and cancels some,
    call_soon, and short-lived call_every timers. Each second it reports (one JSON line on stdout)
    its RSS, open fds, live accepted connections, debug_counts() and counters;
  * the **clients** (plain asyncio, no bunsock: an independent verifier) run until the deadline:
      churn     connect, echo 1 B-1 MiB, close (half of them via write_eof + read to EOF);
      stream    3-20 s streams of random chunks, every byte verified in order;
      slow      SO_RCVBUF=4 KiB, reading 4 KiB at a time with pauses and stalls of up to 1.5 s
                while sending 1-6 MiB: the server's sink backs up, pauses, drains, resumes;
      reset     SO_RCVBUF=4 KiB, 1-8 MiB sent without reading, then RST (SO_LINGER 0) at a random
                moment: the server holds megabytes for a peer that is gone;
      abort     streams (or, 30%, sends one message and waits) until the server's RST/close ends it;
      tls       TLS echo, one round or a 2-10 s conversation, closed with close_notify;
      tls_abort RST before/during the ClientHello, garbage instead of TLS, or RST mid-transfer
                with megabytes queued after the handshake;
      idle      echo, a little activity (which must not time out), then idle until the server's
                idle timeout closes it (idle_a or idle_b);
    every byte sent is compared with what comes back (content, order, length). On connections
    the workload completes normally nothing may be missing; on reset/aborted ones what came back
    must be an intact prefix (counted separately);
  * this **monitor** samples /proc/<server>/status (VmRSS) and /proc/<server>/fd each second,
    prints a status line every 10 s, and at the end: waits for the server to return to its
    starting state (no connection, no live Socket, the same fds), stops it with SIGTERM (it stops
    its listeners and exits 0), and prints the verdict.

It fails (exit 1) if: a byte was lost or corrupted; a client saw an unexpected error or stalled
(60 s); the server died, stopped reporting, raised in a handler, fired a cancelled timer, lost
one, or fired an idle timeout early; over the last 80% of the run (least-squares fit, one sample
a second) RSS grew (slope above --rss-slope-max KiB/min AND fitted growth above --rss-growth-max
% of the mean), or the fds / Socket objects not accounted for by a live connection grew (slope
above --fd-slope-max per minute and at least 2 over the window); the server did not come back to
its starting fds and zero Sockets once the clients were gone, or kept a Socket, Listener or Timer
after a clean shutdown; a workload kind never ran. A watchdog kills everything (by PID) if the
run overstays by 4 minutes. Exit 2: the server did not start.
"""
import argparse
import asyncio
import collections
import json
import math
import os
import queue
import random
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB

PAUSE_AT = 1 * MiB          # server: pause reading while more than this waits in the sink
ECHO_IDLE = 120.0           # server: idle timeout armed on every echo/tls/abort socket
IDLE_A = 1.0                # listener idle_timeout (timeout handler -> end())
IDLE_B = 1.5                # sock.timeout() in open (no handler -> closed with TimeoutError)
STALL = 60.0                # client: a connection taking longer than this is a stall (failure)
LISTENERS = ("echo", "tls", "abort", "idle_a", "idle_b")

# Client workers per kind (each loops: one connection at a time until the deadline).
MIX = {"churn": 16, "stream": 6, "slow": 4, "reset": 4, "abort": 4, "tls": 8, "tls_abort": 2,
       "idle": 60}
COMPLETE_KINDS = ("churn", "stream", "slow", "tls", "idle")   # every byte must come back


def read_rss_kib(pid="self"):
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def count_fds(pid="self"):
    """Open fds of a process (for "self", not counting the one listdir itself opens)."""
    try:
        return len(os.listdir("/proc/%s/fd" % pid)) - (pid == "self")
    except OSError:
        return None


def asan_loaded():
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ============================================================================= server (subject)

def server_main(args):
    import gc

    import bunsock
    from bunsock._loop import debug_counts

    loop = bunsock.get_loop()
    rng = random.Random(args.seed * 7919 + 1)
    st = collections.Counter()
    printed = [0]

    def note(msg):
        if printed[0] < 30:
            printed[0] += 1
            sys.stderr.write("[soak server] %s\n" % msg)
            sys.stderr.flush()

    def hook(u):
        st["unraisable"] += 1
        note("unraisable: %r %s" % (u.exc_value, "".join(
            traceback.format_exception(u.exc_type, u.exc_value, u.exc_traceback))))
    sys.unraisablehook = hook

    # --inject: deliberate faults, to see that the soak catches each kind of failure.
    fault = [args.inject in ("corrupt", "drop"), time.monotonic() + 5]
    hoard = []

    def inject_leak():
        if args.inject == "leak-fd":
            hoard.append(os.open(os.devnull, os.O_RDONLY))
        elif args.inject == "leak-rss":
            hoard.append(bytearray(b"x" * (256 * KiB)))

    class Echo:
        """Echo with flow control. sock.data = [paused, abort_timer]."""

        def __init__(self, kind):
            self.kind = kind

        def open(self, sock):
            sock.data = [False, None]
            st["open." + self.kind] += 1

        def data(self, sock, buf):
            if fault[0] and self.kind == "echo" and len(buf) > 1 and time.monotonic() > fault[1]:
                fault[0] = None                  # --inject corrupt/drop: once, 5 s into the run
                if args.inject == "corrupt":
                    buf = bytes(buf[:-1]) + bytes([buf[-1] ^ 1])
                else:
                    buf = bytes(buf[:-1])
            sock.write(buf)
            d = sock.data
            if not d[0] and sock.buffered_amount > PAUSE_AT:
                d[0] = True
                sock.pause()
                st["pauses"] += 1

        def drain(self, sock):
            st["drains"] += 1
            d = sock.data
            if d is not None and d[0]:
                d[0] = False
                sock.resume()

        def end(self, sock):
            st["peer_fin." + self.kind] += 1

        def close(self, sock, err):
            d = sock.data
            if d is not None and d[1] is not None:
                d[1].cancel()
            sock.data = None
            st["close.%s.%s" % (self.kind, "ok" if err is None else type(err).__name__)] += 1
            if args.inject == "leak-sockets" and st["close.%s.ok" % self.kind] % 50 == 1:
                hoard.append(sock)
            st["bytes_in"] += sock.bytes_read
            st["bytes_out"] += sock.bytes_written

        def error(self, sock, exc):
            st["handler_errors"] += 1
            note("error handler (%s): %s" % (self.kind, "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__))))

    idle_late = [0.0, 0.0]             # max late, max early (seconds)
    idle_fires = []                    # [remote port, monotonic time, seconds since last data()]

    def check_idle(sock, configured):
        """An idle timeout must not fire before `configured` s without a read or write (the
        echo's write happens in `data`, so the last `data` call is the last activity). The loop
        stamps activity with its clock of the iteration start, which may be a little before
        `data` runs, so "early" allows the 100 ms the contract gives timeouts (docs/API.md §6)."""
        now = time.monotonic()
        idle = now - sock.data[2]
        idle_fires.append((sock.remote_port, round(now, 4), round(idle, 4)))
        if idle < configured - 0.1:
            st["idle_early"] += 1
            note("idle timeout after %.3f s idle, configured %.1f s" % (idle, configured))
        idle_late[0] = max(idle_late[0], idle - configured)
        idle_late[1] = max(idle_late[1], configured - idle)

    class Idle(Echo):
        def open(self, sock):
            sock.data = [False, None, time.monotonic()]
            st["open." + self.kind] += 1

        def data(self, sock, buf):
            sock.data[2] = time.monotonic()
            Echo.data(self, sock, buf)
            if args.inject == "slow-handler" and rng.random() < 0.01:
                time.sleep(0.3)            # a slow handler: the rest of the batch runs late

    class EchoTimeout(Idle):
        def timeout(self, sock):
            st["idle_timeouts." + self.kind] += 1
            check_idle(sock, IDLE_A)
            sock.end()

    class EchoIdleB(Idle):
        def open(self, sock):
            Idle.open(self, sock)
            sock.timeout(IDLE_B)

        def close(self, sock, err):
            if isinstance(err, TimeoutError):
                check_idle(sock, IDLE_B)
            Echo.close(self, sock, err)

    class Abort(Echo):
        def open(self, sock):
            Echo.open(self, sock)
            sock.data[1] = loop.call_later(rng.uniform(0.05, 0.8), abort, sock)

    def abort(sock):
        d = sock.data
        if d is None:                      # already closed (its close handler cancels us)
            st["abort_after_close"] += 1
            return
        d[1] = None
        if rng.random() < 0.5:
            st["srv_terminate"] += 1
            sock.terminate()
        else:
            st["srv_close"] += 1
            sock.close()

    tls = {"cert": os.path.join(args.certdir, "cert.pem"), "key": os.path.join(args.certdir, "key.pem")}
    handlers = {"echo": Echo("echo"), "tls": Echo("tls"), "abort": Abort("abort"),
                "idle_a": EchoTimeout("idle_a"), "idle_b": EchoIdleB("idle_b")}
    L = {
        "echo": bunsock.listen(hostname=HOST, port=0, socket=handlers["echo"], idle_timeout=ECHO_IDLE),
        "tls": bunsock.listen(hostname=HOST, port=0, socket=handlers["tls"], tls=tls,
                              idle_timeout=ECHO_IDLE),
        "abort": bunsock.listen(hostname=HOST, port=0, socket=handlers["abort"],
                                binary_type="bytearray", idle_timeout=ECHO_IDLE),
        "idle_a": bunsock.listen(hostname=HOST, port=0, socket=handlers["idle_a"],
                                 idle_timeout=IDLE_A, binary_type="memoryview"),
        "idle_b": bunsock.listen(hostname=HOST, port=0, socket=handlers["idle_b"]),
    }

    # ---- timer churn
    pending = {}                         # id -> (Timer, due monotonic)
    everies = set()                      # live call_every timers of the churn
    seq = [0]
    max_late = [0.0]

    def fired(i):
        p = pending.pop(i, None)
        if p is None:
            st["timer_fired_after_cancel"] += 1
            note("timer %d fired after cancel (or twice)" % i)
            return
        st["timers_fired"] += 1
        late = time.monotonic() - p[1]
        if late > max_late[0]:
            max_late[0] = late
        if late < -0.002:
            st["timers_early"] += 1

    def every_tick(box):
        box[0] -= 1
        st["every_fired"] += 1
        if box[0] <= 0:
            box[1].cancel()
            everies.discard(box[1])
            box[1] = None
            st["every_cancelled"] += 1

    def churn():
        now = time.monotonic()
        for _ in range(rng.randint(0, 6)):
            seq[0] += 1
            d = rng.uniform(0, 0.3)
            pending[seq[0]] = (loop.call_later(d, fired, seq[0]), now + d)
            st["timers_created"] += 1
        if pending and rng.random() < 0.5:
            i = rng.choice((next(iter(pending)), seq[0]))
            p = pending.pop(i, None)
            if p is not None:
                p[0].cancel()
                st["timers_cancelled"] += 1
        if rng.random() < 0.2:
            loop.call_soon(st.update, ("call_soon",))
        if rng.random() < 0.01:
            box = [rng.randint(1, 20), None]
            box[1] = loop.call_every(0.005, every_tick, box)
            everies.add(box[1])
            st["every_created"] += 1
        if rng.random() < 0.001:          # ~ every 10 s
            L["echo"].reload(socket=handlers["echo"])
            st["reloads"] += 1

    churn_t = loop.call_every(0.01, churn)

    ppid = os.getppid()

    def report(final=False):
        inject_leak()
        conns = {k: lst.connections for k, lst in L.items()}
        total = sum(conns.values())
        if total == 0 or final:
            gc.collect()               # nothing live: count what really survives
        now = time.monotonic()
        overdue = sum(1 for _, due in pending.values() if due < now - 2.0)
        out = {
            "t": now, "rss": read_rss_kib(), "fds": count_fds(), "conns": total, "per": conns,
            "dc": debug_counts(), "st": dict(st), "pending_timers": len(pending),
            "overdue_timers": overdue, "max_late_ms": round(max_late[0] * 1000, 1),
            "idle_max_late_ms": round(idle_late[0] * 1000, 1),
            "idle_max_early_ms": round(idle_late[1] * 1000, 1),
            "idle_fires": idle_fires[:],
        }
        del idle_fires[:]
        sys.stdout.write(("F " if final else "S ") + json.dumps(out) + "\n")
        sys.stdout.flush()
        if os.getppid() != ppid:      # the monitor is gone: do not linger
            loop.stop()

    sys.stdout.write("P " + json.dumps({
        "ports": {k: L[k].port for k in LISTENERS}, "pid": os.getpid(),
        "bunsock": os.path.dirname(bunsock.__file__), "backend": bunsock.backend(),
        "asan": asan_loaded(),
    }) + "\n")
    sys.stdout.flush()
    report()
    report_t = loop.call_every(1.0, report)
    signal.signal(signal.SIGTERM, lambda *a: loop.stop())
    guard = loop.call_later(args.max_seconds, loop.stop)    # failsafe
    guard.unref()
    loop.run()
    # Clean shutdown: stop(True) closes every socket; then drop every reference we hold, so the
    # final debug_counts() must be all zeros but the loop.
    for k in LISTENERS:
        L.pop(k).stop(True)
    for t in [churn_t, report_t, guard] + [p[0] for p in pending.values()] + list(everies):
        t.cancel()
    st["timers_cancelled_at_exit"] = len(pending)
    pending.clear()
    everies.clear()
    del churn_t, report_t, guard, t
    report(final=True)
    loop.close()
    return 0


# ===================================================================================== clients

class Lost(Exception):
    """The stream is not what was sent."""


class EarlyEOF(Lost):
    """EOF before everything sent was echoed."""


class IdleCutShort(Exception):
    """The server's idle timeout closed a connection while the client still used it."""


class Verifier:
    """Bytes sent and not yet echoed; each echoed chunk must be exactly their head."""

    __slots__ = ("pending", "sent", "verified")

    def __init__(self):
        self.pending = bytearray()
        self.sent = 0
        self.verified = 0

    def send(self, data):
        self.pending += data
        self.sent += len(data)

    def got(self, chunk):
        n = len(chunk)
        if n > len(self.pending) or not self.pending.startswith(chunk):
            raise Lost("echoed bytes differ from those sent at offset %d (chunk %d B, %d B pending)"
                       % (self.verified, n, len(self.pending)))
        del self.pending[:n]
        self.verified += n


def client_main(args):
    ports = json.loads(args.ports)
    return asyncio.run(Clients(args, ports).main())


class Clients:
    def __init__(self, args, ports):
        self.args = args
        self.ports = ports
        self.st = collections.Counter()
        self.live = 0
        self.maxlive = 0
        self.errors_printed = 0
        self.cut_short = []
        self.ctx = ssl.create_default_context(cafile=os.path.join(args.certdir, "ca.pem"))
        self.pool = memoryview(random.Random(args.seed).randbytes(16 * MiB))
        # a ClientHello to cut short in tls_abort
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self.ctx.wrap_bio(inc, out, server_hostname="localhost")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self.hello = out.read()

    # ------------------------------------------------------------------ helpers
    def note(self, msg):
        if self.errors_printed < 30:
            self.errors_printed += 1
            sys.stderr.write("[soak client] %s\n" % msg)
            sys.stderr.flush()

    def payload(self, rng, n):
        off = rng.randrange(0, len(self.pool) - n)
        return self.pool[off:off + n]

    @staticmethod
    def size(rng, cap=MiB):
        x = rng.random()
        if x < 0.70:
            n = rng.randint(1, 2048)
        elif x < 0.95:
            n = rng.randint(2048, 64 * KiB)
        else:
            n = rng.randint(64 * KiB, MiB)
        return min(n, cap)

    async def small_rcvbuf_connection(self, port, limit=16 * KiB):
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            await loop.sock_connect(s, (HOST, port))
        except BaseException:
            s.close()
            raise
        return await asyncio.open_connection(sock=s, limit=limit)

    @staticmethod
    def rst(w):
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    @staticmethod
    async def close(w, abort=False):
        if abort:
            w.transport.abort()
        else:
            w.close()
        try:
            await w.wait_closed()      # also retrieves the error a reset left there
        except (OSError, ssl.SSLError):
            pass

    async def read_to_eof(self, r, v):
        while True:
            chunk = await r.read(256 * KiB)
            if not chunk:
                return
            v.got(chunk)

    async def read_until_done(self, r, v):
        while v.pending:
            chunk = await r.read(256 * KiB)
            if not chunk:
                raise EarlyEOF("EOF with %d B not echoed" % len(v.pending))
            v.got(chunk)

    # ------------------------------------------------------------------ workload kinds
    async def k_churn(self, rng, vs):
        r, w = await asyncio.open_connection(HOST, self.ports["echo"])
        v = Verifier()
        vs.append(v)
        try:
            data = self.payload(rng, self.size(rng))
            v.send(data)
            w.write(data)
            if rng.random() < 0.5:
                w.write_eof()
                await self.read_to_eof(r, v)
                self.st["churn.eof"] += 1
            else:
                await self.read_until_done(r, v)
        finally:
            await self.close(w)

    async def k_stream(self, rng, vs):
        loop = asyncio.get_running_loop()
        end = min(loop.time() + rng.uniform(3, 20), self.deadline + 1)
        r, w = await asyncio.open_connection(HOST, self.ports["echo"])
        v = Verifier()
        vs.append(v)
        try:
            rt = asyncio.ensure_future(self.read_to_eof(r, v))
            while loop.time() < end and not rt.done():
                if len(v.pending) > MiB:
                    await asyncio.sleep(0.005)
                    continue
                data = self.payload(rng, self.size(rng, 256 * KiB))
                v.send(data)
                w.write(data)
                await w.drain()
                if rng.random() < 0.1:
                    await asyncio.sleep(rng.uniform(0, 0.2))
            if not rt.done():
                w.write_eof()
            await rt
        finally:
            await self.close(w)

    async def k_slow(self, rng, vs):
        total = rng.randint(1 * MiB, 6 * MiB)
        r, w = await self.small_rcvbuf_connection(self.ports["echo"])
        v = Verifier()
        vs.append(v)

        async def reader():
            while True:
                chunk = await r.read(4096)
                if not chunk:
                    return
                v.got(chunk)
                x = rng.random()
                if x < 0.001:
                    self.st["slow.stalls"] += 1
                    await asyncio.sleep(rng.uniform(0.5, 1.5))
                elif x < 0.5:
                    await asyncio.sleep(0.001)

        try:
            rt = asyncio.ensure_future(reader())
            sent = 0
            while sent < total and not rt.done():
                data = self.payload(rng, min(64 * KiB, total - sent))
                v.send(data)
                w.write(data)
                sent += len(data)
                await w.drain()
            if not rt.done():
                w.write_eof()
            await rt
        finally:
            await self.close(w)

    async def k_reset(self, rng, vs):
        r, w = await self.small_rcvbuf_connection(self.ports["echo"])
        v = Verifier()
        try:
            data = self.payload(rng, rng.randint(1 * MiB, 8 * MiB))
            v.send(data)
            w.write(data)
            x = rng.random()
            if x < 0.3:
                await asyncio.sleep(rng.uniform(0, 0.2))
            elif x < 0.7:
                try:
                    await asyncio.wait_for(self.read_to_eof(r, v), rng.uniform(0.1, 1.0))
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(rng.uniform(0.5, 2.0))
            self.st["reset.prefix_bytes"] += v.verified
            self.st["reset.bytes_unsent_or_dropped"] += len(v.pending)
            self.rst(w)
            self.st["resets_sent"] += 1
        finally:
            await self.close(w, abort=True)

    async def k_abort(self, rng, vs):
        """The server ends these (RST or close) 50-800 ms after accept; what came back must be
        an intact prefix."""
        try:
            r, w = await asyncio.open_connection(HOST, self.ports["abort"])
        except ConnectionResetError:
            # the server's RST came before this (busy) client looked at its connect result
            self.st["abort.rst_seen_at_connect"] += 1
            return
        v = Verifier()
        loop = asyncio.get_running_loop()
        end = loop.time() + 15
        quiet = rng.random() < 0.3      # one message, then silence: the server's close is a FIN
        try:
            rt = asyncio.ensure_future(self.read_to_eof(r, v))
            try:
                if quiet:
                    data = self.payload(rng, self.size(rng, 64 * KiB))
                    v.send(data)
                    w.write(data)
                while not quiet and not rt.done() and loop.time() < end:
                    if len(v.pending) > 512 * KiB:
                        await asyncio.sleep(0.005)
                        continue
                    data = self.payload(rng, self.size(rng, 256 * KiB))
                    v.send(data)
                    w.write(data)
                    await w.drain()
            except (ConnectionResetError, BrokenPipeError):
                pass
            try:
                await asyncio.wait_for(rt, 10)
                self.st["abort.fin_seen"] += 1
            except (ConnectionResetError, BrokenPipeError):
                self.st["abort.rst_seen"] += 1
            self.st["abort.prefix_bytes"] += v.verified
        finally:
            await self.close(w, abort=True)

    async def k_tls(self, rng, vs):
        loop = asyncio.get_running_loop()
        r, w = await asyncio.open_connection(HOST, self.ports["tls"], ssl=self.ctx,
                                             server_hostname="localhost")
        v = Verifier()
        vs.append(v)
        try:
            if rng.random() < 0.6:
                end = 0
                self.st["tls.short"] += 1
            else:
                end = min(loop.time() + rng.uniform(2, 10), self.deadline + 1)
                self.st["tls.long"] += 1
            while True:
                for _ in range(rng.choice((1, 1, 1, 2, 5))):
                    data = self.payload(rng, self.size(rng, 256 * KiB))
                    v.send(data)
                    w.write(data)
                await self.read_until_done(r, v)
                if loop.time() >= end:
                    break
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.uniform(0, 0.3))
        finally:
            await self.close(w)

    async def k_tls_abort(self, rng, vs):
        loop = asyncio.get_running_loop()
        x = rng.random()
        if x < 0.6:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                await loop.sock_connect(s, (HOST, self.ports["tls"]))
                if x < 0.15:
                    self.st["tls_abort.rst_before_hello"] += 1
                elif x < 0.45:
                    await loop.sock_sendall(s, self.hello[:rng.randint(1, len(self.hello) - 1)])
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    self.st["tls_abort.rst_mid_hello"] += 1
                else:
                    # not TLS at all: the server's handshake fails and it closes the socket
                    await loop.sock_sendall(s, b"GET / HTTP/1.0\r\n\r\n" * 20)
                    while await asyncio.wait_for(loop.sock_recv(s, 65536), 10):
                        pass
                    self.st["tls_abort.garbage_closed_by_server"] += 1
                    return
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.st["resets_sent"] += 1
            except ConnectionResetError:
                self.st["tls_abort.garbage_closed_by_server"] += 1
            finally:
                s.close()
            return
        # a real session, then RST with megabytes queued both ways
        r, w = await asyncio.open_connection(HOST, self.ports["tls"], ssl=self.ctx,
                                             server_hostname="localhost")
        try:
            w.write(self.payload(rng, rng.randint(1 * MiB, 4 * MiB)))
            await asyncio.sleep(rng.uniform(0.05, 1.0))
            self.rst(w)
            self.st["tls_abort.rst_mid_transfer"] += 1
            self.st["resets_sent"] += 1
        finally:
            await self.close(w, abort=True)

    async def k_idle(self, rng, vs):
        loop = asyncio.get_running_loop()
        which = "idle_a" if rng.random() < 0.5 else "idle_b"
        timeout = IDLE_A if which == "idle_a" else IDLE_B
        r, w = await asyncio.open_connection(HOST, self.ports[which])
        v = Verifier()
        vs.append(v)
        port = w.get_extra_info("sockname")[1]
        try:
            active_until = loop.time() + rng.uniform(0, 2.5)
            last_echo = loop.time()
            while True:           # activity (gaps of <= 0.25 s) must keep it open
                data = self.payload(rng, rng.randint(1, 512))
                v.send(data)
                w.write(data)
                try:
                    await self.read_until_done(r, v)
                except (EarlyEOF, ConnectionResetError, BrokenPipeError):
                    # The monitor asks the server's record of this port's idle timeout whether
                    # the server had really seen `timeout` s of silence (this client was too
                    # slow: not a loss) or fired early (a bunsock failure).
                    now = loop.time()
                    raise IdleCutShort(port, round(now, 4), len(v.pending), which,
                                       round(now - last_echo, 4))
                last_echo = loop.time()
                if loop.time() >= active_until:
                    break
                await asyncio.sleep(rng.uniform(0.05, 0.25))
            t0 = loop.time()
            chunk = await asyncio.wait_for(r.read(1), timeout + 10)
            if chunk:
                v.got(chunk)
                raise Lost("data after idle")
            waited = loop.time() - t0
            self.st["idle.timeouts_seen." + which] += 1
            self.st["idle.wait_ms_sum"] += int(waited * 1000)
            self.st["idle.wait_ms_max"] = max(self.st["idle.wait_ms_max"], int(waited * 1000))
            if waited < timeout - 0.2:
                # Only a hint: a busy client may read the last echo late. The server checks its
                # timers against its own clock (idle_early).
                self.st["idle.early_seen_by_client"] += 1
        finally:
            await self.close(w)

    # ------------------------------------------------------------------ driver
    async def one(self, kind, rng):
        vs = []
        self.live += 1
        self.maxlive = max(self.maxlive, self.live)
        self.st[kind + ".conns"] += 1
        try:
            await asyncio.wait_for(getattr(self, "k_" + kind)(rng, vs), STALL)
            if kind in COMPLETE_KINDS:
                for v in vs:
                    if v.pending:      # cannot happen unless a branch forgot to read it all
                        raise Lost("%d B never echoed" % len(v.pending))
                self.st[kind + ".ok"] += 1
        except IdleCutShort as e:
            self.cut_short.append(e.args)
            self.st["idle.cut_short"] += 1
            for v in vs:
                v.pending.clear()           # judged by the monitor, not counted as lost here
        except asyncio.TimeoutError:
            self.st["stalls"] += 1
            self.st[kind + ".stall"] += 1
            self.note("%s: stalled for %.0f s" % (kind, STALL))
            self.account_lost(kind, vs)
        except Lost as e:
            self.st["corrupt_or_lost_conns"] += 1
            self.note("%s: %s" % (kind, e))
            self.account_lost(kind, vs)
        except Exception as e:
            self.st["unexpected"] += 1
            self.st["%s.unexpected.%s" % (kind, type(e).__name__)] += 1
            self.note("%s: %s" % (kind, "".join(traceback.format_exception(type(e), e, e.__traceback__))))
            self.account_lost(kind, vs)
        finally:
            self.live -= 1
            for v in vs:
                self.st["bytes_sent_complete"] += v.sent
                self.st["bytes_verified"] += v.verified

    def account_lost(self, kind, vs):
        if kind in COMPLETE_KINDS:
            self.st["bytes_lost"] += sum(len(v.pending) for v in vs)

    async def worker(self, kind, i):
        rng = random.Random(self.args.seed * 1000003 + list(MIX).index(kind) * 1000 + i)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(rng.uniform(0, 1.0))       # spread the start
        while loop.time() < self.deadline:
            await self.one(kind, rng)

    def emit(self, tag):
        out = {"st": dict(self.st), "live": self.live, "maxlive": self.maxlive}
        if tag == "F":
            out["idle_cut_short"] = self.cut_short
        sys.stdout.write(tag + " " + json.dumps(out) + "\n")
        sys.stdout.flush()

    async def main(self):
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + self.args.seconds
        ppid = os.getppid()

        async def reporter():
            while True:
                await asyncio.sleep(1.0)
                self.emit("S")
                if os.getppid() != ppid:
                    os._exit(3)

        async def lag_monitor():
            while True:
                t = loop.time()
                await asyncio.sleep(0.05)
                lag = int((loop.time() - t - 0.05) * 1000)
                if lag > self.st["lag_max_ms"]:
                    self.st["lag_max_ms"] = lag
                if lag > 500:
                    self.st["lags_over_500ms"] += 1

        rep = asyncio.ensure_future(reporter())
        lagm = asyncio.ensure_future(lag_monitor())
        tasks = [asyncio.ensure_future(self.worker(k, i)) for k, n in MIX.items() for i in range(n)]
        done, late = await asyncio.wait(tasks, timeout=self.args.seconds + STALL + 15)
        for t in late:
            t.cancel()
        if late:
            self.st["workers_stuck"] += len(late)
        for t in done:
            if t.exception() is not None:
                self.st["worker_crashed"] += 1
                e = t.exception()
                self.note("worker crashed: %s" % "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        rep.cancel()
        lagm.cancel()
        self.emit("F")
        return 0


# ===================================================================================== monitor

def slope_per_min(pts):
    """Least-squares slope (units per minute) of [(t_seconds, y)], or 0 with < 3 points."""
    if len(pts) < 3:
        return 0.0
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((t - mt) ** 2 for t, _ in pts)
    if sxx == 0:
        return 0.0
    return sum((t - mt) * (y - my) for t, y in pts) / sxx * 60.0


class Child:
    """A child process whose stdout lines ("TAG json") are collected by a thread."""

    def __init__(self, argv, env):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
        self.q = queue.Queue()
        self.last = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            tag, _, body = line.partition(" ")
            try:
                self.q.put((tag, json.loads(body)))
            except ValueError:
                sys.stderr.write(line)
        self.q.put(("EOF", None))

    def drain(self, until=None):
        """Move queued messages to self.last (and yield them)."""
        out = []
        while True:
            try:
                tag, msg = self.q.get(timeout=max(0.0, until - time.monotonic()) if until else 0)
            except queue.Empty:
                return out
            self.last[tag] = msg
            out.append((tag, msg))
            if until is not None:
                return out

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def mint_certs(d):
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(os.path.join(d, "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(os.path.join(d, "cert.pem"))
    cert.private_key_pem.write_to_path(os.path.join(d, "key.pem"))


def fmt_mib(kib):
    return "%.1f MiB" % (kib / 1024.0)


def monitor_main(args):
    sys.stdout.reconfigure(line_buffering=True)
    seconds = args.minutes * 60.0
    hard_deadline = time.monotonic() + seconds + STALL + 180     # watchdog
    tmp = tempfile.mkdtemp(prefix="bunsock-soak-")
    mint_certs(tmp)
    env = dict(os.environ)
    if not env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.path.join(REPO, "src")
    me = [sys.executable, os.path.abspath(__file__), "--seed", str(args.seed), "--certdir", tmp]
    if args.inject:
        me += ["--inject", args.inject]
    failures = []
    server = Child(me + ["--role", "server", "--max-seconds", str(seconds + STALL + 240)], env)
    try:
        return _monitor(args, seconds, hard_deadline, env, me, server, failures)
    finally:
        server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _monitor(args, seconds, hard_deadline, env, me, server, failures):
    t_start = time.monotonic()
    while "S" not in server.last:
        server.drain(until=min(time.monotonic() + 1, t_start + 30))
        if time.monotonic() > t_start + 30 or server.p.poll() is not None:
            print("soak: the server did not start", file=sys.stderr)
            return 2
    info, base = server.last["P"], server.last["S"]
    spid = server.p.pid
    print("soak: %.1f min, seed %d, server pid %d (bunsock from %s, %s%s), CPU affinity %s" % (
        args.minutes, args.seed, spid, info["bunsock"], info["backend"],
        ", ASan runtime loaded" if info.get("asan") else "", sorted(os.sched_getaffinity(0))))
    print("soak: thresholds: RSS slope > %s KiB/min and fitted growth > %s%% over the last 80%%%s; "
          "fds / Sockets not held by a live connection: slope > %s/min; 0 bytes lost" % (
              args.rss_slope_max, args.rss_growth_max,
              " (RSS check OFF)" if args.no_rss_check else "", args.fd_slope_max))
    print("soak: start: RSS %s, %d fds, debug_counts %s" % (fmt_mib(base["rss"]), base["fds"], base["dc"]))

    client = Child(me + ["--role", "client", "--seconds", str(seconds),
                         "--ports", json.dumps(info["ports"])], env)
    print("soak: clients pid %d: %s" % (client.p.pid, ", ".join("%s x%d" % kv for kv in MIX.items())))
    t0 = time.monotonic()
    samples = []          # (t, rss_kib, fds) from /proc, taken here
    reports = []          # server self-reports
    idle_fires = {}       # port -> [(monotonic time, seconds since its last data())], server's
    next_status = t0 + 10
    prev_c = {}
    try:
        while client.p.poll() is None or not client.q.empty():
            now = time.monotonic()
            if now > hard_deadline:
                failures.append("watchdog: the run overstayed; killed server %d and client %d"
                                % (spid, client.p.pid))
                break
            for tag, msg in server.drain(until=now + 1.0) + server.drain():
                if tag == "S":
                    reports.append(msg)
                    for port, t, idle in msg.pop("idle_fires", ()):
                        idle_fires.setdefault(port, []).append((t, idle))
            client.drain()
            rss, fds = read_rss_kib(spid), count_fds(spid)
            if server.p.poll() is not None:
                failures.append("the server died (exit status %s) %.0f s into the run"
                                % (server.p.returncode, time.monotonic() - t0))
                break
            if rss is not None:
                samples.append((time.monotonic() - t0, rss, fds))
            if reports and time.monotonic() - reports[-1]["t"] > 10:
                failures.append("the server stopped reporting for 10 s (hung loop?)")
                break
            if time.monotonic() >= next_status and reports:
                next_status += 10
                s, c = reports[-1], client.last.get("S", {"st": {}, "live": 0})
                cs = c["st"]
                conns = sum(v for k, v in cs.items() if k.endswith(".conns"))
                print("  %5.0fs  RSS %s  fds %d  srv conns %d  Sockets %d  timers %d | clients: "
                      "%d conns (+%d), %.1f MiB verified, %d resets, %d idle timeouts seen, "
                      "errors %d, lost %d B" % (
                          time.monotonic() - t0, fmt_mib(s["rss"]), s["fds"], s["conns"],
                          s["dc"]["sockets"], s["dc"]["timers"], conns,
                          conns - prev_c.get("conns", 0), cs.get("bytes_verified", 0) / MiB,
                          cs.get("resets_sent", 0),
                          sum(v for k, v in cs.items() if k.startswith("idle.timeouts_seen")),
                          cs.get("unexpected", 0) + cs.get("stalls", 0)
                          + cs.get("corrupt_or_lost_conns", 0), cs.get("bytes_lost", 0)),
                      flush=True)
                prev_c["conns"] = conns
        t_end = time.monotonic()
        client.drain()
        if client.p.poll() is None:
            client.kill()
        if client.p.returncode not in (0, None) and not failures:
            failures.append("client process exited with status %s" % client.p.returncode)
        cfinal = client.last.get("F")
        if cfinal is None:
            failures.append("the clients never reported a final summary")
            cfinal = client.last.get("S", {"st": {}, "live": 0, "maxlive": 0})

        # ---- quiesce: the server must return to its starting state
        quiet = None
        q_deadline = time.monotonic() + (0 if failures else 20)
        while server.p.poll() is None and time.monotonic() < q_deadline:
            for tag, msg in server.drain(until=time.monotonic() + 1.0):
                if tag == "S":
                    quiet = msg
                    for port, t, idle in msg.pop("idle_fires", ()):
                        idle_fires.setdefault(port, []).append((t, idle))
            if (quiet and quiet["conns"] == 0 and quiet["dc"]["sockets"] == 0
                    and quiet["fds"] == base["fds"]):
                break
        server_cpu = cpu_seconds(spid)
        sfinal = None
        if server.p.poll() is None:
            server.p.send_signal(signal.SIGTERM)
            try:
                server.p.wait(5 if failures else 15)
            except subprocess.TimeoutExpired:
                failures.append("the server did not exit after SIGTERM")
                server.kill()
        server.drain()
        while True:
            got = server.drain(until=time.monotonic() + 0.5)
            if not got or got[-1][0] == "EOF":
                break
        sfinal = server.last.get("F")
        if server.p.returncode not in (0,) and not any("died" in f for f in failures):
            failures.append("the server exited with status %s" % server.p.returncode)
    finally:
        client.kill()

    # ---- verdict
    dur = t_end - t0
    cst = cfinal["st"]
    last = reports[-1] if reports else base
    sst = (sfinal or last)["st"]
    cut = 0.2 * dur
    win = [s for s in samples if s[0] >= cut]
    rwin = [r for r in reports if r["t"] - t0 >= cut and r["t"] <= t_end]
    rss_slope = slope_per_min([(t, r) for t, r, _ in win])
    fds_slope = slope_per_min([(t, f) for t, _, f in win])
    mean_rss = sum(r for _, r, _ in win) / len(win) if win else 0
    win_len_min = (win[-1][0] - win[0][0]) / 60.0 if len(win) > 1 else 0
    rss_growth_pct = (100.0 * rss_slope * win_len_min / mean_rss) if mean_rss else 0.0
    xfd_slope = slope_per_min([(r["t"] - t0, r["fds"] - r["conns"]) for r in rwin])
    xsock_slope = slope_per_min([(r["t"] - t0, r["dc"]["sockets"] - r["conns"]) for r in rwin])
    timers_slope = slope_per_min([(r["t"] - t0, r["dc"]["timers"]) for r in rwin])

    if not args.no_rss_check and rss_slope > args.rss_slope_max and rss_growth_pct > args.rss_growth_max:
        failures.append("RSS grows: %.0f KiB/min (%.1f%% over the window)" % (rss_slope, rss_growth_pct))
    # These two are exact counts (0 when nothing leaks), but a socket closed a moment ago may
    # still be waiting for the end of its batch or for the cyclic GC: a growth also has to add
    # up to 2 over the window, so that one straggler at the end of a short run is not a "slope".
    if xfd_slope > args.fd_slope_max and xfd_slope * win_len_min >= 2:
        failures.append("fds not held by a live connection grow: %.2f/min" % xfd_slope)
    if xsock_slope > args.fd_slope_max and xsock_slope * win_len_min >= 2:
        failures.append("Socket objects not held by a live connection grow: %.2f/min" % xsock_slope)
    # Idle connections the server's idle timeout closed while the client was still using them:
    # fine if the server had really seen the configured silence since its last data() call (the
    # client was too slow: starved of CPU), a loss if it fired early or has no record of it.
    cut = {"client_too_slow": 0, "fired_early": 0, "unexplained": 0, "client_gap_max_ms": 0,
           "bytes_client_too_slow": 0}
    lost = cst.get("bytes_lost", 0)
    for port, t_eof, nbytes, which, gap in cfinal.get("idle_cut_short", ()):
        configured = IDLE_A if which == "idle_a" else IDLE_B
        recs = [(t, idle) for t, idle in idle_fires.get(port, ()) if t_eof - 10 <= t <= t_eof + 1]
        cut["client_gap_max_ms"] = max(cut["client_gap_max_ms"], int(gap * 1000))
        if not recs:
            cut["unexplained"] += 1
            lost += nbytes
        elif recs[-1][1] >= configured - 0.1:
            cut["client_too_slow"] += 1
            cut["bytes_client_too_slow"] += nbytes
        else:
            cut["fired_early"] += 1
            lost += nbytes
    if cut["unexplained"] or cut["fired_early"]:
        failures.append("idle connections cut short by the server's idle timeout: %d fired early, "
                        "%d with no server record" % (cut["fired_early"], cut["unexplained"]))
    if lost or cst.get("corrupt_or_lost_conns", 0):
        failures.append("%d bytes lost, %d connections with lost/corrupted data"
                        % (lost, cst.get("corrupt_or_lost_conns", 0)))
    for key in ("unexpected", "stalls", "workers_stuck", "worker_crashed"):
        if cst.get(key):
            failures.append("clients: %s = %d" % (key, cst[key]))
    if sst.get("idle_early") and not args.no_idle_early_check:
        failures.append("server: %d idle timeouts fired more than 100 ms before the idle period had "
                        "passed since the socket's last data() call (max %s ms early; docs/API.md "
                        "section 6 promises within 100 ms of the deadline)"
                        % (sst["idle_early"], last.get("idle_max_early_ms")))
    for key in ("handler_errors", "unraisable", "timer_fired_after_cancel", "timers_early"):
        if sst.get(key):
            failures.append("server: %s = %d" % (key, sst[key]))
    if last.get("overdue_timers"):
        failures.append("server: %d timers more than 2 s overdue" % last["overdue_timers"])
    if sfinal is not None:
        tc = sst.get("timers_created", 0)
        accounted = (sst.get("timers_fired", 0) + sst.get("timers_cancelled", 0)
                     + sst.get("timers_cancelled_at_exit", 0))
        if tc != accounted:
            failures.append("server: timer accounting off: created %d, fired+cancelled %d"
                            % (tc, accounted))
    if quiet is None or not (quiet["conns"] == 0 and quiet["dc"]["sockets"] == 0
                             and quiet["fds"] == base["fds"]):
        failures.append("after the clients left the server did not return to its start: %s"
                        % (None if quiet is None else
                           {"conns": quiet["conns"], "sockets": quiet["dc"]["sockets"],
                            "fds": quiet["fds"], "fds at start": base["fds"]}))
    if sfinal is None:
        failures.append("the server did not report after SIGTERM (no clean shutdown)")
    elif sfinal["dc"]["sockets"] or sfinal["dc"]["listeners"] or sfinal["dc"]["timers"]:
        failures.append("after stop(True) and cancelling its timers the server still has %s"
                        % sfinal["dc"])
    if not failures or dur > 20:
        for kind in MIX:
            if not cst.get(kind + ".conns"):
                failures.append("workload kind %r never ran" % kind)
        if dur >= 25:
            for what, n in (("idle timeouts (server)", sst.get("idle_timeouts.idle_a", 0)
                             + sst.get("close.idle_b.TimeoutError", 0)),
                            ("drains", sst.get("drains", 0)), ("pauses", sst.get("pauses", 0)),
                            ("server terminate()", sst.get("srv_terminate", 0))):
                if not n:
                    failures.append("the workload never produced %s" % what)

    closes = {k[6:]: v for k, v in sorted(sst.items()) if k.startswith("close.")}
    # RSS medians of the window's first and last fifth: a check on the slope that noise moves less
    fifth = max(1, len(win) // 5)
    rss_head = sorted(r for _, r, _ in win[:fifth])[fifth // 2] if win else None
    rss_tail = sorted(r for _, r, _ in win[-fifth:])[fifth // 2] if win else None
    by_t = {int(r["t"] - t0): r for r in reports}
    series = [[int(t), r, f, by_t[int(t)]["conns"] if int(t) in by_t else None,
               by_t[int(t)]["dc"]["sockets"] if int(t) in by_t else None]
              for i, (t, r, f) in enumerate(samples) if i % 10 == 0]
    summary = {
        "verdict": "FAIL" if failures else "PASS",
        "failures": failures,
        "minutes": round(dur / 60.0, 2),
        "seed": args.seed,
        "bunsock": info["bunsock"],
        "asan": info.get("asan"),
        "samples": len(samples),
        "thresholds": {"rss_slope_kib_per_min": args.rss_slope_max, "rss_growth_pct": args.rss_growth_max,
                       "rss_check": not args.no_rss_check, "fd_and_socket_slope_per_min": args.fd_slope_max},
        "rss_kib": {"start": base["rss"], "window_start": win[0][1] if win else None,
                    "end": samples[-1][1] if samples else None,
                    "max": max((r for _, r, _ in samples), default=None),
                    "slope_kib_per_min": round(rss_slope, 1), "fitted_growth_pct": round(rss_growth_pct, 2),
                    "median_first_fifth_of_window": rss_head, "median_last_fifth_of_window": rss_tail},
        "fds": {"start": base["fds"], "max": max((f for _, _, f in samples), default=None),
                "end_of_load": samples[-1][2] if samples else None,
                "after_clients_left": quiet["fds"] if quiet else None,
                "slope_per_min": round(fds_slope, 2),
                "not_held_by_a_connection_slope_per_min": round(xfd_slope, 3)},
        "sockets": {"max_live": max((r["dc"]["sockets"] for r in reports), default=None),
                    "after_clients_left": quiet["dc"]["sockets"] if quiet else None,
                    "not_held_by_a_connection_slope_per_min": round(xsock_slope, 3),
                    "timers_slope_per_min": round(timers_slope, 2)},
        "series_every_10s": {"columns": ["t", "rss_kib", "fds", "conns", "sockets"], "rows": series},
        "server_connections_max": max((r["conns"] for r in reports), default=None),
        "client_connections_max": cfinal.get("maxlive"),
        "clients": {
            "connections": {k: cst.get(k + ".conns", 0) for k in MIX},
            "completed_ok": {k: cst.get(k + ".ok", 0) for k in COMPLETE_KINDS},
            "bytes_sent_on_complete_connections": cst.get("bytes_sent_complete", 0),
            "bytes_verified": cst.get("bytes_verified", 0),
            "bytes_lost": lost,
            "corrupt_or_lost_conns": cst.get("corrupt_or_lost_conns", 0),
            "unexpected_errors": cst.get("unexpected", 0), "stalls": cst.get("stalls", 0),
            "resets_sent": cst.get("resets_sent", 0),
            "reset_prefix_bytes_verified": cst.get("reset.prefix_bytes", 0),
            "abort_prefix_bytes_verified": cst.get("abort.prefix_bytes", 0),
            "abort_seen": {"rst": cst.get("abort.rst_seen", 0), "fin": cst.get("abort.fin_seen", 0),
                           "rst_at_connect": cst.get("abort.rst_seen_at_connect", 0)},
            "tls": {"short": cst.get("tls.short", 0), "long": cst.get("tls.long", 0)},
            "tls_abort": {k.split(".", 1)[1]: v for k, v in cst.items() if k.startswith("tls_abort.")},
            "idle_timeouts_seen": {k.rsplit(".", 1)[1]: v for k, v in cst.items()
                                   if k.startswith("idle.timeouts_seen")},
            "idle_wait_ms_max": cst.get("idle.wait_ms_max", 0),
            "idle_early_seen_by_client": cst.get("idle.early_seen_by_client", 0),
            "idle_cut_short": cut,
            "loop_lag_max_ms": cst.get("lag_max_ms", 0),
            "loop_lags_over_500ms": cst.get("lags_over_500ms", 0),
            "slow_reader_stalls": cst.get("slow.stalls", 0),
        },
        "server": {
            "idle_timeouts_fired": {"idle_a (handler)": sst.get("idle_timeouts.idle_a", 0),
                                    "idle_b (TimeoutError)": sst.get("close.idle_b.TimeoutError", 0)},
            "closes": closes,
            "pauses": sst.get("pauses", 0), "drains": sst.get("drains", 0),
            "terminate": sst.get("srv_terminate", 0), "close_with_backlog": sst.get("srv_close", 0),
            "reloads": sst.get("reloads", 0),
            "timers": {k: sst.get(k, 0) for k in ("timers_created", "timers_fired", "timers_cancelled",
                                                   "timers_early", "every_created", "every_fired",
                                                   "call_soon")},
            "timer_max_late_ms": last.get("max_late_ms"),
            "idle_timeout_max_late_ms": last.get("idle_max_late_ms"),
            "idle_timeout_max_early_ms": last.get("idle_max_early_ms"),
            "idle_timeouts_early": sst.get("idle_early", 0),
            "bytes_in": sst.get("bytes_in", 0), "bytes_out": sst.get("bytes_out", 0),
            "cpu_seconds": server_cpu,
        },
    }
    print_summary(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 1 if failures else 0


def print_summary(s):
    r, f, k, c, v = s["rss_kib"], s["fds"], s["sockets"], s["clients"], s["server"]
    print()
    print("soak summary (%.2f min, seed %d)" % (s["minutes"], s["seed"]))
    print("  RSS      start %s, at 20%% %s, end %s, max %s; slope %+.1f KiB/min (fitted %+.2f%% over the window); "
          "medians of the window's first/last fifth %s / %s"
          % (fmt_mib(r["start"]), fmt_mib(r["window_start"] or 0), fmt_mib(r["end"] or 0),
             fmt_mib(r["max"] or 0), r["slope_kib_per_min"], r["fitted_growth_pct"],
             fmt_mib(r["median_first_fifth_of_window"] or 0), fmt_mib(r["median_last_fifth_of_window"] or 0)))
    print("  fds      start %s, max %s, after clients left %s; slope %+.2f/min, not held by a "
          "connection %+.3f/min" % (f["start"], f["max"], f["after_clients_left"], f["slope_per_min"],
                                     f["not_held_by_a_connection_slope_per_min"]))
    print("  Sockets  max live %s, after clients left %s; not held by a connection %+.3f/min; "
          "timers slope %+.2f/min" % (k["max_live"], k["after_clients_left"],
                                      k["not_held_by_a_connection_slope_per_min"], k["timers_slope_per_min"]))
    print("  conns    max %s at the server, %s at the clients; per kind %s"
          % (s["server_connections_max"], s["client_connections_max"], c["connections"]))
    print("  bytes    %.1f MiB sent on complete connections, %.1f MiB verified, %d lost, %d corrupt conns; "
          "prefixes verified on reset %.1f MiB, on server aborts %.1f MiB"
          % (c["bytes_sent_on_complete_connections"] / MiB, c["bytes_verified"] / MiB, c["bytes_lost"],
             c["corrupt_or_lost_conns"], c["reset_prefix_bytes_verified"] / MiB,
             c["abort_prefix_bytes_verified"] / MiB))
    print("  clients  resets sent %d, server aborts seen %s, tls %s, tls_abort %s, idle timeouts seen %s "
          "(max wait %d ms), slow-reader stalls %d, errors %d, stalls %d, asyncio loop lag max %d ms"
          % (c["resets_sent"], c["abort_seen"], c["tls"], c["tls_abort"], c["idle_timeouts_seen"],
             c["idle_wait_ms_max"], c["slow_reader_stalls"], c["unexpected_errors"], c["stalls"],
             c["loop_lag_max_ms"]))
    if any(c["idle_cut_short"][k] for k in ("client_too_slow", "fired_early", "unexplained")):
        print("  idle     cut short while active: %s" % c["idle_cut_short"])
    print("  server   idle timeouts %s (early %d, max late %s ms, max early %s ms), pauses %d, drains %d, terminate %d, close w/ backlog %d, reloads %d, "
          "CPU %.0f s" % (v["idle_timeouts_fired"], v["idle_timeouts_early"],
                          v["idle_timeout_max_late_ms"], v["idle_timeout_max_early_ms"], v["pauses"], v["drains"], v["terminate"],
                          v["close_with_backlog"], v["reloads"], v["cpu_seconds"] or 0))
    print("  timers   %s, max late %s ms" % (v["timers"], v["timer_max_late_ms"]))
    print("  closes   %s" % v["closes"])
    print()
    if s["failures"]:
        print("SOAK FAIL:")
        for x in s["failures"]:
            print("  - " + x)
    else:
        print("SOAK PASS: %s, 0 bytes lost, the server back to its start state"
              % ("RSS and fds flat" if s["thresholds"]["rss_check"] else "fds flat (RSS not judged)"))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--rss-slope-max", type=float, default=256.0, help="KiB/min (default 256)")
    ap.add_argument("--rss-growth-max", type=float, default=3.0,
                    help="%% of the window's mean RSS (default 3); RSS fails only if both are exceeded")
    ap.add_argument("--no-rss-check", action="store_true", help="report RSS but do not judge it (ASan)")
    ap.add_argument("--no-idle-early-check", action="store_true",
                    help="report idle timeouts that fire early but do not fail on them (the loop's "
                         "clock is read once per iteration: see benchmarks/RESULTS.md, Soak)")
    ap.add_argument("--fd-slope-max", type=float, default=0.5, help="per minute (default 0.5)")
    ap.add_argument("--inject", choices=("corrupt", "drop", "leak-fd", "leak-sockets", "leak-rss",
                                                "slow-handler"),
                    help="self-test: make the server misbehave on purpose (the soak must fail)")
    ap.add_argument("--role", choices=("monitor", "server", "client"), default="monitor",
                    help=argparse.SUPPRESS)
    ap.add_argument("--certdir", help=argparse.SUPPRESS)
    ap.add_argument("--ports", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "server":
        return server_main(args)
    if args.role == "client":
        return client_main(args)
    return monitor_main(args)


if __name__ == "__main__":
    sys.exit(main())
