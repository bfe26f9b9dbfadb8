/* Unit tests for src/core/batcher.c: batch formation (spec §5.3). */
#include "test_batcher_util.h"

static const int32_t P16[] = {16, 0};
static const int32_t P48[] = {4, 8, 0};

/* Enqueues items of the given sizes with ids 0, 1, ... */
static void
enqueue_sizes(imagen_batcher *b, tb_item *items, const uint64_t *sizes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tb_item_init(&items[i], (int)i, sizes[i]);
        CHECK_OK(imagen_batcher_enqueue(b, &items[i].item));
    }
}

/* Worked example 1: P = {16}, twenty requests of size 1 -> 16, then 4. */
static void
test_example_twenty_ones_give_16_then_4(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 16, true, P16);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[20];
    uint64_t sizes[20];
    for (int i = 0; i < 20; i++)
        sizes[i] = 1;
    enqueue_sizes(b, items, sizes, 20);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 16);
    CHECK_INT_EQ(ids[0], 0);
    CHECK_INT_EQ(ids[15], 15);
    CHECK_INT_EQ(tb_take(b, ids), 4);
    CHECK_INT_EQ(ids[0], 16);
    CHECK_INT_EQ(ids[3], 19);
    CHECK_INT_EQ(imagen_batcher_pending_count(b), 0);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Worked example 2: P = {4, 8}, sizes 3,3,3 -> the cut is recorded at 6
 * when the third would pass 8, so the batch is the first two. */
static void
test_example_3_3_3_cuts_at_6(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 16, true, P48);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[3];
    const uint64_t sizes[] = {3, 3, 3};
    enqueue_sizes(b, items, sizes, 3);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 2);
    CHECK_INT_EQ(ids[0], 0);
    CHECK_INT_EQ(ids[1], 1);
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(ids[0], 2);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Worked example 3: P = {4, 8}, sizes 4,3,3 -> preferred 4 is reached first,
 * 7 is not preferred, 10 passes 8: the batch is the first request only. */
static void
test_example_4_3_3_takes_first_only(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 16, true, P48);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[3];
    const uint64_t sizes[] = {4, 3, 3};
    enqueue_sizes(b, items, sizes, 3);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(ids[0], 0);
    /* What is left (3,3 = 6) is below P_max and D = 0: sent as it is. */
    CHECK_INT_EQ(tb_take(b, ids), 2);
    CHECK_INT_EQ(ids[0], 1);
    CHECK_INT_EQ(ids[1], 2);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Worked example 4a: P = {4, 8}, D > 0, one request of size 3 waits; a
 * size-1 arrival reaches 4 and the batch is sent at once, not after D. */
static void
test_example_delay_arrival_reaching_preferred_sends_now(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 16, true, P48);
    tc.cfg.dynamic_batching.max_queue_delay_us = 10u * 1000u * 1000u; /* 10 s */
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item a, c;
    tb_item_init(&a, 0, 3);
    tb_item_init(&c, 1, 1);
    CHECK_OK(imagen_batcher_enqueue(b, &a.item));
    tb_puller p;
    tb_puller_start(&p, b);
    tb_sleep_ms(30);
    CHECK(!atomic_load(&p.done)); /* 3 is not preferred: it waits for more */
    uint64_t t0 = imagen_time_now_ns();
    CHECK_OK(imagen_batcher_enqueue(b, &c.item));
    pthread_join(p.thread, NULL);
    CHECK_INT_EQ(p.n, 2);
    CHECK_INT_EQ(TB_ID(p.out[0]), 0);
    CHECK_INT_EQ(TB_ID(p.out[1]), 1);
    /* Far below the 10 s delay: the arrival woke the waiting instance. */
    CHECK(p.done_ns - t0 < 5000000000ull);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Worked example 4b: P = {4, 8}, D = 30 ms, one request of size 3 and no
 * arrivals: it is sent alone once D has passed since its enqueue. */
static void
test_example_delay_expiry_sends_partial_batch(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 16, true, P48);
    tc.cfg.dynamic_batching.max_queue_delay_us = 30000;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item a;
    tb_item_init(&a, 0, 3);
    CHECK_OK(imagen_batcher_enqueue(b, &a.item));
    imagen_batch_item *out[4];
    size_t n = imagen_batcher_next_batch(b, out, 4);
    uint64_t end = imagen_time_now_ns();
    CHECK_INT_EQ(n, 1);
    CHECK(out[0] == &a.item);
    CHECK(end - a.item.enqueue_ns >= 30000000ull);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* The delay runs from the oldest pending request, not the newest. */
static void
test_delay_measured_from_oldest_request(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 16, true, P16);
    tc.cfg.dynamic_batching.max_queue_delay_us = 300000; /* 300 ms */
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item a, c;
    tb_item_init(&a, 0, 1);
    tb_item_init(&c, 1, 1);
    CHECK_OK(imagen_batcher_enqueue(b, &a.item));
    tb_sleep_ms(200);
    CHECK_OK(imagen_batcher_enqueue(b, &c.item));
    imagen_batch_item *out[4];
    size_t n = imagen_batcher_next_batch(b, out, 4);
    uint64_t end = imagen_time_now_ns();
    CHECK_INT_EQ(n, 2);
    CHECK(end - a.item.enqueue_ns >= 300000000ull);
    /* Measured from the newer request it would be >= 300 ms after it. */
    CHECK(end - c.item.enqueue_ns < 250000000ull);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Worked example 5: max_batch_size 0 with dynamic_batching -> every request
 * executes alone. */
static void
test_example_max_batch_size_zero_executes_alone(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 0, true, NULL);
    tc.cfg.dynamic_batching.max_queue_delay_us = 1000000; /* ignored */
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[3];
    const uint64_t sizes[] = {1, 1, 1};
    enqueue_sizes(b, items, sizes, 3);
    int ids[TB_MAX_BATCH];
    for (int i = 0; i < 3; i++) {
        CHECK_INT_EQ(tb_take(b, ids), 1);
        CHECK_INT_EQ(ids[0], i);
    }
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Without dynamic_batching: one request per batch, in arrival order, even
 * when the model could batch. */
static void
test_without_dynamic_batching_executes_alone_in_order(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, false, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    CHECK(!imagen_batcher_preserves_ordering(b));
    tb_item items[4];
    const uint64_t sizes[] = {2, 1, 2, 1};
    enqueue_sizes(b, items, sizes, 4);
    int ids[TB_MAX_BATCH];
    for (int i = 0; i < 4; i++) {
        CHECK_INT_EQ(tb_take(b, ids), 1);
        CHECK_INT_EQ(ids[0], i);
    }
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* No preferred sizes in the config: P = {max_batch_size}, greedy. */
static void
test_no_preferred_sizes_fill_max_batch_size(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 4, true, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[6];
    const uint64_t sizes[] = {1, 1, 1, 1, 1, 1};
    enqueue_sizes(b, items, sizes, 6);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 4);
    CHECK_INT_EQ(tb_take(b, ids), 2);
    CHECK_INT_EQ(ids[0], 4);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Of several reachable preferred sizes the largest wins. */
static void
test_largest_reachable_preferred_size_wins(void)
{
    static const int32_t p24[] = {2, 4, 0};
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, p24);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[5];
    const uint64_t sizes[] = {1, 1, 1, 1, 1};
    enqueue_sizes(b, items, sizes, 5);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 4);
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(ids[0], 4);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* A request is never split: 5 + 5 > 8 gives two batches. */
static void
test_request_is_never_split(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[2];
    const uint64_t sizes[] = {5, 5};
    enqueue_sizes(b, items, sizes, 2);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(ids[0], 0);
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(ids[0], 1);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Once the queue delay has run out, the cut point no longer applies but
 * max_batch_size still does: 3 + 3 > 4 sends the first request alone. */
static void
test_expired_delay_still_respects_max_batch_size(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 4, true, NULL);
    tc.cfg.dynamic_batching.max_queue_delay_us = 20000;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[2];
    const uint64_t sizes[] = {3, 3};
    enqueue_sizes(b, items, sizes, 2);
    tb_sleep_ms(30);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(ids[0], 0);
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(ids[0], 1);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* A request whose shape signature differs from the first one's ends the
 * batch ("send now"), and starts the next one. */
static void
test_shape_signature_mismatch_splits_batches(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    static const int64_t s3[] = {1, 3, 224}, s3b[] = {1, 3, 224}, s4[] = {1, 4, 224};
    const int64_t *sigs[] = {s3, s3b, s4, s3};
    tb_item items[4];
    for (int i = 0; i < 4; i++) {
        tb_item_init(&items[i], i, 1);
        items[i].item.shape_sig = sigs[i];
        items[i].item.shape_sig_len = 3;
        CHECK_OK(imagen_batcher_enqueue(b, &items[i].item));
    }
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 2); /* equal contents, distinct arrays */
    CHECK_INT_EQ(ids[1], 1);
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(ids[0], 2);
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(ids[0], 3);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* The caller's array bounds the batch. */
static void
test_output_capacity_bounds_the_batch(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[3];
    const uint64_t sizes[] = {1, 1, 1};
    enqueue_sizes(b, items, sizes, 3);
    imagen_batch_item *out[2];
    CHECK_INT_EQ(imagen_batcher_next_batch(b, out, 2), 2);
    CHECK_INT_EQ(imagen_batcher_next_batch(b, out, 2), 1);
    CHECK_INT_EQ(TB_ID(out[0]), 2);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Every returned item gets the next dequeue sequence number. */
static void
test_sequences_follow_dequeue_order(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 2, true, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[3];
    const uint64_t sizes[] = {1, 1, 1};
    enqueue_sizes(b, items, sizes, 3);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 2);
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(items[0].item.sequence, 0);
    CHECK_INT_EQ(items[1].item.sequence, 1);
    CHECK_INT_EQ(items[2].item.sequence, 2);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

int
main(void)
{
    RUN(test_example_twenty_ones_give_16_then_4);
    RUN(test_example_3_3_3_cuts_at_6);
    RUN(test_example_4_3_3_takes_first_only);
    RUN(test_example_delay_arrival_reaching_preferred_sends_now);
    RUN(test_example_delay_expiry_sends_partial_batch);
    RUN(test_delay_measured_from_oldest_request);
    RUN(test_example_max_batch_size_zero_executes_alone);
    RUN(test_without_dynamic_batching_executes_alone_in_order);
    RUN(test_no_preferred_sizes_fill_max_batch_size);
    RUN(test_largest_reachable_preferred_size_wins);
    RUN(test_request_is_never_split);
    RUN(test_expired_delay_still_respects_max_batch_size);
    RUN(test_shape_signature_mismatch_splits_batches);
    RUN(test_output_capacity_bounds_the_batch);
    RUN(test_sequences_follow_dequeue_order);
    TEST_MAIN_END();
}
