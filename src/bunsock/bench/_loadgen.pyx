# cython: language_level=3
"""Echo load generator (csrc/loadgen/loadgen.c, on the core's poller) for ``python -m bunsock bench`` and the benchmarks.

It ships in the wheel so that benchmarking needs no compiler at run time. The C loop runs with
the GIL released: a progress bar, or an in-process server on another thread, keeps running.
"""
from libc.stdint cimport int64_t, uint64_t

cdef extern from "loadgen.h" nogil:
    enum:
        LG_MODE_ECHO
        LG_MODE_IDLE

    ctypedef struct lg_config:
        const char *host
        int port
        int mode
        int conns
        int pipeline
        int64_t msg_size
        double duration
        double warmup
        double connect_timeout
        int server_pid
        int ready_fd
        int stop_fd

    ctypedef struct lg_result:
        uint64_t messages
        uint64_t bytes
        double elapsed
        double p50_us, p99_us, max_us, mean_us
        int64_t server_cpu_ns
        int64_t client_cpu_ns
        int connected
        int connect_errors
        int content_errors
        int closed_errors
        char error[256]

    void lg_config_init(lg_config *cfg)
    int lg_run(const lg_config *cfg, lg_result *out)


_MODES = {"echo": LG_MODE_ECHO, "idle": LG_MODE_IDLE}


def run(str host="127.0.0.1", int port=0, *, int conns=1, int pipeline=1, long long size=64,
        double duration=5.0, double warmup=1.0, str mode="echo", int server_pid=0,
        double connect_timeout=10.0, int ready_fd=-1, int stop_fd=-1):
    """Run one load-generator pass and return its measurements as a dict.

    mode="echo": ``conns`` connections keep ``pipeline`` messages of ``size`` bytes in flight for
    ``warmup`` + ``duration`` seconds; only the last ``duration`` seconds are measured.
    mode="idle": open ``conns`` connections, echo one message on each, write ``b"ready\\n"`` to
    ``ready_fd``, then hold them until ``stop_fd`` is readable or ``duration`` (> 0) elapses.

    ``server_pid``: sample that process's CPU time (Linux) over the measured window.
    Per-connection failures do not raise: they are counted (``content_errors``,
    ``closed_errors``, ``connect_errors``, total in ``errors``) and the first is described in
    ``error``. A configuration that cannot run raises ``ValueError``/``OSError``.
    """
    cdef lg_config cfg
    cdef lg_result r
    cdef int rc
    if mode not in _MODES:
        raise ValueError("mode must be 'echo' or 'idle', not %r" % (mode,))
    if not 0 < port < 65536:
        raise ValueError("port must be in 1..65535")
    if conns < 1 or pipeline < 1 or size < 1:
        raise ValueError("conns, pipeline and size must be >= 1")
    if mode == "echo" and duration <= 0:
        raise ValueError("duration must be > 0 in echo mode")
    host_b = host.encode("ascii")
    lg_config_init(&cfg)
    cfg.host = host_b
    cfg.port = port
    cfg.mode = _MODES[mode]
    cfg.conns = conns
    cfg.pipeline = pipeline
    cfg.msg_size = size
    cfg.duration = duration
    cfg.warmup = warmup if mode == "echo" else 0.0
    cfg.connect_timeout = connect_timeout
    cfg.server_pid = server_pid
    cfg.ready_fd = ready_fd
    cfg.stop_fd = stop_fd
    with nogil:
        rc = lg_run(&cfg, &r)
    error = r.error.decode("utf-8", "replace") or None
    if rc != 0:
        raise ValueError(error or "load generator could not start")
    return derive({
        "mode": mode, "conns": conns, "pipeline": pipeline, "size": size,
        "messages": r.messages, "bytes": r.bytes, "elapsed": r.elapsed,
        "p50_us": r.p50_us, "p99_us": r.p99_us, "max_us": r.max_us, "mean_us": r.mean_us,
        "server_cpu_ns": r.server_cpu_ns, "client_cpu_ns": r.client_cpu_ns,
        "connected": r.connected, "connect_errors": r.connect_errors,
        "content_errors": r.content_errors, "closed_errors": r.closed_errors,
        "ok": True, "error": error,
    })


def derive(dict d):
    """Add rates to a raw result (this module's or the standalone binary's JSON)."""
    el = d["elapsed"]
    d["errors"] = d["connect_errors"] + d["content_errors"] + d["closed_errors"]
    d["requests_per_s"] = d["messages"] / el if el > 0 else 0.0
    d["mb_per_s"] = d["bytes"] / el / 1e6 if el > 0 else 0.0
    cpu = d["server_cpu_ns"]
    d["server_cpu_us_per_msg"] = cpu / 1e3 / d["messages"] if cpu >= 0 and d["messages"] else None
    d["server_cpu_util"] = cpu / 1e9 / el if cpu >= 0 and el > 0 else None
    ccpu = d["client_cpu_ns"]
    d["client_cpu_util"] = ccpu / 1e9 / el if ccpu >= 0 and el > 0 else None
    return d
