/* The floor for benchmarks/broadcast_bench.py: a C server that, each tick, writes the same state
 * to every client with one send() per client, and does nothing else.
 *
 *   broadcast_c CLIENTS SIZE HZ [TICKS]
 *
 * Listens on 127.0.0.1 (an ephemeral port, printed as "port N"), accepts CLIENTS connections,
 * then ticks at HZ on a fixed schedule (absolute deadlines: no drift, no catch-up burst), sending
 * SIZE bytes to each client. Once a second it prints "tick TICKS USER_S SYS_S" (its own CPU time
 * from getrusage), the same report the Python servers in broadcast_bench.py print. A send the
 * kernel refuses (a client that stopped reading) is dropped and counted, never retried: the
 * floor is the cost of the sends themselves. Runs until killed, or exits after TICKS ticks
 * (benchmarks/instr_broadcast.py counts its instructions that way).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double cpu_s(const struct timeval *tv) {
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static void add_ns(struct timespec *t, long long ns) {
    t->tv_nsec += ns % 1000000000LL;
    t->tv_sec += ns / 1000000000LL;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec += 1;
    }
}

static int after(const struct timespec *a, const struct timespec *b) {
    return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec >= b->tv_nsec);
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s CLIENTS SIZE HZ [TICKS]\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]);
    size_t size = (size_t)atol(argv[2]);
    double hz = atof(argv[3]);
    long max_ticks = argc == 5 ? atol(argv[4]) : 0;
    if (n <= 0 || size == 0 || hz <= 0) {
        fprintf(stderr, "CLIENTS, SIZE and HZ must be positive\n");
        return 2;
    }
    char *state = malloc(size);
    int *fds = malloc((size_t)n * sizeof(int));
    if (state == NULL || fds == NULL) {
        perror("malloc");
        return 1;
    }
    for (size_t i = 0; i < size; i++)
        state[i] = (char)(i % 256);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in sa;
    socklen_t slen = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &slen) < 0) {
        perror("listen");
        return 1;
    }
    printf("port %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    /* Same socket setup as bunsock's accepted sockets: non-blocking, TCP_NODELAY. */
    for (int i = 0; i < n; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) {
                i--;
                continue;
            }
            perror("accept");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fds[i] = fd;
    }

    long long period_ns = (long long)(1e9 / hz);
    struct timespec next, report, now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    next = now;
    add_ns(&next, period_ns);
    report = now;
    add_ns(&report, 1000000000LL);
    long ticks = 0, dropped = 0;
    for (;;) {
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
        }
        for (int i = 0; i < n; i++) {
            ssize_t r = send(fds[i], state, size, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (r != (ssize_t)size)
                dropped++;
        }
        ticks++;
        if (max_ticks > 0 && ticks >= max_ticks)
            return 0;
        add_ns(&next, period_ns);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (after(&now, &report)) {
            struct rusage ru;
            getrusage(RUSAGE_SELF, &ru);
            printf("tick %ld %.6f %.6f\n", ticks, cpu_s(&ru.ru_utime), cpu_s(&ru.ru_stime));
            fflush(stdout);
            add_ns(&report, 1000000000LL);
            if (dropped)
                fprintf(stderr, "broadcast_c: %ld sends refused so far\n", dropped);
        }
    }
}
