"""The `tls=` argument of listen()/connect()/upgrade_tls(): validated and turned into an
ssl.SSLContext once per call (never per connection). docs/TLS.md lists the accepted forms."""
import os
import ssl
from collections.abc import Mapping

_KEYS = ("cert", "key", "ca", "alpn", "server_name", "servername", "reject_unauthorized",
         "verify", "passphrase")


def _pem_or_path(name, value):
    if isinstance(value, bytes) and value.lstrip().startswith(b"-----BEGIN"):
        return None, value.decode("ascii")
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return None, value
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.fspath(value), None
    raise TypeError("tls[%r] must be a path (str or os.PathLike) or PEM text, not %s"
                    % (name, type(value).__name__))


def _load_ca(ctx, ca):
    items = ca if isinstance(ca, (list, tuple)) else [ca]
    for item in items:
        path, pem = _pem_or_path("ca", item)
        if pem is not None:
            ctx.load_verify_locations(cadata=pem)
        else:
            ctx.load_verify_locations(cafile=path)


def _from_mapping(m, server_side):
    unknown = [k for k in m if k not in _KEYS]
    if unknown:
        raise TypeError("unknown tls option(s) %s; expected some of %s"
                        % (", ".join(map(repr, unknown)), ", ".join(_KEYS)))
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
        cpath, cpem = _pem_or_path("cert", cert)
        kpath = None
        if key is not None:
            kpath, kpem = _pem_or_path("key", key)
            if kpem is not None:
                raise TypeError("tls['key'] must be a path")
        if cpem is not None:
            raise TypeError("tls['cert'] must be a path")
        ctx.load_cert_chain(cpath, kpath, password=m.get("passphrase"))
    alpn = m.get("alpn")
    if alpn is not None:
        if isinstance(alpn, (str, bytes)) or not all(isinstance(p, str) for p in alpn):
            raise TypeError("tls['alpn'] must be a list of str")
        ctx.set_alpn_protocols(list(alpn))
    return ctx, server_name


def server_context(tls):
    """listen(tls=...) -> ssl.SSLContext (server side).

    Accepted: an ``ssl.SSLContext`` (used as is), or a mapping with
      ``cert`` (path, required), ``key`` (path; default: in ``cert``), ``passphrase``,
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


def client_context(tls, hostname):
    """connect(tls=...) -> (ssl.SSLContext, server_hostname).

    Accepted: ``True`` (``ssl.create_default_context()``: certificate and hostname verification
    on, the name checked and sent as SNI is ``hostname``), an ``ssl.SSLContext`` (used as is,
    server name = ``hostname``), or a mapping with
      ``ca`` (path, PEM text or a list: trust these instead of the system store),
      ``cert``/``key``/``passphrase`` (a client certificate),
      ``server_name``/``servername`` (name to verify and send as SNI; default ``hostname``),
      ``reject_unauthorized``/``verify`` (bool, default True; False turns off certificate and
      hostname verification: `authorized` is then False),
      ``alpn`` (list of protocol names).
    Unknown keys raise TypeError. A verifying context without any server name (e.g. over a unix
    socket) raises ValueError: give ``server_name``."""
    server_name = None
    if tls is True:
        ctx = ssl.create_default_context()
    elif isinstance(tls, ssl.SSLContext):
        ctx = tls
    elif isinstance(tls, Mapping):
        ctx, server_name = _from_mapping(tls, False)
    else:
        raise TypeError("tls must be True, an ssl.SSLContext or a mapping, not %s"
                        % type(tls).__name__)
    if server_name is None:
        server_name = hostname
    if ctx.check_hostname and not server_name:
        raise ValueError("TLS hostname verification needs a server name: pass "
                         "tls={'server_name': ...} (or a context with check_hostname=False)")
    try:
        ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=False,
                     server_hostname=server_name)
    except ssl.SSLError as e:
        raise ValueError("this SSLContext cannot connect: %s" % (e.reason or e,)) from None
    return ctx, server_name
