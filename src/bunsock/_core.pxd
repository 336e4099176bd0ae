# C core declarations shared by the Cython modules.  The headers are the source of truth.
from libc.stdint cimport uint32_t, uint64_t, int64_t

cdef extern from "<sys/types.h>":
    ctypedef long ssize_t


cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len


cdef extern from "poller.h" nogil:
    unsigned int BS_READABLE, BS_WRITABLE, BS_HANGUP
    ctypedef struct bs_event:
        void *ptr
        uint32_t mask
    ctypedef struct bs_poller:
        int fd
        int cap
    int bs_poller_open(bs_poller *p, int max_events)
    void bs_poller_close(bs_poller *p)
    int bs_poller_add(bs_poller *p, int fd, void *ptr, uint32_t mask)
    int bs_poller_mod(bs_poller *p, int fd, void *ptr, uint32_t old, uint32_t mask)
    int bs_poller_del(bs_poller *p, int fd, uint32_t old)
    int bs_poller_wait(bs_poller *p, bs_event *out, int timeout_ms)
    const char *bs_poller_name()


cdef extern from "sink.h" nogil:
    size_t BS_SINK_KEEP
    ctypedef struct bs_sink:
        char *buf
        size_t cap
        size_t head
        size_t len
        unsigned wide
    void bs_sink_init(bs_sink *s)
    void bs_sink_free(bs_sink *s)
    int bs_sink_reserve(bs_sink *s, size_t extra)
    int bs_sink_append(bs_sink *s, const void *p, size_t n)
    int bs_sink_iov(const bs_sink *s, iovec *iov)
    void bs_sink_consume(bs_sink *s, size_t n)
    char *bs_sink_linearize(bs_sink *s)
    char *bs_sink_extend(bs_sink *s, size_t n)
    void bs_sink_truncate(bs_sink *s, size_t newlen)


cdef extern from "timers.h" nogil:
    ctypedef struct bs_timer:
        uint64_t deadline
        void *owner
    ctypedef struct bs_wheel:
        size_t count
    void bs_wheel_init(bs_wheel *w, uint64_t now_ms)
    void bs_timer_init(bs_timer *t, void *owner)
    int bs_timer_armed(const bs_timer *t)
    void bs_wheel_arm(bs_wheel *w, bs_timer *t, uint64_t deadline_ms)
    void bs_wheel_cancel(bs_wheel *w, bs_timer *t)
    int64_t bs_wheel_timeout(const bs_wheel *w, uint64_t now_ms)
    bs_timer *bs_wheel_pop_expired(bs_wheel *w, uint64_t now_ms)
    size_t bs_wheel_count(const bs_wheel *w)


cdef extern from "clock.h" nogil:
    uint64_t bs_monotonic_ms()


cdef extern from "net.h" nogil:
    int BS_AF_INET, BS_AF_INET6, BS_AF_UNIX
    int bs_accept(int lfd)
    int bs_socket_error(int fd)
    int bs_set_nodelay(int fd, int on)
    int bs_set_linger0(int fd)
    int bs_shutdown(int fd, int how_read)
    int bs_sockname(int fd, int peer, char *out, size_t outlen, int *port)
    int bs_local_port(int fd)
    ssize_t bs_send(int fd, const void *p, size_t n)
    ssize_t bs_sendv(int fd, const iovec *iov, int iovcnt)
    ssize_t bs_recv(int fd, void *p, size_t n)


cdef extern from "sockopt.h" nogil:
    ctypedef struct bs_sockopt:
        int level
        int name
        const void *value
        unsigned int len
    ctypedef struct bs_tcpstat:
        uint32_t rtt_us, rttvar_us, retransmits, cwnd, unacked
        int has_delivery_rate
        uint64_t delivery_rate
    enum:
        BS_OPT_SNDBUF, BS_OPT_RCVBUF, BS_OPT_KEEPALIVE, BS_OPT_KEEPIDLE, BS_OPT_KEEPINTVL,
        BS_OPT_KEEPCNT, BS_OPT_USER_TIMEOUT, BS_OPT_FASTOPEN, BS_OPT_FASTOPEN_CONNECT,
        BS_OPT_DEFER_ACCEPT, BS_OPT_FREEBIND, BS_OPT_TRANSPARENT, BS_OPT_MARK, BS_OPT_COUNT
    int bs_named_sockopt(int which, int *level, int *name)
    int bs_apply_sockopts(int fd, const bs_sockopt *opts, int n)
    int bs_probe_sockopts(int family, const bs_sockopt *opts, int n)
    int bs_setsockopt(int fd, int level, int name, const void *value, unsigned int len)
    int bs_getsockopt(int fd, int level, int name, void *out, unsigned int *len)
    int bs_adopt(int fd, int *family, int *listening)
    int bs_listen_fd(int fd, int backlog)
    int bs_tcp_stat(int fd, bs_tcpstat *out)
    # opts may be NULL when nopts is 0
    int bs_listen_tcp(int family, const char *ip, int port, int backlog, int reuse_port,
                      int ipv6_only, const bs_sockopt *opts, int nopts)
    int bs_listen_unix(const char *path, size_t pathlen, int backlog, const bs_sockopt *opts,
                       int nopts)
    int bs_connect_tcp(int family, const char *ip, int port, const char *local_ip,
                       int local_port, const bs_sockopt *opts, int nopts, int *in_progress)
    int bs_connect_unix(const char *path, size_t pathlen, const bs_sockopt *opts, int nopts,
                        int *in_progress)


cdef extern from "waker.h" nogil:
    ctypedef struct bs_waker:
        int rfd
        int wfd
    int bs_waker_open(bs_waker *w)
    void bs_waker_close(bs_waker *w)
    void bs_waker_signal(const bs_waker *w)
    void bs_waker_drain(const bs_waker *w)


cdef extern from "udp.h" nogil:
    ctypedef unsigned int socklen_t
    ctypedef struct bs_addr:
        socklen_t len
    ctypedef struct bs_udp_out:
        const void *p
        size_t n
        const bs_addr *to
    ctypedef struct bs_udp_in:
        char *buf
        size_t cap
        size_t len
        bs_addr addr "from"
        int truncated
    int BS_UDP_MAX_BATCH
    int bs_udp_open(int family, const char *ip, int port, int reuse_port, int ipv6_only)
    int bs_addr_parse(const char *ip, int port, int sock_family, bs_addr *out)
    int bs_addr_text(const bs_addr *a, char *out, size_t outlen, int *port)
    int bs_udp_connect(int fd, const bs_addr *to)
    int bs_udp_name(int fd, int peer, bs_addr *out)
    ssize_t bs_udp_send(int fd, const void *p, size_t n, const bs_addr *to)
    int bs_udp_send_many(int fd, const bs_udp_out *msgs, int n)
    int bs_udp_recv_many(int fd, bs_udp_in *slots, int n)
    int bs_udp_set_broadcast(int fd, int on)
    int bs_udp_set_ttl(int fd, int family, int ttl)
    int bs_udp_set_multicast_ttl(int fd, int family, int ttl)
    int bs_udp_set_multicast_loopback(int fd, int family, int on)
    int bs_udp_set_multicast_interface(int fd, int family, const char *iface)
    int bs_udp_membership(int fd, int family, int add, const char *group, const char *iface)
