/*
 * Where job inputs come from and results go: the worker's storage layer.
 *
 *   fetch   inline bytes from the spec (borrowed, no copy), an absolute file
 *           path, or an http(s) URL (libcurl GET)
 *   write   an absolute file path (temp file in the same directory, fsync,
 *           rename over the target, fsync of the directory: the result is
 *           durable before the job is acked and a reader never sees half a
 *           file), or an http(s) URL (libcurl PUT with the result's
 *           Content-Type: how S3/GCS signed upload URLs are used)
 *
 * Errors are classified for the job loop by their code:
 *   NOT_FOUND, INVALID_ARG, UNSUPPORTED  permanent: a missing file, an HTTP
 *                                        4xx, an input over the size limit;
 *                                        the job fails with this message
 *   UNAVAILABLE                          transient: connection refused or
 *                                        reset, a timeout, an HTTP 5xx
 *   INTERNAL                             transient: a local I/O error
 *                                        (disk full, permissions)
 * UNAVAILABLE here is about the storage endpoint, never the inference
 * server: the job loop retries it with backoff like any transient error.
 *
 * Thread-safety: every function may be called from several threads at once
 * once imagen_storage_global_init() has returned.
 */
#ifndef IMAGEN_WORKER_STORAGE_H
#define IMAGEN_WORKER_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"
#include "worker/job_spec.h"

/* The largest input a worker fetches. The pipeline refuses images beyond
 * its pixel limits anyway; this bounds the memory a hostile or mistaken
 * input can take before decoding starts. */
#define IMAGEN_STORAGE_INPUT_MAX ((size_t)256 << 20)

/* Time limits of one HTTP transfer. */
#define IMAGEN_STORAGE_CONNECT_TIMEOUT_MS 10000
#define IMAGEN_STORAGE_TRANSFER_TIMEOUT_MS 120000

/* Initialises libcurl once for the process. Idempotent and thread-safe on
 * our side; the first URL input or output calls it. Whether it may run
 * while other threads are up depends on the libcurl: 7.84 and later built
 * with a thread-safe global init say so (imagen_storage_lazy_init_ok());
 * with an older one, call this before starting threads. Left to the first
 * URL job, a worker that reads files and writes to directories never sets
 * up libcurl's TLS stack, which is 2.2 MiB of its idle resident size. */
void imagen_storage_global_init(void);
bool imagen_storage_lazy_init_ok(void);

/* Fetched input bytes. `data` points either into the spec (inline input,
 * borrowed) or to `owned`; imagen_storage_blob_free() frees `owned` only. */
typedef struct imagen_storage_blob {
    const unsigned char *data;
    size_t size;
    unsigned char *owned;
} imagen_storage_blob;

void imagen_storage_blob_free(imagen_storage_blob *blob);

/* Fetches the job's input (inline, file or URL). On success *out is filled
 * and must be freed with imagen_storage_blob_free(). */
imagen_error *imagen_storage_fetch(const imagen_job_spec *spec, imagen_storage_blob *out);

/* Reads a whole regular file of at most `max` bytes. *data is owned
 * (free()); an empty file gives a non-NULL *data and *size 0. */
imagen_error *imagen_storage_read_file(const char *path, size_t max, unsigned char **data, size_t *size);

/* GETs `url`; the body (at most `max` bytes) is owned by the caller. */
imagen_error *imagen_storage_http_get(const char *url, size_t max, unsigned char **data, size_t *size);

/* Writes `data` to `path` atomically and durably (see above). The
 * directory is created (with its parents) when missing. */
imagen_error *imagen_storage_write_file(const char *path, const void *data, size_t size);

/* mkdir -p: creates `dir` and any missing parents (mode 0755); an existing
 * directory is fine, an existing non-directory is INVALID_ARG. */
imagen_error *imagen_storage_make_dirs(const char *dir);

/* PUTs `data` to `url` with `content_type` (NULL = application/octet-stream). */
imagen_error *imagen_storage_http_put(const char *url, const void *data, size_t size, const char *content_type);

/* Writes a job result to `location`: a URL is PUT, anything else is an
 * absolute file path written with imagen_storage_write_file(). */
imagen_error *imagen_storage_write(const char *location, const void *data, size_t size, const char *content_type);

#endif /* IMAGEN_WORKER_STORAGE_H */
