/* Load generator for the echo benchmarks: one thread, one poller, no Python objects.
 *
 * lg_run() keeps `conns` connections x `pipeline` messages of `msg_size` bytes in flight against
 * an echo server, checks that every echoed byte matches what was sent, and measures throughput,
 * latency and (on Linux) the CPU the server spent over the measured window.
 *
 * It is linked into the bunsock.bench._loadgen extension (called with the GIL released) and into the
 * standalone benchmarks/.build/loadgen binary, so it must stay free of Python.
 */
#ifndef BUNSOCK_LOADGEN_H
#define BUNSOCK_LOADGEN_H

#include <stdint.h>

enum {
    LG_MODE_ECHO = 0, /* closed-loop echo: measure rate, latency, server CPU per message */
    LG_MODE_IDLE = 1  /* open conns, one echo each, then hold them (memory per connection) */
};

typedef struct lg_config {
    const char *host;       /* numeric IPv4 or IPv6 address */
    int port;
    int mode;               /* LG_MODE_* */
    int conns;
    int pipeline;           /* echo: messages in flight per connection */
    int64_t msg_size;       /* bytes per message */
    double duration;        /* echo: measured seconds. idle: hold seconds once all are up (<= 0: until stop_fd) */
    double warmup;          /* echo: seconds of traffic before the window opens */
    double connect_timeout; /* seconds for every connection to be established (and, idle, echoed once) */
    int server_pid;         /* > 0: sum /proc/PID/task/<tid>/schedstat CPU over the window */
    int ready_fd;           /* idle: "ready\n" is written here once every connection is up; -1: none */
    int stop_fd;            /* readable or EOF ends the hold (idle) or the window early (echo); -1: none.
                             * One epoll cannot watch (a regular file, /dev/null) is ignored. */
} lg_config;

typedef struct lg_result {
    uint64_t messages;       /* echo: messages completed inside the window. idle: connections echoed once */
    uint64_t bytes;          /* echoed payload bytes received inside the window */
    double elapsed;          /* seconds the window actually lasted */
    double p50_us, p99_us, max_us, mean_us; /* per-message round trip, send-issue to last byte back */
    int64_t server_cpu_ns;   /* server CPU over the window; -1 when unknown */
    int64_t client_cpu_ns;   /* this thread's CPU over the window; shows whether the load generator saturated */
    int connected;           /* connections that were established */
    int connect_errors;      /* refused, timed out, ... */
    int content_errors;      /* echoed bytes differ from what was sent, or more came back than was sent */
    int closed_errors;       /* peer closed or reset a connection before the run ended */
    char error[256];         /* first error, human readable; "" when none */
} lg_result;

/* Defaults: 127.0.0.1, echo, 1 conn, pipeline 1, 64 B, 5 s, 1 s warmup, 10 s connect timeout. */
void lg_config_init(lg_config *cfg);

/* Returns 0 when the run happened (per-connection errors are counted in *out), -1 when it could
 * not start (bad config, no memory, no poller); out->error says why in both cases. Raises the
 * process's soft RLIMIT_NOFILE to its hard limit so that 10,000 idle connections fit. */
int lg_run(const lg_config *cfg, lg_result *out);

#endif
