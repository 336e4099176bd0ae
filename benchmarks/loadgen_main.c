/* Standalone load generator: csrc/loadgen.c behind a command line, printing one JSON object.
 * benchmarks/run.py builds it with gcc so the harness needs no Python on the load generator's
 * core; `python -m bunsock.bench.loadgen` takes the same flags and prints the same keys.
 *
 *   loadgen --port P [--host 127.0.0.1] [--conns 1] [--pipeline 1] [--size 64] [--duration 5]
 *           [--warmup 1] [--mode echo|idle] [--server-pid PID] [--connect-timeout 10]
 *
 * Idle mode prints "ready" on its own line once every connection is up and has echoed once,
 * then holds them until stdin becomes readable or closes (or --duration seconds, if > 0).
 */
#include "loadgen.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    fprintf(stderr, "usage: loadgen --port P [--host H] [--conns N] [--pipeline N] [--size BYTES]\n"
                    "               [--duration S] [--warmup S] [--mode echo|idle] [--server-pid PID]\n"
                    "               [--connect-timeout S]\n");
    exit(2);
}

static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

int main(int argc, char **argv)
{
    lg_config cfg;
    lg_result r;
    int i, rc;
    const char *mode = "echo";

    lg_config_init(&cfg);
    cfg.port = 0;
    for (i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        i++;
        if (!strcmp(k, "--host"))
            cfg.host = v;
        else if (!strcmp(k, "--port"))
            cfg.port = atoi(v);
        else if (!strcmp(k, "--conns"))
            cfg.conns = atoi(v);
        else if (!strcmp(k, "--pipeline"))
            cfg.pipeline = atoi(v);
        else if (!strcmp(k, "--size"))
            cfg.msg_size = atoll(v);
        else if (!strcmp(k, "--duration"))
            cfg.duration = atof(v);
        else if (!strcmp(k, "--warmup"))
            cfg.warmup = atof(v);
        else if (!strcmp(k, "--server-pid"))
            cfg.server_pid = atoi(v);
        else if (!strcmp(k, "--connect-timeout"))
            cfg.connect_timeout = atof(v);
        else if (!strcmp(k, "--mode"))
            mode = v;
        else
            usage();
    }
    if (!strcmp(mode, "idle")) {
        cfg.mode = LG_MODE_IDLE;
        cfg.ready_fd = 1;
        cfg.stop_fd = 0;
        cfg.warmup = 0;
    } else if (strcmp(mode, "echo") != 0) {
        usage();
    }
    signal(SIGPIPE, SIG_IGN); /* a server that resets must become an error count, not kill us */

    rc = lg_run(&cfg, &r);
    printf("{\"mode\": \"%s\", \"conns\": %d, \"pipeline\": %d, \"size\": %lld, ", mode, cfg.conns,
           cfg.pipeline, (long long)cfg.msg_size);
    printf("\"messages\": %llu, \"bytes\": %llu, \"elapsed\": %.6f, ", (unsigned long long)r.messages,
           (unsigned long long)r.bytes, r.elapsed);
    printf("\"p50_us\": %.3f, \"p99_us\": %.3f, \"max_us\": %.3f, \"mean_us\": %.3f, ", r.p50_us, r.p99_us,
           r.max_us, r.mean_us);
    printf("\"server_cpu_ns\": %lld, \"client_cpu_ns\": %lld, ", (long long)r.server_cpu_ns,
           (long long)r.client_cpu_ns);
    printf("\"connected\": %d, \"connect_errors\": %d, \"content_errors\": %d, \"closed_errors\": %d, ",
           r.connected, r.connect_errors, r.content_errors, r.closed_errors);
    printf("\"ok\": %s, \"error\": ", rc == 0 ? "true" : "false");
    if (r.error[0])
        print_json_string(r.error);
    else
        printf("null");
    printf("}\n");
    /* Non-zero on any error, so a shell script notices; the JSON says which. */
    return (rc == 0 && r.connect_errors + r.content_errors + r.closed_errors == 0) ? 0 : 1;
}
