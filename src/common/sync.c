/*
 * Condition variables on the monotonic clock, so that deadlines do not jump
 * when the wall clock is set.
 */
#include "common/sync.h"

#include <errno.h>

#include "common/time.h"

int
imagen_cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

int
imagen_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mu, uint64_t deadline_ns)
{
    struct timespec ts = imagen_time_deadline_ts(deadline_ns);
    int rc = pthread_cond_timedwait(cond, mu, &ts);
    return rc == ETIMEDOUT ? ETIMEDOUT : 0;
}
