#define _GNU_SOURCE
#include "udp.h"

#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* BS_NO_MMSG builds the portable path on Linux too (tests/test_udp.py compiles it). */
#if (defined(__linux__) || defined(__FreeBSD__)) && !defined(BS_NO_MMSG)
#define BS_HAVE_MMSG 1
#endif

static int fail_close(int fd) {
    int e = errno;
    close(fd);
    return -e;
}

int bs_udp_open(int family, const char *ip, int port, int reuse_port, int ipv6_only) {
    struct sockaddr_storage ss;
    unsigned len;
    int fd, one = 1, r = bs_fill_inet(family, ip, port, &ss, &len);
    if (r < 0) return r;
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
    fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
#else
    fd = socket(ss.ss_family, SOCK_DGRAM, 0);
    if (fd < 0) return -errno;
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return fail_close(fd);
#endif
    /* Several sockets on one port: SO_REUSEPORT spreads unicast datagrams across them, and
     * SO_REUSEADDR is what lets multicast listeners share a group's port. */
    if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) return fail_close(fd);
    r = bs_set_bind_opts(fd, family, reuse_port, ipv6_only);
    if (r < 0) {
        close(fd);
        return r;
    }
    if (bind(fd, (struct sockaddr *)&ss, (socklen_t)len) < 0) return fail_close(fd);
    return fd;
}

int bs_addr_parse(const char *ip, int port, int sock_family, bs_addr *out) {
    struct sockaddr_storage ss;
    unsigned len;
    memset(out, 0, sizeof *out);
    if (bs_fill_inet(BS_AF_INET, ip, port, &ss, &len) == 0) {
        if (sock_family == BS_AF_INET) {
            memcpy(&out->u.in4, &ss, sizeof out->u.in4);
            out->len = sizeof out->u.in4;
            return 0;
        }
        /* A dual-stack IPv6 socket reaches IPv4 peers through their v4-mapped address. */
        out->u.in6.sin6_family = AF_INET6;
        out->u.in6.sin6_port = htons((uint16_t)port);
        out->u.in6.sin6_addr.s6_addr[10] = 0xff;
        out->u.in6.sin6_addr.s6_addr[11] = 0xff;
        memcpy(&out->u.in6.sin6_addr.s6_addr[12], &((struct sockaddr_in *)&ss)->sin_addr, 4);
        out->len = sizeof out->u.in6;
        return 0;
    }
    int r = bs_fill_inet(BS_AF_INET6, ip, port, &ss, &len);
    if (r < 0) return r;
    if (sock_family != BS_AF_INET6) return -EAFNOSUPPORT;
    memcpy(&out->u.in6, &ss, sizeof out->u.in6);
    out->len = sizeof out->u.in6;
    return 0;
}

int bs_addr_text(const bs_addr *a, char *out, size_t outlen, int *port) {
    *port = 0;
    if (a->u.sa.sa_family == AF_INET && a->len >= sizeof a->u.in4) {
        if (!inet_ntop(AF_INET, &a->u.in4.sin_addr, out, (socklen_t)outlen)) return -errno;
        *port = ntohs(a->u.in4.sin_port);
        return BS_AF_INET;
    }
    if (a->u.sa.sa_family == AF_INET6 && a->len >= sizeof a->u.in6) {
        size_t k;
        if (!inet_ntop(AF_INET6, &a->u.in6.sin6_addr, out, (socklen_t)outlen)) return -errno;
        k = strlen(out);
        /* A link-local peer is only reachable through its interface: keep the scope, so the text
         * can be passed back to send(). */
        if (a->u.in6.sin6_scope_id && k + 12 < outlen) {
            char name[IF_NAMESIZE];
            if (if_indextoname(a->u.in6.sin6_scope_id, name))
                snprintf(out + k, outlen - k, "%%%s", name);
            else
                snprintf(out + k, outlen - k, "%%%u", (unsigned)a->u.in6.sin6_scope_id);
        }
        *port = ntohs(a->u.in6.sin6_port);
        return BS_AF_INET6;
    }
    if (outlen) out[0] = '\0';
    return 0;
}

int bs_udp_connect(int fd, const bs_addr *to) {
    int r;
    do r = connect(fd, &to->u.sa, to->len);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

int bs_udp_name(int fd, int peer, bs_addr *out) {
    socklen_t len = sizeof out->u;
    int r = peer ? getpeername(fd, &out->u.sa, &len) : getsockname(fd, &out->u.sa, &len);
    if (r < 0) return -errno;
    out->len = len;
    return 0;
}

ssize_t bs_udp_send(int fd, const void *p, size_t n, const bs_addr *to) {
    ssize_t r;
    do r = to ? sendto(fd, p, n, 0, &to->u.sa, to->len) : send(fd, p, n, 0);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static void fill_msghdr(struct msghdr *m, struct iovec *iov, const bs_udp_out *o) {
    memset(m, 0, sizeof *m);
    iov->iov_base = (void *)o->p;
    iov->iov_len = o->n;
    m->msg_iov = iov;
    m->msg_iovlen = 1;
    if (o->to) {
        m->msg_name = (void *)&o->to->u;
        m->msg_namelen = o->to->len;
    }
}

#ifdef BS_HAVE_MMSG
enum { CHUNK = 64 };   /* mmsghdr+iovec on the stack per call: 64 * ~80 bytes */
#endif

int bs_udp_send_many(int fd, const bs_udp_out *msgs, int n) {
    int done = 0;
#ifdef BS_HAVE_MMSG
    struct mmsghdr mm[CHUNK];
    struct iovec iov[CHUNK];
    while (done < n) {
        int k = n - done < CHUNK ? n - done : CHUNK, i, r;
        for (i = 0; i < k; i++) {
            fill_msghdr(&mm[i].msg_hdr, &iov[i], &msgs[done + i]);
            mm[i].msg_len = 0;
        }
        do r = sendmmsg(fd, mm, (unsigned)k, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0) return done ? done : -errno;
        done += r;
        if (r < k) break;   /* the next one would fail: its error is for the caller's next call */
    }
#else
    while (done < n) {
        struct msghdr m;
        struct iovec iov;
        ssize_t r;
        fill_msghdr(&m, &iov, &msgs[done]);
        do r = sendmsg(fd, &m, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0) return done ? done : -errno;
        done++;
    }
#endif
    return done;
}

int bs_udp_recv_many(int fd, bs_udp_in *slots, int n) {
    int i, r;
#ifdef BS_HAVE_MMSG
    struct mmsghdr mm[CHUNK];
    struct iovec iov[CHUNK];
    if (n > CHUNK) n = CHUNK;
    for (i = 0; i < n; i++) {
        memset(&mm[i], 0, sizeof mm[i]);
        iov[i].iov_base = slots[i].buf;
        iov[i].iov_len = slots[i].cap;
        mm[i].msg_hdr.msg_iov = &iov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
        mm[i].msg_hdr.msg_name = &slots[i].from.u;
        mm[i].msg_hdr.msg_namelen = sizeof slots[i].from.u;
    }
    do r = recvmmsg(fd, mm, (unsigned)n, MSG_DONTWAIT, NULL);
    while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    for (i = 0; i < r; i++) {
        slots[i].len = mm[i].msg_len;
        slots[i].from.len = mm[i].msg_hdr.msg_namelen;
        slots[i].truncated = (mm[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
    }
    return r;
#else
    for (i = 0; i < n; i++) {
        struct msghdr m;
        struct iovec iov;
        ssize_t k;
        memset(&m, 0, sizeof m);
        iov.iov_base = slots[i].buf;
        iov.iov_len = slots[i].cap;
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_name = &slots[i].from.u;
        m.msg_namelen = sizeof slots[i].from.u;
        do k = recvmsg(fd, &m, MSG_DONTWAIT);
        while (k < 0 && errno == EINTR);
        if (k < 0) {
            r = -errno;
            return i ? i : r;
        }
        slots[i].len = (size_t)k;
        slots[i].from.len = m.msg_namelen;
        slots[i].truncated = (m.msg_flags & MSG_TRUNC) != 0;
    }
    return n;
#endif
}

static int setopt_int(int fd, int level, int name, int v) {
    return setsockopt(fd, level, name, &v, sizeof v) < 0 ? -errno : 0;
}

int bs_udp_set_broadcast(int fd, int on) {
    return setopt_int(fd, SOL_SOCKET, SO_BROADCAST, on ? 1 : 0);
}

int bs_udp_set_ttl(int fd, int family, int ttl) {
    if (family == BS_AF_INET6) return setopt_int(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl);
    return setopt_int(fd, IPPROTO_IP, IP_TTL, ttl);
}

/* The BSDs take IP_MULTICAST_TTL and IP_MULTICAST_LOOP as one byte, Linux takes either. */
static int setopt_byte(int fd, int level, int name, int v) {
    unsigned char c = (unsigned char)v;
    return setsockopt(fd, level, name, &c, sizeof c) < 0 ? -errno : 0;
}

int bs_udp_set_multicast_ttl(int fd, int family, int ttl) {
    if (family == BS_AF_INET6) return setopt_int(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, ttl);
    return setopt_byte(fd, IPPROTO_IP, IP_MULTICAST_TTL, ttl);
}

int bs_udp_set_multicast_loopback(int fd, int family, int on) {
    if (family == BS_AF_INET6) return setopt_int(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, on ? 1 : 0);
    return setopt_byte(fd, IPPROTO_IP, IP_MULTICAST_LOOP, on ? 1 : 0);
}

static int iface_index(const char *iface, unsigned *out) {
    char *end;
    unsigned long idx = strtoul(iface, &end, 10);
    if (*end != '\0' || end == iface) idx = if_nametoindex(iface);
    if (idx == 0) return -ENXIO;
    *out = (unsigned)idx;
    return 0;
}

int bs_udp_set_multicast_interface(int fd, int family, const char *iface) {
    if (family == BS_AF_INET6) {
        unsigned idx;
        int r = iface_index(iface, &idx);
        if (r < 0) return r;
        return setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof idx) < 0 ? -errno : 0;
    } else {
        struct in_addr a;
        if (inet_pton(AF_INET, iface, &a) != 1) return -EINVAL;
        return setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &a, sizeof a) < 0 ? -errno : 0;
    }
}

int bs_udp_membership(int fd, int family, int add, const char *group, const char *iface) {
    if (family == BS_AF_INET6) {
        struct ipv6_mreq m;
        memset(&m, 0, sizeof m);
        if (inet_pton(AF_INET6, group, &m.ipv6mr_multiaddr) != 1) return -EINVAL;
        if (iface && *iface) {
            unsigned idx;
            int r = iface_index(iface, &idx);
            if (r < 0) return r;
            m.ipv6mr_interface = idx;
        }
        return setsockopt(fd, IPPROTO_IPV6, add ? IPV6_JOIN_GROUP : IPV6_LEAVE_GROUP, &m, sizeof m) < 0
                   ? -errno : 0;
    } else {
        struct ip_mreq m;
        memset(&m, 0, sizeof m);
        if (inet_pton(AF_INET, group, &m.imr_multiaddr) != 1) return -EINVAL;
        m.imr_interface.s_addr = htonl(INADDR_ANY);
        if (iface && *iface && inet_pton(AF_INET, iface, &m.imr_interface) != 1) return -EINVAL;
        return setsockopt(fd, IPPROTO_IP, add ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &m, sizeof m) < 0
                   ? -errno : 0;
    }
}
