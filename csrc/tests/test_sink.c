/* Unit tests for csrc/sink.c: fixed cases for each layout, then random operations against a
 * plain linear-array model. Build: gcc -Icsrc csrc/tests/test_sink.c csrc/sink.c */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sink.h"

/* Pending bytes via iovecs, copied out; compares with want[0..n). */
static int sink_equals(const bs_sink *s, const unsigned char *want, size_t n) {
    struct iovec iov[2];
    int cnt = bs_sink_iov(s, iov);
    size_t total = 0;
    for (int i = 0; i < cnt; i++) {
        if (iov[i].iov_len == 0)
            return 0; /* an empty iovec would be a wasted writev slot */
        if (total + iov[i].iov_len > n || memcmp(iov[i].iov_base, want + total, iov[i].iov_len))
            return 0;
        total += iov[i].iov_len;
    }
    return total == n && bs_sink_len(s) == n;
}

static int invariants(const bs_sink *s) {
    if ((s->buf == NULL) != (s->cap == 0))
        return 0;
    if (s->len > s->cap || (s->cap && s->head >= s->cap))
        return 0;
    if (s->len == 0 && s->head != 0)
        return 0;
    return 1;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i * 7);
}

static void test_empty(void) {
    bs_sink s;
    struct iovec iov[2];
    bs_sink_init(&s);
    CHECK(s.buf == NULL && s.cap == 0 && s.len == 0 && s.head == 0);
    CHECK(bs_sink_iov(&s, iov) == 0);
    CHECK(bs_sink_linearize(&s) == NULL);
    CHECK(bs_sink_append(&s, "", 0) == 0 && s.buf == NULL); /* empty append allocates nothing */
    bs_sink_consume(&s, 0);
    bs_sink_truncate(&s, 0);
    /* A reservation survives no-op consumes and truncates (ArrayBufferSink's high_water_mark). */
    CHECK(bs_sink_reserve(&s, 200000) == 0);
    bs_sink_consume(&s, 0);
    bs_sink_truncate(&s, 0);
    CHECK(s.cap >= 200000);
    bs_sink_free(&s);
    errno = 0;
    CHECK(bs_sink_extend(&s, 0) == NULL && errno == EINVAL);
    CHECK(bs_sink_reserve(&s, 0) == 0 && s.buf == NULL);
    CHECK(bs_sink_reserve(&s, 1) == 0 && s.cap == BS_SINK_MIN);
    CHECK(bs_sink_reserve(&s, 100) == 0 && s.cap == BS_SINK_MIN); /* already room */
    bs_sink_free(&s);
    CHECK(s.buf == NULL && s.cap == 0);
    bs_sink_free(&s); /* twice is fine */
    CHECK(bs_sink_reserve(&s, 100000) == 0 && s.cap >= 100000);
    bs_sink_free(&s);
}

static void test_wrap_and_grow(void) {
    static unsigned char data[64 * 1024], want[64 * 1024];
    bs_sink s;
    struct iovec iov[2];
    fill(data, sizeof data, 1);
    bs_sink_init(&s);
    CHECK(bs_sink_append(&s, data, 10000) == 0 && s.cap == BS_SINK_MIN);
    bs_sink_consume(&s, 8000);
    CHECK(s.head == 8000 && s.len == 2000);
    CHECK(bs_sink_append(&s, data + 10000, 10000) == 0); /* wraps: 8384 at the end, rest at 0 */
    CHECK(s.cap == BS_SINK_MIN && bs_sink_iov(&s, iov) == 2);
    CHECK(iov[0].iov_len == BS_SINK_MIN - 8000 && iov[1].iov_len == 12000 - iov[0].iov_len);
    CHECK(sink_equals(&s, data + 8000, 12000));
    /* Grow while wrapped: the new storage must hold the bytes in order. */
    CHECK(bs_sink_append(&s, data + 20000, 10000) == 0);
    CHECK(s.cap == 2 * BS_SINK_MIN && s.head == 0 && bs_sink_iov(&s, iov) == 1);
    CHECK(sink_equals(&s, data + 8000, 22000));
    /* A request bigger than double: grows to fit it at once. */
    CHECK(bs_sink_append(&s, data, 40000) == 0 && s.cap >= 62000 && s.cap == 4 * BS_SINK_MIN);
    memcpy(want, data + 8000, 22000);
    memcpy(want + 22000, data, 40000);
    CHECK(sink_equals(&s, want, 62000));
    bs_sink_free(&s);
}

static void test_keeps_storage_and_marks_wide(void) {
    static unsigned char data[200000];
    bs_sink s;
    bs_sink_init(&s);
    CHECK(s.wide == 0);
    CHECK(bs_sink_append(&s, data, 1000) == 0 && s.wide == 0); /* within BS_SINK_KEEP */
    bs_sink_consume(&s, 1000);
    CHECK(bs_sink_append(&s, data, sizeof data) == 0 && s.cap > BS_SINK_KEEP && s.wide == 1);
    bs_sink_consume(&s, 100);
    CHECK(s.buf != NULL); /* not empty yet: keep it */
    bs_sink_consume(&s, sizeof data - 100);
    /* Drained: the storage stays (releasing it is the owner's policy), head back at 0. */
    size_t big = s.cap;
    CHECK(s.buf != NULL && s.cap == big && s.head == 0 && s.len == 0);
    /* Refilled and drained many times: never reallocated, and each big fill marks it wide. */
    for (int i = 0; i < 20; i++) {
        char *b0 = s.buf;
        s.wide = 0;
        CHECK(bs_sink_append(&s, data, sizeof data) == 0 && s.buf == b0 && s.wide == 1);
        bs_sink_consume(&s, sizeof data);
        CHECK(s.buf == b0 && s.cap == big);
    }
    /* Small use of big storage does not mark it. */
    s.wide = 0;
    CHECK(bs_sink_append(&s, data, 1000) == 0 && s.wide == 0);
    bs_sink_truncate(&s, 0);
    CHECK(s.buf != NULL && s.cap == big && s.len == 0 && s.head == 0);
    bs_sink_free(&s);
    CHECK(s.buf == NULL && s.cap == 0 && s.wide == 0);
}

static void test_linearize(void) {
    static unsigned char data[32768];
    bs_sink s;
    fill(data, sizeof data, 3);
    bs_sink_init(&s);
    /* Wrapped with a gap big enough for the front part: rotated in place. */
    CHECK(bs_sink_append(&s, data, 16000) == 0);
    bs_sink_consume(&s, 15000);
    CHECK(bs_sink_append(&s, data + 16000, 1000) == 0); /* 384 at end, 616 at start */
    char *old = s.buf;
    char *p = bs_sink_linearize(&s);
    CHECK(p == old && s.head == 0);
    CHECK(p && memcmp(p, data + 15000, 2000) == 0);
    CHECK(sink_equals(&s, data + 15000, 2000));
    bs_sink_free(&s);
    /* Wrapped and nearly full: the front part does not fit the gap, so it must reallocate. */
    CHECK(bs_sink_append(&s, data, 16000) == 0);
    bs_sink_consume(&s, 1000);
    CHECK(bs_sink_append(&s, data + 16000, 1350) == 0);
    /* head 1000, len 16350, wraps by 966: the gap (34) is far smaller than the front part */
    p = bs_sink_linearize(&s);
    CHECK(p != NULL && s.head == 0 && s.len == 16350);
    CHECK(p && memcmp(p, data + 1000, 16350) == 0);
    /* Not wrapped: pointer to head, no change. */
    bs_sink_consume(&s, 50);
    CHECK(bs_sink_linearize(&s) == s.buf + 50);
    bs_sink_free(&s);
}

static void test_extend(void) {
    static unsigned char data[20000];
    bs_sink s;
    fill(data, sizeof data, 5);
    bs_sink_init(&s);
    char *p = bs_sink_extend(&s, 100);
    CHECK(p == s.buf && s.len == 100);
    memcpy(p, data, 100);
    bs_sink_truncate(&s, 60);
    CHECK(sink_equals(&s, data, 60));
    /* Free space split around the data: the data slides to offset 0. */
    CHECK(bs_sink_append(&s, data + 60, 15940) == 0);
    bs_sink_consume(&s, 10000);
    p = bs_sink_extend(&s, 8000);
    CHECK(p != NULL && s.head == 0 && p == s.buf + 6000);
    if (p)
        memcpy(p, data + 16000, 4000), memcpy(p + 4000, data, 4000);
    CHECK(s.len == 14000 && memcmp(s.buf, data + 10000, 10000) == 0);
    /* Wrapped: the gap is contiguous. */
    bs_sink_consume(&s, 5000);
    CHECK(bs_sink_append(&s, data, 5000) == 0); /* head 5000, len 14000, wraps by 2616 */
    p = bs_sink_extend(&s, 2000);
    CHECK(p == s.buf + (5000 + 14000 - BS_SINK_MIN) && s.head == 5000);
    bs_sink_free(&s);
}

static void test_enomem(void) {
    bs_sink s;
    bs_sink_init(&s);
    CHECK(bs_sink_append(&s, "abc", 3) == 0);
    errno = 0;
    CHECK(bs_sink_reserve(&s, SIZE_MAX) == -ENOMEM);
    errno = 0;
    CHECK(bs_sink_reserve(&s, SIZE_MAX / 2 - 2) == -ENOMEM); /* overflow guard */
    errno = 0;
    CHECK(bs_sink_reserve(&s, SIZE_MAX / 4) == -ENOMEM);     /* malloc refuses */
    errno = 0;
    CHECK(bs_sink_extend(&s, SIZE_MAX / 4) == NULL && errno == ENOMEM);
    CHECK(sink_equals(&s, (const unsigned char *)"abc", 3)); /* untouched */
    bs_sink_free(&s);
}

enum { MODEL = 16 << 20 };

/* Random appends / consumes / extends / truncates / linearizes against a linear model. */
static void random_ops(bs_sink *s, unsigned char *model, const unsigned char *src, long ops) {
    size_t mstart = 0, mlen = 0;
    for (long i = 0; i < ops; i++) {
        if (mstart + mlen > MODEL / 2) {
            memmove(model, model + mstart, mlen);
            mstart = 0;
        }
        uint64_t r = rng_below(100);
        if (r < 45) {
            uint64_t k = rng_below(100);
            size_t n = k < 70 ? rng_below(257) : k < 97 ? rng_below(8193) : rng_below(200001);
            if (mlen > (4 << 20))
                n = 0;
            size_t off = rng_below(300000 - n + 1);
            REQUIRE(bs_sink_append(s, src + off, n) == 0);
            memcpy(model + mstart + mlen, src + off, n);
            mlen += n;
        } else if (r < 85) {
            size_t n = rng_below(4) == 0 ? mlen : rng_below(mlen + 1);
            bs_sink_consume(s, n);
            mstart += n;
            mlen -= n;
            REQUIRE(mlen || !n || s->buf != NULL || s->cap == 0); /* storage is kept */
        } else if (r < 92) {
            size_t n = 1 + rng_below(rng_below(4) ? 300 : 40000);
            char *p = bs_sink_extend(s, n);
            REQUIRE(p != NULL);
            size_t off = rng_below(300000 - n + 1);
            memcpy(p, src + off, n);
            memcpy(model + mstart + mlen, src + off, n);
            mlen += n;
        } else if (r < 96) {
            size_t keep = mlen - rng_below(mlen < 500 ? mlen + 1 : 500);
            int dropped = keep < mlen;
            bs_sink_truncate(s, keep);
            mlen = keep;
            REQUIRE(mlen || !dropped || s->buf != NULL);
        } else if (r < 98) {
            size_t n = rng_below(70000);
            size_t cap = s->cap;
            REQUIRE(bs_sink_reserve(s, n) == 0);
            REQUIRE(s->cap - s->len >= n);
            REQUIRE(s->cap == cap || s->cap >= 2 * cap); /* geometric growth */
        } else {
            char *p = bs_sink_linearize(s);
            REQUIRE(mlen == 0 || (p != NULL && memcmp(p, model + mstart, mlen) == 0));
        }
        REQUIRE(invariants(s));
        REQUIRE(bs_sink_len(s) == mlen);
        if (mlen < 4096 || i % 512 == 0) {
            REQUIRE(sink_equals(s, model + mstart, mlen));
        } else {
            struct iovec iov[2];
            int cnt = bs_sink_iov(s, iov);
            REQUIRE(cnt >= 1 && ((unsigned char *)iov[0].iov_base)[0] == model[mstart]);
            REQUIRE(((unsigned char *)iov[cnt - 1].iov_base)[iov[cnt - 1].iov_len - 1] ==
                    model[mstart + mlen - 1]);
        }
    }
}

static void test_random(long ops) {
    unsigned char *model = malloc(MODEL), *src = malloc(300000);
    bs_sink s;
    bs_sink_init(&s);
    CHECK(model && src);
    if (model && src) {
        fill(src, 300000, 11);
        random_ops(&s, model, src, ops);
    }
    bs_sink_free(&s);
    free(model);
    free(src);
}

int main(int argc, char **argv) {
    long ops = argc > 1 ? atol(argv[1]) : 200000;
    test_empty();
    test_wrap_and_grow();
    test_keeps_storage_and_marks_wide();
    test_linearize();
    test_extend();
    test_enomem();
    test_random(ops);
    return check_summary("test_sink");
}
