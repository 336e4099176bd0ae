# Returning the handshakes' memory to the system
#
# Measured (benchmarks/tls_echo.py, 1,000 idle TLS connections, server side): 46 KiB of RSS per
# connection, of which only ~24 KiB is live (OpenSSL's per-connection state ~17 KiB with its
# two MemoryBIOs, Python objects ~1.2 KiB, the rest the socket and its records). The other
# ~22 KiB is heap freed by OpenSSL after each handshake (key shares, transcript, the record
# buffers that SSL_MODE_RELEASE_BUFFERS gives back) that glibc keeps resident between live
# blocks. After a burst of handshakes or closes has settled, malloc_trim(0) hands those pages
# back. It walks the heap (~1 ms per 1,000 connections), so it runs at most once per
# max(1 s, 1000 x its last duration): under 0.1% of the time. glibc only; skipped when the
# user tunes malloc through MALLOC_TRIM_THRESHOLD_ (as for the loop's malloc priming).

cdef extern from *:
    """
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int bs_trim_heap(void) { return malloc_trim(0); }
    #define BS_CAN_TRIM 1
    #else
    static int bs_trim_heap(void) { return 0; }
    #define BS_CAN_TRIM 0
    #endif
    """
    int bs_trim_heap() nogil
    const bint BS_CAN_TRIM

cdef bint _trim_enabled = BS_CAN_TRIM and "MALLOC_TRIM_THRESHOLD_" not in os.environ
cdef uint64_t _churn_ms = 0        # last handshake end or TLS close
cdef uint64_t _trim_next_ms = 0    # the budget's earliest next trim
# A trim timer is pending until about this time. No Timer is kept here (it would keep its loop
# alive after Loop.close()): a timer lost with a closed or stopped loop just lets the next
# churn arm a new one once this has passed.
cdef uint64_t _trim_armed_ms = 0
cdef uint64_t TRIM_SETTLE_MS = 100     # quiet time that counts as "the burst has settled"


def _heap_trim(bint on):
    """Turn the post-burst malloc_trim on or off (glibc only); returns the previous setting.
    For tests that count live Timer objects (the trim's timer is one while it is pending)."""
    global _trim_enabled
    prev = _trim_enabled
    _trim_enabled = on and BS_CAN_TRIM
    return prev


cdef int _arm_trim(Loop loop, uint64_t now, uint64_t wait) except -1:
    global _trim_armed_ms
    loop.call_later(wait / 1000.0, _trim_due, loop).unref()
    _trim_armed_ms = now + wait + 1000
    return 0


cdef int _note_churn(Loop loop) except -1:
    """A handshake ended or a TLS connection closed: trim once things settle."""
    global _churn_ms
    if not _trim_enabled:
        return 0
    _churn_ms = bs_monotonic_ms()
    if _churn_ms > _trim_armed_ms:
        _arm_trim(loop, _churn_ms, TRIM_SETTLE_MS)
    return 0


def _trim_due(Loop loop):
    global _trim_next_ms, _trim_armed_ms
    cdef uint64_t now = bs_monotonic_ms(), took
    cdef uint64_t wait = 0
    if now - _churn_ms < TRIM_SETTLE_MS:
        wait = TRIM_SETTLE_MS - (now - _churn_ms)      # still busy: let it settle first
    if _trim_next_ms > now + wait:
        wait = _trim_next_ms - now
    if wait:
        _arm_trim(loop, now, wait)
        return
    _trim_armed_ms = 0
    with nogil:
        bs_trim_heap()
    took = bs_monotonic_ms() - now
    _trim_next_ms = bs_monotonic_ms() + max(<uint64_t>1000, 1000 * took)
