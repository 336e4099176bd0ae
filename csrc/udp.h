/* UDP system calls for the loop: errno in, errno out (>= 0 success, -errno failure), as net.h.
 * Batched I/O uses recvmmsg/sendmmsg where the platform has them (Linux, FreeBSD) and falls back to
 * one recvmsg/sendmsg per datagram elsewhere; callers cannot tell the difference. */
#ifndef BS_UDP_H
#define BS_UDP_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

/* An IPv4 or IPv6 socket address.  Not sockaddr_storage: it is cached per peer, and 28 bytes hold
 * every address a UDP socket of ours can send to. */
typedef struct bs_addr {
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } u;
    socklen_t len;
} bs_addr;

/* One datagram to send: to == NULL on a connected socket. */
typedef struct bs_udp_out {
    const void *p;
    size_t n;
    const bs_addr *to;
} bs_udp_out;

/* One receive slot: buf/cap in, len/from/truncated out. */
typedef struct bs_udp_in {
    char *buf;
    size_t cap;
    size_t len;
    bs_addr from;
    int truncated;
} bs_udp_in;

/* The most datagrams one batched call moves (Linux caps sendmmsg/recvmmsg at UIO_MAXIOV). */
#define BS_UDP_MAX_BATCH 1024

/* A non-blocking datagram socket bound to ip:port (family BS_AF_INET or BS_AF_INET6). */
int bs_udp_open(int family, const char *ip, int port, int reuse_port, int ipv6_only);
/* Parse an IP literal for a socket of sock_family: tries IPv4 then IPv6 (with %scope).  An IPv4
 * address for an IPv6 socket becomes its v4-mapped form; an IPv6 address for an IPv4 socket is
 * -EAFNOSUPPORT; text that is no address is -EINVAL. */
int bs_addr_parse(const char *ip, int port, int sock_family, bs_addr *out);
/* The address as text (INET6_ADDRSTRLEN bytes at least) and its port; returns the family code,
 * 0 for an address that is not IPv4/IPv6 (an unnamed unix peer). */
int bs_addr_text(const bs_addr *a, char *out, size_t outlen, int *port);
int bs_udp_connect(int fd, const bs_addr *to);
/* Local (peer=0) or peer (peer=1) address of the socket. */
int bs_udp_name(int fd, int peer, bs_addr *out);

ssize_t bs_udp_send(int fd, const void *p, size_t n, const bs_addr *to);
/* Sends msgs in order; returns how many were sent (> 0), or -errno when the first one failed. */
int bs_udp_send_many(int fd, const bs_udp_out *msgs, int n);
/* Receives up to n datagrams; returns how many (> 0), or -errno (-EAGAIN: none waiting). */
int bs_udp_recv_many(int fd, bs_udp_in *slots, int n);

int bs_udp_set_broadcast(int fd, int on);
int bs_udp_set_ttl(int fd, int family, int ttl);
int bs_udp_set_multicast_ttl(int fd, int family, int ttl);
int bs_udp_set_multicast_loopback(int fd, int family, int on);
/* The interface multicast datagrams leave by: IPv4 - its address; IPv6 - a name or index. */
int bs_udp_set_multicast_interface(int fd, int family, const char *iface);
/* Join (add=1) or leave a multicast group.  iface: IPv4 - the local interface address (NULL: any);
 * IPv6 - an interface name or index (NULL: any). */
int bs_udp_membership(int fd, int family, int add, const char *group, const char *iface);

#endif
