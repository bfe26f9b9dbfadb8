/*
 * imageops operation `enhance`: automatic white balance, levels, noise
 * reduction, local contrast (a CLAHE variant) and sharpening of one RGB
 * image. STRENGTH 0 returns the input unchanged, 1 (default) the full
 * enhancement, values between blend the two, values up to 2 run the stages
 * harder. Runs on the instance thread; every stage splits its rows (or,
 * inside the shared filters, column blocks) over the instance's pool.
 *
 * Every stage measures the image and moves it to a target it then meets,
 * so a second application finds little left to do: on the four skimage
 * photos it changes the image 4 to 27 % as much as the first did.
 *
 *   1. White balance: the grey-edge estimate (neighbouring-pixel differences
 *      are assumed to have equal mean size in R, G and B), skipping pixel
 *      pairs with a channel at 250 or more. The cast is shrunk by a 3 % dead
 *      zone, so balanced images and their neutral greys stay exactly as they
 *      are, and softly limited to about 25 %. Gains keep luma and fade out
 *      toward clipped highlights, which stay white.
 *   2. Levels: one linear stretch of all three channels together, so the
 *      darkest 0.2 % of channel values reach black and the brightest 0.2 %
 *      reach 98 %, by at most 3x.
 *   3. Noise reduction, only where the estimated noise (the 25th percentile
 *      of a 3x3 Laplacian of the input luma, scaled by the levels stretch)
 *      exceeds 2 levels: a guided filter on luma (eps from the noise excess),
 *      and on the two chroma planes at half size guided by the final luma.
 *   4. Local contrast: luma histograms for an 8x8 grid of nodes, counted
 *      with the tent weights of the bilinear interpolation between the
 *      nodes' LUTs. Each LUT keeps its tile's tonal range (0.5 % to 99.5 %)
 *      and stretches only tones denser than twice the tile's mean density,
 *      by at most 3x, compressing the sparse tones to pay for it: CLAHE's
 *      clip limit without its range expansion, so a tile already below the
 *      limit maps to itself. Tones in a narrow band (std of the tile's
 *      tones within 32 levels around them below 7 levels, full 3x from 9)
 *      are not spread apart: in a flat area their spread is mostly noise
 *      and compression artefacts. Three passes, each on the previous
 *      result, absorb what the interpolation between nodes leaves undone.
 *   5. Sharpening: one unsharp-mask amount (Gaussian sigma 1, at most 1.5)
 *      for the whole image, solved so that the energy of the finest
 *      Laplacian reaches 0.36 of the next octave's. Sharp images get none,
 *      and noise counts as fine detail, so noisy ones get little.
 *   6. Composition: the new luma plus each pixel's chroma (white-balanced,
 *      stretched, maybe denoised). Channels below 0 desaturate toward the
 *      luma; channels above 95 % (or the input pixel's own maximum) are
 *      compressed smoothly, scaling the pixel to keep its hue, so a channel
 *      can reach 255 only where the input pixel was already clipped.
 *
 * Where it fails: grey-edge reads a scene dominated by one colour at dusk
 * or under coloured light as a cast (the blue-hour sky of `rocket` loses
 * about 15 % of its blue: it stays blue, a little greyer); flat areas are
 * kept from being spread apart only while their tones stay within a few
 * levels, so noise on wider tonal ranges (a textured area, a sky gradient
 * spanning tens of levels in one tile, strong noise the denoiser left) is
 * still stretched up to 3x, and at low noise levels (sigma around 5) a
 * textured photo can come out slightly noisier than its enhanced clean
 * version; the width threshold is in levels, so a tone band at its edge
 * (7 to 9 levels of std) is spread a little more by each application;
 * noise below the 2-level floor is left alone; contrast works on luma, so
 * saturated colours keep their chroma while their luma changes.
 *
 * Memory for one image of P pixels: two float planes (luma, its blur),
 * 8 B/px, plus guided-filter strips of about P/8 and a few hundred KiB of
 * histograms; at 2048x2048 the peak is 0.45 (clean) to 0.55 (noisy) of the
 * 3 x (input + output) budget. Per-thread histograms are integers and float
 * sums are reduced per row in a fixed order, so the output does not depend
 * on the thread count.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/imageops/filter.h"
#include "backends/imageops/image_op.h"

/* ---- tunables (values in [0, 1] units unless a unit is named) ---- */

#define CLIPPED_U8 250                  /* a channel at or above this is treated as clipped */
#define AWB_DEAD_ZONE 0.03              /* log-chroma cast ignored below this */
#define AWB_MAX_LOG 0.25                /* soft limit of the applied log-chroma correction */
#define AWB_FADE_FROM 0.85              /* gains fade to 1 as the pixel max goes from here to 1 */
#define LEVELS_TAIL 0.002               /* fraction of pixels allowed past black / the top */
#define LEVELS_TOP 0.98                 /* where the brightest channel values are stretched to */
#define LEVELS_MAX_GAIN 3.0             /* largest levels stretch */
#define NOISE_BINS 16384                /* |Laplacian| histogram, quarter luma levels per bin */
#define NOISE_FLOOR_LEVELS 2.0          /* noise sigma (in 0..255 levels) below which nothing is denoised */
#define LUMA_RADIUS 2                   /* guided filter box radius on luma */
#define LUMA_EPS_K 4.0                  /* luma eps = K * (sigma^2 - floor^2) */
#define CHROMA_RADIUS 2                 /* guided filter box radius on half-size chroma */
#define CHROMA_EPS_K 2.0                /* chroma eps = K * (sigma^2 - floor^2) */
#define STRIP_MIN_ROWS 16               /* guided filters run on strips of H/8 rows, at least this */
#define NODES_MAX 8                     /* contrast nodes per axis */
#define NODE_MIN_PIXELS 24              /* fewer nodes on small images: one per this many pixels */
#define BINS 256                        /* contrast histogram bins over [0, 1] */
#define WEIGHT_ONE 64                   /* tent weights are quantised to 1/64 in the histograms */
#define DENSITY_CAP 2.0                 /* tones denser than this x the tile mean get stretched */
#define MAX_SLOPE 3.0                   /* ... by at most this much */
#define WIDTH_RADIUS 32                 /* a tone's width: std of the tile's tones within this many bins */
#define WIDTH_NARROW 7.0                /* tones narrower than this (std, levels) are not spread apart ... */
#define WIDTH_FULL 9.0                  /* ... wider than this may be, by up to the max slope */
#define TILE_TAIL 0.005                 /* a tile's range excludes this fraction at each end */
#define CONTRAST_PASSES 3               /* equalisation passes, each on the previous result */
#define COUNT_ALL_BELOW 64              /* tiles narrower than 2x this count every pixel, others one in four */
#define SHARP_SIGMA 1.0f                /* unsharp-mask blur */
#define SHARP_RATIO 0.36                /* target energy ratio, finest Laplacian / next octave */
#define SHARP_MAX 1.5                   /* largest unsharp-mask amount */
#define KNEE 0.95f                      /* channel values above max(this, input max) are compressed */
#define TOP_UNCLIPPED (254.4f / 255.0f) /* ceiling for pixels that were not clipped */

#define ROW_GRAIN 4

static const float luma_r = 0.299f, luma_g = 0.587f, luma_b = 0.114f;

/* Stage settings for one STRENGTH s: up to 1 the full enhancement is only
 * blended with the input; above 1 the stages themselves run stronger (noise
 * reduction included: extrapolating a blend would add inverted noise). */
typedef struct enhance_params {
    double awb_max_log; /* AWB_MAX_LOG x s: more of a cast is removed */
    double density_cap; /* 1 + (DENSITY_CAP - 1) / s: more tones count as dense */
    double max_slope;   /* MAX_SLOPE x sqrt(s) */
    double sharp_ratio; /* SHARP_RATIO x s^(1/4): a sharper target */
    double sharp_max;   /* SHARP_MAX x s */
    double denoise_k;   /* s: eps multiplier of both guided filters */
    float blend;        /* min(s, 1): output = input + blend * (enhanced - input) */
} enhance_params;

static enhance_params
params_for_strength(double s)
{
    enhance_params p = {AWB_MAX_LOG, DENSITY_CAP, MAX_SLOPE, SHARP_RATIO, SHARP_MAX, 1.0, 1.0f};
    if (s <= 1.0) {
        p.blend = (float)s;
        return p;
    }
    p.awb_max_log = AWB_MAX_LOG * s;
    p.density_cap = 1.0 + (DENSITY_CAP - 1.0) / s;
    p.max_slope = MAX_SLOPE * sqrt(s);
    p.sharp_ratio = SHARP_RATIO * sqrt(sqrt(s));
    p.sharp_max = SHARP_MAX * s;
    p.denoise_k = s;
    return p;
}

static imagen_error *
out_of_memory(const imagen__image_task *task)
{
    return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory (enhance)", task->model);
}

static inline uint8_t
max3(const uint8_t *p)
{
    uint8_t m = p[0] > p[1] ? p[0] : p[1];
    return m > p[2] ? m : p[2];
}

static inline float
minf(float a, float b)
{
    return a < b ? a : b;
}

static inline float
maxf(float a, float b)
{
    return a > b ? a : b;
}

static inline float
clampf(float v, float lo, float hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Rows per guided-filter strip: about 1/8 of the image, never less than
 * twice the filter's reach. */
static size_t
strip_rows(size_t height, size_t halo)
{
    size_t s = (height + 7) / 8;
    if (s < STRIP_MIN_ROWS)
        s = STRIP_MIN_ROWS;
    if (s < 2 * halo)
        s = 2 * halo;
    return s;
}

/* ---------------------------------------------------------------------
 * Input statistics: grey-edge sums and the noise histogram
 * ------------------------------------------------------------------- */

typedef struct stats_job {
    const uint8_t *in;
    size_t width, height;
    uint64_t *edge;  /* per worker: |dR|, |dG|, |dB| summed over unclipped neighbour pairs */
    uint32_t *noise; /* per worker: NOISE_BINS counts of |3x3 Laplacian of luma| */
    int32_t *rows;   /* per worker: 3 rows of integer luma (x256) */
    uint8_t *ok;     /* per worker: 2 rows of "no channel clipped" flags */
} stats_job;

static void
row_facts(const uint8_t *p, size_t width, int32_t *luma, uint8_t *ok)
{
    for (size_t x = 0; x < width; x++, p += 3) {
        luma[x] = 77 * p[0] + 150 * p[1] + 29 * p[2];
        ok[x] = p[0] < CLIPPED_U8 && p[1] < CLIPPED_U8 && p[2] < CLIPPED_U8;
    }
}

static void
stats_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const stats_job *j = ctx;
    const size_t w = j->width, h = j->height;
    uint64_t e0 = 0, e1 = 0, e2 = 0;
    uint32_t *noise = j->noise + (size_t)NOISE_BINS * worker;
    int32_t *r[3] = {j->rows + 3 * w * worker, j->rows + 3 * w * worker + w, j->rows + 3 * w * worker + 2 * w};
    uint8_t *ok = j->ok + 2 * w * worker, *ok_below = ok + w;
    /* Rolling rows: r[0..2] hold luma of rows y - 1, y, y + 1. */
    if (begin > 0)
        row_facts(j->in + (begin - 1) * w * 3, w, r[0], ok);
    row_facts(j->in + begin * w * 3, w, r[1], ok);
    for (size_t y = begin; y < end; y++) {
        const uint8_t *row = j->in + y * w * 3;
        if (y + 1 < h)
            row_facts(row + w * 3, w, r[2], ok_below);
        for (size_t x = 0; x + 1 < w; x++) {
            const uint8_t *p = row + 3 * x;
            uint32_t m = ok[x] & ok[x + 1];
            e0 += m * (uint32_t)abs(p[0] - p[3]);
            e1 += m * (uint32_t)abs(p[1] - p[4]);
            e2 += m * (uint32_t)abs(p[2] - p[5]);
        }
        if (y + 1 < h) {
            const uint8_t *q = row + w * 3;
            for (size_t x = 0; x < w; x++) {
                const uint8_t *p = row + 3 * x;
                uint32_t m = ok[x] & ok_below[x];
                e0 += m * (uint32_t)abs(p[0] - q[3 * x]);
                e1 += m * (uint32_t)abs(p[1] - q[3 * x + 1]);
                e2 += m * (uint32_t)abs(p[2] - q[3 * x + 2]);
            }
        }
        /* Noise: the kernel [1 -2 1; -2 4 -2; 1 -2 1] cancels planes and
         * ramps; on white noise of sigma s its output has sigma 6 s. */
        if (y > 0 && y + 1 < h && w >= 3) {
            const int32_t *a = r[0], *c = r[1], *d = r[2];
            for (size_t x = 1; x + 1 < w; x++) {
                int32_t v = a[x - 1] - 2 * a[x] + a[x + 1] - 2 * c[x - 1] + 4 * c[x] - 2 * c[x + 1] + d[x - 1] -
                            2 * d[x] + d[x + 1];
                uint32_t bin = (uint32_t)(v < 0 ? -v : v) >> 6; /* quarter levels */
                noise[bin < NOISE_BINS ? bin : NOISE_BINS - 1]++;
            }
        }
        int32_t *t = r[0];
        r[0] = r[1];
        r[1] = r[2];
        r[2] = t;
        uint8_t *tk = ok;
        ok = ok_below;
        ok_below = tk;
    }
    j->edge[3 * worker] += e0;
    j->edge[3 * worker + 1] += e1;
    j->edge[3 * worker + 2] += e2;
}

/* ---------------------------------------------------------------------
 * White balance and levels: one colour transform per pixel
 * ------------------------------------------------------------------- */

/* c[ch] = gain[ch][max of the input pixel] * in[ch] + offset, in [0, 1]
 * units (the gains include 1/255). */
typedef struct colour_map {
    float gain[3][256];
    float offset;
} colour_map;

static inline void
colour_apply(const colour_map *cm, const uint8_t *p, float *c)
{
    uint8_t m = max3(p);
    c[0] = cm->gain[0][m] * p[0] + cm->offset;
    c[1] = cm->gain[1][m] * p[1] + cm->offset;
    c[2] = cm->gain[2][m] * p[2] + cm->offset;
}

/* Gains from the grey-edge sums: the correction that equalises the three
 * channels' edge energy, shrunk by the dead zone, softly limited, and
 * normalised to keep luma. Writes gains into cm with offset 0. */
static void
white_balance(const uint64_t edge[3], const enhance_params *prm, colour_map *cm)
{
    double g[3] = {1.0, 1.0, 1.0};
    if (edge[0] > 0 && edge[1] > 0 && edge[2] > 0) {
        double u = log((double)edge[1] / (double)edge[0]); /* log(gain R / gain G) */
        double v = log((double)edge[1] / (double)edge[2]);
        double mag = hypot(u, v);
        double keep = 0.0;
        if (mag > AWB_DEAD_ZONE)
            keep = prm->awb_max_log * tanh((mag - AWB_DEAD_ZONE) / prm->awb_max_log) / mag;
        g[0] = exp(u * keep);
        g[2] = exp(v * keep);
        double y = luma_r * g[0] + luma_g * g[1] + luma_b * g[2];
        for (int ch = 0; ch < 3; ch++)
            g[ch] /= y;
    }
    for (int m = 0; m < 256; m++) {
        /* Toward clipping the true colour is unknown: keep whites white. */
        double t = ((double)m / 255.0 - AWB_FADE_FROM) / (1.0 - AWB_FADE_FROM);
        t = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
        double keep = 1.0 - t * t * (3.0 - 2.0 * t);
        for (int ch = 0; ch < 3; ch++)
            cm->gain[ch][m] = (float)(pow(g[ch], keep) / 255.0);
    }
    cm->offset = 0.0f;
}

typedef struct levels_job {
    const uint8_t *in;
    size_t width;
    const colour_map *cm;
    uint32_t *hist; /* per worker: BINS of the pixel min, then BINS of the pixel max */
} levels_job;

static inline size_t
bin_of(float v)
{
    float pos = clampf(v, 0.0f, 1.0f) * (float)BINS;
    size_t b = (size_t)pos;
    return b < BINS ? b : BINS - 1;
}

static void
levels_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const levels_job *j = ctx;
    uint32_t *hmin = j->hist + 2 * BINS * worker, *hmax = hmin + BINS;
    for (size_t y = begin; y < end; y++) {
        const uint8_t *p = j->in + y * j->width * 3;
        for (size_t x = 0; x < j->width; x++, p += 3) {
            float c[3];
            colour_apply(j->cm, p, c);
            float lo = minf(c[0], minf(c[1], c[2])), hi = maxf(c[0], maxf(c[1], c[2]));
            hmin[bin_of(lo)]++;
            hmax[bin_of(hi)]++;
        }
    }
}

/* First bin at which the running count reaches `target`. */
static size_t
hist_quantile(const uint64_t *h, size_t n, double target)
{
    double acc = 0.0;
    for (size_t b = 0; b < n; b++) {
        acc += (double)h[b];
        if (acc >= target)
            return b;
    }
    return n - 1;
}

/* Linked stretch c' = a c + b of the three channels: the darkest channel
 * values' LEVELS_TAIL quantile to 0, the brightest ones' to LEVELS_TOP (or
 * further when already there), at most LEVELS_MAX_GAIN. Applied to cm;
 * returns a. */
static double
levels(const uint64_t *hmin, const uint64_t *hmax, size_t pixels, colour_map *cm)
{
    double lo = (double)hist_quantile(hmin, BINS, LEVELS_TAIL * (double)pixels) / BINS;
    double hi = (double)(hist_quantile(hmax, BINS, (1.0 - LEVELS_TAIL) * (double)pixels) + 1) / BINS;
    double new_hi = hi > LEVELS_TOP ? hi : LEVELS_TOP, new_lo = 0.0;
    double span = hi - lo > 1e-6 ? hi - lo : 1e-6;
    double a = (new_hi - new_lo) / span;
    if (a > LEVELS_MAX_GAIN) {
        /* Too flat to stretch fully: stretch about its middle, kept inside. */
        a = LEVELS_MAX_GAIN;
        new_lo = (lo + hi) / 2.0 - a * span / 2.0;
        if (new_lo + a * span > LEVELS_TOP)
            new_lo = LEVELS_TOP - a * span;
        if (new_lo < 0.0)
            new_lo = 0.0;
    }
    double b = new_lo - a * lo;
    for (int ch = 0; ch < 3; ch++)
        for (int m = 0; m < 256; m++)
            cm->gain[ch][m] = (float)(cm->gain[ch][m] * a);
    cm->offset = (float)b;
    return a;
}

/* ---------------------------------------------------------------------
 * Luma plane and noise reduction
 * ------------------------------------------------------------------- */

typedef struct luma_job {
    const uint8_t *in;
    size_t width;
    const colour_map *cm;
    float *y;
} luma_job;

static void
luma_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const luma_job *j = ctx;
    for (size_t y = begin; y < end; y++) {
        const uint8_t *p = j->in + y * j->width * 3;
        float *out = j->y + y * j->width;
        for (size_t x = 0; x < j->width; x++, p += 3) {
            float c[3];
            colour_apply(j->cm, p, c);
            out[x] = luma_r * c[0] + luma_g * c[1] + luma_b * c[2];
        }
    }
}

typedef struct copy_job {
    float *dst;
    const float *src;
} copy_job;

static void
copy_chunks(void *ctx, size_t begin, size_t end, size_t worker)
{
    const copy_job *j = ctx;
    memcpy(j->dst + begin, j->src + begin, (end - begin) * sizeof(float));
}

/* memcpy of n floats, split over the pool. */
static void
copy_floats(imagen__pool *pool, float *dst, const float *src, size_t n)
{
    copy_job j = {.dst = dst, .src = src};
    imagen__pool_for(pool, n, 1 << 16, copy_chunks, &j);
}

/* Guided filter of the luma plane, self-guided, in place, strip by strip so
 * the filter's four work planes cover at most a strip. A strip is filtered
 * with 2 * radius rows of context on each side (the reach of a box of a
 * box), so its core rows come out exactly as from a whole-image filter.
 * The context rows above a strip were overwritten by the previous strip's
 * output; their original values are kept in `saved`. */
static imagen_error *
denoise_luma(const imagen__image_task *task, float *y, float eps)
{
    const size_t w = task->width, h = task->height, halo = 2 * LUMA_RADIUS;
    const size_t rows = strip_rows(h, halo);
    imagen_error *err = NULL;
    float *buf = imagen__plane_alloc(w, rows + 2 * halo), *saved = imagen__plane_alloc(w, halo);
    if (buf == NULL || saved == NULL) {
        err = out_of_memory(task);
        goto done;
    }
    for (size_t y0 = 0; y0 < h; y0 += rows) {
        size_t y1 = y0 + rows < h ? y0 + rows : h;
        size_t lo = y0 > halo ? y0 - halo : 0, hi = y1 + halo < h ? y1 + halo : h;
        memcpy(buf, saved + (halo - (y0 - lo)) * w, (y0 - lo) * w * sizeof(float));
        copy_floats(task->pool, buf + (y0 - lo) * w, y + y0 * w, (hi - y0) * w);
        if ((err = imagen__guided_filter(task->pool, buf, buf, buf, w, hi - lo, LUMA_RADIUS, eps)) != NULL)
            goto done;
        if (y1 < h) /* y1 - halo >= y0 because rows >= 2 * halo */
            memcpy(saved, y + (y1 - halo) * w, halo * w * sizeof(float));
        copy_floats(task->pool, y + y0 * w, buf + (y0 - lo) * w, (y1 - y0) * w);
    }
done:
    imagen__plane_free(buf);
    imagen__plane_free(saved);
    return err;
}

/* ---------------------------------------------------------------------
 * Local contrast
 *
 * Nodes sit at the centres of an nx x ny grid of tiles. A pixel's new luma
 * is the bilinear blend of the LUTs of the (up to) four nodes around it,
 * and each node's histogram counts pixels with those same tent weights, so
 * a node's statistics describe exactly the pixels its LUT acts on.
 * ------------------------------------------------------------------- */

typedef struct axis_nodes {
    uint8_t *node; /* per pixel: node at or before it */
    float *w;      /* per pixel: weight of the next node, [0, 1) */
    uint8_t *wq;   /* w quantised to [0, WEIGHT_ONE] */
} axis_nodes;

typedef struct contrast_job {
    float *y;
    size_t width, nx, ny, nodes;
    axis_nodes cols, rows;
    const float *lut;   /* nodes * (BINS + 1) */
    uint64_t *hist;     /* per worker: nodes * BINS */
    float *row_lut;     /* per worker: nx * (BINS + 1) */
    uint32_t *row_hist; /* per worker: nx * BINS */
    size_t step;        /* count every step-th pixel of every step-th row */
    int map, count;     /* remap y with the LUTs; count the (new) values */
} contrast_job;

static size_t
node_count(size_t len)
{
    size_t n = len / NODE_MIN_PIXELS;
    return n < 1 ? 1 : (n > NODES_MAX ? NODES_MAX : n);
}

static void
axis_setup(size_t len, size_t n, axis_nodes *a)
{
    double tile = (double)len / (double)n, first = tile / 2.0 - 0.5, last = first + (double)(n - 1) * tile;
    for (size_t i = 0; i < len; i++) {
        double pos = (double)i;
        size_t k = 0;
        double w = 0.0;
        if (pos >= last) {
            k = n - 1;
        } else if (pos > first) {
            k = (size_t)((pos - first) / tile);
            if (k > n - 2)
                k = n - 2;
            w = (pos - (first + (double)k * tile)) / tile;
        }
        a->node[i] = (uint8_t)k;
        a->w[i] = (float)w;
        a->wq[i] = (uint8_t)lround(w * WEIGHT_ONE);
    }
}

static inline float
lut_at(const float *lut, size_t b, float frac)
{
    return lut[b] + frac * (lut[b + 1] - lut[b]);
}

/* One row: the vertical blend of the node LUTs is the same along the row,
 * so it is done once per node column; counting goes to a row histogram per
 * node column (horizontal weights) that is spread over the two node rows
 * (vertical weights) at the end of the row. */
static void
contrast_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const contrast_job *j = ctx;
    const size_t lut_len = BINS + 1, nx = j->nx;
    uint64_t *hist = j->hist + worker * j->nodes * BINS;
    float *rl = j->row_lut + worker * nx * lut_len;
    uint32_t *rh = j->row_hist + worker * nx * BINS;
    for (size_t y = begin; y < end; y++) {
        size_t i0 = j->rows.node[y], i1 = i0 + 1 < j->ny ? i0 + 1 : i0;
        float *row = j->y + y * j->width;
        if (j->map) {
            float wy = j->rows.w[y];
            const float *top = j->lut + i0 * nx * lut_len, *bottom = j->lut + i1 * nx * lut_len;
            for (size_t i = 0; i < nx * lut_len; i++)
                rl[i] = top[i] + wy * (bottom[i] - top[i]);
            for (size_t x = 0; x < j->width; x++) {
                size_t k0 = j->cols.node[x], k1 = k0 + 1 < nx ? k0 + 1 : k0;
                float v = row[x], vc = clampf(v, 0.0f, 1.0f), pos = vc * (float)BINS;
                size_t b = (size_t)pos < BINS ? (size_t)pos : BINS - 1;
                float fr = pos - (float)b;
                float left = lut_at(rl + k0 * lut_len, b, fr), right = lut_at(rl + k1 * lut_len, b, fr);
                /* Outside [0, 1] (levels may push a little past) keep the excess. */
                row[x] = left + j->cols.w[x] * (right - left) + (v - vc);
            }
        }
        if (j->count && y % j->step == 0) {
            memset(rh, 0, nx * BINS * sizeof(*rh));
            for (size_t x = 0; x < j->width; x += j->step) {
                size_t k0 = j->cols.node[x], k1 = k0 + 1 < nx ? k0 + 1 : k0, b = bin_of(row[x]);
                uint32_t qx = j->cols.wq[x];
                rh[k0 * BINS + b] += WEIGHT_ONE - qx;
                rh[k1 * BINS + b] += qx;
            }
            uint64_t qy = j->rows.wq[y];
            uint64_t *h0 = hist + i0 * nx * BINS, *h1 = hist + i1 * nx * BINS;
            for (size_t i = 0; i < nx * BINS; i++) {
                h0[i] += rh[i] * (WEIGHT_ONE - qy);
                h1[i] += rh[i] * qy;
            }
        }
    }
}

typedef struct lut_job {
    const uint64_t *hist; /* per worker, summed here */
    size_t workers, nodes;
    const enhance_params *prm;
    float *lut;
} lut_job;

/* One node's LUT from its weighted histogram. Within the tile's range
 * [lo, hi] each bin gets slope s = max(kappa, min(h / (cap * mean), c)),
 * kappa <= 1 chosen so the slopes add up to the range again: dense tones
 * are stretched, sparse ones compressed, the ends stay. The slope limit c
 * rises smoothly from 1 to the max slope as the tones' width around the bin
 * (the std of the tile's tones within WIDTH_RADIUS bins) goes from
 * WIDTH_NARROW to WIDTH_FULL levels: a band only a few levels wide (a flat
 * sky, its gradient, its JPEG blocking and noise) is moved but not spread
 * apart. Bins 0 and BINS - 1 (clipped black and white, which no LUT can
 * spread) are left out. A tile whose histogram is already below the cap
 * gets kappa = 1, the identity, and so does one whose dense tones are all
 * narrow: that is what makes a second application do little. */
static void
node_lut(const double *hist_in, const enhance_params *prm, float *lut)
{
    double h[BINS], total = 0.0;
    static const double kernel[4] = {0.39894228, 0.24197072, 0.05399097, 0.00443185}; /* Gaussian, sigma 1 bin */
    for (int b = 0; b < BINS; b++) {
        double s = 0.0;
        for (int d = -3; d <= 3; d++) {
            int k = b + d;
            if (k >= 1 && k < BINS - 1)
                s += kernel[d < 0 ? -d : d] * hist_in[k];
        }
        h[b] = s;
        total += s;
    }
    for (int b = 0; b <= BINS; b++)
        lut[b] = (float)b / BINS;
    if (total <= 0.0)
        return;
    double acc = 0.0;
    int lo = -1, hi = BINS - 1;
    for (int b = 0; b < BINS; b++) {
        acc += h[b];
        if (lo < 0 && acc >= TILE_TAIL * total)
            lo = b;
        if (acc >= (1.0 - TILE_TAIL) * total) {
            hi = b;
            break;
        }
    }
    int n = hi - lo + 1;
    if (lo < 0 || n < 2)
        return;
    double mass = 0.0, g[BINS];
    for (int b = lo; b <= hi; b++)
        mass += h[b];
    double unit = prm->density_cap * mass / n;
    /* Tonal width around each bin: the standard deviation of the tones
     * within WIDTH_RADIUS bins, from prefix sums of h, b h and b^2 h. */
    double c0[BINS + 1], c1[BINS + 1], c2[BINS + 1];
    c0[0] = c1[0] = c2[0] = 0.0;
    for (int b = 0; b < BINS; b++) {
        c0[b + 1] = c0[b] + h[b];
        c1[b + 1] = c1[b] + h[b] * b;
        c2[b + 1] = c2[b] + h[b] * b * b;
    }
    for (int b = lo; b <= hi; b++) {
        double v = h[b] / unit;
        int a = b - WIDTH_RADIUS < 0 ? 0 : b - WIDTH_RADIUS,
            e = b + WIDTH_RADIUS + 1 > BINS ? BINS : b + WIDTH_RADIUS + 1;
        double m0 = c0[e] - c0[a], var = 0.0;
        if (m0 > 0.0) {
            double m1 = (c1[e] - c1[a]) / m0;
            var = (c2[e] - c2[a]) / m0 - m1 * m1;
        }
        double t = ((var > 0.0 ? sqrt(var) : 0.0) - WIDTH_NARROW) / (WIDTH_FULL - WIDTH_NARROW);
        t = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
        double cap = 1.0 + (prm->max_slope - 1.0) * t * t * (3.0 - 2.0 * t);
        g[b] = v < cap ? v : cap;
    }
    /* sum(max(kappa, g)) is increasing in kappa, below n at 0 (the g sum
     * to n / cap) and at least n at 1. */
    double k_lo = 0.0, k_hi = 1.0;
    for (int it = 0; it < 40; it++) {
        double k = 0.5 * (k_lo + k_hi), s = 0.0;
        for (int b = lo; b <= hi; b++)
            s += g[b] > k ? g[b] : k;
        if (s < n)
            k_lo = k;
        else
            k_hi = k;
    }
    double sum = 0.0;
    for (int b = lo; b <= hi; b++)
        sum += g[b] > k_hi ? g[b] : k_hi;
    double scale = n / sum, pos = lo;
    for (int b = lo; b <= hi; b++) {
        pos += (g[b] > k_hi ? g[b] : k_hi) * scale;
        lut[b + 1] = (float)(pos / BINS);
    }
}

static void
lut_nodes(void *ctx, size_t begin, size_t end, size_t worker)
{
    const lut_job *j = ctx;
    double h[BINS];
    for (size_t t = begin; t < end; t++) {
        for (size_t b = 0; b < BINS; b++) {
            uint64_t s = 0;
            for (size_t k = 0; k < j->workers; k++)
                s += j->hist[(k * j->nodes + t) * BINS + b];
            h[b] = (double)s;
        }
        node_lut(h, j->prm, j->lut + t * (BINS + 1));
    }
}

/* CONTRAST_PASSES equalisation passes over the luma plane, in place. Each
 * remapping pass also counts its output for the next pass's LUTs. */
static imagen_error *
local_contrast(const imagen__image_task *task, const enhance_params *prm, float *y)
{
    const size_t w = task->width, h = task->height, workers = imagen__pool_threads(task->pool);
    contrast_job j = {.y = y, .width = w, .nx = node_count(w), .ny = node_count(h)};
    j.nodes = j.nx * j.ny;
    /* A histogram is a statistic: on tiles of many thousand pixels one
     * pixel in four describes it as well and costs a quarter. */
    j.step = w / j.nx >= 2 * COUNT_ALL_BELOW && h / j.ny >= 2 * COUNT_ALL_BELOW ? 2 : 1;
    imagen_error *err = NULL;
    void *axis_mem = malloc((w + h) * (2 + sizeof(float)));
    float *lut = malloc(j.nodes * (BINS + 1) * sizeof(float));
    uint64_t *hist = malloc(workers * j.nodes * BINS * sizeof(uint64_t));
    j.row_lut = malloc(workers * j.nx * (BINS + 1) * sizeof(float));
    j.row_hist = malloc(workers * j.nx * BINS * sizeof(uint32_t));
    if (axis_mem == NULL || lut == NULL || hist == NULL || j.row_lut == NULL || j.row_hist == NULL) {
        err = out_of_memory(task);
        goto done;
    }
    j.cols.w = axis_mem;
    j.rows.w = j.cols.w + w;
    j.cols.node = (uint8_t *)(j.rows.w + h);
    j.rows.node = j.cols.node + w;
    j.cols.wq = j.rows.node + h;
    j.rows.wq = j.cols.wq + w;
    axis_setup(w, j.nx, &j.cols);
    axis_setup(h, j.ny, &j.rows);
    j.lut = lut;
    lut_job lj = {.hist = hist, .workers = workers, .nodes = j.nodes, .prm = prm, .lut = lut};
    for (int pass = 0; pass <= CONTRAST_PASSES; pass++) {
        j.map = pass > 0;
        j.count = pass < CONTRAST_PASSES;
        j.hist = hist;
        if (j.count)
            memset(hist, 0, workers * j.nodes * BINS * sizeof(uint64_t));
        imagen__pool_for(task->pool, h, ROW_GRAIN, contrast_rows, &j);
        if (j.count)
            imagen__pool_for(task->pool, j.nodes, 1, lut_nodes, &lj);
    }
done:
    free(axis_mem);
    free(lut);
    free(hist);
    free(j.row_lut);
    free(j.row_hist);
    return err;
}

/* ---------------------------------------------------------------------
 * Sharpening amount
 *
 * With D = Y - blur(Y), the unsharp mask Y + a D has Laplacians L1 + a L1D
 * (step 1) and L2 + a L2D (step 2), so their energies are quadratics in a
 * whose six coefficients one pass over the image gives. The amount is the
 * smallest a making E1(a) = ratio * E2(a); an image already at the ratio
 * gets 0, which is what a second application finds.
 * ------------------------------------------------------------------- */

typedef struct sharp_job {
    const float *y, *blur;
    size_t width, height;
    double *sums; /* per row: 6 sums */
} sharp_job;

/* The six products at column x of rows r[0..4] (y - 2 .. y + 2) of the
 * luma and g[0..4] of its blur, with neighbour columns xm2..xp2. */
static inline void
sharp_terms(const float *const *r, const float *const *g, size_t x, size_t xm2, size_t xm1, size_t xp1, size_t xp2,
            float *t)
{
    float c = r[2][x], cd = c - g[2][x];
    float l1 = r[2][xm1] + r[2][xp1] + r[1][x] + r[3][x] - 4.0f * c;
    float l2 = r[2][xm2] + r[2][xp2] + r[0][x] + r[4][x] - 4.0f * c;
    float l1d =
        (r[2][xm1] - g[2][xm1]) + (r[2][xp1] - g[2][xp1]) + (r[1][x] - g[1][x]) + (r[3][x] - g[3][x]) - 4.0f * cd;
    float l2d =
        (r[2][xm2] - g[2][xm2]) + (r[2][xp2] - g[2][xp2]) + (r[0][x] - g[0][x]) + (r[4][x] - g[4][x]) - 4.0f * cd;
    t[0] = l1 * l1;
    t[1] = l1 * l1d;
    t[2] = l1d * l1d;
    t[3] = l2 * l2;
    t[4] = l2 * l2d;
    t[5] = l2d * l2d;
}

static void
sharp_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const sharp_job *j = ctx;
    const size_t w = j->width, h = j->height;
    for (size_t yy = begin; yy < end; yy++) {
        const float *r[5], *g[5];
        for (int d = -2; d <= 2; d++) {
            long ry = (long)yy + d;
            size_t cy = ry < 0 ? 0 : ((size_t)ry >= h ? h - 1 : (size_t)ry);
            r[d + 2] = j->y + cy * w;
            g[d + 2] = j->blur + cy * w;
        }
        /* Float sums along one row (at most a few thousand terms), then
         * double across rows. */
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, t[6];
        for (size_t x = 2; x + 2 < w; x++) {
            sharp_terms(r, g, x, x - 2, x - 1, x + 1, x + 2, t);
            s0 += t[0];
            s1 += t[1];
            s2 += t[2];
            s3 += t[3];
            s4 += t[4];
            s5 += t[5];
        }
        for (size_t x = 0; x < w; x++) {
            if (x == 2 && w > 4)
                x = w - 2; /* interior done above */
            size_t xm1 = x > 0 ? x - 1 : 0, xm2 = x > 1 ? x - 2 : 0;
            size_t xp1 = x + 1 < w ? x + 1 : w - 1, xp2 = x + 2 < w ? x + 2 : w - 1;
            sharp_terms(r, g, x, xm2, xm1, xp1, xp2, t);
            s0 += t[0];
            s1 += t[1];
            s2 += t[2];
            s3 += t[3];
            s4 += t[4];
            s5 += t[5];
        }
        double *out = j->sums + 6 * yy;
        out[0] = s0;
        out[1] = s1;
        out[2] = s2;
        out[3] = s3;
        out[4] = s4;
        out[5] = s5;
    }
}

static double
sharp_amount(const double *sums, size_t height, const enhance_params *prm)
{
    double t[6] = {0};
    for (size_t y = 0; y < height; y++) /* fixed order: same result for any thread count */
        for (int k = 0; k < 6; k++)
            t[k] += sums[6 * y + k];
    double c0 = t[0] - prm->sharp_ratio * t[3], c1 = 2.0 * (t[1] - prm->sharp_ratio * t[4]),
           c2 = t[2] - prm->sharp_ratio * t[5];
#define F(a) (c0 + (a) * (c1 + (a)*c2))
    if (F(0.0) >= 0.0)
        return 0.0;
    if (F(prm->sharp_max) < 0.0)
        return prm->sharp_max;
    double lo = 0.0, hi = prm->sharp_max;
    for (int it = 0; it < 50; it++) {
        double mid = 0.5 * (lo + hi);
        if (F(mid) < 0.0)
            lo = mid;
        else
            hi = mid;
    }
#undef F
    return hi;
}

/* ---------------------------------------------------------------------
 * Composition
 * ------------------------------------------------------------------- */

typedef struct compose_job {
    const uint8_t *in;
    uint8_t *out;
    size_t width;
    const colour_map *cm;
    const float *y, *blur; /* enhanced luma before sharpening, its blur */
    float amount;          /* unsharp-mask amount */
    float blend;
    /* Denoised chroma (R - Y, B - Y) of rows [chroma_y0, ...), or NULL to
     * take the chroma of each input pixel. */
    const float *chroma_r, *chroma_b;
    size_t chroma_y0;
    float chroma_mix; /* weight of the denoised chroma against the pixel's own */
    size_t row0;      /* task rows are row0 + [begin, end) */
} compose_job;

static void
compose_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const compose_job *j = ctx;
    const float k_inv = 1.0f / 255.0f;
    for (size_t y = j->row0 + begin; y < j->row0 + end; y++) {
        const uint8_t *p = j->in + y * j->width * 3;
        uint8_t *o = j->out + y * j->width * 3;
        const float *yr = j->y + y * j->width, *br = j->blur + y * j->width;
        const float *cr = j->chroma_r ? j->chroma_r + (y - j->chroma_y0) * j->width : NULL;
        const float *cb = j->chroma_b ? j->chroma_b + (y - j->chroma_y0) * j->width : NULL;
        for (size_t x = 0; x < j->width; x++, p += 3, o += 3) {
            float c[3], d[3];
            colour_apply(j->cm, p, c);
            float y0 = luma_r * c[0] + luma_g * c[1] + luma_b * c[2];
            d[0] = c[0] - y0;
            d[1] = c[1] - y0;
            d[2] = c[2] - y0;
            if (cr != NULL) {
                d[0] += j->chroma_mix * (cr[x] - d[0]);
                d[2] += j->chroma_mix * (cb[x] - d[2]);
                d[1] = -(luma_r * d[0] + luma_b * d[2]) / luma_g;
            }
            float y1 = yr[x] + j->amount * (yr[x] - br[x]);
            float base = y1 > 0.0f ? y1 : 0.0f, v[3];
            for (int ch = 0; ch < 3; ch++)
                v[ch] = base + d[ch];
            /* Below black: desaturate toward the luma until the lowest
             * channel is 0. */
            float lo = minf(v[0], minf(v[1], v[2]));
            if (lo < 0.0f) {
                float t = base / (base - lo);
                for (int ch = 0; ch < 3; ch++)
                    v[ch] = base + t * d[ch];
            }
            /* Above the knee: compress the brightest channel smoothly below
             * the ceiling (255 only where the input was clipped), scaling
             * the pixel to keep its hue. */
            uint8_t in_max = max3(p);
            float ceiling = in_max == 255 ? 1.0f : TOP_UNCLIPPED;
            float knee = minf(maxf(in_max * k_inv, KNEE), ceiling);
            float hi = maxf(v[0], maxf(v[1], v[2]));
            if (hi > knee) {
                float room = ceiling - knee;
                float to = room > 0.0f ? knee + room * (1.0f - expf(-(hi - knee) / room)) : ceiling;
                for (int ch = 0; ch < 3; ch++)
                    v[ch] *= to / hi;
            }
            for (int ch = 0; ch < 3; ch++) {
                float f = p[ch] * k_inv;
                float r = f + j->blend * (v[ch] - f);
                o[ch] = (uint8_t)(clampf(r, 0.0f, 1.0f) * 255.0f + 0.5f);
            }
        }
    }
}

typedef struct chroma_job {
    const uint8_t *in;
    size_t width, y0;
    const colour_map *cm;
    float *r, *b; /* rows from y0 */
} chroma_job;

static void
chroma_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const chroma_job *j = ctx;
    for (size_t y = begin; y < end; y++) {
        const uint8_t *p = j->in + (j->y0 + y) * j->width * 3;
        float *r = j->r + y * j->width, *b = j->b + y * j->width;
        for (size_t x = 0; x < j->width; x++, p += 3) {
            float c[3];
            colour_apply(j->cm, p, c);
            float y0 = luma_r * c[0] + luma_g * c[1] + luma_b * c[2];
            r[x] = c[0] - y0;
            b[x] = c[2] - y0;
        }
    }
}

/* Composition with chroma noise reduction, strip by strip: the chroma of
 * the strip (plus context rows) is halved in each direction, filtered there
 * with the halved final luma as guide (chroma carries little fine detail,
 * and a quarter of the pixels costs a quarter), brought back to full size
 * and composed with the strip's rows. */
static imagen_error *
compose_denoised(const imagen__image_task *task, compose_job *cj, float eps, float mix)
{
    const size_t w = task->width, h = task->height, hw = (w + 1) / 2;
    /* Context: the half-size filter reaches 2 * radius half rows, the
     * linear upsampling one more. Even, so strips start on even rows. */
    const size_t halo = 4 * CHROMA_RADIUS + 2;
    const size_t rows = (strip_rows(h, halo) + 1) & ~(size_t)1, max_n = rows + 2 * halo;
    imagen_error *err = NULL;
    float *r = imagen__plane_alloc(w, max_n), *b = imagen__plane_alloc(w, max_n);
    float *hr = imagen__plane_alloc(hw, (max_n + 1) / 2), *hb = imagen__plane_alloc(hw, (max_n + 1) / 2);
    float *hg = imagen__plane_alloc(hw, (max_n + 1) / 2);
    if (r == NULL || b == NULL || hr == NULL || hb == NULL || hg == NULL) {
        err = out_of_memory(task);
        goto done;
    }
    for (size_t y0 = 0; y0 < h; y0 += rows) {
        size_t y1 = y0 + rows < h ? y0 + rows : h;
        size_t lo = y0 > halo ? y0 - halo : 0, hi = y1 + halo < h ? y1 + halo : h, n = hi - lo, hn = (n + 1) / 2;
        chroma_job ch = {.in = task->in, .width = w, .y0 = lo, .cm = cj->cm, .r = r, .b = b};
        imagen__pool_for(task->pool, n, ROW_GRAIN, chroma_rows, &ch);
        if ((err = imagen__resize_plane(task->pool, r, w, n, hr, hw, hn, IMAGEN_KERNEL_BOX)) != NULL ||
            (err = imagen__resize_plane(task->pool, b, w, n, hb, hw, hn, IMAGEN_KERNEL_BOX)) != NULL ||
            (err = imagen__resize_plane(task->pool, cj->y + lo * w, w, n, hg, hw, hn, IMAGEN_KERNEL_BOX)) != NULL ||
            (err = imagen__guided_filter(task->pool, hg, hr, hr, hw, hn, CHROMA_RADIUS, eps)) != NULL ||
            (err = imagen__guided_filter(task->pool, hg, hb, hb, hw, hn, CHROMA_RADIUS, eps)) != NULL ||
            (err = imagen__resize_plane(task->pool, hr, hw, hn, r, w, n, IMAGEN_KERNEL_LINEAR)) != NULL ||
            (err = imagen__resize_plane(task->pool, hb, hw, hn, b, w, n, IMAGEN_KERNEL_LINEAR)) != NULL)
            goto done;
        cj->chroma_r = r;
        cj->chroma_b = b;
        cj->chroma_y0 = lo;
        cj->chroma_mix = mix;
        cj->row0 = y0;
        imagen__pool_for(task->pool, y1 - y0, ROW_GRAIN, compose_rows, cj);
    }
done:
    imagen__plane_free(r);
    imagen__plane_free(b);
    imagen__plane_free(hr);
    imagen__plane_free(hb);
    imagen__plane_free(hg);
    return err;
}

/* ---------------------------------------------------------------------
 * The operation
 * ------------------------------------------------------------------- */

/* Noise sigma of the input luma in 0..255 levels: the 25th percentile of
 * |Laplacian| (texture inflates the upper quantiles far more than the
 * lower ones), over the 0.3186 * 6 that white noise of sigma 1 gives. */
static double
noise_sigma(const uint64_t *hist, size_t interior)
{
    if (interior == 0)
        return 0.0;
    size_t bin = hist_quantile(hist, NOISE_BINS, 0.25 * (double)interior);
    return ((double)bin + 0.5) / 4.0 / (0.3186 * 6.0);
}

/* process() of the operation (image_op.h): the six stages of the header
 * comment on one image. Allocates two planes of the image's size plus
 * small buffers, all freed before returning (on errors too); fails only
 * with INTERNAL "out of memory". */
static imagen_error *
enhance_process(const imagen__image_task *task)
{
    const size_t w = task->width, h = task->height, workers = imagen__pool_threads(task->pool);
    const double strength = task->controls[0];
    if (strength == 0.0) {
        memcpy(task->out, task->in, w * h * 3);
        return NULL;
    }
    const enhance_params prm = params_for_strength(strength);
    imagen_error *err = NULL;
    colour_map *cm = malloc(sizeof(*cm));
    uint64_t *edge = calloc(3 * workers, sizeof(uint64_t));
    uint32_t *noise = calloc((size_t)NOISE_BINS * workers, sizeof(uint32_t));
    int32_t *luma_rows_buf = malloc(3 * w * workers * sizeof(int32_t));
    uint8_t *ok_rows = malloc(2 * w * workers);
    uint32_t *lhist = calloc(2 * BINS * workers, sizeof(uint32_t));
    uint64_t *sum_noise = calloc(NOISE_BINS, sizeof(uint64_t)), *sum_levels = calloc(2 * BINS, sizeof(uint64_t));
    float *y = imagen__plane_alloc(w, h), *blur = NULL;
    double *sharp_sums = NULL;
    if (cm == NULL || edge == NULL || noise == NULL || luma_rows_buf == NULL || ok_rows == NULL || lhist == NULL ||
        sum_noise == NULL || sum_levels == NULL || y == NULL) {
        err = out_of_memory(task);
        goto done;
    }

    /* 1. Statistics of the input. */
    stats_job sj = {
        .in = task->in, .width = w, .height = h, .edge = edge, .noise = noise, .rows = luma_rows_buf, .ok = ok_rows};
    imagen__pool_for(task->pool, h, ROW_GRAIN, stats_rows, &sj);
    uint64_t edge_sum[3] = {0, 0, 0};
    for (size_t k = 0; k < workers; k++) {
        for (int ch = 0; ch < 3; ch++)
            edge_sum[ch] += edge[3 * k + ch];
        for (size_t b = 0; b < NOISE_BINS; b++)
            sum_noise[b] += noise[(size_t)NOISE_BINS * k + b];
    }
    size_t interior = w >= 3 && h >= 3 ? (w - 2) * (h - 2) : 0;

    /* 2. White balance, then levels measured on the balanced colours. */
    white_balance(edge_sum, &prm, cm);
    levels_job lj = {.in = task->in, .width = w, .cm = cm, .hist = lhist};
    imagen__pool_for(task->pool, h, ROW_GRAIN, levels_rows, &lj);
    for (size_t k = 0; k < workers; k++)
        for (size_t b = 0; b < 2 * BINS; b++)
            sum_levels[b] += lhist[2 * BINS * k + b];
    double stretch = levels(sum_levels, sum_levels + BINS, w * h, cm);

    /* 3. Luma, denoised where the (stretched) noise is above the floor. */
    luma_job yj = {.in = task->in, .width = w, .cm = cm, .y = y};
    imagen__pool_for(task->pool, h, ROW_GRAIN, luma_rows, &yj);
    double sigma = noise_sigma(sum_noise, interior) * stretch;
    double excess = (sigma * sigma - NOISE_FLOOR_LEVELS * NOISE_FLOOR_LEVELS) / (255.0 * 255.0);
    bool denoise = excess > 0.0;
    if (denoise && (err = denoise_luma(task, y, (float)(LUMA_EPS_K * prm.denoise_k * excess))) != NULL)
        goto done;

    /* 4. Local contrast. */
    if ((err = local_contrast(task, &prm, y)) != NULL)
        goto done;

    /* 5. Sharpening amount. */
    blur = imagen__plane_alloc(w, h);
    sharp_sums = malloc(6 * h * sizeof(double));
    if (blur == NULL || sharp_sums == NULL) {
        err = out_of_memory(task);
        goto done;
    }
    if ((err = imagen__gaussian_blur(task->pool, y, blur, w, h, SHARP_SIGMA)) != NULL)
        goto done;
    sharp_job shj = {.y = y, .blur = blur, .width = w, .height = h, .sums = sharp_sums};
    imagen__pool_for(task->pool, h, ROW_GRAIN, sharp_rows, &shj);
    double amount = sharp_amount(sharp_sums, h, &prm);

    /* 6. Composition. */
    compose_job cj = {.in = task->in,
                      .out = task->out,
                      .width = w,
                      .cm = cm,
                      .y = y,
                      .blur = blur,
                      .amount = (float)amount,
                      .blend = prm.blend};
    if (denoise) {
        /* The half-size chroma differs from the pixel's own even with no
         * filtering: phase it in over the first level above the floor so
         * the output does not jump as the noise estimate crosses it. */
        double t = sigma - NOISE_FLOOR_LEVELS;
        t = t > 1.0 ? 1.0 : t;
        err = compose_denoised(task, &cj, (float)(CHROMA_EPS_K * prm.denoise_k * excess), (float)(t * t * (3 - 2 * t)));
    } else
        imagen__pool_for(task->pool, h, ROW_GRAIN, compose_rows, &cj);
done:
    free(cm);
    free(edge);
    free(noise);
    free(luma_rows_buf);
    free(ok_rows);
    free(lhist);
    free(sum_noise);
    free(sum_levels);
    free(sharp_sums);
    imagen__plane_free(y);
    imagen__plane_free(blur);
    return err;
}

static const imagen__image_op_desc enhance_desc = {
    .operation = "enhance",
    .n_controls = 1,
    .controls = {{"STRENGTH", IMAGEN_TYPE_FP32, 1.0, 0.0, 2.0}},
    .out_channels = 3,
    .has_mask = false,
    .process = enhance_process,
};

IMAGEN__IMAGE_OP_ROW(enhance, "enhance", enhance_desc);
