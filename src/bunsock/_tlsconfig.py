"""The `tls=` argument of listen()/connect()/upgrade_tls(): validated and turned into an
ssl.SSLContext once per call (never per connection). docs/TLS.md lists the accepted forms."""
import collections
import errno
import os
import ssl
import sys
import tempfile
import threading
from collections.abc import Mapping

_KEYS = ("cert", "key", "ca", "alpn", "server_name", "servername", "reject_unauthorized",
         "verify", "passphrase")


def _pem_or_path(name, value):
    if isinstance(value, bytes) and value.lstrip().startswith(b"-----BEGIN"):
        return None, value.decode("ascii")
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return None, value
    if isinstance(value, (str, bytes, os.PathLike)):
        path = os.fspath(value)
        if not os.path.exists(path):
            # ssl's own error says "No such file or directory" without saying which file.
            raise FileNotFoundError(errno.ENOENT, "tls[%r] file not found" % name, path)
        return path, None
    raise TypeError("tls[%r] must be a path (str or os.PathLike) or PEM text, not %s"
                    % (name, type(value).__name__))


def _pem_text(name, value):
    """The PEM text of one certificate/key item: given inline, or read from its path."""
    path, pem = _pem_or_path(name, value)
    if pem is not None:
        return pem
    with open(path, "r", encoding="ascii") as f:
        return f.read()


def _naming(e, what):
    """ssl's error for a file it could not use (not PEM, wrong key, bad passphrase), naming
    the file(s): ssl's own message does not."""
    return ssl.SSLError(e.errno, "%s (loading %s)" % (e.strerror or e, what))


def _load_pem_chain(ctx, cert_pem, key_pem, password):
    """load_cert_chain() reads only files: PEM held in memory goes through an anonymous memory
    file (Linux memfd: never on disk), elsewhere a private temporary file removed at once."""
    files = []
    try:
        paths = []
        for pem in (cert_pem, key_pem):
            if pem is None:
                paths.append(None)
                continue
            data = pem.encode("ascii")
            if hasattr(os, "memfd_create") and sys.platform.startswith("linux"):
                fd = os.memfd_create("bunsock-tls", os.MFD_CLOEXEC)
                files.append(("fd", fd))
                os.write(fd, data)
                paths.append("/proc/self/fd/%d" % fd)
            else:
                d = tempfile.mkdtemp(prefix="bunsock-tls-")      # mode 0700
                files.append(("dir", d))
                path = os.path.join(d, "pem")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                paths.append(path)
        ctx.load_cert_chain(paths[0], paths[1], password=password)
    finally:
        for kind, what in files:
            if kind == "fd":
                os.close(what)
            else:
                for name in os.listdir(what):
                    os.unlink(os.path.join(what, name))
                os.rmdir(what)


def _load_cert(ctx, cert, key, password):
    """tls['cert'] (a path, PEM text, or a list of them: leaf first, then intermediates) and
    tls['key'] (a path or PEM text; default: inside cert). Returns the leaf certificate in DER,
    kept so that sock.getcertificate() can answer."""
    items = list(cert) if isinstance(cert, (list, tuple)) else [cert]
    if not items:
        raise ValueError("tls['cert'] must not be an empty list")
    if len(items) == 1 and _pem_or_path("cert", items[0])[0] is not None and (
            key is None or _pem_or_path("key", key)[0] is not None):
        cpath = _pem_or_path("cert", items[0])[0]
        kpath = None if key is None else _pem_or_path("key", key)[0]
        try:
            ctx.load_cert_chain(cpath, kpath, password=password)
        except ssl.SSLError as e:
            raise _naming(e, "tls['cert'] %s" % os.fsdecode(cpath) + (
                "" if kpath is None else ", tls['key'] %s" % os.fsdecode(kpath))) from e
        chain = _pem_text("cert", items[0])
    else:
        chain = "\n".join(_pem_text("cert", it).strip() for it in items) + "\n"
        _load_pem_chain(ctx, chain, None if key is None else _pem_text("key", key), password)
    begin = chain.find("-----BEGIN CERTIFICATE-----")
    end = chain.find("-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        return None
    return ssl.PEM_cert_to_DER_cert(chain[begin:end + len("-----END CERTIFICATE-----")])


def _load_ca(ctx, ca):
    items = ca if isinstance(ca, (list, tuple)) else [ca]
    for item in items:
        path, pem = _pem_or_path("ca", item)
        if pem is not None:
            ctx.load_verify_locations(cadata=pem)
        else:
            try:
                ctx.load_verify_locations(cafile=path)
            except ssl.SSLError as e:
                raise _naming(e, "tls['ca'] %s" % os.fsdecode(path)) from e


# Bun's (Node's) spellings of the options bunsock names otherwise.
_BUN_KEYS = {"ALPNProtocols": "alpn", "rejectUnauthorized": "reject_unauthorized",
             "serverName": "server_name", "certFile": "cert", "keyFile": "key", "caFile": "ca",
             # ... and Python ssl's (load_cert_chain, load_verify_locations)
             "certfile": "cert", "keyfile": "key", "cafile": "ca", "ca_file": "ca",
             "cert_file": "cert", "key_file": "key", "password": "passphrase"}


def _meant(key):
    if not isinstance(key, str):
        return None
    if key in _BUN_KEYS:
        return _BUN_KEYS[key]
    from ._handlers import near_miss
    return near_miss(key, _KEYS)


def _from_mapping(m, server_side):
    unknown = [k for k in m if k not in _KEYS]
    if unknown:
        parts = []
        for k in unknown:
            meant = _meant(k)
            parts.append("%r (did you mean %r?)" % (k, meant) if meant else repr(k))
        raise TypeError("unknown tls option(s) %s; expected some of %s"
                        % (", ".join(parts), ", ".join(_KEYS)))
    verify = True
    for k in ("reject_unauthorized", "verify"):
        if k in m:
            if not isinstance(m[k], bool):
                raise TypeError("tls[%r] must be a bool, not %s" % (k, type(m[k]).__name__))
            verify = m[k]
    if ("reject_unauthorized" in m and "verify" in m
            and m["reject_unauthorized"] != m["verify"]):
        raise ValueError("tls 'reject_unauthorized' and 'verify' disagree")
    if "server_name" in m and "servername" in m and m["server_name"] != m["servername"]:
        raise ValueError("tls 'server_name' and 'servername' disagree")
    server_name = m.get("server_name", m.get("servername"))
    if server_name is not None and not isinstance(server_name, str):
        raise TypeError("tls['server_name'] must be a str")
    cert, key, ca = m.get("cert"), m.get("key"), m.get("ca")
    if key is not None and cert is None:
        raise ValueError("tls 'key' given without 'cert'")
    if server_side:
        if cert is None:
            raise ValueError("a TLS server needs tls={'cert': path, 'key': path}")
        if server_name is not None:
            raise ValueError("tls 'server_name' is a client option")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if ca is not None:
            _load_ca(ctx, ca)
            # A client certificate is requested; `reject_unauthorized: False` makes it optional.
            ctx.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_OPTIONAL
    else:
        if ca is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            _load_ca(ctx, ca)
        else:
            ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        # ssl.SSLContext has a __dict__: the leaf we loaded rides along for getcertificate().
        ctx._bunsock_cert_der = _load_cert(ctx, cert, key, m.get("passphrase"))
    alpn = m.get("alpn")
    if alpn is not None:
        if isinstance(alpn, (str, bytes)) or not all(isinstance(p, str) for p in alpn):
            raise TypeError("tls['alpn'] must be a list of str")
        ctx.set_alpn_protocols(list(alpn))
    return ctx, server_name


def server_context(tls):
    """listen(tls=...) -> ssl.SSLContext (server side).

    Accepted: an ``ssl.SSLContext`` (used as is), or a mapping with
      ``cert`` (required: a path, PEM text (str or bytes), or a list of them: leaf first, then
      intermediates), ``key`` (path or PEM text; default: in ``cert``), ``passphrase``,
      ``ca`` (path, PEM text, or a list of them: request and verify client certificates),
      ``reject_unauthorized``/``verify`` (bool, default True: with ``ca``, a client without a
      valid certificate is rejected; False makes the client certificate optional),
      ``alpn`` (list of protocol names, in preference order).
    Unknown keys raise TypeError; a missing ``cert`` raises ValueError."""
    if isinstance(tls, ssl.SSLContext):
        ctx = tls
    elif isinstance(tls, Mapping):
        ctx = _from_mapping(tls, True)[0]
    elif tls is True:
        raise ValueError("a TLS server needs a certificate: tls={'cert': path, 'key': path} "
                         "or an ssl.SSLContext")
    else:
        raise TypeError("tls must be an ssl.SSLContext or a mapping, not %s" % type(tls).__name__)
    # A client-only context fails here, not on the first accepted connection.
    try:
        ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    except ssl.SSLError as e:
        raise ValueError("this SSLContext cannot serve: %s" % (e.reason or e,)) from None
    return ctx


# Client contexts built from True or a mapping are reused while the configuration (and the files
# it names) is unchanged: building one reads the CA store (milliseconds per connect()), and TLS
# session resumption needs the session's own context (ssl refuses a session from another one).
_CACHE_SIZE = 32
_cache = collections.OrderedDict()
_cache_lock = threading.Lock()


def _freeze(value):
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, os.PathLike) or (isinstance(value, str) and "-----BEGIN" not in value):
        path = os.fspath(value)
        try:
            st = os.stat(path)
            return (path, st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return (path,)
    if isinstance(value, (str, bytes, bool, int, float, type(None))):
        return value
    raise TypeError("unhashable tls option value: %s" % type(value).__name__)


def _cached(tls, build):
    try:
        key = ("default",) if tls is True else tuple(sorted((k, _freeze(v))
                                                            for k, v in tls.items()))
    except TypeError:
        return build()       # odd values: the checks in build() report them
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    made = build()
    with _cache_lock:
        _cache[key] = made
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return made


def client_context(tls, hostname, session=None):
    """connect(tls=...) -> (ssl.SSLContext, server_hostname).

    Accepted: ``True`` (``ssl.create_default_context()``: certificate and hostname verification
    on, the name checked and sent as SNI is ``hostname``), an ``ssl.SSLContext`` (used as is,
    server name = ``hostname``), or a mapping with
      ``ca`` (path, PEM text or a list: trust these instead of the system store),
      ``cert``/``key``/``passphrase`` (a client certificate: paths or PEM text, as for a server),
      ``server_name``/``servername`` (name to verify and send as SNI; default ``hostname``),
      ``reject_unauthorized``/``verify`` (bool, default True; False turns off certificate and
      hostname verification: `authorized` is then False),
      ``alpn`` (list of protocol names).
    Unknown keys raise TypeError. A verifying context without any server name (e.g. over a unix
    socket) raises ValueError: give ``server_name``. Contexts built from ``True`` or a mapping are
    cached (32, keyed by the options and the named files' stat), so equal ``tls=`` values share
    one context. ``session``: an ``ssl.SSLSession`` to resume (TypeError otherwise; ValueError
    when it belongs to another context)."""
    server_name = None
    if tls is True:
        ctx = _cached(tls, ssl.create_default_context)
    elif isinstance(tls, ssl.SSLContext):
        ctx = tls
    elif isinstance(tls, Mapping):
        ctx, server_name = _cached(tls, lambda: _from_mapping(tls, False))
    else:
        raise TypeError("tls must be True, an ssl.SSLContext or a mapping, not %s"
                        % type(tls).__name__)
    if server_name is None:
        server_name = hostname
    if ctx.check_hostname and not server_name:
        raise ValueError("TLS hostname verification needs a server name: pass "
                         "tls={'server_name': ...} (or a context with check_hostname=False)")
    if session is not None and not isinstance(session, ssl.SSLSession):
        raise TypeError("session must be an ssl.SSLSession (from sock.session), not %s"
                        % type(session).__name__)
    try:
        ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=False,
                     server_hostname=server_name, session=session)
    except ssl.SSLError as e:
        raise ValueError("this SSLContext cannot connect: %s" % (e.reason or e,)) from None
    except ValueError as e:
        # "Session refers to a different SSLContext": a session resumes only with the
        # context that made it (the same tls= mapping, or the same SSLContext object).
        raise ValueError("cannot resume this session: %s (connect with the same tls= as the "
                         "connection that made it)" % e) from None
    return ctx, server_name
