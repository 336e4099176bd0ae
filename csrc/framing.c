/* Message framing (framing.h). Scanning works on the caller's buffer in place: a read holding a
 * thousand frames costs a thousand scans and no copy; only the frame cut by the end of a read is
 * copied, into the per-stream bs_frame_buf, and only up to the bytes that complete it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "framing.h"

#include <stdlib.h>
#include <string.h>
#if defined(__APPLE__)
#include <libkern/OSByteOrder.h>
#define htobe16 OSSwapHostToBigInt16
#define htole16 OSSwapHostToLittleInt16
#define be16toh OSSwapBigToHostInt16
#define le16toh OSSwapLittleToHostInt16
#define htobe32 OSSwapHostToBigInt32
#define htole32 OSSwapHostToLittleInt32
#define be32toh OSSwapBigToHostInt32
#define le32toh OSSwapLittleToHostInt32
#define htobe64 OSSwapHostToBigInt64
#define htole64 OSSwapHostToLittleInt64
#define be64toh OSSwapBigToHostInt64
#define le64toh OSSwapLittleToHostInt64
#elif defined(__linux__)
#include <endian.h>
#else
#include <sys/endian.h>
#endif

/* A held buffer that grew past this is freed once it empties: a peer that once sent a large
 * message does not pin that much memory per connection for the rest of its life. */
#define FBUF_KEEP (64u * 1024u)
#define FBUF_MIN 1024u

/* Fixed sizes, so the compiler turns each case into one load and a byte swap. */
static uint64_t read_len(const bs_frame_rule *r, const unsigned char *h) {
    uint16_t v2;
    uint32_t v4;
    uint64_t v8;
    switch (r->hsize) {
    case 1:
        return h[0];
    case 2:
        memcpy(&v2, h, 2);
        return r->little ? le16toh(v2) : be16toh(v2);
    case 4:
        memcpy(&v4, h, 4);
        return r->little ? le32toh(v4) : be32toh(v4);
    default:
        memcpy(&v8, h, 8);
        return r->little ? le64toh(v8) : be64toh(v8);
    }
}

/* The payload size the header declares, or an error. */
static int64_t payload_len(const bs_frame_rule *r, const unsigned char *h) {
    uint64_t v = read_len(r, h);
    if (r->includes_header) {
        if (v < (uint64_t)r->hsize)
            return BS_FRAME_ESHORT;
        v -= (uint64_t)r->hsize;
    }
    if (v > r->max_size)
        return BS_FRAME_ETOOBIG;
    return (int64_t)v;
}

static const char *find_delim(const bs_frame_rule *r, const char *p, size_t n) {
    if (r->dlen == 1)
        return memchr(p, (unsigned char)r->delim[0], n);
    return memmem(p, n, r->delim, r->dlen);
}

/* Lines: no delimiter in p[0, n). The line is at least n - (dlen - 1) bytes long (a delimiter
 * may have begun in the last dlen - 1 bytes): past max_size it can never be valid. */
static int line_too_long(const bs_frame_rule *r, size_t n) {
    return n >= r->dlen && n - (r->dlen - 1) > r->max_size;
}

int bs_frame_find(const bs_frame_rule *r, const char *p, size_t n, size_t from, bs_frame *out) {
    if (r->kind == BS_FRAME_LENGTH) {
        size_t h = (size_t)r->hsize;
        int64_t m;
        out->consumed = 0;
        if (n < h)
            return 0;
        m = payload_len(r, (const unsigned char *)p);
        if (m < 0)
            return (int)m;
        if (n - h < (uint64_t)m)
            return 0;
        out->off = h;
        out->len = (size_t)m;
        out->consumed = h + (size_t)m;
        return 1;
    } else {
        const char *d;
        size_t at;
        if (from > n)
            from = n;
        d = find_delim(r, p + from, n - from);
        if (d == NULL) {
            if (line_too_long(r, n))
                return BS_FRAME_ETOOBIG;
            out->consumed = n >= r->dlen ? n - (r->dlen - 1) : 0;
            return 0;
        }
        at = (size_t)(d - p);
        if (at > r->max_size)
            return BS_FRAME_ETOOBIG;
        out->off = 0;
        out->len = r->keep_delim ? at + r->dlen : at;
        out->consumed = at + r->dlen;
        return 1;
    }
}

void bs_fbuf_init(bs_frame_buf *b) { memset(b, 0, sizeof(*b)); }

void bs_fbuf_free(bs_frame_buf *b) {
    free(b->buf);
    bs_fbuf_init(b);
}

int bs_fbuf_append(bs_frame_buf *b, const char *p, size_t n) {
    if (n == 0)
        return 0;
    if (b->cap - b->len < n) {
        size_t pending = b->len - b->head, need = pending + n, cap;
        char *nb;
        if (need < pending)
            return BS_FRAME_ENOMEM; /* overflow */
        if (b->head && need <= b->cap) {
            bs_fbuf_compact(b);
        } else {
            cap = b->cap ? b->cap : FBUF_MIN;
            while (cap < need) {
                if (cap > ((size_t)-1) / 2) {
                    cap = need;
                    break;
                }
                cap *= 2;
            }
            if (b->head == 0) {
                nb = realloc(b->buf, cap);
                if (nb == NULL)
                    return BS_FRAME_ENOMEM;
            } else {
                nb = malloc(cap);
                if (nb == NULL)
                    return BS_FRAME_ENOMEM;
                memcpy(nb, b->buf + b->head, pending);
                free(b->buf);
                b->len = pending;
                b->head = 0;
            }
            b->buf = nb;
            b->cap = cap;
        }
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

void bs_fbuf_consume(bs_frame_buf *b, size_t n) {
    b->head += n;
    b->scanned = 0;
    if (b->head >= b->len) {
        b->head = b->len = 0;
        if (b->cap > FBUF_KEEP) {
            free(b->buf);
            b->buf = NULL;
            b->cap = 0;
        }
    }
}

void bs_fbuf_compact(bs_frame_buf *b) {
    if (b->head == 0)
        return;
    memmove(b->buf, b->buf + b->head, b->len - b->head);
    b->len -= b->head;
    b->head = 0;
}

ssize_t bs_frame_complete(const bs_frame_rule *r, bs_frame_buf *b, const char *p, size_t n) {
    size_t held = b->len - b->head, take = 0;
    if (r->kind == BS_FRAME_LENGTH) {
        size_t h = (size_t)r->hsize, k;
        int64_t m;
        if (held < h) {
            k = h - held < n ? h - held : n;
            if (bs_fbuf_append(b, p, k) < 0)
                return BS_FRAME_ENOMEM;
            take = k;
            held += k;
            if (held < h)
                return (ssize_t)take;
        }
        m = payload_len(r, (const unsigned char *)b->buf + b->head);
        if (m < 0)
            return m;
        k = h + (size_t)m - held;
        if (k > n - take)
            k = n - take;
        if (bs_fbuf_append(b, p + take, k) < 0)
            return BS_FRAME_ENOMEM;
        return (ssize_t)(take + k);
    } else {
        const char *held_p = b->buf + b->head, *d;
        size_t dl = r->dlen, i, room;
        /* A delimiter begun at the end of the held bytes and finished by p: it starts before
         * any delimiter inside p, and the longest overlap starts earliest. */
        for (i = dl - 1 < held ? dl - 1 : held; i >= 1; i--) {
            if (memcmp(held_p + held - i, r->delim, i) == 0 && n >= dl - i &&
                memcmp(p, r->delim + i, dl - i) == 0) {
                if (held - i > r->max_size)
                    return BS_FRAME_ETOOBIG;
                if (bs_fbuf_append(b, p, dl - i) < 0)
                    return BS_FRAME_ENOMEM;
                return (ssize_t)(dl - i);
            }
        }
        d = find_delim(r, p, n);
        if (d != NULL) {
            take = (size_t)(d - p) + dl;
            if (held + (size_t)(d - p) > r->max_size)
                return BS_FRAME_ETOOBIG;
            if (bs_fbuf_append(b, p, take) < 0)
                return BS_FRAME_ENOMEM;
            return (ssize_t)take;
        }
        /* No end yet: hold no more than the longest line that could still be valid. */
        room = r->max_size + dl - 1;
        take = held < room ? room - held : 0;
        if (take > n)
            take = n;
        if (line_too_long(r, held + n))
            return BS_FRAME_ETOOBIG;
        if (bs_fbuf_append(b, p, take) < 0)
            return BS_FRAME_ENOMEM;
        held += take;
        b->scanned = held >= dl ? held - (dl - 1) : 0;
        return (ssize_t)take;
    }
}

int bs_frame_header(const bs_frame_rule *r, uint64_t n, unsigned char *out) {
    int h = r->hsize;
    uint64_t v = n;
    uint16_t v2;
    uint32_t v4;
    if (r->kind != BS_FRAME_LENGTH)
        return 0;
    if (r->includes_header) {
        if (v > UINT64_MAX - (uint64_t)h)
            return -1;
        v += (uint64_t)h;
    }
    if (h < 8 && v >> (8 * h))
        return -1;
    switch (h) {
    case 1:
        out[0] = (unsigned char)v;
        break;
    case 2:
        v2 = r->little ? htole16((uint16_t)v) : htobe16((uint16_t)v);
        memcpy(out, &v2, 2);
        break;
    case 4:
        v4 = r->little ? htole32((uint32_t)v) : htobe32((uint32_t)v);
        memcpy(out, &v4, 4);
        break;
    default:
        v = r->little ? htole64(v) : htobe64(v);
        memcpy(out, &v, 8);
    }
    return h;
}

int bs_frame_has_delim(const bs_frame_rule *r, const char *p, size_t n) {
    return r->kind == BS_FRAME_LINES && find_delim(r, p, n) != NULL;
}
