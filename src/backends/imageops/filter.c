/*
 * Planar float primitives for the image operations (see filter.h).
 *
 * Every function splits its work by rows, or by blocks of columns for
 * vertical passes, over the pool. Vertical passes walk a block of up to
 * COLUMN_BLOCK columns down the image so each row touched is one short,
 * contiguous, vectorisable run instead of a strided column walk. Running
 * sums are kept in double: a float running sum over thousands of rows
 * drifts by more than the guided filter's eps can tolerate.
 */
#include "backends/imageops/filter.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define COLUMN_BLOCK 64
#define ROW_GRAIN 8

static imagen_error *
out_of_memory(const char *what)
{
    return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops: out of memory (%s)", what);
}

float *
imagen__plane_alloc(size_t width, size_t height)
{
    if (width == 0 || height == 0 || width > SIZE_MAX / height || width * height > SIZE_MAX / sizeof(float) - 64)
        return NULL;
    size_t bytes = (width * height * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

void
imagen__plane_free(float *plane)
{
    free(plane);
}

static inline float
clamp01(float v)
{
    return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

static inline uint8_t
to_u8(float v)
{
    return (uint8_t)(clamp01(v) * 255.0f + 0.5f);
}

/* ---------------------------------------------------------------------
 * Colour
 * ------------------------------------------------------------------- */

typedef struct colour_job {
    const uint8_t *in;
    uint8_t *out;
    size_t channels, width;
    const float *src[3];
    float *dst[3];
} colour_job;

static void
rgb_to_planes_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const colour_job *j = ctx;
    const float k = 1.0f / 255.0f;
    for (size_t y = begin; y < end; y++) {
        const uint8_t *p = j->in + y * j->width * j->channels;
        float *r = j->dst[0] + y * j->width, *g = j->dst[1] + y * j->width, *b = j->dst[2] + y * j->width;
        for (size_t x = 0; x < j->width; x++) {
            r[x] = p[x * j->channels] * k;
            g[x] = p[x * j->channels + 1] * k;
            b[x] = p[x * j->channels + 2] * k;
        }
    }
}

void
imagen__rgb_to_planes(imagen__pool *pool, const uint8_t *rgb, size_t channels, size_t width, size_t height, float *r,
                      float *g, float *b)
{
    colour_job j = {.in = rgb, .channels = channels, .width = width, .dst = {r, g, b}};
    imagen__pool_for(pool, height, ROW_GRAIN, rgb_to_planes_rows, &j);
}

static void
planes_to_rgb_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const colour_job *j = ctx;
    for (size_t y = begin; y < end; y++) {
        uint8_t *p = j->out + y * j->width * j->channels;
        const float *r = j->src[0] + y * j->width, *g = j->src[1] + y * j->width, *b = j->src[2] + y * j->width;
        for (size_t x = 0; x < j->width; x++) {
            p[x * j->channels] = to_u8(r[x]);
            p[x * j->channels + 1] = to_u8(g[x]);
            p[x * j->channels + 2] = to_u8(b[x]);
        }
    }
}

void
imagen__planes_to_rgb(imagen__pool *pool, const float *r, const float *g, const float *b, size_t width, size_t height,
                      uint8_t *rgb, size_t channels)
{
    colour_job j = {.out = rgb, .channels = channels, .width = width, .src = {r, g, b}};
    imagen__pool_for(pool, height, ROW_GRAIN, planes_to_rgb_rows, &j);
}

static void
rgb_to_ycbcr_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const colour_job *j = ctx;
    const float k = 1.0f / 255.0f;
    for (size_t y = begin; y < end; y++) {
        const uint8_t *p = j->in + y * j->width * j->channels;
        float *Y = j->dst[0] + y * j->width;
        float *cb = j->dst[1] ? j->dst[1] + y * j->width : NULL, *cr = j->dst[2] ? j->dst[2] + y * j->width : NULL;
        for (size_t x = 0; x < j->width; x++) {
            float r = p[x * j->channels] * k, g = p[x * j->channels + 1] * k, b = p[x * j->channels + 2] * k;
            Y[x] = 0.299f * r + 0.587f * g + 0.114f * b;
            if (cb != NULL) {
                cb[x] = -0.168736f * r - 0.331264f * g + 0.5f * b;
                cr[x] = 0.5f * r - 0.418688f * g - 0.081312f * b;
            }
        }
    }
}

void
imagen__rgb_to_ycbcr(imagen__pool *pool, const uint8_t *rgb, size_t channels, size_t width, size_t height, float *y,
                     float *cb, float *cr)
{
    colour_job j = {.in = rgb, .channels = channels, .width = width, .dst = {y, cb, cr}};
    imagen__pool_for(pool, height, ROW_GRAIN, rgb_to_ycbcr_rows, &j);
}

void
imagen__rgb_to_luma(imagen__pool *pool, const uint8_t *rgb, size_t channels, size_t width, size_t height, float *y)
{
    colour_job j = {.in = rgb, .channels = channels, .width = width, .dst = {y, NULL, NULL}};
    imagen__pool_for(pool, height, ROW_GRAIN, rgb_to_ycbcr_rows, &j);
}

static void
ycbcr_to_rgb_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const colour_job *j = ctx;
    for (size_t y = begin; y < end; y++) {
        uint8_t *p = j->out + y * j->width * j->channels;
        const float *Y = j->src[0] + y * j->width, *cb = j->src[1] + y * j->width, *cr = j->src[2] + y * j->width;
        for (size_t x = 0; x < j->width; x++) {
            p[x * j->channels] = to_u8(Y[x] + 1.402f * cr[x]);
            p[x * j->channels + 1] = to_u8(Y[x] - 0.344136f * cb[x] - 0.714136f * cr[x]);
            p[x * j->channels + 2] = to_u8(Y[x] + 1.772f * cb[x]);
        }
    }
}

void
imagen__ycbcr_to_rgb(imagen__pool *pool, const float *y, const float *cb, const float *cr, size_t width, size_t height,
                     uint8_t *rgb, size_t channels)
{
    colour_job j = {.out = rgb, .channels = channels, .width = width, .src = {y, cb, cr}};
    imagen__pool_for(pool, height, ROW_GRAIN, ycbcr_to_rgb_rows, &j);
}

float
imagen__srgb_to_linear(float v)
{
    return v <= 0.04045f ? v / 12.92f : powf((v + 0.055f) / 1.055f, 2.4f);
}

float
imagen__linear_to_srgb(float v)
{
    return v <= 0.0031308f ? v * 12.92f : 1.055f * powf(v, 1.0f / 2.4f) - 0.055f;
}

/* ---------------------------------------------------------------------
 * Box mean
 * ------------------------------------------------------------------- */

typedef struct box_job {
    const float *src;
    float *dst;
    size_t width, height, radius;
    float *scratch; /* per worker: max(4 * width, height * COLUMN_BLOCK) floats */
    size_t scratch_len;
} box_job;

/* Window sum bookkeeping for x in [0, w): the window is [x - r, x + r]
 * clipped to the row. The interior (both ends inside) moves by one add of
 * a difference; the clipped ends divide by their own counts. */
static inline void
box_row_edges(const float *row, float *out, size_t w, size_t r, size_t from, size_t to)
{
    for (size_t x = from; x < to; x++) {
        size_t lo = x > r ? x - r : 0, hi = x + r < w ? x + r : w - 1;
        double sum = 0.0;
        for (size_t k = lo; k <= hi; k++)
            sum += row[k];
        out[x] = (float)(sum / (double)(hi - lo + 1));
    }
}

/* dst row = clipped-window mean of src row. Rows go four at a time so the
 * four running sums form independent dependency chains (one add each per
 * pixel) that the CPU overlaps. Rows are copied first so src and dst may
 * be the same plane. */
static void
box_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const box_job *j = ctx;
    const size_t w = j->width, r = j->radius;
    float *rows = j->scratch + worker * j->scratch_len; /* 4 * w floats */
    if (2 * r + 1 > w) {                                /* every window clipped */
        for (size_t y = begin; y < end; y++) {
            memcpy(rows, j->src + y * w, w * sizeof(float));
            box_row_edges(rows, j->dst + y * w, w, r, 0, w);
        }
        return;
    }
    const double inv = 1.0 / (double)(2 * r + 1);
    for (size_t y = begin; y < end; y += 4) {
        size_t n = end - y < 4 ? end - y : 4;
        const float *in[4];
        float *out[4];
        double sum[4] = {0, 0, 0, 0};
        for (size_t i = 0; i < 4; i++) {
            size_t row = y + (i < n ? i : 0);
            memcpy(rows + i * w, j->src + row * w, w * sizeof(float));
            in[i] = rows + i * w;
            out[i] = i < n ? j->dst + row * w : rows + i * w; /* extra lanes write scratch */
        }
        for (size_t i = 0; i < 4; i++) {
            for (size_t k = 0; k <= 2 * r; k++)
                sum[i] += in[i][k];
        }
        /* interior x in [r, w - r): window [x - r, x + r] */
        for (size_t x = r;; x++) {
            for (size_t i = 0; i < 4; i++)
                out[i][x] = (float)(sum[i] * inv);
            if (x + r + 1 >= w)
                break;
            for (size_t i = 0; i < 4; i++)
                sum[i] += (double)in[i][x + r + 1] - (double)in[i][x - r];
        }
        for (size_t i = 0; i < n; i++) {
            /* clipped ends, each with its own running sum: left windows
             * [0, x + r], right windows [x - r, w - 1] */
            double left = 0.0, right = 0.0;
            for (size_t k = 0; k < r; k++) {
                left += in[i][k];
                right += in[i][w - 2 * r + k] + (double)in[i][w - r + k];
            }
            for (size_t x = 0; x < r; x++) {
                left += in[i][x + r];
                out[i][x] = (float)(left / (double)(x + r + 1));
            }
            for (size_t x = w - r; x < w; x++) {
                out[i][x] = (float)(right / (double)(w - x + r));
                right -= in[i][x - r];
            }
        }
    }
}

/* Vertical pass over a block of columns: the block is copied to scratch
 * (in-place safe), then a running sum per column walks down the rows. */
static void
box_columns(void *ctx, size_t begin, size_t end, size_t worker)
{
    const box_job *j = ctx;
    float *block = j->scratch + worker * j->scratch_len;
    const size_t w = j->width, h = j->height, r = j->radius;
    double acc[COLUMN_BLOCK];
    for (size_t b = begin; b < end; b++) {
        size_t c0 = b * COLUMN_BLOCK, n = w - c0 < COLUMN_BLOCK ? w - c0 : COLUMN_BLOCK;
        for (size_t y = 0; y < h; y++)
            memcpy(block + y * n, j->src + y * w + c0, n * sizeof(float));
        for (size_t c = 0; c < n; c++)
            acc[c] = 0.0;
        size_t hi = r < h ? r : h - 1;
        for (size_t y = 0; y <= hi; y++)
            for (size_t c = 0; c < n; c++)
                acc[c] += block[y * n + c];
        for (size_t y = 0; y < h; y++) {
            size_t lo = y > r ? y - r : 0;
            double inv = 1.0 / (double)(hi - lo + 1);
            float *out = j->dst + y * w + c0;
            for (size_t c = 0; c < n; c++)
                out[c] = (float)(acc[c] * inv);
            if (hi + 1 < h) {
                hi++;
                for (size_t c = 0; c < n; c++)
                    acc[c] += block[hi * n + c];
            }
            if (y >= r)
                for (size_t c = 0; c < n; c++)
                    acc[c] -= block[(y - r) * n + c];
        }
    }
}

imagen_error *
imagen__box_mean(imagen__pool *pool, const float *src, float *dst, size_t width, size_t height, size_t radius)
{
    size_t threads = imagen__pool_threads(pool);
    size_t block = width < COLUMN_BLOCK ? width : COLUMN_BLOCK; /* narrow planes need less */
    size_t len = height * block > 4 * width ? height * block : 4 * width;
    box_job j = {.src = src, .dst = dst, .width = width, .height = height, .radius = radius, .scratch_len = len};
    j.scratch = malloc(threads * len * sizeof(float));
    if (j.scratch == NULL)
        return out_of_memory("box filter");
    imagen__pool_for(pool, height, ROW_GRAIN, box_rows, &j);
    j.src = dst;
    imagen__pool_for(pool, (width + COLUMN_BLOCK - 1) / COLUMN_BLOCK, 1, box_columns, &j);
    free(j.scratch);
    return NULL;
}

/* ---------------------------------------------------------------------
 * Gaussian blur
 * ------------------------------------------------------------------- */

typedef struct conv_job {
    const float *src;
    float *dst;
    size_t width, height, radius;
    const float *kernel; /* 2 * radius + 1 taps, centred */
    float *scratch;      /* per worker */
    size_t scratch_len;
} conv_job;

static void
conv_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const conv_job *j = ctx;
    const size_t w = j->width, r = j->radius;
    float *pad = j->scratch + worker * j->scratch_len; /* w + 2r, edges replicated */
    for (size_t y = begin; y < end; y++) {
        const float *in = j->src + y * w;
        for (size_t i = 0; i < r; i++) {
            pad[i] = in[0];
            pad[r + w + i] = in[w - 1];
        }
        memcpy(pad + r, in, w * sizeof(float));
        float *out = j->dst + y * w;
        for (size_t x = 0; x < w; x++) {
            float s = 0.0f;
            for (size_t k = 0; k <= 2 * r; k++)
                s += j->kernel[k] * pad[x + k];
            out[x] = s;
        }
    }
}

static void
conv_columns(void *ctx, size_t begin, size_t end, size_t worker)
{
    const conv_job *j = ctx;
    const size_t w = j->width, h = j->height, r = j->radius;
    float *block = j->scratch + worker * j->scratch_len;
    for (size_t b = begin; b < end; b++) {
        size_t c0 = b * COLUMN_BLOCK, n = w - c0 < COLUMN_BLOCK ? w - c0 : COLUMN_BLOCK;
        for (size_t y = 0; y < h; y++)
            memcpy(block + y * n, j->src + y * w + c0, n * sizeof(float));
        for (size_t y = 0; y < h; y++) {
            float acc[COLUMN_BLOCK] = {0};
            for (size_t k = 0; k <= 2 * r; k++) {
                long yy = (long)y + (long)k - (long)r;
                size_t row = yy < 0 ? 0 : ((size_t)yy >= h ? h - 1 : (size_t)yy);
                const float *in = block + row * n;
                float kk = j->kernel[k];
                for (size_t c = 0; c < n; c++)
                    acc[c] += kk * in[c];
            }
            memcpy(j->dst + y * w + c0, acc, n * sizeof(float));
        }
    }
}

/* Box radii of three passes whose combined variance matches sigma^2
 * (each box of width 2r+1 has variance ((2r+1)^2 - 1) / 12). */
static void
box_radii_for_sigma(float sigma, size_t radii[3])
{
    double ideal = sqrt(12.0 * sigma * sigma / 3.0 + 1.0);
    long lower = (long)floor(ideal);
    if (lower % 2 == 0)
        lower--;
    long upper = lower + 2;
    double m = (12.0 * sigma * sigma - 3.0 * lower * lower - 12.0 * lower - 9.0) / (-4.0 * lower - 4.0);
    long small = lround(m);
    for (int i = 0; i < 3; i++)
        radii[i] = (size_t)(((i < small ? lower : upper) - 1) / 2);
}

imagen_error *
imagen__gaussian_blur(imagen__pool *pool, const float *src, float *dst, size_t width, size_t height, float sigma)
{
    if (!(sigma > 0.0f)) {
        if (src != dst)
            memcpy(dst, src, width * height * sizeof(float));
        return NULL;
    }
    if (sigma > 4.0f) {
        size_t radii[3];
        box_radii_for_sigma(sigma, radii);
        IMAGEN_RETURN_IF_ERROR(imagen__box_mean(pool, src, dst, width, height, radii[0]));
        IMAGEN_RETURN_IF_ERROR(imagen__box_mean(pool, dst, dst, width, height, radii[1]));
        return imagen__box_mean(pool, dst, dst, width, height, radii[2]);
    }
    size_t r = (size_t)ceilf(3.0f * sigma);
    float kernel[2 * 12 + 1];
    float total = 0.0f;
    for (size_t k = 0; k <= 2 * r; k++) {
        float d = (float)k - (float)r;
        kernel[k] = expf(-d * d / (2.0f * sigma * sigma));
        total += kernel[k];
    }
    for (size_t k = 0; k <= 2 * r; k++)
        kernel[k] /= total;
    size_t threads = imagen__pool_threads(pool);
    size_t block = width < COLUMN_BLOCK ? width : COLUMN_BLOCK; /* narrow planes need less */
    size_t len = height * block > width + 2 * r ? height * block : width + 2 * r;
    conv_job j = {
        .src = src, .dst = dst, .width = width, .height = height, .radius = r, .kernel = kernel, .scratch_len = len};
    j.scratch = malloc(threads * len * sizeof(float));
    if (j.scratch == NULL)
        return out_of_memory("gaussian blur");
    imagen__pool_for(pool, height, ROW_GRAIN, conv_rows, &j);
    j.src = dst;
    imagen__pool_for(pool, (width + COLUMN_BLOCK - 1) / COLUMN_BLOCK, 1, conv_columns, &j);
    free(j.scratch);
    return NULL;
}

/* ---------------------------------------------------------------------
 * Guided filter
 * ------------------------------------------------------------------- */

typedef struct guided_job {
    const float *I, *p;
    float *a, *b, *c, *d; /* the four work planes */
    float *dst;
    size_t width;
    float eps;
    int stage;
} guided_job;

static void
guided_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const guided_job *j = ctx;
    for (size_t i = begin * j->width; i < end * j->width; i++) {
        switch (j->stage) {
        case 0: /* products to be averaged */
            j->c[i] = j->I[i] * j->I[i];
            j->d[i] = j->I[i] * j->p[i];
            break;
        case 1: { /* per-window linear model q = A I + B */
            float var = j->c[i] - j->a[i] * j->a[i];
            float cov = j->d[i] - j->a[i] * j->b[i];
            float A = cov / (var + j->eps);
            j->c[i] = A;
            j->d[i] = j->b[i] - A * j->a[i];
            break;
        }
        default: /* averaged model applied to the guide */
            j->dst[i] = j->c[i] * j->I[i] + j->d[i];
            break;
        }
    }
}

imagen_error *
imagen__guided_filter(imagen__pool *pool, const float *guide, const float *src, float *dst, size_t width, size_t height,
                      size_t radius, float eps)
{
    imagen_error *err = NULL;
    float *a = imagen__plane_alloc(width, height), *b = imagen__plane_alloc(width, height);
    float *c = imagen__plane_alloc(width, height), *d = imagen__plane_alloc(width, height);
    guided_job j = {.I = guide, .p = src, .a = a, .b = b, .c = c, .d = d, .dst = dst, .width = width, .eps = eps};
    if (a == NULL || b == NULL || c == NULL || d == NULL) {
        err = out_of_memory("guided filter");
        goto done;
    }
    j.stage = 0;
    imagen__pool_for(pool, height, ROW_GRAIN, guided_rows, &j);
    if ((err = imagen__box_mean(pool, guide, a, width, height, radius)) != NULL ||
        (err = imagen__box_mean(pool, src, b, width, height, radius)) != NULL ||
        (err = imagen__box_mean(pool, c, c, width, height, radius)) != NULL ||
        (err = imagen__box_mean(pool, d, d, width, height, radius)) != NULL)
        goto done;
    j.stage = 1;
    imagen__pool_for(pool, height, ROW_GRAIN, guided_rows, &j);
    if ((err = imagen__box_mean(pool, c, c, width, height, radius)) != NULL ||
        (err = imagen__box_mean(pool, d, d, width, height, radius)) != NULL)
        goto done;
    j.stage = 2;
    imagen__pool_for(pool, height, ROW_GRAIN, guided_rows, &j);
done:
    imagen__plane_free(a);
    imagen__plane_free(b);
    imagen__plane_free(c);
    imagen__plane_free(d);
    return err;
}

/* ---------------------------------------------------------------------
 * Resampling
 * ------------------------------------------------------------------- */

static double
sinc(double x)
{
    if (fabs(x) < 1e-9)
        return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

/* Kernel value at distance t (in kernel units) and its support radius. */
static double
kernel_value(imagen__kernel k, double t)
{
    double a = fabs(t);
    switch (k) {
    case IMAGEN_KERNEL_BOX:
        return (t >= -0.5 && t < 0.5) ? 1.0 : 0.0;
    case IMAGEN_KERNEL_LINEAR:
        return a < 1.0 ? 1.0 - a : 0.0;
    case IMAGEN_KERNEL_CUBIC:
        if (a < 1.0)
            return (1.5 * a - 2.5) * a * a + 1.0;
        if (a < 2.0)
            return ((-0.5 * a + 2.5) * a - 4.0) * a + 2.0;
        return 0.0;
    case IMAGEN_KERNEL_LANCZOS3:
        return a < 3.0 ? sinc(a) * sinc(a / 3.0) : 0.0;
    }
    return 0.0;
}

static double
kernel_support(imagen__kernel k)
{
    switch (k) {
    case IMAGEN_KERNEL_BOX:
        return 0.5;
    case IMAGEN_KERNEL_LINEAR:
        return 1.0;
    case IMAGEN_KERNEL_CUBIC:
        return 2.0;
    case IMAGEN_KERNEL_LANCZOS3:
        return 3.0;
    }
    return 1.0;
}

imagen_error *
imagen__resample_init(imagen__resample *r, size_t in_len, size_t out_len, imagen__kernel kernel)
{
    memset(r, 0, sizeof(*r));
    if (in_len == 0 || out_len == 0 || in_len > INT32_MAX)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "imageops: cannot resample %zu samples to %zu", in_len,
                                out_len);
    double scale = (double)out_len / (double)in_len;
    double widen = scale < 1.0 ? 1.0 / scale : 1.0; /* kernel stretch when shrinking */
    bool area = kernel == IMAGEN_KERNEL_BOX && scale < 1.0;
    double support = area ? widen / 2.0 + 0.5 : kernel_support(kernel) * widen;
    size_t taps = (size_t)ceil(2.0 * support) + 1;
    r->in_len = in_len;
    r->out_len = out_len;
    r->taps = taps;
    r->index = malloc(out_len * taps * sizeof(*r->index));
    r->weight = malloc(out_len * taps * sizeof(*r->weight));
    double *w = malloc(taps * sizeof(*w));
    if (r->index == NULL || r->weight == NULL || w == NULL) {
        free(w);
        imagen__resample_free(r);
        return out_of_memory("resampling weights");
    }
    for (size_t i = 0; i < out_len; i++) {
        double centre = ((double)i + 0.5) / scale - 0.5;
        long first = (long)floor(centre - support) + 1;
        double total = 0.0;
        for (size_t k = 0; k < taps; k++) {
            double x = (double)(first + (long)k);
            if (area) {
                /* exact overlap of input pixel [x-.5, x+.5] with the
                 * output pixel's footprint in input coordinates */
                double lo = fmax(x - 0.5, centre - widen / 2.0), hi = fmin(x + 0.5, centre + widen / 2.0);
                w[k] = hi > lo ? hi - lo : 0.0;
            } else {
                w[k] = kernel_value(kernel, (x - centre) / widen);
            }
            total += w[k];
        }
        for (size_t k = 0; k < taps; k++) {
            long x = first + (long)k;
            x = x < 0 ? 0 : (x >= (long)in_len ? (long)in_len - 1 : x);
            r->index[i * taps + k] = (int32_t)x;
            r->weight[i * taps + k] = total != 0.0 ? (float)(w[k] / total) : (k == taps / 2 ? 1.0f : 0.0f);
        }
    }
    free(w);
    return NULL;
}

void
imagen__resample_free(imagen__resample *r)
{
    if (r == NULL)
        return;
    free(r->index);
    free(r->weight);
    memset(r, 0, sizeof(*r));
}

typedef struct resize_job {
    const float *src;
    float *tmp, *dst;
    size_t src_w, dst_w;
    const imagen__resample *h, *v;
} resize_job;

static void
resize_rows_h(void *ctx, size_t begin, size_t end, size_t worker)
{
    const resize_job *j = ctx;
    const size_t taps = j->h->taps;
    for (size_t y = begin; y < end; y++) {
        const float *in = j->src + y * j->src_w;
        float *out = j->tmp + y * j->dst_w;
        for (size_t x = 0; x < j->dst_w; x++) {
            const int32_t *idx = j->h->index + x * taps;
            const float *wt = j->h->weight + x * taps;
            float s = 0.0f;
            for (size_t k = 0; k < taps; k++)
                s += wt[k] * in[idx[k]];
            out[x] = s;
        }
    }
}

static void
resize_rows_v(void *ctx, size_t begin, size_t end, size_t worker)
{
    const resize_job *j = ctx;
    const size_t taps = j->v->taps, w = j->dst_w;
    for (size_t y = begin; y < end; y++) {
        float *out = j->dst + y * w;
        const int32_t *idx = j->v->index + y * taps;
        const float *wt = j->v->weight + y * taps;
        for (size_t x = 0; x < w; x++)
            out[x] = 0.0f;
        for (size_t k = 0; k < taps; k++) {
            if (wt[k] == 0.0f)
                continue;
            const float *in = j->tmp + (size_t)idx[k] * w;
            float kk = wt[k];
            for (size_t x = 0; x < w; x++)
                out[x] += kk * in[x];
        }
    }
}

imagen_error *
imagen__resize_plane(imagen__pool *pool, const float *src, size_t src_w, size_t src_h, float *dst, size_t dst_w,
                     size_t dst_h, imagen__kernel kernel)
{
    imagen__resample h, v;
    IMAGEN_RETURN_IF_ERROR(imagen__resample_init(&h, src_w, dst_w, kernel));
    imagen_error *err = imagen__resample_init(&v, src_h, dst_h, kernel);
    if (err != NULL) {
        imagen__resample_free(&h);
        return err;
    }
    float *tmp = imagen__plane_alloc(dst_w, src_h);
    if (tmp == NULL) {
        err = out_of_memory("resize");
    } else {
        resize_job j = {.src = src, .tmp = tmp, .dst = dst, .src_w = src_w, .dst_w = dst_w, .h = &h, .v = &v};
        imagen__pool_for(pool, src_h, ROW_GRAIN, resize_rows_h, &j);
        imagen__pool_for(pool, dst_h, ROW_GRAIN, resize_rows_v, &j);
    }
    imagen__plane_free(tmp);
    imagen__resample_free(&h);
    imagen__resample_free(&v);
    return err;
}
