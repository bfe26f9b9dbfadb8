/*
 * Minimum s-t cut on an 8-connected pixel grid (Boykov-Kolmogorov
 * max-flow, written for the grid: no adjacency lists, fixed neighbour
 * order), with flow reuse between solves (Kohli and Torr's dynamic cuts).
 * Private to the imageops backend; background_remove's GrabCut is its user.
 *
 * The graph: one node per pixel of a width x height grid. A node is out of
 * the graph (a wall: no terminal capacity, no arcs) until
 * imagen__grid_cut_set_terminal() adds it. Its net terminal capacity c is
 * one number: c > 0 is an arc source -> node of capacity c, c < 0 an arc
 * node -> sink of capacity -c. Neighbours are joined by a pair of arcs of
 * the same capacity both ways. The minimum cut then minimises
 *
 *   sum over source-side nodes of max(-c, 0)
 *   + sum over sink-side nodes of max(c, 0)
 *   + sum over neighbour pairs on different sides of their capacity,
 *
 * which is a binary energy with a signed unary term and a Potts pair term.
 *
 * Lifecycle: create (a cleared graph), set terminals and arcs, solve, read
 * sides; then either change terminal capacities and solve again (the flow
 * of the last solve is kept, so the re-solve only pushes what the change
 * made possible; needs `reuse` at creation), or clear and load afresh.
 * Capacities are floats; the result is deterministic (serial solve, FIFO
 * queues, fixed neighbour order). Not thread-safe except where stated.
 * Memory: 54 bytes per node of the (width + 2) x (height + 2) padded grid,
 * 58 with `reuse`.
 */
#ifndef IMAGEN_BACKENDS_IMAGEOPS_GRID_CUT_H
#define IMAGEN_BACKENDS_IMAGEOPS_GRID_CUT_H

#include <stdbool.h>
#include <stddef.h>

/* The four forward neighbour directions of imagen__grid_cut_set_arc();
 * (dx, dy) of each is (1, 0), (0, 1), (1, 1), (-1, 1). */
enum {
    IMAGEN__GRID_RIGHT = 0,
    IMAGEN__GRID_DOWN = 1,
    IMAGEN__GRID_DOWN_RIGHT = 2,
    IMAGEN__GRID_DOWN_LEFT = 3,
};

typedef struct imagen__grid_cut imagen__grid_cut;

/* A cleared graph for a width x height grid (both >= 1); NULL when out of
 * memory or when the grid has more than INT32_MAX nodes. `reuse`: the
 * graph remembers each node's terminal capacity, so that set_terminal()
 * after a solve can keep the flow. */
imagen__grid_cut *imagen__grid_cut_create(size_t width, size_t height, bool reuse);
/* Accepts NULL. */
void imagen__grid_cut_free(imagen__grid_cut *g);

/* Every node out of the graph, no arcs, no flow (as after create). */
void imagen__grid_cut_clear(imagen__grid_cut *g);

/* Adds node (x, y) to the graph (if it was out) and sets its net terminal
 * capacity to c. Before the first solve after create/clear this simply
 * stores c. After a solve (only with `reuse`) it keeps the flow: the
 * node's residual terminal capacity moves by the change of c, which adds
 * the same constant to both of its terminal arcs (the cut is unchanged,
 * flow conservation holds). Calls for different nodes may run
 * concurrently. */
void imagen__grid_cut_set_terminal(imagen__grid_cut *g, size_t x, size_t y, float c);
/* Adds delta to the net terminal capacity of node (x, y), which must be in
 * the graph; the same as set_terminal(old + delta), floats aside. Serial. */
void imagen__grid_cut_add_terminal(imagen__grid_cut *g, size_t x, size_t y, float delta);
/* Sets the capacity of both arcs between node (x, y) and its neighbour in
 * forward direction dir (IMAGEN__GRID_*) to c >= 0. A neighbour outside
 * the grid makes it a no-op. Both nodes should be in the graph (arcs of a
 * wall are never used). Only before the first solve after create/clear.
 * Calls for different (x, y, dir) may run concurrently: each writes only
 * its own two floats. */
void imagen__grid_cut_set_arc(imagen__grid_cut *g, size_t x, size_t y, int dir, float c);

/* Runs the max-flow to completion. Returns the flow this call pushed:
 * after create/clear and loading, the max-flow value (= the minimum cut's
 * value, the energy above); after a re-solve, the extra flow, which is not
 * by itself the new minimum (reparametrisation moved both terminal arcs). */
double imagen__grid_cut_solve(imagen__grid_cut *g);

/* After a solve: true when node (x, y) is on the source side of the
 * minimum cut found (false for walls). */
bool imagen__grid_cut_source_side(const imagen__grid_cut *g, size_t x, size_t y);

#endif /* IMAGEN_BACKENDS_IMAGEOPS_GRID_CUT_H */
