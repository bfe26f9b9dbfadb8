/*
 * A small fork-join thread pool for the image operations. Each instance of
 * an imageops model owns one pool sized from the threads the core grants
 * that instance (imagen_backend_instance_info.cpu_threads, which divides
 * --cpu-threads among the model's instances), so instances never
 * oversubscribe the cores between them.
 *
 * The calling thread always takes part in the work: a pool of `threads`
 * starts threads - 1 helper threads, and a pool of 1 runs everything inline.
 * imagen__pool_for() is called by one thread at a time (whichever thread
 * executes for the instance); it is not reentrant (do not call it from
 * inside a task).
 */
#ifndef IMAGEN_BACKENDS_IMAGEOPS_POOL_H
#define IMAGEN_BACKENDS_IMAGEOPS_POOL_H

#include <stddef.h>

#include "imagen/error.h"

typedef struct imagen__pool imagen__pool;

/* A task over the half-open index range [begin, end). `worker` is the index
 * of the thread running it, in [0, imagen__pool_threads()), so tasks can use
 * per-thread scratch without locks. */
typedef void (*imagen__pool_task)(void *ctx, size_t begin, size_t end, size_t worker);

/* Creates a pool of `threads` (>= 1; larger values are capped at 256).
 * Fails INTERNAL when a thread cannot be started. */
imagen_error *imagen__pool_create(size_t threads, imagen__pool **out);
/* Joins the helper threads and frees the pool; accepts NULL. */
void imagen__pool_destroy(imagen__pool *pool);
/* Number of threads that run tasks, the caller included (>= 1). NULL → 1. */
size_t imagen__pool_threads(const imagen__pool *pool);

/* Runs task over [0, n) split into chunks of at least `grain` indices (0 is
 * taken as 1) and returns when every chunk has run. Chunks are handed out
 * dynamically, so uneven rows balance. `pool` may be NULL: everything then
 * runs on the caller as one chunk with worker 0. */
void imagen__pool_for(imagen__pool *pool, size_t n, size_t grain, imagen__pool_task task, void *ctx);

#endif /* IMAGEN_BACKENDS_IMAGEOPS_POOL_H */
