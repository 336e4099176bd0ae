#include "timers.h"

#include <assert.h>

#define SPAN_BITS (BS_WHEEL_BITS * BS_WHEEL_LEVELS) /* bits of time the levels cover */
#define NO_EVENT UINT64_MAX

static void list_init(bs_tlink *h) { h->next = h->prev = h; }
static int list_empty(const bs_tlink *h) { return h->next == h; }

static void list_append(bs_tlink *h, bs_tlink *n) {
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

/* Move all of src's nodes, in order, to the end of dst; src becomes empty. */
static void list_splice(bs_tlink *dst, bs_tlink *src) {
    if (list_empty(src))
        return;
    src->next->prev = dst->prev;
    dst->prev->next = src->next;
    src->prev->next = dst;
    dst->prev = src->prev;
    list_init(src);
}

void bs_wheel_init(bs_wheel *w, uint64_t now_ms) {
    w->now = now_ms;
    for (int l = 0; l < BS_WHEEL_LEVELS; l++)
        w->occupied[l] = 0;
    w->count = 0;
    w->steps = 0;
    for (int i = 0; i <= BS_WHEEL_FAR; i++)
        list_init(&w->slot[i]);
}

void bs_timer_init(bs_timer *t, void *owner) {
    t->link.next = t->link.prev = NULL;
    t->deadline = 0;
    t->owner = owner;
}

size_t bs_wheel_count(const bs_wheel *w) { return w->count; }

/* Put an unlinked timer where (deadline, w->now) says it belongs. */
static void place(bs_wheel *w, bs_timer *t) {
    uint64_t d = t->deadline;
    if (d <= w->now) {
        list_append(&w->slot[BS_WHEEL_DUE], &t->link);
        return;
    }
    uint64_t diff = d ^ w->now;
    if (diff >> SPAN_BITS) {
        list_append(&w->slot[BS_WHEEL_FAR], &t->link);
        return;
    }
    int level = (63 - __builtin_clzll(diff)) / BS_WHEEL_BITS;
    int s = (int)((d >> (level * BS_WHEEL_BITS)) & (BS_WHEEL_SLOTS - 1));
    list_append(&w->slot[level * BS_WHEEL_SLOTS + s], &t->link);
    w->occupied[level] |= 1ULL << s;
}

static void unlink_timer(bs_wheel *w, bs_timer *t) {
    bs_tlink *n = &t->link, *p = n->prev;
    /* debug builds: a linked timer sits in a consistent ring */
    assert(p != NULL && n->next != NULL && p->next == n && n->next->prev == n);
    p->next = n->next;
    n->next->prev = p;
    n->next = n->prev = NULL;
    if (p->next == p) { /* p is a slot head (timers are never alone in a ring): slot emptied */
        ptrdiff_t i = p - w->slot;
        if (i < BS_WHEEL_DUE)
            w->occupied[i / BS_WHEEL_SLOTS] &= ~(1ULL << (i % BS_WHEEL_SLOTS));
    }
}

void bs_wheel_arm(bs_wheel *w, bs_timer *t, uint64_t deadline_ms) {
    if (bs_timer_armed(t))
        unlink_timer(w, t);
    else
        w->count++;
    t->deadline = deadline_ms;
    place(w, t);
}

void bs_wheel_cancel(bs_wheel *w, bs_timer *t) {
    if (!bs_timer_armed(t))
        return;
    unlink_timer(w, t);
    w->count--;
}

/* Time of the next slot to fire or cascade, and its level (BS_WHEEL_LEVELS = the far list).
 * Every occupied slot's digit is above the wheel time's digit at that level (place() puts it
 * there, and advancing one event at a time keeps it so), so within a level the lowest set bit is
 * the earliest; and any event of level L lies in the current 64^(L+1) block while those of level
 * L+1 lie in a later one, so the lowest non-empty level holds the next event. */
static uint64_t next_event(const bs_wheel *w, int *level_out) {
    for (int l = 0; l < BS_WHEEL_LEVELS; l++) {
        uint64_t occ = w->occupied[l];
        if (occ) {
            int shift = l * BS_WHEEL_BITS;
            uint64_t block = w->now >> (shift + BS_WHEEL_BITS) << (shift + BS_WHEEL_BITS);
            *level_out = l;
            return block | ((uint64_t)__builtin_ctzll(occ) << shift);
        }
    }
    if (!list_empty(&w->slot[BS_WHEEL_FAR])) {
        /* A far timer differs from now above SPAN_BITS, so the next boundary cannot overflow. */
        *level_out = BS_WHEEL_LEVELS;
        return ((w->now >> SPAN_BITS) + 1) << SPAN_BITS;
    }
    return NO_EVENT;
}

int64_t bs_wheel_timeout(const bs_wheel *w, uint64_t now_ms) {
    if (!list_empty(&w->slot[BS_WHEEL_DUE]))
        return 0;
    int level;
    uint64_t t = next_event(w, &level);
    if (t == NO_EVENT)
        return -1;
    if (t <= now_ms)
        return 0;
    uint64_t d = t - now_ms;
    return d > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)d;
}

/* Fire (level 0) or cascade (higher levels, far list) the slot of the event at time t. */
static void run_event(bs_wheel *w, uint64_t t, int level) {
    w->now = t;
    w->steps++;
    bs_tlink *head;
    if (level == BS_WHEEL_LEVELS) {
        head = &w->slot[BS_WHEEL_FAR];
    } else {
        int s = (int)((t >> (level * BS_WHEEL_BITS)) & (BS_WHEEL_SLOTS - 1));
        head = &w->slot[level * BS_WHEEL_SLOTS + s];
        w->occupied[level] &= ~(1ULL << s);
        if (level == 0) { /* every timer here has deadline == t */
            list_splice(&w->slot[BS_WHEEL_DUE], head);
            return;
        }
    }
    /* Detach the ring, then re-place in order (appends keep FIFO among equal deadlines). A level
     * timer lands strictly lower or due; a far one may land back on the far list, which is why
     * the walk follows the saved links rather than the head. */
    bs_tlink *n = head->next;
    list_init(head);
    while (n != head) {
        bs_tlink *next = n->next;
        place(w, (bs_timer *)n);
        n = next;
    }
}

bs_timer *bs_wheel_pop_expired(bs_wheel *w, uint64_t now_ms) {
    for (;;) {
        bs_tlink *due = &w->slot[BS_WHEEL_DUE];
        if (!list_empty(due)) {
            bs_timer *t = (bs_timer *)due->next;
            assert(w->count > 0 && t->deadline <= w->now);
            unlink_timer(w, t);
            w->count--;
            return t;
        }
        if (now_ms <= w->now)
            return NULL; /* also covers a clock that went backwards: the wheel never rewinds */
        int level;
        uint64_t t = next_event(w, &level);
        if (t > now_ms) { /* nothing in (now, now_ms]: jump straight there */
            w->now = now_ms;
            return NULL;
        }
        run_event(w, t, level);
    }
}
