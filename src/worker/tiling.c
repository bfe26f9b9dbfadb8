/*
 * The tile grid, tile extraction with mirrored padding, and the stitcher
 * (see tiling.h). Blending is done per output pixel from at most 2 × 2
 * tiles with separable weights that sum to one, so flat areas stay exactly
 * flat and a tile's output only counts where it had context on both sides.
 */
#include "worker/tiling.h"

#include <stdlib.h>
#include <string.h>

static void
plan_axis(int length, int tile_size, int overlap, imagen_tile_axis *a)
{
    memset(a, 0, sizeof(*a));
    a->length = length;
    if (length <= tile_size) {
        a->count = 1;
        a->core = length;
        a->extent = length;
        return;
    }
    /* Equal cores no larger than tile_size: the least padding (and model
     * work) for the number of tiles needed. */
    a->count = (length + tile_size - 1) / tile_size;
    a->core = (length + a->count - 1) / a->count;
    a->context = overlap;
    a->extent = a->core + 2 * overlap;
    /* Fade over the middle half of the overlap: at both ends of the band
     * each tile still has overlap / 2 pixels of real context, away from
     * the edge effects of its own border. */
    a->fade = overlap / 2;
    if (a->fade > a->core / 2)
        a->fade = a->core / 2;
}

void
imagen_tile_grid_plan(int width, int height, int tile_size, int overlap, imagen_tile_grid *grid)
{
    if (tile_size < 1)
        tile_size = 1;
    if (overlap < 0)
        overlap = 0;
    plan_axis(width, tile_size, overlap, &grid->x);
    plan_axis(height, tile_size, overlap, &grid->y);
}

int
imagen_tile_axis_start(const imagen_tile_axis *a, int k)
{
    int start = k * a->core - a->context;
    if (a->extent <= a->length) {
        if (start < 0)
            start = 0;
        if (start > a->length - a->extent)
            start = a->length - a->extent;
    }
    return start;
}

/* Mirrors coordinate i into [0, n) (whole-sample symmetric: -1 → 0, n → n - 1),
 * repeating for extents several times the image. */
static int
mirror(int i, int n)
{
    int period = 2 * n;
    int m = i % period;
    if (m < 0)
        m += period;
    return m < n ? m : period - 1 - m;
}

void
imagen_tile_extract(const uint8_t *image, int channels, const imagen_tile_grid *g, int index, uint8_t *out)
{
    int tx = index % g->x.count, ty = index / g->x.count;
    int x0 = imagen_tile_axis_start(&g->x, tx), y0 = imagen_tile_axis_start(&g->y, ty);
    int w = g->x.length, h = g->y.length, ew = g->x.extent, eh = g->y.extent;
    size_t row_bytes = (size_t)ew * channels;
    for (int r = 0; r < eh; r++) {
        const uint8_t *src = image + (size_t)mirror(y0 + r, h) * w * channels;
        uint8_t *dst = out + (size_t)r * row_bytes;
        if (x0 >= 0 && x0 + ew <= w) {
            memcpy(dst, src + (size_t)x0 * channels, row_bytes);
            continue;
        }
        for (int c = 0; c < ew; c++)
            memcpy(dst + (size_t)c * channels, src + (size_t)mirror(x0 + c, w) * channels, (size_t)channels);
    }
}

int
imagen_tile_axis_shares(const imagen_tile_axis *a, int scale, int p, imagen_tile_share shares[2])
{
    int span = a->core * scale;
    int k = p / span;
    if (k >= a->count)
        k = a->count - 1;
    double q = p + 0.5, half = (double)a->fade * scale;
    int other = -1;
    double w_other = 0;
    if (half > 0 && k > 0 && q < k * span + half) {
        other = k - 1; /* in the band around the seam at k * span */
        w_other = 1.0 - (q - (k * span - half)) / (2 * half);
    } else if (half > 0 && k < a->count - 1 && q > (k + 1) * span - half) {
        other = k + 1; /* in the band around the seam at (k + 1) * span */
        w_other = (q - ((k + 1) * span - half)) / (2 * half);
    }
    shares[0].tile = k;
    shares[0].offset = p - imagen_tile_axis_start(a, k) * scale;
    shares[0].weight = (float)(1.0 - w_other);
    if (other < 0)
        return 1;
    shares[1].tile = other;
    shares[1].offset = p - imagen_tile_axis_start(a, other) * scale;
    shares[1].weight = (float)w_other;
    return 2;
}

/* ---- stitcher -------------------------------------------------------------- */

struct imagen_tile_stitcher {
    imagen_tile_grid grid;
    int scale, channels;
    uint8_t *out;
    size_t out_row_bytes, tile_bytes, tile_row_bytes;
    uint8_t **tiles;       /* per tile, NULL until added and after freed */
    imagen_tile_share *xs; /* 2 per output column */
    int *x_count;          /* shares per output column */
    float *acc;            /* one output row */
    int next;              /* the index the next add must have */
};

imagen_error *
imagen_tile_stitcher_create(const imagen_tile_grid *grid, int scale, int channels, uint8_t *out,
                            imagen_tile_stitcher **stitcher)
{
    imagen_tile_stitcher *s = calloc(1, sizeof(*s));
    int out_w = grid->x.length * scale;
    if (s == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "tile stitcher: out of memory");
    s->grid = *grid;
    s->scale = scale;
    if (channels < 1 || channels > 8) {
        free(s);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "tile stitcher: %d channels, at most 8", channels);
    }
    s->channels = channels;
    s->out = out;
    s->out_row_bytes = (size_t)out_w * channels;
    s->tile_row_bytes = (size_t)grid->x.extent * scale * channels;
    s->tile_bytes = s->tile_row_bytes * (size_t)grid->y.extent * scale;
    s->tiles = calloc((size_t)imagen_tile_grid_count(grid), sizeof(*s->tiles));
    s->xs = malloc(sizeof(*s->xs) * 2 * (size_t)out_w);
    s->x_count = malloc(sizeof(*s->x_count) * (size_t)out_w);
    if (s->tiles == NULL || s->xs == NULL || s->x_count == NULL) {
        imagen_tile_stitcher_destroy(s);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "tile stitcher: out of memory for a %d-pixel-wide output", out_w);
    }
    for (int x = 0; x < out_w; x++)
        s->x_count[x] = imagen_tile_axis_shares(&grid->x, scale, x, &s->xs[2 * x]);
    *stitcher = s;
    return NULL;
}

/* Writes the output rows owned by tile row `ty`; the tile rows above and
 * below are present when a seam band reaches into them. Runs of pixels
 * that one tile makes alone (most of the image) are copied; only the seam
 * bands are blended. */
static void
compose_row(imagen_tile_stitcher *s, int ty)
{
    const imagen_tile_axis *ay = &s->grid.y;
    int span = ay->core * s->scale, out_h = ay->length * s->scale, nx = s->grid.x.count, ch = s->channels;
    int y_end = (ty + 1) * span < out_h ? (ty + 1) * span : out_h;
    int out_w = s->grid.x.length * s->scale;
    for (int y = ty * span; y < y_end; y++) {
        imagen_tile_share ys[2];
        int ny = imagen_tile_axis_shares(ay, s->scale, y, ys);
        uint8_t *row = s->out + (size_t)y * s->out_row_bytes;
        for (int x = 0; x < out_w;) {
            const imagen_tile_share *xs = &s->xs[2 * x];
            if (ny == 1 && s->x_count[x] == 1) {
                int end = x + 1;
                while (end < out_w && s->x_count[end] == 1 && s->xs[2 * end].tile == xs->tile)
                    end++;
                const uint8_t *src = s->tiles[ys[0].tile * nx + xs->tile] + (size_t)ys[0].offset * s->tile_row_bytes +
                                     (size_t)xs->offset * ch;
                memcpy(row + (size_t)x * ch, src, (size_t)(end - x) * ch);
                x = end;
                continue;
            }
            float acc[8] = {0};
            for (int j = 0; j < ny; j++)
                for (int i = 0; i < s->x_count[x]; i++) {
                    const uint8_t *src = s->tiles[ys[j].tile * nx + xs[i].tile] +
                                         (size_t)ys[j].offset * s->tile_row_bytes + (size_t)xs[i].offset * ch;
                    float w = ys[j].weight * xs[i].weight;
                    for (int c = 0; c < ch; c++)
                        acc[c] += w * src[c];
                }
            for (int c = 0; c < ch; c++) {
                float v = acc[c] + 0.5f;
                row[(size_t)x * ch + c] = v >= 255.0f ? 255 : (uint8_t)v;
            }
            x++;
        }
    }
}

static void
free_tile_row(imagen_tile_stitcher *s, int ty)
{
    for (int tx = 0; tx < s->grid.x.count; tx++) {
        free(s->tiles[ty * s->grid.x.count + tx]);
        s->tiles[ty * s->grid.x.count + tx] = NULL;
    }
}

imagen_error *
imagen_tile_stitcher_add(imagen_tile_stitcher *s, int index, const uint8_t *tile_output)
{
    int nx = s->grid.x.count, ny = s->grid.y.count;
    if (index != s->next || index >= nx * ny)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "tile stitcher: got tile %d, expected tile %d of %d", index,
                                s->next, nx * ny);
    s->tiles[index] = malloc(s->tile_bytes);
    if (s->tiles[index] == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "tile stitcher: out of memory for tile %d", index);
    memcpy(s->tiles[index], tile_output, s->tile_bytes);
    s->next++;
    if ((index + 1) % nx != 0)
        return NULL;
    /* Tile row ty is complete: the row above it now has its neighbours. */
    int ty = index / nx;
    if (ty > 0) {
        compose_row(s, ty - 1);
        if (ty > 1)
            free_tile_row(s, ty - 2);
    }
    if (ty == ny - 1) {
        compose_row(s, ty);
        for (int r = ty - 1 >= 0 ? ty - 1 : 0; r <= ty; r++)
            free_tile_row(s, r);
    }
    return NULL;
}

void
imagen_tile_stitcher_destroy(imagen_tile_stitcher *s)
{
    if (s == NULL)
        return;
    if (s->tiles != NULL)
        for (int i = 0; i < imagen_tile_grid_count(&s->grid); i++)
            free(s->tiles[i]);
    free(s->tiles);
    free(s->xs);
    free(s->x_count);
    free(s);
}
