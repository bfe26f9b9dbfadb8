/*
 * Decoding and encoding with libvips for the pipeline: any image vips can
 * load from memory becomes 8-bit sRGB RGB pixels with the alpha channel
 * kept apart; results are encoded as PNG, JPEG or WebP.
 *
 * imagen_codec_init() must have run once in the process before any other
 * call (imagen_pipeline_create does it). After that the functions are
 * thread-safe: each call works on its own vips images.
 */
#ifndef IMAGEN_WORKER_IMAGE_CODEC_H
#define IMAGEN_WORKER_IMAGE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"

/* A decoded image: rgb is width × height × 3 bytes, alpha width × height
 * bytes or NULL (both owned, free()). */
typedef struct imagen_image {
    int width, height;
    uint8_t *rgb;
    uint8_t *alpha;
    const char *format; /* what it was: "jpg", "png", "webp"; NULL for any other (static) */
} imagen_image;

/* Starts libvips once per process (thread-safe, idempotent): the operation
 * cache is turned off (every job's images are new, a cache would only hold
 * memory) and, unless VIPS_CONCURRENCY is set, vips runs each pipeline on
 * the calling thread (the worker's own threads are the parallelism). */
imagen_error *imagen_codec_init(void);

/* Reads the header only: the size the image will have once decoded (EXIF
 * orientation applied) and its format. INVALID_ARG "cannot decode input:
 * ..." when vips does not recognise it. */
imagen_error *imagen_image_probe(const void *data, size_t size, int *width, int *height, const char **format);

/* Decodes fully: orientation applied, sRGB, 8 bits, grey made RGB, alpha
 * split off. Truncated or corrupt data is an error (INVALID_ARG "cannot
 * decode input: ..."), never grey fill. */
imagen_error *imagen_image_decode(const void *data, size_t size, imagen_image *image);

/* imagen_image_decode() into the caller's buffer: rgb (width × height × 3
 * bytes, borrowed) receives the pixels, so that they can be decoded
 * straight into a request's tensor or a shared-memory region. width and
 * height are what imagen_image_probe() gave; an image that decodes to
 * another size is INVALID_ARG. On success image->rgb is NULL (the pixels
 * are the caller's) and image->alpha as for imagen_image_decode(); on
 * failure rgb holds anything. */
imagen_error *imagen_image_decode_into(const void *data, size_t size, uint8_t *rgb, int width, int height,
                                       imagen_image *image);

/* Frees the members; accepts a zeroed image. */
void imagen_image_clear(imagen_image *image);

/* Resizes a single-channel plane to exactly out_width × out_height
 * (bicubic). *out is owned (free()). */
imagen_error *imagen_plane_resize(const uint8_t *plane, int width, int height, int out_width, int out_height,
                                  uint8_t **out);

/* Encodes width × height pixels of `channels` (3 or 4) interleaved sRGB
 * bytes as `format` ("png", "jpg"/"jpeg", "webp"); quality 1..100 for JPEG
 * and WebP (0 = 90). *data is owned (free()). */
imagen_error *imagen_image_encode(const uint8_t *pixels, int width, int height, int channels, const char *format,
                                  int quality, unsigned char **data, size_t *size);

#endif /* IMAGEN_WORKER_IMAGE_CODEC_H */
