/*
 * Clock helpers.
 */
#include "common/time.h"

uint64_t
imagen_time_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
imagen_time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct timespec
imagen_time_deadline_ts(uint64_t abs_monotonic_ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(abs_monotonic_ns / 1000000000u);
    ts.tv_nsec = (long)(abs_monotonic_ns % 1000000000u);
    return ts;
}
