/*
 * The Redis Streams queue driver against a real Redis: the shared queue
 * contract (queue_conformance.h) plus what only this driver has — streams,
 * the consumer group's pending entries, the dead-letter stream — checked by
 * looking at Redis directly, and a publish→pull→ack throughput figure.
 *
 * Needs IMAGEN_TEST_REDIS_URL (redis://host:port/db of an EMPTY database);
 * without it the test prints why and passes, so a bare ctest run works
 * without a Redis. The integration suite (tests/integration/
 * test_queue_redis.py) runs it against a Redis it starts.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "queue/queue_conformance.h"

/* Shorter than the conformance lease so that the vanished-worker check is quick. */
#define RD_LEASE_MS 200

static redisContext *rd_ctx;

/* A plain connection to the same database, for looking behind the driver. */
static redisContext *
rd_connect(const char *url)
{
    char host[256] = "";
    int port = 6379, db = 0;
    if (sscanf(url, "redis://%255[^:/]:%d/%d", host, &port, &db) < 1)
        return NULL;
    struct timeval tv = {.tv_sec = 2};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (c == NULL || c->err) {
        fprintf(stderr, "cannot connect to %s:%d: %s\n", host, port, c != NULL ? c->errstr : "out of memory");
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    redisReply *r = redisCommand(c, "SELECT %d", db);
    if (r != NULL)
        freeReplyObject(r);
    return c;
}

/* An integer reply of a command (XLEN, ZCARD, DBSIZE ...), or a number
 * held as a string (HGET of a counter), -1 on error or nil. */
static long long
rd_int(const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(rd_ctx, fmt, arg);
    long long v = -1;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r != NULL && r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    if (r != NULL)
        freeReplyObject(r);
    return v;
}

/* XPENDING summary of an op's stream: count, and the consumer holding
 * everything when exactly one does (empty otherwise). */
static long long
rd_pending(const char *op, char *only_consumer, size_t size)
{
    redisReply *r = redisCommand(rd_ctx, "XPENDING imagen:q:%s imagen", op);
    long long n = -1;
    if (only_consumer != NULL)
        only_consumer[0] = '\0';
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
        n = r->element[0]->integer;
        const redisReply *cons = r->element[3];
        if (only_consumer != NULL && cons->type == REDIS_REPLY_ARRAY && cons->elements == 1)
            snprintf(only_consumer, size, "%s", cons->element[0]->element[0]->str);
    }
    if (r != NULL)
        freeReplyObject(r);
    return n;
}

static imagen_queue *
rd_open(const char *consumer, int max_attempts)
{
    imagen_queue_options opt = {.consumer = consumer, .max_attempts = max_attempts, .lease_ms = RD_LEASE_MS};
    imagen_queue *q = NULL;
    CHECK_OK(imagen_queue_open(conf_url, &opt, &q));
    return q;
}

/* Malformed URLs are INVALID_ARG naming the URL; an unreachable server is
 * UNAVAILABLE naming host:port. */
static void
rd_urls(void)
{
    const char *bad[] = {"redis://",       "redis://:6379",       "redis://host:0",        "redis://host:70000",
                         "redis://host:x", "redis://host:6379/x", "redis://host:6379/1/2", "redis://host:-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        imagen_queue *q = NULL;
        CHECK_ERR(imagen_queue_open(bad[i], NULL, &q), IMAGEN_ERR_INVALID_ARG, bad[i]);
        CHECK(q == NULL);
    }
    imagen_queue *q = NULL;
    /* Port 1 on loopback: nothing listens there, the connection is refused at once. */
    CHECK_ERR(imagen_queue_open("redis://127.0.0.1:1", NULL, &q), IMAGEN_ERR_UNAVAILABLE, "127.0.0.1:1");
    CHECK(q == NULL);
    q = rd_open("u1", 3);
    if (q != NULL)
        CHECK_STR_EQ(imagen_queue_driver_name(q), "redis");
    imagen_queue_close(q);
}

/* A worker that vanishes without acking: after lease_ms its entry is
 * XCLAIMed by the next consumer that pulls, and the PEL says so. */
static void
rd_vanished_worker(void)
{
    imagen_queue *w1 = rd_open("rd-w1", 3);
    imagen_queue *w2 = rd_open("rd-w2", 3);
    char id[IMAGEN_JOB_ID_SIZE];
    CHECK_OK(imagen_queue_publish(w1, "rd_vanish", "{}", id));
    imagen_lease *gone = conf_pull1(w1, "rd_vanish", 0);
    CHECK(gone != NULL);
    char holder[64];
    CHECK_INT_EQ(rd_pending("rd_vanish", holder, sizeof holder), 1);
    CHECK_STR_EQ(holder, "rd-w1");
    imagen_lease_free(gone); /* never acked, never extended */
    imagen_lease *early = conf_pull1(w2, "rd_vanish", 0);
    CHECK(early == NULL);
    imagen_lease_free(early);
    /* A waiting pull picks it up once the lease has run out. */
    int64_t t0 = conf_now_ms();
    imagen_lease *taken = conf_pull1(w2, "rd_vanish", 3000);
    CHECK(taken != NULL);
    CHECK(conf_now_ms() - t0 < 2000);
    if (taken != NULL) {
        CHECK_STR_EQ(taken->job->id, id);
        CHECK_STR_EQ(taken->job->consumer, "rd-w2");
        CHECK_INT_EQ(taken->job->attempts, 2);
        CHECK_INT_EQ(rd_pending("rd_vanish", holder, sizeof holder), 1);
        CHECK_STR_EQ(holder, "rd-w2");
        CHECK_OK(imagen_queue_ack(w2, taken, "/out/v", NULL));
    }
    imagen_lease_free(taken);
    CHECK_INT_EQ(rd_pending("rd_vanish", NULL, 0), 0);
    CHECK_INT_EQ(rd_int("XLEN imagen:q:%s", "rd_vanish"), 0);
    imagen_queue_close(w2);
    imagen_queue_close(w1);
}

/* The stream holds exactly the queued-and-not-delayed plus running jobs, the
 * PEL exactly the running ones, the state zsets match counts, and the dead
 * stream one entry per dead job: nothing is trimmed and nothing leaks. */
static void
rd_streams_match_counts(void)
{
    imagen_queue *q = rd_open("rd-c", 3);
    imagen_queue *q1 = rd_open("rd-c", 1);
    const char *op = "rd_consistent";
    char ids[10][IMAGEN_JOB_ID_SIZE];
    for (int i = 0; i < 10; i++)
        CHECK_OK(imagen_queue_publish(q, op, "{}", ids[i]));
    CHECK_INT_EQ(rd_int("XLEN imagen:q:%s", op), 10);
    CHECK_INT_EQ(rd_pending(op, NULL, 0), 0);

    const char *ops[] = {op};
    imagen_lease *leases[10] = {NULL};
    size_t n = 0;
    CHECK_OK(imagen_queue_pull(q, ops, 1, 6, 0, leases, &n));
    CHECK_INT_EQ(n, 6);
    if (n == 6) {
        CHECK_OK(imagen_queue_ack(q, leases[0], "/o", NULL));
        CHECK_OK(imagen_queue_fail(q, leases[1], "bad", NULL));
        bool dead = true;
        CHECK_OK(imagen_queue_retry(q, leases[2], "later", 60000, &dead)); /* delayed, not in the stream */
        CHECK(!dead);
        CHECK_OK(imagen_queue_release(q, leases[3]));                  /* back in the stream */
        CHECK_OK(imagen_queue_retry(q1, leases[4], "gone", 0, &dead)); /* 1 attempt allowed: dead */
        CHECK(dead);
        /* leases[5] stays running */
    }
    imagen_queue_counts *counts = NULL;
    size_t nc = 0;
    CHECK_OK(imagen_queue_counts_get(q, &counts, &nc));
    const imagen_queue_counts *c = conf_counts_find(counts, nc, op);
    CHECK(c != NULL);
    if (c != NULL) {
        CHECK_INT_EQ(c->queued, 6); /* 4 never pulled, 1 released, 1 waiting out its retry delay */
        CHECK_INT_EQ(c->running, 1);
        CHECK_INT_EQ(c->done, 1);
        CHECK_INT_EQ(c->failed, 1);
        CHECK_INT_EQ(c->dead, 1);
        long long delayed = rd_int("ZCARD imagen:delayed:%s", op);
        CHECK_INT_EQ(delayed, 1);
        /* The delayed job has no stream entry until its delay ends. */
        CHECK_INT_EQ(rd_int("XLEN imagen:q:%s", op), (long long)(c->queued + c->running) - delayed);
        CHECK_INT_EQ(rd_pending(op, NULL, 0), (long long)c->running);
        CHECK_INT_EQ(rd_int("XLEN imagen:dead:%s", op), (long long)c->dead);
        /* The counts are kept in a hash; the terminal states also have
         * their indexes (the done list, the failed and dead zsets). */
        CHECK_INT_EQ(rd_int("HGET imagen:counts:%s queued", op), (long long)c->queued);
        CHECK_INT_EQ(rd_int("ZCARD imagen:state:%s:done", op), (long long)c->done);
        CHECK_INT_EQ(rd_int("ZCARD imagen:state:%s:failed", op), (long long)c->failed);
        CHECK_INT_EQ(rd_int("ZCARD imagen:state:%s:dead", op), (long long)c->dead);
    }
    free(counts);

    /* The dead stream's entry names the dead job and its error. */
    redisReply *r = redisCommand(rd_ctx, "XRANGE imagen:dead:%s - +", op);
    CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        const redisReply *fields = r->element[0]->element[1];
        CHECK(fields->elements == 4);
        if (fields->elements == 4) {
            CHECK_STR_EQ(fields->element[0]->str, "id");
            CHECK_STR_EQ(fields->element[1]->str, ids[4]);
            CHECK_STR_EQ(fields->element[2]->str, "error");
            CHECK_STR_EQ(fields->element[3]->str, "gone");
        }
    }
    if (r != NULL)
        freeReplyObject(r);
    /* requeue takes it out of the dead stream. */
    CHECK_OK(imagen_queue_requeue(q, ids[4]));
    CHECK_INT_EQ(rd_int("XLEN imagen:dead:%s", op), 0);

    /* Drain everything; afterwards the stream and PEL are empty. */
    if (n == 6)
        CHECK_OK(imagen_queue_ack(q, leases[5], NULL, NULL));
    for (size_t i = 0; i < n; i++)
        imagen_lease_free(leases[i]);
    for (;;) {
        CHECK_OK(imagen_queue_pull(q, ops, 1, 10, 0, leases, &n));
        if (n == 0)
            break;
        conf_ack_all(q, leases, n);
    }
    CHECK_INT_EQ(rd_int("XLEN imagen:q:%s", op), 0);
    CHECK_INT_EQ(rd_pending(op, NULL, 0), 0);
    CHECK_INT_EQ(rd_int("ZCARD imagen:delayed:%s", op), 1); /* still waiting out its minute */
    imagen_queue_close(q1);
    imagen_queue_close(q);
}

/* A job whose stream entry went missing behind the driver's back (a stale
 * duplicate entry, say) is skipped rather than delivered twice. */
static void
rd_stale_entry(void)
{
    imagen_queue *q = rd_open("rd-s", 3);
    const char *op = "rd_stale";
    char id[IMAGEN_JOB_ID_SIZE];
    CHECK_OK(imagen_queue_publish(q, op, "{}", id));
    /* A second entry naming the same job: only one delivery may come of it. */
    redisReply *r = redisCommand(rd_ctx, "XADD imagen:q:%s * id %s", op, id);
    if (r != NULL)
        freeReplyObject(r);
    const char *ops[] = {op};
    imagen_lease *leases[4] = {NULL};
    size_t n = 0;
    CHECK_OK(imagen_queue_pull(q, ops, 1, 4, 0, leases, &n));
    CHECK_INT_EQ(n, 1);
    conf_ack_all(q, leases, n);
    CHECK_OK(imagen_queue_pull(q, ops, 1, 4, 0, leases, &n));
    CHECK_INT_EQ(n, 0);
    CHECK_INT_EQ(rd_int("XLEN imagen:q:%s", op), 0);
    imagen_queue_close(q);
}

/* A delivery whose short lease ran out is found even behind more than a
 * page (1000) of older deliveries still inside their long leases. */
static void
rd_reclaim_behind_long_leases(void)
{
    const char *op = "rd_deep_pel";
    imagen_queue_options long_opt = {.consumer = "rd-long", .max_attempts = 3, .lease_ms = 600000};
    imagen_queue *long_q = NULL;
    CHECK_OK(imagen_queue_open(conf_url, &long_opt, &long_q));
    imagen_queue *short_q = rd_open("rd-short", 3);
    imagen_queue *other_q = rd_open("rd-other", 3);
    if (long_q == NULL || short_q == NULL || other_q == NULL) {
        imagen_queue_close(long_q);
        imagen_queue_close(short_q);
        imagen_queue_close(other_q);
        return;
    }
    enum { HELD = 1001 };
    const char **specs = malloc(HELD * sizeof *specs);
    char(*ids)[IMAGEN_JOB_ID_SIZE] = malloc((HELD + 1) * IMAGEN_JOB_ID_SIZE);
    imagen_lease **leases = calloc(HELD, sizeof *leases);
    CHECK(specs != NULL && ids != NULL && leases != NULL);
    if (specs != NULL && ids != NULL && leases != NULL) {
        for (int i = 0; i < HELD; i++)
            specs[i] = "{}";
        CHECK_OK(imagen_queue_publish_batch(long_q, op, specs, HELD, ids));
        conf_sleep_ms(2);
        CHECK_OK(imagen_queue_publish(long_q, op, "{}", ids[HELD]));
        const char *ops[] = {op};
        size_t n = 0;
        CHECK_OK(imagen_queue_pull(long_q, ops, 1, HELD, 0, leases, &n));
        CHECK_INT_EQ(n, HELD);
        imagen_lease *lost = conf_pull1(short_q, op, 0);
        CHECK(lost != NULL && strcmp(lost->job->id, ids[HELD]) == 0);
        conf_sleep_ms(RD_LEASE_MS * 2);
        imagen_lease *taken = conf_pull1(other_q, op, 1000);
        CHECK(taken != NULL && strcmp(taken->job->id, ids[HELD]) == 0 && taken->job->attempts == 2);
        if (taken != NULL)
            CHECK_OK(imagen_queue_ack(other_q, taken, NULL, NULL));
        imagen_lease_free(taken);
        imagen_lease_free(lost);
        imagen_error **errs = calloc(n > 0 ? n : 1, sizeof *errs);
        const char **outs = calloc(n > 0 ? n : 1, sizeof *outs);
        CHECK(errs != NULL && outs != NULL);
        if (errs != NULL && outs != NULL && n > 0) {
            CHECK_OK(imagen_queue_ack_batch(long_q, leases, n, outs, NULL, errs));
            for (size_t i = 0; i < n; i++)
                CHECK(errs[i] == NULL);
        }
        free(errs);
        free(outs);
        for (size_t i = 0; i < n; i++)
            imagen_lease_free(leases[i]);
        CHECK_INT_EQ(rd_int("XLEN imagen:q:%s", op), 0);
        CHECK_INT_EQ(rd_int("HGET imagen:counts:%s done", op), HELD + 1);
        CHECK_INT_EQ(rd_int("HGET imagen:counts:%s running", op), 0);
    }
    free(specs);
    free(ids);
    free(leases);
    imagen_queue_close(other_q);
    imagen_queue_close(short_q);
    imagen_queue_close(long_q);
}

/* A stream of an op's name that someone else made, without the driver's
 * consumer group: pulls and listings still work, the entry that names no
 * job of ours is dropped, and the counts stay right. */
static void
rd_stream_without_group(void)
{
    const char *op = "rd_nogroup";
    redisReply *r = redisCommand(rd_ctx, "XADD imagen:q:%s * id not-a-job", op);
    if (r != NULL)
        freeReplyObject(r);
    imagen_queue *q = rd_open("rd-ng", 3);
    if (q == NULL)
        return;
    const char *ops[] = {op};
    imagen_lease *leases[2] = {NULL};
    size_t n = 9;
    CHECK_OK(imagen_queue_pull(q, ops, 1, 2, 0, leases, &n));
    CHECK_INT_EQ(n, 0);
    char id[IMAGEN_JOB_ID_SIZE];
    CHECK_OK(imagen_queue_publish(q, op, "{}", id));
    imagen_job **jobs = NULL;
    CHECK_OK(imagen_queue_list(q, op, -1, 0, &jobs, &n));
    CHECK_INT_EQ(n, 1);
    imagen_job_list_free(jobs, n);
    imagen_lease *lease = conf_pull1(q, op, 0);
    CHECK(lease != NULL && strcmp(lease->job->id, id) == 0);
    if (lease != NULL)
        CHECK_OK(imagen_queue_ack(q, lease, NULL, NULL));
    imagen_lease_free(lease);
    imagen_queue_counts *counts = NULL;
    size_t nc = 0;
    CHECK_OK(imagen_queue_counts_get(q, &counts, &nc));
    const imagen_queue_counts *c = conf_counts_find(counts, nc, op);
    CHECK(c != NULL && c->queued == 0 && c->running == 0 && c->done == 1);
    free(counts);
    imagen_queue_close(q);
}

/* Runs plain commands behind the driver's back (data it did not write). */
static void
rd_run_all(const char *const *cmds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        redisReply *r = redisCommand(rd_ctx, cmds[i]);
        CHECK(r != NULL && r->type != REDIS_REPLY_ERROR);
        if (r != NULL)
            freeReplyObject(r);
    }
}

/* Records this driver did not write: an unknown state is an error naming
 * it for `get`, and a listing leaves such records out instead of failing. */
static void
rd_foreign_records(void)
{
    const char *cmds[] = {
        "SADD imagen:ops rd_foreign",
        "HSET imagen:job:0000000000000000000000b1 id 0000000000000000000000b1 op rd_foreign spec {} state bogus "
        "created_ms 5",
        "HSET imagen:job:0000000000000000000000b2-and-far-too-long id 0000000000000000000000b2-and-far-too-long op "
        "rd_foreign spec {} state failed created_ms 6",
        "ZADD imagen:state:rd_foreign:failed 5 0000000000000000000000b1 6 0000000000000000000000b2-and-far-too-long",
    };
    rd_run_all(cmds, sizeof cmds / sizeof cmds[0]);
    imagen_queue *q = rd_open("rd-foreign", 3);
    if (q == NULL)
        return;
    imagen_job *job = NULL;
    CHECK_ERR(imagen_queue_get(q, "0000000000000000000000b1", &job), IMAGEN_ERR_INTERNAL, "bogus");
    CHECK(job == NULL);
    imagen_job **jobs = NULL;
    size_t n = 9;
    CHECK_OK(imagen_queue_list(q, "rd_foreign", IMAGEN_JOB_FAILED, 0, &jobs, &n));
    CHECK_INT_EQ(n, 0);
    imagen_job_list_free(jobs, n);
    imagen_queue_close(q);
}

/* Data of the first layout (a zset per op and state, no counts hash) gets
 * its counts at the next open, and the zsets nothing maintains any more go. */
static void
rd_migrates_first_layout(void)
{
    const char *op = "rd_old";
    const char *cmds[] = {
        "DEL imagen:layout",
        "SADD imagen:ops rd_old",
        "HSET imagen:job:0000000000000000000000a1 id 0000000000000000000000a1 op rd_old spec {} state queued "
        "attempts 0 created_ms 1 started_ms 0 finished_ms 0 updated_ms 1",
        "HSET imagen:job:0000000000000000000000a2 id 0000000000000000000000a2 op rd_old spec {} state done "
        "attempts 1 created_ms 2 started_ms 2 finished_ms 3 updated_ms 3",
        "HSET imagen:job:0000000000000000000000a3 id 0000000000000000000000a3 op rd_old spec {} state failed "
        "attempts 1 created_ms 3 started_ms 3 finished_ms 4 updated_ms 4",
        "ZADD imagen:state:rd_old:queued 1 0000000000000000000000a1",
        "ZADD imagen:state:rd_old:done 2 0000000000000000000000a2",
        "ZADD imagen:state:rd_old:failed 3 0000000000000000000000a3",
    };
    rd_run_all(cmds, sizeof cmds / sizeof cmds[0]);
    imagen_queue *q = rd_open("rd-mig", 3);
    if (q == NULL)
        return;
    imagen_queue_counts *counts = NULL;
    size_t nc = 0;
    CHECK_OK(imagen_queue_counts_get(q, &counts, &nc));
    const imagen_queue_counts *c = conf_counts_find(counts, nc, op);
    CHECK(c != NULL && c->queued == 1 && c->running == 0 && c->done == 1 && c->failed == 1 && c->dead == 0);
    free(counts);
    CHECK_INT_EQ(rd_int("EXISTS imagen:state:%s:queued", op), 0);
    CHECK_INT_EQ(rd_int("GET imagen:layout", NULL), 2);
    imagen_job **jobs = NULL;
    size_t n = 0;
    CHECK_OK(imagen_queue_list(q, op, IMAGEN_JOB_DONE, 0, &jobs, &n));
    CHECK(n == 1 && strcmp(jobs[0]->id, "0000000000000000000000a2") == 0);
    imagen_job_list_free(jobs, n);
    /* Ops already in this layout were left alone. */
    c = NULL;
    CHECK_OK(imagen_queue_counts_get(q, &counts, &nc));
    c = conf_counts_find(counts, nc, "rd_nogroup");
    CHECK(c != NULL && c->done == 1);
    free(counts);
    imagen_queue_close(q);
}

/* Several threads pulling the same op at once, some sharing one handle,
 * some with their own: every job is delivered exactly once (the pull
 * script is atomic, and the handle's connection pool keeps hiredis
 * contexts to one thread at a time). */
#define RD_THREADS 4
#define RD_RACE_JOBS 400

typedef struct rd_racer {
    imagen_queue *q;
    int *deliveries; /* per job index, shared */
    char (*ids)[IMAGEN_JOB_ID_SIZE];
    pthread_mutex_t *mu;
    int *total;
} rd_racer;

static void *
rd_race(void *arg)
{
    rd_racer *r = arg;
    const char *ops[] = {"rd_race"};
    for (;;) {
        pthread_mutex_lock(r->mu);
        bool finished = *r->total >= RD_RACE_JOBS;
        pthread_mutex_unlock(r->mu);
        if (finished)
            break;
        imagen_lease *leases[4];
        size_t n = 0;
        imagen_error *err = imagen_queue_pull(r->q, ops, 1, 4, 100, leases, &n);
        CHECK_OK(err);
        if (err != NULL)
            break;
        for (size_t i = 0; i < n; i++) {
            pthread_mutex_lock(r->mu);
            for (int j = 0; j < RD_RACE_JOBS; j++) {
                if (strcmp(r->ids[j], leases[i]->job->id) == 0)
                    r->deliveries[j]++;
            }
            (*r->total)++;
            pthread_mutex_unlock(r->mu);
            CHECK_OK(imagen_queue_ack(r->q, leases[i], NULL, NULL));
            imagen_lease_free(leases[i]);
        }
    }
    return NULL;
}

static void
rd_concurrent_pullers(void)
{
    imagen_queue *shared = rd_open("rd-shared", 3);
    imagen_queue *own[2] = {rd_open("rd-own1", 3), rd_open("rd-own2", 3)};
    static char ids[RD_RACE_JOBS][IMAGEN_JOB_ID_SIZE];
    static int deliveries[RD_RACE_JOBS];
    for (int i = 0; i < RD_RACE_JOBS; i++)
        CHECK_OK(imagen_queue_publish(shared, "rd_race", "{}", ids[i]));
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int total = 0;
    rd_racer racers[RD_THREADS];
    pthread_t threads[RD_THREADS];
    for (int t = 0; t < RD_THREADS; t++) {
        racers[t] = (rd_racer){
            .q = t < 2 ? shared : own[t - 2], .deliveries = deliveries, .ids = ids, .mu = &mu, .total = &total};
        CHECK_INT_EQ(pthread_create(&threads[t], NULL, rd_race, &racers[t]), 0);
    }
    for (int t = 0; t < RD_THREADS; t++)
        pthread_join(threads[t], NULL);
    CHECK_INT_EQ(total, RD_RACE_JOBS);
    int wrong = 0;
    for (int i = 0; i < RD_RACE_JOBS; i++)
        wrong += deliveries[i] != 1;
    CHECK_INT_EQ(wrong, 0);
    CHECK_INT_EQ(rd_int("XLEN imagen:q:%s", "rd_race"), 0);
    CHECK_INT_EQ(rd_pending("rd_race", NULL, 0), 0);
    imagen_queue_close(own[1]);
    imagen_queue_close(own[0]);
    imagen_queue_close(shared);
}

/* publish → pull → ack through one handle; prints jobs/s (no assertion on it). */
static void
rd_throughput(void)
{
    imagen_queue *q = rd_open("rd-t", 3);
    const char *op = "rd_speed";
    const int total = 2000;
    const char *ops[] = {op};
    int64_t t0 = conf_now_ms();
    for (int i = 0; i < total; i++) {
        char id[IMAGEN_JOB_ID_SIZE];
        CHECK_OK(imagen_queue_publish(q, op, "{\"input\":\"https://example.com/a.png\",\"scale\":2}", id));
    }
    int64_t t1 = conf_now_ms();
    int done = 0;
    imagen_lease *leases[16];
    while (done < total) {
        size_t n = 0;
        imagen_error *err = imagen_queue_pull(q, ops, 1, 16, 0, leases, &n);
        CHECK_OK(err);
        if (err != NULL || n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            CHECK_OK(imagen_queue_ack(q, leases[i], "/out", NULL));
            imagen_lease_free(leases[i]);
        }
        done += (int)n;
    }
    int64_t t2 = conf_now_ms();
    CHECK_INT_EQ(done, total);
    double all_s = (double)(t2 - t0) / 1000.0;
    printf("throughput: %d jobs published in %lld ms, pulled+acked (batches of 16) in %lld ms: %.0f jobs/s "
           "publish->pull->ack\n",
           total, (long long)(t1 - t0), (long long)(t2 - t1), all_s > 0 ? total / all_s : 0.0);
    imagen_queue_close(q);
}

/* `survive OP N`: the Redis-restart check the integration suite drives.
 * Publishes N jobs of OP and prints "published ID..."; then waits for a
 * line on stdin (sent once Redis has been restarted) and, through the SAME
 * handle, pulls and acks until all N came back, retrying while Redis answers
 * UNAVAILABLE (the pool drops the dead connections and reconnects). Prints
 * "drained ID..." and exits 0 only when every published job was delivered
 * exactly once and is done. */
static int
survive(const char *url, const char *op, int n)
{
    conf_url = url;
    imagen_queue *q = rd_open("rd-survive", 3);
    if (q == NULL || n <= 0 || n > 1000)
        return 2;
    char(*ids)[IMAGEN_JOB_ID_SIZE] = calloc((size_t)n, sizeof *ids);
    bool *seen = calloc((size_t)n, sizeof *seen);
    if (ids == NULL || seen == NULL)
        return 2;
    printf("published");
    for (int i = 0; i < n; i++) {
        CHECK_OK(imagen_queue_publish(q, op, "{\"survive\":true}", ids[i]));
        printf(" %s", ids[i]);
    }
    printf("\n");
    fflush(stdout);
    char line[64];
    if (fgets(line, sizeof line, stdin) == NULL)
        fprintf(stderr, "stdin closed before the restart was announced\n");

    const char *ops[] = {op};
    int got = 0, unavailable = 0;
    int64_t deadline = conf_now_ms() + 20000;
    while (got < n && conf_now_ms() < deadline) {
        imagen_lease *leases[16];
        size_t k = 0;
        imagen_error *err = imagen_queue_pull(q, ops, 1, 16, 500, leases, &k);
        if (err != NULL) {
            /* Expected right after the restart: the pooled connection died. */
            fprintf(stderr, "pull: %s\n", imagen_error_message(err));
            CHECK_INT_EQ(imagen_error_code_of(err), IMAGEN_ERR_UNAVAILABLE);
            imagen_error_free(err);
            unavailable++;
            conf_sleep_ms(100);
            continue;
        }
        for (size_t i = 0; i < k; i++) {
            int match = -1;
            for (int j = 0; j < n; j++) {
                if (strcmp(leases[i]->job->id, ids[j]) == 0)
                    match = j;
            }
            CHECK(match >= 0);
            if (match >= 0) {
                CHECK(!seen[match]);
                seen[match] = true;
                got++;
            }
            CHECK_OK(imagen_queue_ack(q, leases[i], "/out/survived", NULL));
            imagen_lease_free(leases[i]);
        }
    }
    CHECK_INT_EQ(got, n);
    printf("drained");
    for (int j = 0; j < n; j++) {
        if (seen[j])
            printf(" %s", ids[j]);
        imagen_job *job = NULL;
        CHECK_OK(imagen_queue_get(q, ids[j], &job));
        CHECK(job != NULL && job->state == IMAGEN_JOB_DONE && job->attempts == 1);
        imagen_job_free(job);
    }
    printf("\nunavailable %d\n", unavailable);
    free(ids);
    free(seen);
    imagen_queue_close(q);
    TEST_MAIN_END();
}

int
main(int argc, char **argv)
{
    const char *url = getenv("IMAGEN_TEST_REDIS_URL");
    if (url == NULL || url[0] == '\0') {
        printf("skipped: IMAGEN_TEST_REDIS_URL not set\n");
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "survive") == 0)
        return survive(url, argv[2], atoi(argv[3]));
    rd_ctx = rd_connect(url);
    if (rd_ctx == NULL) {
        fprintf(stderr, "IMAGEN_TEST_REDIS_URL=%s: cannot connect\n", url);
        return 1;
    }
    /* The suite leaves jobs behind and expects to start from nothing, so it
     * refuses a database that holds anything rather than flushing it. */
    long long keys = rd_int("DBSIZE", NULL);
    if (keys != 0) {
        fprintf(stderr, "IMAGEN_TEST_REDIS_URL=%s: the database holds %lld keys; give an empty one\n", url, keys);
        redisFree(rd_ctx);
        return 1;
    }
    queue_conformance_run(url);
    RUN(rd_urls);
    RUN(rd_vanished_worker);
    RUN(rd_streams_match_counts);
    RUN(rd_stale_entry);
    RUN(rd_reclaim_behind_long_leases);
    RUN(rd_stream_without_group);
    RUN(rd_foreign_records);
    RUN(rd_migrates_first_layout);
    RUN(rd_concurrent_pullers);
    RUN(rd_throughput);
    redisFree(rd_ctx);
    TEST_MAIN_END();
}
