/*
 * Shared fixtures of the batcher unit tests: a hand-built model config (the
 * tests do not go through the config parser), items with an id, a recorder
 * for on_reject, and a thread that makes one next_batch call in the
 * background.
 */
#ifndef IMAGEN_TEST_BATCHER_UTIL_H
#define IMAGEN_TEST_BATCHER_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "common/time.h"
#include "core/batcher.h"
#include "test.h"

#define TB_MAX_LEVELS 8
#define TB_MAX_BATCH 64

typedef struct tb_config {
    imagen_model_config cfg;
    int32_t pref[8];
    imagen_queue_policy policies[TB_MAX_LEVELS + 1]; /* index 1..levels */
} tb_config;

/* max_batch_size `mbs`; dynamic_batching present when `dyn`; preferred
 * sizes from the 0-terminated list `pref` (NULL = none). */
static inline void
tb_config_init(tb_config *tc, int32_t mbs, bool dyn, const int32_t *pref)
{
    memset(tc, 0, sizeof(*tc));
    tc->cfg.name = "m";
    tc->cfg.max_batch_size = mbs;
    tc->cfg.has_dynamic_batching = dyn;
    size_t n = 0;
    while (pref && pref[n] && n < 8) {
        tc->pref[n] = pref[n];
        n++;
    }
    tc->cfg.dynamic_batching.preferred_batch_sizes = n ? tc->pref : NULL;
    tc->cfg.dynamic_batching.n_preferred_batch_sizes = n;
}

/* Turns on K priority levels; every level starts with the default policy. */
static inline void
tb_config_levels(tb_config *tc, uint64_t k, uint64_t default_level)
{
    tc->cfg.dynamic_batching.priority_levels = k;
    tc->cfg.dynamic_batching.default_priority_level = default_level;
    for (uint64_t l = 1; l <= k; l++)
        tc->policies[l] = tc->cfg.dynamic_batching.default_queue_policy;
    tc->cfg.dynamic_batching.level_policies = tc->policies;
}

typedef struct tb_item {
    imagen_batch_item item; /* first, so an item pointer is a tb_item pointer */
    int id;
    atomic_int delivered;
    atomic_int rejected;
} tb_item;

static inline void
tb_item_init(tb_item *t, int id, uint64_t size)
{
    memset(t, 0, sizeof(*t));
    t->id = id;
    t->item.batch_size = size;
    atomic_init(&t->delivered, 0);
    atomic_init(&t->rejected, 0);
}

#define TB_ID(p) (((tb_item *)(p))->id)

/* Records every on_reject call. */
typedef struct tb_rejects {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
    int ids[256];
    imagen_error_code codes[256];
    char messages[256][64];
    imagen_fail_reason reasons[256];
} tb_rejects;

static inline void
tb_rejects_init(tb_rejects *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static inline void
tb_rejects_fini(tb_rejects *r)
{
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

static inline void
tb_on_reject(void *ctx, imagen_batch_item *item, imagen_error *err, imagen_fail_reason reason)
{
    tb_rejects *r = ctx;
    tb_item *t = (tb_item *)item;
    atomic_fetch_add(&t->rejected, 1);
    pthread_mutex_lock(&r->mu);
    if (r->count < 256) {
        r->ids[r->count] = t->id;
        r->codes[r->count] = imagen_error_code_of(err);
        snprintf(r->messages[r->count], sizeof(r->messages[0]), "%s", imagen_error_message(err));
        r->reasons[r->count] = reason;
    }
    r->count++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    imagen_error_free(err);
}

/* Waits (up to `ms`) until at least `n` rejections were recorded. */
static inline int
tb_rejects_wait(tb_rejects *r, int n, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->mu);
    while (r->count < n) {
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0)
            break;
    }
    int c = r->count;
    pthread_mutex_unlock(&r->mu);
    return c;
}

static inline imagen_batcher *
tb_batcher(const tb_config *tc, tb_rejects *r, size_t delay_until)
{
    imagen_batcher_options o;
    memset(&o, 0, sizeof(o));
    o.config = &tc->cfg;
    o.n_instances = 1;
    o.on_reject = tb_on_reject;
    o.ctx = r;
    o.delay_until_count = delay_until;
    imagen_batcher *b = NULL;
    CHECK_OK(imagen_batcher_create(&o, &b));
    return b;
}

/* Takes one batch and returns its ids in `ids` (count returned). Returns 0
 * at once when nothing is queued, so that a wrong batch composition fails
 * the test instead of blocking it forever. */
static inline size_t
tb_take(imagen_batcher *b, int *ids)
{
    imagen_batch_item *out[TB_MAX_BATCH];
    if (imagen_batcher_pending_count(b) == 0)
        return 0;
    size_t n = imagen_batcher_next_batch(b, out, TB_MAX_BATCH);
    for (size_t i = 0; i < n; i++)
        ids[i] = TB_ID(out[i]);
    return n;
}

/* One next_batch call on a background thread. */
typedef struct tb_puller {
    imagen_batcher *b;
    pthread_t thread;
    imagen_batch_item *out[TB_MAX_BATCH];
    size_t n;
    atomic_bool done;
    uint64_t done_ns;
} tb_puller;

static inline void *
tb_puller_main(void *arg)
{
    tb_puller *p = arg;
    p->n = imagen_batcher_next_batch(p->b, p->out, TB_MAX_BATCH);
    p->done_ns = imagen_time_now_ns();
    atomic_store(&p->done, true);
    return NULL;
}

static inline void
tb_puller_start(tb_puller *p, imagen_batcher *b)
{
    memset(p, 0, sizeof(*p));
    p->b = b;
    atomic_init(&p->done, false);
    pthread_create(&p->thread, NULL, tb_puller_main, p);
}

static inline void
tb_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Joins the puller if it finishes within `ms`; otherwise shuts the batcher
 * down to unblock it (so a broken batcher fails the test rather than hanging
 * it) and returns false. */
static inline bool
tb_puller_join_within(tb_puller *p, int ms)
{
    for (int waited = 0; waited < ms && !atomic_load(&p->done); waited += 5)
        tb_sleep_ms(5);
    bool done = atomic_load(&p->done);
    if (!done)
        imagen_batcher_shutdown(p->b);
    pthread_join(p->thread, NULL);
    return done;
}

#endif
