#include "sink.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The ring's shape, checked after every change in debug builds (NDEBUG unset). */
#define BS_SINK_CHECK(s)                                                                   \
    do {                                                                                   \
        assert((s)->len <= (s)->cap);                                                      \
        assert((s)->cap == 0 ? (s)->head == 0 : (s)->head < (s)->cap);                     \
        assert(((s)->buf == NULL) == ((s)->cap == 0));                                     \
    } while (0)

void bs_sink_init(bs_sink *s) {
    s->buf = NULL;
    s->cap = s->head = s->len = 0;
    s->wide = 0;
}

void bs_sink_free(bs_sink *s) {
    free(s->buf);
    bs_sink_init(s);
}

/* Copy the pending bytes, in order, to dst (which has room for len). */
static void copy_out(const bs_sink *s, char *dst) {
    size_t first = s->cap - s->head;
    if (first >= s->len) {
        memcpy(dst, s->buf + s->head, s->len);
    } else {
        memcpy(dst, s->buf + s->head, first);
        memcpy(dst + first, s->buf, s->len - first);
    }
}

/* Move to a fresh buffer of `cap` bytes with the data at offset 0. realloc() is no use here: it
 * would keep a wrapped layout wrapped, and when the pending data is small it copies dead bytes. */
static int regrow(bs_sink *s, size_t cap) {
    char *nb = malloc(cap);
    if (nb == NULL) {
        errno = ENOMEM;
        return -ENOMEM;
    }
    if (s->len)
        copy_out(s, nb);
    free(s->buf);
    s->buf = nb;
    s->cap = cap;
    s->head = 0;
    return 0;
}

int bs_sink_reserve(bs_sink *s, size_t extra) {
    if (extra > BS_SINK_KEEP - (s->len < BS_SINK_KEEP ? s->len : BS_SINK_KEEP))
        s->wide = 1; /* len + extra > KEEP: the large storage is needed now */
    if (s->cap - s->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - s->len) { /* keeps the doubling below from wrapping */
        errno = ENOMEM;
        return -ENOMEM;
    }
    size_t need = s->len + extra;
    size_t cap = s->cap < BS_SINK_MIN ? BS_SINK_MIN : s->cap;
    while (cap < need)
        cap *= 2; /* need <= SIZE_MAX/2, so cap stays below SIZE_MAX */
    return regrow(s, cap);
}

/* Offset where the next byte goes; only meaningful with cap > 0. */
static size_t tail_off(const bs_sink *s) {
    size_t t = s->head + s->len; /* head < cap and len <= cap: no overflow below 2*cap */
    return t >= s->cap ? t - s->cap : t;
}

int bs_sink_append(bs_sink *s, const void *p, size_t n) {
    if (n == 0)
        return 0;
    int r = bs_sink_reserve(s, n);
    if (r < 0)
        return r;
    size_t t = tail_off(s);
    size_t first = s->cap - t;
    if (first >= n) {
        memcpy(s->buf + t, p, n);
    } else {
        memcpy(s->buf + t, p, first);
        memcpy(s->buf, (const char *)p + first, n - first);
    }
    s->len += n;
    BS_SINK_CHECK(s);
    return 0;
}

int bs_sink_iov(const bs_sink *s, struct iovec iov[2]) {
    if (s->len == 0)
        return 0;
    size_t first = s->cap - s->head;
    iov[0].iov_base = s->buf + s->head;
    if (first >= s->len) {
        iov[0].iov_len = s->len;
        return 1;
    }
    iov[0].iov_len = first;
    iov[1].iov_base = s->buf;
    iov[1].iov_len = s->len - first;
    return 2;
}

static void emptied(bs_sink *s) {
    s->head = 0;
}

void bs_sink_consume(bs_sink *s, size_t n) {
    assert(n <= s->len); /* debug builds: consuming more than is pending is a caller bug */
    if (n == 0)
        return; /* not "emptied": that would drop a reservation made on an empty sink */
    if (n >= s->len) { /* release builds: draining is the least harmful reading */
        s->len = 0;
        emptied(s);
        return;
    }
    s->len -= n;
    s->head += n;
    if (s->head >= s->cap)
        s->head -= s->cap;
    BS_SINK_CHECK(s);
}

char *bs_sink_linearize(bs_sink *s) {
    if (s->len == 0)
        return s->buf; /* an empty sink always has head == 0, and buf may be NULL */
    if (s->head + s->len <= s->cap)
        return s->buf + s->head;
    size_t a = s->cap - s->head;  /* front part, stored at the end of buf */
    size_t b = s->len - a;        /* back part, stored at the start */
    if (s->cap - s->len >= a) {
        /* The gap between the parts fits the front part: rotate in place, no allocation. The
         * back part slides up to [a, len) which ends at or before head, so it never overlaps the
         * front part; the front part then lands in [0, a), also clear of it. */
        memmove(s->buf + a, s->buf, b);
        memcpy(s->buf, s->buf + s->head, a);
        s->head = 0;
        return s->buf;
    }
    if (regrow(s, s->cap) < 0)
        return NULL;
    return s->buf;
}

char *bs_sink_extend(bs_sink *s, size_t n) {
    if (bs_sink_reserve(s, n) < 0)
        return NULL;
    if (s->buf == NULL) { /* n == 0 on a sink without storage: nothing to point at */
        errno = EINVAL;
        return NULL;
    }
    size_t t = tail_off(s);
    if (t < s->head || s->cap - t >= n) {
        /* Wrapped data leaves one contiguous gap [t, head) of cap - len >= n bytes; otherwise the
         * room at the end suffices. */
        s->len += n;
        return s->buf + t;
    }
    /* The free space is split around the data: slide the data to the start so it is not. */
    memmove(s->buf, s->buf + s->head, s->len);
    s->head = 0;
    char *p = s->buf + s->len;
    s->len += n;
    return p;
}

void bs_sink_truncate(bs_sink *s, size_t newlen) {
    if (newlen >= s->len)
        return;
    s->len = newlen;
    if (newlen == 0)
        emptied(s);
}
