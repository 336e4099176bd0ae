/* Wakes a poller blocked in another thread (name resolution finishing, call_soon_threadsafe).
 * Linux has eventfd (one fd, one counter); elsewhere a non-blocking pipe does the same job. */
#ifndef BS_WAKER_H
#define BS_WAKER_H

typedef struct bs_waker {
    int rfd;
    int wfd;
} bs_waker;

int bs_waker_open(bs_waker *w);  /* 0, or -errno */
void bs_waker_close(bs_waker *w);
void bs_waker_signal(const bs_waker *w);
void bs_waker_drain(const bs_waker *w);

#endif
