/* The floor for benchmarks/framing_bench.py: a single-threaded epoll server that cuts each read
 * into messages with bunsock's own C scanner (csrc/framing.c) and echoes every message as a
 * frame of the same rule, all the replies to one read in one send.
 *
 *   framing_c length|lines [PORT]      (the bound port is printed on stdout)
 *
 * length: 4-byte big-endian length prefix; lines: "\n"-terminated. max_size 1 MiB / 64 KiB, as
 * bunsock's defaults. A partial frame is held per connection; when the kernel refuses part of a
 * reply, reading pauses until it is sent (memory stays bounded).
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
#include <sys/socket.h>
#include <unistd.h>

#include "framing.h"

#define BUF (256 * 1024)

typedef struct {
    int fd;
    bs_frame_buf held;
    char *out; /* replies not sent yet */
    size_t off, len, cap;
} conn;

static int ep;
static char buf[BUF];
static bs_frame_rule rule;

static void drop(conn *c) {
    close(c->fd);
    bs_fbuf_free(&c->held);
    free(c->out);
    free(c);
}

static int watch(conn *c, int op, unsigned events) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = c;
    return epoll_ctl(ep, op, c->fd, &ev);
}

static int reply(conn *c, const char *m, size_t n) {
    unsigned char h[8];
    size_t need = n + 8 + 1;
    int hs;
    if (c->cap - c->len < need) {
        size_t cap = c->cap ? c->cap : 4096;
        char *nb;
        while (cap - c->len < need)
            cap *= 2;
        nb = realloc(c->out, cap);
        if (!nb)
            return -1;
        c->out = nb;
        c->cap = cap;
    }
    hs = bs_frame_header(&rule, n, h);
    memcpy(c->out + c->len, h, (size_t)hs);
    memcpy(c->out + c->len + hs, m, n);
    c->len += (size_t)hs + n;
    if (rule.kind == BS_FRAME_LINES)
        c->out[c->len++] = '\n';
    return 0;
}

/* Send what is queued: 1 when all went, 0 when the kernel refused some, -1 on error. */
static int flush(conn *c) {
    while (c->off < c->len) {
        ssize_t w = send(c->fd, c->out + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return 0;
        if (w < 0)
            return -1;
        c->off += (size_t)w;
    }
    c->off = c->len = 0;
    return 1;
}

static int frames(conn *c, const char *p, size_t n) {
    bs_frame f;
    size_t pos = 0;
    int k;
    if (bs_fbuf_pending(&c->held)) {
        ssize_t t = bs_frame_complete(&rule, &c->held, p, n);
        if (t < 0)
            return -1;
        pos = (size_t)t;
        k = bs_frame_find(&rule, c->held.buf + c->held.head, bs_fbuf_pending(&c->held),
                          c->held.scanned, &f);
        if (k < 0)
            return -1;
        if (k == 0) {
            c->held.scanned = f.consumed;
            return 0;
        }
        if (reply(c, c->held.buf + c->held.head + f.off, f.len) < 0)
            return -1;
        bs_fbuf_consume(&c->held, f.consumed);
    }
    for (;;) {
        k = bs_frame_find(&rule, p + pos, n - pos, 0, &f);
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        if (reply(c, p + pos + f.off, f.len) < 0)
            return -1;
        pos += f.consumed;
    }
    if (pos < n) {
        if (bs_fbuf_append(&c->held, p + pos, n - pos) < 0)
            return -1;
        c->held.scanned = f.consumed;
    }
    return 0;
}

static int on_read(conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        int r;
        if (n == 0)
            return -1;
        if (n < 0)
            return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        if (frames(c, buf, (size_t)n) < 0)
            return -1;
        r = flush(c);
        if (r < 0)
            return -1;
        if (r == 0)
            return watch(c, EPOLL_CTL_MOD, EPOLLOUT);
        if ((size_t)n < sizeof buf)
            return 0;
    }
}

int main(int argc, char **argv) {
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    struct epoll_event evs[512];
    int lfd, one = 1, port = argc > 2 ? atoi(argv[2]) : 0;
    memset(&rule, 0, sizeof rule);
    if (argc > 1 && strcmp(argv[1], "lines") == 0) {
        rule.kind = BS_FRAME_LINES;
        rule.delim = "\n";
        rule.dlen = 1;
        rule.max_size = 65536;
    } else {
        rule.kind = BS_FRAME_LENGTH;
        rule.hsize = 4;
        rule.max_size = 1 << 20;
    }
    signal(SIGPIPE, SIG_IGN);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)port);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    getsockname(lfd, (struct sockaddr *)&a, &al);
    printf("port %d\n", ntohs(a.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    {
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.ptr = NULL;
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    }
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1), i;
        for (i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    c = calloc(1, sizeof *c);
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    watch(c, EPOLL_CTL_ADD, EPOLLIN);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                int r = flush(c);
                if (r < 0)
                    drop(c);
                else if (r == 1)
                    watch(c, EPOLL_CTL_MOD, EPOLLIN);
                continue;
            }
            if (on_read(c) < 0)
                drop(c);
        }
    }
}
