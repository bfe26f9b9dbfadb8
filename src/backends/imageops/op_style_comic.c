/*
 * imageops operation `style_comic`: flat colours and dark ink outlines.
 *
 * The photo is smoothed with a guided filter (luma guided by itself, Cb
 * and Cr guided by luma), so texture and noise flatten while edges stay
 * where they are; it is He and Sun's fast variant, which fits the filter's
 * models at half or quarter resolution (see fast_guided_filter). Every
 * smoothed pixel then takes the nearest of COLORS palette colours, found
 * by k-means over the photo. Ink outlines are drawn where a difference of
 * Gaussians of the smoothed luma says a pixel is darker than its
 * surroundings, that is on the dark side of each edge.
 * STRENGTH blends the result over the photo (0 returns the input exactly).
 *
 * The palette is k-means in YCbCr with chroma weighted COMIC_CHROMA_WEIGHT
 * times luma (with equal weights skin and a grey wall merge into one grey),
 * over a fixed grid of at most COMIC_SAMPLES_MAX input pixels. It starts
 * from a median cut (the box with the largest spread is split at its mean)
 * and runs a fixed number of Lloyd iterations whose sums are taken per
 * fixed chunk of samples and added in chunk order, so the palette depends
 * only on the image and COLORS, never on the thread count. The outlines
 * use one ink colour: the darkest palette colour darkened to a luma of at
 * most COMIC_INK_LUMA. At STRENGTH 1 the output therefore holds at most
 * COLORS + 1 colours, and the ink is the darkest of them (unless the
 * darkest palette colour is pure black, which the ink then equals).
 *
 * Filter radii and line width grow with the image's shorter side (scale 1
 * up to 512 pixels, at most 4 from 2048), so a large photo gets the same
 * look as a small one rather than finer detail. The image is processed in
 * horizontal strips with a halo of rows wide enough for every filter's
 * support, so working memory is a few float planes of one strip and not of
 * the image. Strip sizes depend only on the image height, so results do not
 * depend on the thread count either.
 *
 * Where it fails: the palette is global, so a small but salient colour (a
 * green eye, a logo) merges into a neighbouring one at low COLORS; smooth
 * gradients (sky, studio backdrops) become bands; fine texture (fur,
 * foliage, gravel) gets speckles of ink; edges of less than about
 * COMIC_DOG_THRESHOLD luma contrast get no outline, and outlines are
 * binary, so they are aliased (stair-stepped) on diagonals.
 *
 * Runs on the instance thread; the strip passes are split over the
 * instance's pool, each pool task writing its own rows only.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/imageops/filter.h"
#include "backends/imageops/image_op.h"

/* Order of the controls in style_comic_desc. */
#define COMIC_CONTROL_STRENGTH 0
#define COMIC_CONTROL_COLORS 1

/* ---- palette ---- */
#define COMIC_COLORS_MAX 64        /* upper bound of COLORS; sizes the palette arrays */
#define COMIC_CHROMA_WEIGHT 2.0f   /* Cb/Cr distance weight relative to luma */
#define COMIC_SAMPLES_MAX 32768    /* k-means samples at most: 512 per colour at COLORS 64 */
#define COMIC_SAMPLE_STEP_MIN 2    /* at most every 4th pixel is a sample (bounds sample memory) */
#define COMIC_KMEANS_ITERATIONS 8  /* Lloyd iterations after the median cut */
#define COMIC_KMEANS_CHUNK 1024    /* samples per partial sum (a multiple of COMIC_BLOCK) */
#define COMIC_PRUNE_ENTRIES_MIN 12 /* palettes this large prune entries per block before the search */
#define COMIC_PRUNE_SLACK 4e-3f    /* distance slack of the pruning, far above float rounding */

/* ---- smoothing and outlines, at scale 1 (see comic_plan) ---- */
#define COMIC_BASE_SIDE 512        /* shorter side, in pixels, at which the scale leaves 1 */
#define COMIC_SCALE_MAX 4.0f       /* radii stop growing at a 2048 shorter side */
#define COMIC_GUIDED_RADIUS 4.0f   /* guided filter box radius, pixels */
#define COMIC_GUIDED_EPS 0.01f     /* edges of luma std above ~0.1 survive smoothing */
#define COMIC_DOG_SIGMA 1.0f       /* inner Gaussian of the line detector, pixels */
#define COMIC_DOG_RATIO 1.6f       /* outer sigma / inner sigma (Marr-Hildreth's ratio) */
#define COMIC_DOG_THRESHOLD 0.015f /* luma by which a pixel must be darker than around it */
#define COMIC_INK_LUMA 0.1f        /* the ink is at most this dark (luma in [0, 1]) ... */
#define COMIC_INK_DARKEN 0.4f      /* ... and at most this fraction of the darkest colour */

/* ---- work layout ---- */
#define COMIC_STRIP_ROWS_MIN 16   /* strip height is half the image, within these bounds */
#define COMIC_STRIP_ROWS_MAX 1024 /* (halo overhead vs. working memory) ... */
#define COMIC_STRIP_ROWS_ALIGN 4  /* ... and a multiple of every shrink factor */
#define COMIC_STRIP_PLANES 3      /* float planes per strip: Y, Cb, Cr */
#define COMIC_BLOCK 64            /* pixels per vectorised palette search */
#define COMIC_ROW_GRAIN 4         /* rows per pool chunk in the row passes */

/* Palette entries in the form the nearest-entry search wants. The
 * weighted distance |p - c|^2 = |p|^2 + cc - (p.y ty + p.cb tcb + p.cr tcr),
 * and |p|^2 is the same for every entry, so the search compares the rest. */
typedef struct comic_terms {
    size_t n;                        /* entries */
    int32_t index[COMIC_COLORS_MAX]; /* their palette indices, ascending */
    float ty[COMIC_COLORS_MAX], tcb[COMIC_COLORS_MAX], tcr[COMIC_COLORS_MAX], cc[COMIC_COLORS_MAX];
} comic_terms;

typedef struct comic_palette {
    size_t n; /* entries in use, 1..COMIC_COLORS_MAX (fewer than COLORS when the photo has fewer colours) */
    float y[COMIC_COLORS_MAX], cb[COMIC_COLORS_MAX], cr[COMIC_COLORS_MAX]; /* centres, YCbCr as filter.h */
    comic_terms terms;                                                     /* every entry */
    uint8_t rgb[COMIC_COLORS_MAX * 3];                                     /* the entries as output colours */
    uint8_t ink[3];                                                        /* outline colour */
} comic_palette;

/* Sizes that follow from the image size (and only from it). */
typedef struct comic_plan {
    size_t radius;     /* guided filter radius, full-resolution pixels */
    size_t factor;     /* the guided filter fits its models at 1/factor resolution (2 or 4) */
    float sigma_inner; /* line detector Gaussians */
    float sigma_outer; /* ... */
    size_t halo;       /* rows read above and below a strip */
    size_t strip_rows; /* rows written per strip */
    size_t max_rows;   /* rows of the largest strip with its halos */
} comic_plan;

static imagen_error *
out_of_memory(const imagen__image_task *task, const char *what)
{
    return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory (style_comic %s)", task->model,
                            what);
}

/* ---------------------------------------------------------------------
 * Nearest palette entry
 * ------------------------------------------------------------------- */

/* Fills the search terms of the palette from its centres. */
static void
palette_terms(comic_palette *pal)
{
    const float w2 = COMIC_CHROMA_WEIGHT * COMIC_CHROMA_WEIGHT;
    comic_terms *t = &pal->terms;
    t->n = pal->n;
    for (size_t k = 0; k < pal->n; k++) {
        t->index[k] = (int32_t)k;
        t->ty[k] = 2.0f * pal->y[k];
        t->tcb[k] = 2.0f * w2 * pal->cb[k];
        t->tcr[k] = 2.0f * w2 * pal->cr[k];
        t->cc[k] = pal->y[k] * pal->y[k] + w2 * (pal->cb[k] * pal->cb[k] + pal->cr[k] * pal->cr[k]);
    }
}

/* Writes, for COMIC_BLOCK pixels, the position in `t` of the nearest of its
 * entries (ties go to the lower position). The fixed trip count lets gcc
 * vectorise the inner loop without a scalar remainder; callers pad the
 * last block of a row. */
static void
nearest_in(const comic_terms *t, const float *restrict y, const float *restrict cb, const float *restrict cr,
           int32_t *restrict label)
{
    float best[COMIC_BLOCK];
    for (size_t i = 0; i < COMIC_BLOCK; i++) {
        best[i] = t->cc[0] - (y[i] * t->ty[0] + cb[i] * t->tcb[0] + cr[i] * t->tcr[0]);
        label[i] = 0;
    }
    for (size_t k = 1; k < t->n; k++) {
        const float ty = t->ty[k], tcb = t->tcb[k], tcr = t->tcr[k], cc = t->cc[k];
        const int32_t kk = (int32_t)k;
        for (size_t i = 0; i < COMIC_BLOCK; i++) {
            float d = cc - (y[i] * ty + cb[i] * tcb + cr[i] * tcr);
            /* A mask rather than `nearer ? kk : label[i]`, which gcc 12
             * leaves as a branch and then does not vectorise. */
            int32_t nearer = -(int32_t)(d < best[i]);
            label[i] = (label[i] & ~nearer) | (kk & nearer);
            best[i] = d < best[i] ? d : best[i];
        }
    }
}

/* The entries that can be nearest to some pixel of a block. With m the
 * block's mean and R its largest distance from m, an entry c is nearer
 * than c* to some pixel p only if |m - c| - R <= |p - c| <= |p - c*| <=
 * |m - c*| + R (triangle inequality), so entries farther from m than the
 * nearest one plus 2R are dropped (COMIC_PRUNE_SLACK covers the float
 * rounding of the search). A flat block keeps one or two entries. The
 * entries stay in index order, so ties still go to the lower index. */
static void
block_candidates(const comic_palette *pal, const float *y, const float *cb, const float *cr, comic_terms *cand)
{
    const float w = COMIC_CHROMA_WEIGHT;
    float my = 0.0f, mb = 0.0f, mr = 0.0f, r2 = 0.0f;
    for (size_t i = 0; i < COMIC_BLOCK; i++) {
        my += y[i];
        mb += cb[i];
        mr += cr[i];
    }
    my /= COMIC_BLOCK;
    mb /= COMIC_BLOCK;
    mr /= COMIC_BLOCK;
    for (size_t i = 0; i < COMIC_BLOCK; i++) {
        float dy = y[i] - my, db = w * (cb[i] - mb), dr = w * (cr[i] - mr);
        float d2 = dy * dy + db * db + dr * dr;
        r2 = d2 > r2 ? d2 : r2;
    }
    float dist[COMIC_COLORS_MAX], nearest = INFINITY;
    for (size_t k = 0; k < pal->n; k++) {
        float dy = my - pal->y[k], db = w * (mb - pal->cb[k]), dr = w * (mr - pal->cr[k]);
        dist[k] = sqrtf(dy * dy + db * db + dr * dr);
        nearest = dist[k] < nearest ? dist[k] : nearest;
    }
    float limit = nearest + 2.0f * sqrtf(r2) + COMIC_PRUNE_SLACK;
    const comic_terms *all = &pal->terms;
    cand->n = 0;
    for (size_t k = 0; k < pal->n; k++)
        if (dist[k] <= limit) {
            size_t c = cand->n++;
            cand->index[c] = all->index[k];
            cand->ty[c] = all->ty[k];
            cand->tcb[c] = all->tcb[k];
            cand->tcr[c] = all->tcr[k];
            cand->cc[c] = all->cc[k];
        }
}

/* Writes the palette index of the nearest entry of COMIC_BLOCK pixels.
 * Large palettes are first pruned per block (block_candidates): the search
 * costs per entry, and most blocks of a smoothed image are nearly flat. */
static void
nearest_block(const comic_palette *pal, const float *y, const float *cb, const float *cr, int32_t *label)
{
    if (pal->n < COMIC_PRUNE_ENTRIES_MIN) {
        nearest_in(&pal->terms, y, cb, cr, label);
        return;
    }
    comic_terms cand;
    block_candidates(pal, y, cb, cr, &cand);
    nearest_in(&cand, y, cb, cr, label);
    for (size_t i = 0; i < COMIC_BLOCK; i++)
        label[i] = cand.index[label[i]];
}

/* ---------------------------------------------------------------------
 * Palette: median cut, then k-means
 * ------------------------------------------------------------------- */

/* The samples: YCbCr of a grid of input pixels, each array padded with
 * zeros to a multiple of COMIC_BLOCK (the padding is never counted). */
typedef struct comic_samples {
    size_t n;
    float *y, *cb, *cr;
} comic_samples;

/* A box of the median cut: samples order[lo, hi). */
typedef struct cut_box {
    size_t lo, hi;
    double mean[3];
    double spread; /* count * weighted variance along `axis`; 0 = cannot split */
    int axis;
} cut_box;

static void
cut_box_stats(const comic_samples *s, const uint32_t *order, cut_box *b)
{
    const float *axes[3] = {s->y, s->cb, s->cr};
    const double w2 = (double)COMIC_CHROMA_WEIGHT * COMIC_CHROMA_WEIGHT;
    double n = (double)(b->hi - b->lo);
    b->spread = 0.0;
    b->axis = 0;
    for (int a = 0; a < 3; a++) {
        double sum = 0.0, sq = 0.0;
        for (size_t i = b->lo; i < b->hi; i++) {
            double v = axes[a][order[i]];
            sum += v;
            sq += v * v;
        }
        b->mean[a] = sum / n;
        double spread = (sq - sum * sum / n) * (a == 0 ? 1.0 : w2);
        if (spread > b->spread) {
            b->spread = spread;
            b->axis = a;
        }
    }
}

/* Median cut over the samples: starts from one box and splits the box of
 * largest spread at its mean until there are `colors` boxes or nothing is
 * left to split. Writes the box means as the palette centres. Splitting at
 * the mean rather than the median keeps it a linear partition (no sort), and
 * the partition is a fixed two-pointer walk, so the result is deterministic. */
static void
median_cut(const comic_samples *s, uint32_t *order, size_t colors, comic_palette *pal)
{
    const float *axes[3] = {s->y, s->cb, s->cr};
    cut_box boxes[COMIC_COLORS_MAX];
    size_t n_boxes = 1;
    for (size_t i = 0; i < s->n; i++)
        order[i] = (uint32_t)i;
    boxes[0].lo = 0;
    boxes[0].hi = s->n;
    cut_box_stats(s, order, &boxes[0]);
    while (n_boxes < colors) {
        size_t pick = 0;
        for (size_t b = 1; b < n_boxes; b++)
            if (boxes[b].spread > boxes[pick].spread)
                pick = b;
        cut_box *b = &boxes[pick];
        if (!(b->spread > 0.0))
            break;
        const float *v = axes[b->axis];
        double split = b->mean[b->axis];
        size_t i = b->lo, j = b->hi;
        while (i < j) {
            if (v[order[i]] <= split) {
                i++;
            } else {
                uint32_t t = order[i];
                order[i] = order[--j];
                order[j] = t;
            }
        }
        if (i == b->lo || i == b->hi) { /* rounding put every sample on one side */
            b->spread = 0.0;
            continue;
        }
        cut_box *nb = &boxes[n_boxes++];
        nb->lo = i;
        nb->hi = b->hi;
        b->hi = i;
        cut_box_stats(s, order, b);
        cut_box_stats(s, order, nb);
    }
    pal->n = n_boxes;
    for (size_t k = 0; k < n_boxes; k++) {
        pal->y[k] = (float)boxes[k].mean[0];
        pal->cb[k] = (float)boxes[k].mean[1];
        pal->cr[k] = (float)boxes[k].mean[2];
    }
}

typedef struct kmeans_job {
    const comic_palette *pal;
    const comic_samples *s;
    double *sums; /* per chunk: COMIC_COLORS_MAX x {y, cb, cr, count} */
} kmeans_job;

/* Assigns the samples of chunks [begin, end) and sums them per entry. */
static void
kmeans_chunks(void *ctx, size_t begin, size_t end, size_t worker)
{
    const kmeans_job *j = ctx;
    const comic_samples *s = j->s;
    int32_t label[COMIC_BLOCK];
    for (size_t c = begin; c < end; c++) {
        double *sum = j->sums + c * COMIC_COLORS_MAX * 4;
        memset(sum, 0, COMIC_COLORS_MAX * 4 * sizeof(*sum));
        size_t last = (c + 1) * COMIC_KMEANS_CHUNK < s->n ? (c + 1) * COMIC_KMEANS_CHUNK : s->n;
        for (size_t i0 = c * COMIC_KMEANS_CHUNK; i0 < last; i0 += COMIC_BLOCK) {
            nearest_block(j->pal, s->y + i0, s->cb + i0, s->cr + i0, label);
            size_t m = last - i0 < COMIC_BLOCK ? last - i0 : COMIC_BLOCK;
            for (size_t i = 0; i < m; i++) {
                double *e = sum + (size_t)label[i] * 4;
                e[0] += s->y[i0 + i];
                e[1] += s->cb[i0 + i];
                e[2] += s->cr[i0 + i];
                e[3] += 1.0;
            }
        }
    }
}

/* Lloyd iterations from the median-cut centres. The chunk sums are added
 * in chunk order, whichever thread computed them. An entry that loses all
 * its samples keeps its centre. */
static void
kmeans(imagen__pool *pool, const comic_samples *s, double *sums, comic_palette *pal)
{
    size_t chunks = (s->n + COMIC_KMEANS_CHUNK - 1) / COMIC_KMEANS_CHUNK;
    kmeans_job j = {.pal = pal, .s = s, .sums = sums};
    for (int it = 0; it < COMIC_KMEANS_ITERATIONS; it++) {
        palette_terms(pal);
        imagen__pool_for(pool, chunks, 1, kmeans_chunks, &j);
        bool moved = false;
        for (size_t k = 0; k < pal->n; k++) {
            double t[4] = {0.0, 0.0, 0.0, 0.0};
            for (size_t c = 0; c < chunks; c++)
                for (int a = 0; a < 4; a++)
                    t[a] += sums[(c * COMIC_COLORS_MAX + k) * 4 + (size_t)a];
            if (t[3] == 0.0)
                continue;
            float y = (float)(t[0] / t[3]), cb = (float)(t[1] / t[3]), cr = (float)(t[2] / t[3]);
            moved |= y != pal->y[k] || cb != pal->cb[k] || cr != pal->cr[k];
            pal->y[k] = y;
            pal->cb[k] = cb;
            pal->cr[k] = cr;
        }
        if (!moved)
            break;
    }
    palette_terms(pal);
}

/* Output colours of the entries and the ink: the darkest entry (by BT.601
 * luma, the lower index on ties) scaled down so the ink is darker than
 * every entry yet keeps the shadows' hue. Rounding down keeps each ink
 * component at or below the entry's. */
static void
palette_colours(comic_palette *pal)
{
    imagen__ycbcr_to_rgb(NULL, pal->y, pal->cb, pal->cr, pal->n, 1, pal->rgb, 3);
    size_t darkest = 0;
    long darkest_luma = 0;
    for (size_t k = 0; k < pal->n; k++) {
        const uint8_t *c = pal->rgb + 3 * k;
        long luma = 299L * c[0] + 587L * c[1] + 114L * c[2];
        if (k == 0 || luma < darkest_luma) {
            darkest = k;
            darkest_luma = luma;
        }
    }
    float f = COMIC_INK_DARKEN;
    if (darkest_luma > 0 && COMIC_INK_LUMA * 255000.0f / (float)darkest_luma < f)
        f = COMIC_INK_LUMA * 255000.0f / (float)darkest_luma;
    for (int c = 0; c < 3; c++)
        pal->ink[c] = (uint8_t)floorf((float)pal->rgb[3 * darkest + (size_t)c] * f);
}

/* Builds the palette of at most `colors` entries from a grid of input
 * pixels (nx by ny, each at the centre of its grid cell). */
static imagen_error *
build_palette(const imagen__image_task *task, size_t colors, comic_palette *pal)
{
    const size_t w = task->width, h = task->height;
    size_t step = (size_t)ceil(sqrt((double)w * (double)h / COMIC_SAMPLES_MAX));
    if (step < COMIC_SAMPLE_STEP_MIN)
        step = COMIC_SAMPLE_STEP_MIN;
    size_t nx = w / step > 0 ? w / step : 1, ny = h / step > 0 ? h / step : 1;
    size_t n = nx * ny, padded = (n + COMIC_BLOCK - 1) / COMIC_BLOCK * COMIC_BLOCK;
    size_t chunks = (n + COMIC_KMEANS_CHUNK - 1) / COMIC_KMEANS_CHUNK;
    comic_samples s = {.n = n};
    uint8_t *rgb = malloc(n * 3);
    float *planes = calloc(3 * padded, sizeof(float));
    uint32_t *order = malloc(n * sizeof(*order));
    double *sums = malloc(chunks * COMIC_COLORS_MAX * 4 * sizeof(*sums));
    imagen_error *err = NULL;
    if (rgb == NULL || planes == NULL || order == NULL || sums == NULL) {
        err = out_of_memory(task, "palette samples");
        goto done;
    }
    for (size_t gy = 0; gy < ny; gy++) {
        const uint8_t *row = task->in + (2 * gy + 1) * h / (2 * ny) * w * 3;
        for (size_t gx = 0; gx < nx; gx++)
            memcpy(rgb + (gy * nx + gx) * 3, row + (2 * gx + 1) * w / (2 * nx) * 3, 3);
    }
    s.y = planes;
    s.cb = planes + padded;
    s.cr = planes + 2 * padded;
    imagen__rgb_to_ycbcr(task->pool, rgb, 3, n, 1, s.y, s.cb, s.cr);
    median_cut(&s, order, colors, pal);
    kmeans(task->pool, &s, sums, pal);
    palette_colours(pal);
done:
    free(rgb);
    free(planes);
    free(order);
    free(sums);
    return err;
}

/* ---------------------------------------------------------------------
 * Fast guided filter
 *
 * He and Sun's "fast guided filter": the per-window linear models of the
 * guided filter are fitted on the guide and the sources shrunk by an
 * integer factor, and only applied at full resolution, with the model
 * coefficients interpolated bilinearly. At factor f the box means run on
 * 1/f^2 of the pixels, and the result stays within a few thousandths of the
 * full filter because the coefficients are smooth by construction. Several
 * sources share the guide's statistics. This is generic (not comic
 * specific): a candidate for filter.c.
 * ------------------------------------------------------------------- */

#define FGF_SOURCES_MAX 3

typedef struct fgf_job {
    float *guide;                 /* full resolution; may be one of src (it is read before written) */
    float *const *src;            /* full resolution; overwritten with the output */
    size_t n;                     /* sources, 1..FGF_SOURCES_MAX */
    size_t width, height, factor; /* full size and shrink factor */
    size_t lo_w, lo_h;            /* shrunk size: ceil(width / factor) x ceil(height / factor) */
    float eps;
    float *lo_i, *lo_ii;            /* shrunk guide and its square, then their box means */
    float *lo_p[FGF_SOURCES_MAX];   /* shrunk sources → box means → offset B → its box mean */
    float *lo_ip[FGF_SOURCES_MAX];  /* guide * source → box means → slope A → its box mean */
    bool is_guide[FGF_SOURCES_MAX]; /* the source is the guide: lo_p, lo_ip are lo_i, lo_ii */
    const int32_t *x0, *x1;         /* per full column: the two shrunk columns around it ... */
    const float *xt;                /* ... and the weight of x1 */
    float *rows;                    /* per worker: 2n rows of lo_w floats */
} fgf_job;

/* Area average of each factor x factor block (clipped at the far edges). */
static void
fgf_shrink_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const fgf_job *j = ctx;
    const size_t f = j->factor, w = j->width;
    for (size_t ly = begin; ly < end; ly++) {
        size_t y_end = (ly + 1) * f < j->height ? (ly + 1) * f : j->height;
        for (size_t lx = 0; lx < j->lo_w; lx++) {
            size_t x_end = (lx + 1) * f < w ? (lx + 1) * f : w;
            float si = 0.0f, sp[FGF_SOURCES_MAX] = {0.0f};
            for (size_t y = ly * f; y < y_end; y++)
                for (size_t x = lx * f; x < x_end; x++) {
                    si += j->guide[y * w + x];
                    for (size_t k = 0; k < j->n; k++)
                        sp[k] += j->src[k][y * w + x];
                }
            float inv = 1.0f / (float)((y_end - ly * f) * (x_end - lx * f));
            size_t i = ly * j->lo_w + lx;
            float gi = si * inv;
            j->lo_i[i] = gi;
            j->lo_ii[i] = gi * gi;
            for (size_t k = 0; k < j->n; k++)
                if (!j->is_guide[k]) {
                    j->lo_p[k][i] = sp[k] * inv;
                    j->lo_ip[k][i] = gi * sp[k] * inv;
                }
        }
    }
}

/* Window models from the box means: A = cov(I, p) / (var(I) + eps) goes
 * to lo_ip, B = mean(p) - A mean(I) to lo_p. A source that is the guide
 * overwrites lo_i and lo_ii, which is safe: the other sources only use
 * their values as read at the top of the element. */
static void
fgf_model_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const fgf_job *j = ctx;
    for (size_t i = begin * j->lo_w; i < end * j->lo_w; i++) {
        float mi = j->lo_i[i], var = j->lo_ii[i] - mi * mi;
        float inv = 1.0f / (var + j->eps);
        for (size_t k = 0; k < j->n; k++) {
            float mp = j->lo_p[k][i];
            float a = (j->lo_ip[k][i] - mi * mp) * inv;
            j->lo_ip[k][i] = a;
            j->lo_p[k][i] = mp - a * mi;
        }
    }
}

/* Applies the averaged models, interpolated to full resolution, to the
 * guide: q = A I + B. Sample centres are aligned as image resizers do
 * (full pixel y sits at (y + 0.5) / f - 0.5 in shrunk rows). */
static void
fgf_apply_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const fgf_job *j = ctx;
    const size_t w = j->width, lo_w = j->lo_w, n = j->n;
    float *rows = j->rows + worker * 2 * n * lo_w; /* A rows of the sources, then their B rows */
    for (size_t y = begin; y < end; y++) {
        float u = ((float)y + 0.5f) / (float)j->factor - 0.5f;
        size_t r0 = u > 0.0f ? (size_t)u : 0;
        size_t r1 = r0 + 1 < j->lo_h ? r0 + 1 : r0;
        float t = u > 0.0f ? u - (float)r0 : 0.0f;
        for (size_t k = 0; k < n; k++) {
            const float *a0 = j->lo_ip[k] + r0 * lo_w, *a1 = j->lo_ip[k] + r1 * lo_w;
            const float *b0 = j->lo_p[k] + r0 * lo_w, *b1 = j->lo_p[k] + r1 * lo_w;
            float *ra = rows + k * lo_w, *rb = rows + (n + k) * lo_w;
            for (size_t x = 0; x < lo_w; x++) {
                ra[x] = a0[x] + t * (a1[x] - a0[x]);
                rb[x] = b0[x] + t * (b1[x] - b0[x]);
            }
        }
        float *g = j->guide + y * w;
        for (size_t x = 0; x < w; x++) {
            size_t c0 = (size_t)j->x0[x], c1 = (size_t)j->x1[x];
            float tx = j->xt[x], gx = g[x];
            for (size_t k = 0; k < n; k++) {
                const float *ra = rows + k * lo_w, *rb = rows + (n + k) * lo_w;
                float a = ra[c0] + tx * (ra[c1] - ra[c0]);
                float b = rb[c0] + tx * (rb[c1] - rb[c0]);
                j->src[k][y * w + x] = a * gx + b;
            }
        }
    }
}

/* Filters n (1..FGF_SOURCES_MAX) planes in place, all guided by `guide`
 * (which may be one of them, once), with box radius `radius` and
 * regulariser eps as imagen__guided_filter, fitting the models at 1/factor
 * resolution. Allocates two shrunk planes plus two per source that is not
 * the guide, and a few rows per thread; fails INTERNAL (src unspecified)
 * when out of memory. Deterministic: every pass writes disjoint rows and
 * sums in a fixed order. */
static imagen_error *
fast_guided_filter(imagen__pool *pool, float *guide, float *const *src, size_t n, size_t width, size_t height,
                   size_t radius, float eps, size_t factor)
{
    fgf_job j = {.guide = guide, .src = src, .n = n, .width = width, .height = height, .factor = factor, .eps = eps};
    j.lo_w = (width + factor - 1) / factor;
    j.lo_h = (height + factor - 1) / factor;
    size_t lo_radius = (radius + factor / 2) / factor, lo_n = j.lo_w * j.lo_h;
    lo_radius = lo_radius > 0 ? lo_radius : 1;
    size_t threads = imagen__pool_threads(pool);
    /* Plane 0 is the shrunk guide, 1 its square, then two per source that
     * is not the guide. */
    size_t lo_planes = 2;
    for (size_t k = 0; k < n; k++)
        lo_planes += src[k] == guide ? 0 : 2;
    float *lo = imagen__plane_alloc(j.lo_w, j.lo_h * lo_planes);
    int32_t *cols = malloc(2 * width * sizeof(*cols));
    float *xt = malloc(width * sizeof(*xt));
    j.rows = malloc(threads * 2 * n * j.lo_w * sizeof(float));
    imagen_error *err = NULL;
    if (lo == NULL || cols == NULL || xt == NULL || j.rows == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops: out of memory (fast guided filter)");
        goto done;
    }
    j.lo_i = lo;
    j.lo_ii = lo + lo_n;
    for (size_t k = 0, next = 2; k < n; k++) {
        j.is_guide[k] = src[k] == guide;
        j.lo_p[k] = j.is_guide[k] ? j.lo_i : lo + next++ * lo_n;
        j.lo_ip[k] = j.is_guide[k] ? j.lo_ii : lo + next++ * lo_n;
    }
    for (size_t x = 0; x < width; x++) {
        float u = ((float)x + 0.5f) / (float)factor - 0.5f;
        size_t c0 = u > 0.0f ? (size_t)u : 0;
        cols[x] = (int32_t)c0;
        cols[width + x] = (int32_t)(c0 + 1 < j.lo_w ? c0 + 1 : c0);
        xt[x] = u > 0.0f ? u - (float)c0 : 0.0f;
    }
    j.x0 = cols;
    j.x1 = cols + width;
    j.xt = xt;
    imagen__pool_for(pool, j.lo_h, 8, fgf_shrink_rows, &j);
    for (size_t p = 0; p < lo_planes && err == NULL; p++)
        err = imagen__box_mean(pool, lo + p * lo_n, lo + p * lo_n, j.lo_w, j.lo_h, lo_radius);
    if (err != NULL)
        goto done;
    imagen__pool_for(pool, j.lo_h, 8, fgf_model_rows, &j);
    /* Now every plane holds a source's A or B (a guide source's in 0, 1). */
    for (size_t k = 0; k < n && err == NULL; k++)
        if ((err = imagen__box_mean(pool, j.lo_p[k], j.lo_p[k], j.lo_w, j.lo_h, lo_radius)) == NULL)
            err = imagen__box_mean(pool, j.lo_ip[k], j.lo_ip[k], j.lo_w, j.lo_h, lo_radius);
    if (err != NULL)
        goto done;
    imagen__pool_for(pool, height, 4, fgf_apply_rows, &j);
done:
    imagen__plane_free(lo);
    free(cols);
    free(xt);
    free(j.rows);
    return err;
}

/* ---------------------------------------------------------------------
 * Strips
 * ------------------------------------------------------------------- */

static size_t
round_up(size_t v, size_t m)
{
    return (v + m - 1) / m * m;
}

/* Radii, shrink factor and strip layout for an image size. Everything
 * that shapes the result is here, and depends on the size alone. */
static comic_plan
comic_plan_for(size_t width, size_t height)
{
    comic_plan p;
    size_t side = width < height ? width : height;
    float scale = (float)side / COMIC_BASE_SIDE;
    scale = scale < 1.0f ? 1.0f : (scale > COMIC_SCALE_MAX ? COMIC_SCALE_MAX : scale);
    p.radius = (size_t)lroundf(COMIC_GUIDED_RADIUS * scale);
    p.factor = p.radius >= 3 * COMIC_GUIDED_RADIUS ? 4 : 2;
    p.sigma_inner = COMIC_DOG_SIGMA * scale;
    p.sigma_outer = p.sigma_inner * COMIC_DOG_RATIO;
    /* The smoothed luma depends on rows within about 2 radii (two box
     * means in a row) plus a shrunk row either side (block average and
     * interpolation); the outer Gaussian (a 3-sigma kernel, or three box
     * passes of smaller total reach) adds its reach on top. With this halo
     * a strip's own rows see the same neighbourhood as in the whole image.
     * Strip starts stay on the shrink grid: strip height and halo are
     * multiples of the factor. */
    p.halo = round_up(2 * p.radius + 2 * p.factor + (size_t)ceilf(3.0f * p.sigma_outer) + 1, p.factor);
    p.strip_rows = height / 2 / COMIC_STRIP_ROWS_ALIGN * COMIC_STRIP_ROWS_ALIGN;
    p.strip_rows = p.strip_rows < COMIC_STRIP_ROWS_MIN ? COMIC_STRIP_ROWS_MIN : p.strip_rows;
    p.strip_rows = p.strip_rows > COMIC_STRIP_ROWS_MAX ? COMIC_STRIP_ROWS_MAX : p.strip_rows;
    p.max_rows = p.strip_rows + 2 * p.halo;
    p.max_rows = p.max_rows > height ? height : p.max_rows;
    return p;
}

typedef struct strip_job {
    const comic_palette *pal;
    const uint8_t *in; /* the whole input image */
    uint8_t *out;      /* the whole output image */
    size_t width;
    size_t first_row;           /* image row of the strip's first written row */
    size_t plane_offset;        /* plane row of that row (the top halo's height) */
    const float *ys, *cb, *cr;  /* smoothed planes of the strip */
    const float *inner, *outer; /* luma Gaussians of the strip */
    float strength;
} strip_job;

/* Writes the palette colour of every smoothed pixel of the rows. */
static void
assign_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const strip_job *j = ctx;
    const size_t w = j->width;
    float by[COMIC_BLOCK], bcb[COMIC_BLOCK], bcr[COMIC_BLOCK];
    int32_t label[COMIC_BLOCK];
    for (size_t r = begin; r < end; r++) {
        size_t p = (j->plane_offset + r) * w;
        uint8_t *out = j->out + (j->first_row + r) * w * 3;
        for (size_t x0 = 0; x0 < w; x0 += COMIC_BLOCK) {
            size_t m = w - x0 < COMIC_BLOCK ? w - x0 : COMIC_BLOCK;
            if (m == COMIC_BLOCK) {
                nearest_block(j->pal, j->ys + p + x0, j->cb + p + x0, j->cr + p + x0, label);
            } else {
                memset(by, 0, sizeof(by));
                memset(bcb, 0, sizeof(bcb));
                memset(bcr, 0, sizeof(bcr));
                memcpy(by, j->ys + p + x0, m * sizeof(float));
                memcpy(bcb, j->cb + p + x0, m * sizeof(float));
                memcpy(bcr, j->cr + p + x0, m * sizeof(float));
                nearest_block(j->pal, by, bcb, bcr, label);
            }
            for (size_t i = 0; i < m; i++)
                memcpy(out + (x0 + i) * 3, j->pal->rgb + 3 * (size_t)label[i], 3);
        }
    }
}

/* Inks the outline pixels of the rows, then blends over the input when
 * STRENGTH < 1 (a convex mix, so +0.5 and truncation round to nearest). */
static void
ink_rows(void *ctx, size_t begin, size_t end, size_t worker)
{
    const strip_job *j = ctx;
    const size_t w = j->width;
    const float s = j->strength;
    for (size_t r = begin; r < end; r++) {
        size_t p = (j->plane_offset + r) * w;
        uint8_t *out = j->out + (j->first_row + r) * w * 3;
        const uint8_t *in = j->in + (j->first_row + r) * w * 3;
        for (size_t x = 0; x < w; x++)
            if (j->outer[p + x] - j->inner[p + x] > COMIC_DOG_THRESHOLD)
                memcpy(out + x * 3, j->pal->ink, 3);
        if (s < 1.0f)
            for (size_t i = 0; i < w * 3; i++)
                out[i] = (uint8_t)((float)in[i] + s * ((float)out[i] - (float)in[i]) + 0.5f);
    }
}

/* Smooths rows [a, b) of the image in the strip planes and writes output
 * rows [y0, y1) (a <= y0 < y1 <= b). */
static imagen_error *
comic_strip(const imagen__image_task *task, const comic_plan *plan, const comic_palette *pal,
            float *planes[COMIC_STRIP_PLANES], size_t a, size_t y0, size_t y1, size_t b)
{
    const size_t w = task->width, rows = b - a;
    float *y = planes[0], *cb = planes[1], *cr = planes[2];
    imagen__rgb_to_ycbcr(task->pool, task->in + a * w * 3, 3, w, rows, y, cb, cr);
    /* Luma guides all three, itself included: chroma edges follow luma's. */
    IMAGEN_RETURN_IF_ERROR(
        fast_guided_filter(task->pool, y, planes, 3, w, rows, plan->radius, COMIC_GUIDED_EPS, plan->factor));
    strip_job j = {.pal = pal,
                   .in = task->in,
                   .out = task->out,
                   .width = w,
                   .first_row = y0,
                   .plane_offset = y0 - a,
                   .ys = y,
                   .cb = cb,
                   .cr = cr,
                   .strength = (float)task->controls[COMIC_CONTROL_STRENGTH]};
    imagen__pool_for(task->pool, y1 - y0, COMIC_ROW_GRAIN, assign_rows, &j);
    /* Cb and Cr are spent: they take the two Gaussians of smoothed luma. */
    IMAGEN_RETURN_IF_ERROR(imagen__gaussian_blur(task->pool, y, cb, w, rows, plan->sigma_inner));
    IMAGEN_RETURN_IF_ERROR(imagen__gaussian_blur(task->pool, y, cr, w, rows, plan->sigma_outer));
    j.inner = cb;
    j.outer = cr;
    imagen__pool_for(task->pool, y1 - y0, COMIC_ROW_GRAIN, ink_rows, &j);
    return NULL;
}

static imagen_error *
style_comic_process(const imagen__image_task *task)
{
    const size_t w = task->width, h = task->height;
    if (task->controls[COMIC_CONTROL_STRENGTH] == 0.0) {
        memcpy(task->out, task->in, w * h * 3);
        return NULL;
    }
    comic_palette pal;
    IMAGEN_RETURN_IF_ERROR(build_palette(task, (size_t)task->controls[COMIC_CONTROL_COLORS], &pal));

    comic_plan plan = comic_plan_for(w, h);
    float *planes[COMIC_STRIP_PLANES] = {NULL};
    imagen_error *err = NULL;
    for (size_t i = 0; i < COMIC_STRIP_PLANES; i++)
        if ((planes[i] = imagen__plane_alloc(w, plan.max_rows)) == NULL) {
            err = out_of_memory(task, "strip planes");
            goto done;
        }
    for (size_t y0 = 0; y0 < h; y0 += plan.strip_rows) {
        size_t y1 = y0 + plan.strip_rows < h ? y0 + plan.strip_rows : h;
        size_t a = y0 > plan.halo ? y0 - plan.halo : 0;
        size_t b = y1 + plan.halo < h ? y1 + plan.halo : h;
        if ((err = comic_strip(task, &plan, &pal, planes, a, y0, y1, b)) != NULL) {
            err = imagen_error_wrap(err, "imageops model '%s'", task->model);
            goto done;
        }
    }
done:
    for (size_t i = 0; i < COMIC_STRIP_PLANES; i++)
        imagen__plane_free(planes[i]);
    return err;
}

static const imagen__image_op_desc style_comic_desc = {
    .operation = "style_comic",
    .n_controls = 2,
    .controls = {{"STRENGTH", IMAGEN_TYPE_FP32, 1.0, 0.0, 1.0}, {"COLORS", IMAGEN_TYPE_INT32, 8, 2, COMIC_COLORS_MAX}},
    .out_channels = 3,
    .has_mask = false,
    .process = style_comic_process,
};

IMAGEN__IMAGE_OP_ROW(style_comic, "style_comic", style_comic_desc);
