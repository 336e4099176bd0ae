"""Runs one code block from the docs as a program, on loopback, on ports the test picked.

    python tests/docs_prelude.py BLOCK.py

The docs show what a user copies (`port=8080`, `hostname="0.0.0.0"`, an upstream at
`10.0.0.5:80`); tests/test_docs.py runs those blocks unchanged. This prelude maps them onto the
test's machine before the block runs, by wrapping bunsock's entry points:

- DOCS_PORTS="8080=41234,9000=41235": a port the block names is replaced by the test's port
  (listen, udp_socket, connect to a local name); "0.0.0.0"/"::" binds become loopback.
- DOCS_CONNECT="10.0.0.5:80=127.0.0.1:41236": connects to that address go to the test's
  stand-in (an echo server, or a closed port for "upstream down").
- DOCS_READY_FD: a pipe; one byte is written when the block starts serving (run(), serve(),
  bunsock.aio.listen()), so the test knows when to connect.
- DOCS_SYSTEMD=1: sets LISTEN_PID to this process, as systemd does for socket activation.

An exception reported to sys.unraisablehook (a handler that raised with no `error` handler) is
printed as usual and makes the exit status 70, so a block whose handlers are broken fails even
when the test only kills it at the end.
"""
import atexit
import os
import runpy
import sys

import bunsock
import importlib
from bunsock import _api, _udp_api

_serve_mod = importlib.import_module("bunsock.serve")

PORTS = {int(a): int(b) for a, b in (kv.split("=") for kv in
                                     os.environ.get("DOCS_PORTS", "").split(",") if kv)}
CONNECT = dict(kv.split("=") for kv in os.environ.get("DOCS_CONNECT", "").split(",") if kv)
READY_FD = int(os.environ.get("DOCS_READY_FD", "-1"))
LOCAL = {None, "127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}
failed = []


def ready():
    global READY_FD
    if READY_FD >= 0:
        os.write(READY_FD, b"R")
        os.close(READY_FD)
        READY_FD = -1


def bind_args(kw):
    if kw.get("hostname") in ("0.0.0.0", "::"):
        kw["hostname"] = "127.0.0.1" if kw["hostname"] == "0.0.0.0" else "::1"
    if kw.get("port") in PORTS:
        kw["port"] = PORTS[kw["port"]]
    return kw


def connect_args(kw):
    key = "%s:%s" % (kw.get("hostname"), kw.get("port"))
    if key in CONNECT:
        host, port = CONNECT[key].rsplit(":", 1)
        kw["hostname"], kw["port"] = host, int(port)
    elif kw.get("hostname") in LOCAL and kw.get("port") in PORTS:
        kw["port"] = PORTS[kw["port"]]
    return kw


def wrap(module, name, fix, signal_ready=False):
    orig = getattr(module, name)

    def wrapper(*args, **kw):
        res = orig(*args, **fix(kw))
        if signal_ready:
            ready()
        return res
    wrapper.__doc__ = orig.__doc__
    setattr(module, name, wrapper)
    return wrapper


for mod in (_api, bunsock):
    wrap(mod, "listen", bind_args)
    wrap(mod, "connect", connect_args)
for mod in (_udp_api, bunsock):
    wrap(mod, "udp_socket", bind_args)

def run(loop=None):
    ready()
    (loop if loop is not None else bunsock.get_loop()).run()


bunsock.run = run
_serve = _serve_mod.serve


def serve(*args, **kw):
    ready()
    return _serve(*args, **kw)


bunsock.serve = _serve_mod.serve = serve

_aio = bunsock.aio
_aio_listen = _aio.listen


async def aio_listen(**kw):
    res = await _aio_listen(**bind_args(kw))
    ready()
    return res


async def aio_connect_wrapped(_orig=_aio.connect, **kw):
    return await _orig(**connect_args(kw))


_aio.listen = aio_listen
_aio.connect = aio_connect_wrapped


def unraisable(info, _default=sys.unraisablehook):
    failed.append(info.exc_value)
    _default(info)


sys.unraisablehook = unraisable


@atexit.register
def _status():
    if failed:
        sys.stderr.flush()
        os._exit(70)


if os.environ.get("DOCS_SYSTEMD"):
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDS"] = "1"

if __name__ == "__main__":
    path = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(path, run_name="__main__")
