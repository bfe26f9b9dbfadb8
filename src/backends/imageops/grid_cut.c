/*
 * Boykov-Kolmogorov max-flow on the 8-connected grid (see grid_cut.h for
 * the graph and the API).
 *
 * Nodes are the grid's pixels inside a one-pixel frame of wall nodes
 * (grid (w + 2) x (h + 2)), so neighbours need no bounds checks: walls
 * belong to no tree and every arc into them has capacity 0. Two search
 * trees grow from the source and the sink through arcs with residual
 * capacity; where they touch, the path is augmented by
 * its bottleneck, the saturated arcs orphan their subtrees, and orphans
 * are re-attached to a tree (preferring parents close to the terminal,
 * tracked with the time-stamp heuristic) or freed. It ends when neither
 * tree can grow: the source tree is then the source side of a minimum cut.
 * Capacities are floats; an augmentation subtracts its bottleneck from the
 * bottleneck arc itself, which therefore becomes exactly 0, so every
 * augmentation saturates an arc and the loop ends. Serial and
 * deterministic (FIFO queues, fixed neighbour order).
 *
 * Moved out of op_background_remove.c unchanged: the arithmetic, the order
 * of every float operation and the queue order are the same, so the cuts
 * are bit for bit those of the code before the move. The only additions
 * are the flow total (a double sum beside the float arithmetic) and the
 * `solved` flag that picks between storing and reparametrising a
 * terminal capacity, which the caller used to pick by function.
 */
#include "backends/imageops/grid_cut.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { TREE_FREE = 0, TREE_SOURCE = 1, TREE_SINK = 2, TREE_WALL = 3 };
enum { PARENT_TERMINAL = 8, PARENT_ORPHAN = 9, PARENT_NONE = 10 };
#define QUEUE_OUT (-2) /* next[] of a node not in the active queue */
#define QUEUE_END (-1)

struct imagen__grid_cut {
    size_t w, h;        /* grid size */
    size_t gw, gh, n;   /* padded grid size, n = gw * gh */
    ptrdiff_t off[8];   /* index offset of each direction; off[d ^ 4] = -off[d] */
    float *rcap;        /* n * 8: residual capacity of the arc from a node in direction d */
    float *tr;          /* residual terminal capacity: > 0 from the source, < 0 to the sink */
    float *loaded;      /* net terminal capacity last set (reuse graphs only) */
    uint8_t *tree;      /* TREE_* */
    uint8_t *parent;    /* direction to the parent, or PARENT_* */
    int32_t *next;      /* active queue links, QUEUE_OUT when not queued */
    int32_t *stamp;     /* time of the last check that the node reaches its terminal */
    int32_t *dist;      /* its distance to the terminal then */
    int32_t *orphans;   /* ring buffer of n */
    int32_t head, tail; /* active queue */
    size_t orphan_head, orphan_count;
    int32_t time;
    double flow; /* pushed by the current solve */
    bool solved; /* solved since the last create/clear: set_terminal keeps the flow */
};

/* Directions: 0 right, 1 down, 2 down-right, 3 down-left, then the
 * opposites in the same order, so opposite(d) = d ^ 4. */
#define OPPOSITE(d) ((d) ^ 4)

static inline void
activate(imagen__grid_cut *g, int32_t p)
{
    if (g->next[p] != QUEUE_OUT)
        return;
    g->next[p] = QUEUE_END;
    if (g->tail == QUEUE_END)
        g->head = p;
    else
        g->next[g->tail] = p;
    g->tail = p;
}

static inline int32_t
pop_active(imagen__grid_cut *g)
{
    int32_t p = g->head;
    if (p == QUEUE_END)
        return p;
    g->head = g->next[p];
    if (g->head == QUEUE_END)
        g->tail = QUEUE_END;
    g->next[p] = QUEUE_OUT;
    return p;
}

static inline void
make_orphan(imagen__grid_cut *g, int32_t p)
{
    g->parent[p] = PARENT_ORPHAN;
    g->orphans[(g->orphan_head + g->orphan_count++) % g->n] = p;
}

/* Starts the search trees afresh from the residual graph: every node with
 * terminal residual capacity is a root and active (in index order). */
static void
cut_reset_trees(imagen__grid_cut *g)
{
    for (size_t p = 0; p < g->n; p++) {
        if (g->tree[p] != TREE_WALL)
            g->tree[p] = TREE_FREE;
        g->parent[p] = PARENT_NONE;
        g->next[p] = QUEUE_OUT;
        g->stamp[p] = 0;
        g->dist[p] = 0;
    }
    g->head = g->tail = QUEUE_END;
    g->orphan_head = g->orphan_count = 0;
    g->time = 0;
    for (size_t p = 0; p < g->n; p++) {
        if (g->tree[p] != TREE_FREE || g->tr[p] == 0.0f)
            continue;
        g->tree[p] = g->tr[p] > 0.0f ? TREE_SOURCE : TREE_SINK;
        g->parent[p] = PARENT_TERMINAL;
        g->dist[p] = 1;
        activate(g, (int32_t)p);
    }
}

/* Grows the tree of active node p by one sweep over its neighbours.
 * Returns true when it meets the other tree; the connecting arc is then
 * *from -> *to (source side to sink side) in direction *dir. */
static bool
grow(imagen__grid_cut *g, int32_t p, int32_t *from, int32_t *to, int *dir)
{
    const uint8_t t = g->tree[p];
    for (int d = 0; d < 8; d++) {
        int32_t q = (int32_t)(p + g->off[d]);
        /* the arc that would join q to p's tree: p -> q for the source
         * tree, q -> p for the sink tree */
        float c = t == TREE_SOURCE ? g->rcap[(size_t)p * 8 + d] : g->rcap[(size_t)q * 8 + OPPOSITE(d)];
        if (!(c > 0.0f))
            continue;
        uint8_t tq = g->tree[q];
        if (tq == TREE_FREE) {
            g->tree[q] = t;
            g->parent[q] = (uint8_t)OPPOSITE(d);
            g->stamp[q] = g->stamp[p];
            g->dist[q] = g->dist[p] + 1;
            activate(g, q);
        } else if (tq == t) {
            /* re-hang q under p when p is closer to the terminal */
            if (g->stamp[q] <= g->stamp[p] && g->dist[q] > g->dist[p]) {
                g->parent[q] = (uint8_t)OPPOSITE(d);
                g->stamp[q] = g->stamp[p];
                g->dist[q] = g->dist[p] + 1;
            }
        } else if (tq != TREE_WALL) {
            *from = t == TREE_SOURCE ? p : q;
            *to = t == TREE_SOURCE ? q : p;
            *dir = t == TREE_SOURCE ? d : OPPOSITE(d);
            return true;
        }
    }
    return false;
}

/* Pushes the bottleneck along source -> from -> to -> sink and orphans the
 * nodes whose parent arc saturates. */
static void
augment(imagen__grid_cut *g, int32_t from, int32_t to, int dir)
{
    float f = g->rcap[(size_t)from * 8 + dir];
    for (int32_t x = from;;) { /* source side: arcs parent -> x */
        int pd = g->parent[x];
        if (pd == PARENT_TERMINAL) {
            f = fminf(f, g->tr[x]);
            break;
        }
        int32_t y = (int32_t)(x + g->off[pd]);
        f = fminf(f, g->rcap[(size_t)y * 8 + OPPOSITE(pd)]);
        x = y;
    }
    for (int32_t x = to;;) { /* sink side: arcs x -> parent */
        int pd = g->parent[x];
        if (pd == PARENT_TERMINAL) {
            f = fminf(f, -g->tr[x]);
            break;
        }
        f = fminf(f, g->rcap[(size_t)x * 8 + pd]);
        x = (int32_t)(x + g->off[pd]);
    }
    g->flow += f;
    g->rcap[(size_t)from * 8 + dir] -= f;
    g->rcap[(size_t)to * 8 + OPPOSITE(dir)] += f;
    for (int32_t x = from;;) {
        int pd = g->parent[x];
        if (pd == PARENT_TERMINAL) {
            g->tr[x] -= f;
            if (g->tr[x] == 0.0f)
                make_orphan(g, x);
            break;
        }
        int32_t y = (int32_t)(x + g->off[pd]);
        g->rcap[(size_t)y * 8 + OPPOSITE(pd)] -= f;
        g->rcap[(size_t)x * 8 + pd] += f;
        if (g->rcap[(size_t)y * 8 + OPPOSITE(pd)] == 0.0f)
            make_orphan(g, x);
        x = y;
    }
    for (int32_t x = to;;) {
        int pd = g->parent[x];
        if (pd == PARENT_TERMINAL) {
            g->tr[x] += f;
            if (g->tr[x] == 0.0f)
                make_orphan(g, x);
            break;
        }
        int32_t y = (int32_t)(x + g->off[pd]);
        g->rcap[(size_t)x * 8 + pd] -= f;
        g->rcap[(size_t)y * 8 + OPPOSITE(pd)] += f;
        if (g->rcap[(size_t)x * 8 + pd] == 0.0f)
            make_orphan(g, x);
        x = y;
    }
}

/* Distance from q to its tree's terminal through parent links, or -1 when
 * the chain ends at an orphan. Nodes found connected are stamped with the
 * current time and their distance, so later walks stop there. */
static int32_t
origin_distance(imagen__grid_cut *g, int32_t q)
{
    int32_t steps = 0, total;
    for (int32_t y = q;; steps++) {
        if (g->stamp[y] == g->time) {
            total = steps + g->dist[y];
            break;
        }
        int pd = g->parent[y];
        if (pd == PARENT_TERMINAL) {
            g->stamp[y] = g->time;
            g->dist[y] = 1;
            total = steps + 1;
            break;
        }
        if (pd == PARENT_ORPHAN)
            return -1;
        y = (int32_t)(y + g->off[pd]);
    }
    int32_t d = total;
    for (int32_t y = q; g->stamp[y] != g->time; y = (int32_t)(y + g->off[g->parent[y]])) {
        g->stamp[y] = g->time;
        g->dist[y] = d--;
    }
    return total;
}

/* Re-attaches or frees every orphan (see the section comment). */
static void
adopt(imagen__grid_cut *g)
{
    while (g->orphan_count > 0) {
        int32_t x = g->orphans[g->orphan_head];
        g->orphan_head = (g->orphan_head + 1) % g->n;
        g->orphan_count--;
        const uint8_t t = g->tree[x];
        int best_dir = -1;
        int32_t best_dist = INT32_MAX;
        for (int d = 0; d < 8; d++) {
            int32_t q = (int32_t)(x + g->off[d]);
            if (g->tree[q] != t)
                continue;
            float c = t == TREE_SOURCE ? g->rcap[(size_t)q * 8 + OPPOSITE(d)] : g->rcap[(size_t)x * 8 + d];
            if (!(c > 0.0f))
                continue;
            int32_t dq = origin_distance(g, q);
            if (dq >= 0 && dq < best_dist) {
                best_dist = dq;
                best_dir = d;
            }
        }
        if (best_dir >= 0) {
            g->parent[x] = (uint8_t)best_dir;
            g->stamp[x] = g->time;
            g->dist[x] = best_dist + 1;
            continue;
        }
        /* no way back to the terminal: x leaves the tree; neighbours that
         * could feed it become active, its children become orphans */
        for (int d = 0; d < 8; d++) {
            int32_t q = (int32_t)(x + g->off[d]);
            if (g->tree[q] != t)
                continue;
            float c = t == TREE_SOURCE ? g->rcap[(size_t)q * 8 + OPPOSITE(d)] : g->rcap[(size_t)x * 8 + d];
            if (c > 0.0f)
                activate(g, q);
            int pq = g->parent[q];
            if (pq < 8 && pq == OPPOSITE(d))
                make_orphan(g, q);
        }
        g->tree[x] = TREE_FREE;
        g->parent[x] = PARENT_NONE;
    }
}

/* Runs the max-flow from freshly reset trees; afterwards tree[p] ==
 * TREE_SOURCE marks the source side of the minimum cut. */
static void
cut_solve(imagen__grid_cut *g)
{
    int32_t current = QUEUE_END;
    for (;;) {
        if (current == QUEUE_END || g->tree[current] == TREE_FREE) {
            do
                current = pop_active(g);
            while (current != QUEUE_END && g->tree[current] == TREE_FREE);
            if (current == QUEUE_END)
                return;
        }
        int32_t from, to;
        int dir;
        if (!grow(g, current, &from, &to, &dir)) {
            current = QUEUE_END; /* fully grown: leaves the active set */
            continue;
        }
        /* keep growing from `current` next time: it may touch the other
         * tree through more arcs */
        g->time++;
        augment(g, from, to, dir);
        adopt(g);
    }
}

/* =====================================================================
 * API
 * ===================================================================== */

/* Forward (dx, dy) of each IMAGEN__GRID_* direction. */
static const ptrdiff_t forward_dx[4] = {1, 0, 1, -1}, forward_dy[4] = {0, 1, 1, 1};

static size_t
node_of(const imagen__grid_cut *g, size_t x, size_t y)
{
    assert(x < g->w && y < g->h);
    return (y + 1) * g->gw + x + 1;
}

void
imagen__grid_cut_free(imagen__grid_cut *g)
{
    if (g == NULL)
        return;
    free(g->rcap);
    free(g->tr);
    free(g->loaded);
    free(g->tree);
    free(g->parent);
    free(g->next);
    free(g->stamp);
    free(g->dist);
    free(g->orphans);
    free(g);
}

imagen__grid_cut *
imagen__grid_cut_create(size_t width, size_t height, bool reuse)
{
    if (width == 0 || height == 0 || width > (size_t)INT32_MAX - 2 || height > (size_t)INT32_MAX - 2 ||
        (width + 2) > (size_t)INT32_MAX / (height + 2) / 8)
        return NULL; /* node indices are int32_t; rcap has 8 per node */
    imagen__grid_cut *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->w = width;
    g->h = height;
    g->gw = width + 2;
    g->gh = height + 2;
    g->n = g->gw * g->gh;
    const ptrdiff_t gw = (ptrdiff_t)g->gw;
    const ptrdiff_t off[4] = {1, gw, gw + 1, gw - 1};
    for (int d = 0; d < 4; d++) {
        g->off[d] = off[d];
        g->off[d + 4] = -off[d];
    }
    g->rcap = malloc(g->n * 8 * sizeof(*g->rcap));
    g->tr = malloc(g->n * sizeof(*g->tr));
    g->loaded = reuse ? malloc(g->n * sizeof(*g->loaded)) : NULL;
    g->tree = malloc(g->n);
    g->parent = malloc(g->n);
    g->next = malloc(g->n * sizeof(*g->next));
    g->stamp = malloc(g->n * sizeof(*g->stamp));
    g->dist = malloc(g->n * sizeof(*g->dist));
    g->orphans = malloc(g->n * sizeof(*g->orphans));
    if (g->rcap == NULL || g->tr == NULL || (reuse && g->loaded == NULL) || g->tree == NULL || g->parent == NULL ||
        g->next == NULL || g->stamp == NULL || g->dist == NULL || g->orphans == NULL) {
        imagen__grid_cut_free(g);
        return NULL;
    }
    imagen__grid_cut_clear(g);
    return g;
}

void
imagen__grid_cut_clear(imagen__grid_cut *g)
{
    memset(g->rcap, 0, g->n * 8 * sizeof(*g->rcap));
    memset(g->tr, 0, g->n * sizeof(*g->tr));
    if (g->loaded != NULL)
        memset(g->loaded, 0, g->n * sizeof(*g->loaded));
    memset(g->tree, TREE_WALL, g->n);
    g->solved = false;
}

void
imagen__grid_cut_set_terminal(imagen__grid_cut *g, size_t x, size_t y, float c)
{
    size_t p = node_of(g, x, y);
    if (!g->solved) {
        g->tree[p] = TREE_FREE;
        g->tr[p] = c;
        if (g->loaded != NULL)
            g->loaded[p] = c;
        return;
    }
    assert(g->loaded != NULL);   /* keeping the flow needs `reuse` */
    if (g->tree[p] == TREE_WALL) /* joins now, with no flow through it */
        g->tree[p] = TREE_FREE;
    g->tr[p] += c - g->loaded[p];
    g->loaded[p] = c;
}

void
imagen__grid_cut_add_terminal(imagen__grid_cut *g, size_t x, size_t y, float delta)
{
    size_t p = node_of(g, x, y);
    assert(g->tree[p] != TREE_WALL);
    g->tr[p] += delta;
    if (g->loaded != NULL)
        g->loaded[p] += delta;
}

void
imagen__grid_cut_set_arc(imagen__grid_cut *g, size_t x, size_t y, int dir, float c)
{
    assert(dir >= 0 && dir < 4 && !g->solved);
    ptrdiff_t xx = (ptrdiff_t)x + forward_dx[dir], yy = (ptrdiff_t)y + forward_dy[dir];
    if (xx < 0 || xx >= (ptrdiff_t)g->w || yy >= (ptrdiff_t)g->h)
        return;
    size_t p = node_of(g, x, y), q = (size_t)((ptrdiff_t)p + g->off[dir]);
    g->rcap[p * 8 + (size_t)dir] = c;
    g->rcap[q * 8 + OPPOSITE((size_t)dir)] = c;
}

double
imagen__grid_cut_solve(imagen__grid_cut *g)
{
    g->flow = 0.0;
    cut_reset_trees(g);
    cut_solve(g);
    g->solved = true;
    return g->flow;
}

bool
imagen__grid_cut_source_side(const imagen__grid_cut *g, size_t x, size_t y)
{
    return g->tree[node_of(g, x, y)] == TREE_SOURCE;
}
