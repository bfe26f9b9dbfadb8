/*
 * imagen-worker's job loop, as one call for main(): open the queue, start
 * the /healthz + /metrics endpoint, run `concurrency` job threads until
 * SIGTERM or SIGINT, drain, return.
 *
 * Each job thread: pull one job → parse its spec → fetch the input →
 * pipeline (decode, pre, infer, post, encode) → write the output durably →
 * ack. The calling thread renews every held lease every third of the lease
 * length and watches for signals. Errors are classified as the queue and the
 * pipeline define them (see pipeline.h, storage.h): a bad job fails at once,
 * a transient error is retried by the queue with exponential backoff, and an
 * unreachable inference server holds the job (lease kept, no attempt used)
 * and pauses pulling until the server answers again.
 */
#ifndef IMAGEN_WORKER_WORKER_H
#define IMAGEN_WORKER_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"
#include "worker/operation.h"

#define IMAGEN_WORKER_DEFAULT_SERVER "grpc://localhost:8001"
#define IMAGEN_WORKER_DEFAULT_METRICS_PORT 8090
#define IMAGEN_WORKER_DEFAULT_METRICS_ADDRESS "0.0.0.0"
#define IMAGEN_WORKER_DEFAULT_MAX_ATTEMPTS 5
#define IMAGEN_WORKER_DEFAULT_LEASE_SECONDS 60
/* How long one inference call may take before it counts as the server not
 * answering (UNAVAILABLE: the job is held and tried again). Generous: a
 * large upscale is many batched requests, each well under this. */
#define IMAGEN_WORKER_INFER_TIMEOUT_MS 120000

typedef struct imagen_worker_options {
    const imagen_operation *ops[16]; /* the operations this worker serves */
    size_t n_ops;
    const char *queue_url;       /* required */
    const char *server_url;      /* gRPC URL of imagen-server */
    const char *name;            /* consumer name; NULL = "<hostname>-<pid>" */
    int concurrency;             /* job threads, >= 1 */
    int prefetch;                /* jobs pulled ahead per thread beyond the one in hand, >= 0 */
    int max_attempts;            /* deliveries before a job goes to the dead letters */
    int lease_seconds;           /* lease length; renewed every third of it */
    int metrics_port;            /* 0 = no /healthz and /metrics endpoint */
    const char *metrics_address; /* IP literal to listen on */
    int use_shm;                 /* -1 auto, 0 off, 1 on (pipeline.h) */
    int tile_size;               /* upscale tile side; 0 = the pipeline's default */
    uint64_t start_ns;           /* process start (imagen_time_now_ns), for the "worker ready" line */
} imagen_worker_options;

/* Fills the documented defaults (all operations, default server, ...);
 * queue_url stays NULL. */
void imagen_worker_options_init(imagen_worker_options *opts);

/* Runs the worker until SIGTERM or SIGINT and a clean drain; NULL then.
 * The caller must have blocked SIGTERM and SIGINT in every thread
 * (pthread_sigmask before any thread exists): this function takes them
 * through a signalfd. An error means the worker could not start (queue,
 * metrics endpoint, client) and names what failed. */
imagen_error *imagen_worker_run(const imagen_worker_options *opts);

#endif /* IMAGEN_WORKER_WORKER_H */
