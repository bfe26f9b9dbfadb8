/*
 * The copy counters of copy_stats.h: relaxed atomics, since they are only
 * ever summed and read as totals (no ordering with anything else matters).
 */
#include "common/copy_stats.h"

#include <stdatomic.h>

static _Atomic uint64_t copied_bytes[IMAGEN_COPY_PROTOCOL_COUNT][IMAGEN_COPY_DIRECTION_COUNT];
static _Atomic uint64_t decoded_requests[IMAGEN_COPY_PROTOCOL_COUNT];

void
imagen_copy_stats_add(imagen_copy_protocol protocol, imagen_copy_direction direction, size_t bytes)
{
    atomic_fetch_add_explicit(&copied_bytes[protocol][direction], (uint64_t)bytes, memory_order_relaxed);
}

void
imagen_copy_stats_request(imagen_copy_protocol protocol)
{
    atomic_fetch_add_explicit(&decoded_requests[protocol], 1, memory_order_relaxed);
}

uint64_t
imagen_copy_stats_bytes(imagen_copy_protocol protocol, imagen_copy_direction direction)
{
    return atomic_load_explicit(&copied_bytes[protocol][direction], memory_order_relaxed);
}

uint64_t
imagen_copy_stats_requests(imagen_copy_protocol protocol)
{
    return atomic_load_explicit(&decoded_requests[protocol], memory_order_relaxed);
}

const char *
imagen_copy_protocol_name(imagen_copy_protocol protocol)
{
    return protocol == IMAGEN_COPY_GRPC ? "grpc" : "http";
}
