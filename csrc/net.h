/* Socket system calls for the loop: errno in, errno out.  Every function returns >= 0 on success
 * and -errno on failure, so the Cython side can turn any failure into the right OSError subclass
 * without reading a thread-global errno after other calls may have clobbered it. */
#ifndef BS_NET_H
#define BS_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Address family codes shared with Python (bunsock._loop exports them to the Python layer). */
#define BS_AF_INET 4
#define BS_AF_INET6 6
#define BS_AF_UNIX 1

/* Each takes the caller's options (sockopt.h: TCP_FASTOPEN, IP_FREEBIND, SO_MARK, buffer sizes...),
 * applied after bunsock's own and before bind() or connect(); opts may be NULL when nopts is 0. */
struct bs_sockopt;
int bs_listen_tcp(int family, const char *ip, int port, int backlog, int reuse_port, int ipv6_only,
                  const struct bs_sockopt *opts, int nopts);
/* path[0] == '\0' is a Linux abstract name of pathlen bytes (no file, nothing to unlink). */
int bs_listen_unix(const char *path, size_t pathlen, int backlog, const struct bs_sockopt *opts,
                   int nopts);
int bs_accept(int lfd);
/* Starts a non-blocking connect.  Returns the fd; *in_progress is 1 when the kernel has not finished
 * (wait for writability, then read bs_socket_error).  local_ip may be NULL, local_port 0. */
int bs_connect_tcp(int family, const char *ip, int port, const char *local_ip, int local_port,
                   const struct bs_sockopt *opts, int nopts, int *in_progress);
/* A unix connect never completes later: *in_progress is always 0; a full backlog is -EAGAIN. */
int bs_connect_unix(const char *path, size_t pathlen, const struct bs_sockopt *opts, int nopts,
                    int *in_progress);
int bs_socket_error(int fd);

int bs_set_nodelay(int fd, int on);
int bs_set_linger0(int fd);
int bs_shutdown(int fd, int how_read);
/* Local or peer address as text.  Returns the family code (0 when the fd is not a socket the loop
 * knows) and fills ip (INET6_ADDRSTRLEN bytes at least) and *port; a unix socket gives BS_AF_UNIX and
 * an empty string (its path is known to the caller). */
int bs_sockname(int fd, int peer, char *out, size_t outlen, int *port);
int bs_local_port(int fd);

struct sockaddr_storage;
/* An IP literal (IPv6 with an optional %scope) and port as a sockaddr (udp.c sends to these). */
int bs_fill_inet(int family, const char *ip, int port, struct sockaddr_storage *ss, unsigned *len);
/* SO_REUSEPORT (when asked; -ENOPROTOOPT where the platform lacks it) and IPV6_V6ONLY on an
 * AF_INET6 socket, before bind(); shared by TCP listeners and UDP sockets. 0 or -errno. */
int bs_set_bind_opts(int fd, int family, int reuse_port, int ipv6_only);

ssize_t bs_send(int fd, const void *p, size_t n);
ssize_t bs_sendv(int fd, const struct iovec *iov, int iovcnt);
ssize_t bs_recv(int fd, void *p, size_t n);

#endif
