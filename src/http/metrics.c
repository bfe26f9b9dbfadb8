/*
 * The Prometheus metrics endpoint (spec §6): renders the nv_inference_*
 * families from imagen_server_metrics_snapshot() (so unloaded models keep
 * their counters) plus CPU utilisation and memory from /proc, and serves
 * them on their own libmicrohttpd daemon at /metrics. Runs on that daemon's
 * thread; the CPU sampler state is process-wide and guarded by one mutex,
 * refreshed lazily at most once per interval. It never blocks on a model.
 */
#include "http/http_internal.h"

#include <inttypes.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/copy_stats.h"
#include "common/log.h"
#include "common/time.h"

#define METRICS_DEFAULT_INTERVAL_MS 2000
#define METRICS_MAX_LABELS 64 /* model, version, reason/le, plus metric tags */
#define METRICS_PROC_LINE_BYTES 512

struct imagen_metrics {
    imagen_server *srv;          /* borrowed */
    imagen_metrics_options opts; /* copy; address not used after start */
    struct MHD_Daemon *daemon;
    int port;
};

/* ======================================================================
 * Text helpers
 * ==================================================================== */

void
imagen__metrics_append_label_value(imagen_buf *b, const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            imagen_buf_append_str(b, "\\\\");
        else if (*p == '"')
            imagen_buf_append_str(b, "\\\"");
        else if (*p == '\n')
            imagen_buf_append_str(b, "\\n");
        else
            imagen_buf_append_char(b, *p);
    }
}

void
imagen__metrics_append_tag_name(imagen_buf *b, const char *key)
{
    imagen_buf_append_char(b, '_');
    for (const char *p = key; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        imagen_buf_append_char(b, ok ? c : '_');
    }
}

typedef struct label {
    const char *key; /* for tags: the config key without the '_' */
    const char *value;
    bool tag;
} label;

static int
label_cmp(const void *a, const void *b)
{
    const label *x = a, *y = b;
    /* Tags render as "_<key>" and '_' sorts before every lowercase name. */
    if (x->tag != y->tag)
        return x->tag ? -1 : 1;
    return strcmp(x->key, y->key);
}

/* Appends `{k="v",...}` with labels sorted by name, as Prometheus client
 * libraries print them. `extra_key` may be NULL. */
static void
append_labels(imagen_buf *b, const imagen_model_stats *s, const char *extra_key, const char *extra_value)
{
    label labels[METRICS_MAX_LABELS];
    size_t n = 0;
    char version[24];
    snprintf(version, sizeof(version), "%" PRId64, s->version);
    labels[n++] = (label){"model", s->name, false};
    labels[n++] = (label){"version", version, false};
    if (extra_key)
        labels[n++] = (label){extra_key, extra_value, false};
    for (size_t i = 0; i < s->n_metric_tags && n < METRICS_MAX_LABELS; i++)
        labels[n++] = (label){s->metric_tags[i].key, s->metric_tags[i].value ? s->metric_tags[i].value : "", true};
    qsort(labels, n, sizeof(label), label_cmp);
    imagen_buf_append_char(b, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            imagen_buf_append_char(b, ',');
        if (labels[i].tag)
            imagen__metrics_append_tag_name(b, labels[i].key);
        else
            imagen_buf_append_str(b, labels[i].key);
        imagen_buf_append_str(b, "=\"");
        imagen__metrics_append_label_value(b, labels[i].value);
        imagen_buf_append_char(b, '"');
    }
    imagen_buf_append_char(b, '}');
}

static void
family(imagen_buf *b, const char *name, const char *type, const char *help)
{
    imagen_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
append_value(imagen_buf *b, double v)
{
    if (isnan(v))
        imagen_buf_append_str(b, "NaN");
    else if (isinf(v))
        imagen_buf_append_str(b, v > 0 ? "+Inf" : "-Inf");
    else
        imagen_buf_append_double(b, v);
}

/* ======================================================================
 * Per-model families
 * ==================================================================== */

/* nv_inference_*_summary_us (spec §6.1): per phase, a {quantile="q"} sample
 * for each configured quantile (over the last minute; NaN without
 * observations), then _sum and _count since the model loaded. */
static void
append_summaries(imagen_buf *b, const imagen_model_stats *stats, size_t n)
{
    static const struct {
        const char *name;
        const char *help;
    } phases[IMAGEN_SUMMARY_COUNT] = {
        [IMAGEN_SUMMARY_REQUEST] = {"nv_inference_request_summary_us",
                                    "Summary of inference request duration in microseconds"},
        [IMAGEN_SUMMARY_QUEUE] = {"nv_inference_queue_summary_us",
                                  "Summary of inference queuing duration in microseconds"},
        [IMAGEN_SUMMARY_COMPUTE_INPUT] = {"nv_inference_compute_input_summary_us",
                                          "Summary of compute input duration in microseconds"},
        [IMAGEN_SUMMARY_COMPUTE_INFER] = {"nv_inference_compute_infer_summary_us",
                                          "Summary of compute infer duration in microseconds"},
        [IMAGEN_SUMMARY_COMPUTE_OUTPUT] = {"nv_inference_compute_output_summary_us",
                                           "Summary of compute output duration in microseconds"},
    };
    for (int k = 0; k < IMAGEN_SUMMARY_COUNT; k++) {
        family(b, phases[k].name, "summary", phases[k].help);
        for (size_t i = 0; i < n; i++) {
            const imagen_model_stats *s = &stats[i];
            if (!s->has_summaries)
                continue;
            const imagen_latency_summary *sum = &s->summaries[k];
            for (size_t q = 0; q < s->n_quantiles; q++) {
                imagen_buf qtext = IMAGEN_BUF_INIT;
                imagen_buf_append_double(&qtext, s->quantiles[q]);
                imagen_buf_append_str(b, phases[k].name);
                append_labels(b, s, "quantile", qtext.data ? qtext.data : "0");
                imagen_buf_free(&qtext);
                imagen_buf_append_char(b, ' ');
                append_value(b, sum->quantile_us[q]);
                imagen_buf_append_char(b, '\n');
            }
            imagen_buf_appendf(b, "%s_sum", phases[k].name);
            append_labels(b, s, NULL, NULL);
            imagen_buf_append_char(b, ' ');
            append_value(b, sum->sum_us);
            imagen_buf_append_char(b, '\n');
            imagen_buf_appendf(b, "%s_count", phases[k].name);
            append_labels(b, s, NULL, NULL);
            imagen_buf_appendf(b, " %" PRIu64 "\n", sum->count);
        }
    }
}

typedef enum {
    FIELD_SUCCESS,
    FIELD_INFERENCES,
    FIELD_EXECUTIONS,
    FIELD_REQUEST_US,
    FIELD_QUEUE_US,
    FIELD_INPUT_US,
    FIELD_INFER_US,
    FIELD_OUTPUT_US,
    FIELD_PENDING
} counter_field;

static uint64_t
field_value(const imagen_model_stats *s, counter_field f)
{
    switch (f) {
    case FIELD_SUCCESS:
        return s->success.count;
    case FIELD_INFERENCES:
        return s->inference_count;
    case FIELD_EXECUTIONS:
        return s->execution_count;
    case FIELD_REQUEST_US:
        return s->success.ns / 1000;
    case FIELD_QUEUE_US:
        return s->queue.ns / 1000;
    case FIELD_INPUT_US:
        return s->compute_input.ns / 1000;
    case FIELD_INFER_US:
        return s->compute_infer.ns / 1000;
    case FIELD_OUTPUT_US:
        return s->compute_output.ns / 1000;
    case FIELD_PENDING:
        return s->pending_requests;
    }
    return 0;
}

static const struct {
    const char *name;
    const char *type;
    const char *help;
    counter_field field;
    bool latency; /* one of the *_duration_us counters (counter_latencies) */
} simple_families[] = {
    {"nv_inference_count", "counter", "Number of inferences performed (does not include cached requests)",
     FIELD_INFERENCES, false},
    {"nv_inference_exec_count", "counter", "Number of model executions performed (does not include cached requests)",
     FIELD_EXECUTIONS, false},
    {"nv_inference_request_duration_us", "counter",
     "Cumulative inference request duration in microseconds (includes cached requests)", FIELD_REQUEST_US, true},
    {"nv_inference_queue_duration_us", "counter",
     "Cumulative inference queuing duration in microseconds (includes cached requests)", FIELD_QUEUE_US, true},
    {"nv_inference_compute_input_duration_us", "counter",
     "Cumulative compute input duration in microseconds (does not include cached requests)", FIELD_INPUT_US, true},
    {"nv_inference_compute_infer_duration_us", "counter",
     "Cumulative compute inference duration in microseconds (does not include cached requests)", FIELD_INFER_US, true},
    {"nv_inference_compute_output_duration_us", "counter",
     "Cumulative inference compute output duration in microseconds (does not include cached requests)", FIELD_OUTPUT_US,
     true},
    {"nv_inference_pending_request_count", "gauge",
     "Instantaneous number of pending requests awaiting execution per-model.", FIELD_PENDING, false},
};

static const char *const fail_reasons[IMAGEN_FAIL_REASON_COUNT] = {"REJECTED", "CANCELED", "BACKEND", "OTHER"};

static void
render_models(imagen_buf *b, const imagen_model_stats *stats, size_t n, const imagen_metrics_options *opts)
{
    family(b, "nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes");
    for (size_t i = 0; i < n; i++) {
        imagen_buf_append_str(b, "nv_inference_request_success");
        append_labels(b, &stats[i], NULL, NULL);
        imagen_buf_appendf(b, " %" PRIu64 "\n", stats[i].success.count);
    }
    family(b, "nv_inference_request_failure", "counter", "Number of failed inference requests, all batch sizes");
    for (size_t i = 0; i < n; i++) {
        for (int r = 0; r < IMAGEN_FAIL_REASON_COUNT; r++) {
            imagen_buf_append_str(b, "nv_inference_request_failure");
            append_labels(b, &stats[i], "reason", fail_reasons[r]);
            imagen_buf_appendf(b, " %" PRIu64 "\n", stats[i].fail_by_reason[r]);
        }
    }
    for (size_t f = 0; f < sizeof(simple_families) / sizeof(simple_families[0]); f++) {
        if (simple_families[f].latency && !opts->counter_latencies)
            continue;
        family(b, simple_families[f].name, simple_families[f].type, simple_families[f].help);
        for (size_t i = 0; i < n; i++) {
            imagen_buf_append_str(b, simple_families[f].name);
            append_labels(b, &stats[i], NULL, NULL);
            imagen_buf_appendf(b, " %" PRIu64 "\n", field_value(&stats[i], simple_families[f].field));
        }
    }
    family(b, "nv_model_load_duration_secs", "gauge", "Model loading duration in seconds");
    for (size_t i = 0; i < n; i++) {
        imagen_buf_append_str(b, "nv_model_load_duration_secs");
        append_labels(b, &stats[i], NULL, NULL);
        imagen_buf_append_char(b, ' ');
        append_value(b, stats[i].load_duration_secs);
        imagen_buf_append_char(b, '\n');
    }
    if (opts->summary_latencies)
        append_summaries(b, stats, n);
    if (!opts->histogram_latencies)
        return;
    const char *h = "nv_inference_first_response_histogram_ms";
    family(b, h, "histogram", "Duration from request to first response in milliseconds");
    for (size_t i = 0; i < n; i++) {
        const imagen_model_stats *s = &stats[i];
        if (!s->has_latency_histogram)
            continue;
        imagen_buf_appendf(b, "%s_count", h);
        append_labels(b, s, NULL, NULL);
        imagen_buf_appendf(b, " %" PRIu64 "\n", s->latency_count);
        imagen_buf_appendf(b, "%s_sum", h);
        append_labels(b, s, NULL, NULL);
        imagen_buf_append_char(b, ' ');
        append_value(b, s->latency_sum_ms);
        imagen_buf_append_char(b, '\n');
        for (int k = 0; k <= IMAGEN_LATENCY_BUCKET_COUNT; k++) {
            char le[32];
            uint64_t count;
            if (k < IMAGEN_LATENCY_BUCKET_COUNT) {
                imagen_buf tmp = IMAGEN_BUF_INIT;
                imagen_buf_append_double(&tmp, imagen_latency_buckets_ms[k]);
                snprintf(le, sizeof(le), "%s", tmp.data ? tmp.data : "0");
                imagen_buf_free(&tmp);
                count = s->latency_bucket_counts[k];
            } else {
                snprintf(le, sizeof(le), "+Inf");
                count = s->latency_count;
            }
            imagen_buf_appendf(b, "%s_bucket", h);
            append_labels(b, s, "le", le);
            imagen_buf_appendf(b, " %" PRIu64 "\n", count);
        }
    }
}

/* ======================================================================
 * CPU and memory (spec §6.3), sampled lazily once per interval
 * ==================================================================== */

static pthread_mutex_t cpu_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t cpu_last_total, cpu_last_idle; /* jiffies at the last sample */
static uint64_t cpu_last_sample_ns;            /* 0 = never sampled */
static double cpu_utilization;                 /* ratio over the last interval */
static uint64_t mem_total_bytes, mem_used_bytes;

static bool
read_proc_stat(uint64_t *total, uint64_t *idle)
{
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return false;
    char line[METRICS_PROC_LINE_BYTES];
    bool ok = false;
    if (fgets(line, sizeof(line), f) != NULL && strncmp(line, "cpu ", 4) == 0) {
        unsigned long long v[8] = {0};
        int n = sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                       &v[6], &v[7]);
        if (n >= 4) {
            *total = 0;
            for (int i = 0; i < n; i++)
                *total += v[i];
            *idle = v[3] + (n > 4 ? v[4] : 0); /* idle + iowait */
            ok = true;
        }
    }
    fclose(f);
    return ok;
}

static void
read_meminfo(uint64_t *total, uint64_t *used)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (f == NULL)
        return;
    char line[METRICS_PROC_LINE_BYTES];
    unsigned long long mt = 0, ma = 0;
    bool have_t = false, have_a = false;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "MemTotal: %llu kB", &mt) == 1)
            have_t = true;
        else if (sscanf(line, "MemAvailable: %llu kB", &ma) == 1)
            have_a = true;
    }
    fclose(f);
    if (have_t) {
        *total = (uint64_t)mt * 1024;
        *used = have_a && ma <= mt ? (uint64_t)(mt - ma) * 1024 : 0;
    }
}

static void
cpu_refresh(unsigned interval_ms)
{
    uint64_t now = imagen_time_now_ns();
    uint64_t interval_ns = (uint64_t)(interval_ms ? interval_ms : METRICS_DEFAULT_INTERVAL_MS) * 1000000u;
    pthread_mutex_lock(&cpu_mu);
    if (cpu_last_sample_ns == 0 || now - cpu_last_sample_ns >= interval_ns) {
        uint64_t total = 0, idle = 0;
        if (read_proc_stat(&total, &idle)) {
            if (cpu_last_sample_ns != 0 && total > cpu_last_total) {
                uint64_t dt = total - cpu_last_total;
                uint64_t di = idle >= cpu_last_idle ? idle - cpu_last_idle : 0;
                cpu_utilization = di >= dt ? 0.0 : (double)(dt - di) / (double)dt;
            }
            cpu_last_total = total;
            cpu_last_idle = idle;
        }
        read_meminfo(&mem_total_bytes, &mem_used_bytes);
        cpu_last_sample_ns = now;
    }
    pthread_mutex_unlock(&cpu_mu);
}

/* Tensor bytes the frontends copied (common/copy_stats.h): with the request
 * counts, bytes copied per request is the delta of one over the other. */
static void
render_copy_stats(imagen_buf *b)
{
    static const char *const directions[IMAGEN_COPY_DIRECTION_COUNT] = {"input", "output"};
    family(b, "imagen_tensor_copy_bytes_total", "counter",
           "Tensor payload bytes copied by the inference frontends, per protocol and direction");
    for (int p = 0; p < IMAGEN_COPY_PROTOCOL_COUNT; p++)
        for (int d = 0; d < IMAGEN_COPY_DIRECTION_COUNT; d++)
            imagen_buf_appendf(b, "imagen_tensor_copy_bytes_total{protocol=\"%s\",direction=\"%s\"} %" PRIu64 "\n",
                               imagen_copy_protocol_name((imagen_copy_protocol)p), directions[d],
                               imagen_copy_stats_bytes((imagen_copy_protocol)p, (imagen_copy_direction)d));
    family(b, "imagen_tensor_copy_requests_total", "counter",
           "Inference requests decoded by the inference frontends, per protocol");
    for (int p = 0; p < IMAGEN_COPY_PROTOCOL_COUNT; p++)
        imagen_buf_appendf(b, "imagen_tensor_copy_requests_total{protocol=\"%s\"} %" PRIu64 "\n",
                           imagen_copy_protocol_name((imagen_copy_protocol)p),
                           imagen_copy_stats_requests((imagen_copy_protocol)p));
}

static void
render_cpu(imagen_buf *b, unsigned interval_ms)
{
    cpu_refresh(interval_ms);
    pthread_mutex_lock(&cpu_mu);
    double util = cpu_utilization;
    uint64_t total = mem_total_bytes, used = mem_used_bytes;
    pthread_mutex_unlock(&cpu_mu);
    family(b, "nv_cpu_utilization", "gauge", "CPU utilization rate [0.0 - 1.0]");
    imagen_buf_append_str(b, "nv_cpu_utilization ");
    append_value(b, util);
    imagen_buf_append_char(b, '\n');
    family(b, "nv_cpu_memory_total_bytes", "gauge", "CPU total memory (RAM), in bytes");
    imagen_buf_appendf(b, "nv_cpu_memory_total_bytes %" PRIu64 "\n", total);
    family(b, "nv_cpu_memory_used_bytes", "gauge", "CPU used memory (RAM), in bytes");
    imagen_buf_appendf(b, "nv_cpu_memory_used_bytes %" PRIu64 "\n", used);
}

char *
imagen_metrics_render(imagen_server *srv, const imagen_metrics_options *opts, size_t *len)
{
    imagen_metrics_options defaults;
    imagen_metrics_options_init(&defaults);
    if (opts == NULL)
        opts = &defaults;
    imagen_model_stats *stats = NULL;
    size_t n = 0;
    imagen_error *err = imagen_server_metrics_snapshot(srv, &stats, &n);
    if (err != NULL) {
        IMAGEN_LOG_WARN_("http", "metrics snapshot failed: %s", imagen_error_message(err));
        imagen_error_free(err);
        stats = NULL;
        n = 0;
    }
    imagen_buf b = IMAGEN_BUF_INIT;
    render_models(&b, stats, n, opts);
    imagen_model_stats_free(stats, n);
    render_copy_stats(&b);
    if (opts->allow_cpu_metrics)
        render_cpu(&b, opts->interval_ms);
    return imagen_buf_detach(&b, len);
}

/* ======================================================================
 * The daemon
 * ==================================================================== */

static int metrics_marker; /* con_cls for requests being received */

static enum MHD_Result
queue_empty(struct MHD_Connection *conn, unsigned status)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
on_metrics_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method, const char *version,
                   const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    imagen_metrics *m = cls;
    if (*con_cls == NULL) {
        *con_cls = &metrics_marker;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0; /* bodies are ignored */
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0)
        return queue_empty(conn, MHD_HTTP_METHOD_NOT_ALLOWED);
    if (strcmp(url, "/metrics") != 0 && strcmp(url, "/metrics/") != 0)
        return queue_empty(conn, MHD_HTTP_NOT_FOUND);
    size_t len = 0;
    char *text = imagen_metrics_render(m->srv, &m->opts, &len);
    if (text == NULL)
        return queue_empty(conn, MHD_HTTP_INTERNAL_SERVER_ERROR);
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, text, free);
    if (r == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

void
imagen_metrics_options_init(imagen_metrics_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->address = NULL;
    opts->port = IMAGEN_METRICS_DEFAULT_PORT;
    opts->counter_latencies = true;
    opts->histogram_latencies = false;
    opts->allow_cpu_metrics = true;
    opts->interval_ms = METRICS_DEFAULT_INTERVAL_MS;
}

imagen_error *
imagen_metrics_start(imagen_server *srv, const imagen_metrics_options *opts, imagen_metrics **out)
{
    *out = NULL;
    imagen_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    m->srv = srv;
    if (opts)
        m->opts = *opts;
    else
        imagen_metrics_options_init(&m->opts);
    const char *address = m->opts.address ? m->opts.address : "0.0.0.0";
    m->opts.address = NULL;
    if (m->opts.port < 0 || m->opts.port > 65535) {
        int port = m->opts.port;
        free(m);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "invalid metrics port %d", port);
    }
    struct sockaddr_storage ss;
    unsigned ss_len = 0;
    bool ipv6 = false;
    imagen_error *err = imagen__http_resolve(address, m->opts.port, &ss, &ss_len, &ipv6);
    if (err != NULL) {
        free(m);
        return err;
    }
    cpu_refresh(m->opts.interval_ms); /* first sample: utilisation is measured from here */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    m->daemon = MHD_start_daemon(flags, (uint16_t)m->opts.port, NULL, NULL, on_metrics_request, m, MHD_OPTION_SOCK_ADDR,
                                 (struct sockaddr *)&ss, MHD_OPTION_END);
    if (m->daemon == NULL) {
        free(m);
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "cannot start the metrics server on %s:%d", address,
                                opts ? opts->port : IMAGEN_METRICS_DEFAULT_PORT);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? (int)info->port : m->opts.port;
    IMAGEN_LOG_VERBOSE_("http", "metrics daemon listening at %s:%d", address, m->port);
    *out = m;
    return NULL;
}

int
imagen_metrics_port(const imagen_metrics *metrics)
{
    return metrics ? metrics->port : -1;
}

void
imagen_metrics_destroy(imagen_metrics *metrics)
{
    if (metrics == NULL)
        return;
    MHD_stop_daemon(metrics->daemon);
    free(metrics);
}
