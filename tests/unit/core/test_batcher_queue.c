/* Unit tests for src/core/batcher.c: priority levels, queue policies and
 * timeouts (spec §5.6, §5.7), cancellation, the delay hold, preserve_ordering
 * (§5.5) and shutdown. */
#include "test_batcher_util.h"

/* ---- priority levels -------------------------------------------------- */

static void
test_priority_level_one_drains_first_and_defaults_apply(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 1, true, NULL);
    tb_config_levels(&tc, 3, 2);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    /* priority 0 and > K go to the default level 2, FIFO within it. */
    const uint64_t prio[] = {3, 2, 1, 0, 9};
    tb_item items[5];
    for (int i = 0; i < 5; i++) {
        tb_item_init(&items[i], i, 1);
        items[i].item.priority = prio[i];
        CHECK_OK(imagen_batcher_enqueue(b, &items[i].item));
    }
    CHECK_INT_EQ(items[3].item.level, 2);
    CHECK_INT_EQ(items[4].item.level, 2);
    const int want[] = {2, 1, 3, 4, 0};
    int ids[TB_MAX_BATCH];
    for (int i = 0; i < 5; i++) {
        CHECK_INT_EQ(tb_take(b, ids), 1);
        CHECK_INT_EQ(ids[0], want[i]);
    }
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

static void
test_batch_takes_higher_priority_requests_first(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tb_config_levels(&tc, 2, 2);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item low, high;
    tb_item_init(&low, 0, 1);
    tb_item_init(&high, 1, 1);
    low.item.priority = 2;
    high.item.priority = 1;
    CHECK_OK(imagen_batcher_enqueue(b, &low.item));
    CHECK_OK(imagen_batcher_enqueue(b, &high.item));
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 2);
    CHECK_INT_EQ(ids[0], 1);
    CHECK_INT_EQ(ids[1], 0);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* ---- max_queue_size --------------------------------------------------- */

static void
test_max_queue_size_is_per_level(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tb_config_levels(&tc, 2, 2);
    tc.policies[1].max_queue_size = 2;
    tc.policies[2].max_queue_size = 1;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[5];
    const uint64_t prio[] = {1, 1, 1, 2, 2};
    for (int i = 0; i < 5; i++) {
        tb_item_init(&items[i], i, 1);
        items[i].item.priority = prio[i];
    }
    CHECK_OK(imagen_batcher_enqueue(b, &items[0].item));
    CHECK_OK(imagen_batcher_enqueue(b, &items[1].item));
    CHECK_ERR(imagen_batcher_enqueue(b, &items[2].item), IMAGEN_ERR_UNAVAILABLE, "Exceeds maximum queue size");
    /* Level 1 being full does not affect level 2. */
    CHECK_OK(imagen_batcher_enqueue(b, &items[3].item));
    CHECK_ERR(imagen_batcher_enqueue(b, &items[4].item), IMAGEN_ERR_UNAVAILABLE, "Exceeds maximum queue size");
    CHECK_INT_EQ(imagen_batcher_pending_count(b), 3);
    CHECK(!items[2].item.queued);
    CHECK(!imagen_batcher_cancel(b, &items[2].item)); /* never queued */
    CHECK_INT_EQ(r.count, 0);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

static void
test_max_queue_size_frees_up_after_dequeue(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 1, true, NULL);
    tc.cfg.dynamic_batching.default_queue_policy.max_queue_size = 1;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item a, c;
    tb_item_init(&a, 0, 1);
    tb_item_init(&c, 1, 1);
    CHECK_OK(imagen_batcher_enqueue(b, &a.item));
    CHECK_ERR(imagen_batcher_enqueue(b, &c.item), IMAGEN_ERR_UNAVAILABLE, "Exceeds maximum queue size");
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_OK(imagen_batcher_enqueue(b, &c.item));
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* ---- queue timeouts --------------------------------------------------- */

/* REJECT fires from the timer even though no instance ever pulls. */
static void
test_reject_timeout_fires_while_no_instance_pulls(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tc.cfg.dynamic_batching.default_queue_policy.default_timeout_us = 20000;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item a;
    tb_item_init(&a, 7, 1);
    CHECK_OK(imagen_batcher_enqueue(b, &a.item));
    CHECK_INT_EQ(a.item.deadline_ns - a.item.enqueue_ns, 20000000);
    CHECK_INT_EQ(tb_rejects_wait(&r, 1, 5000), 1);
    CHECK_INT_EQ(r.ids[0], 7);
    CHECK_INT_EQ(r.codes[0], IMAGEN_ERR_UNAVAILABLE);
    CHECK_STR_EQ(r.messages[0], "Request timeout expired");
    CHECK_INT_EQ(r.reasons[0], IMAGEN_FAIL_REJECTED);
    CHECK_INT_EQ(imagen_batcher_pending_count(b), 0);
    CHECK(!imagen_batcher_cancel(b, &a.item));
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* The timer sleeps until the nearest deadline; a later enqueue with a
 * nearer one must wake it to re-arm, or the request would wait for the
 * farther deadline. */
static void
test_nearer_deadline_rearms_timer(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tc.cfg.dynamic_batching.default_queue_policy.default_timeout_us = 60u * 1000u * 1000u;
    tc.cfg.dynamic_batching.default_queue_policy.allow_timeout_override = true;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item far, near;
    tb_item_init(&far, 0, 1);
    tb_item_init(&near, 1, 1);
    near.item.timeout_us = 20000;
    CHECK_OK(imagen_batcher_enqueue(b, &far.item));
    tb_sleep_ms(20); /* let the timer go to sleep on the 60 s deadline */
    CHECK_OK(imagen_batcher_enqueue(b, &near.item));
    CHECK_INT_EQ(tb_rejects_wait(&r, 1, 5000), 1);
    CHECK_INT_EQ(r.ids[0], 1);
    CHECK_INT_EQ(imagen_batcher_pending_count(b), 1);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* A request that expires while an instance waits out max_queue_delay is
 * rejected, and the waiting instance still forms the next batch. */
static void
test_reject_timeout_during_queue_delay(void)
{
    static const int32_t p4[] = {4, 0};
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, p4);
    tc.cfg.dynamic_batching.max_queue_delay_us = 10u * 1000u * 1000u;
    tc.cfg.dynamic_batching.default_queue_policy.default_timeout_us = 10u * 1000u * 1000u;
    tc.cfg.dynamic_batching.default_queue_policy.allow_timeout_override = true;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item doomed, items[4];
    tb_item_init(&doomed, 99, 1);
    doomed.item.timeout_us = 20000;
    CHECK_OK(imagen_batcher_enqueue(b, &doomed.item));
    tb_puller p;
    tb_puller_start(&p, b);
    CHECK_INT_EQ(tb_rejects_wait(&r, 1, 5000), 1);
    CHECK_INT_EQ(r.ids[0], 99);
    CHECK(!atomic_load(&p.done));
    for (int i = 0; i < 4; i++) {
        tb_item_init(&items[i], i, 1);
        CHECK_OK(imagen_batcher_enqueue(b, &items[i].item));
    }
    pthread_join(p.thread, NULL);
    CHECK_INT_EQ(p.n, 4);
    CHECK_INT_EQ(TB_ID(p.out[0]), 0);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* DELAY: an expired request moves behind every unexpired one of its level
 * and is still executed. */
static void
test_delay_timeout_moves_request_behind(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 1, true, NULL);
    imagen_queue_policy *pol = &tc.cfg.dynamic_batching.default_queue_policy;
    pol->timeout_action = IMAGEN_TIMEOUT_DELAY;
    pol->default_timeout_us = 10u * 1000u * 1000u;
    pol->allow_timeout_override = true;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[3];
    for (int i = 0; i < 3; i++)
        tb_item_init(&items[i], i, 1);
    items[0].item.timeout_us = 5000;
    for (int i = 0; i < 3; i++)
        CHECK_OK(imagen_batcher_enqueue(b, &items[i].item));
    tb_sleep_ms(40);
    const int want[] = {1, 2, 0};
    int ids[TB_MAX_BATCH];
    for (int i = 0; i < 3; i++) {
        CHECK_INT_EQ(tb_take(b, ids), 1);
        CHECK_INT_EQ(ids[0], want[i]);
    }
    CHECK(items[0].item.delayed);
    CHECK(!items[1].item.delayed);
    CHECK_INT_EQ(r.count, 0);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Delayed requests stay within their own level: a delayed level-1 request
 * still comes before level 2. */
static void
test_delayed_request_stays_in_its_level(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 1, true, NULL);
    tb_config_levels(&tc, 2, 2);
    tc.policies[1].timeout_action = IMAGEN_TIMEOUT_DELAY;
    tc.policies[1].default_timeout_us = 5000;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item hi, lo;
    tb_item_init(&hi, 0, 1);
    tb_item_init(&lo, 1, 1);
    hi.item.priority = 1;
    lo.item.priority = 2;
    CHECK_OK(imagen_batcher_enqueue(b, &hi.item));
    CHECK_OK(imagen_batcher_enqueue(b, &lo.item));
    tb_sleep_ms(30);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(ids[0], 0);
    CHECK(hi.item.delayed);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

static void
test_timeout_override_only_shortens(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tb_config_levels(&tc, 2, 1);
    tc.policies[1].default_timeout_us = 50u * 1000u * 1000u; /* 50 s: never fires here */
    tc.policies[1].allow_timeout_override = true;
    tc.policies[2].default_timeout_us = 50u * 1000u * 1000u;
    tc.policies[2].allow_timeout_override = false;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item longer, shorter, none, not_allowed;
    tb_item_init(&longer, 0, 1);
    tb_item_init(&shorter, 1, 1);
    tb_item_init(&none, 2, 1);
    tb_item_init(&not_allowed, 3, 1);
    longer.item.timeout_us = 100u * 1000u * 1000u;
    shorter.item.timeout_us = 30u * 1000u * 1000u;
    not_allowed.item.timeout_us = 30u * 1000u * 1000u;
    not_allowed.item.priority = 2;
    CHECK_OK(imagen_batcher_enqueue(b, &longer.item));
    CHECK_OK(imagen_batcher_enqueue(b, &shorter.item));
    CHECK_OK(imagen_batcher_enqueue(b, &none.item));
    CHECK_OK(imagen_batcher_enqueue(b, &not_allowed.item));
    const uint64_t s50 = 50000000000ull, s30 = 30000000000ull;
    CHECK_INT_EQ(longer.item.deadline_ns - longer.item.enqueue_ns, s50);
    CHECK_INT_EQ(shorter.item.deadline_ns - shorter.item.enqueue_ns, s30);
    CHECK_INT_EQ(none.item.deadline_ns - none.item.enqueue_ns, s50);
    CHECK_INT_EQ(not_allowed.item.deadline_ns - not_allowed.item.enqueue_ns, s50);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* With a zero default the request's own timeout is ignored. */
static void
test_timeout_override_ignored_when_default_is_zero(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tc.cfg.dynamic_batching.default_queue_policy.allow_timeout_override = true;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item a;
    tb_item_init(&a, 0, 1);
    a.item.timeout_us = 1000;
    CHECK_OK(imagen_batcher_enqueue(b, &a.item));
    CHECK_INT_EQ(a.item.deadline_ns, 0);
    tb_sleep_ms(30);
    CHECK_INT_EQ(imagen_batcher_pending_count(b), 1);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 1);
    CHECK_INT_EQ(r.count, 0);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* ---- cancellation ----------------------------------------------------- */

static void
test_cancel_drops_queued_request(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[3];
    for (int i = 0; i < 3; i++) {
        tb_item_init(&items[i], i, 1);
        CHECK_OK(imagen_batcher_enqueue(b, &items[i].item));
    }
    CHECK(imagen_batcher_cancel(b, &items[1].item));
    CHECK_INT_EQ(r.count, 1);
    CHECK_INT_EQ(r.ids[0], 1);
    CHECK_INT_EQ(r.codes[0], IMAGEN_ERR_CANCELLED);
    CHECK_INT_EQ(r.reasons[0], IMAGEN_FAIL_CANCELED);
    CHECK_INT_EQ(imagen_batcher_pending_count(b), 2);
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 2);
    CHECK_INT_EQ(ids[0], 0);
    CHECK_INT_EQ(ids[1], 2);
    /* Already handed to an instance: too late to cancel. */
    CHECK(!imagen_batcher_cancel(b, &items[0].item));
    CHECK(!imagen_batcher_cancel(b, &items[1].item));
    CHECK_INT_EQ(r.count, 1);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* ---- delay_until_count ------------------------------------------------ */

static void
test_delay_until_count_holds_then_releases_for_good(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 3);
    tb_item items[4];
    for (int i = 0; i < 4; i++)
        tb_item_init(&items[i], i, 1);
    CHECK_OK(imagen_batcher_enqueue(b, &items[0].item));
    tb_puller p;
    tb_puller_start(&p, b);
    tb_sleep_ms(50);
    CHECK(!atomic_load(&p.done));
    CHECK_OK(imagen_batcher_enqueue(b, &items[1].item));
    tb_sleep_ms(20);
    CHECK(!atomic_load(&p.done));
    CHECK_OK(imagen_batcher_enqueue(b, &items[2].item));
    CHECK(tb_puller_join_within(&p, 5000));
    CHECK_INT_EQ(p.n, 3);

    /* The hold is over: a single request now goes at once. */
    CHECK_OK(imagen_batcher_enqueue(b, &items[3].item));
    tb_puller_start(&p, b);
    CHECK(tb_puller_join_within(&p, 5000));
    CHECK_INT_EQ(p.n, 1);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* ---- preserve_ordering ------------------------------------------------ */

typedef struct delivery_log {
    pthread_mutex_t mu;
    int n;
    int ids[64];
} delivery_log;

static void
log_deliver(imagen_batch_item *item, void *ctx)
{
    delivery_log *d = ctx;
    pthread_mutex_lock(&d->mu);
    d->ids[d->n++] = TB_ID(item);
    pthread_mutex_unlock(&d->mu);
}

static void
test_preserve_ordering_releases_in_dequeue_order(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 2, true, NULL);
    tc.cfg.dynamic_batching.preserve_ordering = true;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    CHECK(imagen_batcher_preserves_ordering(b));
    tb_item items[5];
    for (int i = 0; i < 5; i++) {
        tb_item_init(&items[i], i, 1);
        CHECK_OK(imagen_batcher_enqueue(b, &items[i].item));
    }
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 2);
    CHECK_INT_EQ(tb_take(b, ids), 2);
    CHECK_INT_EQ(tb_take(b, ids), 1);
    delivery_log d = {.n = 0};
    pthread_mutex_init(&d.mu, NULL);
    /* Later batches finish first: nothing may be released yet. */
    imagen_batcher_complete(b, &items[4].item, log_deliver, &d);
    imagen_batcher_complete(b, &items[2].item, log_deliver, &d);
    imagen_batcher_complete(b, &items[3].item, log_deliver, &d);
    CHECK_INT_EQ(d.n, 0);
    imagen_batcher_complete(b, &items[0].item, log_deliver, &d);
    CHECK_INT_EQ(d.n, 1);
    CHECK_INT_EQ(d.ids[0], 0);
    imagen_batcher_complete(b, &items[1].item, log_deliver, &d);
    CHECK_INT_EQ(d.n, 5);
    for (int i = 0; i < d.n; i++)
        CHECK_INT_EQ(d.ids[i], i);
    pthread_mutex_destroy(&d.mu);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

static void
test_without_preserve_ordering_delivers_at_once(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 2, true, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    CHECK(!imagen_batcher_preserves_ordering(b));
    tb_item items[2];
    for (int i = 0; i < 2; i++) {
        tb_item_init(&items[i], i, 1);
        CHECK_OK(imagen_batcher_enqueue(b, &items[i].item));
    }
    int ids[TB_MAX_BATCH];
    CHECK_INT_EQ(tb_take(b, ids), 2);
    delivery_log d = {.n = 0};
    pthread_mutex_init(&d.mu, NULL);
    imagen_batcher_complete(b, &items[1].item, log_deliver, &d);
    CHECK_INT_EQ(d.n, 1);
    CHECK_INT_EQ(d.ids[0], 1);
    pthread_mutex_destroy(&d.mu);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* ---- shutdown --------------------------------------------------------- */

static void
test_shutdown_refuses_new_and_drains_queued(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 1, true, NULL);
    tc.cfg.dynamic_batching.max_queue_delay_us = 10u * 1000u * 1000u;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[4];
    for (int i = 0; i < 4; i++)
        tb_item_init(&items[i], i, 1);
    for (int i = 0; i < 3; i++)
        CHECK_OK(imagen_batcher_enqueue(b, &items[i].item));
    imagen_batcher_shutdown(b);
    CHECK_ERR(imagen_batcher_enqueue(b, &items[3].item), IMAGEN_ERR_UNAVAILABLE, "exiting");
    int ids[TB_MAX_BATCH];
    for (int i = 0; i < 3; i++) {
        CHECK_INT_EQ(tb_take(b, ids), 1);
        CHECK_INT_EQ(ids[0], i);
    }
    imagen_batch_item *out[4];
    CHECK_INT_EQ(imagen_batcher_next_batch(b, out, 4), 0); /* empty and shut down */
    CHECK_INT_EQ(r.count, 0);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Shutdown wakes an idle instance (0) and one waiting out the queue delay
 * (which then gets the pending batch without waiting further). */
static void
test_shutdown_wakes_waiting_instances(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tc.cfg.dynamic_batching.max_queue_delay_us = 50u * 1000u * 1000u;
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item a;
    tb_item_init(&a, 0, 1);
    CHECK_OK(imagen_batcher_enqueue(b, &a.item));
    tb_puller p1, p2;
    tb_puller_start(&p1, b);
    tb_puller_start(&p2, b);
    tb_sleep_ms(30);
    CHECK(!atomic_load(&p1.done));
    CHECK(!atomic_load(&p2.done));
    imagen_batcher_shutdown(b);
    pthread_join(p1.thread, NULL);
    pthread_join(p2.thread, NULL);
    CHECK_INT_EQ(p1.n + p2.n, 1);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

static void
test_shutdown_ends_delay_hold(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 10);
    tb_item a;
    tb_item_init(&a, 0, 1);
    CHECK_OK(imagen_batcher_enqueue(b, &a.item));
    tb_puller p;
    tb_puller_start(&p, b);
    tb_sleep_ms(20);
    CHECK(!atomic_load(&p.done)); /* held: 1 of 10 */
    imagen_batcher_shutdown(b);
    for (int waited = 0; waited < 5000 && !atomic_load(&p.done); waited += 5)
        tb_sleep_ms(5);
    CHECK(atomic_load(&p.done));
    if (!atomic_load(&p.done)) {
        /* Nothing can unblock a puller that ignores shutdown: abandon it
         * (and the batcher it sits in) so the failure is reported. */
        pthread_detach(p.thread);
        return;
    }
    pthread_join(p.thread, NULL);
    CHECK_INT_EQ(p.n, 1);
    imagen_batcher_destroy(b);
    tb_rejects_fini(&r);
}

/* Requests nobody pulled fail at destroy instead of vanishing. */
static void
test_destroy_fails_requests_left_queued(void)
{
    tb_config tc;
    tb_rejects r;
    tb_config_init(&tc, 8, true, NULL);
    tb_rejects_init(&r);
    imagen_batcher *b = tb_batcher(&tc, &r, 0);
    tb_item items[2];
    for (int i = 0; i < 2; i++) {
        tb_item_init(&items[i], i, 1);
        CHECK_OK(imagen_batcher_enqueue(b, &items[i].item));
    }
    imagen_batcher_destroy(b);
    CHECK_INT_EQ(r.count, 2);
    CHECK_INT_EQ(r.codes[0], IMAGEN_ERR_UNAVAILABLE);
    CHECK_INT_EQ(r.reasons[1], IMAGEN_FAIL_OTHER);
    imagen_batcher_destroy(NULL);
    tb_rejects_fini(&r);
}

int
main(void)
{
    RUN(test_priority_level_one_drains_first_and_defaults_apply);
    RUN(test_batch_takes_higher_priority_requests_first);
    RUN(test_max_queue_size_is_per_level);
    RUN(test_max_queue_size_frees_up_after_dequeue);
    RUN(test_reject_timeout_fires_while_no_instance_pulls);
    RUN(test_nearer_deadline_rearms_timer);
    RUN(test_reject_timeout_during_queue_delay);
    RUN(test_delay_timeout_moves_request_behind);
    RUN(test_delayed_request_stays_in_its_level);
    RUN(test_timeout_override_only_shortens);
    RUN(test_timeout_override_ignored_when_default_is_zero);
    RUN(test_cancel_drops_queued_request);
    RUN(test_delay_until_count_holds_then_releases_for_good);
    RUN(test_preserve_ordering_releases_in_dequeue_order);
    RUN(test_without_preserve_ordering_delivers_at_once);
    RUN(test_shutdown_refuses_new_and_drains_queued);
    RUN(test_shutdown_wakes_waiting_instances);
    RUN(test_shutdown_ends_delay_hold);
    RUN(test_destroy_fails_requests_left_queued);
    TEST_MAIN_END();
}
