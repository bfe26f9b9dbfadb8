/*
 * A protobuf wire-format scanner for one level of a serialized message:
 * finds the occurrences of one length-delimited field (ModelInferRequest's
 * raw_input_contents) so that they can be used in place, and the byte
 * ranges of every other field, which are then unpacked by protobuf-c.
 * Nothing is copied. Not part of any public API.
 */
#ifndef IMAGEN_GRPC_WIRE_H
#define IMAGEN_GRPC_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* A byte range of the scanned buffer. */
typedef struct imagen__grpc_span {
    size_t offset; /* from the start of the buffer */
    size_t len;    /* bytes */
} imagen__grpc_span;

typedef struct imagen__grpc_wire_scan {
    imagen__grpc_span *found; /* payloads of the wanted field, in order (tag and length excluded) */
    size_t n_found;
    imagen__grpc_span *rest; /* whole encodings (tag included) of every other field; adjacent ones merged */
    size_t n_rest;
} imagen__grpc_wire_scan;

/* Why a scan failed. */
typedef enum {
    IMAGEN_GRPC_WIRE_OK = 0,
    IMAGEN_GRPC_WIRE_MALFORMED = 1, /* truncated, bad varint or tag, groups, or the field not length-delimited */
    IMAGEN_GRPC_WIRE_NOMEM = 2
} imagen__grpc_wire_result;

/* Scans buf[0, len) for the top-level occurrences of `field` (which must be
 * a length-delimited field: bytes, string or message). On success *out
 * holds owned arrays (release with imagen__grpc_wire_scan_free); on failure
 * *out is empty. Groups (wire types 3 and 4) are rejected, as protobuf-c
 * does. */
imagen__grpc_wire_result imagen__grpc_wire_scan_message(const uint8_t *buf, size_t len, uint32_t field,
                                                        imagen__grpc_wire_scan *out);
void imagen__grpc_wire_scan_free(imagen__grpc_wire_scan *scan);

#endif /* IMAGEN_GRPC_WIRE_H */
