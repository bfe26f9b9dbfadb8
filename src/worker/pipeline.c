/*
 * The image side of a job (see pipeline.h): probe and check the size,
 * decode, run the operation's model (whole, or in tiles batched up to the
 * model's max_batch_size), put alpha back, encode.
 *
 * Model limits (max_batch_size, max_side, max_megapixels) are read from the
 * server's model config once per model and kept for the context's life.
 * Tensors go through a system shared-memory region when the server allows
 * it: one region per context, re-created larger when a job needs more.
 *
 * Memory: a whole-image job holds each image-sized buffer once, and only
 * while it is needed. The input is decoded straight into the request's
 * tensor (the region, or a buffer the client sends from where it is and
 * that is freed as soon as it has been written out, before the response
 * comes); the result is encoded from where it arrived (the region, or the
 * response's own buffer); a large region's pages are handed back once
 * used. So a job peaks at about one decoded and one result image.
 */
#include "worker/pipeline.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/image_codec.h"
#include "worker/operation_hooks.h"
#include "worker/tiling.h"

#define DEFAULT_TILE_SIZE 256
#define DEFAULT_TILE_OVERLAP 16
#define DEFAULT_MAX_SIDE 16384 /* the imageops backend's defaults */
#define DEFAULT_MAX_MEGAPIXELS 100
#define MAX_MODELS 16
#define MAX_CONTROLS 8
/* Images per request at most, whatever max_batch_size says: more gains
 * nothing once the server's instances are busy, and bounds the buffers. */
#define MAX_BATCH 8
/* Regions grow in steps of this, so a run of slightly larger images does
 * not re-create (and re-register) the region every job. */
#define SHM_GRANULE (4u << 20)
/* A region more than 4 times what a job needs and above this size is
 * re-created smaller, so one huge image does not pin its memory for the
 * worker's life. */
#define SHM_SHRINK_ABOVE (64u << 20)
/* Offsets of tensors inside the region: cache-line aligned. */
#define SHM_ALIGN 64
/* A tensor of the region this large or larger has its pages handed back
 * to the system as soon as it has been used (the input once the server
 * has answered, the output once encoded): a region sized for a 12 MP
 * photo would otherwise keep two whole images resident between jobs, and
 * the next job's decoding would come on top of them. Below it the pages
 * stay: refaulting them each job would cost more than they weigh. */
#define SHM_RELEASE_MIN_BYTES (8u << 20)

typedef struct model_info {
    char *name;
    int max_batch_size; /* 0: the model takes no batch dimension */
    uint64_t max_side;
    uint64_t max_megapixels;
} model_info;

struct imagen_pipeline {
    imagen_client *client;
    int tile_size, tile_overlap;
    int use_shm;       /* as asked: -1 auto, 0 never, 1 always */
    bool shm_disabled; /* auto mode found that the server refuses */
    imagen_shm_region *region;
    char region_name[96];
    unsigned region_serial;
    bool used_shm;
    model_info models[MAX_MODELS];
    size_t n_models;
};

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

imagen_error *
imagen_pipeline_create(const imagen_pipeline_options *options, imagen_pipeline **out)
{
    if (options == NULL || options->client == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "pipeline: a client is required");
    if (options->tile_size < 0 || options->tile_overlap < 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "pipeline: tile size %d and overlap %d must not be negative",
                                options->tile_size, options->tile_overlap);
    IMAGEN_RETURN_IF_ERROR(imagen_codec_init());
    imagen_pipeline *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "pipeline: out of memory");
    p->client = options->client;
    p->tile_size = options->tile_size > 0 ? options->tile_size : DEFAULT_TILE_SIZE;
    p->tile_overlap = options->tile_overlap > 0 ? options->tile_overlap : DEFAULT_TILE_OVERLAP;
    p->use_shm = options->use_shm;
    *out = p;
    return NULL;
}

/* Drops the region: unregisters it (best effort: the server may be gone,
 * and a restarted one no longer knows it) and unmaps it. */
static void
drop_region(imagen_pipeline *p)
{
    if (p->region == NULL)
        return;
    imagen_error_free(imagen_client_shm_unregister(p->client, p->region_name));
    imagen_shm_region_destroy(p->region);
    p->region = NULL;
}

void
imagen_pipeline_destroy(imagen_pipeline *pipeline)
{
    if (pipeline == NULL)
        return;
    drop_region(pipeline);
    for (size_t i = 0; i < pipeline->n_models; i++)
        free(pipeline->models[i].name);
    free(pipeline);
}

bool
imagen_pipeline_used_shm(const imagen_pipeline *pipeline)
{
    return pipeline->used_shm;
}

/* ---- model limits ------------------------------------------------------------- */

static uint64_t
config_param(json_t *config, const char *key, uint64_t fallback)
{
    json_t *v = json_object_get(json_object_get(json_object_get(config, "parameters"), key), "string_value");
    if (!json_is_string(v))
        return fallback;
    char *end;
    unsigned long long n = strtoull(json_string_value(v), &end, 10);
    return *end == '\0' && n > 0 ? (uint64_t)n : fallback;
}

static imagen_error *
model_lookup(imagen_pipeline *p, const char *model, const model_info **out)
{
    for (size_t i = 0; i < p->n_models; i++)
        if (strcmp(p->models[i].name, model) == 0) {
            *out = &p->models[i];
            return NULL;
        }
    char *text = NULL;
    imagen_error *err = imagen_client_model_config(p->client, model, NULL, &text);
    if (err != NULL)
        return imagen_error_wrap(err, "model '%s' config", model);
    json_error_t jerr;
    json_t *config = json_loads(text, 0, &jerr);
    free(text);
    if (config == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "model '%s' config is not JSON: %s", model, jerr.text);
    model_info info = {
        .max_batch_size = (int)json_integer_value(json_object_get(config, "max_batch_size")),
        .max_side = config_param(config, "max_side", DEFAULT_MAX_SIDE),
        .max_megapixels = config_param(config, "max_megapixels", DEFAULT_MAX_MEGAPIXELS),
    };
    json_decref(config);
    if (info.max_batch_size < 0)
        info.max_batch_size = 0;
    if (p->n_models == MAX_MODELS)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "pipeline: more than %d models", MAX_MODELS);
    if ((info.name = strdup(model)) == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "pipeline: out of memory");
    p->models[p->n_models] = info;
    *out = &p->models[p->n_models++];
    return NULL;
}

/* INVALID_ARG when a width × height image is more than the model takes;
 * `what` says which image ("image", "the ×2 result"). */
static imagen_error *
check_limits(const model_info *m, const char *op, const char *what, uint64_t w, uint64_t h)
{
    double mp = (double)w * (double)h / 1e6;
    if ((double)w * (double)h > (double)m->max_megapixels * 1e6)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "%s is %" PRIu64 "×%" PRIu64 " (%.1f megapixels), more than the %" PRIu64
                                " megapixels %s accepts",
                                what, w, h, mp, m->max_megapixels, op);
    if (w > m->max_side || h > m->max_side)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "%s is %" PRIu64 "×%" PRIu64 ", more than the %" PRIu64 " pixels per side %s accepts",
                                what, w, h, m->max_side, op);
    return NULL;
}

/* ---- shared memory ----------------------------------------------------------------- */

static size_t
align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

/* Makes sure the context has a registered region of at least `need`
 * bytes. Leaves p->region NULL when tensors are to go in the messages:
 * shared memory not wanted, or refused by the server in auto mode. */
static imagen_error *
ensure_region(imagen_pipeline *p, size_t need)
{
    if (p->use_shm == 0 || p->shm_disabled)
        return NULL;
    if (p->region != NULL) {
        size_t have = imagen_shm_region_size(p->region);
        if (have >= need && (have <= SHM_SHRINK_ABOVE || have / 4 <= need))
            return NULL;
    }
    drop_region(p);
    imagen_shm_region *region = NULL;
    IMAGEN_RETURN_IF_ERROR(imagen_shm_region_create(align_up(need, SHM_GRANULE), &region));
    snprintf(p->region_name, sizeof(p->region_name), "imagen_worker_%ld_%p_%u", (long)getpid(), (void *)p,
             ++p->region_serial);
    imagen_error *err = imagen_client_shm_register(p->client, p->region_name, imagen_shm_region_key(region), 0,
                                                   imagen_shm_region_size(region));
    if (err != NULL) {
        imagen_shm_region_destroy(region);
        /* In auto mode any refusal by the server (not allowed, or on another
         * machine so the key cannot be opened) means plain tensors from now
         * on; an unreachable server is the job loop's to retry. */
        if (p->use_shm < 0 && imagen_error_code_of(err) != IMAGEN_ERR_UNAVAILABLE) {
            /* Once per thread: an operator wondering why shared memory is not
             * used (the server needs --allow-client-shm=true) finds it here. */
            IMAGEN_LOG_INFO_("worker", "system shared memory not used, tensors go in the messages: %s",
                             imagen_error_message(err));
            imagen_error_free(err);
            p->shm_disabled = true;
            return NULL;
        }
        return imagen_error_wrap(err, "registering shared memory");
    }
    /* The server has mapped it: nothing needs the name in /dev/shm any
     * more, and nothing is left there if this process dies. */
    imagen_shm_region_unlink(region);
    p->region = region;
    return NULL;
}

/* ---- inference --------------------------------------------------------------------- */

/* One request's worth of work: n images of h × w in, n of oh × ow ×
 * out_channels back. */
typedef struct batch {
    const imagen_operation *op;
    const imagen_job_spec *spec;
    const model_info *model;
    int n, h, w, oh, ow, out_channels;
    uint8_t *input;              /* n × h × w × 3: in the region, scratch, or owned_input */
    uint8_t *owned_input;        /* input when the batch allocated it: freed once sent */
    const uint8_t *output;       /* the output's bytes once run */
    imagen_infer_result *result; /* holds output when not in the region */
    size_t out_offset;           /* of the output in the region */
    bool in_region;
} batch;

static size_t
batch_in_bytes(const batch *b)
{
    return (size_t)b->n * b->h * b->w * 3;
}

static size_t
batch_out_bytes(const batch *b)
{
    return (size_t)b->n * b->oh * b->ow * b->out_channels;
}

/* Points b->input at where the batch's pixels are to be written: the
 * region when there is one, else `scratch` (at least batch_in_bytes), or
 * with scratch NULL a buffer of the batch's own (owned_input), which
 * batch_run frees as soon as the request is sent. */
static imagen_error *
batch_place(imagen_pipeline *p, batch *b, uint8_t *scratch)
{
    b->out_offset = align_up(batch_in_bytes(b), SHM_ALIGN);
    IMAGEN_RETURN_IF_ERROR(ensure_region(p, b->out_offset + batch_out_bytes(b)));
    b->in_region = p->region != NULL;
    free(b->owned_input);
    b->owned_input = NULL;
    if (b->in_region) {
        b->input = imagen_shm_region_data(p->region);
    } else if (scratch != NULL) {
        b->input = scratch;
    } else {
        b->input = b->owned_input = malloc(batch_in_bytes(b));
        if (b->input == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %dx%d image", b->w, b->h);
    }
    return NULL;
}

/* imagen_inputs_done_cb of a batch with its own input buffer: the request
 * is on its way and the pixels are no longer needed, so they go before
 * the response (as large) comes in. */
static void
batch_input_sent(void *arg)
{
    batch *b = arg;
    free(b->owned_input);
    b->owned_input = NULL;
    b->input = NULL;
}

/* Hands the pages of [offset, offset + len) of the region back when they
 * are worth it (SHM_RELEASE_MIN_BYTES). */
static void
region_release(imagen_pipeline *p, size_t offset, size_t len)
{
    if (p->region != NULL && len >= SHM_RELEASE_MIN_BYTES)
        imagen_shm_region_release(p->region, offset, len);
}

static imagen_error *
batch_run(imagen_pipeline *p, batch *b, double *infer_ms)
{
    const imagen_operation *op = b->op;
    bool batched = b->model->max_batch_size > 0;
    size_t lead = batched ? 1 : 0;
    int64_t image_shape[4] = {b->n, b->h, b->w, 3};
    int64_t control_shape[2] = {b->n, 1};
    imagen_tensor inputs[1 + MAX_CONTROLS];
    unsigned char control_data[MAX_CONTROLS][MAX_BATCH * 8];
    imagen_shm_ref input_shm[1 + MAX_CONTROLS];
    size_t n_inputs = 1;
    if (op->n_params > MAX_CONTROLS || b->n > MAX_BATCH)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "operation '%s': too many controls or images", op->name);
    memset(input_shm, 0, sizeof(input_shm));
    inputs[0] = (imagen_tensor){.name = "IMAGE",
                                .datatype = IMAGEN_TYPE_UINT8,
                                .shape = image_shape + (1 - lead),
                                .rank = 3 + lead,
                                .data = b->input,
                                .byte_size = batch_in_bytes(b)};
    /* Every parameter goes as its control, the job's value or the table's
     * fallback (the model's default): the request says exactly what ran. */
    for (size_t i = 0; i < op->n_params; i++) {
        const imagen_operation_param *param = &op->params[i];
        double v = imagen_job_spec_param(b->spec, param);
        size_t size = imagen_datatype_size(param->datatype);
        for (int k = 0; k < b->n; k++) {
            unsigned char *dst = control_data[i] + (size_t)k * size;
            if (param->datatype == IMAGEN_TYPE_INT32) {
                int32_t x = (int32_t)v;
                memcpy(dst, &x, sizeof(x));
            } else if (param->datatype == IMAGEN_TYPE_INT64) {
                int64_t x = (int64_t)v;
                memcpy(dst, &x, sizeof(x));
            } else {
                float x = (float)v;
                memcpy(dst, &x, sizeof(x));
            }
        }
        inputs[n_inputs++] = (imagen_tensor){.name = param->tensor,
                                             .datatype = param->datatype,
                                             .shape = batched ? control_shape : control_shape + 1,
                                             .rank = batched ? 2 : 1,
                                             .data = control_data[i],
                                             .byte_size = size * (batched ? (size_t)b->n : 1)};
    }
    const char *outputs[] = {"IMAGE"};
    imagen_shm_ref output_shm[1] = {{0}};
    imagen_infer_request req = {
        .model = b->model->name, .inputs = inputs, .n_inputs = n_inputs, .outputs = outputs, .n_outputs = 1};
    if (b->in_region) {
        input_shm[0] = (imagen_shm_ref){p->region_name, 0, batch_in_bytes(b)};
        output_shm[0] = (imagen_shm_ref){p->region_name, b->out_offset, batch_out_bytes(b)};
        req.input_shm = input_shm;
        req.output_shm = output_shm;
    }
    double t0 = now_ms();
    imagen_error *err = b->owned_input != NULL
                            ? imagen_client_infer_with_inputs_done(p->client, &req, batch_input_sent, b, &b->result)
                            : imagen_client_infer(p->client, &req, &b->result);
    *infer_ms += now_ms() - t0;
    p->used_shm = b->in_region;
    /* The server has read the input (it answered, or it failed). */
    if (b->in_region)
        region_release(p, 0, batch_in_bytes(b));
    if (err != NULL) {
        /* The server may be restarting; a new one will not know the region,
         * and its key is unlinked: start over with a new region. */
        if (b->in_region &&
            (imagen_error_code_of(err) == IMAGEN_ERR_UNAVAILABLE || imagen_error_code_of(err) == IMAGEN_ERR_NOT_FOUND))
            drop_region(p);
        return imagen_error_wrap(err, "%s", op->name);
    }
    const imagen_tensor *t = imagen_infer_result_output_by_name(b->result, "IMAGE");
    int64_t want[4] = {b->n, b->oh, b->ow, b->out_channels};
    bool ok = t != NULL && t->datatype == IMAGEN_TYPE_UINT8 && t->rank == 3 + lead;
    for (size_t d = 0; ok && d < 3 + lead; d++)
        ok = t->shape[d] == want[d + 1 - lead];
    if (ok && !b->in_region)
        ok = t->byte_size == batch_out_bytes(b);
    if (!ok)
        return imagen_error_new(IMAGEN_ERR_INTERNAL,
                                "model '%s' did not return IMAGE as UINT8 [%d, %d, %d, %d] (%zu bytes)", b->model->name,
                                b->n, b->oh, b->ow, b->out_channels, batch_out_bytes(b));
    b->output = b->in_region ? (const uint8_t *)imagen_shm_region_data(p->region) + b->out_offset : t->data;
    return NULL;
}

/* Writes a placed batch's input pixels (b->input). */
typedef imagen_error *(*batch_fill_fn)(batch *b, void *arg);

/* Runs a batch, once more on a fresh region if the server had lost it
 * (restarted between two jobs: the region is gone, the server is back). */
static imagen_error *
batch_run_retry(imagen_pipeline *p, batch *b, uint8_t *scratch, double *infer_ms, batch_fill_fn fill, void *fill_arg)
{
    imagen_error *err = batch_run(p, b, infer_ms);
    if (err == NULL || !b->in_region || imagen_error_code_of(err) != IMAGEN_ERR_NOT_FOUND)
        return err;
    imagen_error_free(err);
    imagen_infer_result_free(b->result);
    b->result = NULL;
    IMAGEN_RETURN_IF_ERROR(batch_place(p, b, scratch));
    IMAGEN_RETURN_IF_ERROR(fill(b, fill_arg));
    return batch_run(p, b, infer_ms);
}

/* ---- whole images -------------------------------------------------------------------- */

typedef struct whole_fill {
    const unsigned char *input; /* the encoded image */
    size_t input_size;
    imagen_image *image; /* gets the alpha plane and format */
    double decode_ms;
} whole_fill;

/* Decodes the image straight into the request's tensor: the region, or
 * the batch's own buffer (sent from where it is, then freed), so the
 * decoded pixels exist once. On a retry (a new region) it decodes again:
 * the first region, and the pixels in it, are gone. */
static imagen_error *
fill_whole(batch *b, void *arg)
{
    whole_fill *f = arg;
    imagen_image_clear(f->image);
    double t0 = now_ms();
    imagen_error *err = imagen_image_decode_into(f->input, f->input_size, b->input, b->w, b->h, f->image);
    f->decode_ms += now_ms() - t0;
    return err;
}

/* One request [1, H, W, 3], decoded from `input` into the request itself.
 * On success b->output is the output, borrowed from b->result or the
 * region; image has the input's alpha plane and format. */
static imagen_error *
run_whole(imagen_pipeline *p, batch *b, const unsigned char *input, size_t input_size, imagen_image *image,
          imagen_stage_times *t)
{
    /* One image, alone: requests of other workers and threads are what the
     * server's dynamic batcher puts it with. */
    b->n = 1;
    whole_fill f = {input, input_size, image, 0};
    double t0 = now_ms();
    imagen_error *err = batch_place(p, b, NULL);
    t->pre_ms += now_ms() - t0;
    if (err == NULL)
        err = fill_whole(b, &f);
    if (err == NULL)
        err = batch_run_retry(p, b, NULL, &t->infer_ms, fill_whole, &f);
    t->decode_ms += f.decode_ms;
    /* Normally freed once sent; still here when the request never left. */
    free(b->owned_input);
    b->owned_input = NULL;
    return err;
}

/* ---- tiles ------------------------------------------------------------------------------ */

typedef struct tile_fill {
    const imagen_image *image;
    const imagen_tile_grid *grid;
    int first, real; /* tiles first .. first + real - 1 */
} tile_fill;

static imagen_error *
fill_tiles(batch *b, void *arg)
{
    const tile_fill *f = arg;
    size_t tile_bytes = (size_t)b->h * b->w * 3;
    for (int k = 0; k < f->real; k++)
        imagen_tile_extract(f->image->rgb, 3, f->grid, f->first + k, b->input + (size_t)k * tile_bytes);
    return NULL;
}

/* Tiles of the grid, max_batch_size per request, stitched into out
 * (W·scale × H·scale × 3). */
static imagen_error *
run_tiled(imagen_pipeline *p, batch *proto, const imagen_image *image, const imagen_tile_grid *grid, int scale,
          uint8_t *out, imagen_stage_times *t)
{
    int per_request = proto->model->max_batch_size > 0 ? proto->model->max_batch_size : 1;
    if (per_request > MAX_BATCH)
        per_request = MAX_BATCH;
    int tiles = imagen_tile_grid_count(grid);
    size_t tile_in = (size_t)grid->x.extent * grid->y.extent * 3;
    size_t tile_out = tile_in * (size_t)scale * scale;
    imagen_tile_stitcher *stitcher = NULL;
    uint8_t *scratch = malloc(tile_in * (size_t)per_request);
    imagen_error *err = scratch == NULL ? imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for tiles")
                                        : imagen_tile_stitcher_create(grid, scale, 3, out, &stitcher);
    for (int first = 0; err == NULL && first < tiles; first += per_request) {
        batch b = *proto;
        int real = tiles - first < per_request ? tiles - first : per_request;
        b.n = real;
        b.h = grid->y.extent;
        b.w = grid->x.extent;
        b.oh = b.h * scale;
        b.ow = b.w * scale;
        tile_fill f = {image, grid, first, real};
        double t0 = now_ms();
        err = batch_place(p, &b, scratch);
        if (err == NULL)
            err = fill_tiles(&b, &f);
        t->pre_ms += now_ms() - t0;
        if (err == NULL)
            err = batch_run_retry(p, &b, scratch, &t->infer_ms, fill_tiles, &f);
        t0 = now_ms();
        for (int k = 0; err == NULL && k < real; k++)
            err = imagen_tile_stitcher_add(stitcher, first + k, b.output + (size_t)k * tile_out);
        imagen_infer_result_free(b.result);
        t->post_ms += now_ms() - t0;
    }
    imagen_tile_stitcher_destroy(stitcher);
    free(scratch);
    return err;
}

/* ---- alpha and encoding ------------------------------------------------------------------ */

/* rgb (3 channels) and alpha planes of w × h into a new RGBA buffer. */
static uint8_t *
interleave_rgba(const uint8_t *rgb, const uint8_t *alpha, int w, int h)
{
    size_t n = (size_t)w * h;
    uint8_t *out = malloc(n * 4);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        out[4 * i] = rgb[3 * i];
        out[4 * i + 1] = rgb[3 * i + 1];
        out[4 * i + 2] = rgb[3 * i + 2];
        out[4 * i + 3] = alpha[i];
    }
    return out;
}

static void
format_names(const char *fmt, imagen_job_result *result)
{
    if (strcmp(fmt, "jpg") == 0 || strcmp(fmt, "jpeg") == 0) {
        result->ext = "jpg";
        result->content_type = "image/jpeg";
    } else if (strcmp(fmt, "webp") == 0) {
        result->ext = "webp";
        result->content_type = "image/webp";
    } else {
        result->ext = "png";
        result->content_type = "image/png";
    }
}

/* ---- the job -------------------------------------------------------------------------------- */

imagen_error *
imagen_pipeline_process(imagen_pipeline *p, const imagen_job_spec *spec, const unsigned char *input, size_t input_size,
                        imagen_job_result *result, imagen_stage_times *times)
{
    imagen_stage_times local = {0};
    imagen_stage_times *t = &local;
    const imagen_operation *op = spec->op;
    const struct imagen_operation_hooks *hooks = op->hooks;
    const model_info *model = NULL;
    imagen_image image = {0};
    imagen_infer_result *whole_result = NULL;
    uint8_t *owned = NULL; /* the pixels to encode when this function made them */
    const uint8_t *pixels; /* the pixels to encode */
    imagen_error *err;

    if (hooks == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "operation '%s' has no pipeline hooks", op->name);
    /* Size first, from the header: an image too large is refused before
     * any pixel is decoded. */
    double t0 = now_ms();
    int w, h;
    IMAGEN_RETURN_IF_ERROR(imagen_image_probe(input, input_size, &w, &h, NULL));
    t->decode_ms += now_ms() - t0;
    IMAGEN_RETURN_IF_ERROR(model_lookup(p, op->model, &model));
    int scale = 1;
    if (hooks->scale_param != NULL) {
        const imagen_operation_param *sp = imagen_operation_param_find(op, hooks->scale_param);
        scale = sp != NULL ? (int)imagen_job_spec_param(spec, sp) : 1;
        if (scale < 1)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s: %s must be at least 1", op->name, hooks->scale_param);
    }
    IMAGEN_RETURN_IF_ERROR(check_limits(model, op->name, "image", (uint64_t)w, (uint64_t)h));
    if (scale > 1) {
        char what[48];
        snprintf(what, sizeof(what), "the ×%d result", scale);
        IMAGEN_RETURN_IF_ERROR(check_limits(model, op->name, what, (uint64_t)w * scale, (uint64_t)h * scale));
    }

    /* w and h are the probed size, which decoding checks it gets. */
    int ow = w * scale, oh = h * scale;
    int out_channels = op->output_rgba ? 4 : 3;
    /* Bytes of the region holding the result, when it is there; handed
     * back once encoded. */
    size_t region_out_offset = 0, region_out_bytes = 0;

    batch proto = {.op = op,
                   .spec = spec,
                   .model = model,
                   .n = 1,
                   .h = h,
                   .w = w,
                   .oh = oh,
                   .ow = ow,
                   .out_channels = out_channels};
    imagen_tile_grid grid;
    imagen_tile_grid_plan(w, h, p->tile_size, p->tile_overlap, &grid);
    if (hooks->tiled && imagen_tile_grid_count(&grid) > 1) {
        /* Tiles are cut from the whole decoded image. */
        t0 = now_ms();
        err = imagen_image_decode(input, input_size, &image);
        t->decode_ms += now_ms() - t0;
        if (err == NULL && (image.width != w || image.height != h))
            err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                   "cannot decode input: it decodes to %dx%d, not the %dx%d its header gave",
                                   image.width, image.height, w, h);
        if (err == NULL && (owned = malloc((size_t)ow * oh * 3)) == NULL)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %dx%d result", ow, oh);
        if (err == NULL)
            err = run_tiled(p, &proto, &image, &grid, scale, owned, t);
        pixels = owned;
    } else {
        /* Decoded into the request, sent, freed (or left in the region);
         * the output is borrowed from the result or the region, both of
         * which stay as they are until this job is encoded: no copy. */
        batch b = proto;
        err = run_whole(p, &b, input, input_size, &image, t);
        whole_result = b.result;
        pixels = b.output;
        if (b.in_region) {
            region_out_offset = b.out_offset;
            region_out_bytes = batch_out_bytes(&b);
        }
    }
    if (err != NULL)
        goto done;
    /* The input pixels have been sent: only the alpha plane is still needed.
     * Freeing them here keeps a whole decoded image out of the job's peak,
     * which is while the result is read and encoded. */
    free(image.rgb);
    image.rgb = NULL;

    /* Alpha back. */
    t0 = now_ms();
    if (image.alpha != NULL && out_channels == 4 && hooks->alpha == IMAGEN_ALPHA_MULTIPLY_MASK) {
        uint8_t *rgba = malloc((size_t)ow * oh * 4);
        if (rgba == NULL) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %dx%d result", ow, oh);
            goto done;
        }
        for (size_t i = 0; i < (size_t)ow * oh; i++) {
            memcpy(rgba + 4 * i, pixels + 4 * i, 3);
            rgba[4 * i + 3] = (uint8_t)((pixels[4 * i + 3] * image.alpha[i] + 127) / 255);
        }
        free(owned);
        owned = rgba;
        pixels = rgba;
    } else if (image.alpha != NULL && out_channels == 3) {
        uint8_t *alpha = image.alpha, *resized = NULL;
        if (ow != w || oh != h) {
            if ((err = imagen_plane_resize(image.alpha, w, h, ow, oh, &resized)) != NULL)
                goto done;
            alpha = resized;
        }
        uint8_t *rgba = interleave_rgba(pixels, alpha, ow, oh);
        free(resized);
        if (rgba == NULL) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %dx%d result", ow, oh);
            goto done;
        }
        free(owned);
        owned = rgba;
        pixels = rgba;
        out_channels = 4;
    }
    t->post_ms += now_ms() - t0;

    /* Encode: the job's format, else the input's, PNG for alpha. */
    t0 = now_ms();
    const char *fmt = spec->format;
    if (fmt == NULL)
        fmt = out_channels == 4 || image.format == NULL ? "png" : image.format;
    err = imagen_image_encode(pixels, ow, oh, out_channels, fmt, spec->quality, &result->data, &result->size);
    t->encode_ms += now_ms() - t0;
    if (err == NULL) {
        format_names(fmt, result);
        result->width = ow;
        result->height = oh;
        result->channels = out_channels;
    }

done:
    /* Encoded (or failed): the region's copy of the result is done with. */
    region_release(p, region_out_offset, region_out_bytes);
    imagen_infer_result_free(whole_result);
    free(owned);
    imagen_image_clear(&image);
    if (times != NULL) {
        times->decode_ms = t->decode_ms;
        times->pre_ms = t->pre_ms;
        times->infer_ms = t->infer_ms;
        times->post_ms = t->post_ms;
        times->encode_ms = t->encode_ms;
    }
    return err;
}
