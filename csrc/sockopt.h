/* Socket options: options applied between socket() and bind()/connect(), options on live
 * sockets, keepalive tuning and TCP statistics.  Same convention as net.h: >= 0 on success,
 * -errno on failure. */
#ifndef BS_SOCKOPT_H
#define BS_SOCKOPT_H

#include <stddef.h>
#include <stdint.h>

/* One setsockopt(level, name, value, len) to apply before bind()/connect(). */
typedef struct bs_sockopt {
    int level;
    int name;
    const void *value;
    unsigned int len;
} bs_sockopt;

/* Applies opts[0..n) in order; stops at the first failure and returns its -errno. */
int bs_apply_sockopts(int fd, const bs_sockopt *opts, int n);
/* Creates a throwaway stream socket of `family` (BS_AF_*), applies opts, closes it: lets
 * connect() report a bad option synchronously although its real socket is made later. */
int bs_probe_sockopts(int family, const bs_sockopt *opts, int n);

int bs_setsockopt(int fd, int level, int name, const void *value, unsigned int len);
/* On entry *len is the room in out; on success it is the length the kernel wrote. */
int bs_getsockopt(int fd, int level, int name, void *out, unsigned int *len);

/* The options bunsock names for its users, resolved here at compile time so that a platform's
 * spelling (macOS's TCP_KEEPALIVE for Linux's TCP_KEEPIDLE) or absence is decided in one place. */
enum {
    BS_OPT_SNDBUF, BS_OPT_RCVBUF, BS_OPT_KEEPALIVE, BS_OPT_KEEPIDLE, BS_OPT_KEEPINTVL,
    BS_OPT_KEEPCNT, BS_OPT_USER_TIMEOUT, BS_OPT_FASTOPEN, BS_OPT_FASTOPEN_CONNECT,
    BS_OPT_DEFER_ACCEPT, BS_OPT_FREEBIND, BS_OPT_TRANSPARENT, BS_OPT_MARK, BS_OPT_COUNT
};
/* Fills *level and *name; -ENOPROTOOPT when this platform has no such option. */
int bs_named_sockopt(int which, int *level, int *name);

/* Adopting a descriptor: its family (BS_AF_*), SOCK_STREAM check, non-blocking + cloexec. */
int bs_adopt(int fd, int *family, int *listening);
int bs_listen_fd(int fd, int backlog);

typedef struct bs_tcpstat {
    uint32_t rtt_us, rttvar_us;
    uint32_t retransmits;        /* total retransmitted segments over the connection */
    uint32_t cwnd;               /* congestion window, in segments */
    uint32_t unacked;            /* segments sent and not yet acknowledged */
    int has_delivery_rate;
    uint64_t delivery_rate;      /* bytes per second */
} bs_tcpstat;

int bs_tcp_stat(int fd, bs_tcpstat *out);

#endif
