/*
 * The job queue: one interface, two drivers chosen by URL.
 *
 *   sqlite:///abs/path/queue.db   embedded, one machine, several processes
 *                                 (WAL); a lease is a timestamp column
 *   redis://host:port[/db]        many machines; a Redis Stream per
 *                                 operation with one consumer group
 *
 * A job is published to the queue of its operation and delivered to one
 * consumer at a time under a lease. The consumer ends the delivery with
 * exactly one of ack (done), fail (permanent failure), retry (transient
 * failure: back to the queue after a delay, or to the dead letters once
 * max_attempts deliveries have been used) or release (handed back unstarted,
 * not counted as an attempt). A lease that is neither ended nor extended
 * expires and the job is delivered again, to anyone: delivery is at least
 * once, so whatever a job does must be safe to repeat (the worker writes its
 * output to a location that depends only on the job).
 *
 * Every state change goes through the driver, which keeps the job's record
 * (state, attempts, timestamps, error, output location, stage timings) next
 * to the queue, so `imagen status ID` works from any machine that can reach
 * the queue.
 *
 * Ownership: everything returned through an out-parameter is owned by the
 * caller and freed with the matching *_free(). Strings passed in are
 * borrowed for the call. A queue handle may be used by several threads at
 * once (drivers serialise internally where their connection needs it).
 */
#ifndef IMAGEN_QUEUE_QUEUE_H
#define IMAGEN_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"

/* Job ids are 24 lowercase hex digits: 12 of the wall-clock milliseconds at
 * publish time then 12 random, so ids sort by age and never collide in
 * practice. The buffer holds the terminating NUL. */
#define IMAGEN_JOB_ID_SIZE 25

/* Operation names: [a-z0-9_]{1,63}. */
#define IMAGEN_QUEUE_OP_MAX 63

/* The whole job spec (JSON text, inline input bytes included) is limited so
 * that one job fits comfortably in one row / one stream entry. */
#define IMAGEN_JOB_SPEC_MAX (16u << 20)

typedef enum imagen_job_state {
    IMAGEN_JOB_QUEUED = 0, /* waiting (possibly until a retry delay has passed) */
    IMAGEN_JOB_RUNNING,    /* delivered, under a lease */
    IMAGEN_JOB_DONE,       /* acked with its output */
    IMAGEN_JOB_FAILED,     /* permanent failure, e.g. a corrupt image */
    IMAGEN_JOB_DEAD,       /* transient failures used up max_attempts */
    IMAGEN_JOB_STATE_COUNT_
} imagen_job_state;

/* "queued", "running", "done", "failed", "dead". */
const char *imagen_job_state_name(imagen_job_state state);
/* Parses a name back; returns false for an unknown one. */
bool imagen_job_state_parse(const char *name, imagen_job_state *out);

/* A job's record. Timestamps are wall-clock milliseconds since the epoch,
 * 0 while the event has not happened. */
typedef struct imagen_job {
    char id[IMAGEN_JOB_ID_SIZE];
    char *op;   /* operation (the queue it was published to) */
    char *spec; /* the JSON object given to publish, unchanged */
    imagen_job_state state;
    int attempts;        /* deliveries so far (released ones not counted) */
    int64_t created_ms;  /* published */
    int64_t started_ms;  /* latest delivery */
    int64_t finished_ms; /* done, failed or dead */
    int64_t updated_ms;  /* latest state change */
    char *consumer;      /* who holds / last held it; NULL never delivered */
    char *error;         /* latest failure message; NULL none */
    char *output;        /* where the result was written (set by ack); NULL none */
    char *timings;       /* JSON object of stage milliseconds (set by ack/fail/retry); NULL none */
} imagen_job;

/* Frees the members and the job itself. Accepts NULL. */
void imagen_job_free(imagen_job *job);
void imagen_job_list_free(imagen_job **jobs, size_t n);

/* One delivery of one job. The job member is a snapshot taken at delivery
 * (state RUNNING, attempts including this delivery). */
typedef struct imagen_lease {
    imagen_job *job;
    int64_t expires_ms; /* wall clock; extended by imagen_queue_extend() */
    char token[64];     /* the driver's handle on this delivery */
} imagen_lease;

/* Frees the lease and its job snapshot. Does not end the delivery. */
void imagen_lease_free(imagen_lease *lease);

typedef struct imagen_queue imagen_queue;

typedef struct imagen_queue_options {
    const char *consumer; /* this process's name in leases; NULL = "<hostname>-<pid>" */
    int max_attempts;     /* deliveries before retry() dead-letters; 0 = 5 */
    int64_t lease_ms;     /* lease length at delivery and per extend; 0 = 60000 */
} imagen_queue_options;

/* The URL jobs go to when none is given: $IMAGEN_QUEUE if set and not
 * empty, else sqlite://<data dir>/imagen/queue.db where <data dir> is
 * $XDG_DATA_HOME or $HOME/.local/share. Returns an owned string. */
char *imagen_queue_default_url(void);

/* Opens (and for sqlite creates, with its directory) the queue at `url`.
 * options may be NULL for the defaults. A malformed or unsupported URL is
 * INVALID_ARG naming it; a queue that cannot be reached is UNAVAILABLE. */
imagen_error *imagen_queue_open(const char *url, const imagen_queue_options *options, imagen_queue **out);
/* Checks the form of a queue URL without opening anything (for
 * --check-config): INVALID_ARG naming the URL when no driver takes it. */
imagen_error *imagen_queue_url_check(const char *url);

/* Accepts NULL. Outstanding leases simply expire. */
void imagen_queue_close(imagen_queue *queue);
/* "sqlite" or "redis". */
const char *imagen_queue_driver_name(const imagen_queue *queue);

/* Publishes one job for `op`; spec is a JSON object (not parsed beyond
 * that by the queue). Writes the new id (with its NUL) to id. */
imagen_error *imagen_queue_publish(imagen_queue *queue, const char *op, const char *spec, char id[IMAGEN_JOB_ID_SIZE]);

/* Publishes n jobs for `op` at once, all or none: one transaction (sqlite)
 * or one script call (Redis) instead of n, which is what makes submitting a
 * directory of thousands of images fast. Writes the ids to ids[0..n). The
 * specs together should stay well under IMAGEN_JOB_SPEC_MAX. */
imagen_error *imagen_queue_publish_batch(imagen_queue *queue, const char *op, const char *const *specs, size_t n,
                                         char (*ids)[IMAGEN_JOB_ID_SIZE]);

/* Takes up to `max` jobs from the queues of `ops` (oldest first, then the
 * ops' order), waiting up to wait_ms for the first one when none is ready
 * (0 = do not wait). Jobs whose lease expired are delivered again here;
 * a job whose expired delivery was its max_attempts-th goes to the dead
 * letters instead. Writes owned leases to leases[0..*n_out). *n_out = 0
 * with no error means nothing was ready in time. */
imagen_error *imagen_queue_pull(imagen_queue *queue, const char *const *ops, size_t n_ops, size_t max, int64_t wait_ms,
                                imagen_lease **leases, size_t *n_out);

/* Extends the lease by lease_ms from now. NOT_FOUND when the delivery is
 * no longer this lease's (it expired and the job went to someone else):
 * the holder must then stop working on it and not ack. */
imagen_error *imagen_queue_extend(imagen_queue *queue, imagen_lease *lease);

/* Ends the delivery: done, with the output location and stage timings
 * (JSON object text, may be NULL). Must be called only after the output is
 * durable. NOT_FOUND as for extend (the result was written anyway: the
 * other delivery overwrites the same location). */
imagen_error *imagen_queue_ack(imagen_queue *queue, imagen_lease *lease, const char *output, const char *timings);

/* Ends n deliveries as done at once: one script call (Redis) or one
 * transaction (sqlite) instead of n, which is what lets a consumer of many
 * small jobs keep up with a queue that publishes in batches. outputs[i] and
 * timings[i] are as for imagen_queue_ack(); timings itself may be NULL (no
 * timings for any). errs[i] receives each delivery's own result: NULL when
 * acked, NOT_FOUND when its lease was lost. The return value is an error
 * that concerns the whole call (the queue unreachable, a lease argument
 * missing): then no errs[] are set and no delivery is known to have ended
 * (they expire and are delivered again). */
imagen_error *imagen_queue_ack_batch(imagen_queue *queue, imagen_lease *const *leases, size_t n,
                                     const char *const *outputs, const char *const *timings, imagen_error **errs);

/* Ends the delivery: failed for good with `message`. */
imagen_error *imagen_queue_fail(imagen_queue *queue, imagen_lease *lease, const char *message, const char *timings);

/* Ends the delivery after a transient failure: the job is queued again,
 * deliverable after delay_ms, or dead-lettered when it has had max_attempts
 * deliveries. *dead (may be NULL) says which. */
imagen_error *imagen_queue_retry(imagen_queue *queue, imagen_lease *lease, const char *message, int64_t delay_ms,
                                 bool *dead);

/* Ends the delivery without using an attempt: the job is queued again at
 * once (a prefetched job a stopping worker never started). */
imagen_error *imagen_queue_release(imagen_queue *queue, imagen_lease *lease);

/* ---- inspection and administration (the imagen job commands) ------------- */

/* One job's record; NOT_FOUND naming the id when there is none. */
imagen_error *imagen_queue_get(imagen_queue *queue, const char *id, imagen_job **out);

/* Jobs, newest first, at most `limit` (0 = 1000); op NULL = every op;
 * state < 0 = every state. *jobs is an owned array (imagen_job_list_free). */
imagen_error *imagen_queue_list(imagen_queue *queue, const char *op, int state, size_t limit, imagen_job ***jobs,
                                size_t *n);

/* Queues a failed or dead job again with its attempts reset. INVALID_ARG
 * when the job is queued, running or done. */
imagen_error *imagen_queue_requeue(imagen_queue *queue, const char *id);
/* Requeues every dead job of op (NULL = all ops); *n (may be NULL) = how many. */
imagen_error *imagen_queue_requeue_dead(imagen_queue *queue, const char *op, size_t *n);

/* Per-operation counts for metrics and autoscaling. */
typedef struct imagen_queue_counts {
    char op[IMAGEN_QUEUE_OP_MAX + 1];
    uint64_t queued;  /* waiting, retry delays included */
    uint64_t running; /* in flight (leased) */
    uint64_t done;
    uint64_t failed;
    uint64_t dead;
} imagen_queue_counts;

/* One entry per operation that has ever had a job, sorted by op name.
 * *counts is an owned array (free()). */
imagen_error *imagen_queue_counts_get(imagen_queue *queue, imagen_queue_counts **counts, size_t *n);

/* ---- shared helpers (queue.c) --------------------------------------------- */

/* True for [a-z0-9_]{1,63}. */
bool imagen_queue_op_valid(const char *op);
/* A fresh job id (see IMAGEN_JOB_ID_SIZE). Thread-safe. */
void imagen_job_id_new(char id[IMAGEN_JOB_ID_SIZE]);

#endif /* IMAGEN_QUEUE_QUEUE_H */
