/* Load generator for the echo benchmarks (see loadgen.h). One thread, the core's level-triggered poller.
 *
 * Content check without per-connection buffers: connection i sends the byte stream
 * pattern[(pos + seed_i) % PAT_PERIOD], so the expected echo of any received chunk is known from
 * the connection's receive position alone. A mismatch, extra bytes or an early close is an error.
 *
 * Latency: the issue time of each message goes into a per-connection FIFO (pipelined messages
 * come back in order on one TCP stream); when the receive position crosses a message boundary,
 * the oldest entry is popped. Closed loop: a completed message immediately issues the next one.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif

#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__)
#include <dirent.h>
#endif

#include "poller.h" /* the core's poller: epoll on Linux, kqueue on macOS and the BSDs */

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SIGPIPE is ignored by the caller (Python does; the CLI main does) */
#endif

#define PAT_PERIOD 65521u      /* prime: the pattern never lines up with power-of-two message sizes */
#define IO_CHUNK (256u * 1024u) /* largest send/recv; the pattern is this much longer than a period */
/* A burst of 10,000 SYNs overflows small accept backlogs (asyncio's default is 100), and every
 * dropped SYN costs a 1 s+ retransmit, so only this many connects are in progress at once. */
#define MAX_CONNECTING 256
#define DRAIN_SECONDS 2.0 /* after the window: wait this long for in-flight echoes before closing */
#define MAX_WAIT_MS 100

#define NS 1000000000ull

/* ---- latency histogram: exact below 64 ns, then 32 sub-buckets per power of two (~3%) ---- */

#define H_SUB_BITS 5
#define H_SUB (1 << H_SUB_BITS)
#define H_LINEAR (2 * H_SUB)
#define H_BUCKETS (H_LINEAR + 64 * H_SUB)

static int hist_index(uint64_t v)
{
    int msb, shift;
    if (v < H_LINEAR)
        return (int)v;
    msb = 63 - __builtin_clzll(v);
    shift = msb - H_SUB_BITS;
    return H_LINEAR + (shift - 1) * H_SUB + (int)((v >> shift) - H_SUB);
}

static double hist_value(int idx)
{
    int r, shift;
    uint64_t m;
    if (idx < H_LINEAR)
        return (double)idx;
    r = idx - H_LINEAR;
    shift = r / H_SUB + 1;
    m = (uint64_t)(r % H_SUB + H_SUB);
    return (double)(m << shift) + (double)(1ull << shift) / 2.0; /* bucket midpoint */
}

/* ---- poller: the core's (poller.h), with connection slots as its event pointers ---- */

typedef struct {
    int slot;
    int readable; /* errors and hangups count as both (poller.h), so the read/connect path sees them */
    int writable;
} lg_event;

typedef struct {
    bs_poller bp;
    bs_event *raw;
    uint32_t *mask; /* interest registered per slot: kqueue must be told the old one */
} poller;

static void pl_zero(poller *p)
{
    p->bp.fd = -1;
    p->bp.raw = NULL;
    p->raw = NULL;
    p->mask = NULL;
}

static int pl_init(poller *p, int slots)
{
    int cap = slots < 4096 ? slots : 4096;
    p->raw = calloc((size_t)cap, sizeof *p->raw);
    p->mask = calloc((size_t)slots, sizeof *p->mask);
    if (!p->raw || !p->mask)
        return -1;
    return bs_poller_open(&p->bp, cap) < 0 ? -1 : 0;
}

static void pl_free(poller *p)
{
    bs_poller_close(&p->bp);
    free(p->raw);
    free(p->mask);
}

static uint32_t pl_mask(int rd, int wr) { return (rd ? BS_READABLE : 0u) | (wr ? BS_WRITABLE : 0u); }

/* The core's calls return -errno and leave errno set: these keep the 0 / -1 + errno the callers
 * below test. */
static int pl_add(poller *p, int slot, int fd, int rd, int wr)
{
    uint32_t m = pl_mask(rd, wr);
    if (bs_poller_add(&p->bp, fd, (void *)(intptr_t)slot, m) < 0)
        return -1;
    p->mask[slot] = m;
    return 0;
}

static int pl_mod(poller *p, int slot, int fd, int rd, int wr)
{
    uint32_t m = pl_mask(rd, wr);
    if (bs_poller_mod(&p->bp, fd, (void *)(intptr_t)slot, p->mask[slot], m) < 0)
        return -1;
    p->mask[slot] = m;
    return 0;
}

static void pl_del(poller *p, int slot, int fd)
{
    (void)bs_poller_del(&p->bp, fd, p->mask[slot]); /* close() would drop it too; explicit for clarity */
    p->mask[slot] = 0;
}

static int pl_wait(poller *p, int ms, lg_event *out)
{
    int i, n = bs_poller_wait(&p->bp, p->raw, ms);
    if (n < 0) {
        errno = -n;
        return -1;
    }
    for (i = 0; i < n; i++) {
        out[i].slot = (int)(intptr_t)p->raw[i].ptr;
        out[i].readable = (p->raw[i].mask & BS_READABLE) != 0;
        out[i].writable = (p->raw[i].mask & BS_WRITABLE) != 0;
    }
    return n;
}

/* ---- state ---- */

enum { C_NEW, C_CONNECTING, C_OPEN, C_CLOSED };

typedef struct {
    int fd;
    int state;
    int want_write;  /* writable interest is armed (only after a short send) */
    int echoed_once; /* idle mode */
    uint32_t seed;   /* where this connection's stream starts in the pattern */
    uint64_t tx_pos, tx_goal, rx_pos;
    uint64_t *sent;  /* FIFO of issue times, capacity = pipeline */
    int head, count;
} conn;

typedef struct {
    const lg_config *cfg;
    lg_result *res;
    poller pl;
    lg_event *events;
    conn *c;
    uint64_t *fifo;
    unsigned char *pat; /* PAT_PERIOD + IO_CHUNK bytes: any window of <= IO_CHUNK is contiguous */
    unsigned char *rx;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t size;
    int next_conn, connecting, up, failed, alive, unechoed;
    int measuring, stopping;
    uint64_t outstanding;
    uint64_t hist[H_BUCKETS];
    uint64_t h_count, h_sum, h_max;
} lg;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * (int64_t)NS + (int64_t)ts.tv_nsec;
}

/* Sum of the first schedstat field (ns on CPU) over the process's threads; -1 when unavailable.
 * Per-thread files because /proc/PID/schedstat covers only the main thread. */
static int64_t proc_cpu_ns(int pid)
{
#if defined(__linux__)
    char path[96];
    DIR *d;
    struct dirent *de;
    int64_t total = 0;
    int found = 0;
    if (pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    d = opendir(path);
    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL) {
        unsigned long long ns;
        FILE *f;
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.20s/schedstat", pid, de->d_name);
        f = fopen(path, "r");
        if (!f)
            continue; /* the thread exited between readdir and fopen */
        if (fscanf(f, "%llu", &ns) == 1) {
            total += (int64_t)ns;
            found = 1;
        }
        fclose(f);
    }
    closedir(d);
    return found ? total : -1;
#else
    (void)pid;
    return -1;
#endif
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void note_error(lg *g, int *counter, const char *fmt, ...)
{
    (*counter)++;
    if (g->res->error[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g->res->error, sizeof g->res->error, fmt, ap);
        va_end(ap);
    }
}

static void conn_close(lg *g, conn *c, int abortive)
{
    if (c->state == C_CLOSED)
        return;
    if (c->fd >= 0) {
        if (abortive) {
            /* RST instead of FIN: 10,000 idle connections per memory run would otherwise leave
             * 10,000 TIME_WAIT entries behind and exhaust ephemeral ports over a few runs. */
            struct linger lg0 = {1, 0};
            (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg0, sizeof lg0);
        }
        pl_del(&g->pl, (int)(c - g->c), c->fd);
        close(c->fd);
    }
    if (c->state == C_CONNECTING)
        g->connecting--;
    if (c->state == C_OPEN) {
        g->alive--;
        g->outstanding -= (uint64_t)c->count;
        if (g->cfg->mode == LG_MODE_IDLE && !c->echoed_once)
            g->unechoed--;
    }
    c->fd = -1;
    c->state = C_CLOSED;
}

/* A connection that never opened. */
static void connect_failed(lg *g, conn *c, int err)
{
    note_error(g, &g->res->connect_errors, "conn %d: connect: %s", (int)(c - g->c), strerror(err));
    g->failed++;
    conn_close(g, c, 0);
}

static void issue(lg *g, conn *c, uint64_t now)
{
    c->sent[(c->head + c->count) % g->cfg->pipeline] = now;
    c->count++;
    c->tx_goal += g->size;
    g->outstanding++;
}

static void try_send(lg *g, conn *c)
{
    while (c->tx_pos < c->tx_goal) {
        uint64_t left = c->tx_goal - c->tx_pos;
        size_t k = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
        size_t off = (size_t)((c->tx_pos + c->seed) % PAT_PERIOD);
        ssize_t r = send(c->fd, g->pat + off, k, MSG_NOSIGNAL);
        if (r > 0) {
            c->tx_pos += (uint64_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_write && pl_mod(&g->pl, (int)(c - g->c), c->fd, 1, 1) == 0)
                c->want_write = 1;
            return;
        }
        note_error(g, &g->res->closed_errors, "conn %d: send: %s", (int)(c - g->c), strerror(errno));
        conn_close(g, c, 0);
        return;
    }
    if (c->want_write && pl_mod(&g->pl, (int)(c - g->c), c->fd, 1, 0) == 0)
        c->want_write = 0;
}

static void on_open(lg *g, conn *c, uint64_t now)
{
    int i, n = g->cfg->mode == LG_MODE_IDLE ? 1 : g->cfg->pipeline;
    c->state = C_OPEN;
    g->up++;
    g->alive++;
    g->res->connected++;
    if (g->cfg->mode == LG_MODE_IDLE)
        g->unechoed++;
    if (pl_mod(&g->pl, (int)(c - g->c), c->fd, 1, 0) != 0) {
        note_error(g, &g->res->connect_errors, "conn %d: poller: %s", (int)(c - g->c), strerror(errno));
        conn_close(g, c, 0);
        return;
    }
    for (i = 0; i < n; i++)
        issue(g, c, now);
    try_send(g, c);
}

static void start_connects(lg *g, uint64_t now)
{
    while (g->next_conn < g->cfg->conns && g->connecting < MAX_CONNECTING) {
        conn *c = &g->c[g->next_conn++];
        int one = 1, fd, fl;
        fd = socket(g->addr.ss_family, SOCK_STREAM, 0);
        if (fd < 0) {
            connect_failed(g, c, errno);
            continue;
        }
        c->fd = fd;
        fl = fcntl(fd, F_GETFL, 0);
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        /* Small messages must not wait for Nagle + delayed ACK (40 ms stalls). */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (pl_add(&g->pl, (int)(c - g->c), fd, 0, 1) != 0) {
            connect_failed(g, c, errno);
            continue;
        }
        c->state = C_CONNECTING;
        g->connecting++;
        if (connect(fd, (struct sockaddr *)&g->addr, g->addrlen) == 0) {
            g->connecting--;
            on_open(g, c, now);
        } else if (errno != EINPROGRESS && errno != EINTR) {
            connect_failed(g, c, errno);
        }
    }
}

static void on_connect_ready(lg *g, conn *c, uint64_t now)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        connect_failed(g, c, err);
        return;
    }
    g->connecting--;
    on_open(g, c, now);
}

/* Compare a received chunk with what this connection sent at that stream position. */
static int verify(lg *g, conn *c, const unsigned char *buf, size_t n)
{
    uint64_t pos = c->rx_pos;
    size_t done = 0;
    while (done < n) {
        size_t off = (size_t)((pos + done + c->seed) % PAT_PERIOD);
        size_t k = n - done;
        const unsigned char *want = g->pat + off;
        if (k > IO_CHUNK)
            k = IO_CHUNK;
        if (memcmp(buf + done, want, k) != 0) {
            size_t i = 0;
            while (buf[done + i] == want[i])
                i++;
            note_error(g, &g->res->content_errors,
                       "conn %d: echoed byte %llu (message %llu, offset %llu) is 0x%02x, sent 0x%02x",
                       (int)(c - g->c), (unsigned long long)(pos + done + i),
                       (unsigned long long)((pos + done + i) / g->size),
                       (unsigned long long)((pos + done + i) % g->size), buf[done + i], want[i]);
            return -1;
        }
        done += k;
    }
    return 0;
}

static void record_latency(lg *g, uint64_t ns)
{
    g->hist[hist_index(ns)]++;
    g->h_count++;
    g->h_sum += ns;
    if (ns > g->h_max)
        g->h_max = ns;
}

static void on_readable(lg *g, conn *c)
{
    int rounds;
    /* A few reads per wakeup: enough to empty the socket for large messages without letting one
     * connection starve the rest (level-triggered: leftovers come back next wait). */
    for (rounds = 0; rounds < 4 && c->state == C_OPEN; rounds++) {
        ssize_t n = recv(c->fd, g->rx, IO_CHUNK, 0);
        uint64_t before, now, done;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            note_error(g, &g->res->closed_errors, "conn %d: recv: %s", (int)(c - g->c), strerror(errno));
            conn_close(g, c, 0);
            return;
        }
        if (n == 0) {
            note_error(g, &g->res->closed_errors, "conn %d: closed by the server after %llu of %llu bytes",
                       (int)(c - g->c), (unsigned long long)c->rx_pos, (unsigned long long)c->tx_pos);
            conn_close(g, c, 0);
            return;
        }
        now = now_ns();
        if (c->rx_pos + (uint64_t)n > c->tx_pos) {
            note_error(g, &g->res->content_errors, "conn %d: echoed %llu bytes but only %llu were sent",
                       (int)(c - g->c), (unsigned long long)(c->rx_pos + (uint64_t)n),
                       (unsigned long long)c->tx_pos);
            conn_close(g, c, 0);
            return;
        }
        if (verify(g, c, g->rx, (size_t)n) != 0) {
            conn_close(g, c, 0);
            return;
        }
        before = c->rx_pos / g->size;
        c->rx_pos += (uint64_t)n;
        done = c->rx_pos / g->size - before;
        if (g->measuring)
            g->res->bytes += (uint64_t)n;
        while (done-- > 0) {
            uint64_t sent = c->sent[c->head];
            c->head = (c->head + 1) % g->cfg->pipeline;
            c->count--;
            g->outstanding--;
            if (g->cfg->mode == LG_MODE_IDLE) {
                c->echoed_once = 1;
                g->unechoed--;
                g->res->messages++;
                continue;
            }
            if (g->measuring) {
                record_latency(g, now - sent);
                g->res->messages++;
            }
            if (!g->stopping)
                issue(g, c, now);
        }
        try_send(g, c);
        if ((size_t)n < IO_CHUNK)
            break;
    }
}

static int setup(lg *g, const lg_config *cfg, lg_result *res)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)&g->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&g->addr;
    uint32_t x = 2463534242u;
    size_t i;
    int k;
    struct rlimit rl;

    if (!cfg->host || cfg->port <= 0 || cfg->port > 65535 || cfg->conns < 1 || cfg->pipeline < 1 ||
        cfg->msg_size < 1 || !(cfg->connect_timeout > 0) || (cfg->mode != LG_MODE_ECHO && cfg->mode != LG_MODE_IDLE) ||
        (cfg->mode == LG_MODE_ECHO && cfg->duration <= 0) || cfg->warmup < 0 ||
        (int64_t)cfg->conns * cfg->pipeline > 100000000) {
        snprintf(res->error, sizeof res->error, "invalid configuration");
        return -1;
    }
    memset(&g->addr, 0, sizeof g->addr);
    if (inet_pton(AF_INET, cfg->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)cfg->port);
        g->addrlen = sizeof *a4;
    } else if (inet_pton(AF_INET6, cfg->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)cfg->port);
        g->addrlen = sizeof *a6;
    } else {
        snprintf(res->error, sizeof res->error, "host must be a numeric IPv4/IPv6 address: %.200s", cfg->host);
        return -1;
    }
    /* Only the soft limit can be raised without privileges; 10,000 idle connections need it. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }

    g->size = (uint64_t)cfg->msg_size;
    g->c = calloc((size_t)cfg->conns, sizeof *g->c);
    g->fifo = calloc((size_t)cfg->conns * (size_t)cfg->pipeline, sizeof *g->fifo);
    g->pat = malloc(PAT_PERIOD + IO_CHUNK);
    g->rx = malloc(IO_CHUNK);
    g->events = calloc((size_t)cfg->conns + 1, sizeof *g->events);
    if (!g->c || !g->fifo || !g->pat || !g->rx || !g->events || pl_init(&g->pl, cfg->conns + 1) != 0) {
        snprintf(res->error, sizeof res->error, "setup: %s", strerror(errno ? errno : ENOMEM));
        return -1;
    }
    for (i = 0; i < PAT_PERIOD; i++) { /* xorshift32: bytes a buggy server cannot produce by accident */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        g->pat[i] = (unsigned char)(x >> 24);
    }
    for (i = PAT_PERIOD; i < PAT_PERIOD + IO_CHUNK; i++)
        g->pat[i] = g->pat[i % PAT_PERIOD];
    for (k = 0; k < cfg->conns; k++) {
        g->c[k].fd = -1;
        g->c[k].state = C_NEW;
        g->c[k].seed = (uint32_t)(((uint64_t)k * 7919u) % PAT_PERIOD);
        g->c[k].sent = g->fifo + (size_t)k * (size_t)cfg->pipeline;
    }
    /* epoll refuses regular files and /dev/null (EPERM): such a stop_fd can never signal, so it
     * is ignored and the run ends by its duration, as when a person runs the CLI by hand. */
    if (cfg->stop_fd >= 0 && pl_add(&g->pl, cfg->conns, cfg->stop_fd, 1, 0) != 0 && errno != EPERM) {
        snprintf(res->error, sizeof res->error, "stop_fd %d cannot be polled: %s", cfg->stop_fd, strerror(errno));
        return -1;
    }
    return 0;
}

static void teardown(lg *g)
{
    int k;
    if (g->c)
        for (k = 0; k < g->cfg->conns; k++)
            conn_close(g, &g->c[k], g->cfg->mode == LG_MODE_IDLE);
    pl_free(&g->pl); /* the stop fd is the caller's: closing the poller is enough to forget it */
    free(g->events);
    free(g->rx);
    free(g->pat);
    free(g->fifo);
    free(g->c);
}

static int ms_until(uint64_t now, uint64_t deadline)
{
    uint64_t d;
    if (deadline <= now)
        return 0;
    d = (deadline - now + 999999u) / 1000000u;
    return d > MAX_WAIT_MS ? MAX_WAIT_MS : (int)d;
}

static void finish_result(lg *g)
{
    lg_result *r = g->res;
    uint64_t p50 = (g->h_count + 1) / 2, p99 = (g->h_count * 99 + 99) / 100, seen = 0;
    int i, got50 = 0;
    if (g->h_count == 0)
        return;
    for (i = 0; i < H_BUCKETS; i++) {
        seen += g->hist[i];
        if (!got50 && seen >= p50) {
            r->p50_us = hist_value(i) / 1e3;
            got50 = 1;
        }
        if (seen >= p99) {
            r->p99_us = hist_value(i) / 1e3;
            break;
        }
    }
    r->max_us = (double)g->h_max / 1e3;
    /* A bucket's midpoint can lie above the largest sample in it. */
    if (r->p50_us > r->max_us)
        r->p50_us = r->max_us;
    if (r->p99_us > r->max_us)
        r->p99_us = r->max_us;
    r->mean_us = (double)g->h_sum / (double)g->h_count / 1e3;
}

void lg_config_init(lg_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->mode = LG_MODE_ECHO;
    cfg->conns = 1;
    cfg->pipeline = 1;
    cfg->msg_size = 64;
    cfg->duration = 5.0;
    cfg->warmup = 1.0;
    cfg->connect_timeout = 10.0;
    cfg->ready_fd = -1;
    cfg->stop_fd = -1;
}

int lg_run(const lg_config *cfg, lg_result *res)
{
    lg *g = calloc(1, sizeof *g);
    uint64_t t0, connect_deadline, warm_end = 0, window_start = 0, window_end = 0, drain_end = 0;
    uint64_t hold_end = 0;
    int64_t srv0 = -1, cli0 = -1;
    int settled = 0, ready = 0, stop = 0, rc = 0;

    memset(res, 0, sizeof *res);
    res->server_cpu_ns = -1;
    res->client_cpu_ns = -1;
    if (!g) {
        snprintf(res->error, sizeof res->error, "out of memory");
        return -1;
    }
    g->cfg = cfg;
    g->res = res;
    pl_zero(&g->pl);
    if (setup(g, cfg, res) != 0) {
        rc = -1;
        goto out;
    }
    t0 = now_ns();
    connect_deadline = t0 + (uint64_t)(cfg->connect_timeout * 1e9);

    for (;;) {
        uint64_t now = now_ns(), deadline = now + (uint64_t)MAX_WAIT_MS * 1000000u;
        int i, n;

        start_connects(g, now);
        if (!settled && g->up + g->failed == cfg->conns && (cfg->mode == LG_MODE_ECHO || g->unechoed == 0)) {
            settled = 1;
            warm_end = now + (uint64_t)(cfg->warmup * 1e9);
        }
        if (!settled && now >= connect_deadline) {
            /* Give up on whatever is not up (or, idle, not echoed) yet; count it as a connect error. */
            for (i = 0; i < cfg->conns; i++) {
                conn *c = &g->c[i];
                if (c->state == C_NEW || c->state == C_CONNECTING || (c->state == C_OPEN &&
                    cfg->mode == LG_MODE_IDLE && !c->echoed_once)) {
                    note_error(g, &res->connect_errors, "conn %d: not %s within %.1f s", i,
                               c->state == C_OPEN ? "echoed" : "connected", cfg->connect_timeout);
                    if (c->state != C_OPEN)
                        g->failed++;
                    conn_close(g, c, 0);
                }
            }
            g->next_conn = cfg->conns;
            settled = 1;
            warm_end = now + (uint64_t)(cfg->warmup * 1e9);
        }

        if (cfg->mode == LG_MODE_ECHO) {
            if (settled && !g->measuring && !g->stopping && (now >= warm_end || stop)) {
                g->measuring = 1;
                window_start = now;
                window_end = now + (uint64_t)(cfg->duration * 1e9);
                srv0 = proc_cpu_ns(cfg->server_pid);
                cli0 = thread_cpu_ns();
            }
            if (g->measuring && (now >= window_end || stop || g->alive == 0)) {
                int64_t srv1 = proc_cpu_ns(cfg->server_pid), cli1 = thread_cpu_ns();
                g->measuring = 0;
                g->stopping = 1;
                res->elapsed = (double)(now - window_start) / 1e9;
                res->server_cpu_ns = (srv0 >= 0 && srv1 >= 0) ? srv1 - srv0 : -1;
                res->client_cpu_ns = (cli0 >= 0 && cli1 >= 0) ? cli1 - cli0 : -1;
                drain_end = now + (uint64_t)(DRAIN_SECONDS * 1e9);
            }
            if (g->stopping && (g->outstanding == 0 || now >= drain_end || g->alive == 0))
                break;
            if (settled && !g->measuring && !g->stopping && warm_end < deadline)
                deadline = warm_end;
            if (g->measuring && window_end < deadline)
                deadline = window_end;
        } else {
            if (settled && !ready) {
                ready = 1;
                hold_end = cfg->duration > 0 ? now + (uint64_t)(cfg->duration * 1e9) : UINT64_MAX;
                if (cfg->ready_fd >= 0 && write(cfg->ready_fd, "ready\n", 6) < 0) {
                    /* nobody is listening: hold for the duration anyway */
                }
            }
            if (stop || (ready && now >= hold_end) || (settled && g->alive == 0 && g->next_conn >= cfg->conns))
                break;
            if (ready && hold_end < deadline)
                deadline = hold_end;
        }
        if (!settled && connect_deadline < deadline)
            deadline = connect_deadline;

        n = pl_wait(&g->pl, ms_until(now, deadline), g->events);
        if (n < 0 && errno != EINTR) {
            snprintf(res->error, sizeof res->error, "poll: %s", strerror(errno));
            rc = -1;
            break;
        }
        for (i = 0; i < n; i++) {
            lg_event *ev = &g->events[i];
            conn *c;
            if (ev->slot == cfg->conns) {
                stop = 1; /* the stop fd became readable (data or EOF): its content does not matter */
                pl_del(&g->pl, cfg->conns, cfg->stop_fd);
                continue;
            }
            c = &g->c[ev->slot];
            if (c->state == C_CONNECTING) {
                if (ev->writable)
                    on_connect_ready(g, c, now_ns());
                continue;
            }
            if (c->state == C_OPEN && ev->readable)
                on_readable(g, c);
            if (c->state == C_OPEN && ev->writable)
                try_send(g, c);
        }
    }
    if (cfg->mode == LG_MODE_IDLE)
        res->elapsed = (double)(now_ns() - t0) / 1e9;
    finish_result(g);
out:
    teardown(g);
    free(g);
    return rc;
}
