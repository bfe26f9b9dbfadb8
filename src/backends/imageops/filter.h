/*
 * Planar float image primitives shared by the image operations: colour
 * conversions between packed UINT8 RGB and float planes, box and Gaussian
 * blurs, the guided filter and separable resampling. A plane is `width *
 * height` floats, row-major, no padding. Every function that takes a pool
 * splits its rows (or column blocks) across it and is deterministic: the
 * result does not depend on the number of threads. Functions that can
 * allocate return an imagen_error (INTERNAL, "out of memory") and leave dst
 * unspecified on failure; the others cannot fail.
 *
 * Channel values in planes are in [0, 1] for R, G, B and Y; Cb and Cr are
 * centred on 0 (about [-0.5, 0.5]).
 */
#ifndef IMAGEN_BACKENDS_IMAGEOPS_FILTER_H
#define IMAGEN_BACKENDS_IMAGEOPS_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include "backends/imageops/pool.h"
#include "imagen/error.h"

/* A 64-byte aligned plane of width * height floats (uninitialised); NULL
 * when out of memory or when the size overflows. Free with
 * imagen__plane_free(). */
float *imagen__plane_alloc(size_t width, size_t height);
void imagen__plane_free(float *plane);

/* ---- colour ---- */

/* Packed RGB (stride `channels` bytes per pixel, the first three used) to
 * three planes in [0, 1]. */
void imagen__rgb_to_planes(imagen__pool *pool, const uint8_t *rgb, size_t channels, size_t width, size_t height,
                           float *r, float *g, float *b);
/* Three planes to packed RGB (stride `channels`; a fourth channel, if any,
 * is left untouched), clamped to [0, 1] and rounded to nearest. */
void imagen__planes_to_rgb(imagen__pool *pool, const float *r, const float *g, const float *b, size_t width,
                           size_t height, uint8_t *rgb, size_t channels);
/* BT.601 full-range YCbCr (as JPEG): Y in [0, 1], Cb and Cr centred on 0. */
void imagen__rgb_to_ycbcr(imagen__pool *pool, const uint8_t *rgb, size_t channels, size_t width, size_t height,
                          float *y, float *cb, float *cr);
void imagen__ycbcr_to_rgb(imagen__pool *pool, const float *y, const float *cb, const float *cr, size_t width,
                          size_t height, uint8_t *rgb, size_t channels);
/* Luma only (BT.601 weights), in [0, 1]. */
void imagen__rgb_to_luma(imagen__pool *pool, const uint8_t *rgb, size_t channels, size_t width, size_t height,
                         float *y);

/* sRGB transfer function: encoded value in [0, 1] to linear light and back. */
float imagen__srgb_to_linear(float v);
float imagen__linear_to_srgb(float v);

/* ---- filters (src and dst may be the same plane) ---- */

/* Mean over the (2 * radius + 1)^2 window around each pixel, the window
 * clipped to the image (edge pixels average fewer samples). O(1) per pixel
 * whatever the radius. */
imagen_error *imagen__box_mean(imagen__pool *pool, const float *src, float *dst, size_t width, size_t height,
                               size_t radius);
/* Gaussian blur with standard deviation `sigma` pixels (> 0), edges
 * replicated. Exact separable kernel up to sigma 4, beyond that three box
 * passes of matched variance. */
imagen_error *imagen__gaussian_blur(imagen__pool *pool, const float *src, float *dst, size_t width, size_t height,
                                    float sigma);
/* He et al.'s guided filter with a grey guide: dst is src smoothed while
 * keeping the guide's edges. `radius` is the box radius, `eps` the
 * regularisation (in squared guide units, e.g. 1e-3 for [0, 1] planes). */
imagen_error *imagen__guided_filter(imagen__pool *pool, const float *guide, const float *src, float *dst, size_t width,
                                    size_t height, size_t radius, float eps);

/* ---- resampling ---- */

typedef enum imagen__kernel {
    IMAGEN_KERNEL_BOX,      /* area average when shrinking, nearest when growing */
    IMAGEN_KERNEL_LINEAR,   /* triangle */
    IMAGEN_KERNEL_CUBIC,    /* Keys a = -0.5 (Catmull-Rom) */
    IMAGEN_KERNEL_LANCZOS3, /* windowed sinc, 3 lobes */
} imagen__kernel;

/* Weights of one axis: output sample i (centre (i + 0.5) * in / out - 0.5 in
 * input coordinates, as image resizers align pixel centres) is
 * sum_k weight[i * taps + k] * input[index[i * taps + k]]; indices are
 * already clamped to [0, in_len) (edges replicated) and weights sum to 1.
 * When shrinking, the kernel is widened by the scale (anti-aliasing). */
typedef struct imagen__resample {
    size_t in_len, out_len, taps;
    int32_t *index; /* out_len * taps */
    float *weight;  /* out_len * taps */
} imagen__resample;

imagen_error *imagen__resample_init(imagen__resample *r, size_t in_len, size_t out_len, imagen__kernel kernel);
void imagen__resample_free(imagen__resample *r);

/* Resizes a plane (src_w x src_h → dst_w x dst_h), horizontal pass first.
 * src and dst must differ. Allocates one src_h x dst_w temporary. */
imagen_error *imagen__resize_plane(imagen__pool *pool, const float *src, size_t src_w, size_t src_h, float *dst,
                                   size_t dst_w, size_t dst_h, imagen__kernel kernel);

#endif /* IMAGEN_BACKENDS_IMAGEOPS_FILTER_H */
