/*
 * Tiles for operations that only look at a neighbourhood (upscale): a grid
 * of equal tiles, each sent with some context around the pixels it owns,
 * and a stitcher that puts the outputs back with a linear cross-fade across
 * the seams so that no seam shows.
 *
 * Along each axis the side is cut into `count` cores of `core` pixels (the
 * last may reach past the image); every tile sends `extent` = core + 2 ×
 * overlap pixels. Tiles are shifted inward at the image border, so their
 * context comes from the image itself and the model's own border handling
 * applies at the image border exactly as if the image had gone whole; only
 * an image smaller than one extent along an axis is padded, by mirroring.
 * A side of at most tile_size pixels is not cut and gets no context.
 *
 * Nothing here is thread-safe; a stitcher belongs to one job.
 */
#ifndef IMAGEN_WORKER_TILING_H
#define IMAGEN_WORKER_TILING_H

#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"

typedef struct imagen_tile_axis {
    int length;  /* image side, input pixels */
    int count;   /* tiles along the axis, >= 1 */
    int core;    /* pixels each tile owns; count × core >= length */
    int context; /* pixels of context on each side (0 when count is 1) */
    int extent;  /* pixels each tile sends: core + 2 × context */
    int fade;    /* half-width of the cross-fade band around each seam */
} imagen_tile_axis;

typedef struct imagen_tile_grid {
    imagen_tile_axis x, y;
} imagen_tile_grid;

/* Plans the grid for a width × height image (both >= 1). tile_size is the
 * largest core (>= 1), overlap the context wanted on each side (>= 0). */
void imagen_tile_grid_plan(int width, int height, int tile_size, int overlap, imagen_tile_grid *grid);

/* Tiles in the grid (x.count × y.count); tiles are numbered in raster order. */
static inline int
imagen_tile_grid_count(const imagen_tile_grid *grid)
{
    return grid->x.count * grid->y.count;
}

/* First image coordinate of tile k's extent; negative or reaching past the
 * image only when the image is smaller than one extent (mirrored there). */
int imagen_tile_axis_start(const imagen_tile_axis *axis, int k);

/* Copies tile `index`'s extent (y.extent rows × x.extent × channels bytes)
 * out of a row-major image of the grid's size, mirroring outside it. */
void imagen_tile_extract(const uint8_t *image, int channels, const imagen_tile_grid *grid, int index, uint8_t *out);

/* One tile's share of an output coordinate along one axis. */
typedef struct imagen_tile_share {
    int tile;     /* tile index along the axis */
    int offset;   /* coordinate inside that tile's output */
    float weight; /* the shares of a coordinate sum to 1 */
} imagen_tile_share;

/* The one or two tiles that make output coordinate p (0 <= p < length ×
 * scale) along an axis whose tiles' outputs are `scale` times larger. */
int imagen_tile_axis_shares(const imagen_tile_axis *axis, int scale, int p, imagen_tile_share shares[2]);

typedef struct imagen_tile_stitcher imagen_tile_stitcher;

/* A stitcher writing into `out` (borrowed: x.length × scale columns,
 * y.length × scale rows, `channels` bytes per pixel). Tile outputs are
 * x.extent × scale by y.extent × scale. */
imagen_error *imagen_tile_stitcher_create(const imagen_tile_grid *grid, int scale, int channels, uint8_t *out,
                                          imagen_tile_stitcher **stitcher);

/* Hands over the output of tile `index` (copied). Tiles must come in raster
 * order; a row of output is written, and tiles no longer needed freed, as
 * soon as the tiles below it have come, so at most three rows of tiles are
 * held at a time. After the last tile, `out` is complete. */
imagen_error *imagen_tile_stitcher_add(imagen_tile_stitcher *stitcher, int index, const uint8_t *tile_output);

/* Accepts NULL. */
void imagen_tile_stitcher_destroy(imagen_tile_stitcher *stitcher);

#endif /* IMAGEN_WORKER_TILING_H */
