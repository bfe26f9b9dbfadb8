/*
 * Several processes on one sqlite queue file, as several imagen-worker
 * processes on one machine run: four children pull and ack while the parent
 * is still publishing, and every job must end done exactly once (leases are
 * long, so no job may be delivered twice).
 */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/time.h"
#include "queue/queue.h"
#include "test.h"

#define JOBS 2000
#define CHILDREN 4

static char tmpdir[256];
static char url[512];

/* What one child does: pull up to 4 at a time and ack, writing each acked
 * id to its own file, until every job is done. Returns the exit status. */
static int
child_run(int index)
{
    char name[32], path[600];
    snprintf(name, sizeof name, "worker%d", index);
    snprintf(path, sizeof path, "%s/acked-%d.txt", tmpdir, index);
    FILE *out = fopen(path, "w");
    if (out == NULL)
        return 2;
    imagen_queue_options opt = {.consumer = name, .lease_ms = 60000};
    imagen_queue *q = NULL;
    CHECK_OK(imagen_queue_open(url, &opt, &q));
    if (q == NULL)
        return 3;
    const char *ops[] = {"multi"};
    uint64_t deadline = imagen_time_now_ns() + 60ull * 1000000000ull;
    while (imagen_time_now_ns() < deadline) {
        imagen_lease *leases[4];
        size_t n = 0;
        imagen_error *err = imagen_queue_pull(q, ops, 1, 4, 200, leases, &n);
        if (err != NULL) {
            CHECK_OK(err);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            CHECK_STR_EQ(leases[i]->job->consumer, name);
            CHECK_INT_EQ(leases[i]->job->attempts, 1);
            CHECK_OK(imagen_queue_ack(q, leases[i], "/out", NULL));
            fprintf(out, "%s\n", leases[i]->job->id);
            imagen_lease_free(leases[i]);
        }
        if (n == 0) {
            imagen_queue_counts *counts = NULL;
            size_t nc = 0;
            CHECK_OK(imagen_queue_counts_get(q, &counts, &nc));
            bool all_done = nc == 1 && counts[0].done == JOBS;
            free(counts);
            if (all_done)
                break;
        }
    }
    imagen_queue_close(q);
    fclose(out);
    return test_failures_ == 0 ? 0 : 1;
}

static int
id_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void
publish_range(int from, int to, char (*ids)[IMAGEN_JOB_ID_SIZE])
{
    imagen_queue *q = NULL;
    CHECK_OK(imagen_queue_open(url, NULL, &q));
    if (q == NULL)
        return;
    for (int i = from; i < to; i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "{\"n\":%d}", i);
        CHECK_OK(imagen_queue_publish(q, "multi", spec, ids[i]));
    }
    imagen_queue_close(q);
}

static void
test_processes_share_a_file(void)
{
    static char ids[JOBS][IMAGEN_JOB_ID_SIZE];
    /* Half before the workers start, half while they run. The parent's
     * handle is closed before fork: an SQLite connection must not be used
     * on both sides of a fork. */
    publish_range(0, JOBS / 2, ids);
    uint64_t t0 = imagen_time_now_ns();
    pid_t pids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(child_run(i));
        CHECK(pids[i] > 0);
    }
    publish_range(JOBS / 2, JOBS, ids);
    for (int i = 0; i < CHILDREN; i++) {
        int status = 0;
        if (pids[i] > 0) {
            CHECK(waitpid(pids[i], &status, 0) == pids[i]);
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
    }
    double secs = (double)(imagen_time_now_ns() - t0) / 1e9;
    fprintf(stderr, "multiproc: %d processes drained %d jobs (half published meanwhile) in %.2f s = %.0f jobs/s\n",
            CHILDREN, JOBS, secs, JOBS / secs);

    /* Every published id acked exactly once, by someone. */
    static char acked[JOBS + 16][IMAGEN_JOB_ID_SIZE];
    size_t n_acked = 0;
    for (int i = 0; i < CHILDREN; i++) {
        char path[600], line[64];
        snprintf(path, sizeof path, "%s/acked-%d.txt", tmpdir, i);
        FILE *in = fopen(path, "r");
        CHECK(in != NULL);
        if (in == NULL)
            continue;
        size_t mine = 0;
        while (fgets(line, sizeof line, in) != NULL && n_acked < JOBS + 16) {
            line[strcspn(line, "\n")] = '\0';
            CHECK_INT_EQ(strlen(line), IMAGEN_JOB_ID_SIZE - 1);
            memcpy(acked[n_acked++], line, IMAGEN_JOB_ID_SIZE); /* the NUL included */
            mine++;
        }
        fclose(in);
        fprintf(stderr, "multiproc: worker%d acked %zu\n", i, mine);
    }
    CHECK_INT_EQ(n_acked, JOBS);
    qsort(acked, n_acked, sizeof acked[0], id_cmp);
    qsort(ids, JOBS, sizeof ids[0], id_cmp);
    size_t mismatches = 0;
    for (size_t i = 0; i < n_acked && i < JOBS; i++)
        mismatches += strcmp(acked[i], ids[i]) != 0;
    CHECK_INT_EQ(mismatches, 0);

    imagen_queue *q = NULL;
    CHECK_OK(imagen_queue_open(url, NULL, &q));
    if (q == NULL)
        return;
    imagen_queue_counts *counts = NULL;
    size_t nc = 0;
    CHECK_OK(imagen_queue_counts_get(q, &counts, &nc));
    CHECK_INT_EQ(nc, 1);
    if (nc == 1) {
        CHECK_INT_EQ(counts[0].done, JOBS);
        CHECK_INT_EQ(counts[0].queued + counts[0].running + counts[0].failed + counts[0].dead, 0);
    }
    free(counts);
    imagen_queue_close(q);
}

int
main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/imagen_unit_queue_multiproc_XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(url, sizeof url, "sqlite://%s/queue.db", tmpdir);
    RUN(test_processes_share_a_file);
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
