/*
 * imagen-bench-queue: the job queue alone, no worker and no server.
 *
 *   imagen-bench-queue URL JOBS [CONSUMERS] [PULL_MAX]
 *
 * Publishes JOBS no-op jobs to one operation's queue from one thread while
 * CONSUMERS threads (default 2) pull up to PULL_MAX jobs at a time (default
 * 16) and ack each one, the way workers end a job. Every thread has its own
 * queue handle, as separate worker processes would. Prints one JSON line:
 *
 *   {"driver":..., "jobs":N, "seconds":S, "jobs_per_s":R,
 *    "publish_per_s":P, "publish_batch_per_s":B, "consumers":C, "pull_max":M}
 *
 * where seconds runs from the first publish to the last ack, so the rate is
 * the queue's end-to-end capacity for publish -> pull -> ack. The queue must
 * be empty at the start (bench/queue.sh gives a fresh file or database).
 * Then, on its own, publishing JOBS more jobs in batches of 256 as
 * `imagen submit` does (publish_batch_per_s).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"
#include "queue/queue.h"

#define OP "bench_noop"

static const char *queue_url;
static long total_jobs;
static int pull_max = 16;
static atomic_long acked;
static atomic_int failures;

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

static void *
consume(void *arg)
{
    char name[32];
    snprintf(name, sizeof name, "bench-%ld", (long)(intptr_t)arg);
    imagen_queue *q = open_queue(name);
    const char *ops[] = {OP};
    imagen_lease **leases = calloc((size_t)pull_max, sizeof *leases);
    while (atomic_load(&acked) < total_jobs) {
        size_t n = 0;
        imagen_error *err = imagen_queue_pull(q, ops, 1, (size_t)pull_max, 50, leases, &n);
        if (err != NULL)
            die("pull", err);
        for (size_t i = 0; i < n; i++) {
            err = imagen_queue_ack(q, leases[i], "/dev/null", NULL);
            if (err != NULL) {
                imagen_error_free(err);
                atomic_fetch_add(&failures, 1);
            } else {
                atomic_fetch_add(&acked, 1);
            }
            imagen_lease_free(leases[i]);
        }
    }
    free(leases);
    imagen_queue_close(q);
    return NULL;
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
    uint64_t start = imagen_time_now_ns();
    pthread_t *threads = calloc((size_t)consumers, sizeof *threads);
    for (int i = 0; i < consumers; i++)
        pthread_create(&threads[i], NULL, consume, (void *)(intptr_t)i);
    /* A job as `imagen submit` writes it, so the row or entry has the size
     * real jobs have. */
    const char *spec = "{\"input\":\"/srv/photos/IMG_0001.jpg\",\"output\":\"/srv/out\",\"params\":{\"scale\":2}}";
    for (long i = 0; i < total_jobs; i++) {
        char id[IMAGEN_JOB_ID_SIZE];
        imagen_error *err = imagen_queue_publish(q, OP, spec, id);
        if (err != NULL)
            die("publish", err);
    }
    uint64_t published = imagen_time_now_ns();
    for (int i = 0; i < consumers; i++)
        pthread_join(threads[i], NULL);
    uint64_t end = imagen_time_now_ns();
    const char *driver = imagen_queue_driver_name(q);

    /* Publishing alone as `imagen submit` does it: batches of 256 jobs, one
     * transaction or script call each (to another op; they stay queued). */
    enum { BATCH = 256 };
    const char *batch_specs[BATCH];
    char(*batch_ids)[IMAGEN_JOB_ID_SIZE] = malloc(BATCH * IMAGEN_JOB_ID_SIZE);
    for (int i = 0; i < BATCH; i++)
        batch_specs[i] = spec;
    uint64_t batch_start = imagen_time_now_ns();
    for (long done_n = 0; done_n < total_jobs; done_n += BATCH) {
        size_t n = (size_t)(total_jobs - done_n < BATCH ? total_jobs - done_n : BATCH);
        imagen_error *err = imagen_queue_publish_batch(q, OP "_batch", batch_specs, n, batch_ids);
        if (err != NULL)
            die("publish_batch", err);
    }
    double batch_secs = (double)(imagen_time_now_ns() - batch_start) / 1e9;
    free(batch_ids);

    imagen_queue_counts *counts = NULL;
    size_t n = 0;
    imagen_error *err = imagen_queue_counts_get(q, &counts, &n);
    if (err != NULL)
        die("counts", err);
    uint64_t done = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(counts[i].op, OP) == 0)
            done = counts[i].done;
    free(counts);
    imagen_queue_close(q);
    free(threads);

    double secs = (double)(end - start) / 1e9;
    printf("{\"driver\":\"%s\",\"jobs\":%ld,\"done\":%llu,\"ack_failures\":%d,\"seconds\":%.3f,"
           "\"jobs_per_s\":%.0f,\"publish_per_s\":%.0f,\"publish_batch_per_s\":%.0f,\"consumers\":%d,"
           "\"pull_max\":%d}\n",
           driver, total_jobs, (unsigned long long)done, atomic_load(&failures), secs, (double)total_jobs / secs,
           (double)total_jobs / ((double)(published - start) / 1e9), (double)total_jobs / batch_secs, consumers,
           pull_max);
    return done == (uint64_t)total_jobs && atomic_load(&failures) == 0 ? 0 : 1;
}
