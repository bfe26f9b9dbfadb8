/*
 * Statistics of one model version: the counters behind the statistics
 * extension (spec §1.7) and the nv_inference_* metrics (spec §6.1).
 *
 * Every counter is a relaxed atomic updated by instance threads and by the
 * threads that complete requests, so recording takes no lock. Snapshots read
 * the atomics one by one; a snapshot taken during traffic may mix counters
 * from neighbouring instants, as Triton's do. The batch table is indexed by
 * batch size and sized from max_batch_size at load.
 */
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"

typedef struct duration_counter {
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t ns;
} duration_counter;

typedef struct batch_row {
    duration_counter input, infer, output;
} batch_row;

const double imagen_latency_buckets_ms[IMAGEN_LATENCY_BUCKET_COUNT] = {100, 500, 2000, 5000};

struct imagen_stats {
    atomic_long refs;
    char *name;
    int64_t version;
    duration_counter success, fail, queue, compute_input, compute_infer, compute_output;
    atomic_uint_fast64_t fail_by_reason[IMAGEN_FAIL_REASON_COUNT];
    atomic_uint_fast64_t inference_count;
    atomic_uint_fast64_t execution_count;
    atomic_uint_fast64_t last_inference_ms;
    atomic_int_fast64_t pending;
    atomic_uint_fast64_t load_duration_us;
    pthread_mutex_t rows_lock; /* guards rows/n_rows growth and tags */
    batch_row *rows;           /* index = batch size; rows[0] unused */
    size_t n_rows;
    bool histogram;
    atomic_uint_fast64_t buckets[IMAGEN_LATENCY_BUCKET_COUNT];
    atomic_uint_fast64_t latency_count;
    atomic_uint_fast64_t latency_sum_us;
    imagen_config_param *tags;
    size_t n_tags;
    /* nv_inference_*_summary_us: one sketch per phase, NULL when off. */
    pthread_mutex_t sketch_lock;
    struct latency_sketch *sketches; /* [IMAGEN_SUMMARY_COUNT] */
    double quantiles[IMAGEN_SUMMARY_MAX_QUANTILES];
    size_t n_quantiles;
};

/* ======================================================================
 * Latency sketches for the summaries
 *
 * Prometheus summaries report quantiles over a sliding window. Each phase
 * keeps a histogram of nanoseconds in log-scale buckets, 16 per power of
 * two (a bucket is at most 6.25 % wide, and quantiles are reported at the
 * bucket's middle, so within about 3 % of the true value), in each of five
 * 12-second windows: the quantiles cover the last minute, as the default
 * summaries of Prometheus client libraries do. Recording is one bucket
 * increment per phase under a mutex taken once per request.
 * ==================================================================== */

#define SKETCH_SUB 16                                       /* buckets per power of two */
#define SKETCH_BUCKETS (SKETCH_SUB + (64 - 4) * SKETCH_SUB) /* exact below 16 ns, then log */
#define SKETCH_WINDOWS 5
#define SKETCH_WINDOW_NS (12ull * 1000000000ull)

typedef struct sketch_window {
    uint64_t slot; /* time / SKETCH_WINDOW_NS when last written */
    uint64_t total;
    uint32_t counts[SKETCH_BUCKETS];
} sketch_window;

typedef struct latency_sketch {
    sketch_window windows[SKETCH_WINDOWS];
    uint64_t count; /* since load */
    uint64_t sum_ns;
} latency_sketch;

static unsigned
sketch_bucket(uint64_t ns)
{
    if (ns < SKETCH_SUB)
        return (unsigned)ns;
    unsigned e = 63u - (unsigned)__builtin_clzll(ns); /* >= 4 */
    return SKETCH_SUB + (e - 4) * SKETCH_SUB + (unsigned)((ns >> (e - 4)) & (SKETCH_SUB - 1));
}

/* The middle of bucket i, in nanoseconds. */
static double
sketch_value(unsigned i)
{
    if (i < SKETCH_SUB)
        return (double)i;
    unsigned e = (i - SKETCH_SUB) / SKETCH_SUB + 4, m = (i - SKETCH_SUB) % SKETCH_SUB;
    double width = ldexp(1.0, (int)e - 4);
    return (double)(SKETCH_SUB + m) * width + (width - 1.0) / 2.0;
}

static void
sketch_record(latency_sketch *k, uint64_t slot, uint64_t ns)
{
    sketch_window *w = &k->windows[slot % SKETCH_WINDOWS];
    if (w->slot != slot) {
        memset(w, 0, sizeof(*w));
        w->slot = slot;
    }
    w->counts[sketch_bucket(ns)]++;
    w->total++;
    k->count++;
    k->sum_ns += ns;
}

/* Fills the quantiles (µs) over the windows of the last minute. */
static void
sketch_quantiles(const latency_sketch *k, uint64_t slot, const double *qs, size_t nq, uint32_t *merged, double *out_us)
{
    uint64_t total = 0;
    memset(merged, 0, SKETCH_BUCKETS * sizeof(uint32_t));
    for (int w = 0; w < SKETCH_WINDOWS; w++) {
        const sketch_window *win = &k->windows[w];
        if (win->total == 0 || win->slot + SKETCH_WINDOWS <= slot || win->slot > slot)
            continue;
        for (unsigned i = 0; i < SKETCH_BUCKETS; i++)
            merged[i] += win->counts[i];
        total += win->total;
    }
    for (size_t q = 0; q < nq; q++) {
        if (total == 0) {
            out_us[q] = NAN;
            continue;
        }
        /* The value at rank ceil(q * n), as a quantile of the observations. */
        uint64_t rank = (uint64_t)ceil(qs[q] * (double)total);
        if (rank < 1)
            rank = 1;
        uint64_t seen = 0;
        unsigned i = 0;
        for (; i < SKETCH_BUCKETS; i++) {
            seen += merged[i];
            if (seen >= rank)
                break;
        }
        out_us[q] = sketch_value(i < SKETCH_BUCKETS ? i : SKETCH_BUCKETS - 1) / 1000.0;
    }
}

static void
add(atomic_uint_fast64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static uint64_t
get(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void
add_duration(duration_counter *d, uint64_t ns)
{
    add(&d->count, 1);
    add(&d->ns, ns);
}

static imagen_stat_duration
get_duration(duration_counter *d)
{
    imagen_stat_duration r = {get(&d->count), get(&d->ns)};
    return r;
}

imagen_stats *
imagen_stats_new(const char *name, int64_t version, size_t max_batch, bool histogram, bool summaries,
                 const double *summary_quantiles, size_t n_quantiles)
{
    imagen_stats *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->name = strdup(name);
    st->rows = calloc(max_batch + 1, sizeof(batch_row));
    if (st->name == NULL || st->rows == NULL) {
        free(st->name);
        free(st->rows);
        free(st);
        return NULL;
    }
    atomic_init(&st->refs, 1);
    st->version = version;
    st->n_rows = max_batch + 1;
    st->histogram = histogram;
    pthread_mutex_init(&st->rows_lock, NULL);
    pthread_mutex_init(&st->sketch_lock, NULL);
    if (summaries) {
        /* Off when it cannot be allocated: the counters still work. */
        st->sketches = calloc(IMAGEN_SUMMARY_COUNT, sizeof(latency_sketch));
        st->n_quantiles = n_quantiles < IMAGEN_SUMMARY_MAX_QUANTILES ? n_quantiles : IMAGEN_SUMMARY_MAX_QUANTILES;
        if (st->n_quantiles)
            memcpy(st->quantiles, summary_quantiles, st->n_quantiles * sizeof(double));
    }
    return st;
}

imagen_stats *
imagen_stats_ref(imagen_stats *st)
{
    atomic_fetch_add(&st->refs, 1);
    return st;
}

static void
free_tags(imagen_config_param *tags, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(tags[i].key);
        free(tags[i].value);
    }
    free(tags);
}

void
imagen_stats_unref(imagen_stats *st)
{
    if (st == NULL || atomic_fetch_sub(&st->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&st->rows_lock);
    pthread_mutex_destroy(&st->sketch_lock);
    free(st->sketches);
    free_tags(st->tags, st->n_tags);
    free(st->rows);
    free(st->name);
    free(st);
}

void
imagen_stats_ensure_batch_rows(imagen_stats *st, size_t max_batch)
{
    pthread_mutex_lock(&st->rows_lock);
    if (max_batch + 1 > st->n_rows) {
        batch_row *rows = calloc(max_batch + 1, sizeof(batch_row));
        if (rows != NULL) {
            /* Copy counter values; writers hold rows_lock too. */
            for (size_t i = 0; i < st->n_rows; i++) {
                duration_counter *src[3] = {&st->rows[i].input, &st->rows[i].infer, &st->rows[i].output};
                duration_counter *dst[3] = {&rows[i].input, &rows[i].infer, &rows[i].output};
                for (int k = 0; k < 3; k++) {
                    atomic_init(&dst[k]->count, get(&src[k]->count));
                    atomic_init(&dst[k]->ns, get(&src[k]->ns));
                }
            }
            free(st->rows);
            st->rows = rows;
            st->n_rows = max_batch + 1;
        }
    }
    pthread_mutex_unlock(&st->rows_lock);
}

void
imagen_stats_set_metric_tags(imagen_stats *st, const imagen_config_param *tags, size_t n)
{
    imagen_config_param *copy = n ? calloc(n, sizeof(*copy)) : NULL;
    size_t done = 0;
    for (; copy && done < n; done++) {
        copy[done].key = strdup(tags[done].key);
        copy[done].value = strdup(tags[done].value);
        if (!copy[done].key || !copy[done].value) {
            done++;
            free_tags(copy, done);
            copy = NULL;
            done = 0;
            break;
        }
    }
    pthread_mutex_lock(&st->rows_lock);
    free_tags(st->tags, st->n_tags);
    st->tags = copy;
    st->n_tags = copy ? n : 0;
    pthread_mutex_unlock(&st->rows_lock);
}

void
imagen_stats_set_load_duration(imagen_stats *st, double secs)
{
    atomic_store(&st->load_duration_us, (uint64_t)(secs * 1e6));
}

void
imagen_stats_record_success(imagen_stats *st, uint64_t total_ns, uint64_t queue_ns, uint64_t input_ns,
                            uint64_t infer_ns, uint64_t output_ns, uint64_t batch_size)
{
    add_duration(&st->success, total_ns);
    add_duration(&st->queue, queue_ns);
    add_duration(&st->compute_input, input_ns);
    add_duration(&st->compute_infer, infer_ns);
    add_duration(&st->compute_output, output_ns);
    add(&st->inference_count, batch_size ? batch_size : 1);
    atomic_store_explicit(&st->last_inference_ms, imagen_time_wall_ms(), memory_order_relaxed);
    if (st->sketches != NULL) {
        uint64_t slot = imagen_time_now_ns() / SKETCH_WINDOW_NS;
        uint64_t phases[IMAGEN_SUMMARY_COUNT] = {total_ns, queue_ns, input_ns, infer_ns, output_ns};
        pthread_mutex_lock(&st->sketch_lock);
        for (int k = 0; k < IMAGEN_SUMMARY_COUNT; k++)
            sketch_record(&st->sketches[k], slot, phases[k]);
        pthread_mutex_unlock(&st->sketch_lock);
    }
    if (st->histogram) {
        double ms = (double)total_ns / 1e6;
        for (int i = 0; i < IMAGEN_LATENCY_BUCKET_COUNT; i++)
            if (ms <= imagen_latency_buckets_ms[i])
                add(&st->buckets[i], 1);
        add(&st->latency_count, 1);
        add(&st->latency_sum_us, total_ns / 1000);
    }
}

void
imagen_stats_record_failure(imagen_stats *st, imagen_fail_reason reason, uint64_t total_ns)
{
    add_duration(&st->fail, total_ns);
    if (reason >= 0 && reason < IMAGEN_FAIL_REASON_COUNT)
        add(&st->fail_by_reason[reason], 1);
    atomic_store_explicit(&st->last_inference_ms, imagen_time_wall_ms(), memory_order_relaxed);
}

void
imagen_stats_record_execution(imagen_stats *st, uint64_t batch_size, uint64_t input_ns, uint64_t infer_ns,
                              uint64_t output_ns)
{
    add(&st->execution_count, 1);
    /* The lock guards against a reload growing the table while the old
     * version's instances still execute; it is taken once per batch. */
    pthread_mutex_lock(&st->rows_lock);
    if (batch_size < st->n_rows) {
        batch_row *r = &st->rows[batch_size];
        add_duration(&r->input, input_ns);
        add_duration(&r->infer, infer_ns);
        add_duration(&r->output, output_ns);
    }
    pthread_mutex_unlock(&st->rows_lock);
}

void
imagen_stats_pending_add(imagen_stats *st, int64_t delta)
{
    atomic_fetch_add_explicit(&st->pending, delta, memory_order_relaxed);
}

bool
imagen_stats_snapshot(imagen_stats *st, imagen_model_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->name = strdup(st->name);
    if (out->name == NULL)
        return false;
    out->version = st->version;
    out->last_inference_ms = get(&st->last_inference_ms);
    out->inference_count = get(&st->inference_count);
    out->execution_count = get(&st->execution_count);
    out->success = get_duration(&st->success);
    out->fail = get_duration(&st->fail);
    out->queue = get_duration(&st->queue);
    out->compute_input = get_duration(&st->compute_input);
    out->compute_infer = get_duration(&st->compute_infer);
    out->compute_output = get_duration(&st->compute_output);
    for (int i = 0; i < IMAGEN_FAIL_REASON_COUNT; i++)
        out->fail_by_reason[i] = get(&st->fail_by_reason[i]);
    int64_t pending = atomic_load_explicit(&st->pending, memory_order_relaxed);
    out->pending_requests = pending > 0 ? (uint64_t)pending : 0;
    out->load_duration_secs = (double)atomic_load(&st->load_duration_us) / 1e6;

    pthread_mutex_lock(&st->rows_lock);
    size_t used = 0;
    for (size_t i = 1; i < st->n_rows; i++)
        if (get(&st->rows[i].infer.count))
            used++;
    if (used) {
        out->batch_stats = calloc(used, sizeof(imagen_batch_stat));
        if (out->batch_stats) {
            for (size_t i = 1; i < st->n_rows; i++) {
                batch_row *r = &st->rows[i];
                if (!get(&r->infer.count))
                    continue;
                imagen_batch_stat *b = &out->batch_stats[out->n_batch_stats++];
                b->batch_size = i;
                b->compute_input = get_duration(&r->input);
                b->compute_infer = get_duration(&r->infer);
                b->compute_output = get_duration(&r->output);
            }
        }
    }
    if (st->n_tags) {
        out->metric_tags = calloc(st->n_tags, sizeof(imagen_config_param));
        for (size_t i = 0; out->metric_tags && i < st->n_tags; i++) {
            out->metric_tags[i].key = strdup(st->tags[i].key);
            out->metric_tags[i].value = strdup(st->tags[i].value);
            out->n_metric_tags++;
        }
    }
    pthread_mutex_unlock(&st->rows_lock);

    if (st->sketches != NULL) {
        uint32_t *merged = malloc(SKETCH_BUCKETS * sizeof(uint32_t));
        if (merged != NULL) {
            uint64_t slot = imagen_time_now_ns() / SKETCH_WINDOW_NS;
            out->has_summaries = true;
            out->n_quantiles = st->n_quantiles;
            memcpy(out->quantiles, st->quantiles, st->n_quantiles * sizeof(double));
            pthread_mutex_lock(&st->sketch_lock);
            for (int k = 0; k < IMAGEN_SUMMARY_COUNT; k++) {
                const latency_sketch *sk = &st->sketches[k];
                out->summaries[k].count = sk->count;
                out->summaries[k].sum_us = (double)sk->sum_ns / 1000.0;
                sketch_quantiles(sk, slot, st->quantiles, st->n_quantiles, merged, out->summaries[k].quantile_us);
            }
            pthread_mutex_unlock(&st->sketch_lock);
            free(merged);
        }
    }
    out->has_latency_histogram = st->histogram;
    if (st->histogram) {
        for (int i = 0; i < IMAGEN_LATENCY_BUCKET_COUNT; i++)
            out->latency_bucket_counts[i] = get(&st->buckets[i]);
        out->latency_count = get(&st->latency_count);
        out->latency_sum_ms = (double)get(&st->latency_sum_us) / 1000.0;
    }
    return true;
}

void
imagen_model_stats_free(imagen_model_stats *stats, size_t n)
{
    if (stats == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(stats[i].name);
        free(stats[i].batch_stats);
        for (size_t k = 0; k < stats[i].n_metric_tags; k++) {
            free(stats[i].metric_tags[k].key);
            free(stats[i].metric_tags[k].value);
        }
        free(stats[i].metric_tags);
    }
    free(stats);
}
