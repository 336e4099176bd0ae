/* Kernel pipes and splice(2) for the relay: bytes move socket -> pipe -> socket inside the kernel,
 * never copied into the process. Linux only; elsewhere every call returns -ENOSYS and the relay
 * uses its buffered path. Same convention as net.h: >= 0 on success, -errno on failure. */
#ifndef BS_SPLICE_H
#define BS_SPLICE_H

#include <stddef.h>
#include <sys/types.h>

/* 1 where splice() exists (Linux), else 0. */
int bs_splice_supported(void);
/* A non-blocking, close-on-exec pipe; fds[0] reads, fds[1] writes. size > 0 asks the kernel for
 * that capacity (F_SETPIPE_SZ, best effort). Returns the pipe's capacity in bytes, or -errno. */
int bs_pipe_open(int fds[2], int size);
/* Move up to n bytes from fd_in to fd_out, one of which is a pipe, without blocking on the pipe.
 * Returns the bytes moved (0: end of input), -EAGAIN when nothing can move now, or -errno. */
ssize_t bs_splice(int fd_in, int fd_out, size_t n);
/* Bytes waiting in a pipe (FIONREAD), or -errno. */
ssize_t bs_pipe_pending(int rfd);

#endif
