"""The access log: one line per finished client connection, logfmt (key=value, space separated):

    2026-12-05T20:31:15.123Z client=203.0.113.7:51234 upstream=10.0.0.5:80 in=517 out=10240 \
        duration=1.204 end=eof                                        (one line; cut here)

in: bytes from the client, out: bytes to it; duration in seconds from accept to close; upstream is
`-` when none was reached. end: eof (closed cleanly), reset, timeout (idle timeout), error
(another socket error), refused (over --max-connections), no_upstream (every upstream failed or
is down), no_route (no --route matched and no default), bad_proxy_header, bad_client_hello,
header_timeout (no complete PROXY header or ClientHello within --header-timeout), relay_error
(the relay could not be set up), shutdown (still open at --shutdown-timeout)."""
import sys
import time

__all__ = ["AccessLog"]


def _addr(ip, port):
    if ip is None:
        return "-"
    return ("[%s]:%d" if ":" in ip else "%s:%d") % (ip, port)


class AccessLog:
    def __init__(self, target):
        """target: a path (appended to), "-" for stderr, or None/"off" for no log."""
        self.target = target
        self.f = None
        if target in (None, "", "off"):
            return
        self.f = sys.stderr if target == "-" else open(target, "a", buffering=1, encoding="utf-8")

    def write(self, client, upstream, nin, nout, duration, end):
        if self.f is None:
            return
        t = time.time()
        stamp = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
                 + ".%03dZ" % (int(t * 1000) % 1000))
        self.f.write("%s client=%s upstream=%s in=%d out=%d duration=%.3f end=%s\n" % (
            stamp, _addr(*client), upstream or "-", nin, nout, duration, end))
        if self.f is sys.stderr:
            self.f.flush()

    def close(self):
        if self.f is not None and self.f is not sys.stderr:
            self.f.close()
        self.f = None
