"""The command line: flags, --config merging, startup checks, workers, signals, reload."""
import argparse
import errno
import os
import signal
import socket as _pysocket
import sys

import bunsock

from .accesslog import AccessLog
from .config import load_toml, to_argv
from .core import Proxy
from .headers import parse_hostport, parse_upstream
from .upstreams import RESOLVE_INTERVAL

__all__ = ["main", "build_parser"]

DEFAULTS = {
    "listen": None, "upstream": [], "route": [], "balance": "roundrobin", "workers": 1,
    "proxy_protocol": None, "accept_proxy": False, "tls_cert": None, "tls_key": None,
    "upstream_tls": False, "upstream_ca": None, "upstream_sni": None, "idle_timeout": None,
    "connect_timeout": 5.0, "resolve_interval": RESOLVE_INTERVAL, "max_connections": 0,
    "shutdown_timeout": 30.0, "stats_interval": 0.0, "relay": "auto", "high_water_mark": None,
    "check_interval": 0.0, "check_send": None, "check_expect": None, "check_rise": 2,
    "check_fall": 3, "header_timeout": 5.0, "metrics": None, "access_log": "-", "config": None,
    "quiet": False, "check": False,
}
# Read at start only: a reload says when the file changed them.
RESTART_ONLY = ("listen", "workers", "tls_cert", "tls_key", "metrics")


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m bunsock proxy", argument_default=argparse.SUPPRESS,
        description="TCP/TLS proxy on bunsock's in-loop relay (guide: docs/guide/proxy.md).",
        epilog="Signals: SIGTERM or Ctrl-C stops accepting and lets relays finish (up to "
               "--shutdown-timeout); SIGUSR1 prints one stats line to stderr (per worker); "
               "SIGHUP re-reads --config (new upstreams for new connections, removed ones "
               "drain, live relays are never cut; the listener stays).")
    a = p.add_argument
    a("--config", metavar="FILE", help="TOML file: keys are these flag names without --; "
      "flags given on the command line win at start, the file wins on SIGHUP")
    a("--listen", metavar="HOST:PORT", help="address to accept on (required unless in --config)")
    a("--upstream", action="append", metavar="HOST:PORT[,weight=N][,backup]",
      help="server to relay to (repeat for several; required unless in --config or --route "
           "covers it). weight=N (default 1) for weighted round robin; backup: used only while "
           "every non-backup upstream is down")
    a("--route", action="append", metavar="SERVERNAME=HOST:PORT",
      help="TLS passthrough: send a client whose ClientHello names SERVERNAME (or matches "
           "*.domain) to HOST:PORT without decrypting (repeatable; --upstream is the default)")
    a("--balance", choices=("roundrobin", "leastconn"),
      help="roundrobin (smooth weighted, the default) or leastconn; a failed connect fails "
           "over to the next upstream")
    a("--workers", type=int, metavar="N",
      help="processes sharing the port with SO_REUSEPORT (default: 1)")
    a("--proxy-protocol", choices=("v1", "v2"),
      help="send a PROXY protocol header (with the real client address) to the upstream")
    a("--accept-proxy", action="store_true",
      help="read a PROXY protocol v1 or v2 header from each client first (a balancer in "
           "front); its address is the client's in logs and in --proxy-protocol")
    a("--header-timeout", type=float, metavar="S",
      help="with --accept-proxy or --route: close a client whose PROXY header or ClientHello "
           "is not complete within S seconds (default: 5)")
    a("--tls-cert", metavar="FILE", help="terminate TLS with this certificate chain")
    a("--tls-key", metavar="FILE", help="private key for --tls-cert")
    a("--upstream-tls", action="store_true", help="connect to upstreams over TLS (verified)")
    a("--upstream-ca", metavar="FILE", help="CA bundle for --upstream-tls (default: system)")
    a("--upstream-sni", metavar="NAME",
      help="server name sent and verified with --upstream-tls (default: the upstream's host)")
    a("--idle-timeout", type=float, metavar="S",
      help="close a relayed connection idle this long (relayed bytes count as activity; "
           "default: no idle timeout)")
    a("--connect-timeout", type=float, metavar="S",
      help="bound on one upstream connect, only the connect (default: 5)")
    a("--resolve-interval", type=float, metavar="S",
      help="look an upstream's name up again after S seconds, and after every address "
           "failed (default: 30; lookups never block the loop)")
    a("--max-connections", type=int, metavar="N",
      help="refuse (close at once) connections beyond N open ones (default: no limit)")
    a("--shutdown-timeout", type=float, metavar="S",
      help="on SIGTERM, reset the relays still open after this long (default: 30)")
    a("--stats-interval", type=float, metavar="S",
      help="print a stats line to stderr every S seconds (default: only on SIGUSR1)")
    a("--relay", choices=("auto", "splice", "buffer"),
      help="how bytes move: splice(2) through a kernel pipe or the buffered path (default: "
           "auto, the one measured faster here); splice cannot carry TLS")
    a("--high-water-mark", type=int, metavar="BYTES",
      help="bytes held per direction before reading pauses (default: 128 KiB)")
    a("--check-interval", type=float, metavar="S",
      help="active health check of every upstream each S seconds (default: 0 = off)")
    a("--check-send", metavar="STR", help="health check: write STR (as given, no line ending "
      "added; \\r, \\n and \\xNN escapes are understood) after connecting")
    a("--check-expect", metavar="STR",
      help="health check: pass only when the reply starts with STR")
    a("--check-rise", type=int, metavar="N",
      help="passed checks in a row that bring a down upstream back (default: 2)")
    a("--check-fall", type=int, metavar="N",
      help="failed checks in a row that take an upstream out (default: 3; before its first "
           "passed check, one failure does)")
    a("--metrics", metavar="HOST:PORT",
      help="serve Prometheus metrics at http://HOST:PORT/metrics")
    a("--access-log", metavar="FILE",
      help="one line per finished connection, appended to FILE ('-': stderr, the default; "
           "'off': none)")
    a("--quiet", action="store_true", help="no startup line")
    a("--check", action="store_true",
      help="only check the flags and the --config file: print what would run, exit 0 (or 2 "
           "with the error)")
    return p


def _unescape(s):
    # A check string given on a command line or in TOML may spell \r\n as backslash escapes.
    return None if s is None else s.encode("latin-1", "backslashreplace").decode("unicode_escape")


def resolve_args(argv, *, reload_from=None):
    """(settings dict, cli dict): defaults <- file <- command line at start; on reload
    (reload_from = the cli dict) defaults <- command line <- file. SystemExit(2)/ValueError on
    bad input."""
    p = build_parser()
    cli = vars(p.parse_args(argv)) if reload_from is None else reload_from
    path = cli.get("config")
    fromfile = {}
    if path:
        fromfile = vars(p.parse_args(to_argv(load_toml(path), p, path)))
    s = dict(DEFAULTS)
    if reload_from is None:
        s.update(fromfile)
        s.update(cli)
    else:
        s.update(cli)
        s.update(fromfile)
        s["config"] = path
    return s, cli


def validate(s):
    """Parsed addresses and clear errors for combinations that cannot work."""
    if not s["listen"]:
        raise ValueError("--listen HOST:PORT is required (on the command line or in --config)")
    out = {"listen": parse_hostport(s["listen"])}
    out["upstreams"] = [parse_upstream(u) for u in s["upstream"]]
    routes = {}
    for r in s["route"]:
        name, sep, target = r.partition("=")
        if not sep or not name:
            raise ValueError("--route takes SERVERNAME=HOST:PORT, not %r" % r)
        routes.setdefault(name.strip().lower(), []).append(parse_upstream(target.strip()))
    out["routes"] = routes
    if not out["upstreams"] and not routes:
        raise ValueError("at least one --upstream (or --route) is needed")
    if bool(s["tls_cert"]) != bool(s["tls_key"]):
        raise ValueError("--tls-cert and --tls-key go together")
    if s["workers"] < 1:
        raise ValueError("--workers must be >= 1")
    if s["relay"] == "splice" and (s["tls_cert"] or s["upstream_tls"]):
        raise ValueError("--relay splice cannot carry TLS (--tls-cert/--upstream-tls decrypt or "
                         "encrypt in the process): use --relay auto or buffer")
    if routes and s["tls_cert"]:
        raise ValueError("--route passes TLS through by its server name; --tls-cert terminates "
                         "it: use one or the other")
    if s["accept_proxy"] and s["tls_cert"]:
        raise ValueError("--accept-proxy with --tls-cert is not supported (the PROXY header "
                         "comes before the TLS handshake)")
    if s["check_rise"] < 1 or s["check_fall"] < 1:
        raise ValueError("--check-rise and --check-fall must be >= 1")
    if s["check_expect"] is not None and not s["check_expect"]:
        raise ValueError("--check-expect must not be empty")
    out["metrics"] = parse_hostport(s["metrics"]) if s["metrics"] else None
    if s["upstream_ca"] and not os.path.exists(s["upstream_ca"]):
        raise ValueError("--upstream-ca %s: no such file" % s["upstream_ca"])
    return out


def _upstream_tls(s):
    if not s["upstream_tls"]:
        return None
    ca, sni = s["upstream_ca"], s["upstream_sni"]

    def per_upstream(u):
        m = {"server_name": sni or u.host}
        if ca:
            m["ca"] = ca
        return m
    return per_upstream


def _proxy_kwargs(s, v):
    return dict(balance=s["balance"], proxy_protocol=s["proxy_protocol"],
                max_connections=s["max_connections"], idle_timeout=s["idle_timeout"],
                connect_timeout=s["connect_timeout"],
                splice={"auto": None, "splice": True, "buffer": False}[s["relay"]],
                high_water_mark=s["high_water_mark"], upstream_tls=_upstream_tls(s),
                resolve_interval=s["resolve_interval"], accept_proxy=s["accept_proxy"],
                routes=v["routes"], header_timeout=s["header_timeout"])


def _checks(proxy, s):
    proxy.start_checks(s["check_interval"], _unescape(s["check_send"]),
                       _unescape(s["check_expect"]), s["check_rise"], s["check_fall"])


def reload(proxy, state):
    """SIGHUP: re-read --config; the file's values win (but listen and the other RESTART_ONLY
    keys, which need a restart). A bad file changes nothing."""
    old = state["settings"]
    if not old["config"]:
        proxy.access.close()
        proxy.access = AccessLog(old["access_log"])   # reopened: log rotation works with SIGHUP
        proxy.note("SIGHUP: no --config file, nothing to reload (access log reopened)")
        return
    try:
        s, _ = resolve_args(None, reload_from=state["cli"])
        s["listen"] = old["listen"]
        v = validate(s)
        before = {str(u) for u in proxy.all_upstreams()}
        proxy.configure(v["upstreams"], **_proxy_kwargs(s, v))
    except (OSError, ValueError, SystemExit) as e:
        proxy.note("reload of %s failed, configuration unchanged: %s" % (old["config"], e))
        return
    after = {str(u) for u in proxy.all_upstreams()}
    if any(s[k] != old[k] for k in ("check_interval", "check_send", "check_expect",
                                    "check_rise", "check_fall")) or after - before:
        _checks(proxy, s)
    proxy.access.close()
    proxy.access = AccessLog(s["access_log"])      # reopened: log rotation works with SIGHUP
    state["settings"] = s
    fresh = load_toml(old["config"])
    changed = [k for k in RESTART_ONLY if k != "listen" and k.replace("_", "-") in fresh
               and s[k] != old[k]]
    proxy.note("reloaded %s: upstreams %s (added: %s; removed, draining: %s); listen stays %s "
               "(the listener is kept across reloads; restart to change it)%s" % (
                   old["config"], ", ".join(sorted(after)) or "-",
                   ", ".join(sorted(after - before)) or "-",
                   ", ".join(sorted(before - after)) or "-", old["listen"],
                   "; needs a restart, unchanged: " + ", ".join(changed) if changed else ""))


def _run_worker(s, v, cli, reuse_port):
    tls = {"cert": s["tls_cert"], "key": s["tls_key"]} if s["tls_cert"] else None
    proxy = Proxy(v["upstreams"], access_log=s["access_log"], **_proxy_kwargs(s, v))
    listen = v["listen"]
    key = "listen"
    try:
        listener = proxy.listen(listen[0], listen[1], tls=tls, reuse_port=reuse_port)
        if v["metrics"]:
            from .metrics import serve_metrics
            key = "metrics"
            serve_metrics(proxy, v["metrics"][0], v["metrics"][1], reuse_port=reuse_port)
    except OSError as e:
        proxy.close()
        raise _ListenError(_listen_error(key, v[key], e)) from None
    state = {"settings": s, "cli": cli}

    def on_term(signum, frame):
        proxy.shutdown(s["shutdown_timeout"])
        if not proxy.clients:
            proxy.loop.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, lambda sig, f: proxy.report())
    # The reload runs as a loop callback, not inside the signal handler.
    signal.signal(signal.SIGHUP, lambda sig, f: proxy.loop.call_soon(reload, proxy, state))
    if s["stats_interval"] > 0:
        proxy.loop.call_every(s["stats_interval"], proxy.report).unref()
    if reuse_port:
        # A worker whose parent was killed (SIGKILL: nothing forwarded) drains and exits
        # instead of serving on forever as an orphan.
        parent = os.getppid()
        proxy.loop.call_every(1.0, lambda: os.getppid() != parent and on_term(None, None)).unref()
    _checks(proxy, s)
    if not s["quiet"]:
        sys.stderr.write("bunsock proxy pid=%d listening on %s:%d -> %s\n" % (
            os.getpid(), listen[0], listener.port, ", ".join(
                [str(u) for u in proxy.upstreams]
                + ["%s=%s" % (n, "|".join(map(str, p.upstreams)))
                   for n, p in proxy.routes.items()])))
        sys.stderr.flush()
    try:
        proxy.loop.run()
    finally:
        proxy.close()
    proxy.report()
    return proxy


class _ListenError(Exception):
    pass


def _listen_error(key, addr, e):
    what = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
    return "--%s %s:%d: %s" % (key, addr[0], addr[1], what)


def _startup_error(s):
    """A certificate or key that cannot be loaded: one `error:` line (exit status 1) instead of
    a traceback in every worker."""
    if not s["tls_cert"]:
        return None
    from .._tlsconfig import server_context
    try:
        server_context({"cert": s["tls_cert"], "key": s["tls_key"]})
    except FileNotFoundError as e:
        return "%s: %s" % (e.strerror, e.filename)
    except OSError as e:          # ssl.SSLError included (a file that is not a PEM key/cert)
        return str(e)
    return None


def _fixed_port(host, port):
    """--workers: the port every worker binds with SO_REUSEPORT (port 0: one free port for all),
    checked in the parent so that a port in use is one clear error, not workers restarted in a
    loop. The probe stays bound, not listening, so that no other process takes the port."""
    fam = _pysocket.AF_INET6 if ":" in host else _pysocket.AF_INET
    probe = _pysocket.socket(fam, _pysocket.SOCK_STREAM)
    probe.setsockopt(_pysocket.SOL_SOCKET, _pysocket.SO_REUSEPORT, 1)
    probe.bind((host, port))
    return probe, probe.getsockname()[1]


def main(argv=None):
    try:
        s, cli = resolve_args(argv)
        v = validate(s)
    except (OSError, ValueError) as e:
        sys.stderr.write("error: %s\n" % e)
        return 2
    failed = _startup_error(s)
    if failed is not None:
        sys.stderr.write("error: %s\n" % failed)
        return 1
    if s["check"]:
        names = lambda specs: ", ".join(                  # noqa: E731
            "%s:%d%s%s" % (h, p, ",weight=%d" % w if w != 1 else "", ",backup" if b else "")
            for h, p, w, b in specs)
        sys.stdout.write("configuration ok: listen %s:%d -> %s%s\n" % (
            v["listen"][0], v["listen"][1], names(v["upstreams"]) or "-",
            "".join("; route %s -> %s" % (n, names(u)) for n, u in v["routes"].items())))
        return 0
    if s["workers"] == 1:
        try:
            _run_worker(s, v, cli, False)
        except _ListenError as e:
            sys.stderr.write("error: %s\n" % e)
            return 1
        return 0
    probes = []
    for key in ("listen", "metrics"):
        if v[key] is not None:
            try:
                probe, port = _fixed_port(*v[key])
            except OSError as e:
                sys.stderr.write("error: %s\n" % _listen_error(key, v[key], e))
                for p in probes:
                    p.close()
                return 1
            probes.append(probe)
            v[key] = (v[key][0], port)
    try:
        bunsock.serve(workers=s["workers"], grace=s["shutdown_timeout"] + 1,
                      forward_signals=(signal.SIGUSR1, signal.SIGHUP),
                      setup=lambda: _run_worker(s, v, cli, True) and None)
    finally:
        for probe in probes:
            probe.close()
    return 0
