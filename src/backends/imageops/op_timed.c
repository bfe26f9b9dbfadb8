/*
 * imageops operation `timed`: identity whose execution first sleeps
 * fixed_us + per_item_us x (sum of the batch's request batch sizes)
 * microseconds. It stands in for an accelerator kernel whose cost has a
 * fixed part and a per-item part, so batching and shutdown behaviour can be
 * measured without one. Execute runs on instance threads and blocks only in
 * that sleep.
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "backends/imageops/imageops.h"

/* Largest accepted fixed_us / per_item_us: one hour, so the product with a
 * batch size (at most IMAGEN_CONFIG_MAX_BATCH_SIZE per request) stays far
 * below UINT64_MAX. */
#define TIMED_MAX_US UINT64_C(3600000000)
/* Longest single sleep (one day): bounds the deadline arithmetic. */
#define TIMED_MAX_SLEEP_US UINT64_C(86400000000)

typedef struct timed_state {
    imagen__imageops_pairs pairs;
    uint64_t fixed_us;
    uint64_t per_item_us;
} timed_state;

static imagen_error *
timed_init(imagen_backend_model *model, void **state)
{
    timed_state *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory",
                                imagen_backend_model_name(model));
    imagen_error *err = imagen__imageops_param_u64(model, "fixed_us", 0, TIMED_MAX_US, &t->fixed_us);
    if (err == NULL)
        err = imagen__imageops_param_u64(model, "per_item_us", 0, TIMED_MAX_US, &t->per_item_us);
    if (err == NULL)
        err = imagen__imageops_pairs_init(model, &t->pairs);
    if (err != NULL) {
        free(t);
        return err;
    }
    *state = t;
    return NULL;
}

static void
timed_fini(void *state)
{
    timed_state *t = state;
    if (t == NULL)
        return;
    imagen__imageops_pairs_free(&t->pairs);
    free(t);
}

/* Sleeps `us` microseconds on CLOCK_MONOTONIC, resuming after signals. */
static void
sleep_us(uint64_t us)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t ns = (uint64_t)now.tv_nsec + (us % 1000000u) * 1000u;
    struct timespec until = {
        .tv_sec = now.tv_sec + (time_t)(us / 1000000u) + (time_t)(ns / 1000000000u),
        .tv_nsec = (long)(ns % 1000000000u),
    };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
        ;
}

static void
timed_execute(void *state, imagen__pool *pool, imagen_request **requests, size_t n)
{
    const timed_state *t = state;
    uint64_t items = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = imagen_backend_request_batch_size(requests[i]);
        items = (b > UINT64_MAX - items) ? UINT64_MAX : items + b;
    }
    uint64_t us = t->fixed_us;
    if (t->per_item_us != 0) {
        uint64_t extra = items > UINT64_MAX / t->per_item_us ? UINT64_MAX : items * t->per_item_us;
        us = extra > UINT64_MAX - us ? UINT64_MAX : us + extra;
    }
    if (us > TIMED_MAX_SLEEP_US)
        us = TIMED_MAX_SLEEP_US;
    if (us > 0)
        sleep_us(us);
    for (size_t i = 0; i < n; i++)
        imagen__imageops_pairs_copy(&t->pairs, requests[i]);
}

/* Row of the imageops operation table. */
const imagen__imageops_op imagen__imageops_timed_op = {
    .name = "timed",
    .init = timed_init,
    .fini = timed_fini,
    .execute = timed_execute,
};
