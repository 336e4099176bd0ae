/* Hierarchical timer wheel: loop timers and per-socket idle timeouts (100k armed at once), 1 ms
 * ticks, O(1) arm / re-arm / cancel. No Python objects; one loop thread owns it.
 *
 * Levels of 64 slots; level L covers 64^(L+1) ms. A timer sits at the level of the highest 6-bit
 * digit in which its deadline differs from the wheel's time, in the slot named by that digit of
 * the deadline. So every armed timer is where (deadline, now) says it should be, equal deadlines
 * share a slot in arm order (firing is FIFO among them), and the next thing to happen is found
 * from the lowest non-empty level's occupancy bitmap with one count-trailing-zeros: a jump of
 * hours costs one step per occupied slot passed, never one per empty millisecond. */
#ifndef BUNSOCK_TIMERS_H
#define BUNSOCK_TIMERS_H

#include <stddef.h>
#include <stdint.h>

#define BS_WHEEL_BITS 6
#define BS_WHEEL_SLOTS 64
/* 7 levels span 2^42 ms (139 years); deadlines beyond wait on an overflow list that is re-sorted
 * each time the wheel's time crosses a 2^42 boundary. */
#define BS_WHEEL_LEVELS 7

/* Circular doubly linked list: the slot heads are bare links, so a timer can leave its slot in
 * O(1) without knowing which slot it is in, and appends keep arm order. */
typedef struct bs_tlink {
    struct bs_tlink *next; /* NULL when the timer is not armed */
    struct bs_tlink *prev;
} bs_tlink;

typedef struct bs_timer {
    bs_tlink link;     /* first member: a bs_tlink* of an armed timer is its bs_timer* */
    uint64_t deadline; /* absolute ms on the wheel's clock */
    void *owner;       /* for the caller: the object that embeds this timer */
} bs_timer;

#define BS_WHEEL_DUE (BS_WHEEL_LEVELS * BS_WHEEL_SLOTS)
#define BS_WHEEL_FAR (BS_WHEEL_DUE + 1)

typedef struct bs_wheel {
    uint64_t now;                          /* time the wheel has been advanced to */
    uint64_t occupied[BS_WHEEL_LEVELS];    /* bit s of level L: slot s is non-empty */
    size_t count;                          /* armed timers */
    uint64_t steps;                        /* slots fired or cascaded since init (tests, stats) */
    bs_tlink slot[BS_WHEEL_FAR + 1];       /* level slots, then the due list, then the far list */
} bs_wheel;

void bs_wheel_init(bs_wheel *w, uint64_t now_ms);
void bs_timer_init(bs_timer *t, void *owner);
static inline int bs_timer_armed(const bs_timer *t) { return t->link.next != NULL; }
/* Re-arms if already armed; a deadline <= the wheel's current time is due at the next pop. */
void bs_wheel_arm(bs_wheel *w, bs_timer *t, uint64_t deadline_ms);
/* No-op when not armed. */
void bs_wheel_cancel(bs_wheel *w, bs_timer *t);
/* ms the poller may sleep: -1 = no timers, 0 = something due. May be earlier than the true next
 * deadline (a cascade point), never later. O(levels). */
int64_t bs_wheel_timeout(const bs_wheel *w, uint64_t now_ms);
/* Advance to now_ms and return ONE timer with deadline <= now_ms, unlinked; NULL when none. The
 * caller loops until NULL and may arm/cancel any timer between calls. Timers come out in
 * deadline order (FIFO among equal deadlines), except that one armed with a deadline the wheel
 * has already passed queues behind the timers already due. A callback that keeps
 * re-arming at a past deadline keeps the loop busy: bound the batch in the caller if needed. */
bs_timer *bs_wheel_pop_expired(bs_wheel *w, uint64_t now_ms);
size_t bs_wheel_count(const bs_wheel *w); /* armed timers */

/* Additions beyond the fixed interface. */
static inline uint64_t bs_wheel_now(const bs_wheel *w) { return w->now; }

#endif
