/* One readiness-poller interface; the backend is picked once, here, by platform.
 * Events come back in a neutral {ptr, mask} array so the dispatcher never sees epoll or kqueue. */
#ifndef BS_POLLER_H
#define BS_POLLER_H

#include <stdint.h>

#if defined(__linux__)
#define BS_POLLER_EPOLL 1
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || \
    defined(__DragonFly__) || defined(BS_FORCE_KQUEUE)
#define BS_POLLER_KQUEUE 1
#else
#error "bunsock needs epoll or kqueue"
#endif

#define BS_READABLE 1u
#define BS_WRITABLE 2u
/* Error or hang-up.  It is also folded into READABLE|WRITABLE (as redis's ae does) so the next read or
 * write reports the errno; the separate bit lets a paused socket notice it must deregister, since a
 * level-triggered HUP would otherwise be reported on every wait. */
#define BS_HANGUP 4u

typedef struct bs_event {
    void *ptr;
    uint32_t mask;
} bs_event;

typedef struct bs_poller {
    int fd;
    int cap;      /* capacity of raw and out */
    void *raw;    /* backend event array */
} bs_poller;

/* All return 0 (or a count) on success and -errno on failure, like the rest of the C core. */
int bs_poller_open(bs_poller *p, int max_events);
void bs_poller_close(bs_poller *p);
/* `old` is the mask currently registered: kqueue keeps one filter per direction and must be told
 * which to add or delete; epoll ignores it. */
int bs_poller_add(bs_poller *p, int fd, void *ptr, uint32_t mask);
int bs_poller_mod(bs_poller *p, int fd, void *ptr, uint32_t old, uint32_t mask);
int bs_poller_del(bs_poller *p, int fd, uint32_t old);
/* Waits up to timeout_ms (-1 forever) and fills out[0..n). May return -EINTR. */
int bs_poller_wait(bs_poller *p, bs_event *out, int timeout_ms);
const char *bs_poller_name(void);

#endif
