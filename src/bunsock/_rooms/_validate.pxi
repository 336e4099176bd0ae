# Argument checks shared by the rooms and the Python API (_api.py, _udp_api.py, _ppaccept.py):
# one for ints, one for durations, one for C strings. Every error names the parameter.

import numbers

# The longest duration any parameter in seconds takes (docs/API.md §6): 2,000,000 s, about 23
# days. Timers and timeouts are kept in milliseconds, and the poller waits for at most a C int of
# them (2**31 - 1 ms, about 24.8 days): below this cap no accepted value can wrap.
cdef double _MAX_SECONDS = 2000000.0


cpdef object _int_arg(str name, object value, object lo, object hi, bint none_ok=False):
    """`value` as an int in lo..hi (None too with none_ok: returned as is). TypeError for
    another type (bool included), ValueError outside the range, both naming `name`."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int%s, not %s"
                        % (name, " or None" if none_ok else "", type(value).__name__))
    if not lo <= value <= hi:
        raise ValueError("%s must be in %d..%d, not %r" % (name, lo, hi, value))
    return value


cpdef double _seconds_arg(str name, object value, bint none_ok=True,
                          double hi=_MAX_SECONDS) except -1.0:
    """A duration in seconds as a float: a real number (not a bool) in 0..hi, hi being
    _MAX_SECONDS unless a kernel limit is lower (keepalive) or the caller saturates (run_once
    passes inf). None is 0.0 ("not set") with none_ok. TypeError for another type, ValueError
    for a negative, NaN or too large value, both naming `name`."""
    cdef double v
    if value is None and none_ok:
        return 0.0
    if isinstance(value, bool) or not (isinstance(value, (float, int))
                                       or isinstance(value, numbers.Real)):
        raise TypeError("%s must be a number of seconds, not %s" % (name, type(value).__name__))
    try:
        v = value
    except OverflowError:          # an int too large for a double
        v = INFINITY if value > 0 else -INFINITY
    if not 0.0 <= v <= hi:         # (NaN fails it too)
        if hi == INFINITY:
            raise ValueError("%s must be a number of seconds >= 0, not %r" % (name, value))
        raise ValueError("%s must be between 0 and %d seconds, not %r" % (name, <long long>hi,
                                                                          value))
    return v


cdef bytes _cstr(object name, object value):
    """A str argument for a C call (no NUL byte) as bytes; TypeError / ValueError naming `name`."""
    if not isinstance(value, str):
        raise TypeError("%s must be a str, not %s" % (name, type(value).__name__))
    if "\0" in value:
        raise ValueError("%s must not contain a NUL byte: %r" % (name, value))
    return (<str>value).encode("utf-8", "surrogateescape")
