/*
 * main() of imagen-worker: flags → logging → imagen_worker_run() (job loop,
 * lease renewal, /healthz + /metrics) → exit status. SIGTERM and SIGINT are
 * blocked before any thread exists so that only the worker's signalfd sees
 * them. This file only parses and wires; the worker lives in src/worker/.
 *
 * Exit statuses: 0 clean stop, 1 runtime failure (queue cannot be opened,
 * metrics port taken), 2 usage error.
 */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"
#include "queue/queue.h"
#include "worker/operation.h"
#include "worker/worker.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

typedef struct worker_cli {
    imagen_worker_options opts;
    const char *ops_arg; /* --ops as given, for --check-config */
    char *default_queue; /* owned: imagen_queue_default_url() when --queue is absent */
    int log_verbose;
    bool check_config;
    bool help;
} worker_cli;

static void
print_help(FILE *f)
{
    fprintf(f, "Usage: imagen-worker [flags]\n"
               "\n"
               "Pulls image jobs from a queue, runs them against imagen-server over gRPC and\n"
               "stores the results. Stops cleanly on SIGTERM or SIGINT (finishes and acks the\n"
               "jobs in hand, then exits 0).\n"
               "\n"
               "Flags (--flag=value or --flag value):\n"
               "  --ops LIST             comma-separated operations to serve (default: all)\n");
    for (size_t i = 0; i < imagen_operation_count; i++)
        fprintf(f, "                           %-18s %s\n", imagen_operations[i].name,
                imagen_operations[i].help ? imagen_operations[i].help : "");
    fprintf(f,
            "  --queue URL            sqlite:///path/queue.db or redis://host:port[/db]\n"
            "                         (default: $IMAGEN_QUEUE, else a sqlite file in the user's data directory)\n"
            "  --server URL           imagen-server gRPC endpoint (default %s)\n"
            "  --concurrency N        job threads (default 1)\n"
            "  --prefetch N           jobs leased ahead per thread beyond the one in hand (default 0)\n"
            "  --max-attempts N       deliveries before a failing job goes to the dead letters (default %d)\n"
            "  --lease-seconds N      job lease length, renewed every third of it while a job runs (default %d)\n"
            "  --metrics-port N       port of /healthz and /metrics; 0 = off (default %d)\n"
            "  --metrics-address IP   address to listen on for /healthz and /metrics (default %s)\n"
            "  --name NAME            consumer name in the queue (default <hostname>-<pid>)\n"
            "  --shm auto|on|off      system shared memory with a server on this machine (default auto)\n"
            "  --tile-size N          upscale tile side in input pixels (default 256)\n"
            "  --log-verbose N        verbose logging level; 0 = off (default 0)\n"
            "  --check-config         print the effective configuration and exit without opening anything\n"
            "  --help                 this text\n"
            "\n"
            "Exit status: 0 clean stop, 1 runtime failure, 2 usage error.\n",
            IMAGEN_WORKER_DEFAULT_SERVER, IMAGEN_WORKER_DEFAULT_MAX_ATTEMPTS, IMAGEN_WORKER_DEFAULT_LEASE_SECONDS,
            IMAGEN_WORKER_DEFAULT_METRICS_PORT, IMAGEN_WORKER_DEFAULT_METRICS_ADDRESS);
}

static bool usage_error(const char *fmt, ...) IMAGEN_PRINTF(1, 2);

/* Prints "imagen-worker: <message>" and a pointer to --help; returns false
 * so parsers can `return usage_error(...)`. */
static bool
usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "imagen-worker: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'imagen-worker --help'.\n");
    va_end(ap);
    return false;
}

static bool
parse_int(const char *flag, const char *value, int min, int max, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || v < min || v > max) {
        return usage_error("%s needs an integer in %d..%d, not '%s'", flag, min, max, value);
    }
    *out = (int)v;
    return true;
}

/* --ops "a,b,c": each name must be in the operation table; repeats are
 * kept once. */
static bool
parse_ops(const char *value, imagen_worker_options *opts)
{
    opts->n_ops = 0;
    const size_t max_ops = sizeof(opts->ops) / sizeof(opts->ops[0]);
    const char *p = value;
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[IMAGEN_QUEUE_OP_MAX + 1];
        if (len == 0 || len > IMAGEN_QUEUE_OP_MAX) {
            snprintf(name, sizeof(name), "%.*s", (int)(len > IMAGEN_QUEUE_OP_MAX ? IMAGEN_QUEUE_OP_MAX : len), p);
            return usage_error("--ops: unknown operation '%s'", name);
        }
        memcpy(name, p, len);
        name[len] = '\0';
        const imagen_operation *op = imagen_operation_find(name);
        if (op == NULL) {
            char known[512] = "";
            for (size_t i = 0; i < imagen_operation_count; i++) {
                strncat(known, i ? ", " : " (known: ", sizeof(known) - strlen(known) - 1);
                strncat(known, imagen_operations[i].name, sizeof(known) - strlen(known) - 1);
            }
            strncat(known, ")", sizeof(known) - strlen(known) - 1);
            return usage_error("--ops: unknown operation '%s'%s", name, known);
        }
        bool seen = false;
        for (size_t i = 0; i < opts->n_ops; i++)
            seen = seen || opts->ops[i] == op;
        if (!seen && opts->n_ops < max_ops)
            opts->ops[opts->n_ops++] = op;
        p += len;
        if (*p == ',')
            p++;
    }
    if (opts->n_ops == 0)
        return usage_error("--ops needs at least one operation");
    return true;
}

/* Flags that take a value; the rest (--check-config, --help) do not. */
static const char *const value_flags[] = {
    "--ops",          "--queue",         "--server",       "--concurrency",     "--prefetch",
    "--max-attempts", "--lease-seconds", "--metrics-port", "--metrics-address", "--name",
    "--shm",          "--tile-size",     "--log-verbose"};

static bool
apply_flag(worker_cli *cli, const char *flag, const char *value)
{
    imagen_worker_options *o = &cli->opts;
    if (strcmp(flag, "--ops") == 0) {
        cli->ops_arg = value;
        return parse_ops(value, o);
    }
    if (strcmp(flag, "--queue") == 0) {
        if (value[0] == '\0')
            return usage_error("--queue needs a URL");
        o->queue_url = value;
        return true;
    }
    if (strcmp(flag, "--server") == 0) {
        if (value[0] == '\0')
            return usage_error("--server needs a URL");
        o->server_url = value;
        return true;
    }
    if (strcmp(flag, "--concurrency") == 0)
        return parse_int(flag, value, 1, 256, &o->concurrency);
    if (strcmp(flag, "--prefetch") == 0)
        return parse_int(flag, value, 0, 64, &o->prefetch);
    if (strcmp(flag, "--max-attempts") == 0)
        return parse_int(flag, value, 1, 1000, &o->max_attempts);
    if (strcmp(flag, "--lease-seconds") == 0)
        return parse_int(flag, value, 1, 86400, &o->lease_seconds);
    if (strcmp(flag, "--metrics-port") == 0)
        return parse_int(flag, value, 0, 65535, &o->metrics_port);
    if (strcmp(flag, "--metrics-address") == 0) {
        o->metrics_address = value;
        return true;
    }
    if (strcmp(flag, "--name") == 0) {
        if (value[0] == '\0')
            return usage_error("--name needs a non-empty name");
        o->name = value;
        return true;
    }
    if (strcmp(flag, "--shm") == 0) {
        if (strcmp(value, "auto") == 0)
            o->use_shm = -1;
        else if (strcmp(value, "on") == 0)
            o->use_shm = 1;
        else if (strcmp(value, "off") == 0)
            o->use_shm = 0;
        else
            return usage_error("--shm: '%s' is not one of auto, on, off", value);
        return true;
    }
    if (strcmp(flag, "--tile-size") == 0)
        return parse_int(flag, value, 16, 4096, &o->tile_size);
    if (strcmp(flag, "--log-verbose") == 0)
        return parse_int(flag, value, 0, INT_MAX, &cli->log_verbose);
    return usage_error("unknown flag '%s'", flag);
}

static bool
parse_args(int argc, char **argv, worker_cli *cli)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cli->help = true;
            continue;
        }
        if (strcmp(arg, "--check-config") == 0) {
            cli->check_config = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0)
            return usage_error("unexpected argument '%s'", arg);
        char flag[64];
        const char *eq = strchr(arg, '=');
        size_t flag_len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (flag_len >= sizeof(flag))
            return usage_error("unknown flag '%s'", arg);
        memcpy(flag, arg, flag_len);
        flag[flag_len] = '\0';
        bool takes_value = false;
        for (size_t k = 0; k < sizeof(value_flags) / sizeof(value_flags[0]); k++)
            takes_value = takes_value || strcmp(flag, value_flags[k]) == 0;
        if (!takes_value)
            return usage_error("unknown flag '%s'", flag);
        const char *value = eq ? eq + 1 : NULL;
        if (value == NULL) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", flag);
            value = argv[++i];
        }
        if (!apply_flag(cli, flag, value))
            return false;
    }
    return true;
}

static void
print_config(const worker_cli *cli)
{
    const imagen_worker_options *o = &cli->opts;
    printf("ops: ");
    for (size_t i = 0; i < o->n_ops; i++)
        printf("%s%s", i ? "," : "", o->ops[i]->name);
    printf("\nqueue: %s\n", o->queue_url);
    printf("server: %s\n", o->server_url);
    printf("concurrency: %d\n", o->concurrency);
    printf("prefetch: %d\n", o->prefetch);
    printf("max_attempts: %d\n", o->max_attempts);
    printf("lease_seconds: %d\n", o->lease_seconds);
    printf("metrics_port: %d\n", o->metrics_port);
    printf("metrics_address: %s\n", o->metrics_address);
    printf("name: %s\n", o->name ? o->name : "(hostname-pid)");
    printf("shm: %s\n", o->use_shm < 0 ? "auto" : o->use_shm ? "on" : "off");
    if (o->tile_size > 0)
        printf("tile_size: %d\n", o->tile_size);
    else
        printf("tile_size: default\n");
    printf("log_verbose: %d\n", cli->log_verbose);
}

int
main(int argc, char **argv)
{
    uint64_t start_ns = imagen_time_now_ns();
    /* Before any thread exists (libraries start some), so all inherit it. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* libvips loads its optional format modules (ImageMagick, poppler,
     * OpenSlide, HEIF, JPEG XL) from <prefix>/lib at start-up: about 20 ms
     * and 6 MiB resident for formats jobs never use (JPEG, PNG and WebP are
     * built in). A prefix without modules skips them; a VIPSHOME set by the
     * user wins. */
    setenv("VIPSHOME", "/nonexistent/imagen-worker-without-vips-modules", 0);
    /* Image buffers are megabytes and live for one job. glibc raises its
     * mmap threshold after the first such buffer is freed, and from then on
     * keeps them in per-thread heaps that never shrink: a worker's resident
     * size would stay at its largest job forever. A fixed threshold keeps
     * them in their own mappings, returned to the system when freed. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);

    worker_cli cli;
    memset(&cli, 0, sizeof(cli));
    imagen_worker_options_init(&cli.opts);
    cli.opts.start_ns = start_ns;
    if (!parse_args(argc, argv, &cli))
        return EXIT_USAGE;
    if (cli.help) {
        print_help(stdout);
        return 0;
    }
    if (cli.opts.queue_url == NULL) {
        cli.default_queue = imagen_queue_default_url();
        if (cli.default_queue == NULL) {
            fprintf(stderr, "imagen-worker: no --queue given and no default queue location (set $IMAGEN_QUEUE or "
                            "$HOME)\n");
            return EXIT_USAGE;
        }
        cli.opts.queue_url = cli.default_queue;
    }
    imagen_error *url_err = imagen_queue_url_check(cli.opts.queue_url);
    if (url_err != NULL) {
        fprintf(stderr, "imagen-worker: %s\n", imagen_error_message(url_err));
        imagen_error_free(url_err);
        free(cli.default_queue);
        return EXIT_USAGE;
    }
    if (cli.check_config) {
        print_config(&cli);
        free(cli.default_queue);
        return 0;
    }
    imagen_log_set_verbose(cli.log_verbose);

    imagen_error *err = imagen_worker_run(&cli.opts);
    int status = 0;
    if (err != NULL) {
        IMAGEN_LOG_ERROR_("cli", "imagen-worker: %s", imagen_error_message(err));
        status = imagen_error_code_of(err) == IMAGEN_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_RUNTIME;
        imagen_error_free(err);
    }
    free(cli.default_queue);
    return status;
}
