/*
 * The image side of a job: input bytes in, encoded result bytes out.
 *
 *   decode (libvips: EXIF orientation, sRGB, 8 bits, alpha kept apart)
 *   → the operation's pre-processing (tiles for upscale; the others send
 *     the whole image, refused when it is beyond the model's max_side or
 *     max_megapixels) → ModelInfer over gRPC (batched tiles, system shared
 *     memory when the server allows it) → post-processing (stitch, alpha
 *     back) → encode (the job's format, else the input's, PNG when there
 *     is alpha).
 *
 * The job loop (worker.c) does everything around it: queue, fetching the
 * input, writing the output, status, retries. A pipeline context belongs to
 * one worker thread; it is not thread-safe, and one per thread lets each
 * thread keep its own shared-memory region.
 *
 * Errors keep their meaning for the job loop's classification:
 *   INVALID_ARG, UNSUPPORTED  the job can never succeed (corrupt or
 *                             truncated image, too large, bad parameter,
 *                             the server refused the request): fail it
 *   UNAVAILABLE               the server could not be reached or did not
 *                             answer in time: hold the job and try again
 *   anything else             transient: retry with backoff
 */
#ifndef IMAGEN_WORKER_PIPELINE_H
#define IMAGEN_WORKER_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>

#include "imagen/client.h"
#include "imagen/error.h"
#include "worker/job_spec.h"

/* Milliseconds spent in each stage of one job. The pipeline fills decode
 * to encode; the job loop fills fetch and write. */
typedef struct imagen_stage_times {
    double fetch_ms;
    double decode_ms;
    double pre_ms;
    double infer_ms;
    double post_ms;
    double encode_ms;
    double write_ms;
} imagen_stage_times;

/* The encoded result. data is owned (free()). */
typedef struct imagen_job_result {
    unsigned char *data;
    size_t size;
    const char *ext;          /* "png", "jpg", "webp" (static) */
    const char *content_type; /* "image/png", ... (static) */
    int width, height, channels;
} imagen_job_result;

typedef struct imagen_pipeline imagen_pipeline;

typedef struct imagen_pipeline_options {
    imagen_client *client; /* borrowed; gRPC to the server */
    int tile_size;         /* upscale tile side in input pixels; 0 = 256 */
    int tile_overlap;      /* pixels of context on each side; 0 = 16 */
    int use_shm;           /* -1 auto (try, fall back), 0 never, 1 always (error if refused) */
} imagen_pipeline_options;

/* Creates a per-thread context. Cheap: the server is first contacted by the
 * first job (model configs are cached on first use of each model). */
imagen_error *imagen_pipeline_create(const imagen_pipeline_options *options, imagen_pipeline **out);
/* Unregisters and frees the context's shared-memory region. Accepts NULL. */
void imagen_pipeline_destroy(imagen_pipeline *pipeline);

/* Runs one job's image work on `input` (the fetched bytes). On success
 * *result is filled (caller frees result->data). times may be NULL. */
imagen_error *imagen_pipeline_process(imagen_pipeline *pipeline, const imagen_job_spec *spec,
                                      const unsigned char *input, size_t input_size, imagen_job_result *result,
                                      imagen_stage_times *times);

/* True when the last job used system shared memory (for logs and tests). */
bool imagen_pipeline_used_shm(const imagen_pipeline *pipeline);

#endif /* IMAGEN_WORKER_PIPELINE_H */
