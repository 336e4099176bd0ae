#define _GNU_SOURCE
#include "sockopt.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int bs_apply_sockopts(int fd, const bs_sockopt *opts, int n) {
    int i;
    for (i = 0; i < n; i++)
        if (setsockopt(fd, opts[i].level, opts[i].name, opts[i].value, (socklen_t)opts[i].len) < 0)
            return -errno;
    return 0;
}

int bs_probe_sockopts(int family, const bs_sockopt *opts, int n) {
    int dom = family == BS_AF_INET6 ? AF_INET6 : family == BS_AF_UNIX ? AF_UNIX : AF_INET;
    int fd = socket(dom, SOCK_STREAM, 0), r;
    if (fd < 0) return -errno;
    r = bs_apply_sockopts(fd, opts, n);
    close(fd);
    return r;
}

int bs_setsockopt(int fd, int level, int name, const void *value, unsigned int len) {
    return setsockopt(fd, level, name, value, (socklen_t)len) < 0 ? -errno : 0;
}

int bs_getsockopt(int fd, int level, int name, void *out, unsigned int *len) {
    socklen_t l = (socklen_t)*len;
    if (getsockopt(fd, level, name, out, &l) < 0) return -errno;
    *len = (unsigned int)l;
    return 0;
}

#define BS_HAVE(lv, nm) do { *level = (lv); *name = (nm); return 0; } while (0)

int bs_named_sockopt(int which, int *level, int *name) {
    switch (which) {
    case BS_OPT_SNDBUF: BS_HAVE(SOL_SOCKET, SO_SNDBUF);
    case BS_OPT_RCVBUF: BS_HAVE(SOL_SOCKET, SO_RCVBUF);
    case BS_OPT_KEEPALIVE: BS_HAVE(SOL_SOCKET, SO_KEEPALIVE);
    case BS_OPT_KEEPIDLE:
#if defined(TCP_KEEPIDLE)
        BS_HAVE(IPPROTO_TCP, TCP_KEEPIDLE);
#elif defined(TCP_KEEPALIVE)
        BS_HAVE(IPPROTO_TCP, TCP_KEEPALIVE);     /* macOS's name for the idle time */
#else
        break;
#endif
    case BS_OPT_KEEPINTVL:
#ifdef TCP_KEEPINTVL
        BS_HAVE(IPPROTO_TCP, TCP_KEEPINTVL);
#else
        break;
#endif
    case BS_OPT_KEEPCNT:
#ifdef TCP_KEEPCNT
        BS_HAVE(IPPROTO_TCP, TCP_KEEPCNT);
#else
        break;
#endif
    case BS_OPT_USER_TIMEOUT:
#ifdef TCP_USER_TIMEOUT
        BS_HAVE(IPPROTO_TCP, TCP_USER_TIMEOUT);
#else
        break;
#endif
    case BS_OPT_FASTOPEN:
#ifdef TCP_FASTOPEN
        BS_HAVE(IPPROTO_TCP, TCP_FASTOPEN);
#else
        break;
#endif
    case BS_OPT_FASTOPEN_CONNECT:
#if defined(TCP_FASTOPEN_CONNECT)
        BS_HAVE(IPPROTO_TCP, TCP_FASTOPEN_CONNECT);
#elif defined(__linux__)
        BS_HAVE(IPPROTO_TCP, 30);     /* Linux 4.11+; older libc headers lack the name */
#else
        break;
#endif
    case BS_OPT_DEFER_ACCEPT:
#ifdef TCP_DEFER_ACCEPT
        BS_HAVE(IPPROTO_TCP, TCP_DEFER_ACCEPT);
#else
        break;
#endif
    case BS_OPT_FREEBIND:
#ifdef IP_FREEBIND
        BS_HAVE(IPPROTO_IP, IP_FREEBIND);      /* Linux applies it to IPv6 sockets too */
#else
        break;
#endif
    case BS_OPT_TRANSPARENT:
#ifdef IP_TRANSPARENT
        BS_HAVE(IPPROTO_IP, IP_TRANSPARENT);
#else
        break;
#endif
    case BS_OPT_MARK:
#ifdef SO_MARK
        BS_HAVE(SOL_SOCKET, SO_MARK);
#else
        break;
#endif
    default:
        break;
    }
    return -ENOPROTOOPT;
}

int bs_adopt(int fd, int *family, int *listening) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int type = 0, acc = 0, fl;
    socklen_t tl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) return -errno;
    if (type != SOCK_STREAM) return -EPROTOTYPE;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
    switch (ss.ss_family) {
    case AF_INET: *family = BS_AF_INET; break;
    case AF_INET6: *family = BS_AF_INET6; break;
    case AF_UNIX: *family = BS_AF_UNIX; break;
    default: return -EAFNOSUPPORT;
    }
#ifdef SO_ACCEPTCONN
    tl = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &tl) < 0) acc = 0;
#endif
    *listening = acc != 0;
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return -errno;
#ifdef SO_NOSIGPIPE
    {
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
    }
#endif
    return 0;
}

int bs_listen_fd(int fd, int backlog) {
    return listen(fd, backlog) < 0 ? -errno : 0;
}

#if defined(__linux__) && defined(TCP_INFO)
/* The kernel's struct tcp_info up to tcpi_delivery_rate (Linux 4.9+).  glibc's copy of the struct
 * stops earlier; the kernel reports how much it filled, so older kernels are detected by length. */
struct bs_kernel_tcp_info {
    uint8_t state, ca_state, retransmits, probes, backoff, options, wscale, flags;
    uint32_t rto, ato, snd_mss, rcv_mss;
    uint32_t unacked, sacked, lost, retrans, fackets;
    uint32_t last_data_sent, last_ack_sent, last_data_recv, last_ack_recv;
    uint32_t pmtu, rcv_ssthresh, rtt, rttvar, snd_ssthresh, snd_cwnd, advmss, reordering;
    uint32_t rcv_rtt, rcv_space;
    uint32_t total_retrans;
    uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
    uint32_t segs_out, segs_in;
    uint32_t notsent_bytes, min_rtt, data_segs_in, data_segs_out;
    uint64_t delivery_rate;
};
#endif

int bs_tcp_stat(int fd, bs_tcpstat *out) {
    memset(out, 0, sizeof *out);
#if defined(__linux__) && defined(TCP_INFO)
    {
        struct bs_kernel_tcp_info ti;
        socklen_t len = sizeof ti;
        memset(&ti, 0, sizeof ti);
        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) return -errno;
        if (len < offsetof(struct bs_kernel_tcp_info, pacing_rate)) return -ENOPROTOOPT;
        out->rtt_us = ti.rtt;
        out->rttvar_us = ti.rttvar;
        out->retransmits = ti.total_retrans;
        out->cwnd = ti.snd_cwnd;
        out->unacked = ti.unacked;
        if (len >= offsetof(struct bs_kernel_tcp_info, delivery_rate) + sizeof ti.delivery_rate) {
            out->has_delivery_rate = 1;
            out->delivery_rate = ti.delivery_rate;
        }
        return 0;
    }
#elif defined(__APPLE__) && defined(TCP_CONNECTION_INFO)
    {
        struct tcp_connection_info ci;
        socklen_t len = sizeof ci;
        if (getsockopt(fd, IPPROTO_TCP, TCP_CONNECTION_INFO, &ci, &len) < 0) return -errno;
        out->rtt_us = ci.tcpi_srtt * 1000u;       /* macOS reports milliseconds */
        out->rttvar_us = ci.tcpi_rttvar * 1000u;
        out->retransmits = (uint32_t)ci.tcpi_txretransmitpackets;
        out->cwnd = ci.tcpi_maxseg ? ci.tcpi_snd_cwnd / ci.tcpi_maxseg : 0;
        out->unacked = 0;
        return 0;
    }
#else
    (void)fd;
    return -ENOPROTOOPT;
#endif
}
