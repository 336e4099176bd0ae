"""The named tuple sock.tcp_info() returns (kept in Python: it is built once per call)."""
from typing import NamedTuple, Optional


class TcpInfo(NamedTuple):
    """A TCP connection's kernel statistics, from sock.tcp_info().

    rtt, rttvar: smoothed round-trip time and its variation, in seconds.
    retransmits: segments retransmitted over the connection's life.
    cwnd: congestion window, in segments.
    unacked: segments sent and not yet acknowledged (0 where the platform does not say).
    delivery_rate: the kernel's estimate of bytes per second delivered, or None where the
    platform (or an older Linux) does not report it."""
    rtt: float
    rttvar: float
    retransmits: int
    cwnd: int
    unacked: int
    delivery_rate: Optional[int]
