"""Reading a handler table (an object or a mapping) once, at listen()/connect()/udp_socket()/
reload() time, with errors that name the mistake: a class given instead of an instance, a name
that is almost a handler's (a typo, another case, Bun's camelCase), an async function."""
import weakref
from collections.abc import Mapping
from functools import lru_cache

# CO_COROUTINE | CO_ASYNC_GENERATOR: read from the code object (cheaper than inspect's helpers).
_ASYNC_CODE_FLAGS = 0x0080 | 0x0200


def is_async(fn):
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    return code is not None and bool(code.co_flags & _ASYNC_CODE_FLAGS)


def _norm(name):
    return name.replace("_", "").lower()


def _one_edit(a, b):
    """True when `a` is `b` with one character deleted, one pair swapped, one inserted inside
    (not at the end: `closed`, `opens` are ordinary words), or, for long names, one replaced."""
    if a == b:
        return False
    la, lb = len(a), len(b)
    if la == lb - 1:                                  # deletion
        return any(b[:i] + b[i + 1:] == a for i in range(lb))
    if la == lb + 1:                                  # insertion, not the last character
        return any(a[:i] + a[i + 1:] == b for i in range(la - 1))
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and \
                a[diff[1]] == b[diff[0]]:
            return True                               # transposition
        return len(diff) == 1 and lb >= 7             # replacement: `clone` is not `close`
    return False


@lru_cache(maxsize=4096)    # connect() per client reads the same class's names every time
def near_miss(name, names):
    """The handler name `name` was probably meant to be, or None. Catches other spellings of
    the same name (`Close`, `connectError`, `CONNECT_ERROR`) and one-character typos of names
    of five letters or more (`conect_error`, `darin`); shorter names only by spelling, so
    helper methods such as `send` or `date` are left alone."""
    if name in names:
        return None
    for h in names:
        if _norm(name) == _norm(h):
            return h
    for h in names:
        if len(h) >= 5 and _one_edit(name.lower(), h):
            return h
    return None


def _suspects(attrs, names):
    return [(a, m) for a in attrs if isinstance(a, str) and not a.startswith("_")
            and a not in names for m in (near_miss(a, names),) if m is not None]


# Per class, weakly (a class made inside a function may hold objects in its methods' closures):
# connect() per client must not pay dir() each time.
_by_class = weakref.WeakKeyDictionary()


def _class_suspects(cls, names):
    try:
        return _by_class[cls][names]
    except (KeyError, TypeError):
        found = tuple(_suspects(dir(cls), names))
        try:
            _by_class.setdefault(cls, {})[names] = found
        except TypeError:
            pass                  # a class that cannot be weakly referenced: not cached
        return found


def _unknown(kind, bad, names):
    parts = []
    for key, meant in bad:
        parts.append("%r (did you mean %r?)" % (key, meant) if meant else repr(key))
    return TypeError("unknown %shandler name(s) %s; expected some of %s"
                     % (kind, ", ".join(parts), ", ".join(names)))


def resolve(table, names, kind=""):
    """The table's handlers as a tuple in `names` order (None: not set). Raises TypeError for a
    class (not an instance), an unknown mapping key, an attribute whose name is almost a
    handler's, a non-callable entry or an async function."""
    if isinstance(table, type):
        raise TypeError("socket= got the class %s, not an instance: pass %s() (handlers are "
                        "called as methods of one shared object)"
                        % (table.__name__, table.__name__))
    if isinstance(table, Mapping):
        bad = [(k, near_miss(k, names) if isinstance(k, str) else None)
               for k in table if k not in names]
        if bad:
            raise _unknown(kind, bad, names)
        found = tuple(table.get(n) for n in names)
    else:
        suspects = list(_class_suspects(type(table), names))
        own = getattr(table, "__dict__", None)      # a module's or a namespace's names
        if own:
            suspects += _suspects(own, names)
        bad = [(attr, meant) for attr, meant in suspects if getattr(table, meant, None) is None]
        if bad:
            raise _unknown(kind, bad, names)
        found = tuple(getattr(table, n, None) for n in names)
    for name, fn in zip(names, found):
        if fn is None:
            continue
        if not callable(fn):
            raise TypeError("handler %r must be callable, not %s" % (name, type(fn).__name__))
        if is_async(fn):
            # The loop calls handlers synchronously: a coroutine would be created and never run.
            raise TypeError("handler %r is an async function; bunsock handlers are plain "
                            "functions. To await inside one, use bunsock.aio (the loop in "
                            "asyncio) and start a task: asyncio.get_running_loop()"
                            ".create_task(...)" % name)
    return found
