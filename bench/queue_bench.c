/*
 * imagen-bench-queue: the job queue alone, no worker and no server.
 *
 *   imagen-bench-queue URL JOBS [CONSUMERS] [PULL_MAX]
 *
 * Three phases, each on an operation of its own so that each starts on an
 * empty queue; every thread has its own queue handle, as separate worker
 * processes would. The queue must be empty at the start (bench/queue.sh
 * gives a fresh file or database).
 *
 *   per call  (op bench_per_call): one thread publishes JOBS no-op jobs one
 *             per imagen_queue_publish() while CONSUMERS threads (default 2)
 *             pull up to PULL_MAX jobs at a time (default 16) and end each
 *             with its own imagen_queue_ack(): one durable commit or round
 *             trip per publish and per ack.
 *   batched   (op bench_batched): the same JOBS jobs, published with
 *             imagen_queue_publish_batch() in batches of 256 as `imagen
 *             submit` does, while the consumers pull up to PULL_MAX and end
 *             all they pulled with one imagen_queue_ack_batch().
 *   publish   (op bench_publish_only): JOBS more jobs published in batches
 *             of 256 with nobody consuming; they stay queued.
 *
 * It runs the per-call phase first, so that the per-call figure is measured
 * on an empty file exactly as before the batched calls existed; the batched
 * phase then runs beside JOBS done jobs of another op. Prints one JSON line:
 *
 *   {"driver":..., "jobs":N, "consumers":C, "pull_max":M, "publish_batch":256,
 *    "seconds":S, "jobs_per_s":R, "done":D, "ack_failures":F,
 *    "seconds_per_call":S1, "jobs_per_s_per_call":R1, "done_per_call":D1,
 *    "ack_failures_per_call":F1, "publish_per_s":P, "publish_batch_per_s":B}
 *
 * jobs_per_s (the headline) and seconds are the batched phase, from the
 * first publish to the last ack, so the rate is the queue's end-to-end
 * capacity for publish -> pull -> ack when both ends batch; the *_per_call
 * fields are the same for the per-call phase. done is the count of the
 * phase's op in state done at its end, ack_failures the acks that returned
 * an error (lost leases; none are expected with 60 s leases).
 * publish_per_s is the publisher's own rate during the per-call phase (from
 * its first publish to its last, with the consumers running), and
 * publish_batch_per_s the rate of the publish phase alone.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"
#include "queue/queue.h"

/* Jobs per publish_batch call, as `imagen submit` sends them. */
#define PUBLISH_BATCH 256

/* A job as `imagen submit` writes it, so the row or entry has the size real
 * jobs have. */
static const char job_spec[] =
    "{\"input\":\"/srv/photos/IMG_0001.jpg\",\"output\":\"/srv/out\",\"params\":{\"scale\":2}}";

static const char *queue_url;
static long total_jobs;
static int pull_max = 16;

/* One end-to-end phase: its op, how its ends talk to the queue, and what its
 * consumers counted. */
typedef struct phase {
    const char *op;
    bool batched; /* publish_batch + ack_batch, else publish + ack */
    atomic_long acked;
    atomic_int failures;
} phase;

typedef struct consumer_arg {
    phase *phase;
    int index;
} consumer_arg;

/* What one end-to-end phase measured. */
typedef struct phase_result {
    double seconds;         /* first publish to last ack */
    double publish_seconds; /* first publish to last publish */
    uint64_t done;
    int failures;
} phase_result;

static void
die(const char *what, imagen_error *err)
{
    fprintf(stderr, "imagen-bench-queue: %s: %s\n", what, imagen_error_message(err));
    exit(1);
}

static imagen_queue *
open_queue(const char *consumer)
{
    imagen_queue_options opt = {.consumer = consumer, .lease_ms = 60000};
    imagen_queue *q;
    imagen_error *err = imagen_queue_open(queue_url, &opt, &q);
    if (err != NULL)
        die("open", err);
    return q;
}

/* Ends the n pulled deliveries the phase's way; counts acks and failures. */
static void
ack_pulled(imagen_queue *q, phase *p, imagen_lease **leases, size_t n, const char *const *outputs, imagen_error **errs)
{
    if (p->batched) {
        imagen_error *err = imagen_queue_ack_batch(q, leases, n, outputs, NULL, errs);
        if (err != NULL)
            die("ack_batch", err);
    } else {
        for (size_t i = 0; i < n; i++)
            errs[i] = imagen_queue_ack(q, leases[i], outputs[i], NULL);
    }
    for (size_t i = 0; i < n; i++) {
        if (errs[i] != NULL) {
            imagen_error_free(errs[i]);
            atomic_fetch_add(&p->failures, 1);
        } else {
            atomic_fetch_add(&p->acked, 1);
        }
        imagen_lease_free(leases[i]);
    }
}

static void *
consume(void *arg)
{
    consumer_arg *c = arg;
    phase *p = c->phase;
    char name[32];
    snprintf(name, sizeof name, "bench-%d", c->index);
    imagen_queue *q = open_queue(name);
    const char *ops[] = {p->op};
    imagen_lease **leases = calloc((size_t)pull_max, sizeof *leases);
    imagen_error **errs = calloc((size_t)pull_max, sizeof *errs);
    const char **outputs = calloc((size_t)pull_max, sizeof *outputs);
    if (leases == NULL || errs == NULL || outputs == NULL) {
        fprintf(stderr, "imagen-bench-queue: out of memory\n");
        exit(1);
    }
    for (int i = 0; i < pull_max; i++)
        outputs[i] = "/dev/null";
    while (atomic_load(&p->acked) < total_jobs) {
        size_t n = 0;
        imagen_error *err = imagen_queue_pull(q, ops, 1, (size_t)pull_max, 50, leases, &n);
        if (err != NULL)
            die("pull", err);
        if (n > 0)
            ack_pulled(q, p, leases, n, outputs, errs);
    }
    free(outputs);
    free(errs);
    free(leases);
    imagen_queue_close(q);
    return NULL;
}

/* Publishes total_jobs jobs to op, in batches of PUBLISH_BATCH when batched
 * and one per call otherwise. */
static void
publish_all(imagen_queue *q, const char *op, bool batched)
{
    if (!batched) {
        for (long i = 0; i < total_jobs; i++) {
            char id[IMAGEN_JOB_ID_SIZE];
            imagen_error *err = imagen_queue_publish(q, op, job_spec, id);
            if (err != NULL)
                die("publish", err);
        }
        return;
    }
    const char *specs[PUBLISH_BATCH];
    for (int i = 0; i < PUBLISH_BATCH; i++)
        specs[i] = job_spec;
    char(*ids)[IMAGEN_JOB_ID_SIZE] = malloc(PUBLISH_BATCH * IMAGEN_JOB_ID_SIZE);
    if (ids == NULL) {
        fprintf(stderr, "imagen-bench-queue: out of memory\n");
        exit(1);
    }
    for (long published = 0; published < total_jobs; published += PUBLISH_BATCH) {
        size_t n = (size_t)(total_jobs - published < PUBLISH_BATCH ? total_jobs - published : PUBLISH_BATCH);
        imagen_error *err = imagen_queue_publish_batch(q, op, specs, n, ids);
        if (err != NULL)
            die("publish_batch", err);
    }
    free(ids);
}

/* How many jobs of op are done. */
static uint64_t
done_count(imagen_queue *q, const char *op)
{
    imagen_queue_counts *counts = NULL;
    size_t n = 0;
    imagen_error *err = imagen_queue_counts_get(q, &counts, &n);
    if (err != NULL)
        die("counts", err);
    uint64_t done = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(counts[i].op, op) == 0)
            done = counts[i].done;
    free(counts);
    return done;
}

/* One end-to-end phase: the publisher on q (this thread) and `consumers`
 * consumer threads, timed from the first publish to the last ack. */
static phase_result
run_phase(imagen_queue *q, phase *p, int consumers)
{
    pthread_t *threads = calloc((size_t)consumers, sizeof *threads);
    consumer_arg *args = calloc((size_t)consumers, sizeof *args);
    if (threads == NULL || args == NULL) {
        fprintf(stderr, "imagen-bench-queue: out of memory\n");
        exit(1);
    }
    uint64_t start = imagen_time_now_ns();
    for (int i = 0; i < consumers; i++) {
        args[i] = (consumer_arg){.phase = p, .index = i};
        pthread_create(&threads[i], NULL, consume, &args[i]);
    }
    publish_all(q, p->op, p->batched);
    uint64_t published = imagen_time_now_ns();
    for (int i = 0; i < consumers; i++)
        pthread_join(threads[i], NULL);
    uint64_t end = imagen_time_now_ns();
    free(args);
    free(threads);
    return (phase_result){.seconds = (double)(end - start) / 1e9,
                          .publish_seconds = (double)(published - start) / 1e9,
                          .done = done_count(q, p->op),
                          .failures = atomic_load(&p->failures)};
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: imagen-bench-queue URL JOBS [CONSUMERS] [PULL_MAX]\n");
        return 2;
    }
    queue_url = argv[1];
    total_jobs = atol(argv[2]);
    int consumers = argc > 3 ? atoi(argv[3]) : 2;
    if (argc > 4)
        pull_max = atoi(argv[4]);
    if (total_jobs <= 0 || consumers <= 0 || pull_max <= 0) {
        fprintf(stderr, "imagen-bench-queue: JOBS, CONSUMERS and PULL_MAX must be positive\n");
        return 2;
    }

    imagen_queue *q = open_queue("bench-producer");
    const char *driver = imagen_queue_driver_name(q);

    static phase per_call = {.op = "bench_per_call", .batched = false};
    static phase batched = {.op = "bench_batched", .batched = true};
    phase_result pc = run_phase(q, &per_call, consumers);
    phase_result b = run_phase(q, &batched, consumers);

    /* Publishing alone, nobody consuming. */
    uint64_t publish_start = imagen_time_now_ns();
    publish_all(q, "bench_publish_only", true);
    double publish_secs = (double)(imagen_time_now_ns() - publish_start) / 1e9;
    imagen_queue_close(q);

    printf("{\"driver\":\"%s\",\"jobs\":%ld,\"consumers\":%d,\"pull_max\":%d,\"publish_batch\":%d,"
           "\"seconds\":%.3f,\"jobs_per_s\":%.0f,\"done\":%llu,\"ack_failures\":%d,"
           "\"seconds_per_call\":%.3f,\"jobs_per_s_per_call\":%.0f,\"done_per_call\":%llu,"
           "\"ack_failures_per_call\":%d,\"publish_per_s\":%.0f,\"publish_batch_per_s\":%.0f}\n",
           driver, total_jobs, consumers, pull_max, PUBLISH_BATCH, b.seconds, (double)total_jobs / b.seconds,
           (unsigned long long)b.done, b.failures, pc.seconds, (double)total_jobs / pc.seconds,
           (unsigned long long)pc.done, pc.failures, (double)total_jobs / pc.publish_seconds,
           (double)total_jobs / publish_secs);
    bool complete = b.done == (uint64_t)total_jobs && pc.done == (uint64_t)total_jobs;
    return complete && b.failures == 0 && pc.failures == 0 ? 0 : 1;
}
