/*
 * Counters of tensor payload bytes the inference frontends copy, per
 * protocol and direction, and of the inference requests they decoded. They
 * make the "no more than one gather copy per direction" claim measurable:
 * bench/grpc.sh reads them from the metrics endpoint
 * (imagen_tensor_copy_bytes_total, imagen_tensor_copy_requests_total) before
 * and after a run and divides. Process-wide, lock-free, any thread.
 */
#ifndef IMAGEN_COMMON_COPY_STATS_H
#define IMAGEN_COMMON_COPY_STATS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { IMAGEN_COPY_GRPC = 0, IMAGEN_COPY_HTTP = 1, IMAGEN_COPY_PROTOCOL_COUNT } imagen_copy_protocol;

typedef enum {
    IMAGEN_COPY_INPUT = 0,  /* request bytes: gathers, body accumulation, conversions */
    IMAGEN_COPY_OUTPUT = 1, /* response bytes: serialization, shared-memory outputs */
    IMAGEN_COPY_DIRECTION_COUNT
} imagen_copy_direction;

/* Adds `bytes` copied by `protocol` in `direction`. */
void imagen_copy_stats_add(imagen_copy_protocol protocol, imagen_copy_direction direction, size_t bytes);
/* Counts one decoded inference request of `protocol`. */
void imagen_copy_stats_request(imagen_copy_protocol protocol);

uint64_t imagen_copy_stats_bytes(imagen_copy_protocol protocol, imagen_copy_direction direction);
uint64_t imagen_copy_stats_requests(imagen_copy_protocol protocol);
/* "grpc" or "http", the metrics label. */
const char *imagen_copy_protocol_name(imagen_copy_protocol protocol);

#endif
