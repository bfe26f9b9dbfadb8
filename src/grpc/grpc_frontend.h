/*
 * The gRPC frontend: Triton's inference.GRPCInferenceService (spec §2) and
 * grpc.health.v1.Health/Check, on gRPC's C core library with protobuf-c
 * messages generated from proto/. It uses only the in-process API of
 * imagen/server.h.
 *
 * Threads: a few completion-queue threads of its own run every handler;
 * inference completions arrive on instance threads, which only serialize
 * the response and start the non-blocking send. Repository load/unload,
 * which block until the model is loaded, run on a short-lived helper thread
 * so that no completion-queue thread ever waits on a model.
 *
 * (Named grpc_frontend.h, not grpc.h: src/ is on the include path and a
 * src/grpc/grpc.h would shadow <grpc/grpc.h>.)
 */
#ifndef IMAGEN_GRPC_FRONTEND_H
#define IMAGEN_GRPC_FRONTEND_H

#include "imagen/error.h"
#include "imagen/server.h"
#include "shm/shm.h"

#define IMAGEN_GRPC_DEFAULT_PORT 8001
#define IMAGEN_GRPC_DEFAULT_CQ_THREADS 2 /* Triton's --grpc-infer-thread-count default */
#define IMAGEN_GRPC_MAX_CQ_THREADS 64
/* How long imagen_grpc_destroy() lets calls still open finish sending before
 * it cancels them. The core's own drain (--exit-timeout-secs) has already
 * completed every inference by then, so this only bounds slow readers. */
#define IMAGEN_GRPC_DRAIN_TIMEOUT_MS 5000

typedef struct imagen_grpc_options {
    const char *address; /* default "0.0.0.0" */
    int port;            /* default 8001; 0 = pick a free port */
    int cq_threads;      /* completion-queue threads; default 2 */
    imagen_shm *shm;     /* borrowed, must outlive the frontend; NULL = --allow-client-shm=false */
} imagen_grpc_options;

typedef struct imagen_grpc imagen_grpc;

/* Fills the defaults above. */
void imagen_grpc_options_init(imagen_grpc_options *opts);

/* Starts serving `srv` (borrowed; must outlive the frontend). *out is owned;
 * free with imagen_grpc_destroy(). Fails (and starts nothing) if the address
 * cannot be bound. Call from one thread at start-up. */
imagen_error *imagen_grpc_start(imagen_server *srv, const imagen_grpc_options *opts, imagen_grpc **out);

/* The port actually bound (useful with port 0). Thread-safe. */
int imagen_grpc_port(const imagen_grpc *grpc);

/* Stops accepting new calls; calls already accepted run to completion.
 * Returns at once. Thread-safe, idempotent. */
void imagen_grpc_quiesce(imagen_grpc *grpc);

/* Quiesces, waits up to IMAGEN_GRPC_DRAIN_TIMEOUT_MS for open calls to
 * finish (then cancels them), joins the completion-queue threads and frees.
 * Accepts NULL. Must not be called from a completion callback. */
void imagen_grpc_destroy(imagen_grpc *grpc);

#endif /* IMAGEN_GRPC_FRONTEND_H */
