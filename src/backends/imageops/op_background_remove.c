/*
 * imageops operation `background_remove`: cuts the subject out of a photo
 * with a plain or simple background, without learned weights. The output
 * IMAGE is the input with an alpha channel; MASK is that alpha alone.
 *
 * How (GrabCut, Rother et al. 2004, seeded from the frame instead of a user
 * rectangle):
 *   1. The photo is area-downscaled to a fine working image of at most
 *      BGR_WORK_PIXELS_MAX pixels (and a quarter of the input), and that to
 *      a coarse one of half its size per side.
 *   2. Background model from the border: a smooth colour surface (quadratic
 *      in x and y, so plain, gradient and vignetted backdrops fit) is fitted
 *      robustly to a band along the frame: an L1 affine fit, then trimmed
 *      quadratic fits. Band pixels within BGR_INLIER_SIGMAS robust standard
 *      deviations of it are background seeds; the others are where the
 *      subject crosses the frame (a portrait's shoulders) and stay free.
 *   3. A background GMM (BGR_GMM_COMPONENTS full-covariance Gaussians in
 *      RGB) is fitted to the seeds; pixels it explains much worse than any
 *      seed start the subject GMM. Both start from a deterministic
 *      principal-axis split (Orchard-Bouman), not random k-means.
 *   4. On the coarse image, BGR_ROUNDS rounds of: data terms from the two
 *      GMMs (each pixel's most likely component, as in GrabCut's energy), a
 *      minimum cut on the 8-connected grid with GrabCut's contrast-sensitive
 *      smoothness (Boykov-Kolmogorov max-flow written for the grid, in
 *      grid_cut.c; later rounds reuse the previous round's flow), and both
 *      GMMs re-estimated from the new labels.
 *   5. One more cut on the fine image, over the pixels near the coarse edge
 *      or near a pixel whose colour disagrees with its coarse label (thin
 *      gaps the coarse cut closed); the rest keep their coarse label.
 *   6. The fine mask is upsampled (linear) to full size and refined with
 *      He's guided filter, whose guide is the photo projected on the colour
 *      direction from the background mean to the subject mean: the edge
 *      snaps to where the colours change at full resolution and becomes
 *      soft (antialiased) there. A levels stretch (BGR_ALPHA_LOW/HIGH) then
 *      removes the few percent of texture the filter lets into the alpha
 *      near the edge. The filter runs in horizontal strips with a halo, so
 *      it needs a few strip planes, not full-size ones.
 * No subject (nothing on the inside differs from the border, or fewer than
 * BGR_SEED_MIN_FRACTION of the pixels do) gives an alpha of 0 everywhere.
 *
 * Where it fails (it is a fallback until learned models exist): it knows
 * colour, not objects. A subject whose colours also occur in the background
 * loses those parts (a white shirt against a white wall, a brown dog on a
 * wooden floor); a cluttered or busy background (outdoor scenes, rooms)
 * gives a patchy mask that keeps whatever differs from the frame; a subject
 * covering most of the frame edge, or a background that differs on two
 * sides of the frame, breaks the border model; background seen through
 * holes of the subject (between legs, inside handles) is cut out only when
 * the hole is a couple of fine working pixels wide (about 1/150 of the
 * longest side); hair and fur get a smooth edge, not strand-level matting;
 * shadows on the backdrop count as background only when they are faint;
 * very small subjects (under ~0.2% of the frame) count as no subject.
 *
 * Deterministic: cuts are serial; GMM sums are taken per fixed block of rows
 * and added in block order; strips depend on the image size only. Runs on
 * the instance thread; pixel passes are split over the pool. Working memory
 * is about 75 bytes per fine working pixel (at most a quarter of the input
 * pixels, so under 19 bytes per input pixel) during the fine cut, and six
 * guided-filter strip planes afterwards.
 */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/imageops/filter.h"
#include "backends/imageops/grid_cut.h"
#include "backends/imageops/image_op.h"

/* ---- working images ---- */
#define BGR_WORK_PIXELS_MAX (320 * 320) /* fine working image: the final cut's resolution */
#define BGR_WORK_INPUT_DIVISOR 4        /* fine image <= input / 4 pixels (graph memory ~90 B/px) */
#define BGR_COARSE_PIXELS_MIN (64 * 64) /* GrabCut rounds at half the fine size when that has this many */
#define BGR_REFINE_RADIUS 2             /* coarse pixels either side of the coarse edge the fine cut revisits */

/* ---- border model ---- */
#define BGR_BAND_FRACTION 0.03 /* border band width / sqrt(working pixels) */
#define BGR_BAND_MIN_PX 2      /* working pixels */
#define BGR_L1_ITERATIONS 10   /* IRLS steps of the L1 affine fit */
#define BGR_TRIM_ROUNDS 2      /* trimmed quadratic refits after it */
#define BGR_INLIER_SIGMAS 3.0  /* inlier: residual <= this many robust sigmas ... */
#define BGR_INLIER_FLOOR 0.05  /* ... or this RGB distance (colours in [0, 1]) */
#define BGR_RIDGE 1e-6         /* keeps the normal equations definite */

/* ---- colour models and cut ---- */
#define BGR_GMM_COMPONENTS 5        /* per model, as in GrabCut */
#define BGR_COV_FLOOR 1e-4          /* added to covariance diagonals (sigma ~2.5 levels) */
#define BGR_SEED_PERCENTILE 0.99    /* background seeds' NLL percentile ... */
#define BGR_SEED_MARGIN 2.0f        /* ... plus this (nats) starts the subject model */
#define BGR_SEED_MIN_FRACTION 0.002 /* fewer subject seeds than this share of pixels ... */
#define BGR_SEED_MIN_PX 16          /* ... or this count means "no subject" */
#define BGR_ROUNDS 4                /* GrabCut rounds (cut + re-estimation) */
#define BGR_GAMMA 50.0f             /* smoothness weight, GrabCut's value */
#define BGR_SEED_PENALTY 1000.0f    /* nats against labelling a background seed subject */
#define BGR_STATS_BLOCK_ROWS 8      /* fixed row blocks of the GMM sums */

/* ---- alpha refinement ---- */
#define BGR_GUIDE_RADIUS_SCALE 1.5 /* guided filter radius / downscale factor */
#define BGR_GUIDE_RADIUS_MIN 2
#define BGR_GUIDE_RADIUS_MAX 64
#define BGR_GUIDE_EPS 1e-3f
#define BGR_ALPHA_LOW 0.1f     /* filtered alpha at or below this is background ... */
#define BGR_ALPHA_HIGH 0.9f    /* ... at or above this subject; linear between */
#define BGR_STRIP_ROWS_MIN 64  /* output rows per strip: a quarter of the image within these ... */
#define BGR_STRIP_ROWS_MAX 256 /* ... and at least 4 guide radii (halo overhead <= 2x) */

#define GMM_K BGR_GMM_COMPONENTS
#define COMP_NONE 255 /* pixel in neither model's sums */

static imagen_error *
no_memory(const imagen__image_task *task, const char *what)
{
    return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory (background_remove: %s)",
                            task->model, what);
}

/* Errors from filter.c name no model: add it. */
static imagen_error *
with_model(const imagen__image_task *task, imagen_error *err)
{
    return err == NULL ? NULL : imagen_error_wrap(err, "imageops model '%s'", task->model);
}

/* =====================================================================
 * Small dense linear algebra (double, n <= 6)
 * ===================================================================== */

/* Solves A X = B for symmetric positive definite A (n x n, row-major) and
 * `cols` right-hand sides (B is n x cols, overwritten by X) by Cholesky.
 * Returns false when A is not numerically positive definite. */
static bool
solve_spd(double *a, double *b, size_t n, size_t cols)
{
    for (size_t j = 0; j < n; j++) {
        double d = a[j * n + j];
        for (size_t k = 0; k < j; k++)
            d -= a[j * n + k] * a[j * n + k];
        if (!(d > 0.0))
            return false;
        d = sqrt(d);
        a[j * n + j] = d;
        for (size_t i = j + 1; i < n; i++) {
            double s = a[i * n + j];
            for (size_t k = 0; k < j; k++)
                s -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = s / d;
        }
    }
    for (size_t c = 0; c < cols; c++) {
        for (size_t i = 0; i < n; i++) { /* L y = b */
            double s = b[i * cols + c];
            for (size_t k = 0; k < i; k++)
                s -= a[i * n + k] * b[k * cols + c];
            b[i * cols + c] = s / a[i * n + i];
        }
        for (size_t i = n; i-- > 0;) { /* L^T x = y */
            double s = b[i * cols + c];
            for (size_t k = i + 1; k < n; k++)
                s -= a[k * n + i] * b[k * cols + c];
            b[i * cols + c] = s / a[i * n + i];
        }
    }
    return true;
}

/* Symmetric 3x3 matrices are stored as their upper triangle:
 * [xx, xy, xz, yy, yz, zz]. */
static void
sym3_apply(const double m[6], const double v[3], double out[3])
{
    out[0] = m[0] * v[0] + m[1] * v[1] + m[2] * v[2];
    out[1] = m[1] * v[0] + m[3] * v[1] + m[4] * v[2];
    out[2] = m[2] * v[0] + m[4] * v[1] + m[5] * v[2];
}

static double
sym3_det(const double m[6])
{
    return m[0] * (m[3] * m[5] - m[4] * m[4]) - m[1] * (m[1] * m[5] - m[4] * m[2]) + m[2] * (m[1] * m[4] - m[3] * m[2]);
}

/* Largest eigenvalue and its unit eigenvector by power iteration, started
 * from the matrix column of largest norm (never orthogonal to the principal
 * axis unless the matrix is zero). Returns the eigenvalue (0 for a zero
 * matrix). */
static double
sym3_principal(const double m[6], double vec[3])
{
    const double cols[3][3] = {{m[0], m[1], m[2]}, {m[1], m[3], m[4]}, {m[2], m[4], m[5]}};
    double best = -1.0;
    for (int c = 0; c < 3; c++) {
        double n = cols[c][0] * cols[c][0] + cols[c][1] * cols[c][1] + cols[c][2] * cols[c][2];
        if (n > best) {
            best = n;
            memcpy(vec, cols[c], sizeof(cols[c]));
        }
    }
    double lambda = 0.0;
    for (int it = 0; it < 64; it++) {
        double norm = sqrt(vec[0] * vec[0] + vec[1] * vec[1] + vec[2] * vec[2]);
        if (!(norm > 1e-300))
            return 0.0;
        for (int i = 0; i < 3; i++)
            vec[i] /= norm;
        double next[3];
        sym3_apply(m, vec, next);
        lambda = next[0] * vec[0] + next[1] * vec[1] + next[2] * vec[2];
        memcpy(vec, next, sizeof(next));
    }
    double norm = sqrt(vec[0] * vec[0] + vec[1] * vec[1] + vec[2] * vec[2]);
    if (!(norm > 1e-300))
        return 0.0;
    for (int i = 0; i < 3; i++)
        vec[i] /= norm;
    return lambda;
}

/* =====================================================================
 * Segmentation state (working resolution)
 * ===================================================================== */

/* Running sums of one GMM component. */
typedef struct comp_sums {
    double n, s[3], ss[6];
} comp_sums;

/* One Gaussian mixture; components with weight 0 are unused. */
typedef struct gmm {
    double weight[GMM_K];
    double mean[GMM_K][3];
    double cov[GMM_K][6];
    /* evaluation form, derived by gmm_from_sums() */
    float fmean[GMM_K][3];
    float icov[GMM_K][6]; /* inverse covariance */
    float lognorm[GMM_K]; /* log weight - log det / 2 (the 2 pi term is common to both models) */
    size_t used;          /* components with weight > 0, packed first */
} gmm;

typedef struct segment {
    size_t w, h, n; /* working size, n = w * h */
    float *z[3];    /* working image planes, RGB in [0, 1] */
    uint8_t *seed;  /* 1 = background seed (inlier band pixel) */
    uint8_t *label; /* 1 = subject after the last cut */
    uint8_t *comp;  /* GMM component of each pixel: [0, GMM_K) subject, [GMM_K, 2 GMM_K) background, or COMP_NONE */
    uint8_t *best;  /* most likely component: subject (low nibble) and background (high nibble) */
    float *data;    /* signed data term: background NLL - subject NLL (+ seed penalty) */
    float *edge[4]; /* smoothness weight to the right, down, down-right, down-left neighbour
                     * (rounds only: the fine cut computes them as it loads) */
    float beta;     /* contrast scale of the smoothness weights (see compute_edges) */
    comp_sums *block_sums; /* per row block of BGR_STATS_BLOCK_ROWS, 2 GMM_K sums each */
    size_t blocks;
    gmm model[2]; /* [0] subject, [1] background */
} segment;

/* =====================================================================
 * GMM: sums, initial split, evaluation
 * ===================================================================== */

typedef struct sums_job {
    segment *s;
} sums_job;

static void
sums_blocks(void *ctx, size_t begin, size_t end, size_t worker)
{
    segment *s = ((sums_job *)ctx)->s;
    for (size_t blk = begin; blk < end; blk++) {
        comp_sums *acc = s->block_sums + blk * 2 * GMM_K;
        memset(acc, 0, 2 * GMM_K * sizeof(*acc));
        size_t y0 = blk * BGR_STATS_BLOCK_ROWS,
               y1 = y0 + BGR_STATS_BLOCK_ROWS < s->h ? y0 + BGR_STATS_BLOCK_ROWS : s->h;
        for (size_t i = y0 * s->w; i < y1 * s->w; i++) {
            if (s->comp[i] == COMP_NONE)
                continue;
            comp_sums *c = acc + s->comp[i];
            double r = s->z[0][i], g = s->z[1][i], b = s->z[2][i];
            c->n += 1.0;
            c->s[0] += r;
            c->s[1] += g;
            c->s[2] += b;
            c->ss[0] += r * r;
            c->ss[1] += r * g;
            c->ss[2] += r * b;
            c->ss[3] += g * g;
            c->ss[4] += g * b;
            c->ss[5] += b * b;
        }
    }
}

/* Sums of every component over s->comp, blocks added in block order so the
 * totals do not depend on the thread count. out: 2 GMM_K sums. */
static void
gather_sums(segment *s, imagen__pool *pool, comp_sums *out)
{
    sums_job j = {.s = s};
    imagen__pool_for(pool, s->blocks, 1, sums_blocks, &j);
    memset(out, 0, 2 * GMM_K * sizeof(*out));
    for (size_t blk = 0; blk < s->blocks; blk++)
        for (size_t c = 0; c < 2 * GMM_K; c++) {
            const comp_sums *a = s->block_sums + blk * 2 * GMM_K + c;
            out[c].n += a->n;
            for (int i = 0; i < 3; i++)
                out[c].s[i] += a->s[i];
            for (int i = 0; i < 6; i++)
                out[c].ss[i] += a->ss[i];
        }
}

/* Mean and covariance (floored) of one component's sums. */
static void
sums_moments(const comp_sums *c, double mean[3], double cov[6])
{
    for (int i = 0; i < 3; i++)
        mean[i] = c->s[i] / c->n;
    static const int row[6] = {0, 0, 0, 1, 1, 2}, col[6] = {0, 1, 2, 1, 2, 2};
    for (int i = 0; i < 6; i++)
        cov[i] = c->ss[i] / c->n - mean[row[i]] * mean[col[i]];
    cov[0] += BGR_COV_FLOOR;
    cov[3] += BGR_COV_FLOOR;
    cov[5] += BGR_COV_FLOOR;
}

/* Builds model `g` from sums[0..GMM_K) and precomputes its evaluation form.
 * Components with no pixels are dropped. */
static void
gmm_from_sums(gmm *g, const comp_sums *sums)
{
    double total = 0.0;
    for (size_t c = 0; c < GMM_K; c++)
        total += sums[c].n;
    memset(g, 0, sizeof(*g));
    for (size_t c = 0; c < GMM_K; c++) {
        if (sums[c].n < 1.0)
            continue;
        size_t u = g->used++;
        g->weight[u] = sums[c].n / total;
        sums_moments(&sums[c], g->mean[u], g->cov[u]);
        double *m = g->cov[u];
        double det = sym3_det(m);
        /* the floor keeps det > 0 except for rounding on huge spreads */
        while (!(det > 1e-30)) {
            m[0] += BGR_COV_FLOOR;
            m[3] += BGR_COV_FLOOR;
            m[5] += BGR_COV_FLOOR;
            det = sym3_det(m);
        }
        double inv[6] = {
            (m[3] * m[5] - m[4] * m[4]) / det, (m[2] * m[4] - m[1] * m[5]) / det, (m[1] * m[4] - m[2] * m[3]) / det,
            (m[0] * m[5] - m[2] * m[2]) / det, (m[1] * m[2] - m[0] * m[4]) / det, (m[0] * m[3] - m[1] * m[1]) / det,
        };
        for (int i = 0; i < 6; i++)
            g->icov[u][i] = (float)inv[i];
        for (int i = 0; i < 3; i++)
            g->fmean[u][i] = (float)g->mean[u][i];
        g->lognorm[u] = (float)(log(g->weight[u]) - 0.5 * log(det));
    }
}

typedef struct split_job {
    segment *s;
    uint8_t from[2], to[2]; /* per model: component split, new component (COMP_NONE = no split) */
    double axis[2][3], mean[2][3];
} split_job;

static void
split_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const split_job *j = ctx;
    segment *s = j->s;
    for (size_t i = begin * s->w; i < end * s->w; i++) {
        for (int m = 0; m < 2; m++) {
            if (j->to[m] == COMP_NONE || s->comp[i] != j->from[m])
                continue;
            double d = (s->z[0][i] - j->mean[m][0]) * j->axis[m][0] + (s->z[1][i] - j->mean[m][1]) * j->axis[m][1] +
                       (s->z[2][i] - j->mean[m][2]) * j->axis[m][2];
            if (d > 0.0)
                s->comp[i] = j->to[m];
        }
    }
}

/* Initial GMMs (Orchard-Bouman): s->comp holds 0 for subject seeds, GMM_K for
 * background seeds and COMP_NONE elsewhere. Each model's component of
 * largest principal variance is split through its mean across that axis,
 * until GMM_K components or nothing left worth splitting; then both models
 * are built from the final sums. */
static void
gmm_init(segment *s, imagen__pool *pool)
{
    comp_sums sums[2 * GMM_K];
    gather_sums(s, pool, sums);
    for (size_t next = 1; next < GMM_K; next++) {
        split_job j = {.s = s, .to = {COMP_NONE, COMP_NONE}};
        bool any = false;
        for (int m = 0; m < 2; m++) {
            double best = 1e-6; /* below this variance a colour cluster is noise */
            for (size_t c = 0; c < next; c++) {
                const comp_sums *cs = &sums[m * GMM_K + c];
                if (cs->n < 2.0)
                    continue;
                double mean[3], cov[6], axis[3];
                sums_moments(cs, mean, cov);
                cov[0] -= BGR_COV_FLOOR;
                cov[3] -= BGR_COV_FLOOR;
                cov[5] -= BGR_COV_FLOOR;
                double lambda = sym3_principal(cov, axis);
                if (lambda > best) {
                    best = lambda;
                    j.from[m] = (uint8_t)(m * GMM_K + c);
                    j.to[m] = (uint8_t)(m * GMM_K + next);
                    memcpy(j.axis[m], axis, sizeof(axis));
                    memcpy(j.mean[m], mean, sizeof(mean));
                }
            }
            any = any || j.to[m] != COMP_NONE;
        }
        if (!any)
            break;
        imagen__pool_for(pool, s->h, 8, split_rows, &j);
        gather_sums(s, pool, sums);
    }
    gmm_from_sums(&s->model[0], sums);
    gmm_from_sums(&s->model[1], sums + GMM_K);
}

/* GrabCut's data term of n pixels under model `g`: the negative
 * log-likelihood of each pixel's most likely component (the energy
 * minimises over the component as well), which skips log-sum-exp and
 * lets the loop vectorise. out: n terms; arg: n component indices (as
 * floats, so the select vectorises with the compare). */
static void
gmm_data_term(const gmm *g, const float *restrict r, const float *restrict gr, const float *restrict b, size_t n,
              float *restrict out, float *restrict arg)
{
    for (size_t x = 0; x < n; x++) {
        out[x] = FLT_MAX;
        arg[x] = 0.0f;
    }
    for (size_t c = 0; c < g->used; c++) {
        const float m0 = g->fmean[c][0], m1 = g->fmean[c][1], m2 = g->fmean[c][2];
        const float i0 = g->icov[c][0], i1 = 2.0f * g->icov[c][1], i2 = 2.0f * g->icov[c][2];
        const float i3 = g->icov[c][3], i4 = 2.0f * g->icov[c][4], i5 = g->icov[c][5];
        const float lognorm = g->lognorm[c], fc = (float)c;
        for (size_t x = 0; x < n; x++) {
            float dr = r[x] - m0, dg = gr[x] - m1, db = b[x] - m2;
            float q = i0 * dr * dr + i3 * dg * dg + i5 * db * db + i1 * dr * dg + i2 * dr * db + i4 * dg * db;
            float v = 0.5f * q - lognorm, o = out[x], a = arg[x];
            /* both selects read the locals: GCC if-converts this form */
            float na = v < o ? fc : a, no = v < o ? v : o;
            arg[x] = na;
            out[x] = no;
        }
    }
}

#define DATA_CHUNK_PX 256 /* pixels per gmm_data_term call (stack scratch) */

typedef struct data_job {
    segment *s;
    bool background_only; /* first pass: data = background term alone */
} data_job;

static void
data_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const data_job *j = ctx;
    segment *s = j->s;
    float fg[DATA_CHUNK_PX], bg[DATA_CHUNK_PX], fg_arg[DATA_CHUNK_PX], bg_arg[DATA_CHUNK_PX];
    for (size_t i0 = begin * s->w; i0 < end * s->w; i0 += DATA_CHUNK_PX) {
        size_t n = end * s->w - i0 < DATA_CHUNK_PX ? end * s->w - i0 : DATA_CHUNK_PX;
        const float *r = s->z[0] + i0, *g = s->z[1] + i0, *b = s->z[2] + i0;
        gmm_data_term(&s->model[1], r, g, b, n, bg, bg_arg);
        if (j->background_only) {
            memcpy(s->data + i0, bg, n * sizeof(float));
            continue;
        }
        gmm_data_term(&s->model[0], r, g, b, n, fg, fg_arg);
        for (size_t k = 0; k < n; k++) {
            /* the cut's source side is the subject: data > 0 favours it */
            s->data[i0 + k] = bg[k] - fg[k] - (s->seed[i0 + k] ? BGR_SEED_PENALTY : 0.0f);
            s->best[i0 + k] = (uint8_t)((int)fg_arg[k] | (int)bg_arg[k] << 4);
        }
    }
}

/* =====================================================================
 * Border model: which band pixels are background seeds
 * ===================================================================== */

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The `q` quantile (0..1) of v[0..n) by sorting a copy into `scratch`. */
static double
quantile(const double *v, size_t n, double q, double *scratch)
{
    memcpy(scratch, v, n * sizeof(*v));
    qsort(scratch, n, sizeof(*scratch), cmp_double);
    size_t k = (size_t)(q * (double)(n - 1) + 0.5);
    return scratch[k < n ? k : n - 1];
}

/* Weighted least squares of the colours on the first `nf` features; fills
 * coef (nf x 3). Returns false when the system is singular. */
static bool
fit_surface(const double *feat, const double *col, const double *wt, size_t m, size_t nf, double *coef)
{
    double a[36] = {0};
    memset(coef, 0, nf * 3 * sizeof(*coef));
    for (size_t i = 0; i < m; i++) {
        if (wt[i] == 0.0)
            continue;
        const double *f = feat + i * 6;
        for (size_t r = 0; r < nf; r++) {
            for (size_t c = 0; c < nf; c++)
                a[r * nf + c] += wt[i] * f[r] * f[c];
            for (size_t k = 0; k < 3; k++)
                coef[r * 3 + k] += wt[i] * f[r] * col[i * 3 + k];
        }
    }
    for (size_t r = 0; r < nf; r++)
        a[r * nf + r] += BGR_RIDGE;
    return solve_spd(a, coef, nf, 3);
}

static void
surface_residuals(const double *feat, const double *col, size_t m, size_t nf, const double *coef, double *res)
{
    for (size_t i = 0; i < m; i++) {
        double d2 = 0.0;
        for (size_t k = 0; k < 3; k++) {
            double p = 0.0;
            for (size_t r = 0; r < nf; r++)
                p += feat[i * 6 + r] * coef[r * 3 + k];
            double d = col[i * 3 + k] - p;
            d2 += d * d;
        }
        res[i] = sqrt(d2);
    }
}

/* Marks s->seed for the band pixels that fit the backdrop surface (see the
 * file comment). `band` is the band width in working pixels. Serial: the
 * band holds at most a few ten thousand pixels. */
static imagen_error *
find_background_seeds(const imagen__image_task *task, segment *s, size_t band)
{
    const size_t w = s->w, h = s->h;
    size_t m = 0;
    for (size_t y = 0; y < h; y++)
        m += (y < band || y >= h - band) ? w : 2 * band;
    double *feat = malloc(m * 6 * sizeof(*feat)), *col = malloc(m * 3 * sizeof(*col));
    double *wt = malloc(m * sizeof(*wt)), *res = malloc(m * sizeof(*res)), *scratch = malloc(m * sizeof(*scratch));
    size_t *where = malloc(m * sizeof(*where));
    imagen_error *err = NULL;
    memset(s->seed, 0, s->n);
    if (feat == NULL || col == NULL || wt == NULL || res == NULL || scratch == NULL || where == NULL) {
        err = no_memory(task, "border model");
        goto done;
    }
    size_t i = 0;
    for (size_t y = 0; y < h; y++)
        for (size_t x = 0; x < w; x++) {
            if (!(y < band || y >= h - band || x < band || x >= w - band))
                continue;
            double fx = w > 1 ? 2.0 * (double)x / (double)(w - 1) - 1.0 : 0.0;
            double fy = h > 1 ? 2.0 * (double)y / (double)(h - 1) - 1.0 : 0.0;
            double *f = feat + i * 6;
            f[0] = 1.0, f[1] = fx, f[2] = fy, f[3] = fx * fx, f[4] = fx * fy, f[5] = fy * fy;
            for (int k = 0; k < 3; k++)
                col[i * 3 + k] = s->z[k][y * w + x];
            where[i++] = y * w + x;
        }

    /* An L1 fit first: least squares would bend towards a subject that
     * crosses the frame, an L1 fit mostly ignores it, and it gives the
     * trimmed fits a residual scale that the subject does not inflate. */
    double coef[18];
    for (size_t k = 0; k < m; k++)
        wt[k] = 1.0;
    for (int it = 0; it < BGR_L1_ITERATIONS; it++) {
        if (!fit_surface(feat, col, wt, m, 3, coef)) {
            if (it > 0)
                break;
            for (size_t k = 0; k < m; k++) /* never seen: fall back to the whole band */
                s->seed[where[k]] = 1;
            goto done;
        }
        surface_residuals(feat, col, m, 3, coef, res);
        for (size_t k = 0; k < m; k++)
            wt[k] = 1.0 / (res[k] > 1e-3 ? res[k] : 1e-3);
    }
    size_t nf = 3;
    double limit = 0.0;
    for (int round = 0; round <= BGR_TRIM_ROUNDS; round++) {
        double sigma = 1.4826 * quantile(res, m, 0.5, scratch); /* MAD scale of a Gaussian */
        limit = fmax(BGR_INLIER_SIGMAS * sigma, BGR_INLIER_FLOOR);
        if (round == BGR_TRIM_ROUNDS)
            break;
        for (size_t k = 0; k < m; k++)
            wt[k] = res[k] <= limit ? 1.0 : 0.0;
        double trial[18];
        if (!fit_surface(feat, col, wt, m, 6, trial))
            break; /* too few inliers for a quadratic: keep the last fit */
        memcpy(coef, trial, sizeof(trial));
        nf = 6;
        surface_residuals(feat, col, m, nf, coef, res);
    }
    for (size_t k = 0; k < m; k++)
        s->seed[where[k]] = res[k] <= limit;
done:
    free(feat);
    free(col);
    free(wt);
    free(res);
    free(scratch);
    free(where);
    return err;
}

/* =====================================================================
 * Min cut: the GrabCut energy as a grid graph (grid_cut.h)
 *
 * Node terminal capacities are the signed data terms (> 0: towards the
 * subject, the source side), arcs the pair weights (the same capacity both
 * ways). The cut itself is grid_cut.c's Boykov-Kolmogorov max-flow; the
 * rounds re-solve with the previous round's flow kept.
 * ===================================================================== */

/* The four forward neighbours (right, down, down-right, down-left) whose
 * pair weights s->edge holds: grid_cut.h's IMAGEN__GRID_* order. */
static const ptrdiff_t edge_dx[4] = {1, 0, 1, -1}, edge_dy[4] = {0, 1, 1, 1};

/* Squared colour difference of pixel (x, y) and its neighbour in forward
 * direction d, or -1 when that neighbour is outside. */
static inline float
neighbour_sq(const segment *s, size_t x, size_t y, int d)
{
    ptrdiff_t xx = (ptrdiff_t)x + edge_dx[d], yy = (ptrdiff_t)y + edge_dy[d];
    if (xx < 0 || xx >= (ptrdiff_t)s->w || yy >= (ptrdiff_t)s->h)
        return -1.0f;
    size_t i = y * s->w + x, k = (size_t)yy * s->w + (size_t)xx;
    float dr = s->z[0][i] - s->z[0][k], dg = s->z[1][i] - s->z[1][k], db = s->z[2][i] - s->z[2][k];
    return dr * dr + dg * dg + db * db;
}

/* GrabCut's smoothness: gamma / distance * exp(-beta |z_p - z_q|^2) for a
 * pair in direction d whose squared colour difference is sq (>= 0). */
static inline float
pair_weight(float beta, int d, float sq)
{
    return (d < 2 ? BGR_GAMMA : BGR_GAMMA * (float)M_SQRT1_2) * expf(-beta * sq);
}

typedef struct load_job {
    imagen__grid_cut *g;
    const segment *s;
} load_job;

/* Terminal capacities from s->data, arcs from s->edge (the same capacity
 * both ways). Calls for different pixels and directions write different
 * floats (grid_cut.h), so rows can be loaded in parallel. */
static void
load_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const load_job *j = ctx;
    const segment *s = j->s;
    for (size_t y = begin; y < end; y++)
        for (size_t x = 0; x < s->w; x++) {
            size_t i = y * s->w + x;
            imagen__grid_cut_set_terminal(j->g, x, y, s->data[i]);
            for (int d = 0; d < 4; d++) /* 0 towards the outside: no arc there */
                imagen__grid_cut_set_arc(j->g, x, y, d, s->edge[d][i]);
        }
}

/* Loads a cleared graph with the current data terms, no flow. */
static void
cut_load(imagen__grid_cut *g, const segment *s, imagen__pool *pool)
{
    load_job j = {.g = g, .s = s};
    imagen__pool_for(pool, s->h, 8, load_rows, &j);
}

/* Loads a cleared graph for the fine cut (pair weights computed here, from
 * s->z and s->beta): only the nodes with fixed[i] == 0 take part; the
 * others (1 background, 2 subject) stay out of the graph, and the pair
 * weight between a free node and a fixed neighbour moves into the free
 * node's terminal capacity (towards the neighbour's side), which is the
 * same energy with the fixed labels substituted. Serial: folding writes
 * the neighbour's capacity, which a row split would race on. */
static void
cut_load_band(imagen__grid_cut *g, const segment *s, const uint8_t *fixed)
{
    for (size_t y = 0; y < s->h; y++)
        for (size_t x = 0; x < s->w; x++)
            if (fixed[y * s->w + x] == 0)
                imagen__grid_cut_set_terminal(g, x, y, s->data[y * s->w + x]);
    for (size_t y = 0; y < s->h; y++)
        for (size_t x = 0; x < s->w; x++) {
            size_t i = y * s->w + x;
            for (int d = 0; d < 4; d++) {
                float sq = neighbour_sq(s, x, y, d);
                if (sq < 0.0f)
                    continue; /* no neighbour there */
                float c = pair_weight(s->beta, d, sq);
                size_t xx = (size_t)((ptrdiff_t)x + edge_dx[d]), yy = y + (size_t)edge_dy[d];
                size_t k = yy * s->w + xx;
                if (fixed[i] == 0 && fixed[k] == 0)
                    imagen__grid_cut_set_arc(g, x, y, d, c);
                else if (fixed[i] == 0)
                    imagen__grid_cut_add_terminal(g, x, y, fixed[k] == 2 ? c : -c);
                else if (fixed[k] == 0)
                    imagen__grid_cut_add_terminal(g, xx, yy, fixed[i] == 2 ? c : -c);
            }
        }
}

/* Changes the data terms of a solved graph and keeps its flow (Kohli and
 * Torr's dynamic cuts, see imagen__grid_cut_set_terminal): GrabCut's rounds
 * change the data terms a little each time, so later solves are several
 * times cheaper than the first. n-links never change. */
static void
cut_update(imagen__grid_cut *g, const segment *s)
{
    for (size_t y = 0; y < s->h; y++)
        for (size_t x = 0; x < s->w; x++)
            imagen__grid_cut_set_terminal(g, x, y, s->data[y * s->w + x]);
}

/* =====================================================================
 * Segmentation driver
 * ===================================================================== */

typedef struct edge_job {
    segment *s;
    double *block_sq; /* per row block: sum of squared neighbour differences */
} edge_job;

static void
edge_sq_blocks(void *ctx, size_t begin, size_t end, size_t worker)
{
    edge_job *j = ctx;
    const segment *s = j->s;
    for (size_t blk = begin; blk < end; blk++) {
        double acc = 0.0;
        size_t y0 = blk * BGR_STATS_BLOCK_ROWS,
               y1 = y0 + BGR_STATS_BLOCK_ROWS < s->h ? y0 + BGR_STATS_BLOCK_ROWS : s->h;
        for (size_t y = y0; y < y1; y++)
            for (size_t x = 0; x < s->w; x++)
                for (int d = 0; d < 4; d++) {
                    float sq = neighbour_sq(s, x, y, d);
                    acc += sq > 0.0f ? sq : 0.0f;
                }
        j->block_sq[blk] = acc;
    }
}

static void
edge_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const edge_job *j = ctx;
    segment *s = j->s;
    for (size_t y = begin; y < end; y++)
        for (size_t x = 0; x < s->w; x++)
            for (int d = 0; d < 4; d++) {
                float sq = neighbour_sq(s, x, y, d);
                s->edge[d][y * s->w + x] = sq < 0.0f ? 0.0f : pair_weight(s->beta, d, sq);
            }
}

/* GrabCut's contrast scale: 1 / beta is twice the mean squared colour
 * difference of 8-neighbours, so the pair weights adapt to the image's
 * contrast. Sets s->beta and, when s->edge is allocated, the weights. */
static imagen_error *
compute_edges(const imagen__image_task *task, segment *s)
{
    edge_job j = {.s = s};
    j.block_sq = malloc(s->blocks * sizeof(*j.block_sq));
    if (j.block_sq == NULL)
        return no_memory(task, "edge weights");
    imagen__pool_for(task->pool, s->blocks, 1, edge_sq_blocks, &j);
    double total = 0.0;
    for (size_t b = 0; b < s->blocks; b++)
        total += j.block_sq[b];
    free(j.block_sq);
    /* pairs: right (w-1)h, down w(h-1), two diagonals (w-1)(h-1) each */
    double w = (double)s->w, h = (double)s->h;
    double pairs = (w - 1.0) * h + w * (h - 1.0) + 2.0 * (w - 1.0) * (h - 1.0);
    double mean = pairs > 0.0 ? total / pairs : 0.0;
    s->beta = mean > 1e-12 ? (float)(1.0 / (2.0 * mean)) : 0.0f;
    if (s->edge[0] != NULL)
        imagen__pool_for(task->pool, s->h, 8, edge_rows, &j);
    return NULL;
}

typedef struct assign_job {
    segment *s;
    bool seeds; /* initial pass: subject seeds from data (background NLL) > threshold */
    float threshold;
} assign_job;

static void
assign_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const assign_job *j = ctx;
    segment *s = j->s;
    for (size_t i = begin * s->w; i < end * s->w; i++) {
        if (j->seeds)
            s->comp[i] = s->seed[i] ? GMM_K : (s->data[i] > j->threshold ? 0 : COMP_NONE);
        else /* GrabCut's assignment step: the most likely component of the pixel's own label */
            s->comp[i] = s->label[i] ? (s->best[i] & 15) : (uint8_t)(GMM_K + (s->best[i] >> 4));
    }
}

/* Segments the working image into s->label; returns the subject pixel
 * count in *subject (0: no subject, labels all 0). */
static imagen_error *
segment_run(const imagen__image_task *task, segment *s, size_t *subject)
{
    imagen__pool *pool = task->pool;
    *subject = 0;
    memset(s->label, 0, s->n);
    size_t band = (size_t)lround(BGR_BAND_FRACTION * sqrt((double)s->n));
    band = band < BGR_BAND_MIN_PX ? BGR_BAND_MIN_PX : band;
    if (2 * band >= s->w || 2 * band >= s->h)
        return NULL; /* no inside left: nothing can be told from the border */
    IMAGEN_RETURN_IF_ERROR(find_background_seeds(task, s, band));

    /* background model from the seeds alone, then its NLL everywhere */
    size_t seeds = 0;
    for (size_t i = 0; i < s->n; i++) {
        s->comp[i] = s->seed[i] ? GMM_K : COMP_NONE;
        seeds += s->seed[i];
    }
    gmm_init(s, pool);
    data_job dj = {.s = s, .background_only = true};
    imagen__pool_for(pool, s->h, 8, data_rows, &dj);

    /* subject seeds: inside pixels the backdrop explains worse than almost
     * every backdrop pixel */
    double *nll = malloc(seeds * sizeof(*nll)), *scratch = malloc(seeds * sizeof(*scratch));
    if (nll == NULL || scratch == NULL) {
        free(nll);
        free(scratch);
        return no_memory(task, "seed model");
    }
    for (size_t i = 0, k = 0; i < s->n; i++)
        if (s->seed[i])
            nll[k++] = s->data[i];
    assign_job aj = {.s = s, .seeds = true};
    aj.threshold = (float)quantile(nll, seeds, BGR_SEED_PERCENTILE, scratch) + BGR_SEED_MARGIN;
    free(nll);
    free(scratch);
    imagen__pool_for(pool, s->h, 8, assign_rows, &aj);
    size_t subject_seeds = 0;
    for (size_t i = 0; i < s->n; i++)
        subject_seeds += s->comp[i] == 0;
    if (subject_seeds < BGR_SEED_MIN_PX || (double)subject_seeds < BGR_SEED_MIN_FRACTION * (double)s->n)
        return NULL;
    gmm_init(s, pool);

    IMAGEN_RETURN_IF_ERROR(compute_edges(task, s));
    imagen__grid_cut *g = imagen__grid_cut_create(s->w, s->h, true);
    if (g == NULL)
        return no_memory(task, "graph cut");
    aj.seeds = false;
    for (int round = 0; round < BGR_ROUNDS; round++) {
        dj.background_only = false;
        imagen__pool_for(pool, s->h, 8, data_rows, &dj);
        if (round == 0)
            cut_load(g, s, pool);
        else
            cut_update(g, s);
        imagen__grid_cut_solve(g);
        size_t count = 0;
        for (size_t y = 0; y < s->h; y++)
            for (size_t x = 0; x < s->w; x++) {
                uint8_t fg = imagen__grid_cut_source_side(g, x, y);
                s->label[y * s->w + x] = fg;
                count += fg;
            }
        *subject = count;
        /* all background: done; all subject (only if every seed lost its
         * penalty, never seen): no background left to model */
        if (count == 0 || count == s->n || round + 1 == BGR_ROUNDS)
            break;
        imagen__pool_for(pool, s->h, 8, assign_rows, &aj);
        comp_sums sums[2 * GMM_K];
        gather_sums(s, pool, sums);
        gmm_from_sums(&s->model[0], sums);
        gmm_from_sums(&s->model[1], sums + GMM_K);
    }
    imagen__grid_cut_free(g);
    return NULL;
}

/* Frees every array of s and clears it (so a second call does nothing). */
static void
segment_free(segment *s)
{
    for (int c = 0; c < 3; c++)
        imagen__plane_free(s->z[c]);
    imagen__plane_free(s->data);
    for (int d = 0; d < 4; d++)
        imagen__plane_free(s->edge[d]);
    free(s->seed);
    free(s->label);
    free(s->comp);
    free(s->best);
    free(s->block_sums);
    size_t w = s->w, h = s->h, n = s->n, blocks = s->blocks;
    memset(s, 0, sizeof(*s));
    s->w = w, s->h = h, s->n = n, s->blocks = blocks;
}

typedef struct near_job {
    segment *coarse;
    uint8_t *near; /* out: 1 where a label within BGR_REFINE_RADIUS differs */
} near_job;

static void
near_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const near_job *j = ctx;
    const segment *c = j->coarse;
    const ptrdiff_t r = BGR_REFINE_RADIUS, w = (ptrdiff_t)c->w, h = (ptrdiff_t)c->h;
    for (size_t y = begin; y < end; y++)
        for (size_t x = 0; x < c->w; x++) {
            uint8_t own = c->label[y * c->w + x], near = 0;
            for (ptrdiff_t yy = (ptrdiff_t)y - r; yy <= (ptrdiff_t)y + r && !near; yy++)
                for (ptrdiff_t xx = (ptrdiff_t)x - r; xx <= (ptrdiff_t)x + r; xx++)
                    if (yy >= 0 && yy < h && xx >= 0 && xx < w && c->label[yy * w + xx] != own) {
                        near = 1;
                        break;
                    }
            j->near[y * c->w + x] = near;
        }
}

/* The coarse pixel covering fine index x of `fine_len` (area alignment). */
static inline size_t
coarse_of(size_t x, size_t fine_len, size_t coarse_len)
{
    size_t c = (size_t)(((double)x + 0.5) * (double)coarse_len / (double)fine_len);
    return c < coarse_len ? c : coarse_len - 1;
}

/* Re-cuts the fine image where the coarse labels may be wrong: within
 * BGR_REFINE_RADIUS coarse pixels of the coarse edge, and within a fine
 * pixel of any pixel whose data term (from the final coarse GMMs) disagrees
 * with its coarse label. Every other pixel keeps its coarse label and
 * enters the cut only through its pair weights (cut_load_band). On clean
 * backdrops the free set is a tenth of the image or less, so the cut costs
 * a fraction of a full one. Frees the coarse segment's arrays on the way
 * (they are not needed after the free set is known). Returns the subject
 * pixel count in *subject. */
static imagen_error *
refine_fine(const imagen__image_task *task, segment *coarse, segment *fine, size_t *subject)
{
    near_job nj = {.coarse = coarse, .near = coarse->comp};
    imagen__pool_for(task->pool, coarse->h, 8, near_rows, &nj);
    for (size_t y = 0; y < fine->h; y++) {
        size_t cy = coarse_of(y, fine->h, coarse->h);
        for (size_t x = 0; x < fine->w; x++)
            fine->seed[y * fine->w + x] = coarse->seed[cy * coarse->w + coarse_of(x, fine->w, coarse->w)];
    }
    fine->model[0] = coarse->model[0];
    fine->model[1] = coarse->model[1];
    data_job dj = {.s = fine, .background_only = false};
    imagen__pool_for(task->pool, fine->h, 8, data_rows, &dj);
    /* free: near the coarse edge, or within a pixel of one whose own data
     * term disagrees with its coarse label (a background gap narrower than
     * a coarse pixel, between legs, that the coarse cut filled, and the
     * mixed pixels along it) */
    uint8_t *disagree = fine->best, *fixed = fine->comp; /* fixed: 0 free, 1 background, 2 subject */
    for (size_t y = 0; y < fine->h; y++) {
        size_t cy = coarse_of(y, fine->h, coarse->h);
        for (size_t x = 0; x < fine->w; x++) {
            size_t ci = cy * coarse->w + coarse_of(x, fine->w, coarse->w), i = y * fine->w + x;
            disagree[i] = coarse->label[ci] ? fine->data[i] < 0.0f : fine->data[i] > 0.0f;
        }
    }
    for (size_t y = 0; y < fine->h; y++) {
        size_t cy = coarse_of(y, fine->h, coarse->h);
        for (size_t x = 0; x < fine->w; x++) {
            size_t ci = cy * coarse->w + coarse_of(x, fine->w, coarse->w);
            bool free_px = nj.near[ci];
            for (size_t yy = y > 0 ? y - 1 : 0; yy <= y + 1 && yy < fine->h && !free_px; yy++)
                for (size_t xx = x > 0 ? x - 1 : 0; xx <= x + 1 && xx < fine->w; xx++)
                    free_px = free_px || disagree[yy * fine->w + xx];
            fixed[y * fine->w + x] = free_px ? 0 : (uint8_t)(1 + coarse->label[ci]);
        }
    }
    segment_free(coarse); /* its part is done: make room for the graph */
    IMAGEN_RETURN_IF_ERROR(compute_edges(task, fine));
    imagen__grid_cut *g = imagen__grid_cut_create(fine->w, fine->h, false);
    if (g == NULL)
        return no_memory(task, "graph cut");
    cut_load_band(g, fine, fixed);
    imagen__plane_free(fine->data);
    fine->data = NULL;
    imagen__grid_cut_solve(g);
    size_t count = 0;
    for (size_t y = 0; y < fine->h; y++)
        for (size_t x = 0; x < fine->w; x++) {
            size_t i = y * fine->w + x;
            uint8_t fg = fixed[i] ? fixed[i] == 2 : imagen__grid_cut_source_side(g, x, y);
            fine->label[i] = fg;
            count += fg;
        }
    imagen__grid_cut_free(g);
    *subject = count;
    return NULL;
}

/* Unit colour direction from the background mean to the subject mean
 * (luma's when the two means nearly coincide). */
static void
guide_direction(segment *s, imagen__pool *pool, float dir[3])
{
    for (size_t i = 0; i < s->n; i++)
        s->comp[i] = s->label[i] ? 0 : GMM_K;
    comp_sums sums[2 * GMM_K];
    gather_sums(s, pool, sums);
    double d[3], norm = 0.0;
    for (int c = 0; c < 3; c++) {
        d[c] = sums[0].s[c] / fmax(sums[0].n, 1.0) - sums[GMM_K].s[c] / fmax(sums[GMM_K].n, 1.0);
        norm += d[c] * d[c];
    }
    norm = sqrt(norm);
    if (norm < 1e-3 || sums[0].n < 1.0 || sums[GMM_K].n < 1.0) {
        const double luma[3] = {0.299, 0.587, 0.114};
        memcpy(d, luma, sizeof(d));
        norm = sqrt(0.299 * 0.299 + 0.587 * 0.587 + 0.114 * 0.114);
    }
    for (int c = 0; c < 3; c++)
        dir[c] = (float)(d[c] / norm);
}

/* =====================================================================
 * Full-resolution alpha
 * ===================================================================== */

typedef struct alpha_job {
    const imagen__image_task *task;
    const float *upper;           /* h rows x W: working labels upsampled across */
    const imagen__resample *down; /* vertical weights, h -> H */
    float *mask, *guide;          /* strip planes, rows [ys, ye) */
    size_t ys, y0, y1;            /* strip start, output rows [y0, y1) */
    float dir[3];                 /* guide colour direction, per 0..255 unit */
    float constant;               /* alpha of a constant strip, or -1 */
} alpha_job;

static void
upsample_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const alpha_job *j = ctx;
    const size_t W = j->task->width, taps = j->down->taps;
    for (size_t r = begin; r < end; r++) {
        size_t y = j->ys + r;
        float *restrict out = j->mask + r * W;
        const int32_t *idx = j->down->index + y * taps;
        const float *wt = j->down->weight + y * taps;
        for (size_t x = 0; x < W; x++)
            out[x] = 0.0f;
        for (size_t k = 0; k < taps; k++) {
            if (wt[k] == 0.0f)
                continue;
            const float *restrict in = j->upper + (size_t)idx[k] * W;
            const float kk = wt[k];
            for (size_t x = 0; x < W; x++)
                out[x] += kk * in[x];
        }
    }
}

static void
guide_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const alpha_job *j = ctx;
    const size_t W = j->task->width;
    const float u0 = j->dir[0], u1 = j->dir[1], u2 = j->dir[2];
    for (size_t r = begin; r < end; r++) {
        const uint8_t *restrict in = j->task->in + (j->ys + r) * W * 3;
        float *restrict out = j->guide + r * W;
        for (size_t x = 0; x < W; x++)
            out[x] = u0 * in[3 * x] + u1 * in[3 * x + 1] + u2 * in[3 * x + 2];
    }
}

static void
write_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const alpha_job *j = ctx;
    const imagen__image_task *t = j->task;
    const size_t W = t->width;
    /* Within a guide radius of the edge the filter lets some of the
     * subject's texture into the alpha (a few percent either way): the
     * levels stretch makes solid areas solid again and keeps the edge soft. */
    const float stretch = 1.0f / (BGR_ALPHA_HIGH - BGR_ALPHA_LOW), offset = BGR_ALPHA_LOW * stretch;
    for (size_t y = j->y0 + begin; y < j->y0 + end; y++) {
        const uint8_t *restrict in = t->in + y * W * 3;
        uint8_t *restrict out = t->out + y * W * 4;
        const float *restrict a = j->constant < 0.0f ? j->mask + (y - j->ys) * W : NULL;
        uint8_t *restrict m = t->mask != NULL ? t->mask + y * W : NULL;
        for (size_t x = 0; x < W; x++) {
            float v = (a != NULL ? a[x] : j->constant) * stretch - offset;
            v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
            uint8_t alpha = (uint8_t)(v * 255.0f + 0.5f);
            out[4 * x] = in[3 * x];
            out[4 * x + 1] = in[3 * x + 1];
            out[4 * x + 2] = in[3 * x + 2];
            out[4 * x + 3] = alpha;
            if (m != NULL)
                m[x] = alpha;
        }
    }
}

/* The upsampled mask of a strip is constant (0 or 1) when every working
 * label its taps read is the same: the guided filter would return it
 * unchanged, so the strip skips it. */
static float
strip_constant(const float *mask, size_t count)
{
    float v = mask[0];
    if (v != 0.0f && v != 1.0f)
        return -1.0f;
    for (size_t i = 1; i < count; i++)
        if (mask[i] != v)
            return -1.0f;
    return v;
}

/* Writes IMAGE (and MASK): `labels` is the working-size mask (w x h, 0 or
 * 1; NULL when there is no subject) and `dir` the guide colour direction. */
static imagen_error *
write_alpha(const imagen__image_task *task, const float *labels, size_t w, size_t h, const float dir[3])
{
    const size_t W = task->width, H = task->height;
    alpha_job j = {.task = task, .constant = 0.0f};
    if (labels == NULL) { /* no subject: alpha 0 everywhere */
        j.y0 = 0;
        j.y1 = H;
        imagen__pool_for(task->pool, H, 16, write_rows, &j);
        return NULL;
    }
    for (int c = 0; c < 3; c++)
        j.dir[c] = dir[c] / 255.0f;

    double factor = fmax((double)W / (double)w, (double)H / (double)h);
    size_t radius = (size_t)lround(BGR_GUIDE_RADIUS_SCALE * factor);
    radius = radius < BGR_GUIDE_RADIUS_MIN ? BGR_GUIDE_RADIUS_MIN
                                           : (radius > BGR_GUIDE_RADIUS_MAX ? BGR_GUIDE_RADIUS_MAX : radius);
    size_t halo = 2 * radius; /* a box of boxes: the rows a filtered row depends on */
    size_t core =
        H / 4 < BGR_STRIP_ROWS_MIN ? BGR_STRIP_ROWS_MIN : (H / 4 > BGR_STRIP_ROWS_MAX ? BGR_STRIP_ROWS_MAX : H / 4);
    core = core < 4 * radius ? 4 * radius : core;
    size_t strip_max = core + 2 * halo < H ? core + 2 * halo : H;

    imagen__resample down = {0};
    float *upper = NULL, *mask = NULL, *guide = NULL;
    imagen_error *err = NULL;
    if ((err = imagen__resample_init(&down, h, H, IMAGEN_KERNEL_LINEAR)) != NULL)
        goto done;
    upper = imagen__plane_alloc(W, h);
    mask = imagen__plane_alloc(W, strip_max);
    guide = imagen__plane_alloc(W, strip_max);
    if (upper == NULL || mask == NULL || guide == NULL) {
        err = no_memory(task, "alpha planes");
        goto done;
    }
    /* across only (height unchanged): the vertical pass is done per strip */
    if ((err = imagen__resize_plane(task->pool, labels, w, h, upper, W, h, IMAGEN_KERNEL_LINEAR)) != NULL)
        goto done;
    j.upper = upper;
    j.down = &down;
    j.mask = mask;
    j.guide = guide;
    for (size_t y0 = 0; y0 < H; y0 += core) {
        j.y0 = y0;
        j.y1 = y0 + core < H ? y0 + core : H;
        j.ys = y0 > halo ? y0 - halo : 0;
        size_t ye = j.y1 + halo < H ? j.y1 + halo : H, rows = ye - j.ys;
        imagen__pool_for(task->pool, rows, 8, upsample_rows, &j);
        j.constant = strip_constant(mask, rows * W);
        if (j.constant < 0.0f) {
            imagen__pool_for(task->pool, rows, 8, guide_rows, &j);
            if ((err = imagen__guided_filter(task->pool, guide, mask, mask, W, rows, radius, BGR_GUIDE_EPS)) != NULL)
                goto done;
        }
        imagen__pool_for(task->pool, j.y1 - y0, 8, write_rows, &j);
    }
done:
    imagen__resample_free(&down);
    imagen__plane_free(upper);
    imagen__plane_free(mask);
    imagen__plane_free(guide);
    return with_model(task, err);
}

/* =====================================================================
 * The operation
 * ===================================================================== */

/* Working size: the input scaled to at most BGR_WORK_PIXELS_MAX pixels and
 * a BGR_WORK_INPUT_DIVISOR-th of the input, aspect ratio kept. */
static void
working_size(size_t W, size_t H, size_t *w, size_t *h)
{
    double pixels = (double)W * (double)H;
    double target = fmin((double)BGR_WORK_PIXELS_MAX, pixels / BGR_WORK_INPUT_DIVISOR);
    double scale = sqrt(target / pixels);
    *w = (size_t)fmax(1.0, floor((double)W * scale + 0.5));
    *h = (size_t)fmax(1.0, floor((double)H * scale + 0.5));
}

typedef struct shrink_job {
    const imagen__image_task *task;
    const imagen__resample *across, *down; /* area weights W -> w and H -> h */
    float *tmp[3];                         /* H rows x w: input rows shrunk across */
    float *z[3];                           /* output planes, h x w */
    size_t w;
} shrink_job;

static void
shrink_across_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const shrink_job *j = ctx;
    const size_t W = j->task->width, w = j->w, taps = j->across->taps;
    const float k = 1.0f / 255.0f;
    for (size_t y = begin; y < end; y++) {
        const uint8_t *in = j->task->in + y * W * 3;
        for (size_t x = 0; x < w; x++) {
            const int32_t *idx = j->across->index + x * taps;
            const float *wt = j->across->weight + x * taps;
            float r = 0.0f, g = 0.0f, b = 0.0f;
            for (size_t t = 0; t < taps; t++) {
                const uint8_t *p = in + 3 * (size_t)idx[t];
                r += wt[t] * p[0];
                g += wt[t] * p[1];
                b += wt[t] * p[2];
            }
            j->tmp[0][y * w + x] = r * k;
            j->tmp[1][y * w + x] = g * k;
            j->tmp[2][y * w + x] = b * k;
        }
    }
}

static void
shrink_down_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const shrink_job *j = ctx;
    const size_t w = j->w, taps = j->down->taps;
    for (size_t y = begin; y < end; y++)
        for (int c = 0; c < 3; c++) {
            float *restrict out = j->z[c] + y * w;
            for (size_t x = 0; x < w; x++)
                out[x] = 0.0f;
            for (size_t t = 0; t < taps; t++) {
                float kk = j->down->weight[y * taps + t];
                if (kk == 0.0f)
                    continue;
                const float *restrict in = j->tmp[c] + (size_t)j->down->index[y * taps + t] * w;
                for (size_t x = 0; x < w; x++)
                    out[x] += kk * in[x];
            }
        }
}

/* Fills s->z with the input area-downscaled straight from its bytes, with
 * the shared resampling weights: the horizontal pass reads the packed RGB
 * once, so no full-size float copy of the photo is ever made. */
static imagen_error *
load_working_image(const imagen__image_task *task, segment *s)
{
    const size_t W = task->width, H = task->height;
    imagen__resample across = {0}, down = {0};
    shrink_job j = {.task = task, .across = &across, .down = &down, .w = s->w};
    imagen_error *err = imagen__resample_init(&across, W, s->w, IMAGEN_KERNEL_BOX);
    if (err == NULL)
        err = imagen__resample_init(&down, H, s->h, IMAGEN_KERNEL_BOX);
    for (int c = 0; c < 3 && err == NULL; c++) {
        j.z[c] = s->z[c];
        if ((j.tmp[c] = imagen__plane_alloc(s->w, H)) == NULL)
            err = no_memory(task, "working image");
    }
    if (err == NULL) {
        imagen__pool_for(task->pool, H, 8, shrink_across_rows, &j);
        imagen__pool_for(task->pool, s->h, 4, shrink_down_rows, &j);
    }
    for (int c = 0; c < 3; c++)
        imagen__plane_free(j.tmp[c]);
    imagen__resample_free(&across);
    imagen__resample_free(&down);
    return with_model(task, err);
}

/* Allocates the working-size arrays of a segment whose z planes exist;
 * the pair weights only when `edges` (the GrabCut rounds reuse them). */
static bool
segment_alloc(segment *s, bool edges)
{
    bool ok = (s->data = imagen__plane_alloc(s->w, s->h)) != NULL;
    for (int d = 0; d < 4 && edges; d++)
        ok = ok && (s->edge[d] = imagen__plane_alloc(s->w, s->h)) != NULL;
    ok = ok && (s->seed = malloc(s->n)) != NULL && (s->label = malloc(s->n)) != NULL;
    ok = ok && (s->comp = malloc(s->n)) != NULL && (s->best = calloc(s->n, 1)) != NULL;
    ok = ok && (s->block_sums = malloc(s->blocks * 2 * GMM_K * sizeof(*s->block_sums))) != NULL;
    return ok;
}

static void
segment_size(segment *s, size_t w, size_t h)
{
    s->w = w;
    s->h = h;
    s->n = w * h;
    s->blocks = (h + BGR_STATS_BLOCK_ROWS - 1) / BGR_STATS_BLOCK_ROWS;
}

static imagen_error *
background_remove_process(const imagen__image_task *task)
{
    /* fine: the final cut's image; coarse: the GrabCut rounds' image, half
     * the fine size per side, or the fine image itself when that is small */
    segment fine = {0}, coarse = {0};
    size_t fw, fh;
    working_size(task->width, task->height, &fw, &fh);
    segment_size(&fine, fw, fh);
    bool two_levels = fine.n >= 4 * BGR_COARSE_PIXELS_MIN;
    if (two_levels)
        segment_size(&coarse, (fw + 1) / 2, (fh + 1) / 2);
    segment *rounds = two_levels ? &coarse : &fine;

    bool ok = true;
    for (int c = 0; c < 3; c++) {
        ok = ok && (fine.z[c] = imagen__plane_alloc(fine.w, fine.h)) != NULL;
        ok = ok && (!two_levels || (coarse.z[c] = imagen__plane_alloc(coarse.w, coarse.h)) != NULL);
    }
    imagen_error *err = ok ? load_working_image(task, &fine) : no_memory(task, "working image");
    for (int c = 0; c < 3 && two_levels && err == NULL; c++)
        err = with_model(task, imagen__resize_plane(task->pool, fine.z[c], fine.w, fine.h, coarse.z[c], coarse.w,
                                                    coarse.h, IMAGEN_KERNEL_BOX));
    if (err == NULL && (!segment_alloc(rounds, true) || (two_levels && !segment_alloc(&fine, false))))
        err = no_memory(task, "segmentation");
    size_t subject = 0;
    if (err == NULL)
        err = segment_run(task, rounds, &subject);
    if (err == NULL && subject > 0 && two_levels)
        err = refine_fine(task, &coarse, &fine, &subject);

    float *labels = NULL, dir[3] = {0.0f, 0.0f, 0.0f};
    if (err == NULL && subject > 0) {
        guide_direction(&fine, task->pool, dir);
        if ((labels = imagen__plane_alloc(fine.w, fine.h)) == NULL)
            err = no_memory(task, "labels");
        for (size_t i = 0; labels != NULL && i < fine.n; i++)
            labels[i] = fine.label[i];
    }
    segment_free(&coarse);
    segment_free(&fine); /* before the full-size planes of the alpha pass */

    if (err == NULL)
        err = write_alpha(task, labels, fw, fh, dir);
    imagen__plane_free(labels);
    return err;
}

static const imagen__image_op_desc background_remove_desc = {
    .operation = "background_remove",
    .n_controls = 0,
    .out_channels = 4,
    .has_mask = true,
    .process = background_remove_process,
};

IMAGEN__IMAGE_OP_ROW(background_remove, "background_remove", background_remove_desc);
