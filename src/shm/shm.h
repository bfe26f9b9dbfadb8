/*
 * The system shared-memory registry (spec §1.13, §2.2): clients register
 * POSIX shared-memory objects under a region name, and inference requests of
 * either frontend then name a region (plus offset and byte size) instead of
 * carrying tensor bytes. Input tensors point straight into the mapping, so a
 * registered region is a zero-copy path for large images.
 *
 * Threads: every function is thread-safe. One registry is shared by the HTTP
 * and gRPC frontends, so both see the same region names.
 *
 * Lifetimes: the registry holds one reference on each region's mapping and
 * every imagen_shm_acquire() takes another. Unregistering removes the name
 * at once, but the mapping stays until the last reference is released, so a
 * request still using a region when it is unregistered completes safely.
 */
#ifndef IMAGEN_SHM_H
#define IMAGEN_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"

/* ---- limits (shm) ---- */
#define IMAGEN_SHM_MAX_REGIONS_COUNT 4096 /* registered regions; bounds the registry's memory */
#define IMAGEN_SHM_MAX_NAME_BYTES 1024    /* region names and keys; NAME_MAX-sized keys fit easily */

typedef struct imagen_shm imagen_shm;         /* the registry */
typedef struct imagen_shm_ref imagen_shm_ref; /* one reference on a mapping */

/* One region as the status replies show it. Strings are owned by the array
 * returned from imagen_shm_status(). */
typedef struct imagen_shm_region_status {
    char *name;
    char *key;          /* the POSIX shm object name given to shm_open() */
    uint64_t offset;    /* into the object, bytes */
    uint64_t byte_size; /* bytes mapped from offset */
} imagen_shm_region_status;

/* ---- registry (shm.c) ---- */

/* Creates an empty registry. *out is owned; free with imagen_shm_destroy(). */
imagen_error *imagen_shm_create(imagen_shm **out);

/* Unregisters every region and frees the registry. Mappings still referenced
 * by imagen_shm_ref objects stay valid until those are released (the refs
 * outlive the registry safely). Accepts NULL. */
void imagen_shm_destroy(imagen_shm *shm);

/* Opens the POSIX shm object `key` (O_RDWR), checks that it is at least
 * offset + byte_size bytes long, maps [offset, offset + byte_size) and
 * registers it as `name`. Strings are copied. Errors: ALREADY_EXISTS when
 * `name` is taken ("shared memory region '<n>' already in manager");
 * INVALID_ARG for an empty or over-long name or key, byte_size 0, an
 * overflowing offset + byte_size, or an object too small; INTERNAL when the
 * object cannot be opened or mapped; UNAVAILABLE when the registry is full.
 * On error nothing changed. */
imagen_error *imagen_shm_register(imagen_shm *shm, const char *name, const char *key, uint64_t offset,
                                  uint64_t byte_size);

/* Removes region `name`, or every region when name is NULL. An unknown name
 * is not an error (as in Triton). Mappings in use stay until released. */
imagen_error *imagen_shm_unregister(imagen_shm *shm, const char *name);

/* Snapshots one region (`name`) or every region (name NULL), in registration
 * order. *out is owned; free with imagen_shm_status_free() (NULL when *n is
 * 0). Errors: NOT_FOUND "Unable to find system shared memory region: '<n>'". */
imagen_error *imagen_shm_status(imagen_shm *shm, const char *name, imagen_shm_region_status **out, size_t *n);
void imagen_shm_status_free(imagen_shm_region_status *regions, size_t n);

/* Resolves [offset, offset + byte_size) of region `name` to an address and
 * takes a reference that keeps the mapping alive. *addr stays valid until
 * imagen_shm_release(*ref); the bytes may be read and written (other
 * processes share them). Errors: NOT_FOUND "Unable to find shared memory
 * region: '<n>'"; INVALID_ARG when the range does not lie inside the region
 * (checked without overflow). */
imagen_error *imagen_shm_acquire(imagen_shm *shm, const char *name, uint64_t offset, uint64_t byte_size, void **addr,
                                 imagen_shm_ref **ref);

/* Drops a reference from imagen_shm_acquire(); the last one unmaps the
 * region. Any thread; accepts NULL. */
void imagen_shm_release(imagen_shm_ref *ref);

#endif /* IMAGEN_SHM_H */
