#ifndef BS_CLOCK_H
#define BS_CLOCK_H
#include <stdint.h>
#include <time.h>

/* Monotonic milliseconds: wall-clock steps (NTP, suspend on some systems) must not fire or starve
 * timers. */
static inline uint64_t bs_monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
#endif
