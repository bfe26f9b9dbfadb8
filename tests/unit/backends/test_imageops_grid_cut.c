/*
 * The imageops grid min cut (grid_cut.h) against brute force: on many
 * small random grids (up to 4 x 3 = 12 nodes, so all 2^12 labellings can
 * be enumerated) the max-flow value equals the minimum energy, the labels
 * read back reach that minimum, and so do the labels of a re-solve after
 * the terminal capacities change with the flow kept.
 */
#include <math.h>
#include <stdint.h>

#include "backends/imageops/grid_cut.h"
#include "test.h"

#define MAX_NODES 12

static const int dx[4] = {1, 0, 1, -1}, dy[4] = {0, 1, 1, 1};

/* A random problem as the test keeps it: net terminal capacities, forward
 * arc capacities, and which nodes are in the graph. */
typedef struct problem {
    size_t w, h;
    bool in[MAX_NODES];
    float c[MAX_NODES];
    float arc[MAX_NODES][4];
} problem;

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Small integers (exact float sums) or, when `fractional`, eighths. */
static float
random_cap(bool fractional, int range)
{
    float v = (float)(rng() % (uint32_t)(range + 1));
    return fractional ? v / 8.0f : v;
}

static float
random_terminal(bool fractional)
{
    if (rng() % 5 == 0)
        return 0.0f;
    float v = random_cap(fractional, fractional ? 80 : 10);
    return rng() % 2 ? v : -v;
}

static bool
neighbour(const problem *pb, size_t i, int d, size_t *k)
{
    int x = (int)(i % pb->w) + dx[d], y = (int)(i / pb->w) + dy[d];
    if (x < 0 || x >= (int)pb->w || y >= (int)pb->h)
        return false;
    *k = (size_t)y * pb->w + (size_t)x;
    return true;
}

/* The energy of grid_cut.h for labels given as bits (1 = source side);
 * nodes out of the graph count as sink side and have no terms. */
static double
energy(const problem *pb, uint32_t bits)
{
    double e = 0.0;
    size_t n = pb->w * pb->h;
    for (size_t i = 0; i < n; i++) {
        if (!pb->in[i])
            continue;
        bool s = (bits >> i) & 1;
        e += s ? fmax(-pb->c[i], 0.0) : fmax(pb->c[i], 0.0);
        for (int d = 0; d < 4; d++) {
            size_t k;
            if (neighbour(pb, i, d, &k) && pb->in[k] && s != (bool)((bits >> k) & 1))
                e += pb->arc[i][d];
        }
    }
    return e;
}

static double
brute_min(const problem *pb)
{
    size_t n = pb->w * pb->h;
    double best = INFINITY;
    for (uint32_t bits = 0; bits < (1u << n); bits++) {
        bool valid = true;
        for (size_t i = 0; i < n && valid; i++)
            valid = pb->in[i] || !((bits >> i) & 1);
        if (valid)
            best = fmin(best, energy(pb, bits));
    }
    return best;
}

static uint32_t
read_labels(const problem *pb, const imagen__grid_cut *g)
{
    uint32_t bits = 0;
    for (size_t i = 0; i < pb->w * pb->h; i++)
        if (imagen__grid_cut_source_side(g, i % pb->w, i / pb->w))
            bits |= 1u << i;
    return bits;
}

/* Random problem, loaded into a cleared g: some terminals set in two
 * steps (set then add), arcs only between nodes in the graph. */
static void
load_random(problem *pb, imagen__grid_cut *g, bool fractional, bool walls)
{
    size_t n = pb->w * pb->h;
    for (size_t i = 0; i < n; i++) {
        pb->in[i] = !walls || rng() % 4 != 0;
        pb->c[i] = random_terminal(fractional);
        if (!pb->in[i])
            continue;
        if (rng() % 3 == 0) {
            float part = random_terminal(fractional);
            imagen__grid_cut_set_terminal(g, i % pb->w, i / pb->w, part);
            imagen__grid_cut_add_terminal(g, i % pb->w, i / pb->w, pb->c[i] - part);
        } else {
            imagen__grid_cut_set_terminal(g, i % pb->w, i / pb->w, pb->c[i]);
        }
    }
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < 4; d++) {
            size_t k;
            pb->arc[i][d] = 0.0f;
            if (!pb->in[i] || !neighbour(pb, i, d, &k) || !pb->in[k] || rng() % 6 == 0)
                continue;
            pb->arc[i][d] = random_cap(fractional, fractional ? 60 : 8);
            imagen__grid_cut_set_arc(g, i % pb->w, i / pb->w, d, pb->arc[i][d]);
        }
}

static void
check_grids(bool fractional, bool walls)
{
    int flow_bad = 0, label_bad = 0, resolve_bad = 0, wall_bad = 0, runs = 0;
    const double tol = fractional ? 1e-3 : 0.0; /* integer capacities: exact */
    for (size_t w = 1; w <= 4; w++)
        for (size_t h = 1; h <= 3; h++) {
            imagen__grid_cut *g = imagen__grid_cut_create(w, h, true);
            CHECK(g != NULL);
            if (g == NULL)
                return;
            for (int trial = 0; trial < 60; trial++, runs++) {
                problem pb = {.w = w, .h = h};
                if (trial > 0)
                    imagen__grid_cut_clear(g);
                load_random(&pb, g, fractional, walls);
                double flow = imagen__grid_cut_solve(g), best = brute_min(&pb);
                uint32_t bits = read_labels(&pb, g);
                flow_bad += fabs(flow - best) > tol;
                label_bad += fabs(energy(&pb, bits) - best) > tol;
                for (size_t i = 0; i < w * h; i++)
                    wall_bad += !pb.in[i] && ((bits >> i) & 1);
                /* re-solves with the flow kept: change some terminals */
                for (int round = 0; round < 3; round++) {
                    for (size_t i = 0; i < w * h; i++)
                        if (pb.in[i] && rng() % 2 == 0) {
                            pb.c[i] = random_terminal(fractional);
                            imagen__grid_cut_set_terminal(g, i % w, i / w, pb.c[i]);
                        }
                    imagen__grid_cut_solve(g);
                    resolve_bad += fabs(energy(&pb, read_labels(&pb, g)) - brute_min(&pb)) > tol;
                }
            }
            imagen__grid_cut_free(g);
        }
    CHECK(runs == 4 * 3 * 60);
    CHECK_INT_EQ(flow_bad, 0);
    CHECK_INT_EQ(label_bad, 0);
    CHECK_INT_EQ(resolve_bad, 0);
    CHECK_INT_EQ(wall_bad, 0);
}

static void
test_integer_capacities(void)
{
    check_grids(false, false);
}

static void
test_fractional_capacities(void)
{
    check_grids(true, false);
}

static void
test_nodes_out_of_the_graph(void)
{
    check_grids(false, true);
}

/* A chain source -> a -> b -> sink: the flow is the bottleneck and the
 * cut falls on it; a fresh graph gives the same as a cleared one. */
static void
test_chain_and_clear(void)
{
    imagen__grid_cut *g = imagen__grid_cut_create(2, 1, false);
    CHECK(g != NULL);
    for (int pass = 0; pass < 2; pass++) {
        imagen__grid_cut_set_terminal(g, 0, 0, 5.0f);
        imagen__grid_cut_set_terminal(g, 1, 0, -4.0f);
        imagen__grid_cut_set_arc(g, 0, 0, IMAGEN__GRID_RIGHT, 3.0f);
        imagen__grid_cut_set_arc(g, 1, 0, IMAGEN__GRID_DOWN, 7.0f); /* outside: no-op */
        CHECK(imagen__grid_cut_solve(g) == 3.0);
        CHECK(imagen__grid_cut_source_side(g, 0, 0));
        CHECK(!imagen__grid_cut_source_side(g, 1, 0));
        imagen__grid_cut_clear(g);
    }
    imagen__grid_cut_free(g);
    imagen__grid_cut_free(NULL);
}

int
main(void)
{
    RUN(test_chain_and_clear);
    RUN(test_integer_capacities);
    RUN(test_fractional_capacities);
    RUN(test_nodes_out_of_the_graph);
    TEST_MAIN_END();
}
