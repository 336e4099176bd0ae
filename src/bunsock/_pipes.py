"""bunsock.relay(a, b): both directions of Socket.pipe() at once (the relay itself is C, in
_relay.pxi; this is only the two calls and their undo on error)."""

__all__ = ["relay"]


def relay(a, b, *, high_water_mark=None, low_water_mark=None, splice=None):
    """Relay two sockets into each other: a.pipe(b) and b.pipe(a) with the same options.

    Bytes read on either side are written to the other inside the loop, in C, with no handler
    call per chunk; each direction stops reading at `high_water_mark` bytes held for the other
    side (default 128 KiB) and restarts at `low_water_mark`. A FIN on one side becomes end() on
    the other after the relayed bytes; a reset or error on one side resets the other; `close`
    fires once on each. Either socket may still be connecting. Returns None.

    Raises TypeError unless both are bunsock Sockets; ValueError for the same socket twice, a
    closed one, one already piped, bad marks, or splice=True with TLS; OSError(ENOSYS) for
    splice=True where splice(2) does not exist. On an error neither socket is left piped.
    """
    opts = dict(high_water_mark=high_water_mark, low_water_mark=low_water_mark, splice=splice)
    a.pipe(b, **opts)
    try:
        b.pipe(a, **opts)
    except BaseException:
        a.unpipe()
        raise
