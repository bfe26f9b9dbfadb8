/*
 * The tile grid and the stitcher without a server: plans for a few sizes,
 * mirrored padding, an exact round trip through a nearest-neighbour
 * "model", and a seam test with a model whose output differs per tile.
 */
#include <stdint.h>
#include <stdlib.h>

#include "test.h"
#include "worker/tiling.h"

static void
test_plan_sizes(void)
{
    imagen_tile_grid g;
    imagen_tile_grid_plan(1000, 300, 256, 16, &g);
    CHECK_INT_EQ(g.x.count, 4);
    CHECK_INT_EQ(g.x.core, 250);
    CHECK_INT_EQ(g.x.extent, 282);
    CHECK_INT_EQ(g.y.count, 2);
    CHECK_INT_EQ(g.y.core, 150);
    CHECK_INT_EQ(g.y.extent, 182);
    CHECK_INT_EQ(g.x.fade, 8);
    /* Every tile lies inside the image and covers its core plus context. */
    for (int k = 0; k < g.x.count; k++) {
        int s = imagen_tile_axis_start(&g.x, k);
        CHECK(s >= 0 && s + g.x.extent <= 1000);
        CHECK(k == 0 || s <= k * g.x.core - g.x.fade);
        int core_end = (k + 1) * g.x.core < 1000 ? (k + 1) * g.x.core : 1000;
        CHECK(s + g.x.extent >= core_end + (k + 1 < g.x.count ? g.x.fade : 0));
    }
    /* A side of at most one tile is not cut and gets no context. */
    imagen_tile_grid_plan(256, 100, 256, 16, &g);
    CHECK_INT_EQ(imagen_tile_grid_count(&g), 1);
    CHECK_INT_EQ(g.x.extent, 256);
    CHECK_INT_EQ(g.y.extent, 100);
    CHECK_INT_EQ(imagen_tile_axis_start(&g.x, 0), 0);
    /* Wide and flat: cut along x only. */
    imagen_tile_grid_plan(600, 10, 256, 16, &g);
    CHECK_INT_EQ(g.x.count, 3);
    CHECK_INT_EQ(g.y.count, 1);
    CHECK_INT_EQ(g.y.extent, 10);
}

static void
test_extract_mirrors_small_images(void)
{
    /* 5 × 1 image, tiles of 2 with 3 of context: extent 8 > 5, mirrored. */
    uint8_t img[5] = {10, 11, 12, 13, 14};
    imagen_tile_grid g;
    imagen_tile_grid_plan(5, 1, 2, 3, &g);
    CHECK_INT_EQ(g.x.count, 3);
    CHECK_INT_EQ(g.x.extent, 8);
    uint8_t out[8];
    imagen_tile_extract(img, 1, &g, 0, out); /* x from -3 to 4 */
    uint8_t want0[8] = {12, 11, 10, 10, 11, 12, 13, 14};
    CHECK(memcmp(out, want0, 8) == 0);
    imagen_tile_extract(img, 1, &g, 2, out); /* x from 1 to 8 */
    uint8_t want2[8] = {11, 12, 13, 14, 14, 13, 12, 11};
    CHECK(memcmp(out, want2, 8) == 0);
}

/* Fills a w × h RGB image with structure everywhere. */
static uint8_t *
pattern(int w, int h)
{
    uint8_t *img = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                img[((size_t)y * w + x) * 3 + c] = (uint8_t)((x * 7 + y * 13 + c * 50 + (x * y) % 31) & 255);
    return img;
}

/* The "model": nearest-neighbour ×scale, plus bias × tile index. */
static void
fake_model(const uint8_t *in, int ew, int eh, int scale, int bias, uint8_t *out)
{
    int ow = ew * scale;
    for (int y = 0; y < eh * scale; y++)
        for (int x = 0; x < ow; x++)
            for (int c = 0; c < 3; c++) {
                int v = in[((size_t)(y / scale) * ew + x / scale) * 3 + c] + bias;
                out[((size_t)y * ow + x) * 3 + c] = (uint8_t)(v > 255 ? 255 : v);
            }
}

/* Runs every tile of the grid through fake_model and stitches. */
static uint8_t *
tile_round_trip(const uint8_t *img, int w, int h, int tile, int overlap, int scale, int bias_step)
{
    imagen_tile_grid g;
    imagen_tile_grid_plan(w, h, tile, overlap, &g);
    uint8_t *out = malloc((size_t)w * scale * h * scale * 3);
    uint8_t *tin = malloc((size_t)g.x.extent * g.y.extent * 3);
    uint8_t *tout = malloc((size_t)g.x.extent * g.y.extent * 3 * scale * scale);
    imagen_tile_stitcher *s = NULL;
    CHECK_OK(imagen_tile_stitcher_create(&g, scale, 3, out, &s));
    for (int i = 0; s != NULL && i < imagen_tile_grid_count(&g); i++) {
        imagen_tile_extract(img, 3, &g, i, tin);
        fake_model(tin, g.x.extent, g.y.extent, scale, bias_step * (i % g.x.count), tout);
        CHECK_OK(imagen_tile_stitcher_add(s, i, tout));
    }
    imagen_tile_stitcher_destroy(s);
    free(tin);
    free(tout);
    return out;
}

static void
test_round_trip_is_exact(void)
{
    int w = 530, h = 301, scale = 3;
    uint8_t *img = pattern(w, h);
    uint8_t *out = tile_round_trip(img, w, h, 128, 16, scale, 0);
    size_t bad = 0;
    for (int y = 0; y < h * scale; y++)
        for (int x = 0; x < w * scale; x++)
            for (int c = 0; c < 3; c++)
                bad += out[((size_t)y * w * scale + x) * 3 + c] != img[((size_t)(y / scale) * w + x / scale) * 3 + c];
    CHECK_INT_EQ(bad, 0);
    free(img);
    free(out);
}

static void
test_seams_cross_fade(void)
{
    /* A flat grey image; tile column k's output is 100 + 40 k. Across each
     * seam the output must ramp in small steps, not jump by 40. */
    int w = 600, h = 50, scale = 2, step = 40;
    uint8_t *img = malloc((size_t)w * h * 3);
    memset(img, 100, (size_t)w * h * 3);
    uint8_t *out = tile_round_trip(img, w, h, 256, 16, scale, step);
    imagen_tile_grid g;
    imagen_tile_grid_plan(w, h, 256, 16, &g);
    int ow = w * scale, max_jump = 0;
    for (int x = 1; x < ow; x++) {
        int d = abs((int)out[(size_t)(10 * ow + x) * 3] - (int)out[(size_t)(10 * ow + x - 1) * 3]);
        if (d > max_jump)
            max_jump = d;
    }
    /* 40 spread over 2 × fade × scale = 32 pixels: 2 per pixel at most. */
    CHECK(max_jump <= 2);
    /* Away from the seams each tile's own value, exactly. */
    CHECK_INT_EQ(out[(size_t)(10 * ow + 20) * 3], 100);
    CHECK_INT_EQ(out[(size_t)(10 * ow + g.x.core * scale + g.x.core) * 3], 140);
    CHECK_INT_EQ(out[(size_t)(10 * ow + ow - 1) * 3], 100 + step * (g.x.count - 1));
    /* At a seam, half way. */
    int seam = g.x.core * scale;
    int mid = ((int)out[(size_t)(10 * ow + seam - 1) * 3] + (int)out[(size_t)(10 * ow + seam) * 3]) / 2;
    CHECK(mid >= 118 && mid <= 122);
    free(img);
    free(out);
}

static void
test_stitcher_refuses_out_of_order(void)
{
    imagen_tile_grid g;
    imagen_tile_grid_plan(600, 600, 256, 16, &g);
    uint8_t *out = malloc(600 * 600 * 3);
    imagen_tile_stitcher *s = NULL;
    CHECK_OK(imagen_tile_stitcher_create(&g, 1, 3, out, &s));
    uint8_t *tile = calloc((size_t)g.x.extent * g.y.extent, 3);
    CHECK_ERR(imagen_tile_stitcher_add(s, 1, tile), IMAGEN_ERR_INTERNAL, "expected tile 0");
    imagen_tile_stitcher_destroy(s);
    free(tile);
    free(out);
}

int
main(void)
{
    RUN(test_plan_sizes);
    RUN(test_extract_mirrors_small_images);
    RUN(test_round_trip_is_exact);
    RUN(test_seams_cross_fade);
    RUN(test_stitcher_refuses_out_of_order);
    TEST_MAIN_END();
}
