/*
 * The queue front: picks the driver from the URL, fills in option defaults
 * and checks every argument once, so that drivers only deal with storage.
 * Also the small helpers both drivers share (job ids, state names, frees).
 */
#include "queue/queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/time.h"
#include "queue/queue_driver.h"

struct imagen_queue {
    const imagen_queue_driver *driver;
    void *state;
};

static const imagen_queue_driver *const drivers[] = {&imagen_queue_driver_sqlite, &imagen_queue_driver_redis};

static const char *const state_names[IMAGEN_JOB_STATE_COUNT_] = {"queued", "running", "done", "failed", "dead"};

const char *
imagen_job_state_name(imagen_job_state state)
{
    return (unsigned)state < IMAGEN_JOB_STATE_COUNT_ ? state_names[state] : "unknown";
}

bool
imagen_job_state_parse(const char *name, imagen_job_state *out)
{
    for (int i = 0; i < IMAGEN_JOB_STATE_COUNT_; i++) {
        if (name != NULL && strcmp(name, state_names[i]) == 0) {
            *out = (imagen_job_state)i;
            return true;
        }
    }
    return false;
}

void
imagen_job_free(imagen_job *job)
{
    if (job == NULL)
        return;
    free(job->op);
    free(job->spec);
    free(job->consumer);
    free(job->error);
    free(job->output);
    free(job->timings);
    free(job);
}

void
imagen_job_list_free(imagen_job **jobs, size_t n)
{
    if (jobs == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        imagen_job_free(jobs[i]);
    free(jobs);
}

void
imagen_lease_free(imagen_lease *lease)
{
    if (lease == NULL)
        return;
    imagen_job_free(lease->job);
    free(lease);
}

bool
imagen_queue_op_valid(const char *op)
{
    if (op == NULL || op[0] == '\0')
        return false;
    size_t n = 0;
    for (const char *p = op; *p; p++, n++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    }
    return n <= IMAGEN_QUEUE_OP_MAX;
}

void
imagen_job_id_new(char id[IMAGEN_JOB_ID_SIZE])
{
    /* 12 hex digits of milliseconds last until the year 10889; the random
     * half comes from the kernel, so ids from different processes and
     * machines do not collide. */
    uint64_t ms = imagen_time_wall_ms() & 0xffffffffffffull;
    unsigned char rnd[6];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        /* Practically never; fall back to something still unique enough
         * within this process. */
        static _Atomic unsigned long counter;
        unsigned long c = ++counter ^ ((unsigned long)getpid() << 20);
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (unsigned char)(c >> (8 * i));
    }
    snprintf(id, IMAGEN_JOB_ID_SIZE, "%012llx%02x%02x%02x%02x%02x%02x", (unsigned long long)ms, rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5]);
}

char *
imagen_queue_default_url(void)
{
    const char *env = getenv("IMAGEN_QUEUE");
    if (env != NULL && env[0] != '\0')
        return strdup(env);
    char path[4096];
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    if (xdg != NULL && xdg[0] == '/')
        snprintf(path, sizeof path, "sqlite://%s/imagen/queue.db", xdg);
    else if (home != NULL && home[0] == '/')
        snprintf(path, sizeof path, "sqlite://%s/.local/share/imagen/queue.db", home);
    else
        snprintf(path, sizeof path, "sqlite:///tmp/imagen-%ld/queue.db", (long)getuid());
    return strdup(path);
}

/* The driver whose scheme starts the URL; INVALID_ARG naming it if none. */
static imagen_error *
driver_for(const char *url, const imagen_queue_driver **out)
{
    if (url == NULL || url[0] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "queue URL is empty");
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++) {
        size_t n = strlen(drivers[i]->scheme);
        if (strncmp(url, drivers[i]->scheme, n) == 0) {
            *out = drivers[i];
            return NULL;
        }
    }
    return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                            "queue URL '%s' is not supported: use sqlite:///path/queue.db or redis://host:port[/db]",
                            url);
}

imagen_error *
imagen_queue_url_check(const char *url)
{
    const imagen_queue_driver *driver;
    IMAGEN_RETURN_IF_ERROR(driver_for(url, &driver));
    if (driver == &imagen_queue_driver_sqlite && url[strlen(driver->scheme)] != '/')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "queue URL '%s' needs an absolute path: sqlite:///path/queue.db", url);
    return NULL;
}

imagen_error *
imagen_queue_open(const char *url, const imagen_queue_options *options, imagen_queue **out)
{
    const imagen_queue_driver *driver = NULL;
    IMAGEN_RETURN_IF_ERROR(driver_for(url, &driver));

    imagen_queue_options opt = {0};
    if (options != NULL)
        opt = *options;
    char consumer[300];
    if (opt.consumer == NULL || opt.consumer[0] == '\0') {
        char host[256] = "localhost";
        if (gethostname(host, sizeof host) != 0)
            strcpy(host, "localhost");
        host[sizeof host - 1] = '\0';
        snprintf(consumer, sizeof consumer, "%s-%ld", host, (long)getpid());
        opt.consumer = consumer;
    }
    if (opt.max_attempts <= 0)
        opt.max_attempts = 5;
    if (opt.lease_ms <= 0)
        opt.lease_ms = 60000;

    imagen_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return &imagen__error_out_of_memory;
    q->driver = driver;
    imagen_error *err = driver->open(url, &opt, &q->state);
    if (err != NULL) {
        free(q);
        return err;
    }
    *out = q;
    return NULL;
}

void
imagen_queue_close(imagen_queue *queue)
{
    if (queue == NULL)
        return;
    queue->driver->close(queue->state);
    free(queue);
}

const char *
imagen_queue_driver_name(const imagen_queue *queue)
{
    return queue->driver->name;
}

static imagen_error *
check_op(const char *op)
{
    if (!imagen_queue_op_valid(op))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "operation name '%s' is not valid: use 1 to %d of a-z, 0-9 and _",
                                op != NULL ? op : "(null)", IMAGEN_QUEUE_OP_MAX);
    return NULL;
}

static imagen_error *
check_lease(const imagen_lease *lease)
{
    if (lease == NULL || lease->job == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "no lease given");
    return NULL;
}

static imagen_error *
check_spec(const char *spec)
{
    if (spec == NULL || spec[0] != '{')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job spec must be a JSON object");
    size_t len = strlen(spec);
    if (len > IMAGEN_JOB_SPEC_MAX)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job spec is %zu bytes, more than the limit of %u", len,
                                IMAGEN_JOB_SPEC_MAX);
    return NULL;
}

imagen_error *
imagen_queue_publish_batch(imagen_queue *queue, const char *op, const char *const *specs, size_t n,
                           char (*ids)[IMAGEN_JOB_ID_SIZE])
{
    IMAGEN_RETURN_IF_ERROR(check_op(op));
    if (n == 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        IMAGEN_RETURN_IF_ERROR(check_spec(specs[i]));
    char(*fresh)[IMAGEN_JOB_ID_SIZE] = malloc(n * IMAGEN_JOB_ID_SIZE);
    if (fresh == NULL)
        return &imagen__error_out_of_memory;
    for (size_t i = 0; i < n; i++)
        imagen_job_id_new(fresh[i]);
    imagen_error *err = queue->driver->publish(queue->state, op, specs, fresh, n);
    if (err == NULL)
        memcpy(ids, fresh, n * IMAGEN_JOB_ID_SIZE);
    free(fresh);
    return err;
}

imagen_error *
imagen_queue_publish(imagen_queue *queue, const char *op, const char *spec, char id[IMAGEN_JOB_ID_SIZE])
{
    return imagen_queue_publish_batch(queue, op, &spec, 1, (char(*)[IMAGEN_JOB_ID_SIZE])id);
}

imagen_error *
imagen_queue_pull(imagen_queue *queue, const char *const *ops, size_t n_ops, size_t max, int64_t wait_ms,
                  imagen_lease **leases, size_t *n_out)
{
    *n_out = 0;
    if (n_ops == 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "pull needs at least one operation");
    for (size_t i = 0; i < n_ops; i++)
        IMAGEN_RETURN_IF_ERROR(check_op(ops[i]));
    if (max == 0)
        return NULL;
    if (wait_ms < 0)
        wait_ms = 0;
    /* An op named twice would be read twice by a driver that merges the
     * queues oldest job first; each op once is what the caller means. */
    const char **uniq = malloc(n_ops * sizeof *uniq);
    if (uniq == NULL)
        return &imagen__error_out_of_memory;
    size_t n_uniq = 0;
    for (size_t i = 0; i < n_ops; i++) {
        bool seen = false;
        for (size_t j = 0; j < n_uniq && !seen; j++)
            seen = strcmp(uniq[j], ops[i]) == 0;
        if (!seen)
            uniq[n_uniq++] = ops[i];
    }
    imagen_error *err = queue->driver->pull(queue->state, uniq, n_uniq, max, wait_ms, leases, n_out);
    free(uniq);
    return err;
}

imagen_error *
imagen_queue_extend(imagen_queue *queue, imagen_lease *lease)
{
    IMAGEN_RETURN_IF_ERROR(check_lease(lease));
    return queue->driver->extend(queue->state, lease);
}

imagen_error *
imagen_queue_ack(imagen_queue *queue, imagen_lease *lease, const char *output, const char *timings)
{
    IMAGEN_RETURN_IF_ERROR(check_lease(lease));
    return queue->driver->ack(queue->state, lease, output, timings);
}

imagen_error *
imagen_queue_ack_batch(imagen_queue *queue, imagen_lease *const *leases, size_t n, const char *const *outputs,
                       const char *const *timings, imagen_error **errs)
{
    for (size_t i = 0; i < n; i++)
        IMAGEN_RETURN_IF_ERROR(check_lease(leases[i]));
    if (n == 0)
        return NULL;
    if (queue->driver->ack_batch != NULL)
        return queue->driver->ack_batch(queue->state, leases, n, outputs, timings, errs);
    for (size_t i = 0; i < n; i++)
        errs[i] = queue->driver->ack(queue->state, leases[i], outputs[i], timings != NULL ? timings[i] : NULL);
    return NULL;
}

imagen_error *
imagen_queue_fail(imagen_queue *queue, imagen_lease *lease, const char *message, const char *timings)
{
    IMAGEN_RETURN_IF_ERROR(check_lease(lease));
    return queue->driver->fail(queue->state, lease, message != NULL ? message : "failed", timings);
}

imagen_error *
imagen_queue_retry(imagen_queue *queue, imagen_lease *lease, const char *message, int64_t delay_ms, bool *dead)
{
    IMAGEN_RETURN_IF_ERROR(check_lease(lease));
    bool is_dead = false;
    IMAGEN_RETURN_IF_ERROR(queue->driver->retry(queue->state, lease, message != NULL ? message : "retry",
                                                delay_ms < 0 ? 0 : delay_ms, &is_dead));
    if (dead != NULL)
        *dead = is_dead;
    return NULL;
}

imagen_error *
imagen_queue_release(imagen_queue *queue, imagen_lease *lease)
{
    IMAGEN_RETURN_IF_ERROR(check_lease(lease));
    return queue->driver->release(queue->state, lease);
}

imagen_error *
imagen_queue_get(imagen_queue *queue, const char *id, imagen_job **out)
{
    if (id == NULL || id[0] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "no job id given");
    return queue->driver->get(queue->state, id, out);
}

imagen_error *
imagen_queue_list(imagen_queue *queue, const char *op, int state, size_t limit, imagen_job ***jobs, size_t *n)
{
    *jobs = NULL;
    *n = 0;
    if (op != NULL)
        IMAGEN_RETURN_IF_ERROR(check_op(op));
    if (state >= IMAGEN_JOB_STATE_COUNT_)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unknown job state %d", state);
    return queue->driver->list(queue->state, op, state < 0 ? -1 : state, limit == 0 ? 1000 : limit, jobs, n);
}

imagen_error *
imagen_queue_requeue(imagen_queue *queue, const char *id)
{
    if (id == NULL || id[0] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "no job id given");
    return queue->driver->requeue(queue->state, id);
}

imagen_error *
imagen_queue_requeue_dead(imagen_queue *queue, const char *op, size_t *n)
{
    if (op != NULL)
        IMAGEN_RETURN_IF_ERROR(check_op(op));
    size_t count = 0;
    IMAGEN_RETURN_IF_ERROR(queue->driver->requeue_dead(queue->state, op, &count));
    if (n != NULL)
        *n = count;
    return NULL;
}

imagen_error *
imagen_queue_counts_get(imagen_queue *queue, imagen_queue_counts **counts, size_t *n)
{
    *counts = NULL;
    *n = 0;
    return queue->driver->counts(queue->state, counts, n);
}
