/*
 * imagen — the inference server as a library (the in-process C API).
 *
 * Everything the HTTP and gRPC frontends do goes through this header, so a
 * program can embed the server without sockets. Implemented in src/core/.
 *
 * Conventions (see also error.h):
 *   - A function returning imagen_error * returns NULL on success.
 *   - If imagen_server_infer_async() returns an error, its callback is never
 *     called and the request still belongs to the caller.
 *   - Unless a comment says otherwise, every function is thread-safe.
 */
#ifndef IMAGEN_SERVER_H
#define IMAGEN_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"
#include "imagen/model_config.h"
#include "imagen/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IMAGEN_VERSION_STRING "0.1.0"
/* What GET /v2 reports as "version": the Triton protocol level we follow. */
#define IMAGEN_TRITON_COMPAT_VERSION "2.73.0dev"

/* Request limits checked by the core (frontends have their own byte limits). */
#define IMAGEN_REQUEST_MAX_INPUTS 1024
#define IMAGEN_REQUEST_MAX_OUTPUTS 1024
#define IMAGEN_REQUEST_MAX_ELEMENTS (UINT64_C(1) << 40)
#define IMAGEN_NAME_MAX_BYTES 1024 /* model, tensor, parameter names */

typedef struct imagen_server imagen_server;
typedef struct imagen_model imagen_model; /* one loaded, ref-counted model version */
typedef struct imagen_request imagen_request;
typedef struct imagen_response imagen_response;

/* ======================================================================
 * Server (src/core/server.c)
 * ==================================================================== */

typedef enum {
    IMAGEN_MODEL_CONTROL_NONE = 0,
    IMAGEN_MODEL_CONTROL_POLL = 1,
    IMAGEN_MODEL_CONTROL_EXPLICIT = 2
} imagen_model_control_mode;

/* Options for imagen_server_create(). Caller-allocated; initialise with
 * imagen_server_options_init() and then set fields. String arrays are
 * borrowed for the duration of imagen_server_create() only. */
#define IMAGEN_SUMMARY_MAX_QUANTILES 8

typedef struct imagen_server_options {
    const char *const *model_repositories; /* one or more repository roots */
    size_t n_model_repositories;
    imagen_model_control_mode control_mode;
    int repository_poll_secs;          /* poll mode interval, > 0; default 15 */
    const char *const *startup_models; /* explicit mode --load-model names ("*" = all) */
    size_t n_startup_models;
    const char *model_config_name;                          /* --model-config-name, NULL = config.pbtxt */
    bool strict_readiness;                                  /* default true */
    bool exit_on_error;                                     /* default true: create fails if a model fails */
    bool disable_auto_complete_config;                      /* default false */
    const char *backend_directory;                          /* external backends; NULL = none */
    const char *server_id;                                  /* default "triton" */
    int model_load_thread_count;                            /* default 4 */
    int exit_timeout_secs;                                  /* drain bound on stop; default 30 */
    int cpu_threads;                                        /* threads a backend may use in total; 0 = cores */
    bool latency_histograms;                                /* keep nv_inference_first_response_histogram_ms */
    bool latency_summaries;                                 /* keep the nv_inference_*_summary_us quantiles */
    double summary_quantiles[IMAGEN_SUMMARY_MAX_QUANTILES]; /* in (0, 1]; default 0.5 0.9 0.95 0.99 0.999 */
    size_t n_summary_quantiles;
    /* Backends compiled into the program (src/backends/registry.c); the core
     * knows backends only through this table and --backend-directory. */
    const struct imagen_backend *const *builtin_backends;
    size_t n_builtin_backends;
} imagen_server_options;

void imagen_server_options_init(imagen_server_options *opts);

/* Creates the server: registers built-in backends, scans the repositories and
 * loads models per the control mode (in parallel). With exit_on_error, a
 * model that fails to load makes creation fail. On success *out is owned;
 * destroy with imagen_server_destroy(). */
imagen_error *imagen_server_create(const imagen_server_options *opts, imagen_server **out);

/* Begins shutdown: the server stops being live and ready, new inference
 * requests fail UNAVAILABLE "Server exiting", then waits up to
 * exit_timeout_secs for in-flight requests. Returns the number of requests
 * still in flight when it gave up (0 = drained). Idempotent. */
size_t imagen_server_stop(imagen_server *srv);

/* Stops (if not stopped), unloads every model, joins every thread, frees.
 * Accepts NULL. Must not be called from a completion callback. */
void imagen_server_destroy(imagen_server *srv);

bool imagen_server_is_live(imagen_server *srv);
bool imagen_server_is_ready(imagen_server *srv);
bool imagen_server_is_exiting(imagen_server *srv);
/* Borrowed; lives as long as the server. */
const char *imagen_server_id(const imagen_server *srv);
/* Number of inference requests accepted and not yet completed. */
size_t imagen_server_inflight_count(imagen_server *srv);

/* ======================================================================
 * Models: lookup, readiness, repository control (src/core/repository.c)
 * ==================================================================== */

/* Finds a READY model version and takes a reference on it. version -1 picks
 * the highest READY version. Errors follow spec §0: unknown name ->
 * INVALID_ARG "Request for unknown model: '<m>' is not found"; no READY
 * version -> NOT_FOUND / UNAVAILABLE. *out must be released with
 * imagen_model_release(). */
imagen_error *imagen_server_model_acquire(imagen_server *srv, const char *name, int64_t version, imagen_model **out);
void imagen_model_release(imagen_model *model);

/* Accessors on an acquired model; results are borrowed for as long as the
 * reference is held. */
const char *imagen_model_name(const imagen_model *model);
int64_t imagen_model_version(const imagen_model *model);
const imagen_model_config *imagen_model_get_config(const imagen_model *model);
/* Class labels of an output (output.label_filename, one per line); *n = 0
 * and NULL when the output has none. */
const char *const *imagen_model_output_labels(const imagen_model *model, const char *output, size_t *n);

/* True if that version (or, with -1, any version) of the model is READY. */
bool imagen_server_model_is_ready(imagen_server *srv, const char *name, int64_t version);

/* The READY versions of a model, ascending. *versions is owned (free()).
 * Unknown model -> INVALID_ARG as for acquire. */
imagen_error *imagen_server_model_ready_versions(imagen_server *srv, const char *name, int64_t **versions, size_t *n);

/* One row of the repository index (spec §1.8). */
typedef struct imagen_repository_entry {
    char *name;
    int64_t version; /* -1 when the row is about the model, not a version */
    /* Static: "READY", "UNAVAILABLE", "LOADING", "UNLOADING", "UNKNOWN".
     * NULL for a model found on disk and never loaded (printed as name
     * only). With version -1 and a state, the model failed before any
     * version could be loaded (e.g. a bad config.pbtxt): print name, state
     * and reason without "version". */
    const char *state;
    char *reason; /* "" when none */
} imagen_repository_entry;

/* Lists every model in the repositories and every version the server knows,
 * sorted by name then version. *entries is owned; free with
 * imagen_repository_index_free(). */
imagen_error *imagen_server_repository_index(imagen_server *srv, bool ready_only, imagen_repository_entry **entries,
                                             size_t *n);
void imagen_repository_index_free(imagen_repository_entry *entries, size_t n);

/* A file supplied with a load request ("file:<version>/<path>" parameters). */
typedef struct imagen_model_file {
    const char *path; /* relative, e.g. "1/model.onnx" */
    const void *data;
    size_t size;
} imagen_model_file;

/* Loads or reloads a model (explicit mode only; otherwise UNAVAILABLE). With
 * config_json (protobuf-JSON ModelConfig) the on-disk config is replaced;
 * with files, they form the model directory (config_json required). Returns
 * once the load finished; a reload swaps only after the new version is READY,
 * and in-flight requests finish on the old one. */
imagen_error *imagen_server_model_load(imagen_server *srv, const char *name, const char *config_json,
                                       const imagen_model_file *files, size_t n_files);

/* Unloads every version (explicit mode only). Returns once no version is
 * READY; teardown completes when in-flight requests finish. */
imagen_error *imagen_server_model_unload(imagen_server *srv, const char *name, bool unload_dependents);

/* ======================================================================
 * Statistics (src/core/stats.c)
 * ==================================================================== */

typedef struct imagen_stat_duration {
    uint64_t count;
    uint64_t ns;
} imagen_stat_duration;

typedef struct imagen_batch_stat {
    uint64_t batch_size;
    imagen_stat_duration compute_input, compute_infer, compute_output; /* count = executions */
} imagen_batch_stat;

/* Failure reasons of nv_inference_request_failure. */
typedef enum {
    IMAGEN_FAIL_REJECTED = 0,
    IMAGEN_FAIL_CANCELED = 1,
    IMAGEN_FAIL_BACKEND = 2,
    IMAGEN_FAIL_OTHER = 3,
    IMAGEN_FAIL_REASON_COUNT = 4
} imagen_fail_reason;

/* Latency histogram buckets (ms) of nv_inference_first_response_histogram_ms. */
#define IMAGEN_LATENCY_BUCKET_COUNT 4
extern const double imagen_latency_buckets_ms[IMAGEN_LATENCY_BUCKET_COUNT];

/* Latency summaries (spec §6.1, nv_inference_*_summary_us): per phase,
 * quantiles over the last minute and cumulative count and sum. */
typedef enum {
    IMAGEN_SUMMARY_REQUEST = 0,
    IMAGEN_SUMMARY_QUEUE,
    IMAGEN_SUMMARY_COMPUTE_INPUT,
    IMAGEN_SUMMARY_COMPUTE_INFER,
    IMAGEN_SUMMARY_COMPUTE_OUTPUT,
    IMAGEN_SUMMARY_COUNT
} imagen_summary_kind;

typedef struct imagen_latency_summary {
    uint64_t count;                                   /* since load */
    double sum_us;                                    /* since load */
    double quantile_us[IMAGEN_SUMMARY_MAX_QUANTILES]; /* last minute; NaN without observations */
} imagen_latency_summary;

/* A snapshot of one model version's statistics (spec §1.7, §6.1). */
typedef struct imagen_model_stats {
    char *name;
    int64_t version;
    uint64_t last_inference_ms; /* ms since the epoch; 0 = never */
    uint64_t inference_count;
    uint64_t execution_count;
    imagen_stat_duration success, fail, queue, compute_input, compute_infer, compute_output, cache_hit, cache_miss;
    uint64_t fail_by_reason[IMAGEN_FAIL_REASON_COUNT];
    uint64_t pending_requests; /* accepted, not yet started by an instance */
    double load_duration_secs;
    imagen_batch_stat *batch_stats; /* ascending batch_size, only sizes executed */
    size_t n_batch_stats;
    bool has_latency_histogram;
    uint64_t latency_bucket_counts[IMAGEN_LATENCY_BUCKET_COUNT]; /* cumulative, per bucket bound */
    uint64_t latency_count;
    double latency_sum_ms;
    bool has_summaries;
    size_t n_quantiles; /* the quantiles of summaries[].quantile_us */
    double quantiles[IMAGEN_SUMMARY_MAX_QUANTILES];
    imagen_latency_summary summaries[IMAGEN_SUMMARY_COUNT];
    imagen_config_param *metric_tags; /* borrowed copy; owned by the snapshot */
    size_t n_metric_tags;
} imagen_model_stats;

/* Snapshots statistics. name NULL = every READY version of every model; a
 * name with version -1 = every READY version of that model. Errors as spec
 * §1.7: model without READY versions -> INVALID_ARG
 * "requested model '<m>' is not available". Free with
 * imagen_model_stats_free(). */
imagen_error *imagen_server_model_statistics(imagen_server *srv, const char *name, int64_t version,
                                             imagen_model_stats **stats, size_t *n);
void imagen_model_stats_free(imagen_model_stats *stats, size_t n);

/* Every model version the server holds, READY or not, for metrics (models
 * that were unloaded keep their counters until the server exits). Same
 * ownership as imagen_server_model_statistics(). */
imagen_error *imagen_server_metrics_snapshot(imagen_server *srv, imagen_model_stats **stats, size_t *n);

/* ======================================================================
 * Inference (src/core/request.c)
 * ==================================================================== */

/* Reference counting: imagen_request_new() returns a request holding one
 * reference that belongs to the caller (the frontend). While the request is
 * in flight the core holds its own. The frontend drops its reference with
 * imagen_request_release() when it no longer needs the request (typically in
 * or after the completion callback); input buffers must stay valid until the
 * completion callback has been called. */

typedef void (*imagen_response_cb)(imagen_response *response, void *user_data);

/* Creates a request for a READY model version (version -1 = latest READY).
 * Takes its own reference on the model. */
imagen_error *imagen_request_new(imagen_server *srv, const char *model, int64_t version, imagen_request **out);
void imagen_request_release(imagen_request *req);

/* The resolved model (borrowed while the request lives). */
const imagen_model *imagen_request_model(const imagen_request *req);

/* Setters; only before imagen_server_infer_async(). Strings are copied. */
imagen_error *imagen_request_set_id(imagen_request *req, const char *id);
void imagen_request_set_priority(imagen_request *req, uint64_t priority); /* 0 = model default */
void imagen_request_set_timeout_us(imagen_request *req, uint64_t timeout_us);

/* Adds an input. name and shape are copied; data is BORROWED (the one
 * zero-copy rule of the request path) and must stay valid until the
 * completion callback. Validates name, datatype, shape and byte size against
 * the model config and returns errors whose messages follow Triton's. */
imagen_error *imagen_request_add_input(imagen_request *req, const char *name, imagen_datatype datatype,
                                       const int64_t *shape, size_t rank, const void *data, size_t byte_size);

/* Requests an output by name (unknown names fail). With none requested, every
 * output of the config is returned. */
imagen_error *imagen_request_add_requested_output(imagen_request *req, const char *name);

/* Custom request parameters (spec §1.14); passed to backends. */
typedef enum { IMAGEN_PARAM_STRING, IMAGEN_PARAM_INT, IMAGEN_PARAM_BOOL, IMAGEN_PARAM_DOUBLE } imagen_param_type;
typedef struct imagen_request_param {
    char *key;
    imagen_param_type type;
    char *string_value;
    int64_t int_value;
    bool bool_value;
    double double_value;
} imagen_request_param;
imagen_error *imagen_request_add_parameter(imagen_request *req, const imagen_request_param *param);
size_t imagen_request_parameter_count(const imagen_request *req);
const imagen_request_param *imagen_request_parameter(const imagen_request *req, size_t i);

/* Submits the request. On success the callback is called exactly once, with
 * an owned response: on an instance thread, or, for a model whose backend
 * allows it (IMAGEN_BACKEND_EXECUTE_ANY_THREAD) and whose executions take
 * microseconds, on the calling thread before this function returns, when an
 * instance is idle and nothing is queued. Requests rejected during
 * submission never reach the callback: this returns an error instead. The
 * callback must not block (on network I/O, on another request, or on a lock
 * the caller holds around this call). Checks that every required input is present and batch
 * dims agree. */
imagen_error *imagen_server_infer_async(imagen_server *srv, imagen_request *req, imagen_response_cb cb,
                                        void *user_data);

/* Asks the core to drop the request if it is still queued; it then completes
 * with CANCELLED (counted as failure reason CANCELED). A request already
 * executing runs to completion. Safe from any thread while the caller holds
 * its reference. */
void imagen_request_cancel(imagen_request *req);

/* Response accessors; everything is borrowed from the response. */
const imagen_error *imagen_response_error(const imagen_response *resp); /* NULL on success */
const char *imagen_response_id(const imagen_response *resp);            /* "" when none */
const char *imagen_response_model_name(const imagen_response *resp);
int64_t imagen_response_model_version(const imagen_response *resp);
size_t imagen_response_output_count(const imagen_response *resp);
const imagen_tensor *imagen_response_output(const imagen_response *resp, size_t i);
void imagen_response_free(imagen_response *resp);

#ifdef __cplusplus
}
#endif
#endif /* IMAGEN_SERVER_H */
