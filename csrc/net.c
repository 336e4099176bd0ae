#define _GNU_SOURCE
#include "net.h"
#include "sockopt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Python ignores SIGPIPE, but an embedding application might not: ask the kernel not to raise it. */
#ifdef MSG_NOSIGNAL
#define BS_NOSIGNAL MSG_NOSIGNAL
#else
#define BS_NOSIGNAL 0
#endif

static inline int set_nonblock_cloexec(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* Linux creates sockets non-blocking and close-on-exec atomically; elsewhere a forked child could
 * inherit the fd between socket() and fcntl(), which only matters for exec, so fcntl is acceptable. */
static int new_socket(int domain) {
    int fd;
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
    fd = socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
#else
    fd = socket(domain, SOCK_STREAM, 0);
    if (fd < 0) return -errno;
    if (set_nonblock_cloexec(fd) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
#endif
#ifdef SO_NOSIGPIPE
    {
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
    }
#endif
    return fd;
}

static int fail_close(int fd) {
    int e = errno;
    close(fd);
    return -e;
}

static int fill_inet(int family, const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    if (family == BS_AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, ip, &a->sin_addr) != 1) return -EINVAL;
        *len = sizeof *a;
    } else if (family == BS_AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        char host[INET6_ADDRSTRLEN];
        const char *pct = strchr(ip, '%');
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (pct) {
            /* "fe80::1%eth0" or "fe80::1%2": a link-local address means nothing without the
             * interface it is on, so the scope id is kept (by name or number). */
            size_t hl = (size_t)(pct - ip);
            char *end;
            unsigned long idx;
            if (hl >= sizeof host) return -EINVAL;
            memcpy(host, ip, hl);
            host[hl] = '\0';
            idx = strtoul(pct + 1, &end, 10);
            if (pct[1] == '\0') return -EINVAL;
            if (*end != '\0') idx = if_nametoindex(pct + 1);
            if (idx == 0) return -ENXIO;
            a->sin6_scope_id = (uint32_t)idx;
            ip = host;
        }
        if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1) return -EINVAL;
        *len = sizeof *a;
    } else {
        return -EAFNOSUPPORT;
    }
    return 0;
}

static int fill_unix(const char *path, size_t pathlen, struct sockaddr_un *a, socklen_t *len) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (pathlen == 0 || pathlen >= sizeof a->sun_path) return -ENAMETOOLONG;
    memcpy(a->sun_path, path, pathlen);
    /* An abstract name is exactly pathlen bytes; a path name is NUL-terminated by the memset. */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + pathlen + (path[0] ? 1 : 0));
    return 0;
}

int bs_set_bind_opts(int fd, int family, int reuse_port, int ipv6_only) {
    int one = 1;
    if (reuse_port) {
#ifdef SO_REUSEPORT
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) return -errno;
#else
        return -ENOPROTOOPT;
#endif
    }
    if (family == BS_AF_INET6) {
        int v6 = ipv6_only ? 1 : 0;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof v6) < 0) return -errno;
    }
    return 0;
}

int bs_listen_tcp(int family, const char *ip, int port, int backlog, int reuse_port, int ipv6_only,
                     const bs_sockopt *opts, int nopts) {
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1, r = fill_inet(family, ip, port, &ss, &len);
    if (r < 0) return r;
    int fd = new_socket(ss.ss_family);
    if (fd < 0) return fd;
    /* Without SO_REUSEADDR a restarted server cannot bind while old connections sit in TIME_WAIT. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) return fail_close(fd);
    r = bs_set_bind_opts(fd, family, reuse_port, ipv6_only);
    if (r < 0) {
        close(fd);
        return r;
    }
    /* The caller's options come last, so they may override the defaults above. */
    if ((r = bs_apply_sockopts(fd, opts, nopts)) < 0) {
        close(fd);
        return r;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) return fail_close(fd);
    if (listen(fd, backlog) < 0) return fail_close(fd);
    return fd;
}

int bs_listen_unix(const char *path, size_t pathlen, int backlog, const bs_sockopt *opts, int nopts) {
    struct sockaddr_un a;
    socklen_t len;
    int r = fill_unix(path, pathlen, &a, &len);
    if (r < 0) return r;
    int fd = new_socket(AF_UNIX);
    if (fd < 0) return fd;
    if ((r = bs_apply_sockopts(fd, opts, nopts)) < 0) {
        close(fd);
        return r;
    }
    if (bind(fd, (struct sockaddr *)&a, len) < 0) return fail_close(fd);
    if (listen(fd, backlog) < 0) return fail_close(fd);
    return fd;
}

int bs_accept(int lfd) {
    int fd;
#if defined(__linux__) || defined(__FreeBSD__)
    do fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return -errno;
#else
    do fd = accept(lfd, NULL, NULL);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return -errno;
    if (set_nonblock_cloexec(fd) < 0) return fail_close(fd);
#ifdef SO_NOSIGPIPE
    {
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
    }
#endif
#endif
    return fd;
}

static int start_connect(int fd, const struct sockaddr *sa, socklen_t len, int *in_progress) {
    int r;
    do r = connect(fd, sa, len);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
        *in_progress = 0;
        return fd;
    }
    /* Only TCP connects complete later.  A unix connect either succeeds at once or fails; its
     * EAGAIN means the listener's backlog is full, which is a failure, not "in progress". */
    if (errno == EINPROGRESS) {
        *in_progress = 1;
        return fd;
    }
    return fail_close(fd);
}

int bs_connect_tcp(int family, const char *ip, int port, const char *local_ip, int local_port,
                      const bs_sockopt *opts, int nopts, int *in_progress) {
    struct sockaddr_storage ss;
    socklen_t len;
    int r = fill_inet(family, ip, port, &ss, &len);
    if (r < 0) return r;
    int fd = new_socket(ss.ss_family);
    if (fd < 0) return fd;
    if ((r = bs_apply_sockopts(fd, opts, nopts)) < 0) {
        close(fd);
        return r;
    }
    if (local_ip || local_port) {
        struct sockaddr_storage ls;
        socklen_t llen;
        int one = 1;
        const char *any = family == BS_AF_INET6 ? "::" : "0.0.0.0";
        r = fill_inet(family, local_ip ? local_ip : any, local_port, &ls, &llen);
        if (r < 0) {
            close(fd);
            return r;
        }
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&ls, llen) < 0) return fail_close(fd);
    }
    return start_connect(fd, (struct sockaddr *)&ss, len, in_progress);
}

int bs_connect_unix(const char *path, size_t pathlen, const bs_sockopt *opts, int nopts,
                       int *in_progress) {
    struct sockaddr_un a;
    socklen_t len;
    int r = fill_unix(path, pathlen, &a, &len);
    if (r < 0) return r;
    int fd = new_socket(AF_UNIX);
    if (fd < 0) return fd;
    if ((r = bs_apply_sockopts(fd, opts, nopts)) < 0) {
        close(fd);
        return r;
    }
    return start_connect(fd, (struct sockaddr *)&a, len, in_progress);
}

int bs_socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
    return -err;
}

int bs_set_nodelay(int fd, int on) {
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0 ? -errno : 0;
}

int bs_set_linger0(int fd) {
    struct linger l = {1, 0};
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) < 0 ? -errno : 0;
}

int bs_shutdown(int fd, int how_read) {
    return shutdown(fd, how_read ? SHUT_RD : SHUT_WR) < 0 ? -errno : 0;
}

int bs_sockname(int fd, int peer, char *out, size_t outlen, int *port) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int r = peer ? getpeername(fd, (struct sockaddr *)&ss, &len) : getsockname(fd, (struct sockaddr *)&ss, &len);
    if (r < 0) return -errno;
    *port = 0;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        if (!inet_ntop(AF_INET, &a->sin_addr, out, (socklen_t)outlen)) return -errno;
        *port = ntohs(a->sin_port);
        return BS_AF_INET;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        if (!inet_ntop(AF_INET6, &a->sin6_addr, out, (socklen_t)outlen)) return -errno;
        *port = ntohs(a->sin6_port);
        return BS_AF_INET6;
    }
    if (ss.ss_family == AF_UNIX) {
        if (outlen) out[0] = '\0';
        return BS_AF_UNIX;
    }
    return 0;
}

int bs_local_port(int fd) {
    char ip[64];
    int port = 0;
    int r = bs_sockname(fd, 0, ip, sizeof ip, &port);
    return r < 0 ? r : port;
}

ssize_t bs_send(int fd, const void *p, size_t n) {
    ssize_t r;
    do r = send(fd, p, n, BS_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

ssize_t bs_sendv(int fd, const struct iovec *iov, int iovcnt) {
    struct msghdr m;
    ssize_t r;
    memset(&m, 0, sizeof m);
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)iovcnt;
    do r = sendmsg(fd, &m, BS_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

ssize_t bs_recv(int fd, void *p, size_t n) {
    ssize_t r;
    do r = recv(fd, p, n, 0);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int bs_fill_inet(int family, const char *ip, int port, struct sockaddr_storage *ss, unsigned *len) {
    socklen_t l = 0;
    int r = fill_inet(family, ip, port, ss, &l);
    *len = (unsigned)l;
    return r;
}
