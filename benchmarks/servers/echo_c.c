/* The floor: a minimal single-threaded epoll echo server in C.
 *
 *   echo_c [PORT]      (0 or absent: any free port; the bound port is printed on stdout)
 *
 * Read into one buffer, send it straight back. When the kernel takes only part of it, the rest
 * is kept for that connection and reading pauses until it is sent, which is the least any real
 * server must do (it bounds memory when the peer does not read).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (256 * 1024)

typedef struct {
    int fd;
    char *pending; /* unsent tail of the last read, NULL when none */
    size_t off, len;
} conn;

static int ep;
static char buf[BUF];

static void drop(conn *c)
{
    close(c->fd); /* also removes it from the epoll set */
    free(c->pending);
    free(c);
}

static int watch(conn *c, int op, unsigned events)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = c;
    return epoll_ctl(ep, op, c->fd, &ev);
}

/* Returns -1 when the connection is gone. */
static int flush(conn *c)
{
    while (c->off < c->len) {
        ssize_t w = send(c->fd, c->pending + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return 0;
        if (w < 0)
            return -1;
        c->off += (size_t)w;
    }
    free(c->pending);
    c->pending = NULL;
    c->off = c->len = 0;
    return watch(c, EPOLL_CTL_MOD, EPOLLIN);
}

static int on_read(conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0), w = 0;
        if (n == 0)
            return -1;
        if (n < 0)
            return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        while (w < n) {
            ssize_t k = send(c->fd, buf + w, (size_t)(n - w), MSG_NOSIGNAL);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0 && errno != EAGAIN)
                return -1;
            if (k < 0)
                break;
            w += k;
        }
        if (w < n) {
            c->len = (size_t)(n - w);
            c->off = 0;
            c->pending = malloc(c->len);
            if (!c->pending)
                return -1;
            memcpy(c->pending, buf + w, c->len);
            return watch(c, EPOLL_CTL_MOD, EPOLLOUT);
        }
        if (n < (ssize_t)sizeof buf)
            return 0;
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    struct epoll_event evs[256];
    struct rlimit rl;
    int lfd, one = 1;

    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { /* 10,000 idle connections need more than 1024 */
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)(argc > 1 ? atoi(argv[1]) : 0));
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0) {
        perror("echo_c: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    {
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.ptr = NULL; /* NULL marks the listening socket */
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) {
            perror("echo_c: epoll");
            return 1;
        }
    }
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    for (;;) {
        int i, n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("echo_c: epoll_wait");
            return 1;
        }
        for (i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    conn *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if (watch(nc, EPOLL_CTL_ADD, EPOLLIN) != 0)
                        drop(nc);
                }
                continue;
            }
            if ((c->pending ? flush(c) : on_read(c)) < 0)
                drop(c);
        }
    }
}
