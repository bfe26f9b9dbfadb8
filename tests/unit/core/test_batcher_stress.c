/* Multi-threaded tests for src/core/batcher.c: several producer threads
 * (enqueue, cancel) against several instance threads (next_batch,
 * complete), with queue timeouts firing meanwhile. Every accepted request
 * must come out exactly once, either executed or rejected; meant to run
 * clean under ASan and TSan. */
#include "test_batcher_util.h"

#define PRODUCERS 4
#define CONSUMERS 3
#define PER_PRODUCER 1500
#define TOTAL (PRODUCERS * PER_PRODUCER)

static const int64_t sig_a[] = {3, 64};
static const int64_t sig_b[] = {3, 32};

typedef struct stress {
    imagen_batcher *b;
    tb_item items[TOTAL];
    atomic_bool enqueue_failed[TOTAL];
    atomic_int bad_batches; /* batches that broke B_max or mixed shapes */
    atomic_int executed;
    atomic_ullong next_expected; /* preserve_ordering: next sequence to deliver */
    atomic_int out_of_order;
    uint64_t max_batch;
    bool ordered;
} stress;

typedef struct producer_arg {
    stress *s;
    int index;
} producer_arg;

static void *
producer_main(void *arg)
{
    producer_arg *pa = arg;
    stress *s = pa->s;
    unsigned seed = (unsigned)pa->index * 7919u + 1u;
    for (int i = 0; i < PER_PRODUCER; i++) {
        int id = pa->index * PER_PRODUCER + i;
        tb_item *t = &s->items[id];
        unsigned r = (unsigned)rand_r(&seed);
        tb_item_init(t, id, 1 + r % 3);
        t->item.priority = (r >> 4) % 4;
        t->item.shape_sig = ((r >> 8) & 1) ? sig_a : sig_b;
        t->item.shape_sig_len = 2;
        if ((r >> 10) % 10 == 0)
            t->item.timeout_us = 1 + (r >> 14) % 300;
        imagen_error *err = imagen_batcher_enqueue(s->b, &t->item);
        if (err) {
            atomic_store(&s->enqueue_failed[id], true);
            imagen_error_free(err);
            continue;
        }
        if ((r >> 16) % 13 == 0)
            imagen_batcher_cancel(s->b, &t->item);
        if ((r >> 20) % 64 == 0)
            sched_yield();
    }
    return NULL;
}

static void
stress_deliver(imagen_batch_item *item, void *ctx)
{
    stress *s = ctx;
    tb_item *t = (tb_item *)item;
    if (s->ordered) {
        unsigned long long want = atomic_fetch_add(&s->next_expected, 1);
        if (item->sequence != want)
            atomic_fetch_add(&s->out_of_order, 1);
    }
    atomic_fetch_add(&t->delivered, 1);
}

static void *
consumer_main(void *arg)
{
    stress *s = arg;
    imagen_batch_item *out[TB_MAX_BATCH];
    unsigned seed = 12345u;
    for (;;) {
        size_t n = imagen_batcher_next_batch(s->b, out, TB_MAX_BATCH);
        if (n == 0)
            break;
        uint64_t total = 0;
        for (size_t i = 0; i < n; i++) {
            total += out[i]->batch_size;
            if (out[i]->shape_sig != out[0]->shape_sig)
                atomic_fetch_add(&s->bad_batches, 1);
        }
        if (total > s->max_batch && n > 1)
            atomic_fetch_add(&s->bad_batches, 1);
        atomic_fetch_add(&s->executed, (int)n);
        /* Finish the batch's requests last to first, sometimes after a
         * pause, so completions cross between instances. */
        if (rand_r(&seed) % 8 == 0)
            sched_yield();
        for (size_t i = 0; i < n; i++)
            imagen_batcher_complete(s->b, out[n - 1 - i], stress_deliver, s);
    }
    return NULL;
}

static void
run_stress(tb_config *tc, bool ordered)
{
    static stress s;
    tb_rejects r;
    memset(&s, 0, sizeof(s));
    tb_rejects_init(&r);
    s.b = tb_batcher(tc, &r, 0);
    s.max_batch = (uint64_t)tc->cfg.max_batch_size;
    s.ordered = ordered;
    CHECK(imagen_batcher_preserves_ordering(s.b) == ordered);

    pthread_t prod[PRODUCERS], cons[CONSUMERS];
    producer_arg pa[PRODUCERS];
    for (int i = 0; i < CONSUMERS; i++)
        pthread_create(&cons[i], NULL, consumer_main, &s);
    for (int i = 0; i < PRODUCERS; i++) {
        pa[i].s = &s;
        pa[i].index = i;
        pthread_create(&prod[i], NULL, producer_main, &pa[i]);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(prod[i], NULL);
    imagen_batcher_shutdown(s.b);
    for (int i = 0; i < CONSUMERS; i++)
        pthread_join(cons[i], NULL);
    CHECK_INT_EQ(imagen_batcher_pending_count(s.b), 0);
    imagen_batcher_destroy(s.b);

    int once = 0, failed = 0, delivered = 0, rejected = 0;
    for (int i = 0; i < TOTAL; i++) {
        int d = atomic_load(&s.items[i].delivered), j = atomic_load(&s.items[i].rejected);
        if (atomic_load(&s.enqueue_failed[i])) {
            failed++;
            CHECK_INT_EQ(d + j, 0);
            continue;
        }
        delivered += d;
        rejected += j;
        if (d + j == 1)
            once++;
    }
    CHECK_INT_EQ(once + failed, TOTAL);
    CHECK_INT_EQ(delivered, atomic_load(&s.executed));
    CHECK_INT_EQ(rejected, r.count);
    CHECK_INT_EQ(atomic_load(&s.bad_batches), 0);
    CHECK_INT_EQ(atomic_load(&s.out_of_order), 0);
    CHECK(delivered > 0);
    fprintf(stderr, "     delivered %d, rejected %d, refused %d\n", delivered, rejected, failed);
    tb_rejects_fini(&r);
}

/* Priorities, per-level limits, timeouts (REJECT and DELAY), cancels. */
static void
test_stress_every_request_completes_once(void)
{
    static const int32_t p48[] = {4, 8, 0};
    tb_config tc;
    tb_config_init(&tc, 8, true, p48);
    tc.cfg.dynamic_batching.max_queue_delay_us = 200;
    tb_config_levels(&tc, 3, 2);
    tc.policies[1].default_timeout_us = 100000;
    tc.policies[1].allow_timeout_override = true;
    tc.policies[2].timeout_action = IMAGEN_TIMEOUT_DELAY;
    tc.policies[2].default_timeout_us = 50000;
    tc.policies[2].allow_timeout_override = true;
    tc.policies[3].max_queue_size = 40;
    run_stress(&tc, false);
}

/* preserve_ordering: deliveries come out in exact dequeue order although
 * instances finish their batches in any order. */
static void
test_stress_preserve_ordering_delivers_in_sequence(void)
{
    tb_config tc;
    tb_config_init(&tc, 4, true, NULL);
    tc.cfg.dynamic_batching.preserve_ordering = true;
    tc.cfg.dynamic_batching.default_queue_policy.default_timeout_us = 100000;
    tc.cfg.dynamic_batching.default_queue_policy.allow_timeout_override = true;
    run_stress(&tc, true);
}

/* Without dynamic_batching: single requests, still exactly once. */
static void
test_stress_default_scheduler(void)
{
    tb_config tc;
    tb_config_init(&tc, 8, false, NULL);
    run_stress(&tc, false);
}

int
main(void)
{
    RUN(test_stress_every_request_completes_once);
    RUN(test_stress_preserve_ordering_delivers_in_sequence);
    RUN(test_stress_default_scheduler);
    TEST_MAIN_END();
}
