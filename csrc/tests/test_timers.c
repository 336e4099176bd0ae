/* Unit tests for csrc/timers.c: random arm / re-arm / cancel / advance against a brute-force
 * model, exact firing, ordering, long jumps, far deadlines. Build:
 * gcc -Icsrc csrc/tests/test_timers.c csrc/timers.c */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "timers.h"

#define HOUR (3600ULL * 1000)
#define DAY (24 * HOUR)

typedef struct {
    bs_timer t;
    int armed;
    int past;      /* armed with a deadline the wheel had already passed: no order promise */
    uint64_t seq;  /* arm order, for the FIFO check among equal deadlines */
} mtimer;

static uint64_t seq_counter;

static void m_arm(bs_wheel *w, mtimer *m, uint64_t d) {
    bs_wheel_arm(w, &m->t, d);
    m->armed = 1;
    m->past = d <= bs_wheel_now(w);
    m->seq = ++seq_counter;
}

static void m_cancel(bs_wheel *w, mtimer *m) {
    bs_wheel_cancel(w, &m->t);
    m->armed = 0;
}

/* A deadline around `now` with a spread that hits every level now and then. */
static uint64_t random_deadline(uint64_t now) {
    uint64_t k = rng_below(100);
    if (k < 5)
        return now - rng_below(now < 1000 ? now + 1 : 1000); /* already due */
    if (k < 50)
        return now + rng_below(100);
    if (k < 75)
        return now + rng_below(5000);
    if (k < 90)
        return now + rng_below(HOUR);
    if (k < 99)
        return now + rng_below(4 * DAY);
    return now + rng_below(400 * DAY);
}

static uint64_t random_advance(void) {
    uint64_t k = rng_below(1000);
    if (k < 300)
        return 0;
    if (k < 900)
        return rng_below(30);
    if (k < 990)
        return rng_below(5000);
    if (k < 998)
        return rng_below(10 * HOUR);
    return rng_below(30 * DAY);
}

static int timeout_ok(const bs_wheel *w, const mtimer *ms, int n, uint64_t now) {
    uint64_t next = UINT64_MAX;
    int any = 0;
    for (int i = 0; i < n; i++)
        if (ms[i].armed) {
            any = 1;
            if (ms[i].t.deadline < next)
                next = ms[i].t.deadline;
        }
    int64_t tmo = bs_wheel_timeout(w, now);
    if (!any)
        return tmo == -1;
    if (tmo < 0)
        return 0;
    if (next <= now)
        return tmo == 0;
    return now + (uint64_t)tmo <= next; /* never sleep past a deadline */
}

static void random_run(mtimer *ms, int n, long iters, uint64_t start) {
    bs_wheel w;
    uint64_t now = start;
    bs_wheel_init(&w, now);
    for (int i = 0; i < n; i++)
        bs_timer_init(&ms[i].t, &ms[i]), ms[i].armed = 0;
    for (long it = 0; it < iters; it++) {
        int ops = (int)rng_below(8);
        for (int k = 0; k < ops; k++) {
            mtimer *m = &ms[rng_below(n)];
            if (rng_below(4) == 0)
                m_cancel(&w, m);
            else
                m_arm(&w, m, random_deadline(now));
        }
        REQUIRE(timeout_ok(&w, ms, n, now));
        now += random_advance();
        int mutate = rng_below(3) == 0; /* callbacks that arm/cancel while the batch runs */
        uint64_t last_d = 0, last_seq = 0;
        bs_timer *t;
        while ((t = bs_wheel_pop_expired(&w, now)) != NULL) {
            mtimer *m = t->owner;
            REQUIRE(m == (mtimer *)t);
            REQUIRE(m->armed && !bs_timer_armed(t));
            REQUIRE(t->deadline <= now); /* never early */
            if (!mutate && !m->past) { /* deadline order, FIFO among equals */
                REQUIRE(t->deadline > last_d || (t->deadline == last_d && m->seq > last_seq));
                last_d = t->deadline;
                last_seq = m->seq;
            }
            m->armed = 0;
            if (mutate) {
                uint64_t k = rng_below(10);
                if (k < 3)
                    m_arm(&w, m, random_deadline(now));
                else if (k < 5)
                    m_cancel(&w, &ms[rng_below(n)]);
                else if (k < 7)
                    m_arm(&w, &ms[rng_below(n)], random_deadline(now));
            }
        }
        size_t armed = 0;
        for (int i = 0; i < n; i++) {
            REQUIRE(ms[i].armed == bs_timer_armed(&ms[i].t));
            REQUIRE(!ms[i].armed || ms[i].t.deadline > now); /* never missed */
            armed += ms[i].armed;
        }
        REQUIRE(bs_wheel_count(&w) == armed);
    }
}

static void test_random(void) {
    enum { N = 1000 };
    static mtimer ms[N];
    random_run(ms, N, 30000, 123456789);
    random_run(ms, N, 10000, 0);                            /* clock starting at zero */
    random_run(ms, N, 10000, (1ULL << 42) - 3 * DAY);       /* crossing the top boundary */
    random_run(ms, 20, 50000, 987654321);                   /* sparse wheel: many empty jumps */
}

/* Every timer fires on the first pop with now >= its deadline, not one ms before. */
static void test_exact(void) {
    enum { N = 3000 };
    static mtimer ms[N];
    static uint64_t ds[N];
    bs_wheel w;
    uint64_t now = 5000000;
    bs_wheel_init(&w, now);
    for (int i = 0; i < N; i++) {
        bs_timer_init(&ms[i].t, &ms[i]);
        uint64_t k = rng_below(4);
        ds[i] = now + 1 + (k == 0 ? rng_below(64) : k == 1 ? rng_below(5000)
                          : k == 2 ? rng_below(3 * DAY) : (rng_below(8) << (6 * rng_below(7))));
        m_arm(&w, &ms[i], ds[i]);
    }
    /* Visit every deadline at d - 1 and at d, in time order. */
    int fired = 0;
    for (;;) {
        uint64_t next = UINT64_MAX;
        for (int i = 0; i < N; i++)
            if (ms[i].armed && ms[i].t.deadline < next)
                next = ms[i].t.deadline;
        if (next == UINT64_MAX)
            break;
        CHECK(bs_wheel_pop_expired(&w, next - 1) == NULL);
        int at = 0;
        bs_timer *t;
        while ((t = bs_wheel_pop_expired(&w, next)) != NULL) {
            mtimer *m = t->owner;
            CHECK(m->armed && t->deadline == next);
            m->armed = 0;
            at++;
        }
        CHECK(at > 0);
        fired += at;
        if (at == 0)
            break;
    }
    CHECK(fired == N && bs_wheel_count(&w) == 0);
}

/* A time jump costs one step per occupied slot passed, not one per millisecond. */
static void test_long_jump(void) {
    enum { N = 100000 };
    static mtimer ms[N];
    bs_wheel w;
    uint64_t now = 777777;
    bs_wheel_init(&w, now);
    CHECK(bs_wheel_pop_expired(&w, now + 10 * HOUR) == NULL && w.steps == 0);
    now += 10 * HOUR;

    bs_timer one;
    bs_timer_init(&one, NULL);
    bs_wheel_arm(&w, &one, now + 10 * HOUR + 5);
    CHECK(bs_wheel_pop_expired(&w, now + 10 * HOUR + 4) == NULL);
    CHECK(bs_wheel_pop_expired(&w, now + 10 * HOUR + 5) == &one);
    CHECK(w.steps <= BS_WHEEL_LEVELS);
    now += 10 * HOUR + 5;

    /* 100k idle timeouts, the loop stalls 10 hours, then one pop sequence. */
    for (int i = 0; i < N; i++) {
        bs_timer_init(&ms[i].t, &ms[i]);
        m_arm(&w, &ms[i], now + 1 + rng_below(10 * HOUR));
    }
    uint64_t steps0 = w.steps, last = 0;
    int n = 0, ordered = 1;
    bs_timer *t;
    while ((t = bs_wheel_pop_expired(&w, now + 10 * HOUR)) != NULL) {
        ordered &= t->deadline >= last;
        last = t->deadline;
        n++;
    }
    CHECK(n == N && ordered);
    CHECK(w.steps - steps0 <= (uint64_t)N * BS_WHEEL_LEVELS);
    printf("  100k timers over 10 h drained in %llu steps\n",
           (unsigned long long)(w.steps - steps0));
}

static void test_far(void) {
    bs_wheel w;
    bs_timer a, b, c, never;
    uint64_t now = 1000;
    bs_wheel_init(&w, now);
    bs_timer_init(&a, NULL);
    bs_timer_init(&b, NULL);
    bs_timer_init(&c, NULL);
    bs_timer_init(&never, NULL);
    uint64_t da = now + 3 * DAY + 17, db = now + 200 * 365 * DAY + 1, dc = now + 5 * DAY;
    bs_wheel_arm(&w, &a, da);
    bs_wheel_arm(&w, &b, db); /* beyond the levels' 139 years */
    bs_wheel_arm(&w, &c, dc);
    bs_wheel_arm(&w, &never, UINT64_MAX);
    CHECK(bs_wheel_count(&w) == 4);
    int64_t tmo = bs_wheel_timeout(&w, now);
    CHECK(tmo > 0 && now + (uint64_t)tmo <= da);
    /* Advance in hour-sized chunks: the days-away timer fires exactly, nothing else does. */
    while (now + HOUR < da) {
        now += HOUR;
        CHECK(bs_wheel_pop_expired(&w, now) == NULL);
        tmo = bs_wheel_timeout(&w, now);
        CHECK(tmo > 0 && now + (uint64_t)tmo <= da);
    }
    CHECK(bs_wheel_pop_expired(&w, da - 1) == NULL);
    CHECK(bs_wheel_pop_expired(&w, da) == &a);
    CHECK(bs_wheel_pop_expired(&w, da) == NULL);
    /* Re-arm the fired one further out than c: c first. */
    bs_wheel_arm(&w, &a, dc + 1);
    CHECK(bs_wheel_pop_expired(&w, dc + 1) == &c);
    CHECK(bs_wheel_pop_expired(&w, dc + 1) == &a);
    CHECK(bs_wheel_pop_expired(&w, db - 1) == NULL);
    CHECK(bs_wheel_pop_expired(&w, db) == &b);
    CHECK(bs_wheel_pop_expired(&w, db + 1000 * 365 * DAY) == NULL);
    CHECK(bs_wheel_count(&w) == 1 && bs_timer_armed(&never));
    tmo = bs_wheel_timeout(&w, bs_wheel_now(&w));
    CHECK(tmo > 0);
    bs_wheel_cancel(&w, &never);
    CHECK(bs_wheel_count(&w) == 0 && bs_wheel_timeout(&w, 0) == -1);
}

static void test_basics(void) {
    bs_wheel w;
    bs_timer a, b, c;
    int owner;
    int64_t tmo;
    bs_wheel_init(&w, 100);
    bs_timer_init(&a, &owner);
    bs_timer_init(&b, NULL);
    bs_timer_init(&c, NULL);
    CHECK(!bs_timer_armed(&a) && a.owner == &owner);
    CHECK(bs_wheel_timeout(&w, 100) == -1 && bs_wheel_pop_expired(&w, 100) == NULL);
    bs_wheel_cancel(&w, &a); /* not armed: no-op */
    CHECK(bs_wheel_count(&w) == 0);

    bs_wheel_arm(&w, &a, 150);
    CHECK(bs_timer_armed(&a) && bs_wheel_count(&w) == 1);
    /* 150 sits on level 1 from 100: the wheel may wake at its cascade point (128) first. */
    CHECK(bs_wheel_timeout(&w, 100) == 28);
    CHECK(bs_wheel_pop_expired(&w, 128) == NULL && bs_wheel_timeout(&w, 128) == 22);
    bs_wheel_arm(&w, &a, 130); /* re-arm earlier */
    CHECK(bs_wheel_count(&w) == 1 && bs_wheel_timeout(&w, 100) == 30);
    CHECK(bs_wheel_timeout(&w, 140) == 0);
    bs_wheel_cancel(&w, &a);
    CHECK(!bs_timer_armed(&a) && bs_wheel_count(&w) == 0 && bs_wheel_timeout(&w, 100) == -1);
    CHECK(w.occupied[0] == 0); /* cancelling the last timer of a slot clears its bit */

    /* Past and present deadlines are due at the next pop, FIFO. */
    bs_wheel_arm(&w, &a, 128);
    bs_wheel_arm(&w, &b, 3);
    CHECK(bs_wheel_timeout(&w, 100) == 0);
    CHECK(bs_wheel_pop_expired(&w, 100) == &a); /* the wheel never rewinds: still at 128 */
    CHECK(bs_wheel_pop_expired(&w, 100) == &b);
    CHECK(bs_wheel_pop_expired(&w, 100) == NULL);

    /* FIFO among equal deadlines, across a cascade. */
    bs_wheel_arm(&w, &a, 5000);
    bs_wheel_arm(&w, &b, 5000);
    bs_wheel_arm(&w, &c, 5000);
    bs_wheel_cancel(&w, &b);
    bs_wheel_arm(&w, &b, 5000);
    CHECK(bs_wheel_pop_expired(&w, 4999) == NULL);
    CHECK(bs_wheel_pop_expired(&w, 6000) == &a);
    /* A callback cancels a due timer: it must not come out. */
    bs_wheel_cancel(&w, &c);
    CHECK(bs_wheel_pop_expired(&w, 6000) == &b);
    CHECK(bs_wheel_pop_expired(&w, 6000) == NULL);

    /* A clock that goes backwards: nothing fires, nothing breaks. */
    bs_wheel_arm(&w, &a, 6500);
    CHECK(bs_wheel_pop_expired(&w, 10) == NULL && bs_timer_armed(&a));
    tmo = bs_wheel_timeout(&w, 10);
    CHECK(tmo > 0 && tmo <= 6490);
    CHECK(bs_wheel_pop_expired(&w, 6500) == &a);
    CHECK(bs_wheel_count(&w) == 0);
}

int main(void) {
    test_basics();
    test_far();
    test_exact();
    test_long_jump();
    test_random();
    return check_summary("test_timers");
}
