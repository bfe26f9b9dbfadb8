/*
 * Clocks. Monotonic nanoseconds for durations and deadlines, wall-clock
 * milliseconds for timestamps that leave the process (last_inference).
 */
#ifndef IMAGEN_COMMON_TIME_H
#define IMAGEN_COMMON_TIME_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in ns. */
uint64_t imagen_time_now_ns(void);
/* CLOCK_REALTIME in ms since the epoch. */
uint64_t imagen_time_wall_ms(void);
/* Absolute CLOCK_MONOTONIC timespec `ns` from now, for pthread_cond_timedwait
 * on condition variables created with imagen_cond_init_monotonic(). */
struct timespec imagen_time_deadline_ts(uint64_t abs_monotonic_ns);

#endif
