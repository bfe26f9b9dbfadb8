/*
 * The job loop of imagen-worker (worker.h). Threads and who does what:
 *
 *   job threads (--concurrency)  pull, run and end jobs, one at a time each
 *                                (plus up to --prefetch leased ahead)
 *   the calling thread           signals (signalfd), lease renewal every
 *                                third of the lease, joins the job threads
 *   the HTTP thread              /healthz, /metrics (worker_http.c)
 *
 * Every lease a thread holds sits in that thread's `held` array, guarded by
 * the thread's mutex. The mutex is also held around every queue call on
 * those leases (extend from the renewer; ack, fail, retry, release from
 * the job thread), so a lease is never used by two calls at once and a
 * lease found lost by the renewer is never acked afterwards.
 *
 * Reliability rules (issue: thin workers):
 * - ack only after the output is durable; an ack the queue cannot take
 *   (UNAVAILABLE) is tried again until it lands or the lease is lost
 * - a job the pipeline calls invalid or unsupported fails at once
 * - an inference server that cannot be reached is an outage, not a job
 *   error: the job is held (lease renewed, no attempt used) and run again
 *   with backoff, and no thread pulls new jobs until the server answers
 * - any other error is transient: the queue retries the job after
 *   min(1 s × 2^(attempts−1), 60 s) and dead-letters it after max_attempts
 * - SIGTERM/SIGINT: stop pulling, finish the jobs in hand, release jobs
 *   pulled ahead and never started, exit; further signals are ignored
 */
#include "worker/worker.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "common/signals.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/sync.h"
#include "common/time.h"
#include "imagen/client.h"
#include "queue/queue.h"
#include "worker/job_spec.h"
#include "worker/pipeline.h"
#include "worker/storage.h"
#include "worker/worker_http.h"

#define COMPONENT "worker"

#define MAX_OPS (sizeof(((imagen_worker_options *)0)->ops) / sizeof(((imagen_worker_options *)0)->ops[0]))

#define PULL_WAIT_MS 1000               /* a pull waits at most this long, so a stop is seen within it */
#define BACKOFF_FIRST_MS 100            /* server or queue outage: first pause ... */
#define BACKOFF_MAX_MS 5000             /* ... doubling up to this */
#define RETRY_DELAY_FIRST_MS 1000       /* transient job error: queue delay for the first attempt ... */
#define RETRY_DELAY_MAX_MS 60000        /* ... doubling per attempt up to this */
#define COUNTS_REFRESH_NS 1000000000ull /* queue counts are read at most once a second on scrape */

/* ---- metrics ------------------------------------------------------------------ */

enum {
    STAGE_FETCH,
    STAGE_DECODE,
    STAGE_PRE,
    STAGE_INFER,
    STAGE_POST,
    STAGE_ENCODE,
    STAGE_WRITE,
    STAGE_TOTAL,
    STAGE_COUNT
};
static const char *const stage_names[STAGE_COUNT] = {"fetch", "decode", "pre",   "infer",
                                                     "post",  "encode", "write", "total"};

enum { RESULT_DONE, RESULT_FAILED, RESULT_RETRIED, RESULT_DEAD, RESULT_COUNT };
static const char *const result_names[RESULT_COUNT] = {"done", "failed", "retried", "dead"};

typedef struct op_metrics {
    atomic_uint_fast64_t jobs[RESULT_COUNT];
    atomic_int in_flight;
    double stage_sum_s[STAGE_COUNT]; /* under worker.metrics_mu */
    uint64_t stage_count[STAGE_COUNT];
} op_metrics;

/* ---- state ---------------------------------------------------------------------- */

typedef struct held_lease {
    imagen_lease *lease;
    bool lost; /* extend said NOT_FOUND: someone else has the job now */
} held_lease;

struct worker;

typedef struct job_thread {
    struct worker *w;
    pthread_t tid;
    bool started;
    pthread_mutex_t mu; /* held[], n_held, and queue calls on those leases */
    held_lease *held;   /* [0] is the job in hand; the rest were pulled ahead */
    size_t n_held, cap_held;
    imagen_pipeline *pipeline;
    bool worked; /* ran a job since the queue was last found empty */
} job_thread;

typedef struct worker {
    const imagen_worker_options *opts;
    const char *op_names[MAX_OPS];
    imagen_queue *queue;
    imagen_client *client;
    imagen_worker_http *http;
    job_thread *threads;
    size_t n_threads;
    int done_fd; /* eventfd: each job thread adds 1 when it exits */

    atomic_bool stopping;
    pthread_mutex_t sleep_mu; /* interruptible sleeps: a stop wakes them */
    pthread_cond_t sleep_cv;

    atomic_int server_holders;   /* threads holding a job while the server is unreachable */
    atomic_int server_available; /* 1/0: the last inference call reached the server */
    atomic_bool queue_down;      /* logged once per queue outage */
    atomic_flag ready_logged;

    op_metrics metrics[MAX_OPS]; /* indexed like opts->ops */
    pthread_mutex_t metrics_mu;
    double start_time_s;

    pthread_mutex_t counts_mu;
    imagen_queue_counts *counts;
    size_t n_counts;
    uint64_t counts_at_ns; /* 0 = never read */
} worker;

/* ---- small helpers ---------------------------------------------------------------- */

static double
ms_since(uint64_t start_ns)
{
    return (double)(imagen_time_now_ns() - start_ns) / 1e6;
}

/* Sleeps `ms` unless a stop is requested meanwhile. Returns true when stopping. */
static bool
sleep_unless_stopping(worker *w, int64_t ms)
{
    uint64_t deadline = imagen_time_now_ns() + (uint64_t)ms * 1000000ull;
    pthread_mutex_lock(&w->sleep_mu);
    while (!atomic_load(&w->stopping) && imagen_time_now_ns() < deadline)
        imagen_cond_wait_until(&w->sleep_cv, &w->sleep_mu, deadline);
    pthread_mutex_unlock(&w->sleep_mu);
    return atomic_load(&w->stopping);
}

/* A sleep a stop does not cut short: used while a result waits to be acked. */
static void
sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int64_t
next_backoff(int64_t ms)
{
    return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
}

static int
op_index(const worker *w, const char *op)
{
    for (size_t i = 0; i < w->opts->n_ops; i++)
        if (strcmp(w->opts->ops[i]->name, op) == 0)
            return (int)i;
    return -1;
}

static bool
is_permanent(const imagen_error *err)
{
    imagen_error_code code = imagen_error_code_of(err);
    return code == IMAGEN_ERR_INVALID_ARG || code == IMAGEN_ERR_UNSUPPORTED || code == IMAGEN_ERR_NOT_FOUND;
}

/* ---- ending a delivery ------------------------------------------------------------- */

typedef enum { END_ACK, END_FAIL, END_RETRY, END_RELEASE } end_kind;

static const char *
end_kind_name(end_kind kind)
{
    return kind == END_ACK ? "ack" : kind == END_FAIL ? "fail" : kind == END_RETRY ? "retry" : "release";
}

/* Ends the delivery of t->held[slot] with one queue call, repeated while the
 * queue is unreachable: a result must never be dropped because redis was
 * restarting. Stops trying when the lease is lost (NOT_FOUND, returned) or,
 * for a release, once the lease has expired anyway (the queue hands the job
 * out again by itself then). */
static imagen_error *
end_delivery(job_thread *t, size_t slot, end_kind kind, const char *text, const char *timings, int64_t delay_ms,
             bool *dead)
{
    worker *w = t->w;
    int64_t backoff = BACKOFF_FIRST_MS;
    bool logged = false;
    for (;;) {
        pthread_mutex_lock(&t->mu);
        held_lease *h = &t->held[slot];
        imagen_error *err = NULL;
        if (h->lost) {
            err = imagen_error_new(IMAGEN_ERR_NOT_FOUND, "the lease of job %s was lost", h->lease->job->id);
        } else {
            switch (kind) {
            case END_ACK:
                err = imagen_queue_ack(w->queue, h->lease, text, timings);
                break;
            case END_FAIL:
                err = imagen_queue_fail(w->queue, h->lease, text, timings);
                break;
            case END_RETRY:
                err = imagen_queue_retry(w->queue, h->lease, text, delay_ms, dead);
                break;
            case END_RELEASE:
                err = imagen_queue_release(w->queue, h->lease);
                break;
            }
        }
        int64_t expires_ms = h->lease->expires_ms;
        const char *id = h->lease->job->id;
        pthread_mutex_unlock(&t->mu);
        if (err == NULL || imagen_error_code_of(err) != IMAGEN_ERR_UNAVAILABLE)
            return err;
        if (kind == END_RELEASE && (int64_t)imagen_time_wall_ms() > expires_ms)
            return err;
        if (!logged)
            IMAGEN_LOG_WARN_(COMPONENT, "%s of job %s: queue unavailable, trying again: %s", end_kind_name(kind), id,
                             imagen_error_message(err));
        logged = true;
        imagen_error_free(err);
        sleep_ms(backoff);
        backoff = next_backoff(backoff);
    }
}

/* Removes t->held[slot] (its delivery has ended) and frees the lease. */
static void
drop_held(job_thread *t, size_t slot)
{
    pthread_mutex_lock(&t->mu);
    imagen_lease_free(t->held[slot].lease);
    memmove(&t->held[slot], &t->held[slot + 1], (t->n_held - slot - 1) * sizeof(t->held[0]));
    t->n_held--;
    pthread_mutex_unlock(&t->mu);
}

static bool
held_lost(job_thread *t, size_t slot)
{
    pthread_mutex_lock(&t->mu);
    bool lost = t->held[slot].lost;
    pthread_mutex_unlock(&t->mu);
    return lost;
}

/* ---- one job -------------------------------------------------------------------------- */

typedef enum { OUT_DONE, OUT_FAILED, OUT_RETRIED, OUT_DEAD, OUT_RELEASED, OUT_LOST } job_outcome;

static const char *const outcome_names[] = {"done", "failed", "retried", "dead", "released", "lost"};

static void
format_timings(char *buf, size_t size, const imagen_stage_times *st, double total_ms)
{
    snprintf(buf, size,
             "{\"fetch_ms\":%.3f,\"decode_ms\":%.3f,\"pre_ms\":%.3f,\"infer_ms\":%.3f,\"post_ms\":%.3f,"
             "\"encode_ms\":%.3f,\"write_ms\":%.3f,\"total_ms\":%.3f}",
             st->fetch_ms, st->decode_ms, st->pre_ms, st->infer_ms, st->post_ms, st->encode_ms, st->write_ms, total_ms);
}

/* Fails (permanent) or retries (transient) the job for `err`; consumes err. */
static job_outcome
end_with_error(job_thread *t, imagen_error *err, bool permanent, const char *timings, char **message_out)
{
    const imagen_job *job = t->held[0].lease->job;
    int attempts = job->attempts > 0 ? job->attempts : 1;
    *message_out = strdup(imagen_error_message(err));
    imagen_error *end_err;
    job_outcome outcome;
    if (permanent) {
        end_err = end_delivery(t, 0, END_FAIL, imagen_error_message(err), timings, 0, NULL);
        outcome = OUT_FAILED;
    } else {
        int64_t delay = RETRY_DELAY_FIRST_MS;
        for (int i = 1; i < attempts && delay < RETRY_DELAY_MAX_MS; i++)
            delay *= 2;
        if (delay > RETRY_DELAY_MAX_MS)
            delay = RETRY_DELAY_MAX_MS;
        bool dead = false;
        end_err = end_delivery(t, 0, END_RETRY, imagen_error_message(err), timings, delay, &dead);
        outcome = dead ? OUT_DEAD : OUT_RETRIED;
    }
    imagen_error_free(err);
    if (end_err != NULL) {
        IMAGEN_LOG_WARN_(COMPONENT, "job %s: could not record the failure: %s", job->id, imagen_error_message(end_err));
        imagen_error_free(end_err);
        return OUT_LOST;
    }
    return outcome;
}

/* Runs the pipeline, holding the job through server outages: returns the
 * pipeline's result, or sets *stop_outcome (RELEASED on a stop, LOST when
 * the lease went to someone else) and returns NULL. */
static imagen_error *
run_pipeline(job_thread *t, const imagen_job_spec *spec, const imagen_storage_blob *input, imagen_job_result *result,
             imagen_stage_times *times, job_outcome *stop_outcome)
{
    worker *w = t->w;
    const char *id = t->held[0].lease->job->id;
    int64_t backoff = BACKOFF_FIRST_MS;
    bool holding = false;
    imagen_error *err;
    for (;;) {
        err = imagen_pipeline_process(t->pipeline, spec, input->data, input->size, result, times);
        if (err == NULL || imagen_error_code_of(err) != IMAGEN_ERR_UNAVAILABLE) {
            if (atomic_exchange(&w->server_available, 1) == 0)
                IMAGEN_LOG_INFO_(COMPONENT, "inference server %s answers again", w->opts->server_url);
            break;
        }
        if (atomic_exchange(&w->server_available, 0) == 1)
            IMAGEN_LOG_WARN_(COMPONENT, "inference server unavailable; holding jobs and pausing pulls: %s",
                             imagen_error_message(err));
        if (!holding) {
            holding = true;
            atomic_fetch_add(&w->server_holders, 1);
            IMAGEN_LOG_VERBOSE_(COMPONENT, "job %s held while the server is unavailable", id);
        }
        imagen_error_free(err);
        err = NULL;
        if (held_lost(t, 0)) {
            *stop_outcome = OUT_LOST;
            break;
        }
        if (sleep_unless_stopping(w, backoff)) {
            *stop_outcome = OUT_RELEASED;
            break;
        }
        backoff = next_backoff(backoff);
    }
    if (holding)
        atomic_fetch_sub(&w->server_holders, 1);
    return err;
}

/* Runs t->held[0] to its end and removes it from held. */
static void
process_job(job_thread *t)
{
    worker *w = t->w;
    uint64_t start = imagen_time_now_ns();
    const imagen_job *job = t->held[0].lease->job;
    char id[IMAGEN_JOB_ID_SIZE];
    memcpy(id, job->id, sizeof(id));
    int attempts = job->attempts;
    int oi = op_index(w, job->op);
    op_metrics *m = oi >= 0 ? &w->metrics[oi] : NULL;
    if (m != NULL)
        atomic_fetch_add(&m->in_flight, 1);

    imagen_stage_times times;
    memset(&times, 0, sizeof(times));
    char timings[512];
    imagen_job_spec spec;
    memset(&spec, 0, sizeof(spec));
    bool spec_ok = false;
    imagen_storage_blob input = {NULL, 0, NULL};
    imagen_job_result result;
    memset(&result, 0, sizeof(result));
    char *output = NULL;
    char *message = NULL;
    job_outcome outcome = OUT_DONE;
    imagen_error *err = NULL;

    if (oi < 0)
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "operation '%s' is not served by this worker", job->op);
    if (err == NULL) {
        err = imagen_job_spec_parse(job->op, job->spec, &spec);
        spec_ok = err == NULL;
    }
    if (err != NULL) {
        format_timings(timings, sizeof(timings), &times, ms_since(start));
        outcome = end_with_error(t, err, true, timings, &message);
        goto done;
    }

    uint64_t t0 = imagen_time_now_ns();
    err = imagen_storage_fetch(&spec, &input);
    times.fetch_ms = ms_since(t0);
    if (err != NULL) {
        format_timings(timings, sizeof(timings), &times, ms_since(start));
        outcome = end_with_error(t, err, is_permanent(err), timings, &message);
        goto done;
    }

    job_outcome stop_outcome = OUT_DONE;
    err = run_pipeline(t, &spec, &input, &result, &times, &stop_outcome);
    if (stop_outcome == OUT_RELEASED) {
        imagen_error *rel = end_delivery(t, 0, END_RELEASE, NULL, NULL, 0, NULL);
        if (rel != NULL) {
            IMAGEN_LOG_WARN_(COMPONENT, "job %s: release failed (its lease will expire): %s", id,
                             imagen_error_message(rel));
            imagen_error_free(rel);
        }
        outcome = OUT_RELEASED;
        goto done;
    }
    if (stop_outcome == OUT_LOST) {
        outcome = OUT_LOST;
        goto done;
    }
    if (err != NULL) {
        imagen_error_code code = imagen_error_code_of(err);
        bool permanent = code == IMAGEN_ERR_INVALID_ARG || code == IMAGEN_ERR_UNSUPPORTED;
        /* The job's error is what its submitter reads: say which input. */
        err = imagen_error_wrap(err, "%s",
                                spec.input != NULL        ? spec.input
                                : spec.input_name != NULL ? spec.input_name
                                                          : "inline input");
        format_timings(timings, sizeof(timings), &times, ms_since(start));
        outcome = end_with_error(t, err, permanent, timings, &message);
        goto done;
    }

    output = imagen_job_output_location(&spec, id, result.ext);
    if (output == NULL) {
        format_timings(timings, sizeof(timings), &times, ms_since(start));
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory naming the output of job %s", id);
        outcome = end_with_error(t, err, false, timings, &message);
        goto done;
    }
    if (held_lost(t, 0)) {
        outcome = OUT_LOST;
        goto done;
    }
    t0 = imagen_time_now_ns();
    err = imagen_storage_write(output, result.data, result.size, result.content_type);
    times.write_ms = ms_since(t0);
    if (err != NULL) {
        format_timings(timings, sizeof(timings), &times, ms_since(start));
        outcome = end_with_error(t, err, is_permanent(err), timings, &message);
        goto done;
    }
    double total_ms = ms_since(start);
    format_timings(timings, sizeof(timings), &times, total_ms);
    err = end_delivery(t, 0, END_ACK, output, timings, 0, NULL);
    if (err != NULL) {
        /* The result is written; a delivery that took over writes the same
         * place, so nothing is duplicated. */
        message = strdup(imagen_error_message(err));
        imagen_error_free(err);
        outcome = OUT_LOST;
        goto done;
    }
    if (m != NULL) {
        const double ms[STAGE_COUNT] = {times.fetch_ms, times.decode_ms, times.pre_ms,   times.infer_ms,
                                        times.post_ms,  times.encode_ms, times.write_ms, total_ms};
        pthread_mutex_lock(&w->metrics_mu);
        for (int s = 0; s < STAGE_COUNT; s++) {
            m->stage_sum_s[s] += ms[s] / 1000.0;
            m->stage_count[s]++;
        }
        pthread_mutex_unlock(&w->metrics_mu);
    }

done:
    if (m != NULL) {
        atomic_fetch_sub(&m->in_flight, 1);
        switch (outcome) {
        case OUT_DONE:
            atomic_fetch_add(&m->jobs[RESULT_DONE], 1);
            break;
        case OUT_FAILED:
            atomic_fetch_add(&m->jobs[RESULT_FAILED], 1);
            break;
        case OUT_RETRIED:
            atomic_fetch_add(&m->jobs[RESULT_RETRIED], 1);
            break;
        case OUT_DEAD:
            atomic_fetch_add(&m->jobs[RESULT_DEAD], 1);
            break;
        default:
            break;
        }
    }
    imagen_log_level level = outcome == OUT_DONE || outcome == OUT_RELEASED ? IMAGEN_LOG_INFO : IMAGEN_LOG_WARNING;
    if (outcome == OUT_LOST)
        imagen_log(level, COMPONENT, "job %s op=%s state=lost total_ms=%.1f attempts=%d: %s", id,
                   oi >= 0 ? w->op_names[oi] : "?", ms_since(start), attempts,
                   message ? message : "the lease was taken over; not acked");
    else
        imagen_log(level, COMPONENT, "job %s op=%s state=%s total_ms=%.1f attempts=%d%s%s", id,
                   oi >= 0 ? w->op_names[oi] : "?", outcome_names[outcome], ms_since(start), attempts,
                   message ? " error=" : "", message ? message : "");
    free(message);
    free(output);
    free(result.data);
    imagen_storage_blob_free(&input);
    if (spec_ok)
        imagen_job_spec_clear(&spec);
    drop_held(t, 0);
}

/* ---- the job thread --------------------------------------------------------------------- */

/* While another thread holds a job because the server is unreachable, new
 * jobs would only pile up behind it: wait until the server answers. */
static void
wait_for_server(worker *w)
{
    while (atomic_load(&w->server_available) == 0 && atomic_load(&w->server_holders) > 0)
        if (sleep_unless_stopping(w, BACKOFF_FIRST_MS))
            return;
}

/* Pulls into t->held when it is empty. Returns false when nothing came. */
static bool
pull_jobs(job_thread *t, int64_t *backoff)
{
    worker *w = t->w;
    if (!atomic_flag_test_and_set(&w->ready_logged))
        IMAGEN_LOG_INFO_(COMPONENT, "worker ready in %.1f ms (process start to first pull)",
                         ms_since(w->opts->start_ns));
    size_t max = t->cap_held;
    imagen_lease **leases = calloc(max, sizeof(*leases));
    if (leases == NULL) {
        sleep_unless_stopping(w, *backoff);
        return false;
    }
    size_t n = 0;
    imagen_error *err = imagen_queue_pull(w->queue, w->op_names, w->opts->n_ops, max, PULL_WAIT_MS, leases, &n);
    if (err != NULL) {
        if (!atomic_exchange(&w->queue_down, true))
            IMAGEN_LOG_WARN_(COMPONENT, "cannot pull from the queue, backing off: %s", imagen_error_message(err));
        else
            IMAGEN_LOG_VERBOSE_(COMPONENT, "pull failed again: %s", imagen_error_message(err));
        imagen_error_free(err);
        free(leases);
        sleep_unless_stopping(w, *backoff);
        *backoff = next_backoff(*backoff);
        return false;
    }
    if (atomic_exchange(&w->queue_down, false))
        IMAGEN_LOG_INFO_(COMPONENT, "queue reachable again");
    *backoff = BACKOFF_FIRST_MS;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < n; i++) {
        t->held[t->n_held].lease = leases[i];
        t->held[t->n_held].lost = false;
        t->n_held++;
    }
    pthread_mutex_unlock(&t->mu);
    free(leases);
    return n > 0;
}

/* The queue ran dry after some work: hand the heap's free pages back to
 * the system. A job holds a decoded image, its tensors and its result, and
 * glibc keeps what they freed in each thread's arena, so a worker that has
 * just run 12-megapixel photos would otherwise sit idle on tens of
 * megabytes it no longer uses. Once per stretch of work, not per empty
 * pull: the trim walks every arena. */
static void
release_idle_memory(job_thread *t)
{
    if (!t->worked)
        return;
    t->worked = false;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static void *
job_thread_main(void *arg)
{
    job_thread *t = arg;
    worker *w = t->w;
    int64_t backoff = BACKOFF_FIRST_MS;
    while (!atomic_load(&w->stopping)) {
        if (t->n_held == 0) {
            wait_for_server(w);
            if (atomic_load(&w->stopping))
                break;
            if (!pull_jobs(t, &backoff)) {
                release_idle_memory(t);
                continue;
            }
            /* Pulled during a stop: not started, so handed back below. */
            if (atomic_load(&w->stopping))
                break;
        }
        process_job(t);
        t->worked = true;
    }
    /* Jobs pulled ahead and never started go back to the queue at once,
     * without using an attempt. */
    while (t->n_held > 0) {
        imagen_error *err = end_delivery(t, 0, END_RELEASE, NULL, NULL, 0, NULL);
        if (err != NULL) {
            IMAGEN_LOG_WARN_(COMPONENT, "job %s: release failed (its lease will expire): %s", t->held[0].lease->job->id,
                             imagen_error_message(err));
            imagen_error_free(err);
        } else {
            IMAGEN_LOG_INFO_(COMPONENT, "job %s released unstarted", t->held[0].lease->job->id);
        }
        drop_held(t, 0);
    }
    uint64_t one = 1;
    while (write(w->done_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    return NULL;
}

/* ---- lease renewal (calling thread) ----------------------------------------------------- */

static void
renew_leases(worker *w)
{
    for (size_t i = 0; i < w->n_threads; i++) {
        job_thread *t = &w->threads[i];
        pthread_mutex_lock(&t->mu);
        for (size_t k = 0; k < t->n_held; k++) {
            held_lease *h = &t->held[k];
            if (h->lost)
                continue;
            imagen_error *err = imagen_queue_extend(w->queue, h->lease);
            if (err == NULL)
                continue;
            if (imagen_error_code_of(err) == IMAGEN_ERR_NOT_FOUND) {
                h->lost = true;
                IMAGEN_LOG_WARN_(COMPONENT, "job %s: lease taken over by another delivery; it will not be acked here",
                                 h->lease->job->id);
            } else {
                IMAGEN_LOG_WARN_(COMPONENT, "job %s: lease renewal failed, trying again later: %s", h->lease->job->id,
                                 imagen_error_message(err));
            }
            imagen_error_free(err);
        }
        pthread_mutex_unlock(&t->mu);
    }
}

/* ---- /healthz and /metrics ----------------------------------------------------------------- */

static bool
http_running(void *ctx)
{
    worker *w = ctx;
    return !atomic_load(&w->stopping);
}

/* Refreshes the cached queue counts when older than a second. Caller holds
 * counts_mu. A queue that cannot answer leaves the old figures. */
static void
refresh_counts(worker *w)
{
    uint64_t now = imagen_time_now_ns();
    if (w->counts_at_ns != 0 && now - w->counts_at_ns < COUNTS_REFRESH_NS)
        return;
    imagen_queue_counts *counts = NULL;
    size_t n = 0;
    imagen_error *err = imagen_queue_counts_get(w->queue, &counts, &n);
    w->counts_at_ns = now;
    if (err != NULL) {
        IMAGEN_LOG_VERBOSE_(COMPONENT, "queue counts for /metrics: %s", imagen_error_message(err));
        imagen_error_free(err);
        return;
    }
    free(w->counts);
    w->counts = counts;
    w->n_counts = n;
}

static void
help_type(imagen_buf *b, const char *name, const char *type, const char *help)
{
    imagen_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static char *
http_render_metrics(void *ctx, size_t *len)
{
    worker *w = ctx;
    const imagen_worker_options *o = w->opts;
    imagen_buf b = IMAGEN_BUF_INIT;

    help_type(&b, "imagen_worker_jobs_total", "counter", "Jobs this worker finished, by operation and result.");
    for (size_t i = 0; i < o->n_ops; i++)
        for (int r = 0; r < RESULT_COUNT; r++)
            imagen_buf_appendf(&b, "imagen_worker_jobs_total{op=\"%s\",result=\"%s\"} %llu\n", w->op_names[i],
                               result_names[r], (unsigned long long)atomic_load(&w->metrics[i].jobs[r]));

    help_type(&b, "imagen_worker_jobs_in_flight", "gauge", "Jobs this worker is running now.");
    for (size_t i = 0; i < o->n_ops; i++)
        imagen_buf_appendf(&b, "imagen_worker_jobs_in_flight{op=\"%s\"} %d\n", w->op_names[i],
                           atomic_load(&w->metrics[i].in_flight));

    help_type(&b, "imagen_worker_stage_seconds", "summary", "Time spent in each stage of the jobs done.");
    pthread_mutex_lock(&w->metrics_mu);
    for (size_t i = 0; i < o->n_ops; i++)
        for (int s = 0; s < STAGE_COUNT; s++) {
            imagen_buf_appendf(&b, "imagen_worker_stage_seconds_sum{op=\"%s\",stage=\"%s\"} ", w->op_names[i],
                               stage_names[s]);
            imagen_buf_append_double(&b, w->metrics[i].stage_sum_s[s]);
            imagen_buf_appendf(&b, "\nimagen_worker_stage_seconds_count{op=\"%s\",stage=\"%s\"} %llu\n", w->op_names[i],
                               stage_names[s], (unsigned long long)w->metrics[i].stage_count[s]);
        }
    pthread_mutex_unlock(&w->metrics_mu);

    help_type(&b, "imagen_worker_server_available", "gauge",
              "1 when the last inference call reached imagen-server, 0 during an outage.");
    imagen_buf_appendf(&b, "imagen_worker_server_available %d\n", atomic_load(&w->server_available));

    help_type(&b, "imagen_worker_queue_jobs", "gauge",
              "Jobs in the queue by operation and state (read at most once a second).");
    pthread_mutex_lock(&w->counts_mu);
    refresh_counts(w);
    for (size_t i = 0; i < w->n_counts; i++) {
        const imagen_queue_counts *c = &w->counts[i];
        const uint64_t v[5] = {c->queued, c->running, c->done, c->failed, c->dead};
        for (int s = 0; s < 5; s++)
            imagen_buf_appendf(&b, "imagen_worker_queue_jobs{op=\"%s\",state=\"%s\"} %llu\n", c->op,
                               imagen_job_state_name((imagen_job_state)s), (unsigned long long)v[s]);
    }
    pthread_mutex_unlock(&w->counts_mu);

    help_type(&b, "imagen_worker_start_time_seconds", "gauge", "Start time of the worker, seconds since the epoch.");
    imagen_buf_appendf(&b, "imagen_worker_start_time_seconds %.3f\n", w->start_time_s);

    if (imagen_buf_failed(&b)) {
        imagen_buf_free(&b);
        return NULL;
    }
    return imagen_buf_detach(&b, len);
}

/* ---- run ------------------------------------------------------------------------------------- */

void
imagen_worker_options_init(imagen_worker_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    for (size_t i = 0; i < imagen_operation_count && i < MAX_OPS; i++)
        opts->ops[opts->n_ops++] = &imagen_operations[i];
    opts->server_url = IMAGEN_WORKER_DEFAULT_SERVER;
    opts->concurrency = 1;
    opts->prefetch = 0;
    opts->max_attempts = IMAGEN_WORKER_DEFAULT_MAX_ATTEMPTS;
    opts->lease_seconds = IMAGEN_WORKER_DEFAULT_LEASE_SECONDS;
    opts->metrics_port = IMAGEN_WORKER_DEFAULT_METRICS_PORT;
    opts->metrics_address = IMAGEN_WORKER_DEFAULT_METRICS_ADDRESS;
    opts->use_shm = -1;
    opts->tile_size = 0;
    opts->start_ns = imagen_time_now_ns();
}

/* Waits for the job threads to exit, renewing leases every lease/3 and
 * turning the first SIGTERM/SIGINT into a drain. */
static void
supervise(worker *w, int sfd)
{
    uint64_t period_ns = (uint64_t)w->opts->lease_seconds * 1000000000ull / 3;
    uint64_t next_renew = imagen_time_now_ns() + period_ns;
    size_t running = w->n_threads;
    while (running > 0) {
        uint64_t now = imagen_time_now_ns();
        if (now >= next_renew) {
            renew_leases(w);
            next_renew = imagen_time_now_ns() + period_ns;
            continue;
        }
        int timeout_ms = (int)((next_renew - now + 999999) / 1000000);
        struct pollfd fds[2] = {{sfd, POLLIN, 0}, {w->done_fd, POLLIN, 0}};
        int rc = poll(fds, 2, timeout_ms);
        if (rc < 0 && errno != EINTR) {
            IMAGEN_LOG_ERROR_(COMPONENT, "poll: %s", strerror(errno));
            sleep_ms(100);
            continue;
        }
        if (rc <= 0)
            continue;
        if (fds[0].revents & POLLIN) {
            int sig = imagen_signal_read(sfd);
            const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
            if (!atomic_exchange(&w->stopping, true)) {
                IMAGEN_LOG_INFO_(COMPONENT, "%s: draining (no new jobs; finishing the ones in hand)", name);
                pthread_mutex_lock(&w->sleep_mu);
                pthread_cond_broadcast(&w->sleep_cv);
                pthread_mutex_unlock(&w->sleep_mu);
            } else {
                IMAGEN_LOG_INFO_(COMPONENT, "%s ignored: already draining", name);
            }
        }
        if (fds[1].revents & POLLIN) {
            uint64_t n = 0;
            if (read(w->done_fd, &n, sizeof(n)) == (ssize_t)sizeof(n))
                running -= n > running ? running : (size_t)n;
        }
    }
}

static void
worker_free(worker *w)
{
    for (size_t i = 0; i < w->n_threads; i++) {
        job_thread *t = &w->threads[i];
        if (t->started)
            pthread_join(t->tid, NULL);
        imagen_pipeline_destroy(t->pipeline);
        free(t->held);
        pthread_mutex_destroy(&t->mu);
    }
    free(w->threads);
    imagen_worker_http_stop(w->http);
    imagen_queue_close(w->queue);
    imagen_client_destroy(w->client);
    free(w->counts);
    if (w->done_fd >= 0)
        close(w->done_fd);
    pthread_mutex_destroy(&w->sleep_mu);
    pthread_cond_destroy(&w->sleep_cv);
    pthread_mutex_destroy(&w->metrics_mu);
    pthread_mutex_destroy(&w->counts_mu);
    free(w);
}

imagen_error *
imagen_worker_run(const imagen_worker_options *opts)
{
    if (opts->queue_url == NULL || opts->n_ops == 0 || opts->n_ops > MAX_OPS || opts->concurrency < 1 ||
        opts->prefetch < 0 || opts->lease_seconds < 1 || opts->max_attempts < 1)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "invalid worker options (queue, ops, concurrency, "
                                                        "prefetch, lease or max attempts)");
    worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory starting the worker");
    w->opts = opts;
    w->done_fd = -1;
    for (size_t i = 0; i < opts->n_ops; i++)
        w->op_names[i] = opts->ops[i]->name;
    atomic_init(&w->stopping, false);
    atomic_init(&w->server_holders, 0);
    atomic_init(&w->server_available, 1);
    atomic_init(&w->queue_down, false);
    atomic_flag_clear(&w->ready_logged);
    pthread_mutex_init(&w->sleep_mu, NULL);
    imagen_cond_init_monotonic(&w->sleep_cv);
    pthread_mutex_init(&w->metrics_mu, NULL);
    pthread_mutex_init(&w->counts_mu, NULL);
    w->start_time_s = (double)imagen_time_wall_ms() / 1000.0;

    /* Threads start below; a libcurl whose global init is not thread-safe
     * gets it now, any other at its first URL job (storage.h). */
    if (!imagen_storage_lazy_init_ok())
        imagen_storage_global_init();

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    w->done_fd = eventfd(0, EFD_CLOEXEC);
    imagen_error *err = NULL;
    if (sfd < 0 || w->done_fd < 0)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot create the worker's signal or event descriptor: %s",
                               strerror(errno));

    imagen_queue_options qopts = {opts->name, opts->max_attempts, (int64_t)opts->lease_seconds * 1000};
    if (err == NULL) {
        /* The drivers' messages name the URL already. */
        err = imagen_queue_open(opts->queue_url, &qopts, &w->queue);
    }
    if (err == NULL) {
        err = imagen_client_create(opts->server_url, &w->client);
        if (err != NULL)
            err = imagen_error_wrap(err, "server %s", opts->server_url);
        else
            imagen_client_set_timeout_ms(w->client, IMAGEN_WORKER_INFER_TIMEOUT_MS);
    }
    if (err == NULL && opts->metrics_port > 0) {
        imagen_worker_http_callbacks cb = {http_running, http_render_metrics, w};
        err = imagen_worker_http_start(opts->metrics_address, opts->metrics_port, &cb, &w->http);
        if (err == NULL)
            IMAGEN_LOG_VERBOSE_(COMPONENT, "/healthz and /metrics on %s:%d", opts->metrics_address,
                                imagen_worker_http_port(w->http));
    }
    if (err == NULL) {
        w->threads = calloc((size_t)opts->concurrency, sizeof(*w->threads));
        if (w->threads == NULL)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for %d threads", opts->concurrency);
    }
    /* Pipelines are created here, one after another: image-library
     * initialisation inside the first one is not safe to race. */
    imagen_pipeline_options popts = {w->client, opts->tile_size, 0, opts->use_shm};
    for (int i = 0; err == NULL && i < opts->concurrency; i++) {
        job_thread *t = &w->threads[i];
        t->w = w;
        pthread_mutex_init(&t->mu, NULL);
        w->n_threads++;
        t->cap_held = 1 + (size_t)opts->prefetch;
        t->held = calloc(t->cap_held, sizeof(*t->held));
        if (t->held == NULL)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for thread %d", i);
        else
            err = imagen_pipeline_create(&popts, &t->pipeline);
    }
    if (err == NULL)
        IMAGEN_LOG_INFO_(COMPONENT, "worker %s: queue %s (%s), server %s, %zu operation(s), %d thread(s)",
                         opts->name ? opts->name : "(default name)", opts->queue_url,
                         imagen_queue_driver_name(w->queue), opts->server_url, opts->n_ops, opts->concurrency);
    for (size_t i = 0; err == NULL && i < w->n_threads; i++) {
        job_thread *t = &w->threads[i];
        int rc = pthread_create(&t->tid, NULL, job_thread_main, t);
        if (rc != 0) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot start job thread %zu: %s", i, strerror(rc));
            break;
        }
        t->started = true;
    }
    if (err != NULL) {
        /* Threads already started see the stop and exit without work in hand. */
        atomic_store(&w->stopping, true);
        pthread_mutex_lock(&w->sleep_mu);
        pthread_cond_broadcast(&w->sleep_cv);
        pthread_mutex_unlock(&w->sleep_mu);
    } else {
        supervise(w, sfd);
        IMAGEN_LOG_INFO_(COMPONENT, "worker stopped");
    }
    if (sfd >= 0)
        close(sfd);
    worker_free(w);
    return err;
}
