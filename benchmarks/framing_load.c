/* Load for benchmarks/framing_bench.py: CONNS TCP connections, each sending BATCH framed
 * messages of PAYLOAD bytes in one write and waiting until all BATCH come back as frames of the
 * same rule (so the echoed bytes equal the sent ones, checked byte for byte), then the next batch.
 *
 *   framing_load PORT CONNS BATCH PAYLOAD length|lines WARMUP_S SECONDS SERVER_PID
 *
 * length: 4-byte big-endian length prefix; lines: "\n"-terminated (payloads never contain it).
 * After WARMUP_S, for SECONDS, counts messages echoed and the server's CPU time (sum of
 * /proc/PID/task/x/schedstat). Prints one JSON line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
    char path[128], line[256];
    uint64_t total = 0;
    DIR *d;
    struct dirent *e;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    d = opendir(path);
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL) {
        FILE *f;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.20s/schedstat", pid, e->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(line, sizeof line, f))
            total += strtoull(line, NULL, 10);
        fclose(f);
    }
    closedir(d);
    return total;
}

typedef struct {
    int fd;
    char *batch;   /* the BATCH frames this connection sends each round */
    size_t sent, got;
} conn;

int main(int argc, char **argv) {
    int port, nconn, batch, payload, lines, pid, ep, i, errors = 0, measuring = 0;
    double warm, secs, t0, t_start = 0, t_end = 0;
    size_t blen, flen;
    uint64_t count = 0, cpu0 = 0, cpu1 = 0;
    char *rx;
    conn *cs;
    struct sockaddr_in to;
    struct epoll_event evs[256];
    if (argc != 9) {
        fprintf(stderr, "usage: framing_load PORT CONNS BATCH PAYLOAD length|lines WARMUP SECONDS PID\n");
        return 2;
    }
    port = atoi(argv[1]);
    nconn = atoi(argv[2]);
    batch = atoi(argv[3]);
    payload = atoi(argv[4]);
    lines = strcmp(argv[5], "lines") == 0;
    warm = atof(argv[6]);
    secs = atof(argv[7]);
    pid = atoi(argv[8]);
    flen = (size_t)payload + (lines ? 1 : 4);
    blen = flen * (size_t)batch;
    rx = malloc(blen + 65536);
    cs = calloc((size_t)nconn, sizeof *cs);
    ep = epoll_create1(0);
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons((unsigned short)port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (i = 0; i < nconn; i++) {
        conn *c = &cs[i];
        struct epoll_event ev;
        int one = 1, k, j;
        char *p;
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c->fd, (struct sockaddr *)&to, sizeof to) < 0) {
            perror("connect");
            return 1;
        }
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->batch = malloc(blen);
        p = c->batch;
        for (k = 0; k < batch; k++) {
            if (!lines) {
                p[0] = (char)((unsigned)payload >> 24);
                p[1] = (char)((unsigned)payload >> 16);
                p[2] = (char)((unsigned)payload >> 8);
                p[3] = (char)payload;
                p += 4;
            }
            for (j = 0; j < payload; j++)
                p[j] = (char)('a' + (i + k + j) % 26);
            p += payload;
            if (lines)
                *p++ = '\n';
        }
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    for (i = 0; i < nconn; i++) { /* blocking sockets: a batch is far below the buffer size */
        if (send(cs[i].fd, cs[i].batch, blen, 0) != (ssize_t)blen) {
            perror("send");
            return 1;
        }
    }
    t0 = now_s();
    for (;;) {
        double t = now_s();
        int n;
        if (!measuring && t - t0 >= warm) {
            measuring = 1;
            t_start = t;
            count = 0;
            cpu0 = server_cpu_ns(pid);
        } else if (measuring && t - t_start >= secs) {
            cpu1 = server_cpu_ns(pid);
            t_end = t;
            break;
        }
        n = epoll_wait(ep, evs, 256, 100);
        for (i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            ssize_t r = recv(c->fd, rx, blen - c->got, MSG_DONTWAIT);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                fprintf(stderr, "connection lost (%s)\n", r == 0 ? "EOF" : strerror(errno));
                return 1;
            }
            if (memcmp(rx, c->batch + c->got, (size_t)r) != 0)
                errors++;
            c->got += (size_t)r;
            if (c->got == blen) {
                c->got = 0;
                count += (uint64_t)batch;
                if (send(c->fd, c->batch, blen, 0) != (ssize_t)blen) {
                    perror("send");
                    return 1;
                }
            }
        }
    }
    printf("{\"messages\": %llu, \"elapsed\": %.6f, \"server_cpu_ns\": %llu, \"content_errors\": %d}\n",
           (unsigned long long)count, t_end - t_start, (unsigned long long)(cpu1 - cpu0), errors);
    for (i = 0; i < nconn; i++)
        close(cs[i].fd);
    return 0;
}
