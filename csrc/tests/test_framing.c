/* framing.c: every split of a stream gives the same messages as the whole stream; errors are
 * reported as soon as the bytes prove them; held memory stays bounded. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "framing.h"

#define MAXMSG 64

typedef struct {
    char msgs[MAXMSG][512];
    size_t lens[MAXMSG];
    int count;
    int err;
    size_t max_held;
} result;

static void emit(result *res, const char *p, size_t n) {
    if (res->count < MAXMSG) {
        memcpy(res->msgs[res->count], p, n);
        res->lens[res->count] = n;
    }
    res->count++;
}

/* The delivery loop the Cython glue runs, minus Python: complete the held frame, then scan the
 * read in place, then hold the tail. */
static void feed(const bs_frame_rule *r, bs_frame_buf *b, const char *p, size_t n, result *res) {
    bs_frame f;
    int k;
    size_t pos = 0;
    if (res->err)
        return;
    if (bs_fbuf_pending(b)) {
        ssize_t t = bs_frame_complete(r, b, p, n);
        if (t < 0) {
            res->err = (int)t;
            return;
        }
        pos = (size_t)t;
        k = bs_frame_find(r, b->buf + b->head, bs_fbuf_pending(b), b->scanned, &f);
        if (k < 0) {
            res->err = k;
            return;
        }
        if (k == 0) {
            CHECK(pos == n); /* complete took everything and the frame is still partial */
            goto held;
        }
        CHECK(f.consumed == bs_fbuf_pending(b));
        emit(res, b->buf + b->head + f.off, f.len);
        bs_fbuf_consume(b, f.consumed);
    }
    for (;;) {
        k = bs_frame_find(r, p + pos, n - pos, 0, &f);
        if (k < 0) {
            res->err = k;
            return;
        }
        if (k == 0)
            break;
        emit(res, p + pos + f.off, f.len);
        pos += f.consumed;
    }
    if (pos < n) {
        CHECK(bs_fbuf_append(b, p + pos, n - pos) == 0);
        b->scanned = f.consumed;
    }
held:
    if (bs_fbuf_pending(b) > res->max_held)
        res->max_held = bs_fbuf_pending(b);
}

static void run_chunks(const bs_frame_rule *r, const char *s, size_t n, const size_t *cuts,
                       int ncuts, result *res) {
    bs_frame_buf b;
    size_t at = 0;
    int i;
    bs_fbuf_init(&b);
    memset(res, 0, sizeof(*res));
    for (i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        feed(r, &b, s + at, end - at, res);
        at = end;
    }
    if (!res->err && bs_fbuf_pending(&b))
        res->err = 99; /* EOF mid-frame, as the glue reports it */
    bs_fbuf_free(&b);
}

static int same(const result *a, const result *b) {
    int i;
    if (a->count != b->count || a->err != b->err)
        return 0;
    for (i = 0; i < a->count && i < MAXMSG; i++)
        if (a->lens[i] != b->lens[i] || memcmp(a->msgs[i], b->msgs[i], a->lens[i]))
            return 0;
    return 1;
}

/* Every single split point and every pair of split points give the whole stream's answer. */
static void check_splits(const bs_frame_rule *r, const char *s, size_t n) {
    result whole, part;
    size_t cuts[2], i, j;
    run_chunks(r, s, n, NULL, 0, &whole);
    for (i = 0; i <= n; i++) {
        cuts[0] = i;
        run_chunks(r, s, n, cuts, 1, &part);
        REQUIRE(same(&whole, &part));
        for (j = i; j <= n; j++) {
            cuts[1] = j;
            run_chunks(r, s, n, cuts, 2, &part);
            REQUIRE(same(&whole, &part));
        }
    }
}

static bs_frame_rule lines(const char *d, uint64_t max, int keep) {
    bs_frame_rule r;
    memset(&r, 0, sizeof(r));
    r.kind = BS_FRAME_LINES;
    r.delim = d;
    r.dlen = strlen(d);
    r.max_size = max;
    r.keep_delim = keep;
    return r;
}

static bs_frame_rule length(int h, int little, int incl, uint64_t max) {
    bs_frame_rule r;
    memset(&r, 0, sizeof(r));
    r.kind = BS_FRAME_LENGTH;
    r.hsize = h;
    r.little = little;
    r.includes_header = incl;
    r.max_size = max;
    return r;
}

static void test_lines(void) {
    bs_frame_rule r = lines("\n", 10, 0), crlf = lines("\r\n", 5, 0), keep = lines("\r\n", 5, 1);
    bs_frame_rule odd = lines("abab", 8, 0);
    result res;
    const char *s = "hello\nworld\n\nlast";
    run_chunks(&r, s, strlen(s), NULL, 0, &res);
    CHECK(res.count == 3 && res.err == 99);
    CHECK(res.lens[0] == 5 && memcmp(res.msgs[0], "hello", 5) == 0);
    CHECK(res.lens[2] == 0);
    check_splits(&r, s, strlen(s));
    check_splits(&r, "a\nbb\nccc\n", 9);
    /* max_size counts the line without its delimiter */
    run_chunks(&r, "0123456789\n", 11, NULL, 0, &res);
    CHECK(res.count == 1 && res.err == 0);
    run_chunks(&r, "0123456789x\n", 12, NULL, 0, &res);
    CHECK(res.err == BS_FRAME_ETOOBIG && res.count == 0);
    check_splits(&r, "0123456789x\n", 12);
    /* no delimiter at all: fails once the bytes prove the line too long, not at EOF */
    run_chunks(&r, "ok\n0123456789x", 14, NULL, 0, &res);
    CHECK(res.err == BS_FRAME_ETOOBIG && res.count == 1);
    run_chunks(&r, "ok\n0123456789", 13, NULL, 0, &res);
    CHECK(res.err == 99);
    check_splits(&r, "ok\n0123456789xyz", 16);
    /* two-byte delimiter, split between its bytes; a lone \r is data */
    s = "ab\r\nc\rd\r\n\r\nxy\r";
    run_chunks(&crlf, s, strlen(s), NULL, 0, &res);
    CHECK(res.count == 3 && res.err == 99);
    CHECK(res.lens[1] == 3 && memcmp(res.msgs[1], "c\rd", 3) == 0);
    check_splits(&crlf, s, strlen(s));
    run_chunks(&keep, s, strlen(s), NULL, 0, &res);
    CHECK(res.count == 3 && res.lens[0] == 4 && memcmp(res.msgs[0], "ab\r\n", 4) == 0);
    check_splits(&keep, s, strlen(s));
    /* "12345\r" is a line of 5 whose delimiter may still come: not an error yet */
    run_chunks(&crlf, "12345\r", 6, NULL, 0, &res);
    CHECK(res.err == 99);
    run_chunks(&crlf, "123456\r", 7, NULL, 0, &res);
    CHECK(res.err == BS_FRAME_ETOOBIG);
    check_splits(&crlf, "12345\r\n123456\r\n", 15);
    /* a self-overlapping delimiter */
    s = "xaababab1abab";
    run_chunks(&odd, s, strlen(s), NULL, 0, &res);
    CHECK(res.count == 2 && res.lens[0] == 2 && memcmp(res.msgs[0], "xa", 2) == 0);
    CHECK(res.lens[1] == 3 && memcmp(res.msgs[1], "ab1", 3) == 0);
    check_splits(&odd, s, strlen(s));
    CHECK(bs_frame_has_delim(&crlf, "a\r\nb", 4) == 1 && bs_frame_has_delim(&crlf, "a\rb", 3) == 0);
}

static void test_length(void) {
    bs_frame_rule be4 = length(4, 0, 0, 100), le2 = length(2, 1, 0, 100), incl = length(2, 0, 1, 100);
    bs_frame_rule one = length(1, 0, 0, 255), eight = length(8, 0, 0, 1 << 20);
    unsigned char h[8];
    result res;
    char s[64];
    const char be[] = "\0\0\0\3abc\0\0\0\0\0\0\0\1z";
    run_chunks(&be4, be, sizeof(be) - 1, NULL, 0, &res);
    CHECK(res.count == 3 && res.err == 0 && res.lens[1] == 0 && res.lens[2] == 1);
    check_splits(&be4, be, sizeof(be) - 1);
    memcpy(s, "\3\0abc\1\0z", 8);
    run_chunks(&le2, s, 8, NULL, 0, &res);
    CHECK(res.count == 2 && res.lens[0] == 3 && memcmp(res.msgs[0], "abc", 3) == 0);
    check_splits(&le2, s, 8);
    /* includes_header: the length counts the header itself */
    memcpy(s, "\0\5abc\0\2", 7);
    run_chunks(&incl, s, 7, NULL, 0, &res);
    CHECK(res.count == 2 && res.lens[0] == 3 && res.lens[1] == 0 && res.err == 0);
    memcpy(s, "\0\5abc\0\1", 7);
    run_chunks(&incl, s, 7, NULL, 0, &res);
    CHECK(res.count == 1 && res.err == BS_FRAME_ESHORT);
    check_splits(&incl, s, 7);
    /* an oversize header fails at once, before its payload arrives */
    memcpy(s, "\0\0\0\2ok\0\0\0\145", 10);
    run_chunks(&be4, s, 10, NULL, 0, &res);
    CHECK(res.count == 1 && res.err == BS_FRAME_ETOOBIG);
    memcpy(s, "\0\0\0\144", 4);
    run_chunks(&be4, s, 4, NULL, 0, &res);
    CHECK(res.err == 99);    /* 100 is allowed: waits for the payload */
    memcpy(s, "\377\377\377\377\377\377\377\377", 8);
    run_chunks(&eight, s, 8, NULL, 0, &res);
    CHECK(res.err == BS_FRAME_ETOOBIG);
    /* header encoding round trip and limits */
    CHECK(bs_frame_header(&be4, 0x01020304, h) == 4 && h[0] == 1 && h[3] == 4);
    CHECK(bs_frame_header(&le2, 0x0102, h) == 2 && h[0] == 2 && h[1] == 1);
    CHECK(bs_frame_header(&incl, 3, h) == 2 && h[1] == 5);
    CHECK(bs_frame_header(&one, 255, h) == 1 && h[0] == 255);
    CHECK(bs_frame_header(&one, 256, h) == -1);
    CHECK(bs_frame_header(&incl, 65534, h) == -1);
    CHECK(bs_frame_header(&eight, 7, h) == 8 && h[7] == 7 && h[0] == 0);
}

/* Random streams cut at random places: same messages, and held memory stays under the bound. */
static void test_random(void) {
    static char stream[1 << 16];
    bs_frame_rule rules[3];
    int t, ri;
    rules[0] = lines("\r\n", 40, 0);
    rules[1] = length(2, 0, 0, 40);
    rules[2] = length(4, 1, 1, 40);
    for (t = 0; t < 300; t++) {
        for (ri = 0; ri < 3; ri++) {
            bs_frame_rule *r = &rules[ri];
            size_t n = 0, cuts[16];
            int nc = (int)rng_below(16), i;
            result whole, part;
            while (n < 1500) {
                size_t len = rng_below(38), j;
                unsigned char h[8];
                int hs = bs_frame_header(r, len, h);
                memcpy(stream + n, h, (size_t)hs);
                n += (size_t)hs;
                for (j = 0; j < len; j++)
                    stream[n++] = (char)('a' + rng_below(3)); /* never \r or \n */
                if (r->kind == BS_FRAME_LINES) {
                    memcpy(stream + n, "\r\n", 2);
                    n += 2;
                }
            }
            for (i = 0; i < nc; i++)
                cuts[i] = rng_below(n + 1);
            for (i = 1; i < nc; i++) { /* insertion sort */
                size_t v = cuts[i];
                int j = i - 1;
                while (j >= 0 && cuts[j] > v) {
                    cuts[j + 1] = cuts[j];
                    j--;
                }
                cuts[j + 1] = v;
            }
            run_chunks(r, stream, n, NULL, 0, &whole);
            run_chunks(r, stream, n, cuts, nc, &part);
            REQUIRE(whole.err == 0 && same(&whole, &part));
            REQUIRE(part.max_held <= 40 + 4);
        }
    }
}

/* A peer that never sends a delimiter, one byte at a time: memory stays at max_size + dlen. */
static void test_bound(void) {
    bs_frame_rule r = lines("\r\n", 1000, 0);
    bs_frame_buf b;
    result res;
    int i;
    bs_fbuf_init(&b);
    memset(&res, 0, sizeof(res));
    for (i = 0; i < 5000 && !res.err; i++)
        feed(&r, &b, "x", 1, &res);
    CHECK(res.err == BS_FRAME_ETOOBIG);
    CHECK(i == 1002);
    CHECK(bs_fbuf_pending(&b) <= 1001);
    bs_fbuf_free(&b);
}

int main(void) {
    test_lines();
    test_length();
    test_random();
    test_bound();
    return check_summary("test_framing");
}
