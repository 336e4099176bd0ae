/* Ring-buffer byte sink: the bytes the kernel has not accepted yet (per socket), and the storage
 * behind ArrayBufferSink. No Python objects. Not thread-safe (one loop thread owns it). */
#ifndef BUNSOCK_SINK_H
#define BUNSOCK_SINK_H

#include <stddef.h>
#include <sys/uio.h>

/* The sink never gives storage back by itself: when to release it is its owner's policy (a
 * socket's: the write room's sweep, src/bunsock/_sock_write.pxi). The sink only records whether
 * it needed more than BS_SINK_KEEP (`wide`) so the owner can tell a busy sink from an idle one. */
#define BS_SINK_KEEP (64u * 1024u)
/* First allocation: small enough for 100k idle-ish sockets, big enough that a typical reply
 * never needs a second one. */
#define BS_SINK_MIN (16u * 1024u)

typedef struct bs_sink {
    char *buf;   /* NULL while the sink has never held data: an idle socket costs nothing */
    size_t cap;  /* bytes of storage */
    size_t head; /* offset of the first pending byte */
    size_t len;  /* pending bytes */
    unsigned wide; /* set when len + a reservation exceeded BS_SINK_KEEP; the owner clears it */
} bs_sink;

void bs_sink_init(bs_sink *s);
void bs_sink_free(bs_sink *s);
/* Ensure room for `extra` more bytes: 0, or -ENOMEM (sink unchanged). */
int bs_sink_reserve(bs_sink *s, size_t extra);
/* 0, or -ENOMEM and nothing appended. */
int bs_sink_append(bs_sink *s, const void *p, size_t n);
/* The pending bytes in order as 0, 1 or 2 iovecs (ready for writev); returns the count. */
int bs_sink_iov(const bs_sink *s, struct iovec iov[2]);
/* Drop n (<= len) bytes from the front. On becoming empty head resets to 0; the storage stays. */
void bs_sink_consume(bs_sink *s, size_t n);
/* Make the pending bytes contiguous; pointer to the first. NULL only on ENOMEM; for an empty
 * sink returns buf (possibly NULL). */
char *bs_sink_linearize(bs_sink *s);

/* Additions beyond the fixed interface. */

/* Grow len by n and return a pointer to the n new, uninitialised, contiguous bytes at the tail
 * (for recv()/PyBuffer_ToContiguous straight into the sink). NULL with errno = ENOMEM, sink
 * unchanged. n == 0 on a sink that has no storage yet gives NULL with errno = EINVAL. */
char *bs_sink_extend(bs_sink *s, size_t n);
/* Drop bytes from the tail so that len == newlen (<= len): undoes a bs_sink_extend whose fill
 * failed or was short. */
void bs_sink_truncate(bs_sink *s, size_t newlen);

static inline size_t bs_sink_len(const bs_sink *s) { return s->len; }

#endif
