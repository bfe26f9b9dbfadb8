/*
 * Fork-join pool for the image operations (see pool.h). One job at a time:
 * imagen__pool_for() publishes the job under the mutex, bumps a generation
 * counter and wakes the helpers; every participant (the caller included)
 * then claims chunks with an atomic counter until none is left. Every
 * helper takes part in every job (even if only to find the range empty),
 * and the caller waits until each has left it before returning: the job's
 * stack-allocated context then stays valid exactly as long as it is used,
 * and no helper can still be reading one job's fields when the next job
 * writes them.
 *
 * Chunks are claimed dynamically rather than split up front: rows of an
 * image do not all cost the same (edges, foreground), and a slow thread
 * (the machine may be busy with other instances) then simply takes fewer.
 */
#include "backends/imageops/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define POOL_MAX_THREADS 256

struct imagen__pool {
    size_t threads; /* participants, caller included */
    pthread_t *helpers;
    size_t n_helpers; /* started */

    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* helpers wait here for a new generation */
    pthread_cond_t done_cv; /* the caller waits here for pending == 0 */
    uint64_t generation;    /* bumped once per job */
    size_t pending;         /* helpers that have not finished the current job */
    bool stopping;

    /* The current job; written under mu before the generation bump. */
    imagen__pool_task task;
    void *ctx;
    size_t n, chunk;
    atomic_size_t next; /* next unclaimed index */
};

/* Claims and runs chunks until the range is exhausted. */
static void
run_chunks(imagen__pool *pool, size_t worker)
{
    for (;;) {
        size_t begin = atomic_fetch_add_explicit(&pool->next, pool->chunk, memory_order_relaxed);
        if (begin >= pool->n)
            return;
        size_t end = begin + pool->chunk < pool->n ? begin + pool->chunk : pool->n;
        pool->task(pool->ctx, begin, end, worker);
    }
}

typedef struct helper_arg {
    imagen__pool *pool;
    size_t worker;
} helper_arg;

static void *
helper_main(void *arg)
{
    helper_arg a = *(helper_arg *)arg;
    free(arg);
    imagen__pool *pool = a.pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->stopping && pool->generation == seen)
            pthread_cond_wait(&pool->work_cv, &pool->mu);
        if (pool->stopping)
            break;
        seen = pool->generation;
        pthread_mutex_unlock(&pool->mu);
        run_chunks(pool, a.worker);
        pthread_mutex_lock(&pool->mu);
        if (--pool->pending == 0)
            pthread_cond_signal(&pool->done_cv);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

imagen_error *
imagen__pool_create(size_t threads, imagen__pool **out)
{
    *out = NULL;
    if (threads == 0)
        threads = 1;
    if (threads > POOL_MAX_THREADS)
        threads = POOL_MAX_THREADS;
    imagen__pool *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops: out of memory for a thread pool");
    pool->threads = threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->work_cv, NULL);
    pthread_cond_init(&pool->done_cv, NULL);
    atomic_init(&pool->next, 0);
    if (threads > 1) {
        pool->helpers = calloc(threads - 1, sizeof(*pool->helpers));
        if (pool->helpers == NULL) {
            imagen__pool_destroy(pool);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops: out of memory for a thread pool");
        }
    }
    for (size_t i = 0; i + 1 < threads; i++) {
        helper_arg *a = malloc(sizeof(*a));
        int rc = -1;
        if (a != NULL) {
            a->pool = pool;
            a->worker = i + 1;
            rc = pthread_create(&pool->helpers[i], NULL, helper_main, a);
        }
        if (rc != 0) {
            free(a);
            imagen__pool_destroy(pool);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops: cannot start pool thread %zu of %zu", i + 2,
                                    threads);
        }
        pool->n_helpers++;
    }
    *out = pool;
    return NULL;
}

void
imagen__pool_destroy(imagen__pool *pool)
{
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);
    for (size_t i = 0; i < pool->n_helpers; i++)
        pthread_join(pool->helpers[i], NULL);
    pthread_cond_destroy(&pool->work_cv);
    pthread_cond_destroy(&pool->done_cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool->helpers);
    free(pool);
}

size_t
imagen__pool_threads(const imagen__pool *pool)
{
    return pool ? pool->threads : 1;
}

void
imagen__pool_for(imagen__pool *pool, size_t n, size_t grain, imagen__pool_task task, void *ctx)
{
    if (n == 0)
        return;
    if (grain == 0)
        grain = 1;
    if (pool == NULL || pool->threads == 1 || n <= grain) {
        task(ctx, 0, n, 0);
        return;
    }
    /* About four chunks per thread balances uneven rows without making
     * chunks so small that claiming them costs more than running them. */
    size_t chunk = n / (pool->threads * 4);
    if (chunk < grain)
        chunk = grain;
    pthread_mutex_lock(&pool->mu);
    pool->task = task;
    pool->ctx = ctx;
    pool->n = n;
    pool->chunk = chunk;
    atomic_store_explicit(&pool->next, 0, memory_order_relaxed);
    pool->pending = pool->n_helpers;
    pool->generation++;
    pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);

    run_chunks(pool, 0);

    /* A helper that wakes late finds the range exhausted and leaves at once;
     * wait for it so the next job cannot change task/ctx under it. */
    pthread_mutex_lock(&pool->mu);
    while (pool->pending > 0)
        pthread_cond_wait(&pool->done_cv, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}
