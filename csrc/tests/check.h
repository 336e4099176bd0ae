/* Tiny assert-style harness shared by the C unit tests: count checks, report failures with their
 * line, keep going (so one run shows every broken case), exit non-zero from main on failure. */
#ifndef BUNSOCK_TEST_CHECK_H
#define BUNSOCK_TEST_CHECK_H

#include <stdint.h>
#include <stdio.h>

static unsigned long check_count, check_failures;

static int check_one(int ok, const char *file, int line, const char *what) {
    check_count++;
    if (!ok) {
        check_failures++;
        if (check_failures <= 20)
            fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    }
    return ok;
}

/* cond is evaluated exactly once: it often has the side effect under test. */
#define CHECK(cond) ((void)check_one(!!(cond), __FILE__, __LINE__, #cond))
/* In random loops: stop at the first failure so one bug does not print a million lines. */
#define REQUIRE(cond)                                                                         \
    do {                                                                                      \
        if (!check_one(!!(cond), __FILE__, __LINE__, #cond))                                  \
            return;                                                                           \
    } while (0)

static int check_summary(const char *name) {
    printf("%s: %lu checks, %lu failures\n", name, check_count, check_failures);
    return check_failures ? 1 : 0;
}

/* xorshift64*: fixed seed, same sequence on every platform. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}
static uint64_t rng_below(uint64_t n) { return n ? rng() % n : 0; }

/* Under AddressSanitizer a huge malloc aborts the process instead of returning NULL, which is the
 * very case the ENOMEM paths are tested with. Harmless without ASan. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

#endif
