/*
 * main() of imagen-server: flags -> logging -> server core -> HTTP, gRPC and
 * metrics endpoints -> wait for SIGINT/SIGTERM -> graceful drain -> exit.
 * SIGINT and SIGTERM are blocked before any thread exists, so every thread
 * inherits the mask and only the main thread ever sees them (via signalfd).
 * The drain runs on a helper thread so that the main thread can still react
 * to a second signal by exiting at once. This file must never serve
 * requests or touch models itself; it only wires the modules together.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <malloc.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "backends/registry.h"
#include "cli/flags.h"
#include "common/signals.h"
#include "common/log.h"
#include "grpc/grpc_frontend.h"
#include "http/http.h"
#include "imagen/server.h"
#include "shm/shm.h"

#define COMPONENT "cli"

/* Exit statuses besides 0 and IMAGEN_CLI_EXIT_USAGE. */
#define EXIT_STARTUP_FAILED 1      /* server, endpoint or log file could not start */
#define EXIT_UNCLEAN 1             /* drain timed out, or a second signal arrived */
#define IDLE_TRIM_INTERVAL_MS 2000 /* how often an idle server returns free heap pages */

/* What the shutdown thread tears down; written by main before the thread
 * starts, `remaining` by the thread before it signals `done_fd`. */
typedef struct shutdown_ctx {
    imagen_server *server;
    imagen_http *http;       /* NULL when --allow-http=false */
    imagen_grpc *grpc;       /* NULL when --allow-grpc=false */
    imagen_metrics *metrics; /* NULL when --allow-metrics=false */
    imagen_shm *shm;         /* NULL when --allow-client-shm=false; shared by HTTP and gRPC */
    int done_fd;             /* eventfd written when the thread finishes */
    size_t remaining;        /* requests still in flight when the drain gave up */
} shutdown_ctx;

/* Quiesce HTTP and gRPC (no new calls; open ones complete), drain the core (bounded by --exit-timeout-secs), then free
 * everything unless requests are still executing (freeing would wait for
 * them, defeating the bound). */
static void *
shutdown_main(void *arg)
{
    shutdown_ctx *ctx = arg;
    if (ctx->http != NULL)
        imagen_http_quiesce(ctx->http);
    if (ctx->grpc != NULL)
        imagen_grpc_quiesce(ctx->grpc);
    ctx->remaining = imagen_server_stop(ctx->server);
    if (ctx->remaining == 0) {
        /* Every inference completed; gRPC waits for their replies to go out. */
        imagen_grpc_destroy(ctx->grpc);
        imagen_metrics_destroy(ctx->metrics);
        imagen_http_destroy(ctx->http);
        imagen_server_destroy(ctx->server);
        imagen_shm_destroy(ctx->shm);
    }
    uint64_t one = 1;
    while (ctx->done_fd >= 0 && write(ctx->done_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    return NULL;
}

/* Allocator policy. glibc's own environment settings win: MALLOC_ARENA_MAX
 * and MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ leave the matching
 * choice below alone.
 * - One malloc arena for every thread. Request payloads (megabytes for
 *   images) are allocated on one thread (a completion-queue or HTTP thread
 *   receiving, the instance computing) and freed on another; with an arena
 *   per thread each arena keeps the pages of the largest burst it once
 *   served and the resident size grows towards the sum of those peaks (2-3
 *   times the payloads in flight at concurrency 16). With one arena a freed
 *   payload's pages go to whichever thread allocates next, already mapped.
 *   The price is lock contention on small allocations: HTTP requests of a
 *   16-element tensor at concurrency 64 run about a third slower than with
 *   MALLOC_ARENA_MAX=4 (BENCHMARKS.md §1), which a deployment serving small
 *   tensors can set.
 * - Blocks up to ALLOC_MMAP_THRESHOLD_BYTES from the heap, never from a
 *   fresh mapping, and free space at the top of the heap kept up to
 *   ALLOC_TRIM_THRESHOLD_BYTES: otherwise, at concurrency 1, every payload
 *   freed at the top of the heap is handed back and the next one page-faults
 *   it in again (the 1024^2 rate fell by 40 %). What the heap keeps beyond
 *   that goes back when the server is idle (wait_for_signal's malloc_trim).
 * Measured with bench/grpc.sh (BENCHMARKS.md §6). */
#define ALLOC_MMAP_THRESHOLD_BYTES (32 << 20) /* glibc's largest */
#define ALLOC_TRIM_THRESHOLD_BYTES (32 << 20)
static void
set_allocator_policy(void)
{
    if (getenv("MALLOC_ARENA_MAX") == NULL)
        mallopt(M_ARENA_MAX, 1);
    if (getenv("MALLOC_MMAP_THRESHOLD_") == NULL)
        mallopt(M_MMAP_THRESHOLD, ALLOC_MMAP_THRESHOLD_BYTES);
    if (getenv("MALLOC_TRIM_THRESHOLD_") == NULL)
        mallopt(M_TRIM_THRESHOLD, ALLOC_TRIM_THRESHOLD_BYTES);
}

static const char *
signal_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

/* Applies the logging flags. Returns false if the log file cannot be opened. */
static bool
setup_logging(const imagen_cli_options *opts)
{
    imagen_log_set_enabled(IMAGEN_LOG_ERROR, opts->log_error);
    imagen_log_set_enabled(IMAGEN_LOG_WARNING, opts->log_warning);
    imagen_log_set_enabled(IMAGEN_LOG_INFO, opts->log_info);
    imagen_log_set_verbose(opts->log_verbose);
    imagen_log_set_format((imagen_log_format)opts->log_format);
    if (opts->log_file != NULL && !imagen_log_set_file(opts->log_file)) {
        fprintf(stderr, "imagen-server: cannot open --log-file '%s': %s\n", opts->log_file, strerror(errno));
        return false;
    }
    return true;
}

/* One log line for each flag that is accepted but has no effect yet. */
static void
log_flag_notes(const imagen_cli_options *opts)
{
    if (opts->strict_model_config)
        IMAGEN_LOG_WARN_(COMPONENT, "--strict-model-config is deprecated; use --disable-auto-complete-config");
    if (opts->load_models.n > 0 && opts->model_control_mode != IMAGEN_CLI_CONTROL_EXPLICIT)
        IMAGEN_LOG_WARN_(COMPONENT, "--load-model is ignored unless --model-control-mode=explicit");
    for (size_t i = 0; i < opts->backend_configs.n; i++)
        IMAGEN_LOG_VERBOSE_(COMPONENT, "--backend-config %s stored", opts->backend_configs.items[i]);
}

static void
fill_server_options(const imagen_cli_options *opts, imagen_server_options *so)
{
    imagen_server_options_init(so);
    so->model_repositories = opts->model_repositories.items;
    so->n_model_repositories = opts->model_repositories.n;
    so->control_mode = (imagen_model_control_mode)opts->model_control_mode;
    so->repository_poll_secs = opts->repository_poll_secs;
    so->startup_models = opts->load_models.items;
    so->n_startup_models = opts->load_models.n;
    so->model_config_name = opts->model_config_name;
    so->strict_readiness = opts->strict_readiness;
    so->exit_on_error = opts->exit_on_error;
    so->disable_auto_complete_config = opts->disable_auto_complete_config;
    so->backend_directory = opts->backend_directory;
    so->server_id = opts->id;
    so->model_load_thread_count = opts->model_load_thread_count;
    so->exit_timeout_secs = opts->exit_timeout_secs;
    so->cpu_threads = opts->cpu_threads;
    so->latency_histograms = opts->histogram_latencies;
    so->latency_summaries = opts->summary_latencies;
    if (opts->n_summary_quantiles > 0) {
        so->n_summary_quantiles = opts->n_summary_quantiles;
        memcpy(so->summary_quantiles, opts->summary_quantiles, opts->n_summary_quantiles * sizeof(double));
    }
    so->builtin_backends = imagen_builtin_backends;
    so->n_builtin_backends = imagen_builtin_backend_count;
}

/* Starts the endpoints the flags ask for, metrics first so that once HTTP
 * answers /v2/health/ready every endpoint is up. On failure logs the address
 * at fault and returns false; whatever started is left in *ctx for cleanup. */
static bool
start_endpoints(const imagen_cli_options *opts, shutdown_ctx *ctx)
{
    imagen_error *err;
    if (opts->allow_metrics) {
        imagen_metrics_options mo;
        imagen_metrics_options_init(&mo);
        mo.address = opts->metrics_address ? opts->metrics_address : opts->http_address;
        mo.port = opts->metrics_port;
        mo.counter_latencies = opts->counter_latencies;
        mo.histogram_latencies = opts->histogram_latencies;
        mo.summary_latencies = opts->summary_latencies;
        mo.allow_cpu_metrics = opts->allow_cpu_metrics;
        mo.interval_ms = (unsigned)opts->metrics_interval_ms;
        err = imagen_metrics_start(ctx->server, &mo, &ctx->metrics);
        if (err != NULL) {
            IMAGEN_LOG_ERROR_(COMPONENT, "failed to start Metrics Service at %s:%d: %s", mo.address, mo.port,
                              imagen_error_message(err));
            imagen_error_free(err);
            return false;
        }
        IMAGEN_LOG_INFO_(COMPONENT, "Started Metrics Service at %s:%d", mo.address, imagen_metrics_port(ctx->metrics));
    }
    if (opts->allow_http) {
        imagen_http_options ho;
        imagen_http_options_init(&ho);
        ho.address = opts->http_address;
        ho.port = opts->http_port;
        ho.thread_count = opts->http_thread_count;
        ho.max_input_size = opts->http_max_input_size;
        ho.reuse_port = opts->reuse_http_port;
        ho.shm = ctx->shm;
        err = imagen_http_start(ctx->server, &ho, &ctx->http);
        if (err != NULL) {
            IMAGEN_LOG_ERROR_(COMPONENT, "failed to start HTTP service at %s:%d: %s", ho.address, ho.port,
                              imagen_error_message(err));
            imagen_error_free(err);
            return false;
        }
        IMAGEN_LOG_INFO_(COMPONENT, "Started HTTPService at %s:%d", ho.address, imagen_http_port(ctx->http));
    }
    return true;
}

/* Starts gRPC before HTTP, so that once HTTP answers ready, gRPC is up too. */
static bool
start_grpc(const imagen_cli_options *opts, shutdown_ctx *ctx)
{
    if (!opts->allow_grpc)
        return true;
    imagen_grpc_options go;
    imagen_grpc_options_init(&go);
    go.address = opts->grpc_address;
    go.port = opts->grpc_port;
    go.cq_threads = opts->grpc_infer_thread_count;
    go.shm = ctx->shm;
    imagen_error *err = imagen_grpc_start(ctx->server, &go, &ctx->grpc);
    if (err != NULL) {
        IMAGEN_LOG_ERROR_(COMPONENT, "failed to start GRPC service at %s:%d: %s", go.address, go.port,
                          imagen_error_message(err));
        imagen_error_free(err);
        return false;
    }
    IMAGEN_LOG_INFO_(COMPONENT, "Started GRPCInferenceService at %s:%d", go.address, imagen_grpc_port(ctx->grpc));
    return true;
}

/* Waits for the first SIGINT/SIGTERM, then drains on a helper thread while
 * watching for a second one. Returns the process exit status (or does not
 * return: _exit on a second signal or an expired drain, skipping teardown
 * that could block). */
/* Waits for SIGINT/SIGTERM. Meanwhile, every IDLE_TRIM_INTERVAL_MS in which
 * no inference is in flight, hands the heap's free pages back to the system:
 * after a burst, each thread's malloc arena otherwise keeps the memory it
 * once needed (connection pools, request buffers) for as long as the
 * process lives. */
static int
wait_for_signal(int sfd, imagen_server *srv)
{
    struct pollfd pfd = {.fd = sfd, .events = POLLIN};
    for (;;) {
        int n = poll(&pfd, 1, IDLE_TRIM_INTERVAL_MS);
        if (n > 0 || (n < 0 && errno != EINTR))
            return imagen_signal_read(sfd);
        /* A trim of an already trimmed heap only walks the arenas. */
        if (n == 0 && imagen_server_inflight_count(srv) == 0)
            malloc_trim(0);
    }
}

static int
serve_until_signal(int sfd, shutdown_ctx *ctx, int exit_timeout_secs)
{
    int sig = wait_for_signal(sfd, ctx->server);
    IMAGEN_LOG_INFO_(COMPONENT, "received %s; shutting down (waiting up to %d s for in-flight requests)",
                     signal_name(sig), exit_timeout_secs);
    ctx->done_fd = eventfd(0, EFD_CLOEXEC);
    pthread_t tid;
    if (ctx->done_fd < 0 || pthread_create(&tid, NULL, shutdown_main, ctx) != 0) {
        /* No helper thread: drain here; a second signal waits until the end. */
        IMAGEN_LOG_WARN_(COMPONENT, "cannot start the shutdown thread; draining on the main thread");
        shutdown_main(ctx);
    } else {
        struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN}, {.fd = ctx->done_fd, .events = POLLIN}};
        for (;;) {
            if (poll(fds, 2, -1) < 0) {
                if (errno == EINTR)
                    continue;
                break;
            }
            if (fds[0].revents & POLLIN) {
                IMAGEN_LOG_ERROR_(COMPONENT, "received %s during shutdown; exiting immediately",
                                  signal_name(imagen_signal_read(sfd)));
                _exit(EXIT_UNCLEAN);
            }
            if (fds[1].revents & POLLIN)
                break;
        }
        pthread_join(tid, NULL);
    }
    if (ctx->remaining > 0) {
        IMAGEN_LOG_ERROR_(COMPONENT, "exit timeout of %d s expired with %zu requests in flight; exiting",
                          exit_timeout_secs, ctx->remaining);
        _exit(EXIT_UNCLEAN);
    }
    if (ctx->done_fd >= 0)
        close(ctx->done_fd);
    IMAGEN_LOG_INFO_(COMPONENT, "shutdown complete");
    return 0;
}

/* Starts the server from parsed flags and runs it until a signal. */
static int
run(const imagen_cli_options *opts, const sigset_t *sigs)
{
    int sfd = signalfd(-1, sigs, SFD_CLOEXEC);
    if (sfd < 0) {
        IMAGEN_LOG_ERROR_(COMPONENT, "signalfd: %s", strerror(errno));
        return EXIT_STARTUP_FAILED;
    }
    IMAGEN_LOG_INFO_(COMPONENT, "imagen-server %s (Triton protocol %s) starting, id '%s', %d CPU threads",
                     IMAGEN_VERSION_STRING, IMAGEN_TRITON_COMPAT_VERSION, opts->id, opts->cpu_threads);
    log_flag_notes(opts);

    imagen_server_options so;
    fill_server_options(opts, &so);
    shutdown_ctx ctx = {.done_fd = -1};
    imagen_error *err = imagen_server_create(&so, &ctx.server);
    if (err != NULL) {
        IMAGEN_LOG_ERROR_(COMPONENT, "failed to create server: %s", imagen_error_message(err));
        imagen_error_free(err);
        close(sfd);
        return EXIT_STARTUP_FAILED;
    }
    /* One registry for both frontends: a region registered over HTTP is
     * usable over gRPC, as in Triton. */
    if (opts->allow_client_shm && (err = imagen_shm_create(&ctx.shm)) != NULL) {
        IMAGEN_LOG_ERROR_(COMPONENT, "failed to create the shared-memory registry: %s", imagen_error_message(err));
        imagen_error_free(err);
        imagen_server_destroy(ctx.server);
        close(sfd);
        return EXIT_STARTUP_FAILED;
    }
    if (!start_grpc(opts, &ctx) || !start_endpoints(opts, &ctx)) {
        imagen_grpc_destroy(ctx.grpc);
        imagen_metrics_destroy(ctx.metrics);
        imagen_http_destroy(ctx.http);
        imagen_server_destroy(ctx.server);
        imagen_shm_destroy(ctx.shm);
        close(sfd);
        return EXIT_STARTUP_FAILED;
    }
    int status = serve_until_signal(sfd, &ctx, opts->exit_timeout_secs);
    close(sfd);
    return status;
}

int
main(int argc, char **argv)
{
    set_allocator_policy();
    /* Before any thread exists, so that every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    /* A shell starting us in the background may have set SIGINT to SIG_IGN,
     * which would discard it before signalfd sees it; blocked, the default
     * action never runs. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);

    imagen_cli_options opts;
    imagen_cli_options_init(&opts);
    char err[512];
    int status = 0;
    switch (imagen_cli_parse(&opts, argc, argv, err, sizeof(err))) {
    case IMAGEN_CLI_HELP:
        imagen_cli_print_help(stdout, "imagen-server");
        break;
    case IMAGEN_CLI_VERSION:
        printf("imagen-server %s (Triton protocol %s)\n", IMAGEN_VERSION_STRING, IMAGEN_TRITON_COMPAT_VERSION);
        break;
    case IMAGEN_CLI_CHECKED:
        break;
    case IMAGEN_CLI_ERROR:
        fprintf(stderr, "imagen-server: %s\n", err);
        status = IMAGEN_CLI_EXIT_USAGE;
        break;
    case IMAGEN_CLI_RUN:
        status = setup_logging(&opts) ? run(&opts, &sigs) : EXIT_STARTUP_FAILED;
        break;
    }
    imagen_cli_options_free(&opts);
    return status;
}
