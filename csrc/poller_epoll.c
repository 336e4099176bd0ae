#include "poller.h"

#ifdef BS_POLLER_EPOLL
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

int bs_poller_open(bs_poller *p, int max_events) {
    p->fd = epoll_create1(EPOLL_CLOEXEC);
    if (p->fd < 0) return -errno;
    p->cap = max_events;
    p->raw = calloc((size_t)max_events, sizeof(struct epoll_event));
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

/* Level-triggered on purpose: a socket whose read budget ran out, or that still has unread bytes,
 * is simply reported again, so fairness needs no bookkeeping of our own. */
static uint32_t to_epoll(uint32_t mask) {
    return ((mask & BS_READABLE) ? EPOLLIN : 0) | ((mask & BS_WRITABLE) ? EPOLLOUT : 0);
}

static int ctl(bs_poller *p, int op, int fd, void *ptr, uint32_t mask) {
    struct epoll_event ev;
    ev.events = to_epoll(mask);
    ev.data.ptr = ptr;
    return epoll_ctl(p->fd, op, fd, &ev) < 0 ? -errno : 0;
}

int bs_poller_add(bs_poller *p, int fd, void *ptr, uint32_t mask) {
    return ctl(p, EPOLL_CTL_ADD, fd, ptr, mask);
}

int bs_poller_mod(bs_poller *p, int fd, void *ptr, uint32_t old, uint32_t mask) {
    (void)old;
    return ctl(p, EPOLL_CTL_MOD, fd, ptr, mask);
}

int bs_poller_del(bs_poller *p, int fd, uint32_t old) {
    /* Kernels before 2.6.9 insisted on a non-NULL event even for DEL. */
    struct epoll_event ev = {0};
    (void)old;
    return epoll_ctl(p->fd, EPOLL_CTL_DEL, fd, &ev) < 0 ? -errno : 0;
}

int bs_poller_wait(bs_poller *p, bs_event *out, int timeout_ms) {
    struct epoll_event *raw = (struct epoll_event *)p->raw;
    int n = epoll_wait(p->fd, raw, p->cap, timeout_ms);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) {
        uint32_t e = raw[i].events, m = 0;
        if (e & EPOLLIN) m |= BS_READABLE;
        if (e & EPOLLOUT) m |= BS_WRITABLE;
        if (e & (EPOLLERR | EPOLLHUP)) m |= BS_READABLE | BS_WRITABLE | BS_HANGUP;
        out[i].ptr = raw[i].data.ptr;
        out[i].mask = m;
    }
    return n;
}

const char *bs_poller_name(void) { return "epoll"; }

#endif
