#include "poller.h"

#ifdef BS_POLLER_KQUEUE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/event.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

int bs_poller_open(bs_poller *p, int max_events) {
    p->fd = kqueue();
    if (p->fd < 0) return -errno;
    /* kqueue() has no CLOEXEC flag on every BSD; a forked worker must not inherit the queue. */
    (void)fcntl(p->fd, F_SETFD, FD_CLOEXEC);
    p->cap = max_events;
    p->raw = calloc((size_t)max_events, sizeof(struct kevent));
    if (!p->raw) {
        close(p->fd);
        p->fd = -1;
        errno = ENOMEM;
        return -ENOMEM;
    }
    return 0;
}

void bs_poller_close(bs_poller *p) {
    if (p->fd >= 0) close(p->fd);
    p->fd = -1;
    free(p->raw);
    p->raw = NULL;
}

/* kqueue keeps one filter per direction, so a mask change is up to two separate changes. */
static int apply(bs_poller *p, int fd, void *ptr, uint32_t old, uint32_t mask) {
    struct kevent ch[2];
    int n = 0;
    if ((old ^ mask) & BS_READABLE)
        EV_SET(&ch[n++], fd, EVFILT_READ, (mask & BS_READABLE) ? EV_ADD : EV_DELETE, 0, 0, ptr);
    if ((old ^ mask) & BS_WRITABLE)
        EV_SET(&ch[n++], fd, EVFILT_WRITE, (mask & BS_WRITABLE) ? EV_ADD : EV_DELETE, 0, 0, ptr);
    if (n == 0) return 0;
    return kevent(p->fd, ch, n, NULL, 0, NULL) < 0 ? -errno : 0;
}

int bs_poller_add(bs_poller *p, int fd, void *ptr, uint32_t mask) { return apply(p, fd, ptr, 0, mask); }

int bs_poller_mod(bs_poller *p, int fd, void *ptr, uint32_t old, uint32_t mask) {
    return apply(p, fd, ptr, old, mask);
}

int bs_poller_del(bs_poller *p, int fd, uint32_t old) { return apply(p, fd, NULL, old, 0); }

int bs_poller_wait(bs_poller *p, bs_event *out, int timeout_ms) {
    struct kevent *raw = (struct kevent *)p->raw;
    struct timespec ts, *tsp = NULL;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    int n = kevent(p->fd, NULL, 0, raw, p->cap, tsp);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) {
        uint32_t m = raw[i].filter == EVFILT_WRITE ? BS_WRITABLE : BS_READABLE;
        /* EV_EOF is kqueue's hang-up: on the write filter the socket can send no more (peer reset,
         * failed connect; fflags holds the socket error), on the read filter the peer sent FIN
         * (buffered data is still there: the read returns it, then 0). Either way it is reported
         * as epoll reports EPOLLHUP/EPOLLERR, folded into both directions (poller.h): the next
         * read or write then tells what happened, and a paused socket that gets a stale one
         * keeps its write interest (the loop only steps a socket out on HUP with nothing to
         * write). */
        if (raw[i].flags & (EV_ERROR | EV_EOF)) m |= BS_READABLE | BS_WRITABLE | BS_HANGUP;
        out[i].ptr = raw[i].udata;
        out[i].mask = m;
    }
    return n;
}

const char *bs_poller_name(void) { return "kqueue"; }

#endif
