"""`--config FILE`: TOML whose keys are the flag names without `--`:

    listen = "0.0.0.0:8080"
    upstream = ["10.0.0.5:80,weight=3", "10.0.0.6:80,backup"]
    check-interval = 2

A flag that takes a value takes a string or number; a repeatable flag (upstream, route) a list
(or one string); a switch (upstream-tls, accept-proxy, quiet) true or false. The file is read
with tomllib (Python 3.11+) or the tomli package (pip install bunsock[toml] on older Pythons)."""

__all__ = ["load_toml", "to_argv"]


def load_toml(path):
    """The file's table. Raises OSError (unreadable) or ValueError (not TOML), naming the file."""
    try:
        import tomllib as toml
    except ImportError:       # Python < 3.11
        try:
            import tomli as toml
        except ImportError:
            raise ValueError("reading %s needs Python 3.11+ or the tomli package "
                             "(pip install tomli)" % path) from None
    with open(path, "rb") as f:
        try:
            return toml.load(f)
        except toml.TOMLDecodeError as e:
            raise ValueError("%s is not valid TOML: %s" % (path, e)) from None


def to_argv(table, parser, path):
    """The file's table as command-line arguments for `parser`; ValueError for an unknown key
    or a value of the wrong type, naming the key and the file."""
    actions = {}
    for a in parser._actions:
        for opt in a.option_strings:
            if opt.startswith("--"):
                actions[opt[2:]] = a
    argv = []
    for key, value in table.items():
        a = actions.get(key)
        if a is None or key in ("config", "help"):
            raise ValueError("unknown key %r in %s (keys are the flag names without --)"
                             % (key, path))
        if a.nargs == 0:          # a switch
            if not isinstance(value, bool):
                raise ValueError("%s in %s must be true or false" % (key, path))
            if value:
                argv.append("--" + key)
            continue
        values = value if isinstance(value, list) else [value]
        if len(values) > 1 and not a.__class__.__name__.startswith("_Append"):
            raise ValueError("%s in %s takes one value, not a list" % (key, path))
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ValueError("%s in %s must be a string or a number, not %r" % (key, path, v))
            argv += ["--" + key, str(v)]
    return argv
