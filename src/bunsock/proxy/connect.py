"""Connecting one client's upstream: Happy Eyeballs over the addresses of the picked upstream."""
import bunsock

__all__ = ["Attempt", "HAPPY_EYEBALLS_DELAY"]

HAPPY_EYEBALLS_DELAY = 0.25      # RFC 8305's recommended connection attempt delay


class Attempt:
    """Happy Eyeballs for one client: connection attempts to the addresses of one upstream,
    started HAPPY_EYEBALLS_DELAY apart (or at once when one fails); the first to open wins."""

    def __init__(self, proxy, client, upstream, tried, addrs):
        self.proxy, self.client, self.upstream, self.tried = proxy, client, upstream, tried
        self.pending = []
        self.addrs = list(addrs)
        self.timer = None
        self.done = False
        self.next()

    def next(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.done or not self.addrs:
            return
        ip = self.addrs.pop(0)
        p = self.proxy
        s = bunsock.connect(hostname=ip, port=self.upstream.port, socket=p.up_table, data=self,
                            connect_timeout=p.connect_timeout,
                            tls=p.upstream_tls_for(self.upstream), loop=p.loop,
                            high_water_mark=None)
        self.pending.append(s)
        if self.addrs:
            self.timer = p.loop.call_later(HAPPY_EYEBALLS_DELAY, self.next)

    def opened(self, sock):
        if self.done:
            sock.close()
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        for s in self.pending:
            if s is not sock:
                s.data = None
                s.close()
        self.pending = [sock]
        self.proxy.connected(self.client, sock, self.upstream)

    def failed(self, sock, exc):
        if sock in self.pending:
            self.pending.remove(sock)
        if self.done:
            return
        if self.addrs:
            self.next()
        elif not self.pending:
            self.done = True
            self.proxy.connect_failed(self.client, self.upstream, self.tried, exc)
