/*
 * The driver side of the queue interface (queue.h). queue.c parses the URL,
 * applies option defaults, validates arguments (op names, spec size, lease
 * ownership of the queue) and then calls exactly one driver function per
 * public call; drivers never see a NULL queue or an invalid op name.
 */
#ifndef IMAGEN_QUEUE_DRIVER_H
#define IMAGEN_QUEUE_DRIVER_H

#include "queue/queue.h"

typedef struct imagen_queue_driver {
    const char *name;   /* "sqlite", "redis" */
    const char *scheme; /* "sqlite://", "redis://" */

    /* url is the whole URL; options have their defaults filled in (consumer
     * never NULL). On success *state is the driver's own handle. */
    imagen_error *(*open)(const char *url, const imagen_queue_options *options, void **state);
    void (*close)(void *state);

    /* n >= 1 jobs, all published or none. */
    imagen_error *(*publish)(void *state, const char *op, const char *const *specs, char (*ids)[IMAGEN_JOB_ID_SIZE],
                             size_t n);
    imagen_error *(*pull)(void *state, const char *const *ops, size_t n_ops, size_t max, int64_t wait_ms,
                          imagen_lease **leases, size_t *n_out);
    imagen_error *(*extend)(void *state, imagen_lease *lease);
    imagen_error *(*ack)(void *state, imagen_lease *lease, const char *output, const char *timings);
    /* n >= 1 leases, errs[] set for each on success; may be NULL, and
     * queue.c then calls ack once per lease. */
    imagen_error *(*ack_batch)(void *state, imagen_lease *const *leases, size_t n, const char *const *outputs,
                               const char *const *timings, imagen_error **errs);
    imagen_error *(*fail)(void *state, imagen_lease *lease, const char *message, const char *timings);
    imagen_error *(*retry)(void *state, imagen_lease *lease, const char *message, int64_t delay_ms, bool *dead);
    imagen_error *(*release)(void *state, imagen_lease *lease);

    imagen_error *(*get)(void *state, const char *id, imagen_job **out);
    imagen_error *(*list)(void *state, const char *op, int state_filter, size_t limit, imagen_job ***jobs, size_t *n);
    imagen_error *(*requeue)(void *state, const char *id);
    imagen_error *(*requeue_dead)(void *state, const char *op, size_t *n);
    imagen_error *(*counts)(void *state, imagen_queue_counts **counts, size_t *n);
} imagen_queue_driver;

extern const imagen_queue_driver imagen_queue_driver_sqlite;
extern const imagen_queue_driver imagen_queue_driver_redis;

#endif /* IMAGEN_QUEUE_DRIVER_H */
