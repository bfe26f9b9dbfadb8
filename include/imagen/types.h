/*
 * imagen — tensor data types and limits shared by the server, its frontends
 * and its backends.
 *
 * Data type numbers equal Triton's TYPE_* enum (spec §1.12, §3.1), so they can
 * go on the wire and into config files unchanged.
 */
#ifndef IMAGEN_TYPES_H
#define IMAGEN_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest tensor rank accepted anywhere (requests, configs, backends). Triton
 * has no documented cap; 16 covers every image and NLP model we know, and a
 * small fixed cap lets shapes live in fixed arrays. */
#define IMAGEN_MAX_RANK 16

/* X(enum suffix, number, protocol name, element byte size; 0 = variable) */
#define IMAGEN_DATATYPES(X)     \
    X(INVALID, 0, "INVALID", 0) \
    X(BOOL, 1, "BOOL", 1)       \
    X(UINT8, 2, "UINT8", 1)     \
    X(UINT16, 3, "UINT16", 2)   \
    X(UINT32, 4, "UINT32", 4)   \
    X(UINT64, 5, "UINT64", 8)   \
    X(INT8, 6, "INT8", 1)       \
    X(INT16, 7, "INT16", 2)     \
    X(INT32, 8, "INT32", 4)     \
    X(INT64, 9, "INT64", 8)     \
    X(FP16, 10, "FP16", 2)      \
    X(FP32, 11, "FP32", 4)      \
    X(FP64, 12, "FP64", 8)      \
    X(BYTES, 13, "BYTES", 0)    \
    X(BF16, 14, "BF16", 2)

typedef enum imagen_datatype {
#define IMAGEN_DATATYPE_ENUM_(sfx, num, name, size) IMAGEN_TYPE_##sfx = num,
    IMAGEN_DATATYPES(IMAGEN_DATATYPE_ENUM_)
#undef IMAGEN_DATATYPE_ENUM_
} imagen_datatype;

#define IMAGEN_DATATYPE_COUNT 15

/* Protocol name ("FP32", "BYTES"); "INVALID" for unknown values. Static. */
const char *imagen_datatype_name(imagen_datatype dt);
/* Config enum name ("TYPE_FP32", "TYPE_STRING" for BYTES). Static. */
const char *imagen_datatype_config_name(imagen_datatype dt);
/* Parses a protocol name (exact case); IMAGEN_TYPE_INVALID if unknown. */
imagen_datatype imagen_datatype_from_name(const char *name, size_t len);
/* Bytes per element; 0 for BYTES (variable) and INVALID. */
size_t imagen_datatype_size(imagen_datatype dt);

/* Element count of a shape. Returns false when a dimension is negative or
 * the product overflows `limit`. */
bool imagen_shape_element_count(const int64_t *shape, size_t rank, uint64_t limit, uint64_t *out);

/* A tensor as the core hands it to backends and frontends: all pointers are
 * borrowed from the request or response that owns the tensor. */
typedef struct imagen_tensor {
    const char *name;
    imagen_datatype datatype;
    const int64_t *shape;
    size_t rank;
    const void *data; /* contiguous, row-major, little-endian; BYTES elements
                         are [u32 length][bytes] */
    size_t byte_size;
} imagen_tensor;

#ifdef __cplusplus
}
#endif
#endif /* IMAGEN_TYPES_H */
