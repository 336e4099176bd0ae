/* Message framing: find whole messages (length-prefixed or delimited lines) in a byte stream, and
 * hold the undelivered tail between reads. No Python objects. Memory held per stream stays below
 * the rule's max_size plus one header or delimiter, except when the caller holds a whole read it
 * could not deliver yet (a paused socket): that is appended as it is. */
#ifndef BUNSOCK_FRAMING_H
#define BUNSOCK_FRAMING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum { BS_FRAME_RAW = 0, BS_FRAME_LINES = 1, BS_FRAME_LENGTH = 2 };

/* bs_frame_find / bs_frame_complete results besides "found" and "need more". */
enum {
    BS_FRAME_ETOOBIG = -1, /* a message over max_size (declared, or a line without its end) */
    BS_FRAME_ESHORT = -2,  /* includes_header: a declared length below the header's own size */
    BS_FRAME_ENOMEM = -3,
};

typedef struct bs_frame_rule {
    int kind;           /* BS_FRAME_LINES or BS_FRAME_LENGTH */
    uint64_t max_size;  /* largest message: the payload, or a line without its delimiter */
    const char *delim;  /* lines: owned by the caller, non-empty */
    size_t dlen;
    int keep_delim;     /* lines: the message handed out ends with the delimiter */
    int hsize;          /* length: 1, 2, 4 or 8 bytes */
    int little;         /* length: little-endian header (default big) */
    int includes_header; /* length: the declared length counts the header */
} bs_frame_rule;

typedef struct bs_frame {
    size_t off;      /* the message: p[off, off + len) */
    size_t len;
    size_t consumed; /* header + message + delimiter: where the next frame starts */
} bs_frame;

/* The next whole frame at the start of p[0, n). Returns 1 (out set), 0 when p holds only the
 * beginning of one (out->consumed is then how far a later call may skip: no frame ends before
 * it; pass it as `from` with the same start), or a BS_FRAME_E* error. An error is reported as
 * soon as the bytes prove it: an oversize header at once, a line without a delimiter once it is
 * longer than max_size could allow. `from` only speeds up lines; 0 is always correct. */
int bs_frame_find(const bs_frame_rule *r, const char *p, size_t n, size_t from, bs_frame *out);

/* Bytes received and not delivered yet. buf[head, len) are pending. */
typedef struct bs_frame_buf {
    char *buf;
    size_t head, len, cap;
    size_t scanned; /* lines: a partial held here has no frame end before head + scanned */
} bs_frame_buf;

void bs_fbuf_init(bs_frame_buf *b);
void bs_fbuf_free(bs_frame_buf *b);
static inline size_t bs_fbuf_pending(const bs_frame_buf *b) { return b->len - b->head; }
/* 0, or BS_FRAME_ENOMEM with nothing appended. */
int bs_fbuf_append(bs_frame_buf *b, const char *p, size_t n);
/* Drop n (<= pending) bytes from the front; an emptied buffer starts again at 0, and one that
 * grew large is freed (a burst does not pin memory). */
void bs_fbuf_consume(bs_frame_buf *b, size_t n);
/* Move the pending bytes to the start of the storage. */
void bs_fbuf_compact(bs_frame_buf *b);

/* b holds the beginning of one frame (nothing whole). Move from p[0, n) just the bytes that
 * complete it, or all of them when they do not (within the rule's bound). Returns how many bytes
 * of p were taken, or a BS_FRAME_E* error (b unchanged by the failing step). After it, b holds
 * either one whole frame (bs_frame_find on b finds it) or still a partial one. */
ssize_t bs_frame_complete(const bs_frame_rule *r, bs_frame_buf *b, const char *p, size_t n);

/* The header for a message of n bytes into out (8 bytes of room): its size, or -1 when n does
 * not fit the header. Lines have no header (0). */
int bs_frame_header(const bs_frame_rule *r, uint64_t n, unsigned char *out);

/* 1 when p[0, n) contains the rule's delimiter (a line message must not). */
int bs_frame_has_delim(const bs_frame_rule *r, const char *p, size_t n);

#endif
