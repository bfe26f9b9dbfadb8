/*
 * Small threading helpers: condition variables on CLOCK_MONOTONIC and
 * assertion helpers for lock ownership.
 */
#ifndef IMAGEN_COMMON_SYNC_H
#define IMAGEN_COMMON_SYNC_H

#include <pthread.h>
#include <stdint.h>

/* Initialises `cond` to time out against CLOCK_MONOTONIC. */
int imagen_cond_init_monotonic(pthread_cond_t *cond);
/* Waits until signalled or until the absolute monotonic time `deadline_ns`.
 * Returns 0 or ETIMEDOUT. */
int imagen_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mu, uint64_t deadline_ns);

/* Invariant helpers in the SQLite manner: ALWAYS/NEVER wrap defensive checks
 * believed impossible; in debug builds they assert. */
#ifdef NDEBUG
#define IMAGEN_ALWAYS(x) (x)
#define IMAGEN_NEVER(x) (x)
#else
#include <assert.h>
#define IMAGEN_ALWAYS(x) ((x) ? 1 : (assert(0), 0))
#define IMAGEN_NEVER(x) ((x) ? (assert(0), 1) : 0)
#endif

#endif
