/*
 * The imageops thread pool and float primitives against naive reference
 * implementations: every index runs exactly once, results do not depend on
 * the thread count, and each filter matches its textbook definition.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "backends/imageops/filter.h"
#include "backends/imageops/pool.h"
#include "test.h"

typedef struct count_ctx {
    atomic_int *hits;
    atomic_int max_worker;
} count_ctx;

static void
count_task(void *ctx, size_t begin, size_t end, size_t worker)
{
    count_ctx *c = ctx;
    for (size_t i = begin; i < end; i++)
        atomic_fetch_add(&c->hits[i], 1);
    int w = (int)worker;
    int prev = atomic_load(&c->max_worker);
    while (w > prev && !atomic_compare_exchange_weak(&c->max_worker, &prev, w)) {
    }
}

static void
test_pool_runs_every_index_once(void)
{
    for (size_t threads = 1; threads <= 5; threads += 2) {
        imagen__pool *pool = NULL;
        CHECK_OK(imagen__pool_create(threads, &pool));
        CHECK_INT_EQ(imagen__pool_threads(pool), threads);
        for (int round = 0; round < 50; round++) {
            size_t n = 1 + (size_t)round * 37;
            atomic_int *hits = calloc(n, sizeof(*hits));
            count_ctx c = {.hits = hits};
            atomic_init(&c.max_worker, 0);
            imagen__pool_for(pool, n, 1 + (size_t)round % 3, count_task, &c);
            int bad = 0;
            for (size_t i = 0; i < n; i++)
                bad += atomic_load(&hits[i]) != 1;
            CHECK_INT_EQ(bad, 0);
            CHECK(atomic_load(&c.max_worker) < (int)threads);
            free(hits);
        }
        imagen__pool_destroy(pool);
    }
    /* NULL pool runs inline */
    atomic_int hits[3] = {0};
    count_ctx c = {.hits = hits};
    atomic_init(&c.max_worker, 0);
    imagen__pool_for(NULL, 3, 1, count_task, &c);
    CHECK_INT_EQ(atomic_load(&hits[0]) + atomic_load(&hits[1]) + atomic_load(&hits[2]), 3);
}

static float *
random_plane(size_t w, size_t h, unsigned seed)
{
    float *p = imagen__plane_alloc(w, h);
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < w * h; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)(s >> 8) / 16777216.0f;
    }
    return p;
}

static float
max_abs_diff(const float *a, const float *b, size_t n)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++)
        m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

static void
test_box_mean_matches_naive(void)
{
    imagen__pool *pool = NULL;
    CHECK_OK(imagen__pool_create(3, &pool));
    const size_t sizes[][3] = {{1, 1, 0}, {7, 5, 1}, {70, 33, 3}, {130, 9, 20}, {3, 200, 7}};
    for (size_t t = 0; t < sizeof(sizes) / sizeof(sizes[0]); t++) {
        size_t w = sizes[t][0], h = sizes[t][1], r = sizes[t][2];
        float *src = random_plane(w, h, (unsigned)t), *dst = imagen__plane_alloc(w, h);
        float *ref = imagen__plane_alloc(w, h);
        for (size_t y = 0; y < h; y++)
            for (size_t x = 0; x < w; x++) {
                double s = 0;
                int n = 0;
                for (long yy = (long)y - (long)r; yy <= (long)(y + r); yy++)
                    for (long xx = (long)x - (long)r; xx <= (long)(x + r); xx++)
                        if (yy >= 0 && yy < (long)h && xx >= 0 && xx < (long)w) {
                            s += src[yy * (long)w + xx];
                            n++;
                        }
                ref[y * w + x] = (float)(s / n);
            }
        CHECK_OK(imagen__box_mean(pool, src, dst, w, h, r));
        CHECK(max_abs_diff(dst, ref, w * h) < 1e-5f);
        /* in place gives the same */
        CHECK_OK(imagen__box_mean(pool, src, src, w, h, r));
        CHECK(max_abs_diff(src, ref, w * h) < 1e-5f);
        imagen__plane_free(src);
        imagen__plane_free(dst);
        imagen__plane_free(ref);
    }
    imagen__pool_destroy(pool);
}

static void
test_gaussian_blur(void)
{
    imagen__pool *pool = NULL;
    CHECK_OK(imagen__pool_create(2, &pool));
    const size_t w = 61, h = 47;
    /* an impulse spreads into a normalised, symmetric bump of the asked width */
    const float sigmas[] = {0.8f, 2.0f, 6.0f};
    for (size_t t = 0; t < 3; t++) {
        float *p = imagen__plane_alloc(w, h);
        for (size_t i = 0; i < w * h; i++)
            p[i] = 0.0f;
        p[23 * w + 30] = 1.0f;
        CHECK_OK(imagen__gaussian_blur(pool, p, p, w, h, sigmas[t]));
        double sum = 0, var = 0;
        for (size_t y = 0; y < h; y++)
            for (size_t x = 0; x < w; x++) {
                sum += p[y * w + x];
                var += p[y * w + x] * ((double)x - 30) * ((double)x - 30);
            }
        CHECK(fabs(sum - 1.0) < 1e-4);
        CHECK(fabs(sqrt(var) - sigmas[t]) < 0.1 * sigmas[t] + 0.05);
        CHECK(fabsf(p[23 * w + 27] - p[23 * w + 33]) < 1e-6f);
        CHECK(fabsf(p[20 * w + 30] - p[26 * w + 30]) < 1e-6f);
        imagen__plane_free(p);
    }
    imagen__pool_destroy(pool);
}

static void
test_guided_filter(void)
{
    imagen__pool *pool = NULL;
    CHECK_OK(imagen__pool_create(2, &pool));
    const size_t w = 40, h = 30;
    /* a step edge in the guide survives smoothing of a noisy copy of it */
    float *guide = imagen__plane_alloc(w, h), *src = random_plane(w, h, 9), *dst = imagen__plane_alloc(w, h);
    for (size_t y = 0; y < h; y++)
        for (size_t x = 0; x < w; x++) {
            guide[y * w + x] = x < 20 ? 0.2f : 0.8f;
            src[y * w + x] = guide[y * w + x] + 0.05f * (src[y * w + x] - 0.5f);
        }
    CHECK_OK(imagen__guided_filter(pool, guide, src, dst, w, h, 4, 1e-3f));
    CHECK(fabsf(dst[15 * w + 18] - 0.2f) < 0.03f);
    CHECK(fabsf(dst[15 * w + 21] - 0.8f) < 0.03f);
    /* a constant source stays constant */
    for (size_t i = 0; i < w * h; i++)
        src[i] = 0.5f;
    CHECK_OK(imagen__guided_filter(pool, guide, src, dst, w, h, 3, 1e-2f));
    CHECK(max_abs_diff(src, dst, w * h) < 1e-5f);
    imagen__plane_free(guide);
    imagen__plane_free(src);
    imagen__plane_free(dst);
    imagen__pool_destroy(pool);
}

/* The invariant both strip-wise users rely on (enhance's denoise_luma and
 * background_remove's write_alpha): filtering rows [lo, hi) alone, where
 * [lo, hi) is [y0, y1) widened by 2 * radius rows each side (the reach of
 * a box of a box) and clipped to the image, gives rows [y0, y1) bit for bit
 * as the whole-image filter does. Guide and source are varied in scale
 * (the running sums must not depend on where the strip starts). */
static void
test_guided_filter_strips_match_whole(void)
{
    imagen__pool *pool = NULL;
    CHECK_OK(imagen__pool_create(2, &pool));
    const size_t w = 37, h = 83;
    float *guide = random_plane(w, h, 21), *src = random_plane(w, h, 22);
    float *whole = imagen__plane_alloc(w, h), *sg = imagen__plane_alloc(w, h), *ss = imagen__plane_alloc(w, h);
    for (size_t i = 0; i < w * h; i++) {
        guide[i] = (float)(int)(guide[i] * 255.0f) / 255.0f * (i % 7 == 0 ? 1e-3f : 1.0f);
        src[i] = i % 11 == 0 ? 0.0f : src[i] * src[i];
    }
    const size_t radii[] = {1, 2, 3, 5};
    int bad = 0;
    for (size_t ri = 0; ri < 4; ri++) {
        const size_t r = radii[ri], halo = 2 * r;
        for (int self = 0; self < 2; self++) {
            const float *g = self ? src : guide;
            CHECK_OK(imagen__guided_filter(pool, g, src, whole, w, h, r, 1e-3f));
            for (size_t core = 2 * halo; core <= 2 * halo + 9; core += 3)
                for (size_t y0 = 0; y0 < h; y0 += core) {
                    size_t y1 = y0 + core < h ? y0 + core : h;
                    size_t lo = y0 > halo ? y0 - halo : 0, hi = y1 + halo < h ? y1 + halo : h;
                    memcpy(sg, g + lo * w, (hi - lo) * w * sizeof(float));
                    memcpy(ss, src + lo * w, (hi - lo) * w * sizeof(float));
                    CHECK_OK(imagen__guided_filter(pool, sg, ss, ss, w, hi - lo, r, 1e-3f));
                    bad += memcmp(ss + (y0 - lo) * w, whole + y0 * w, (y1 - y0) * w * sizeof(float)) != 0;
                }
        }
    }
    CHECK_INT_EQ(bad, 0);
    imagen__plane_free(guide);
    imagen__plane_free(src);
    imagen__plane_free(whole);
    imagen__plane_free(sg);
    imagen__plane_free(ss);
    imagen__pool_destroy(pool);
}

static void
test_resample(void)
{
    imagen__resample r;
    const imagen__kernel kernels[] = {IMAGEN_KERNEL_BOX, IMAGEN_KERNEL_LINEAR, IMAGEN_KERNEL_CUBIC,
                                      IMAGEN_KERNEL_LANCZOS3};
    const size_t lens[][2] = {{10, 20}, {20, 10}, {7, 3}, {1, 5}, {64, 64}};
    for (size_t k = 0; k < 4; k++)
        for (size_t l = 0; l < 5; l++) {
            CHECK_OK(imagen__resample_init(&r, lens[l][0], lens[l][1], kernels[k]));
            int bad = 0;
            for (size_t i = 0; i < r.out_len; i++) {
                double s = 0;
                for (size_t t = 0; t < r.taps; t++) {
                    s += r.weight[i * r.taps + t];
                    bad += r.index[i * r.taps + t] < 0 || (size_t)r.index[i * r.taps + t] >= r.in_len;
                }
                bad += fabs(s - 1.0) > 1e-5;
            }
            CHECK_INT_EQ(bad, 0);
            imagen__resample_free(&r);
        }
    /* area downscale by 2 averages pairs exactly */
    imagen__pool *pool = NULL;
    CHECK_OK(imagen__pool_create(2, &pool));
    float src[4 * 2] = {0, 1, 2, 3, 4, 5, 6, 7}, dst[2 * 1];
    CHECK_OK(imagen__resize_plane(pool, src, 4, 2, dst, 2, 1, IMAGEN_KERNEL_BOX));
    CHECK(fabsf(dst[0] - 2.5f) < 1e-6f && fabsf(dst[1] - 4.5f) < 1e-6f);
    /* a linear ramp upscaled with the triangle kernel stays a ramp inside */
    float ramp[8], up[16];
    for (int i = 0; i < 8; i++)
        ramp[i] = (float)i;
    CHECK_OK(imagen__resize_plane(pool, ramp, 8, 1, up, 16, 1, IMAGEN_KERNEL_LINEAR));
    CHECK(fabsf(up[5] - (5.5f / 2.0f - 0.5f)) < 1e-5f);
    CHECK_ERR(imagen__resample_init(&r, 0, 5, IMAGEN_KERNEL_LINEAR), IMAGEN_ERR_INVALID_ARG, "resample");
    imagen__pool_destroy(pool);
}

static void
test_colour_round_trip(void)
{
    imagen__pool *pool = NULL;
    CHECK_OK(imagen__pool_create(2, &pool));
    enum { W = 16, H = 16 };
    uint8_t rgb[W * H * 4], back[W * H * 4];
    for (int i = 0; i < W * H * 4; i++)
        rgb[i] = (uint8_t)(i * 37 + 11);
    memcpy(back, rgb, sizeof(back));
    float *y = imagen__plane_alloc(W, H), *cb = imagen__plane_alloc(W, H), *cr = imagen__plane_alloc(W, H);
    imagen__rgb_to_ycbcr(pool, rgb, 4, W, H, y, cb, cr);
    memset(back, 0, sizeof(back));
    imagen__ycbcr_to_rgb(pool, y, cb, cr, W, H, back, 4);
    int bad = 0;
    for (int i = 0; i < W * H; i++) {
        for (int c = 0; c < 3; c++)
            bad += abs(back[i * 4 + c] - rgb[i * 4 + c]) > 1;
        bad += back[i * 4 + 3] != 0; /* the fourth channel is not touched */
    }
    CHECK_INT_EQ(bad, 0);
    imagen__rgb_to_planes(pool, rgb, 4, W, H, y, cb, cr);
    imagen__planes_to_rgb(pool, y, cb, cr, W, H, back, 4);
    bad = 0;
    for (int i = 0; i < W * H; i++)
        for (int c = 0; c < 3; c++)
            bad += back[i * 4 + c] != rgb[i * 4 + c];
    CHECK_INT_EQ(bad, 0);
    CHECK(fabsf(imagen__linear_to_srgb(imagen__srgb_to_linear(0.3f)) - 0.3f) < 1e-5f);
    imagen__plane_free(y);
    imagen__plane_free(cb);
    imagen__plane_free(cr);
    imagen__pool_destroy(pool);
}

int
main(void)
{
    RUN(test_pool_runs_every_index_once);
    RUN(test_box_mean_matches_naive);
    RUN(test_gaussian_blur);
    RUN(test_guided_filter);
    RUN(test_guided_filter_strips_match_whole);
    RUN(test_resample);
    RUN(test_colour_round_trip);
    TEST_MAIN_END();
}
