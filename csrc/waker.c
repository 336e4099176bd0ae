#include "waker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

int bs_waker_open(bs_waker *w) {
#ifdef __linux__
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return -errno;
    w->rfd = w->wfd = fd;
#else
    int p[2];
    if (pipe(p) < 0) return -errno;
    for (int i = 0; i < 2; i++) {
        if (fcntl(p[i], F_SETFL, O_NONBLOCK) < 0 || fcntl(p[i], F_SETFD, FD_CLOEXEC) < 0) {
            int e = errno;
            close(p[0]);
            close(p[1]);
            return -e;
        }
    }
    w->rfd = p[0];
    w->wfd = p[1];
#endif
    return 0;
}

void bs_waker_close(bs_waker *w) {
    if (w->rfd >= 0) close(w->rfd);
    if (w->wfd >= 0 && w->wfd != w->rfd) close(w->wfd);
    w->rfd = w->wfd = -1;
}

/* A full pipe or a saturated eventfd already means "wake up": EAGAIN is success here. */
void bs_waker_signal(const bs_waker *w) {
    uint64_t one = 1;
    ssize_t r;
    do r = write(w->wfd, &one, w->rfd == w->wfd ? sizeof one : 1);
    while (r < 0 && errno == EINTR);
}

void bs_waker_drain(const bs_waker *w) {
    char buf[64];
    ssize_t r;
    do r = read(w->rfd, buf, sizeof buf);
    while (r > 0 || (r < 0 && errno == EINTR));
}
