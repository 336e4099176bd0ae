# Argument checks shared by the rooms: every error names the parameter it is about.


cdef long long _int_arg(object name, object value, long long lo, long long hi) except? -1:
    """`value` as an int in lo..hi; TypeError (bools too) / ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (name, type(value).__name__))
    if not lo <= value <= hi:
        raise ValueError("%s must be in %d..%d, not %r" % (name, lo, hi, value))
    return value


cdef bytes _cstr(object name, object value):
    """A str argument for a C call (no NUL byte) as bytes; TypeError / ValueError naming `name`."""
    if not isinstance(value, str):
        raise TypeError("%s must be a str, not %s" % (name, type(value).__name__))
    if "\0" in value:
        raise ValueError("%s must not contain a NUL byte: %r" % (name, value))
    return (<str>value).encode("utf-8", "surrogateescape")
