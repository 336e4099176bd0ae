/* Ring-buffer byte sink: the bytes the kernel has not accepted yet (per socket), and the storage
 * behind ArrayBufferSink. No Python objects. Not thread-safe (one loop thread owns it). */
#ifndef BUNSOCK_SINK_H
#define BUNSOCK_SINK_H

#include <stddef.h>
#include <sys/uio.h>

/* Storage above this is released once the sink has drained BS_SINK_LULL times in a row without
 * needing more than this (hysteresis): one burst does not pin memory for the life of an otherwise
 * quiet connection, and a sink under sustained backpressure (a proxy towards a slow reader) keeps
 * its capacity instead of regrowing 16 KiB -> 2 MiB, recopying at each doubling, every episode. */
#define BS_SINK_KEEP (64u * 1024u)
#define BS_SINK_LULL 8u
/* First allocation: small enough for 100k idle-ish sockets, big enough that a typical reply
 * never needs a second one. */
#define BS_SINK_MIN (16u * 1024u)

typedef struct bs_sink {
    char *buf;   /* NULL while the sink has never held data: an idle socket costs nothing */
    size_t cap;  /* bytes of storage */
    size_t head; /* offset of the first pending byte */
    size_t len;  /* pending bytes */
    unsigned lull; /* drains in a row since more than BS_SINK_KEEP was last needed */
} bs_sink;

void bs_sink_init(bs_sink *s);
void bs_sink_free(bs_sink *s);
/* Ensure room for `extra` more bytes: 0, or -ENOMEM (sink unchanged). */
int bs_sink_reserve(bs_sink *s, size_t extra);
/* 0, or -ENOMEM and nothing appended. */
int bs_sink_append(bs_sink *s, const void *p, size_t n);
/* The pending bytes in order as 0, 1 or 2 iovecs (ready for writev); returns the count. */
int bs_sink_iov(const bs_sink *s, struct iovec iov[2]);
/* Drop n (<= len) bytes from the front. On becoming empty head resets to 0, and storage larger
 * than BS_SINK_KEEP is freed on the BS_SINK_LULL-th drain in a row that never needed it. */
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
