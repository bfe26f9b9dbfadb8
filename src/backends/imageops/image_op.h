/*
 * The shared shell of the five image operations (upscale, enhance,
 * background_remove, style_comic, style_aged). An operation describes
 * itself with an imagen__image_op_desc: its optional control inputs, its
 * output layout and a function that processes one image. This file's
 * init/execute do everything else the same way for all of them:
 *
 *   - config checks at load: input IMAGE is TYPE_UINT8 dims [-1,-1,3],
 *     output IMAGE is TYPE_UINT8 [-1,-1,out_channels], MASK (when the op has
 *     one) TYPE_UINT8 [-1,-1,1]; every control the config declares is an
 *     optional input with the control's data type and dims [1];
 *   - per-request checks, each a 400 (INVALID_ARG) naming the input: image
 *     rank and channels, sides of at least 2 pixels, at most `max_side`
 *     pixels per side and `max_megapixels` in all (config parameters,
 *     default 16384 and 100; they bound the output as well as the input),
 *     control values inside their range and equal for every image of one
 *     request (the images of one request share one output shape);
 *   - outputs allocated once per request, then process() called per image
 *     with the instance's thread pool.
 *
 * Images are handed to process() as tightly packed row-major UINT8 HWC.
 * Input bytes may be unaligned (they point into the frontend's buffer).
 */
#ifndef IMAGEN_BACKENDS_IMAGEOPS_IMAGE_OP_H
#define IMAGEN_BACKENDS_IMAGEOPS_IMAGE_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/imageops/imageops.h"
#include "backends/imageops/pool.h"
#include "imagen/backend.h"

#define IMAGEN__IMAGE_MAX_CONTROLS 4

/* An optional scalar input, e.g. SCALE INT32 [1]. */
typedef struct imagen__image_control {
    const char *name;         /* input name, e.g. "STRENGTH" */
    imagen_datatype datatype; /* IMAGEN_TYPE_INT32, INT64 or FP32 */
    double def;               /* value when the request omits the input */
    double min, max;          /* inclusive range; outside → 400 naming the input */
} imagen__image_control;

/* One image to process. Everything is borrowed for the call. */
typedef struct imagen__image_task {
    const char *model;                           /* model name, for error messages */
    const uint8_t *in;                           /* RGB, height * width * 3 bytes */
    size_t width, height;                        /* >= 2 each */
    uint8_t *out;                                /* out_height * out_width * out_channels bytes */
    size_t out_width, out_height;                /* from desc->output_size (or the input size) */
    size_t out_channels;                         /* desc->out_channels */
    uint8_t *mask;                               /* out_height * out_width bytes, or NULL (no MASK) */
    double controls[IMAGEN__IMAGE_MAX_CONTROLS]; /* validated, in desc->controls order */
    imagen__pool *pool;                          /* the instance's pool; never NULL */
} imagen__image_task;

typedef struct imagen__image_op_desc {
    const char *operation; /* config parameter `operation` */
    size_t n_controls;
    imagen__image_control controls[IMAGEN__IMAGE_MAX_CONTROLS];
    size_t out_channels; /* 3 (RGB) or 4 (RGBA) */
    bool has_mask;       /* the op also writes output MASK [-1,-1,1] */
    /* Output size for an input size and control values; NULL = same size. */
    void (*output_size)(const double *controls, size_t width, size_t height, size_t *out_width, size_t *out_height);
    /* Processes one image: writes every byte of task->out (and task->mask
     * when not NULL). Deterministic: the same image and controls give the
     * same bytes whatever the pool size. Returns NULL, or an error
     * (INVALID_ARG for input it cannot handle, INTERNAL when out of memory).
     * Runs on the instance thread; may call imagen__pool_for(task->pool). */
    imagen_error *(*process)(const imagen__image_task *task);
} imagen__image_op_desc;

/* Loader thread: checks the config against `desc` (see above) and reads the
 * limits; *state is for the two functions below. */
imagen_error *imagen__image_op_init(const imagen__image_op_desc *desc, imagen_backend_model *model, void **state);
void imagen__image_op_fini(void *state);
/* Instance thread: validates and processes each request of the batch. */
void imagen__image_op_execute(void *state, imagen__pool *pool, imagen_request **requests, size_t n);

/* Defines the operation-table row `imagen__imageops_<var>_op` for a desc;
 * `name` is the same string literal as desc.operation. */
#define IMAGEN__IMAGE_OP_ROW(var, name_literal, desc)                          \
    static imagen_error *var##_init(imagen_backend_model *model, void **state) \
    {                                                                          \
        return imagen__image_op_init(&(desc), model, state);                   \
    }                                                                          \
    const imagen__imageops_op imagen__imageops_##var##_op = {                  \
        .name = name_literal, .init = var##_init, .fini = imagen__image_op_fini, .execute = imagen__image_op_execute}

#endif /* IMAGEN_BACKENDS_IMAGEOPS_IMAGE_OP_H */
