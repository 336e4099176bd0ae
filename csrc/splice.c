#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* splice(), F_SETPIPE_SZ, pipe2() */
#endif
#include "splice.h"

#include <errno.h>

#ifdef __linux__
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

int bs_splice_supported(void) { return 1; }

int bs_pipe_open(int fds[2], int size) {
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno;
    /* A larger pipe means fewer splice calls per megabyte; the kernel may refuse (over
     * /proc/sys/fs/pipe-max-size, or the user's pipe quota): the default capacity still works. */
    if (size > 0)
        (void)fcntl(fds[1], F_SETPIPE_SZ, size);
    int cap = fcntl(fds[1], F_GETPIPE_SZ);
    if (cap < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return -e;
    }
    return cap;
}

ssize_t bs_splice(int fd_in, int fd_out, size_t n) {
    ssize_t r;
    /* SPLICE_F_MOVE is only a hint; SPLICE_F_NONBLOCK keeps the pipe side from blocking (the
     * sockets are non-blocking already). */
    do r = splice(fd_in, NULL, fd_out, NULL, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

ssize_t bs_pipe_pending(int rfd) {
    int n = 0;
    if (ioctl(rfd, FIONREAD, &n) < 0)
        return -errno;
    return n;
}

#else

int bs_splice_supported(void) { return 0; }

int bs_pipe_open(int fds[2], int size) {
    (void)size;
    fds[0] = fds[1] = -1;
    return -ENOSYS;
}

ssize_t bs_splice(int fd_in, int fd_out, size_t n) {
    (void)fd_in;
    (void)fd_out;
    (void)n;
    return -ENOSYS;
}

ssize_t bs_pipe_pending(int rfd) {
    (void)rfd;
    return -ENOSYS;
}

#endif
