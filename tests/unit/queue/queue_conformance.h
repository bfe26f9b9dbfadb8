/*
 * The queue contract (src/queue/queue.h) as a test suite that runs against
 * any queue URL, so every driver is held to the same behaviour. The caller
 * gives a URL of an empty queue (a fresh sqlite file, an empty redis db);
 * queue_conformance_run() opens its own handles on it with short leases
 * (LEASE_MS) and few attempts (MAX_ATTEMPTS) so that expiry paths run in a
 * second or two, and returns the number of failed checks.
 *
 * Each part uses its own operation names, so parts do not see each other's
 * jobs; the parts that look at every op (counts, requeue_dead of all ops)
 * compare against what the queue itself reports.
 *
 * Include after test.h; everything here is static.
 */
#ifndef IMAGEN_TEST_QUEUE_CONFORMANCE_H
#define IMAGEN_TEST_QUEUE_CONFORMANCE_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "common/time.h"
#include "queue/queue.h"
#include "test.h"

#define CONF_LEASE_MS 300
#define CONF_MAX_ATTEMPTS 3

static const char *conf_url;

/* Jobs one part leaves behind for a later one (requeue needs a failed, a
 * done and a dead job). */
static char conf_failed_id[IMAGEN_JOB_ID_SIZE];
static char conf_done_id[IMAGEN_JOB_ID_SIZE];
static char conf_dead_id[IMAGEN_JOB_ID_SIZE];

static void
conf_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int64_t
conf_now_ms(void)
{
    return (int64_t)(imagen_time_now_ns() / 1000000u);
}

/* A handle on the queue under test as consumer `name`. */
static imagen_queue *
conf_open(const char *name, int max_attempts)
{
    imagen_queue_options opt = {.consumer = name, .max_attempts = max_attempts, .lease_ms = CONF_LEASE_MS};
    imagen_queue *q = NULL;
    CHECK_OK(imagen_queue_open(conf_url, &opt, &q));
    return q;
}

static void
conf_publish(imagen_queue *q, const char *op, const char *spec, char id[IMAGEN_JOB_ID_SIZE])
{
    id[0] = '\0';
    CHECK_OK(imagen_queue_publish(q, op, spec, id));
    /* Jobs published in one millisecond have no defined order; the parts
     * that check order space them out. */
    conf_sleep_ms(2);
}

/* Pulls at most one job of `op`; NULL when none came within wait_ms. */
static imagen_lease *
conf_pull1(imagen_queue *q, const char *op, int64_t wait_ms)
{
    const char *ops[] = {op};
    imagen_lease *leases[1] = {NULL};
    size_t n = 0;
    CHECK_OK(imagen_queue_pull(q, ops, 1, 1, wait_ms, leases, &n));
    return n == 1 ? leases[0] : NULL;
}

static imagen_job *
conf_get(imagen_queue *q, const char *id)
{
    imagen_job *job = NULL;
    CHECK_OK(imagen_queue_get(q, id, &job));
    return job;
}

/* Acks each of the n leases (a NULL one is skipped) and frees them all. */
static void
conf_ack_all(imagen_queue *q, imagen_lease **leases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (leases[i] != NULL)
            CHECK_OK(imagen_queue_ack(q, leases[i], NULL, NULL));
        imagen_lease_free(leases[i]);
    }
}

/* The entry of `op` in a counts array; NULL when the op has none. */
static const imagen_queue_counts *
conf_counts_find(const imagen_queue_counts *counts, size_t n, const char *op)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(counts[i].op, op) == 0)
            return &counts[i];
    }
    return NULL;
}

/* Publish and get: the record of a job nobody has touched. */
static void
conf_publish_get(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    char id[IMAGEN_JOB_ID_SIZE];
    int64_t before = (int64_t)imagen_time_wall_ms();
    conf_publish(q, "cf_basic", "{\"input\":\"a.png\",\"n\":1}", id);
    CHECK_INT_EQ(strlen(id), IMAGEN_JOB_ID_SIZE - 1);
    CHECK(strspn(id, "0123456789abcdef") == IMAGEN_JOB_ID_SIZE - 1);
    imagen_job *job = conf_get(q, id);
    if (job != NULL) {
        CHECK_STR_EQ(job->id, id);
        CHECK_STR_EQ(job->op, "cf_basic");
        CHECK_STR_EQ(job->spec, "{\"input\":\"a.png\",\"n\":1}");
        CHECK_INT_EQ(job->state, IMAGEN_JOB_QUEUED);
        CHECK_INT_EQ(job->attempts, 0);
        CHECK(job->created_ms >= before - 1000 && job->created_ms <= (int64_t)imagen_time_wall_ms() + 1000);
        CHECK_INT_EQ(job->started_ms, 0);
        CHECK_INT_EQ(job->finished_ms, 0);
        CHECK(job->consumer == NULL);
        CHECK(job->error == NULL);
        CHECK(job->output == NULL);
        CHECK(job->timings == NULL);
    }
    imagen_job_free(job);
    imagen_job *none = NULL;
    CHECK_ERR(imagen_queue_get(q, "000000000000000000000000", &none), IMAGEN_ERR_NOT_FOUND, "000000000000000000000000");
    CHECK(none == NULL);

    /* A delivery's snapshot: running, first attempt, this consumer. */
    imagen_lease *lease = conf_pull1(q, "cf_basic", 0);
    CHECK(lease != NULL);
    if (lease != NULL) {
        CHECK_STR_EQ(lease->job->id, id);
        CHECK_INT_EQ(lease->job->state, IMAGEN_JOB_RUNNING);
        CHECK_INT_EQ(lease->job->attempts, 1);
        CHECK_STR_EQ(lease->job->consumer, "c1");
        CHECK_STR_EQ(lease->job->spec, "{\"input\":\"a.png\",\"n\":1}");
        CHECK(lease->job->started_ms > 0);
        int64_t wall = (int64_t)imagen_time_wall_ms();
        CHECK(lease->expires_ms > wall && lease->expires_ms <= wall + CONF_LEASE_MS + 50);
        CHECK(lease->token[0] != '\0');
        job = conf_get(q, id);
        CHECK(job != NULL && job->state == IMAGEN_JOB_RUNNING && job->attempts == 1);
        imagen_job_free(job);
        CHECK_OK(imagen_queue_ack(q, lease, "/out/a.png", NULL));
        imagen_lease_free(lease);
    }
    imagen_queue_close(q);
}

/* Oldest first; max bounds one pull; the rest come with the next. */
static void
conf_order_and_max(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    char ids[5][IMAGEN_JOB_ID_SIZE];
    for (int i = 0; i < 5; i++)
        conf_publish(q, "cf_order", "{}", ids[i]);
    const char *ops[] = {"cf_order"};
    imagen_lease *leases[10] = {NULL};
    size_t n = 0;
    CHECK_OK(imagen_queue_pull(q, ops, 1, 2, 0, leases, &n));
    CHECK_INT_EQ(n, 2);
    size_t got = 0;
    for (size_t i = 0; i < n; i++, got++)
        CHECK_STR_EQ(leases[i]->job->id, ids[got]);
    conf_ack_all(q, leases, n);
    CHECK_OK(imagen_queue_pull(q, ops, 1, 10, 0, leases, &n));
    CHECK_INT_EQ(n, 3);
    for (size_t i = 0; i < n && got < 5; i++, got++)
        CHECK_STR_EQ(leases[i]->job->id, ids[got]);
    conf_ack_all(q, leases, n);
    CHECK_OK(imagen_queue_pull(q, ops, 1, 10, 0, leases, &n));
    CHECK_INT_EQ(n, 0);
    imagen_queue_close(q);
}

/* One pull over several ops takes the oldest jobs of all of them; a pull
 * never delivers a job of an op it did not name. */
static void
conf_several_ops(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    char a1[IMAGEN_JOB_ID_SIZE], b1[IMAGEN_JOB_ID_SIZE], a2[IMAGEN_JOB_ID_SIZE];
    conf_publish(q, "cf_opa", "{\"k\":\"a1\"}", a1);
    conf_publish(q, "cf_opb", "{\"k\":\"b1\"}", b1);
    conf_publish(q, "cf_opa", "{\"k\":\"a2\"}", a2);

    CHECK(conf_pull1(q, "cf_opc", 0) == NULL); /* an op with no jobs */

    const char *ops[] = {"cf_opb", "cf_opa"};
    imagen_lease *leases[10] = {NULL};
    size_t n = 0;
    CHECK_OK(imagen_queue_pull(q, ops, 2, 10, 0, leases, &n));
    CHECK_INT_EQ(n, 3);
    if (n == 3) {
        CHECK_STR_EQ(leases[0]->job->id, a1);
        CHECK_STR_EQ(leases[0]->job->op, "cf_opa");
        CHECK_STR_EQ(leases[1]->job->id, b1);
        CHECK_STR_EQ(leases[1]->job->op, "cf_opb");
        CHECK_STR_EQ(leases[2]->job->id, a2);
    }
    for (size_t i = 0; i < n; i++) {
        CHECK_OK(imagen_queue_release(q, leases[i]));
        imagen_lease_free(leases[i]);
    }

    /* Isolation: pulls of one op leave the other's jobs alone. */
    imagen_lease *b = conf_pull1(q, "cf_opb", 0);
    CHECK(b != NULL && strcmp(b->job->id, b1) == 0);
    CHECK(conf_pull1(q, "cf_opb", 0) == NULL);
    imagen_lease *x = conf_pull1(q, "cf_opa", 0);
    imagen_lease *y = conf_pull1(q, "cf_opa", 0);
    CHECK(x != NULL && strcmp(x->job->id, a1) == 0 && strcmp(x->job->op, "cf_opa") == 0);
    CHECK(y != NULL && strcmp(y->job->id, a2) == 0);
    CHECK(conf_pull1(q, "cf_opa", 0) == NULL);
    imagen_lease *all[] = {b, x, y};
    conf_ack_all(q, all, 3);
    imagen_queue_close(q);
}

typedef struct conf_publisher {
    imagen_queue *q;
    const char *op;
    int64_t delay_ms;
    char id[IMAGEN_JOB_ID_SIZE];
} conf_publisher;

static void *
conf_publish_later(void *arg)
{
    conf_publisher *p = arg;
    conf_sleep_ms(p->delay_ms);
    CHECK_OK(imagen_queue_publish(p->q, p->op, "{}", p->id));
    return NULL;
}

/* A waiting pull of an empty queue returns nothing after about wait_ms,
 * and returns early when a job is published meanwhile, through the same
 * handle or through another one. */
static void
conf_wait(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    imagen_queue *other = conf_open("c2", CONF_MAX_ATTEMPTS);

    int64_t t0 = conf_now_ms();
    CHECK(conf_pull1(q, "cf_wait", 0) == NULL);
    CHECK(conf_now_ms() - t0 < 150);

    t0 = conf_now_ms();
    CHECK(conf_pull1(q, "cf_wait", 250) == NULL);
    int64_t waited = conf_now_ms() - t0;
    CHECK(waited >= 240);
    CHECK(waited < 1500);

    imagen_queue *publishers[] = {q, other};
    for (int i = 0; i < 2; i++) {
        conf_publisher pub = {.q = publishers[i], .op = "cf_wait", .delay_ms = 150};
        pthread_t thread;
        CHECK_INT_EQ(pthread_create(&thread, NULL, conf_publish_later, &pub), 0);
        t0 = conf_now_ms();
        imagen_lease *lease = conf_pull1(q, "cf_wait", 5000);
        waited = conf_now_ms() - t0;
        pthread_join(thread, NULL);
        CHECK(lease != NULL);
        CHECK(waited >= 100);
        CHECK(waited < 1500);
        if (lease != NULL) {
            CHECK_STR_EQ(lease->job->id, pub.id);
            CHECK_OK(imagen_queue_ack(q, lease, NULL, NULL));
        }
        imagen_lease_free(lease);
    }
    imagen_queue_close(other);
    imagen_queue_close(q);
}

/* An extended lease outlives its first deadline: nobody else gets the job. */
static void
conf_extend(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    imagen_queue *other = conf_open("c2", CONF_MAX_ATTEMPTS);
    char id[IMAGEN_JOB_ID_SIZE];
    conf_publish(q, "cf_extend", "{}", id);
    imagen_lease *lease = conf_pull1(q, "cf_extend", 0);
    CHECK(lease != NULL);
    if (lease != NULL) {
        for (int i = 0; i < 3; i++) {
            conf_sleep_ms(CONF_LEASE_MS * 2 / 3);
            int64_t first = lease->expires_ms;
            CHECK_OK(imagen_queue_extend(q, lease));
            CHECK(lease->expires_ms > first);
        }
        /* 600 ms after the delivery of a 300 ms lease. */
        CHECK(conf_pull1(other, "cf_extend", 0) == NULL);
        imagen_job *job = conf_get(other, id);
        CHECK(job != NULL && job->state == IMAGEN_JOB_RUNNING && job->attempts == 1);
        imagen_job_free(job);
        CHECK_OK(imagen_queue_ack(q, lease, NULL, NULL));
        imagen_lease_free(lease);
    }
    imagen_queue_close(other);
    imagen_queue_close(q);
}

/* A batch is published whole: every job queued with its own id, in order;
 * a batch with one bad spec publishes nothing. */
static void
conf_publish_batch(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    const char *specs[3] = {"{\"n\":1}", "{\"n\":2}", "{\"n\":3}"};
    char ids[3][IMAGEN_JOB_ID_SIZE];
    CHECK_OK(imagen_queue_publish_batch(q, "cf_batch", specs, 3, ids));
    CHECK(strcmp(ids[0], ids[1]) != 0 && strcmp(ids[1], ids[2]) != 0 && strcmp(ids[0], ids[2]) != 0);
    for (int i = 0; i < 3; i++) {
        imagen_job *job = conf_get(q, ids[i]);
        CHECK(job != NULL && job->state == IMAGEN_JOB_QUEUED && strcmp(job->spec, specs[i]) == 0);
        imagen_job_free(job);
    }
    const char *bad[2] = {"{\"n\":4}", "not json"};
    char bad_ids[2][IMAGEN_JOB_ID_SIZE];
    CHECK_ERR(imagen_queue_publish_batch(q, "cf_batch", bad, 2, bad_ids), IMAGEN_ERR_INVALID_ARG, "JSON object");
    imagen_job **jobs = NULL;
    size_t n = 0;
    CHECK_OK(imagen_queue_list(q, "cf_batch", -1, 0, &jobs, &n));
    CHECK_INT_EQ(n, 3);
    imagen_job_list_free(jobs, n);
    imagen_queue_close(q);
}

/* A delivery keeps the lease length of the consumer that took it: a
 * consumer with short leases does not take a job still inside a long lease,
 * and one with long leases does take a job whose short lease ran out. */
static void
conf_lease_is_per_delivery(void)
{
    imagen_queue_options long_opt = {
        .consumer = "c-long", .max_attempts = CONF_MAX_ATTEMPTS, .lease_ms = CONF_LEASE_MS * 10};
    imagen_queue *long_q = NULL;
    CHECK_OK(imagen_queue_open(conf_url, &long_opt, &long_q));
    imagen_queue *short_q = conf_open("c-short", CONF_MAX_ATTEMPTS);
    if (long_q == NULL || short_q == NULL) {
        imagen_queue_close(long_q);
        imagen_queue_close(short_q);
        return;
    }
    char id[IMAGEN_JOB_ID_SIZE];
    conf_publish(short_q, "cf_lease_own", "{}", id);
    imagen_lease *held = conf_pull1(long_q, "cf_lease_own", 0);
    CHECK(held != NULL);
    conf_sleep_ms(CONF_LEASE_MS * 2);
    CHECK(conf_pull1(short_q, "cf_lease_own", 0) == NULL); /* inside the long lease */
    if (held != NULL) {
        CHECK_OK(imagen_queue_release(long_q, held));
        imagen_lease_free(held);
    }
    held = conf_pull1(short_q, "cf_lease_own", 0);
    CHECK(held != NULL);
    conf_sleep_ms(CONF_LEASE_MS * 2);
    imagen_lease *taken = conf_pull1(long_q, "cf_lease_own", 0); /* the short lease ran out */
    CHECK(taken != NULL);
    if (taken != NULL) {
        CHECK_OK(imagen_queue_ack(long_q, taken, NULL, NULL));
        imagen_lease_free(taken);
    }
    imagen_lease_free(held);
    imagen_queue_close(short_q);
    imagen_queue_close(long_q);
}

/* An expired lease: the job goes to another consumer as a new attempt, and
 * the old holder can neither extend nor end it. */
static void
conf_expiry(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    imagen_queue *other = conf_open("c2", CONF_MAX_ATTEMPTS);
    char id[IMAGEN_JOB_ID_SIZE];
    conf_publish(q, "cf_expire", "{}", id);
    imagen_lease *old = conf_pull1(q, "cf_expire", 0);
    CHECK(old != NULL);
    CHECK(conf_pull1(other, "cf_expire", 0) == NULL); /* still leased */
    conf_sleep_ms(CONF_LEASE_MS + 150);
    imagen_lease *fresh = conf_pull1(other, "cf_expire", 0);
    CHECK(fresh != NULL);
    if (old != NULL && fresh != NULL) {
        CHECK_STR_EQ(fresh->job->id, id);
        CHECK_INT_EQ(fresh->job->attempts, 2);
        CHECK_STR_EQ(fresh->job->consumer, "c2");
        CHECK_ERR(imagen_queue_extend(q, old), IMAGEN_ERR_NOT_FOUND, id);
        CHECK_ERR(imagen_queue_ack(q, old, "/out/x", NULL), IMAGEN_ERR_NOT_FOUND, id);
        CHECK_ERR(imagen_queue_fail(q, old, "x", NULL), IMAGEN_ERR_NOT_FOUND, id);
        CHECK_ERR(imagen_queue_retry(q, old, "x", 0, NULL), IMAGEN_ERR_NOT_FOUND, id);
        CHECK_ERR(imagen_queue_release(q, old), IMAGEN_ERR_NOT_FOUND, id);
        CHECK_OK(imagen_queue_ack(other, fresh, "/out/fresh", NULL));
        imagen_job *job = conf_get(q, id);
        CHECK(job != NULL && job->state == IMAGEN_JOB_DONE && job->attempts == 2);
        if (job != NULL)
            CHECK_STR_EQ(job->output, "/out/fresh");
        imagen_job_free(job);
        /* Ended: the holder of the newer lease cannot end it twice. */
        CHECK_ERR(imagen_queue_ack(other, fresh, "/out/fresh", NULL), IMAGEN_ERR_NOT_FOUND, id);
    }
    imagen_lease_free(old);
    imagen_lease_free(fresh);
    imagen_queue_close(other);
    imagen_queue_close(q);
}

/* ack → done with output and timings; fail → failed with the error. */
static void
conf_ack_fail(void)
{
    char *failed_id = conf_failed_id, *done_id = conf_done_id;
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    conf_publish(q, "cf_end", "{\"k\":1}", done_id);
    conf_publish(q, "cf_end", "{\"k\":2}", failed_id);
    imagen_lease *a = conf_pull1(q, "cf_end", 0);
    imagen_lease *b = conf_pull1(q, "cf_end", 0);
    CHECK(a != NULL && b != NULL);
    if (a != NULL && b != NULL) {
        int64_t before = (int64_t)imagen_time_wall_ms();
        CHECK_OK(imagen_queue_ack(q, a, "/out/k1.png", "{\"decode\":3,\"infer\":40}"));
        CHECK_OK(imagen_queue_fail(q, b, "corrupt image: bad PNG signature", "{\"decode\":1}"));
        imagen_job *job = conf_get(q, done_id);
        CHECK(job != NULL);
        if (job != NULL) {
            CHECK_INT_EQ(job->state, IMAGEN_JOB_DONE);
            CHECK_STR_EQ(job->output, "/out/k1.png");
            CHECK_STR_EQ(job->timings, "{\"decode\":3,\"infer\":40}");
            CHECK(job->finished_ms >= before - 1000);
            CHECK(job->finished_ms >= job->started_ms && job->started_ms >= job->created_ms);
            CHECK_INT_EQ(job->attempts, 1);
            CHECK_STR_EQ(job->consumer, "c1");
        }
        imagen_job_free(job);
        job = conf_get(q, failed_id);
        CHECK(job != NULL);
        if (job != NULL) {
            CHECK_INT_EQ(job->state, IMAGEN_JOB_FAILED);
            CHECK_STR_EQ(job->error, "corrupt image: bad PNG signature");
            CHECK_STR_EQ(job->timings, "{\"decode\":1}");
            CHECK(job->finished_ms >= before - 1000);
            CHECK(job->output == NULL);
        }
        imagen_job_free(job);
        /* Ended deliveries cannot be ended again. */
        CHECK_ERR(imagen_queue_ack(q, a, NULL, NULL), IMAGEN_ERR_NOT_FOUND, done_id);
        CHECK_ERR(imagen_queue_extend(q, b), IMAGEN_ERR_NOT_FOUND, failed_id);
    }
    CHECK(conf_pull1(q, "cf_end", 0) == NULL);
    imagen_lease_free(a);
    imagen_lease_free(b);
    imagen_queue_close(q);
}

/* ack_batch → every delivery done with its own output and timings, as n
 * acks would leave them; a lost lease in a batch fails alone (NOT_FOUND
 * naming its job) and neither stops the others nor touches the delivery
 * that replaced it; n == 0 does nothing. */
static void
conf_ack_batch(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    imagen_queue *other = conf_open("c2", CONF_MAX_ATTEMPTS);
    enum { N = 4 };
    char ids[N][IMAGEN_JOB_ID_SIZE];
    for (int i = 0; i < N; i++)
        conf_publish(q, "cf_ackbatch", "{}", ids[i]);
    const char *ops[] = {"cf_ackbatch"};
    imagen_lease *leases[N + 1] = {NULL};
    size_t n = 0;
    CHECK_OK(imagen_queue_pull(q, ops, 1, N + 1, 0, leases, &n));
    CHECK_INT_EQ(n, N);
    const char *outputs[N] = {"/out/ab0.png", "/out/ab1.png", "/out/ab2.png", "/out/ab3.png"};
    const char *timings[N] = {"{\"infer\":10}", "{\"infer\":11}", "{\"infer\":12}", "{\"infer\":13}"};
    imagen_error *errs[N] = {NULL};
    if (n == N) {
        /* Nothing to end: no call to the driver, every delivery still on. */
        CHECK_OK(imagen_queue_ack_batch(q, leases, 0, outputs, timings, errs));
        imagen_job *job = conf_get(q, leases[0]->job->id);
        CHECK(job != NULL && job->state == IMAGEN_JOB_RUNNING);
        imagen_job_free(job);

        int64_t before = (int64_t)imagen_time_wall_ms();
        CHECK_OK(imagen_queue_ack_batch(q, leases, N, outputs, timings, errs));
        for (int i = 0; i < N; i++) {
            CHECK(errs[i] == NULL);
            imagen_error_free(errs[i]);
            errs[i] = NULL;
            job = conf_get(q, leases[i]->job->id);
            CHECK(job != NULL);
            if (job == NULL)
                continue;
            CHECK_INT_EQ(job->state, IMAGEN_JOB_DONE);
            CHECK_STR_EQ(job->output, outputs[i]);
            CHECK_STR_EQ(job->timings, timings[i]);
            CHECK(job->finished_ms >= before - 1000 && job->finished_ms >= job->started_ms);
            CHECK_INT_EQ(job->attempts, 1);
            CHECK_STR_EQ(job->consumer, "c1");
            imagen_job_free(job);
        }
        imagen_queue_counts *counts = NULL;
        size_t n_counts = 0;
        CHECK_OK(imagen_queue_counts_get(q, &counts, &n_counts));
        const imagen_queue_counts *c = conf_counts_find(counts, n_counts, "cf_ackbatch");
        CHECK(c != NULL);
        if (c != NULL) {
            CHECK_INT_EQ(c->done, N);
            CHECK_INT_EQ(c->queued + c->running + c->failed + c->dead, 0);
        }
        free(counts);

        /* Ended deliveries cannot be ended again, in a batch either. */
        CHECK_OK(imagen_queue_ack_batch(q, leases, 2, outputs, NULL, errs));
        for (int i = 0; i < 2; i++) {
            CHECK(errs[i] != NULL && imagen_error_code_of(errs[i]) == IMAGEN_ERR_NOT_FOUND &&
                  strstr(imagen_error_message(errs[i]), leases[i]->job->id) != NULL);
            imagen_error_free(errs[i]);
            errs[i] = NULL;
        }
    }
    for (size_t i = 0; i < n; i++)
        imagen_lease_free(leases[i]);

    /* A batch of one lease already acked, one live and one whose job was
     * released and delivered again to another consumer; no timings. */
    char acked_id[IMAGEN_JOB_ID_SIZE], live_id[IMAGEN_JOB_ID_SIZE], moved_id[IMAGEN_JOB_ID_SIZE];
    conf_publish(q, "cf_ackbatch_mix", "{}", acked_id);
    conf_publish(q, "cf_ackbatch_mix", "{}", live_id);
    conf_publish(q, "cf_ackbatch_mix", "{}", moved_id);
    imagen_lease *acked = conf_pull1(q, "cf_ackbatch_mix", 0);
    imagen_lease *live = conf_pull1(q, "cf_ackbatch_mix", 0);
    imagen_lease *moved = conf_pull1(q, "cf_ackbatch_mix", 0);
    imagen_lease *fresh = NULL;
    CHECK(acked != NULL && live != NULL && moved != NULL);
    if (acked != NULL && live != NULL && moved != NULL) {
        CHECK_STR_EQ(acked->job->id, acked_id);
        CHECK_STR_EQ(live->job->id, live_id);
        CHECK_STR_EQ(moved->job->id, moved_id);
        CHECK_OK(imagen_queue_ack(q, acked, "/out/single.png", "{\"infer\":1}"));
        CHECK_OK(imagen_queue_release(q, moved));
        fresh = conf_pull1(other, "cf_ackbatch_mix", 0);
        CHECK(fresh != NULL && strcmp(fresh->job->id, moved_id) == 0);

        imagen_lease *batch[3] = {acked, live, moved};
        const char *batch_outputs[3] = {"/out/again.png", "/out/live.png", "/out/stale.png"};
        imagen_error *batch_errs[3] = {NULL, NULL, NULL};
        CHECK_OK(imagen_queue_ack_batch(q, batch, 3, batch_outputs, NULL, batch_errs));
        CHECK(batch_errs[0] != NULL && imagen_error_code_of(batch_errs[0]) == IMAGEN_ERR_NOT_FOUND &&
              strstr(imagen_error_message(batch_errs[0]), acked_id) != NULL);
        CHECK(batch_errs[1] == NULL);
        CHECK(batch_errs[2] != NULL && imagen_error_code_of(batch_errs[2]) == IMAGEN_ERR_NOT_FOUND &&
              strstr(imagen_error_message(batch_errs[2]), moved_id) != NULL);
        for (int i = 0; i < 3; i++)
            imagen_error_free(batch_errs[i]);

        imagen_job *job = conf_get(q, acked_id); /* the first ack stands */
        CHECK(job != NULL && job->state == IMAGEN_JOB_DONE);
        if (job != NULL) {
            CHECK_STR_EQ(job->output, "/out/single.png");
            CHECK_STR_EQ(job->timings, "{\"infer\":1}");
        }
        imagen_job_free(job);
        job = conf_get(q, live_id);
        CHECK(job != NULL && job->state == IMAGEN_JOB_DONE && job->finished_ms > 0);
        if (job != NULL) {
            CHECK_STR_EQ(job->output, "/out/live.png");
            CHECK(job->timings == NULL);
        }
        imagen_job_free(job);
        job = conf_get(q, moved_id); /* still the other consumer's */
        CHECK(job != NULL && job->state == IMAGEN_JOB_RUNNING && job->output == NULL);
        if (job != NULL)
            CHECK_STR_EQ(job->consumer, "c2");
        imagen_job_free(job);

        if (fresh != NULL) {
            imagen_error *fresh_err = NULL;
            CHECK_OK(imagen_queue_ack_batch(other, &fresh, 1, batch_outputs + 2, NULL, &fresh_err));
            CHECK(fresh_err == NULL);
            imagen_error_free(fresh_err);
            job = conf_get(q, moved_id);
            CHECK(job != NULL && job->state == IMAGEN_JOB_DONE);
            if (job != NULL)
                CHECK_STR_EQ(job->output, "/out/stale.png");
            imagen_job_free(job);
        }
    }
    CHECK(conf_pull1(q, "cf_ackbatch_mix", 0) == NULL);
    imagen_queue_counts *counts = NULL;
    size_t n_counts = 0;
    CHECK_OK(imagen_queue_counts_get(q, &counts, &n_counts));
    const imagen_queue_counts *c = conf_counts_find(counts, n_counts, "cf_ackbatch_mix");
    CHECK(c != NULL && c->done == 3 && c->running == 0 && c->queued == 0);
    free(counts);
    imagen_lease_free(acked);
    imagen_lease_free(live);
    imagen_lease_free(moved);
    imagen_lease_free(fresh);
    imagen_queue_close(other);
    imagen_queue_close(q);
}

/* retry → queued again, held back for the delay, then delivered as the
 * next attempt. */
static void
conf_retry_delay(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    char id[IMAGEN_JOB_ID_SIZE];
    conf_publish(q, "cf_retry", "{}", id);
    imagen_lease *lease = conf_pull1(q, "cf_retry", 0);
    CHECK(lease != NULL);
    if (lease == NULL) {
        imagen_queue_close(q);
        return;
    }
    bool dead = true;
    int64_t t0 = conf_now_ms();
    CHECK_OK(imagen_queue_retry(q, lease, "server unavailable", 400, &dead));
    CHECK(!dead);
    imagen_lease_free(lease);
    imagen_job *job = conf_get(q, id);
    CHECK(job != NULL);
    if (job != NULL) {
        CHECK_INT_EQ(job->state, IMAGEN_JOB_QUEUED);
        CHECK_INT_EQ(job->attempts, 1);
        CHECK_STR_EQ(job->error, "server unavailable");
    }
    imagen_job_free(job);
    CHECK(conf_pull1(q, "cf_retry", 0) == NULL);
    lease = conf_pull1(q, "cf_retry", 3000);
    int64_t waited = conf_now_ms() - t0;
    CHECK(lease != NULL);
    CHECK(waited >= 350);
    CHECK(waited < 2500);
    if (lease != NULL) {
        CHECK_STR_EQ(lease->job->id, id);
        CHECK_INT_EQ(lease->job->attempts, 2);
        CHECK_OK(imagen_queue_ack(q, lease, NULL, NULL));
    }
    imagen_lease_free(lease);
    imagen_queue_close(q);
}

/* retry on the max_attempts-th delivery dead-letters the job. */
static void
conf_retry_to_dead(void)
{
    char *dead_id = conf_dead_id;
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    conf_publish(q, "cf_retrymax", "{}", dead_id);
    for (int attempt = 1; attempt <= CONF_MAX_ATTEMPTS; attempt++) {
        imagen_lease *lease = conf_pull1(q, "cf_retrymax", 1000);
        CHECK(lease != NULL);
        if (lease == NULL)
            break;
        CHECK_INT_EQ(lease->job->attempts, attempt);
        bool dead = attempt != CONF_MAX_ATTEMPTS;
        CHECK_OK(imagen_queue_retry(q, lease, "timeout talking to the server", 0, &dead));
        CHECK_INT_EQ(dead, attempt == CONF_MAX_ATTEMPTS);
        imagen_lease_free(lease);
    }
    CHECK(conf_pull1(q, "cf_retrymax", 0) == NULL);
    imagen_job *job = conf_get(q, dead_id);
    CHECK(job != NULL);
    if (job != NULL) {
        CHECK_INT_EQ(job->state, IMAGEN_JOB_DEAD);
        CHECK_INT_EQ(job->attempts, CONF_MAX_ATTEMPTS);
        CHECK_STR_EQ(job->error, "timeout talking to the server");
        CHECK(job->finished_ms > 0);
    }
    imagen_job_free(job);
    imagen_queue_close(q);
}

/* A lease that expires on the last allowed delivery: the next pull
 * dead-letters the job instead of delivering it again. */
static void
conf_expiry_to_dead(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    char id[IMAGEN_JOB_ID_SIZE];
    conf_publish(q, "cf_expmax", "{}", id);
    for (int attempt = 1; attempt <= CONF_MAX_ATTEMPTS; attempt++) {
        imagen_lease *lease = conf_pull1(q, "cf_expmax", 0);
        CHECK(lease != NULL);
        if (lease != NULL)
            CHECK_INT_EQ(lease->job->attempts, attempt);
        imagen_lease_free(lease); /* the worker vanishes */
        conf_sleep_ms(CONF_LEASE_MS + 100);
    }
    CHECK(conf_pull1(q, "cf_expmax", 0) == NULL);
    imagen_job *job = conf_get(q, id);
    CHECK(job != NULL);
    if (job != NULL) {
        CHECK_INT_EQ(job->state, IMAGEN_JOB_DEAD);
        CHECK_INT_EQ(job->attempts, CONF_MAX_ATTEMPTS);
        CHECK(job->error != NULL && strstr(job->error, "lease expired") != NULL);
        CHECK(job->finished_ms > 0);
    }
    imagen_job_free(job);
    imagen_queue_close(q);
}

/* release → queued at once without using an attempt. */
static void
conf_release(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    char id[IMAGEN_JOB_ID_SIZE];
    conf_publish(q, "cf_release", "{}", id);
    for (int round = 0; round < CONF_MAX_ATTEMPTS + 1; round++) {
        imagen_lease *lease = conf_pull1(q, "cf_release", 0);
        CHECK(lease != NULL);
        if (lease == NULL)
            break;
        CHECK_INT_EQ(lease->job->attempts, 1);
        CHECK_OK(imagen_queue_release(q, lease));
        CHECK_ERR(imagen_queue_ack(q, lease, NULL, NULL), IMAGEN_ERR_NOT_FOUND, id);
        imagen_lease_free(lease);
        imagen_job *job = conf_get(q, id);
        CHECK(job != NULL && job->state == IMAGEN_JOB_QUEUED && job->attempts == 0);
        imagen_job_free(job);
    }
    imagen_lease *lease = conf_pull1(q, "cf_release", 0);
    CHECK(lease != NULL);
    if (lease != NULL)
        CHECK_OK(imagen_queue_ack(q, lease, NULL, NULL));
    imagen_lease_free(lease);
    imagen_queue_close(q);
}

/* list: newest first, filtered by op and state, bounded by limit. */
static void
conf_list(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    char ids[3][IMAGEN_JOB_ID_SIZE];
    for (int i = 0; i < 3; i++)
        conf_publish(q, "cf_list", "{}", ids[i]);
    imagen_lease *lease = conf_pull1(q, "cf_list", 0);
    CHECK(lease != NULL && strcmp(lease->job->id, ids[0]) == 0);
    if (lease != NULL)
        CHECK_OK(imagen_queue_ack(q, lease, NULL, NULL));
    imagen_lease_free(lease);

    imagen_job **jobs = NULL;
    size_t n = 0;
    CHECK_OK(imagen_queue_list(q, "cf_list", -1, 0, &jobs, &n));
    CHECK_INT_EQ(n, 3);
    for (size_t i = 0; i < n && i < 3; i++)
        CHECK_STR_EQ(jobs[i]->id, ids[2 - i]);
    imagen_job_list_free(jobs, n);

    CHECK_OK(imagen_queue_list(q, "cf_list", IMAGEN_JOB_QUEUED, 0, &jobs, &n));
    CHECK_INT_EQ(n, 2);
    if (n == 2) {
        CHECK_STR_EQ(jobs[0]->id, ids[2]);
        CHECK_STR_EQ(jobs[1]->id, ids[1]);
        CHECK_INT_EQ(jobs[0]->state, IMAGEN_JOB_QUEUED);
    }
    imagen_job_list_free(jobs, n);

    CHECK_OK(imagen_queue_list(q, "cf_list", IMAGEN_JOB_DONE, 0, &jobs, &n));
    CHECK_INT_EQ(n, 1);
    if (n == 1)
        CHECK_STR_EQ(jobs[0]->id, ids[0]);
    imagen_job_list_free(jobs, n);

    CHECK_OK(imagen_queue_list(q, "cf_list", -1, 1, &jobs, &n));
    CHECK_INT_EQ(n, 1);
    if (n == 1)
        CHECK_STR_EQ(jobs[0]->id, ids[2]);
    imagen_job_list_free(jobs, n);

    CHECK_OK(imagen_queue_list(q, "cf_nothing", -1, 0, &jobs, &n));
    CHECK_INT_EQ(n, 0);
    imagen_job_list_free(jobs, n);

    /* Every op: this part's jobs are there, newest first overall. */
    CHECK_OK(imagen_queue_list(q, NULL, -1, 0, &jobs, &n));
    CHECK(n >= 3);
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            CHECK(jobs[i - 1]->created_ms >= jobs[i]->created_ms);
        for (int k = 0; k < 3; k++)
            found += strcmp(jobs[i]->id, ids[k]) == 0;
    }
    CHECK_INT_EQ(found, 3);
    imagen_job_list_free(jobs, n);

    /* Every op, one state. */
    CHECK_OK(imagen_queue_list(q, NULL, IMAGEN_JOB_QUEUED, 0, &jobs, &n));
    for (size_t i = 0; i < n; i++)
        CHECK_INT_EQ(jobs[i]->state, IMAGEN_JOB_QUEUED);
    imagen_job_list_free(jobs, n);

    /* Leave the op empty of deliverable jobs. */
    for (int i = 0; i < 2; i++) {
        lease = conf_pull1(q, "cf_list", 0);
        CHECK(lease != NULL);
        if (lease != NULL)
            CHECK_OK(imagen_queue_ack(q, lease, NULL, NULL));
        imagen_lease_free(lease);
    }
    imagen_queue_close(q);
}

/* The job a listing of op in `state` cut to one shows: the newest. */
static void
conf_expect_newest(imagen_queue *q, const char *op, int state, const char *id)
{
    imagen_job **jobs = NULL;
    size_t n = 0;
    CHECK_OK(imagen_queue_list(q, op, state, 1, &jobs, &n));
    CHECK_INT_EQ(n, 1);
    if (n == 1)
        CHECK_STR_EQ(jobs[0]->id, id);
    imagen_job_list_free(jobs, n);
}

/* A listing cut by its limit keeps the newest created jobs, whatever order
 * the driver finds them in: a job handed back gets a new place in its queue
 * but keeps its age, done jobs finish in any order, retry delays end in any
 * order. And an op named twice in a pull is one op. */
static void
conf_list_limits(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    char a[IMAGEN_JOB_ID_SIZE], b[IMAGEN_JOB_ID_SIZE];

    /* Released: A goes back behind B, yet B is newer. */
    conf_publish(q, "cf_lim_rel", "{}", a);
    conf_publish(q, "cf_lim_rel", "{}", b);
    imagen_lease *lease = conf_pull1(q, "cf_lim_rel", 0);
    CHECK(lease != NULL && strcmp(lease->job->id, a) == 0);
    if (lease != NULL)
        CHECK_OK(imagen_queue_release(q, lease));
    imagen_lease_free(lease);
    conf_expect_newest(q, "cf_lim_rel", IMAGEN_JOB_QUEUED, b);

    /* Done out of order: the newer job finished first. */
    conf_publish(q, "cf_lim_done", "{}", a);
    conf_publish(q, "cf_lim_done", "{}", b);
    imagen_lease *la = conf_pull1(q, "cf_lim_done", 0);
    imagen_lease *lb = conf_pull1(q, "cf_lim_done", 0);
    CHECK(la != NULL && lb != NULL);
    if (la != NULL && lb != NULL) {
        CHECK_OK(imagen_queue_ack(q, lb, NULL, NULL));
        CHECK_OK(imagen_queue_ack(q, la, NULL, NULL));
    }
    imagen_lease_free(la);
    imagen_lease_free(lb);
    conf_expect_newest(q, "cf_lim_done", IMAGEN_JOB_DONE, b);

    /* Retry delays: the older job's delay ends first. */
    conf_publish(q, "cf_lim_delay", "{}", a);
    conf_publish(q, "cf_lim_delay", "{}", b);
    la = conf_pull1(q, "cf_lim_delay", 0);
    lb = conf_pull1(q, "cf_lim_delay", 0);
    CHECK(la != NULL && lb != NULL);
    if (la != NULL && lb != NULL) {
        CHECK_OK(imagen_queue_retry(q, la, "later", 60000, NULL));
        CHECK_OK(imagen_queue_retry(q, lb, "much later", 600000, NULL));
    }
    imagen_lease_free(la);
    imagen_lease_free(lb);
    conf_expect_newest(q, "cf_lim_delay", IMAGEN_JOB_QUEUED, b);

    /* The same op twice in one pull: both of its jobs come. */
    conf_publish(q, "cf_lim_twice", "{}", a);
    conf_publish(q, "cf_lim_twice", "{}", b);
    const char *twice[] = {"cf_lim_twice", "cf_lim_twice"};
    imagen_lease *got[4] = {NULL};
    size_t n = 0;
    CHECK_OK(imagen_queue_pull(q, twice, 2, 2, 0, got, &n));
    CHECK_INT_EQ(n, 2);
    conf_ack_all(q, got, n);
    imagen_queue_close(q);
}

/* requeue: failed and dead jobs only, with attempts reset. */
static void
conf_requeue(void)
{
    const char *failed_id = conf_failed_id, *done_id = conf_done_id, *dead_id = conf_dead_id;
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    CHECK_OK(imagen_queue_requeue(q, failed_id));
    imagen_job *job = conf_get(q, failed_id);
    CHECK(job != NULL && job->state == IMAGEN_JOB_QUEUED && job->attempts == 0);
    imagen_job_free(job);
    CHECK_ERR(imagen_queue_requeue(q, failed_id), IMAGEN_ERR_INVALID_ARG, failed_id); /* queued */
    imagen_lease *lease = conf_pull1(q, "cf_end", 0);
    CHECK(lease != NULL && strcmp(lease->job->id, failed_id) == 0 && lease->job->attempts == 1);
    CHECK_ERR(imagen_queue_requeue(q, failed_id), IMAGEN_ERR_INVALID_ARG, failed_id); /* running */
    if (lease != NULL)
        CHECK_OK(imagen_queue_ack(q, lease, NULL, NULL));
    imagen_lease_free(lease);
    CHECK_ERR(imagen_queue_requeue(q, done_id), IMAGEN_ERR_INVALID_ARG, done_id);
    CHECK_ERR(imagen_queue_requeue(q, "ffffffffffffffffffffffff"), IMAGEN_ERR_NOT_FOUND, "ffffffffffffffffffffffff");

    CHECK_OK(imagen_queue_requeue(q, dead_id));
    job = conf_get(q, dead_id);
    CHECK(job != NULL && job->state == IMAGEN_JOB_QUEUED && job->attempts == 0);
    imagen_job_free(job);
    lease = conf_pull1(q, "cf_retrymax", 0);
    CHECK(lease != NULL && lease->job->attempts == 1);
    if (lease != NULL)
        CHECK_OK(imagen_queue_ack(q, lease, NULL, NULL));
    imagen_lease_free(lease);
    imagen_queue_close(q);
}

/* Kills `n` jobs of op through retries on a handle allowing one attempt. */
static void
conf_make_dead(imagen_queue *q1, const char *op, int n)
{
    for (int i = 0; i < n; i++) {
        char id[IMAGEN_JOB_ID_SIZE];
        conf_publish(q1, op, "{}", id);
        imagen_lease *lease = conf_pull1(q1, op, 0);
        CHECK(lease != NULL);
        bool dead = false;
        if (lease != NULL)
            CHECK_OK(imagen_queue_retry(q1, lease, "gone", 0, &dead));
        CHECK(dead);
        imagen_lease_free(lease);
    }
}

/* counts per op and state; requeue_dead of one op and of all. */
static void
conf_counts_and_requeue_dead(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    imagen_queue *q1 = conf_open("c1", 1);
    char id[IMAGEN_JOB_ID_SIZE];
    /* cf_counts: 2 queued, 1 running, 1 done, 1 failed, 2 dead. */
    for (int i = 0; i < 3; i++)
        conf_publish(q, "cf_counts", "{}", id);
    imagen_lease *a = conf_pull1(q, "cf_counts", 0);
    CHECK(a != NULL);
    if (a != NULL)
        CHECK_OK(imagen_queue_ack(q, a, NULL, NULL));
    imagen_lease_free(a);
    imagen_lease *f = conf_pull1(q, "cf_counts", 0);
    CHECK(f != NULL);
    if (f != NULL)
        CHECK_OK(imagen_queue_fail(q, f, "bad", NULL));
    imagen_lease_free(f);
    imagen_lease *running = conf_pull1(q, "cf_counts", 0);
    CHECK(running != NULL);
    conf_make_dead(q1, "cf_counts", 2);
    for (int i = 0; i < 2; i++)
        conf_publish(q, "cf_counts", "{}", id);
    conf_make_dead(q1, "cf_counts_b", 3);

    imagen_queue_counts *counts = NULL;
    size_t n = 0;
    CHECK_OK(imagen_queue_counts_get(q, &counts, &n));
    for (size_t i = 1; i < n; i++)
        CHECK(strcmp(counts[i - 1].op, counts[i].op) < 0);
    const imagen_queue_counts *c = conf_counts_find(counts, n, "cf_counts");
    CHECK(c != NULL);
    if (c != NULL) {
        CHECK_INT_EQ(c->queued, 2);
        CHECK_INT_EQ(c->running, 1);
        CHECK_INT_EQ(c->done, 1);
        CHECK_INT_EQ(c->failed, 1);
        CHECK_INT_EQ(c->dead, 2);
    }
    const imagen_queue_counts *cb = conf_counts_find(counts, n, "cf_counts_b");
    CHECK(cb != NULL && cb->dead == 3 && cb->queued == 0);
    CHECK(conf_counts_find(counts, n, "cf_never_used") == NULL);
    CHECK(conf_counts_find(counts, n, "cf_basic") != NULL);
    free(counts);

    size_t requeued = 99;
    CHECK_OK(imagen_queue_requeue_dead(q, "cf_counts", &requeued));
    CHECK_INT_EQ(requeued, 2);
    CHECK_OK(imagen_queue_requeue_dead(q, "cf_counts", &requeued));
    CHECK_INT_EQ(requeued, 0);
    CHECK_OK(imagen_queue_counts_get(q, &counts, &n));
    c = conf_counts_find(counts, n, "cf_counts");
    CHECK(c != NULL && c->queued == 4 && c->dead == 0 && c->running == 1);
    uint64_t dead_total = 0;
    for (size_t i = 0; i < n; i++)
        dead_total += counts[i].dead;
    free(counts);
    CHECK(dead_total >= 3);

    CHECK_OK(imagen_queue_requeue_dead(q, NULL, &requeued));
    CHECK_INT_EQ(requeued, dead_total);
    CHECK_OK(imagen_queue_counts_get(q, &counts, &n));
    cb = conf_counts_find(counts, n, "cf_counts_b");
    CHECK(cb != NULL && cb->dead == 0 && cb->queued == 3);
    for (size_t i = 0; i < n; i++)
        CHECK_INT_EQ(counts[i].dead, 0);
    free(counts);
    CHECK_OK(imagen_queue_requeue_dead(q, NULL, NULL));

    if (running != NULL)
        CHECK_OK(imagen_queue_ack(q, running, NULL, NULL));
    imagen_lease_free(running);
    imagen_queue_close(q1);
    imagen_queue_close(q);
}

/* Arguments the front rejects for every driver. */
static void
conf_bad_arguments(void)
{
    imagen_queue *q = conf_open("c1", CONF_MAX_ATTEMPTS);
    char id[IMAGEN_JOB_ID_SIZE];
    CHECK_ERR(imagen_queue_publish(q, "Bad-Op", "{}", id), IMAGEN_ERR_INVALID_ARG, "Bad-Op");
    CHECK_ERR(imagen_queue_publish(q, "cf_bad", "[1]", id), IMAGEN_ERR_INVALID_ARG, "JSON object");
    const char *ops[] = {"cf_bad"};
    imagen_lease *leases[1];
    size_t n = 7;
    CHECK_ERR(imagen_queue_pull(q, ops, 0, 1, 0, leases, &n), IMAGEN_ERR_INVALID_ARG, "operation");
    CHECK_INT_EQ(n, 0);
    imagen_queue_close(q);
}

/* Runs every part against `url`; returns the number of failed checks. */
static int
queue_conformance_run(const char *url)
{
    int before = test_failures_;
    conf_url = url;
    RUN(conf_publish_get);
    RUN(conf_publish_batch);
    RUN(conf_order_and_max);
    RUN(conf_several_ops);
    RUN(conf_wait);
    RUN(conf_extend);
    RUN(conf_expiry);
    RUN(conf_lease_is_per_delivery);
    RUN(conf_ack_fail);
    RUN(conf_ack_batch);
    RUN(conf_retry_delay);
    RUN(conf_retry_to_dead);
    RUN(conf_expiry_to_dead);
    RUN(conf_release);
    RUN(conf_list);
    RUN(conf_list_limits);
    RUN(conf_requeue);
    RUN(conf_counts_and_requeue_dead);
    RUN(conf_bad_arguments);
    return test_failures_ - before;
}

#endif
