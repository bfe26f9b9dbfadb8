/*
 * The shell shared by the five image operations (see image_op.h): config
 * checks at load, request checks per request, output allocation, and one
 * process() call per image of the batch. Keeping every check here means an
 * operation's file holds only its image processing, and every operation
 * rejects bad input with the same words.
 */
#include "backends/imageops/image_op.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_SIDE 16384
#define DEFAULT_MAX_MEGAPIXELS 100
#define LIMIT_MAX_SIDE (1u << 20)
#define LIMIT_MAX_MEGAPIXELS 10000

typedef struct image_op_state {
    const imagen__image_op_desc *desc;
    char *model;          /* owned */
    bool batched;         /* max_batch_size > 0: tensors carry a batch dim */
    bool has_mask_output; /* the config declares MASK */
    uint64_t max_side, max_pixels;
} image_op_state;

/* Checks a config image tensor: UINT8, rank 3, last dim `channels`. */
static imagen_error *
check_image_tensor(const char *model, const imagen_tensor_config *t, bool is_output, size_t channels)
{
    char want[64];
    snprintf(want, sizeof(want), "TYPE_UINT8 with dims [-1, -1, %zu]", channels);
    if (t->datatype != IMAGEN_TYPE_UINT8 || t->rank != 3 || t->dims[2] != (int64_t)channels)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "imageops model '%s': %s '%s' must be %s", model,
                                is_output ? "output" : "input", t->name, want);
    return NULL;
}

void
imagen__image_op_fini(void *state)
{
    image_op_state *s = state;
    if (s == NULL)
        return;
    free(s->model);
    free(s);
}

imagen_error *
imagen__image_op_init(const imagen__image_op_desc *desc, imagen_backend_model *model, void **state)
{
    const char *name = imagen_backend_model_name(model);
    const imagen_model_config *cfg = imagen_backend_model_config(model);
    const imagen_tensor_config *in = imagen_model_config_input(cfg, "IMAGE");
    const imagen_tensor_config *out = imagen_model_config_output(cfg, "IMAGE");
    const imagen_tensor_config *mask = imagen_model_config_output(cfg, "MASK");
    if (in == NULL || out == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "imageops model '%s': operation '%s' needs an input and an output named 'IMAGE'", name,
                                desc->operation);
    IMAGEN_RETURN_IF_ERROR(check_image_tensor(name, in, false, 3));
    IMAGEN_RETURN_IF_ERROR(check_image_tensor(name, out, true, desc->out_channels));
    if (mask != NULL) {
        if (!desc->has_mask)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "imageops model '%s': operation '%s' has no output 'MASK'",
                                    name, desc->operation);
        IMAGEN_RETURN_IF_ERROR(check_image_tensor(name, mask, true, 1));
    }
    for (size_t i = 0; i < cfg->n_outputs; i++) {
        const char *o = cfg->outputs[i].name;
        if (strcmp(o, "IMAGE") != 0 && strcmp(o, "MASK") != 0)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "imageops model '%s': unknown output '%s' (%s)", name, o,
                                    desc->has_mask ? "outputs are IMAGE and MASK" : "the output is IMAGE");
    }
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        const imagen_tensor_config *t = &cfg->inputs[i];
        if (t == in)
            continue;
        const imagen__image_control *c = NULL;
        for (size_t k = 0; k < desc->n_controls; k++)
            if (strcmp(desc->controls[k].name, t->name) == 0)
                c = &desc->controls[k];
        if (c == NULL) {
            char names[128] = "";
            size_t off = 0;
            for (size_t k = 0; k < desc->n_controls && off < sizeof(names); k++)
                off +=
                    (size_t)snprintf(names + off, sizeof(names) - off, "%s%s", k ? ", " : "", desc->controls[k].name);
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "imageops model '%s': operation '%s' has no input '%s' (inputs: IMAGE%s%s)", name,
                                    desc->operation, t->name, desc->n_controls ? ", " : "", names);
        }
        if (t->datatype != c->datatype || t->rank != 1 || t->dims[0] != 1)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "imageops model '%s': input '%s' must be %s with dims [1]",
                                    name, t->name, imagen_datatype_config_name(c->datatype));
    }
    image_op_state *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->model = strdup(name)) == NULL) {
        free(s);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory", name);
    }
    s->desc = desc;
    s->batched = cfg->max_batch_size > 0;
    s->has_mask_output = mask != NULL;
    uint64_t mp = 0;
    imagen_error *err = imagen__imageops_param_u64(model, "max_side", DEFAULT_MAX_SIDE, LIMIT_MAX_SIDE, &s->max_side);
    if (err == NULL)
        err = imagen__imageops_param_u64(model, "max_megapixels", DEFAULT_MAX_MEGAPIXELS, LIMIT_MAX_MEGAPIXELS, &mp);
    if (err == NULL && (s->max_side < 2 || mp == 0))
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                               "imageops model '%s': max_side must be at least 2 and max_megapixels at least 1", name);
    if (err != NULL) {
        imagen__image_op_fini(s);
        return err;
    }
    s->max_pixels = mp * 1000000u;
    *state = s;
    return NULL;
}

/* ---------------------------------------------------------------------
 * Execute
 * ------------------------------------------------------------------- */

static imagen_error *request_error(const image_op_state *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static imagen_error *
request_error(const image_op_state *s, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "imageops model '%s': %s", s->model, msg);
}

/* Reads control `c` for the `images` images of a request into *value:
 * the default when absent, else its one value (every image must agree). */
static imagen_error *
read_control(const image_op_state *s, imagen_request *req, const imagen__image_control *c, uint64_t images,
             double *value)
{
    const imagen_tensor *t = imagen_backend_request_input_by_name(req, c->name);
    *value = c->def;
    if (t == NULL)
        return NULL;
    if (t->datatype != c->datatype)
        return request_error(s, "input '%s' must be %s, got %s", c->name, imagen_datatype_name(c->datatype),
                             imagen_datatype_name(t->datatype));
    size_t width = imagen_datatype_size(c->datatype);
    if (t->byte_size != images * width)
        return request_error(s, "input '%s' must hold one value per image (%" PRIu64 "), got %zu bytes", c->name,
                             images, t->byte_size);
    const unsigned char *p = t->data;
    for (uint64_t i = 0; i < images; i++) {
        double v;
        if (c->datatype == IMAGEN_TYPE_INT32) {
            int32_t x;
            memcpy(&x, p + i * 4, 4);
            v = x;
        } else if (c->datatype == IMAGEN_TYPE_INT64) {
            int64_t x;
            memcpy(&x, p + i * 8, 8);
            v = (double)x;
        } else {
            float x;
            memcpy(&x, p + i * 4, 4);
            v = x;
        }
        if (!(v >= c->min && v <= c->max)) {
            if (c->datatype == IMAGEN_TYPE_FP32)
                return request_error(s, "input '%s' must be from %g to %g, got %g", c->name, c->min, c->max, v);
            return request_error(s, "input '%s' must be from %.0f to %.0f, got %.0f", c->name, c->min, c->max, v);
        }
        if (i > 0 && v != *value)
            return request_error(s,
                                 "input '%s' must have the same value for every image of one request "
                                 "(%g and %g); send images with different values as separate requests",
                                 c->name, *value, v);
        *value = v;
    }
    return NULL;
}

static imagen_error *
check_size(const image_op_state *s, const char *what, size_t width, size_t height)
{
    if (width > s->max_side || height > s->max_side || (uint64_t)width * height > s->max_pixels)
        return request_error(s,
                             "%s is %zux%zu pixels, above the limit of %" PRIu64 " per side and %" PRIu64
                             " megapixels (parameters max_side, max_megapixels)",
                             what, width, height, s->max_side, s->max_pixels / 1000000u);
    return NULL;
}

static void
execute_request(const image_op_state *s, imagen__pool *pool, imagen_request *req)
{
    const imagen__image_op_desc *d = s->desc;
    const imagen_tensor *in = imagen_backend_request_input_by_name(req, "IMAGE");
    imagen_error *err = NULL;
    size_t lead = s->batched ? 1 : 0;
    char shape[96];
    if (in == NULL) {
        imagen_backend_request_fail(req, request_error(s, "input 'IMAGE' is missing"));
        return;
    }
    if (in->datatype != IMAGEN_TYPE_UINT8) {
        imagen_backend_request_fail(
            req, request_error(s, "input 'IMAGE' must be UINT8, got %s", imagen_datatype_name(in->datatype)));
        return;
    }
    if (in->rank != 3 + lead || in->shape[lead + 2] != 3) {
        imagen_backend_request_fail(
            req, request_error(s, "input 'IMAGE' must have shape %s[height, width, 3] (RGB), got %s",
                               s->batched ? "[batch] + " : "",
                               imagen__imageops_shape_str(in->shape, in->rank, shape, sizeof(shape))));
        return;
    }
    uint64_t images = s->batched ? (uint64_t)in->shape[0] : 1;
    int64_t h = in->shape[lead], w = in->shape[lead + 1];
    if (h < 2 || w < 2) {
        imagen_backend_request_fail(
            req,
            request_error(s, "input 'IMAGE' is %" PRId64 "x%" PRId64 " pixels; both sides must be at least 2", w, h));
        return;
    }
    if ((err = check_size(s, "input 'IMAGE'", (size_t)w, (size_t)h)) != NULL) {
        imagen_backend_request_fail(req, err);
        return;
    }
    size_t width = (size_t)w, height = (size_t)h, in_bytes = width * height * 3;
    if (in->byte_size != images * in_bytes) {
        imagen_backend_request_fail(req, request_error(s, "input 'IMAGE' has %zu bytes, its shape needs %" PRIu64,
                                                       in->byte_size, images * in_bytes));
        return;
    }
    if (images == 0) {
        imagen_backend_request_fail(req, request_error(s, "input 'IMAGE' holds no image (batch size 0)"));
        return;
    }

    imagen__image_task task = {
        .model = s->model, .width = width, .height = height, .pool = pool, .out_channels = d->out_channels};
    for (size_t k = 0; k < d->n_controls; k++)
        if ((err = read_control(s, req, &d->controls[k], images, &task.controls[k])) != NULL) {
            imagen_backend_request_fail(req, err);
            return;
        }
    task.out_width = width;
    task.out_height = height;
    if (d->output_size != NULL)
        d->output_size(task.controls, width, height, &task.out_width, &task.out_height);
    if ((err = check_size(s, "output 'IMAGE'", task.out_width, task.out_height)) != NULL) {
        imagen_backend_request_fail(req, err);
        return;
    }

    size_t out_pixels = task.out_width * task.out_height;
    int64_t out_shape[4];
    out_shape[0] = (int64_t)images;
    out_shape[lead] = (int64_t)task.out_height;
    out_shape[lead + 1] = (int64_t)task.out_width;
    out_shape[lead + 2] = (int64_t)d->out_channels;
    void *out = NULL, *mask = NULL;
    err = imagen_backend_output_alloc(req, "IMAGE", IMAGEN_TYPE_UINT8, out_shape, 3 + lead,
                                      images * out_pixels * d->out_channels, &out);
    if (err == NULL && s->has_mask_output && imagen_backend_request_output_requested(req, "MASK")) {
        out_shape[lead + 2] = 1;
        err = imagen_backend_output_alloc(req, "MASK", IMAGEN_TYPE_UINT8, out_shape, 3 + lead, images * out_pixels,
                                          &mask);
    }
    for (uint64_t i = 0; err == NULL && i < images; i++) {
        task.in = (const uint8_t *)in->data + i * in_bytes;
        task.out = (uint8_t *)out + i * out_pixels * d->out_channels;
        task.mask = mask ? (uint8_t *)mask + i * out_pixels : NULL;
        err = d->process(&task);
    }
    if (err != NULL)
        imagen_backend_request_fail(req, err);
}

void
imagen__image_op_execute(void *state, imagen__pool *pool, imagen_request **requests, size_t n)
{
    const image_op_state *s = state;
    for (size_t i = 0; i < n; i++)
        execute_request(s, pool, requests[i]);
}
