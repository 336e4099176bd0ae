"""``python -m bunsock COMMAND`` (or the ``bunsock`` console script): command-line entry points.

    python -m bunsock --version                   print the version
    python -m bunsock bench [--quick] [--json]    compare bunsock with asyncio/uvloop here (see bench/)
    python -m bunsock proxy --listen H:P --upstream H:P [...]    TCP/TLS proxy (see proxy/)
"""
import sys

USAGE = """usage: python -m bunsock --version
       python -m bunsock bench [--quick] [--json] [--servers LIST] [--reps N] [--duration S]
       python -m bunsock proxy --listen HOST:PORT --upstream HOST:PORT [--upstream ...] [options]
       python -m bunsock proxy --config FILE [options]

  (the `bunsock` console script takes the same arguments)

commands:
  bench    echo benchmark: bunsock vs asyncio (and uvloop if installed) on this machine
  proxy    TCP/TLS proxy on the in-loop relay (python -m bunsock proxy --help)
"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    if argv[0] in ("--version", "-V", "version"):
        from ._version import __version__

        sys.stdout.write("bunsock %s\n" % __version__)
        return 0
    if argv[0] == "bench":
        from .bench import main as bench_main  # imported late: only this command needs it

        return bench_main(argv[1:])
    if argv[0] == "proxy":
        from .proxy import main as proxy_main

        return proxy_main(argv[1:])
    sys.stderr.write("unknown command %r\n\n%s" % (argv[0], USAGE))
    return 2


if __name__ == "__main__":
    sys.exit(main())
