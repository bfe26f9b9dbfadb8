/*
 * imageops operation `style_aged`: makes a photo look like an old print.
 *
 * Per pixel, in one pass over rows split across the instance's pool:
 *   1. tone: BT.601 luma goes through a faded curve (blacks lifted to 0.10,
 *      whites dulled to 0.88, mid-tones slightly raised), then is toned
 *      sepia (per-channel powers: warm browns in the shadows, cream in the
 *      highlights) or, at SEPIA 0, only warmed as a faded colour print;
 *   2. colour: a share of the input's own chroma (luma-relative) is added
 *      back: 15% at SEPIA 1, 55% at SEPIA 0, less in blue;
 *   3. film grain: a lattice of Gaussian white noise hashed from (SEED, x,
 *      y), blurred into clumps and interpolated to the pixel grid, added to
 *      the tone with a weight that peaks in the mid-tones; one lattice cell
 *      is one pixel up to a 1024-pixel short side and grows beyond, so the
 *      grain looks alike at any resolution;
 *   4. vignette: darkening with the fourth power of the distance from the
 *      centre relative to the half-diagonal (40% in the corners, more in
 *      blue so edges turn brown);
 *   5. dust (DUST > 0): up to 120 lumpy elliptic specks (70% bright, as
 *      dust on a negative prints white) and 5 long, thin, wobbling and
 *      broken vertical scratches, all placed and sized relative to the
 *      image from SEED.
 * STRENGTH scales everything (the curve and chroma are blended with the
 * input, grain, vignette and dust opacity are multiplied), and STRENGTH 0
 * returns the input bytes unchanged whatever the other controls.
 *
 * Determinism: every random number is a hash of SEED and a lattice
 * coordinate or a dust index, never a sequential generator, so the bytes do
 * not depend on the pool size or on how rows are split. The dust of a
 * smaller DUST is a subset of the dust of a larger one (same SEED).
 *
 * Weaknesses: the look is a fixed recipe (no paper texture, creases, torn
 * corners, hairs or fibres, no dye shifts between shadows and highlights);
 * the vignette is always centred and follows the image's aspect; grain on
 * images with a short side above 1024 pixels is bilinearly interpolated
 * from a coarser lattice, so it is slightly softer than one-pixel grain;
 * dust ignores the picture (a bright speck on white paper is invisible);
 * the chroma kept is a fixed share, so a vividly coloured input keeps a
 * visible tint even at SEPIA 1.
 *
 * Memory: the grain lattice (4 bytes per cell, one cell per pixel at most),
 * what imagen__gaussian_blur() needs for it, 8 bytes per column, and per
 * pool thread one lattice row plus three 512-float row blocks.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/imageops/filter.h"
#include "backends/imageops/image_op.h"

/* ---- tunables ---------------------------------------------------------- */

/* Indices of style_aged_desc.controls. */
enum { AGED_STRENGTH, AGED_SEED, AGED_DUST, AGED_SEPIA };

/* Luma index (77 R + 150 G + 29 B) >> 6 of an 8-bit pixel spans 0..1020:
 * four times finer than 8 bits, so the curve adds no banding. */
#define AGED_LUMA_LEVELS 1021
#define AGED_LUMA_SHIFT 6

#define AGED_BLACK 0.10      /* tone of input black at strength 1 (lifted, as a faded print) */
#define AGED_WHITE 0.88      /* tone of input white (dull paper instead of bright white) */
#define AGED_TONE_GAMMA 0.92 /* below 1 raises the mid-tones a little, as an overexposed print */

/* Per-channel exponents applied to the tone. Above 1 darkens the channel in
 * the mid-tones, so (<1, ~1, >1) makes browns that turn cream towards white. */
static const double aged_sepia_exp[3] = {0.85, 0.97, 1.22};
static const double aged_faded_exp[3] = {0.92, 0.98, 1.12};
#define AGED_SEPIA_CHROMA 0.15 /* share of the input's chroma kept at SEPIA 1 */
#define AGED_FADED_CHROMA 0.55 /* at SEPIA 0 */
/* Chroma kept per channel relative to the above: blue dyes fade first. */
static const double aged_chroma_chan[3] = {1.0, 1.0, 0.85};

#define AGED_GRAIN_STD 0.030      /* grain std in the mid-tones at strength 1, [0, 1] units (~7.7/255) */
#define AGED_GRAIN_FLOOR 0.25     /* share of that std left in the deepest shadows and highlights */
#define AGED_GRAIN_SIGMA 0.7f     /* lattice blur, in cells: clumps two to three cells across */
#define AGED_GRAIN_CELL_SIDE 1024 /* short side (pixels) beyond which a grain cell grows past 1 pixel */

#define AGED_VIGNETTE 0.40 /* darkening of green in the corners at strength 1 */
static const double aged_vignette_chan[3] = {0.85, 1.0, 1.2};

#define AGED_MAX_SPECKS 120  /* specks at DUST 1, whatever the image size */
#define AGED_MAX_SCRATCHES 5 /* scratches at DUST 1 */
static const float aged_bright_dust[3] = {0.95f, 0.93f, 0.87f};
static const float aged_dark_dust[3] = {0.10f, 0.08f, 0.06f};

#define AGED_BLOCK_PIXELS 512       /* columns per row block: three float rows of it stay in L1 */
#define AGED_CHUNK_PIXELS_MIN 65536 /* smallest pool chunk, in pixels: amortises the hand-out */

/* ---- counter-based hashing --------------------------------------------- */

/* A 64-bit finaliser (xor-shifts and multiplies; the shifts and constants
 * of David Stafford's "Mix01" variant of the MurmurHash3 finaliser): every
 * input bit flips about half of the output bits, so consecutive counters
 * give independent-looking values. */
static inline uint64_t
mix64(uint64_t z)
{
    z ^= z >> 31;
    z *= UINT64_C(0x7fb5d329728ea185);
    z ^= z >> 27;
    z *= UINT64_C(0x81dadef4bc2dd44d);
    z ^= z >> 33;
    return z;
}

#define AGED_GOLDEN UINT64_C(0x9e3779b97f4a7c15) /* 2^64 / phi: spreads counters */
#define AGED_SALT_GRAIN UINT64_C(0x6772616e)     /* separates the grain's and the dust's streams */
#define AGED_SALT_DUST UINT64_C(0x64757374)

/* Approximately standard normal: the sum of the hash's four 16-bit fields
 * (Irwin-Hall, four terms), centred and scaled to unit variance. */
static inline float
hash_gauss(uint64_t h)
{
    uint32_t sum =
        (uint32_t)(h & 0xffff) + (uint32_t)((h >> 16) & 0xffff) + (uint32_t)((h >> 32) & 0xffff) + (uint32_t)(h >> 48);
    /* mean 4 * 65535 / 2; variance 4 * (65536^2 - 1) / 12 */
    return ((float)sum - 131070.0f) * (1.0f / 37837.2f);
}

/* Uniform in [0, 1) from the top 24 bits. */
static inline float
hash_unit(uint64_t h)
{
    return (float)(h >> 40) * (1.0f / 16777216.0f);
}

/* A stream of uniforms for one dust item: item k of a stream is a pure
 * function of (key, k), so items do not depend on how many there are. */
typedef struct aged_rng {
    uint64_t state;
} aged_rng;

static float
rng_unit(aged_rng *r)
{
    r->state += AGED_GOLDEN;
    return hash_unit(mix64(r->state));
}

/* ---- per-image state --------------------------------------------------- */

/* A lumpy ellipse blended towards `level`: its radius in direction phi
 * (from the major axis) is scaled by 1 + lobe . (cos 2phi, sin 2phi,
 * cos 3phi, sin 3phi), so no two specks have the same outline. */
typedef struct aged_speck {
    float cx, cy;           /* centre, pixel units (pixel x covers [x, x + 1)) */
    float cos_t, sin_t;     /* orientation of the major axis */
    float inv_a, inv_b;     /* 1 / semi-axis, major and minor */
    float lobe[4];          /* outline harmonics, each in [-0.12, 0.12] */
    float edge;             /* minor semi-axis in pixels: sets the antialiased edge */
    float alpha;            /* opacity at the centre, strength included */
    const float *level;     /* RGB it blends towards (aged_bright_dust or aged_dark_dust) */
    int64_t x0, x1, y0, y1; /* pixel bounding box, inclusive, clipped to the image */
} aged_speck;

/* A thin near-vertical line, broken into segments by 1-D value noise. */
typedef struct aged_scratch {
    float x, slope;     /* centre column at row 0 and its drift per row */
    float wobble_amp;   /* pixels */
    float wobble_freq;  /* radians per row */
    float wobble_phase; /* radians */
    float half_width;   /* pixels, >= 0.5 */
    float alpha;        /* opacity where unbroken, strength included */
    float break_period; /* rows per value-noise cell of the breaks */
    uint64_t key;       /* hash key of the breaks */
    const float *level; /* RGB it blends towards */
    int64_t y0, y1;     /* rows covered, inclusive, clipped */
} aged_scratch;

/* Everything the row task reads; built on the instance thread, read-only
 * while the pool runs. */
typedef struct aged_job {
    const imagen__image_task *task;
    /* Tone of a grey of luma index i, per channel, strength blended in,
     * minus chroma_gain * luma (so a pixel is base + gain * channel / 255). */
    float base[3][AGED_LUMA_LEVELS];
    /* Grain std for luma index i (strength and lattice blur loss included). */
    float grain_amp[AGED_LUMA_LEVELS];
    float chroma_gain[3]; /* multiplies (channel - luma), channels in [0, 1] */
    float vignette_k[3];  /* darkening per channel at q = 1 */
    float inv_half_diag2; /* 1 / half-diagonal^2, pixels^-2 */
    /* Grain lattice: lattice_w x lattice_h floats. Pixel x samples lattice
     * column col_index[x] and the next with weight col_weight[x]. */
    float *lattice;
    size_t lattice_w, lattice_h;
    int32_t *col_index;
    float *col_weight;
    float *vignette_col; /* (dx / half-diagonal)^2 per column */
    double inv_cell;     /* lattice cells per pixel */
    uint64_t grain_key;
    aged_speck *specks;
    size_t n_specks;
    aged_scratch *scratches;
    size_t n_scratches;
    float *scratch; /* per-worker buffers, scratch_floats each */
    size_t scratch_floats;
} aged_job;

/* Lattice coordinate of pixel centre p: lattice points sit at the centres
 * of cells `cell` pixels wide, shifted by 2 so that at least one lattice
 * row/column lies before the first one sampled (the blur then sees noise,
 * not a replicated edge). With one-pixel cells it is p + 2 exactly, so no
 * interpolation happens. */
static inline double
lattice_coord(size_t p, double inv_cell)
{
    return ((double)p + 0.5) * inv_cell + 1.5;
}

/* ---- tone tables ------------------------------------------------------- */

/* Fills base[][] and grain_amp[] for strength s, sepia amount p and the
 * lattice blur's std loss `grain_norm` (std of the blurred unit noise). */
static void
build_tone_tables(aged_job *job, double s, double p, double grain_norm)
{
    double keep = (p * AGED_SEPIA_CHROMA + (1.0 - p) * AGED_FADED_CHROMA) * (AGED_WHITE - AGED_BLACK);
    for (int c = 0; c < 3; c++) {
        job->chroma_gain[c] = (float)((1.0 - s) + s * keep * aged_chroma_chan[c]);
        job->vignette_k[c] = (float)(s * AGED_VIGNETTE * aged_vignette_chan[c]);
    }
    for (size_t i = 0; i < AGED_LUMA_LEVELS; i++) {
        double y = (double)i / (AGED_LUMA_LEVELS - 1);
        double t = AGED_BLACK + (AGED_WHITE - AGED_BLACK) * pow(y, AGED_TONE_GAMMA);
        double sep[3], fad[3];
        for (int c = 0; c < 3; c++) {
            sep[c] = pow(t, aged_sepia_exp[c]);
            fad[c] = pow(t, aged_faded_exp[c]);
        }
        /* Rescale each toning to luma t, so toning changes hue, not brightness. */
        double sep_luma = 0.299 * sep[0] + 0.587 * sep[1] + 0.114 * sep[2];
        double fad_luma = 0.299 * fad[0] + 0.587 * fad[1] + 0.114 * fad[2];
        for (int c = 0; c < 3; c++) {
            double aged = p * sep[c] * (t / sep_luma) + (1.0 - p) * fad[c] * (t / fad_luma);
            job->base[c][i] = (float)((1.0 - s) * y + s * aged - job->chroma_gain[c] * y);
        }
        double midtone = 4.0 * t * (1.0 - t);
        job->grain_amp[i] =
            (float)(s * AGED_GRAIN_STD / grain_norm * (AGED_GRAIN_FLOOR + (1.0 - AGED_GRAIN_FLOOR) * midtone));
    }
}

/* Std of unit white noise after imagen__gaussian_blur(sigma): the blur is
 * separable, so it is the 1-D kernel's sum of squared weights (kernel
 * sampled at integers to 3 sigma and normalised). */
static double
blurred_noise_std(double sigma)
{
    int radius = (int)ceil(3.0 * sigma);
    double sum = 0.0, sum2 = 0.0;
    for (int k = -radius; k <= radius; k++) {
        double w = exp(-0.5 * k * k / (sigma * sigma));
        sum += w;
        sum2 += w * w;
    }
    return sum2 / (sum * sum);
}

/* ---- grain lattice ----------------------------------------------------- */

static void
lattice_rows_task(void *ctx, size_t begin, size_t end, size_t worker)
{
    const aged_job *job = ctx;
    (void)worker;
    for (size_t j = begin; j < end; j++) {
        uint64_t row_key = mix64(job->grain_key + (uint64_t)j * AGED_GOLDEN);
        float *row = job->lattice + j * job->lattice_w;
        for (size_t i = 0; i < job->lattice_w; i++)
            row[i] = hash_gauss(mix64(row_key ^ ((uint64_t)i * UINT64_C(0xd1b54a32d192ed03))));
    }
}

/* ---- dust -------------------------------------------------------------- */

static int64_t
clamp_i64(double v, int64_t lo, int64_t hi)
{
    if (!(v > (double)lo))
        return lo;
    if (v > (double)hi)
        return hi;
    return (int64_t)v;
}

/* Places the specks and scratches of `dust` in [0, 1] for a width x height
 * image. Item k's parameters come from hash(SEED, k) alone. */
static void
build_dust(aged_job *job, uint64_t seed_key, double s, size_t width, size_t height)
{
    double w = (double)width, h = (double)height;
    double short_side = w < h ? w : h;
    for (size_t k = 0; k < job->n_specks; k++) {
        aged_speck *sp = &job->specks[k];
        aged_rng rng = {mix64(seed_key ^ AGED_SALT_DUST) + (uint64_t)k * UINT64_C(0xd1b54a32d192ed03)};
        sp->cx = (float)(rng_unit(&rng) * w);
        sp->cy = (float)(rng_unit(&rng) * h);
        float u = rng_unit(&rng);
        /* Radius 0.08% to 0.4% of the short side, small ones likelier. */
        float b = (float)(short_side * (0.0008 + 0.0032 * u * u));
        if (b < 0.6f)
            b = 0.6f;
        float v = rng_unit(&rng);
        float a = b * (1.0f + 1.5f * v * v);
        float theta = rng_unit(&rng) * 3.14159265f;
        sp->cos_t = cosf(theta);
        sp->sin_t = sinf(theta);
        sp->inv_a = 1.0f / a;
        sp->inv_b = 1.0f / b;
        for (int l = 0; l < 4; l++)
            sp->lobe[l] = (rng_unit(&rng) - 0.5f) * 0.24f;
        sp->edge = b;
        sp->level = rng_unit(&rng) < 0.7f ? aged_bright_dust : aged_dark_dust;
        sp->alpha = (float)(s * (0.55 + 0.45 * rng_unit(&rng)));
        double ext = (double)a * 1.5 + 1.0; /* lobes reach 1.48 a */
        sp->x0 = clamp_i64(floor(sp->cx - ext), 0, (int64_t)width - 1);
        sp->x1 = clamp_i64(ceil(sp->cx + ext), 0, (int64_t)width - 1);
        sp->y0 = clamp_i64(floor(sp->cy - ext), 0, (int64_t)height - 1);
        sp->y1 = clamp_i64(ceil(sp->cy + ext), 0, (int64_t)height - 1);
    }
    for (size_t k = 0; k < job->n_scratches; k++) {
        aged_scratch *sc = &job->scratches[k];
        aged_rng rng = {mix64(seed_key ^ (AGED_SALT_DUST << 1)) + (uint64_t)k * UINT64_C(0xd1b54a32d192ed03)};
        sc->x = (float)((0.05 + 0.9 * rng_unit(&rng)) * w);
        double top = (rng_unit(&rng) - 0.3) * h;
        double len = (0.4 + 0.8 * rng_unit(&rng)) * h;
        sc->y0 = clamp_i64(floor(top), 0, (int64_t)height - 1);
        sc->y1 = clamp_i64(ceil(top + len), 0, (int64_t)height - 1);
        sc->slope = (rng_unit(&rng) - 0.5f) * 0.04f;
        float hw = (float)(short_side * (0.0004 + 0.0008 * rng_unit(&rng)));
        sc->half_width = hw < 0.5f ? 0.5f : hw;
        sc->wobble_amp = (float)(short_side * 0.003 * rng_unit(&rng));
        sc->wobble_freq = (float)(6.2831853 / (h * (0.3 + 0.5 * rng_unit(&rng))));
        sc->wobble_phase = rng_unit(&rng) * 6.2831853f;
        sc->level = rng_unit(&rng) < 0.8f ? aged_bright_dust : aged_dark_dust;
        sc->alpha = (float)(s * (0.35 + 0.4 * rng_unit(&rng)));
        double period = h * (0.03 + 0.07 * rng_unit(&rng));
        sc->break_period = (float)(period < 8.0 ? 8.0 : period);
        sc->key = mix64(rng.state ^ seed_key);
    }
}

/* Visibility in [0, 1] of a scratch at row y: smooth value noise over
 * cells of break_period rows, cut so that about a third of it is gone. */
static float
scratch_visibility(const aged_scratch *sc, size_t y)
{
    float pos = (float)y / sc->break_period;
    float cell = floorf(pos);
    float f = pos - cell;
    uint64_t c = (uint64_t)(int64_t)cell;
    float n0 = hash_unit(mix64(sc->key + c * AGED_GOLDEN));
    float n1 = hash_unit(mix64(sc->key + (c + 1) * AGED_GOLDEN));
    float t = f * f * (3.0f - 2.0f * f);
    float v = n0 + (n1 - n0) * t;
    v = (v - 0.3f) * 2.5f;
    return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

/* Blends `level` into the three row planes at x (block-relative) by a. */
static inline void
blend_px(float *restrict r, float *restrict g, float *restrict b, size_t x, const float *level, float a)
{
    r[x] += a * (level[0] - r[x]);
    g[x] += a * (level[1] - g[x]);
    b[x] += a * (level[2] - b[x]);
}

/* Draws the dust that touches row y within columns [bx0, bx1). */
static void
draw_dust(const aged_job *job, size_t y, size_t bx0, size_t bx1, float *r, float *g, float *b)
{
    int64_t yi = (int64_t)y;
    float py = (float)y + 0.5f;
    for (size_t k = 0; k < job->n_specks; k++) {
        const aged_speck *sp = &job->specks[k];
        if (yi < sp->y0 || yi > sp->y1 || sp->x1 < (int64_t)bx0 || sp->x0 >= (int64_t)bx1)
            continue;
        size_t x0 = sp->x0 > (int64_t)bx0 ? (size_t)sp->x0 : bx0;
        size_t x1 = sp->x1 < (int64_t)bx1 - 1 ? (size_t)sp->x1 : bx1 - 1;
        float dy = py - sp->cy;
        for (size_t x = x0; x <= x1; x++) {
            float dx = (float)x + 0.5f - sp->cx;
            float u = (dx * sp->cos_t + dy * sp->sin_t) * sp->inv_a;
            float v = (dy * sp->cos_t - dx * sp->sin_t) * sp->inv_b;
            float d = sqrtf(u * u + v * v);
            if (d > 1e-6f) {
                float c = u / d, sn = v / d;
                float outline = 1.0f + sp->lobe[0] * (c * c - sn * sn) + sp->lobe[1] * (2.0f * c * sn) +
                                sp->lobe[2] * c * (4.0f * c * c - 3.0f) + sp->lobe[3] * sn * (3.0f - 4.0f * sn * sn);
                d /= outline;
            }
            /* (1 - d) * edge is about the distance inside the outline in
             * pixels; +0.5 centres a one-pixel antialiasing ramp on it. */
            float a = (1.0f - d) * sp->edge + 0.5f;
            if (a <= 0.0f)
                continue;
            blend_px(r, g, b, x - bx0, sp->level, (a > 1.0f ? 1.0f : a) * sp->alpha);
        }
    }
    for (size_t k = 0; k < job->n_scratches; k++) {
        const aged_scratch *sc = &job->scratches[k];
        if (yi < sc->y0 || yi > sc->y1)
            continue;
        float xc = sc->x + sc->slope * py + sc->wobble_amp * sinf(sc->wobble_freq * py + sc->wobble_phase);
        double lo = floor(xc - sc->half_width - 1.0f), hi = ceil(xc + sc->half_width + 1.0f);
        if (hi < (double)bx0 || lo >= (double)bx1)
            continue;
        float alpha = sc->alpha * scratch_visibility(sc, y);
        if (alpha <= 0.0f)
            continue;
        size_t x0 = lo > (double)bx0 ? (size_t)lo : bx0;
        size_t x1 = hi < (double)(bx1 - 1) ? (size_t)hi : bx1 - 1;
        for (size_t x = x0; x <= x1; x++) {
            float a = sc->half_width + 0.5f - fabsf((float)x + 0.5f - xc);
            if (a <= 0.0f)
                continue;
            blend_px(r, g, b, x - bx0, sc->level, (a > 1.0f ? 1.0f : a) * alpha);
        }
    }
}

/* ---- the row pass ------------------------------------------------------ */

/* The row pass works on blocks of AGED_BLOCK_PIXELS columns. The gathers
 * (tone tables, grain lattice) run in a scalar loop over the block's real
 * width; the vignette and the conversion to bytes run over the full block,
 * padded, so their trip count is a constant the compiler can vectorise
 * without a scalar tail. */

/* Tone, colour and grain for columns [bx0, bx0 + n) of row y into the
 * planes r, g, b; `grain_row` is the lattice row already interpolated
 * vertically for this row. Entries n and beyond are zeroed. */
static void
shade_block(const aged_job *job, size_t y, size_t bx0, size_t n, const float *restrict grain_row, float *restrict r,
            float *restrict g, float *restrict b)
{
    const imagen__image_task *task = job->task;
    const uint8_t *src = task->in + (y * task->width + bx0) * 3;
    const int32_t *restrict col_index = job->col_index + bx0;
    const float *restrict col_weight = job->col_weight + bx0;
    const float gain_r = job->chroma_gain[0] / 255.0f, gain_g = job->chroma_gain[1] / 255.0f,
                gain_b = job->chroma_gain[2] / 255.0f;
    for (size_t x = 0; x < n; x++) {
        int32_t ir = src[3 * x], ig = src[3 * x + 1], ib = src[3 * x + 2];
        int32_t li = (77 * ir + 150 * ig + 29 * ib) >> AGED_LUMA_SHIFT;
        float g0 = grain_row[col_index[x]], g1 = grain_row[col_index[x] + 1];
        float grain = (g0 + (g1 - g0) * col_weight[x]) * job->grain_amp[li];
        r[x] = job->base[0][li] + gain_r * (float)ir + grain;
        g[x] = job->base[1][li] + gain_g * (float)ig + grain;
        b[x] = job->base[2][li] + gain_b * (float)ib + grain;
    }
    for (size_t x = n; x < AGED_BLOCK_PIXELS; x++)
        r[x] = g[x] = b[x] = 0.0f;
}

/* Multiplies a block by the vignette; `vignette_col` is padded to a whole
 * block. */
static void
vignette_block(const aged_job *job, const float *restrict vignette_col, float vignette_row, float *restrict r,
               float *restrict g, float *restrict b)
{
    const float vk_r = job->vignette_k[0], vk_g = job->vignette_k[1], vk_b = job->vignette_k[2];
    for (size_t x = 0; x < AGED_BLOCK_PIXELS; x++) {
        float q = vignette_col[x] + vignette_row;
        float q2 = q * q;
        r[x] *= 1.0f - vk_r * q2;
        g[x] *= 1.0f - vk_g * q2;
        b[x] *= 1.0f - vk_b * q2;
    }
}

/* Rounds a block of the three planes to bytes and interleaves the first n
 * pixels into out. */
static void
store_block(const float *restrict r, const float *restrict g, const float *restrict b, uint8_t *restrict bytes,
            size_t n, uint8_t *restrict out)
{
    const float *planes[3] = {r, g, b};
    for (int c = 0; c < 3; c++) {
        const float *restrict p = planes[c];
        uint8_t *restrict q = bytes + c * AGED_BLOCK_PIXELS;
        for (size_t x = 0; x < AGED_BLOCK_PIXELS; x++) {
            float v = p[x] * 255.0f + 0.5f;
            v = v > 0.0f ? v : 0.0f;
            v = v < 255.0f ? v : 255.0f;
            q[x] = (uint8_t)(int32_t)v;
        }
    }
    for (size_t x = 0; x < n; x++) {
        out[3 * x] = bytes[x];
        out[3 * x + 1] = bytes[AGED_BLOCK_PIXELS + x];
        out[3 * x + 2] = bytes[2 * AGED_BLOCK_PIXELS + x];
    }
}

static void
aged_rows_task(void *ctx, size_t begin, size_t end, size_t worker)
{
    const aged_job *job = ctx;
    const imagen__image_task *task = job->task;
    size_t width = task->width;
    float *grain_row = job->scratch + worker * job->scratch_floats;
    float *r = grain_row + job->lattice_w;
    float *g = r + AGED_BLOCK_PIXELS;
    float *b = g + AGED_BLOCK_PIXELS;
    uint8_t *bytes = (uint8_t *)(b + AGED_BLOCK_PIXELS);
    double half_h = 0.5 * (double)task->height;
    for (size_t y = begin; y < end; y++) {
        double v = lattice_coord(y, job->inv_cell);
        size_t j0 = (size_t)v;
        float fy = (float)(v - (double)j0);
        const float *l0 = job->lattice + j0 * job->lattice_w;
        const float *l1 = l0 + job->lattice_w;
        for (size_t i = 0; i < job->lattice_w; i++)
            grain_row[i] = l0[i] + (l1[i] - l0[i]) * fy;
        double dy = (double)y + 0.5 - half_h;
        float vignette_row = (float)(dy * dy * job->inv_half_diag2);
        uint8_t *out = task->out + y * width * 3;
        for (size_t bx0 = 0; bx0 < width; bx0 += AGED_BLOCK_PIXELS) {
            size_t n = width - bx0 < AGED_BLOCK_PIXELS ? width - bx0 : AGED_BLOCK_PIXELS;
            shade_block(job, y, bx0, n, grain_row, r, g, b);
            vignette_block(job, job->vignette_col + bx0, vignette_row, r, g, b);
            if (job->n_specks + job->n_scratches > 0)
                draw_dust(job, y, bx0, bx0 + n, r, g, b);
            store_block(r, g, b, bytes, n, out + bx0 * 3);
        }
    }
}

/* ---- process ----------------------------------------------------------- */

static void
job_free(aged_job *job)
{
    if (job == NULL)
        return;
    imagen__plane_free(job->lattice);
    free(job->col_index);
    free(job->col_weight);
    free(job->vignette_col);
    free(job->specks);
    free(job->scratches);
    free(job->scratch);
    free(job);
}

/* Allocates and fills everything but the lattice's noise. Returns NULL when
 * out of memory (job freed). */
static aged_job *
job_new(const imagen__image_task *task, size_t threads)
{
    size_t width = task->width, height = task->height;
    double s = task->controls[AGED_STRENGTH], dust = task->controls[AGED_DUST];
    aged_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return NULL;
    job->task = task;
    uint64_t seed_key = mix64((uint64_t)task->controls[AGED_SEED] + AGED_GOLDEN);
    job->grain_key = mix64(seed_key ^ AGED_SALT_GRAIN);

    size_t short_side = width < height ? width : height;
    double cell = (double)short_side / AGED_GRAIN_CELL_SIDE;
    if (cell < 1.0)
        cell = 1.0;
    job->inv_cell = 1.0 / cell;
    /* The last pixel samples floor(coordinate) and the next; one spare
     * lattice point follows for the blur (see lattice_coord). */
    job->lattice_w = (size_t)lattice_coord(width - 1, job->inv_cell) + 3;
    job->lattice_h = (size_t)lattice_coord(height - 1, job->inv_cell) + 3;
    job->lattice = imagen__plane_alloc(job->lattice_w, job->lattice_h);
    job->col_index = malloc(width * sizeof(*job->col_index));
    job->col_weight = malloc(width * sizeof(*job->col_weight));
    /* Padded to a whole block: vignette_block() reads full blocks. */
    job->vignette_col = calloc(width + AGED_BLOCK_PIXELS, sizeof(*job->vignette_col));
    job->n_specks = (size_t)lround(dust * AGED_MAX_SPECKS);
    job->n_scratches = (size_t)lround(dust * AGED_MAX_SCRATCHES);
    job->specks = calloc(job->n_specks + 1, sizeof(*job->specks));
    job->scratches = calloc(job->n_scratches + 1, sizeof(*job->scratches));
    /* Lattice row, three float planes and three byte planes (in floats). */
    job->scratch_floats = job->lattice_w + 3 * AGED_BLOCK_PIXELS + 3 * AGED_BLOCK_PIXELS / sizeof(float);
    job->scratch = malloc(threads * job->scratch_floats * sizeof(*job->scratch));
    if (job->lattice == NULL || job->col_index == NULL || job->col_weight == NULL || job->vignette_col == NULL ||
        job->specks == NULL || job->scratches == NULL || job->scratch == NULL) {
        job_free(job);
        return NULL;
    }

    build_tone_tables(job, s, task->controls[AGED_SEPIA], blurred_noise_std(AGED_GRAIN_SIGMA));
    double half_diag2 = 0.25 * ((double)width * (double)width + (double)height * (double)height);
    job->inv_half_diag2 = (float)(1.0 / half_diag2);
    for (size_t x = 0; x < width; x++) {
        double u = lattice_coord(x, job->inv_cell);
        size_t i0 = (size_t)u;
        job->col_index[x] = (int32_t)i0;
        job->col_weight[x] = (float)(u - (double)i0);
        double dx = (double)x + 0.5 - 0.5 * (double)width;
        job->vignette_col[x] = (float)(dx * dx / half_diag2);
    }
    build_dust(job, seed_key, s, width, height);
    return job;
}

static imagen_error *
style_aged_process(const imagen__image_task *task)
{
    size_t width = task->width, height = task->height;
    /* The shell has range-checked every control (NaN included). */
    if (task->controls[AGED_STRENGTH] == 0.0) {
        memcpy(task->out, task->in, width * height * 3);
        return NULL;
    }
    size_t threads = imagen__pool_threads(task->pool);
    aged_job *job = job_new(task, threads);
    if (job == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory", task->model);

    size_t lattice_grain = AGED_CHUNK_PIXELS_MIN / job->lattice_w + 1;
    imagen__pool_for(task->pool, job->lattice_h, lattice_grain, lattice_rows_task, job);
    imagen_error *err =
        imagen__gaussian_blur(task->pool, job->lattice, job->lattice, job->lattice_w, job->lattice_h, AGED_GRAIN_SIGMA);
    if (err != NULL) {
        job_free(job);
        return imagen_error_wrap(err, "imageops model '%s'", task->model);
    }
    imagen__pool_for(task->pool, height, AGED_CHUNK_PIXELS_MIN / width + 1, aged_rows_task, job);
    job_free(job);
    return NULL;
}

static const imagen__image_op_desc style_aged_desc = {
    .operation = "style_aged",
    .n_controls = 4,
    .controls =
        {
            [AGED_STRENGTH] = {"STRENGTH", IMAGEN_TYPE_FP32, 1.0, 0.0, 1.0},
            [AGED_SEED] = {"SEED", IMAGEN_TYPE_INT64, 0.0, 0.0, 9007199254740992.0},
            [AGED_DUST] = {"DUST", IMAGEN_TYPE_FP32, 0.0, 0.0, 1.0},
            [AGED_SEPIA] = {"SEPIA", IMAGEN_TYPE_FP32, 1.0, 0.0, 1.0},
        },
    .out_channels = 3,
    .has_mask = false,
    .process = style_aged_process,
};

IMAGEN__IMAGE_OP_ROW(style_aged, "style_aged", style_aged_desc);
