/*
 * The sqlite queue driver: the shared conformance suite on a fresh file,
 * then what is particular to sqlite (URL forms, directory creation,
 * persistence across handles, schema versions, several threads on one
 * handle) and a throughput figure for publish → pull → ack.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "queue_conformance.h"
#include "test.h"

static char tmpdir[256];

/* A URL for a fresh file under the test's directory. */
static void
fresh_url(char *url, size_t size, const char *name)
{
    snprintf(url, size, "sqlite://%s/%s/queue.db", tmpdir, name);
}

static void
test_conformance(void)
{
    char url[512];
    fresh_url(url, sizeof url, "conformance/nested");
    CHECK_INT_EQ(queue_conformance_run(url), 0);
}

static void
test_bad_urls(void)
{
    imagen_queue *q = NULL;
    CHECK_ERR(imagen_queue_open("sqlite://relative/queue.db", NULL, &q), IMAGEN_ERR_INVALID_ARG,
              "sqlite://relative/queue.db");
    CHECK_ERR(imagen_queue_open("sqlite://", NULL, &q), IMAGEN_ERR_INVALID_ARG, "absolute");
    CHECK_ERR(imagen_queue_open("sqlite:///", NULL, &q), IMAGEN_ERR_INVALID_ARG, "absolute");
    CHECK_ERR(imagen_queue_open("sqlite:///proc/imagen-no-such/queue.db", NULL, &q), IMAGEN_ERR_UNAVAILABLE,
              "/proc/imagen-no-such");
    CHECK(q == NULL);
}

static void
test_defaults_and_driver_name(void)
{
    char url[512];
    fresh_url(url, sizeof url, "defaults");
    imagen_queue *q = NULL;
    CHECK_OK(imagen_queue_open(url, NULL, &q));
    if (q == NULL)
        return;
    CHECK_STR_EQ(imagen_queue_driver_name(q), "sqlite");
    char id[IMAGEN_JOB_ID_SIZE];
    CHECK_OK(imagen_queue_publish(q, "op", "{}", id));
    const char *ops[] = {"op"};
    imagen_lease *lease = NULL;
    size_t n = 0;
    int64_t before = (int64_t)imagen_time_wall_ms();
    CHECK_OK(imagen_queue_pull(q, ops, 1, 1, 0, &lease, &n));
    CHECK_INT_EQ(n, 1);
    if (n == 1) {
        /* The default lease is a minute; the default consumer host-pid. */
        CHECK(lease->expires_ms >= before + 59000);
        char suffix[32];
        snprintf(suffix, sizeof suffix, "-%ld", (long)getpid());
        CHECK(lease->job->consumer != NULL && strstr(lease->job->consumer, suffix) != NULL);
        CHECK_OK(imagen_queue_ack(q, lease, NULL, NULL));
        imagen_lease_free(lease);
    }
    imagen_queue_close(q);
}

/* Everything is in the file: another handle (another process, in real use)
 * sees the jobs and can end a delivery made through the first handle. */
static void
test_persistence_across_handles(void)
{
    char url[512];
    fresh_url(url, sizeof url, "persist");
    imagen_queue_options opt = {.consumer = "w1", .lease_ms = 5000};
    imagen_queue *q = NULL;
    CHECK_OK(imagen_queue_open(url, &opt, &q));
    if (q == NULL)
        return;
    char id[IMAGEN_JOB_ID_SIZE], id2[IMAGEN_JOB_ID_SIZE];
    CHECK_OK(imagen_queue_publish(q, "op", "{\"x\":\"\\u00e9t\\u00e9\"}", id));
    usleep(2000); /* a later millisecond: the pull below must take `id` */
    CHECK_OK(imagen_queue_publish(q, "op", "{}", id2));
    const char *ops[] = {"op"};
    imagen_lease *lease = NULL;
    size_t n = 0;
    CHECK_OK(imagen_queue_pull(q, ops, 1, 1, 0, &lease, &n));
    CHECK(n == 1 && strcmp(lease->job->id, id) == 0);
    imagen_queue_close(q);

    q = NULL;
    CHECK_OK(imagen_queue_open(url, &opt, &q));
    if (q == NULL)
        return;
    imagen_job *job = NULL;
    CHECK_OK(imagen_queue_get(q, id, &job));
    CHECK(job != NULL && job->state == IMAGEN_JOB_RUNNING);
    if (job != NULL)
        CHECK_STR_EQ(job->spec, "{\"x\":\"\\u00e9t\\u00e9\"}");
    imagen_job_free(job);
    if (n == 1) {
        CHECK_OK(imagen_queue_ack(q, lease, "/out/1", NULL));
        imagen_lease_free(lease);
    }
    CHECK_OK(imagen_queue_get(q, id2, &job));
    CHECK(job != NULL && job->state == IMAGEN_JOB_QUEUED);
    imagen_job_free(job);
    imagen_queue_close(q);
}

static void
test_newer_schema_refused(void)
{
    char url[512];
    fresh_url(url, sizeof url, "newer");
    imagen_queue *q = NULL;
    CHECK_OK(imagen_queue_open(url, NULL, &q));
    imagen_queue_close(q);
    sqlite3 *db = NULL;
    CHECK_INT_EQ(sqlite3_open(url + strlen("sqlite://"), &db), SQLITE_OK);
    CHECK_INT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    q = NULL;
    CHECK_ERR(imagen_queue_open(url, NULL, &q), IMAGEN_ERR_UNSUPPORTED, "schema version 99");
    CHECK(q == NULL);
}

/* A file that is not a database is reported, not crashed on. */
static void
test_garbage_file(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/garbage.db", tmpdir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    for (int i = 0; i < 200; i++)
        fputs("this is not an sqlite database file\n", f);
    fclose(f);
    char url[600];
    snprintf(url, sizeof url, "sqlite://%s", path);
    imagen_queue *q = NULL;
    CHECK_ERR(imagen_queue_open(url, NULL, &q), IMAGEN_ERR_INTERNAL, path);
    CHECK(q == NULL);
}

#define THREAD_JOBS 400
#define THREADS 4

typedef struct thread_ctx {
    imagen_queue *q;
    atomic_int *acked;
    int mine;
} thread_ctx;

static void *
pull_ack_loop(void *arg)
{
    thread_ctx *ctx = arg;
    const char *ops[] = {"threads"};
    for (;;) {
        imagen_lease *leases[8];
        size_t n = 0;
        imagen_error *err = imagen_queue_pull(ctx->q, ops, 1, 8, 50, leases, &n);
        if (err != NULL) {
            CHECK_OK(err);
            break;
        }
        if (n == 0 && atomic_load(ctx->acked) >= THREAD_JOBS)
            break;
        for (size_t i = 0; i < n; i++) {
            CHECK_OK(imagen_queue_ack(ctx->q, leases[i], "/out", NULL));
            imagen_lease_free(leases[i]);
            atomic_fetch_add(ctx->acked, 1);
            ctx->mine++;
        }
    }
    return NULL;
}

/* One handle shared by several pulling threads while another publishes:
 * every job is delivered once (leases are long, so nothing expires). */
static void
test_threads_share_a_handle(void)
{
    char url[512];
    fresh_url(url, sizeof url, "threads");
    imagen_queue_options opt = {.consumer = "t", .lease_ms = 60000};
    imagen_queue *q = NULL;
    CHECK_OK(imagen_queue_open(url, &opt, &q));
    if (q == NULL)
        return;
    atomic_int acked = 0;
    thread_ctx ctx[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ctx[i] = (thread_ctx){.q = q, .acked = &acked};
        pthread_create(&threads[i], NULL, pull_ack_loop, &ctx[i]);
    }
    for (int i = 0; i < THREAD_JOBS; i++) {
        char id[IMAGEN_JOB_ID_SIZE];
        CHECK_OK(imagen_queue_publish(q, "threads", "{}", id));
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    CHECK_INT_EQ(atomic_load(&acked), THREAD_JOBS);
    imagen_queue_counts *counts = NULL;
    size_t n = 0;
    CHECK_OK(imagen_queue_counts_get(q, &counts, &n));
    CHECK_INT_EQ(n, 1);
    if (n == 1) {
        CHECK_INT_EQ(counts[0].done, THREAD_JOBS);
        CHECK_INT_EQ(counts[0].queued + counts[0].running + counts[0].failed + counts[0].dead, 0);
    }
    free(counts);
    imagen_queue_close(q);
}

#define BENCH_JOBS 2000

/* Throughput of the whole life of a job, one at a time (the worst case: one
 * durable commit per step), then with batched pulls. Printed, not asserted:
 * it depends on the disk's fsync speed. */
static void
test_throughput(void)
{
    char url[512];
    fresh_url(url, sizeof url, "bench");
    imagen_queue_options opt = {.consumer = "bench"};
    imagen_queue *q = NULL;
    CHECK_OK(imagen_queue_open(url, &opt, &q));
    if (q == NULL)
        return;
    const char *ops[] = {"bench"};
    const char *spec = "{\"input\":\"/data/in/000001.png\",\"output\":\"/data/out\",\"params\":{\"scale\":4}}";
    int done = 0;
    uint64_t t0 = imagen_time_now_ns();
    for (int i = 0; i < BENCH_JOBS; i++) {
        char id[IMAGEN_JOB_ID_SIZE];
        CHECK_OK(imagen_queue_publish(q, "bench", spec, id));
        imagen_lease *lease = NULL;
        size_t n = 0;
        CHECK_OK(imagen_queue_pull(q, ops, 1, 1, 0, &lease, &n));
        if (n == 1) {
            CHECK_OK(imagen_queue_ack(q, lease, "/data/out/x.png", "{\"infer\":1}"));
            imagen_lease_free(lease);
            done++;
        }
    }
    double secs = (double)(imagen_time_now_ns() - t0) / 1e9;
    CHECK_INT_EQ(done, BENCH_JOBS);
    fprintf(stderr, "throughput: %d jobs publish->pull->ack one at a time in %.2f s = %.0f jobs/s\n", BENCH_JOBS, secs,
            BENCH_JOBS / secs);

    /* A backlog drained in batches of 16, as a prefetching worker does. */
    t0 = imagen_time_now_ns();
    for (int i = 0; i < BENCH_JOBS; i++) {
        char id[IMAGEN_JOB_ID_SIZE];
        CHECK_OK(imagen_queue_publish(q, "bench", spec, id));
    }
    done = 0;
    for (;;) {
        imagen_lease *leases[16];
        size_t n = 0;
        CHECK_OK(imagen_queue_pull(q, ops, 1, 16, 0, leases, &n));
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            CHECK_OK(imagen_queue_ack(q, leases[i], "/data/out/x.png", NULL));
            imagen_lease_free(leases[i]);
            done++;
        }
    }
    secs = (double)(imagen_time_now_ns() - t0) / 1e9;
    CHECK_INT_EQ(done, BENCH_JOBS);
    fprintf(stderr, "throughput: %d jobs published, then pulled 16 at a time and acked in %.2f s = %.0f jobs/s\n",
            BENCH_JOBS, secs, BENCH_JOBS / secs);
    imagen_queue_close(q);
}

int
main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/imagen_unit_queue_sqlite_XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_conformance);
    RUN(test_bad_urls);
    RUN(test_defaults_and_driver_name);
    RUN(test_persistence_across_handles);
    RUN(test_newer_schema_refused);
    RUN(test_garbage_file);
    RUN(test_threads_share_a_handle);
    RUN(test_throughput);
    if (test_failures_ == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    } else {
        fprintf(stderr, "queue files kept in %s\n", tmpdir);
    }
    TEST_MAIN_END();
}
