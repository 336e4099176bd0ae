/* Load for the game benchmarks (benchmarks/udp_bench.py, benchmarks/broadcast_bench.py).
 *
 *   game_load udp  PORT SENDERS INFLIGHT SIZE WARMUP_S SECONDS SERVER_PID
 *       SENDERS UDP sockets each keep INFLIGHT datagrams of SIZE bytes in flight to 127.0.0.1:PORT
 *       (closed loop: every echo sends the next). After WARMUP_S, for SECONDS, counts echoes and
 *       the server's CPU time (sum of /proc/PID/task/x/schedstat). Prints one JSON line.
 *       A datagram lost on the way is re-sent after 50 ms without any echo, so the loop never stalls.
 *   game_load tcp  PORT CONNS SECONDS
 *       CONNS TCP connections to 127.0.0.1:PORT that read and discard; prints the bytes read
 *       per connection (min and max) as one JSON line after SECONDS.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t server_cpu_ns(int pid) {
    char path[128], buf[256];
    uint64_t total = 0;
    DIR *d;
    struct dirent *e;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    d = opendir(path);
    if (!d) return 0;
    while ((e = readdir(d)) != NULL) {
        FILE *f;
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/schedstat", pid, e->d_name);
        f = fopen(path, "r");
        if (!f) continue;
        if (fgets(buf, sizeof buf, f)) total += strtoull(buf, NULL, 10);
        fclose(f);
    }
    closedir(d);
    return total;
}

static int udp_mode(int argc, char **argv) {
    int port, senders, inflight, size, pid, ep, i, k;
    double warm, secs, t0, t_start = 0, t_end, last_rx;
    uint64_t count = 0, cpu0 = 0, lost_resends = 0;
    int measuring = 0;
    struct sockaddr_in to;
    char *buf;
    int *fds;
    if (argc < 9) return 2;
    port = atoi(argv[2]);
    senders = atoi(argv[3]);
    inflight = atoi(argv[4]);
    size = atoi(argv[5]);
    warm = atof(argv[6]);
    secs = atof(argv[7]);
    pid = atoi(argv[8]);
    buf = calloc(1, 65536);
    fds = calloc((size_t)senders, sizeof *fds);
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ep = epoll_create1(0);
    for (i = 0; i < senders; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (connect(fds[i], (struct sockaddr *)&to, sizeof to) < 0) return 1;
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
        for (k = 0; k < inflight; k++) send(fds[i], buf, (size_t)size, 0);
    }
    t0 = last_rx = now_s();
    t_end = t0 + warm + secs;
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 50);
        double t = now_s();
        if (!measuring && t >= t0 + warm) {
            measuring = 1;
            t_start = t;
            count = 0;
            cpu0 = server_cpu_ns(pid);
        }
        if (t >= t_end) break;
        if (n <= 0 && t - last_rx > 0.05) {
            /* Datagrams were dropped (a full socket buffer somewhere): restart the window. */
            for (i = 0; i < senders; i++)
                for (k = 0; k < inflight; k++) send(fds[i], buf, (size_t)size, 0);
            lost_resends++;
            last_rx = t;
        }
        for (k = 0; k < n; k++) {
            int fd = fds[evs[k].data.u32];
            for (;;) {
                ssize_t r = recv(fd, buf, 65536, 0);
                if (r < 0) break;
                count += measuring;
                last_rx = t;
                send(fd, buf, (size_t)size, 0);
            }
        }
    }
    {
        uint64_t cpu1 = server_cpu_ns(pid);
        double el = now_s() - t_start;
        printf("{\"datagrams\": %llu, \"seconds\": %.3f, \"server_cpu_ns\": %llu, \"resends\": %llu}\n",
               (unsigned long long)count, el, (unsigned long long)(cpu1 - cpu0),
               (unsigned long long)lost_resends);
    }
    return 0;
}

static int tcp_mode(int argc, char **argv) {
    int port, conns, ep, i;
    double secs, t_end;
    struct sockaddr_in to;
    uint64_t *got, mn = UINT64_MAX, mx = 0;
    int *fds;
    char buf[65536];
    if (argc < 5) return 2;
    port = atoi(argv[2]);
    conns = atoi(argv[3]);
    secs = atof(argv[4]);
    got = calloc((size_t)conns, sizeof *got);
    fds = calloc((size_t)conns, sizeof *fds);
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ep = epoll_create1(0);
    for (i = 0; i < conns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fds[i], (struct sockaddr *)&to, sizeof to) < 0) {
            perror("connect");
            return 1;
        }
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    printf("connected\n");
    fflush(stdout);
    t_end = now_s() + secs;
    while (now_s() < t_end) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 100), k;
        for (k = 0; k < n; k++) {
            uint32_t c = evs[k].data.u32;
            ssize_t r = recv(fds[c], buf, sizeof buf, MSG_DONTWAIT);
            if (r > 0) got[c] += (uint64_t)r;
        }
    }
    for (i = 0; i < conns; i++) {
        if (got[i] < mn) mn = got[i];
        if (got[i] > mx) mx = got[i];
    }
    printf("{\"conns\": %d, \"min_bytes\": %llu, \"max_bytes\": %llu}\n", conns,
           (unsigned long long)mn, (unsigned long long)mx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "udp") == 0) return udp_mode(argc, argv);
    if (argc > 1 && strcmp(argv[1], "tcp") == 0) return tcp_mode(argc, argv);
    fprintf(stderr, "usage: see the comment at the top of game_load.c\n");
    return 2;
}
