/*
 * Internal structures of the server core, shared by the files of src/core/.
 * Nothing outside src/core includes this header; frontends and backends see
 * only include/imagen/server.h and include/imagen/backend.h.
 *
 * Object graph:
 *   imagen_server ─ model_entry (one per model name) ─ version_slot (one per
 *   version the server knows) ─ imagen_model (a loaded version: config,
 *   backend state, batcher, instance threads) ─ imagen_stats (per version,
 *   outlives reloads and unloads so metrics keep their counters).
 *
 * Lifetimes: an imagen_model is reference counted. The repository holds one
 * reference while the version is READY, every request holds one. When the
 * count reaches zero the model is handed to the server's reaper thread, which
 * shuts the batcher down, joins the instance threads and finalizes the
 * backend — never on an instance thread, which cannot join itself.
 */
#ifndef IMAGEN_CORE_CORE_H
#define IMAGEN_CORE_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/batcher.h"
#include "imagen/backend.h"
#include "imagen/server.h"

/* ---- statistics (stats.c) ------------------------------------------- */

typedef struct imagen_stats imagen_stats;

/* Creates counters for one model version; batch sizes up to max_batch get
 * their own row. Owned; ref-counted with imagen_stats_ref/unref. */
/* summaries: keep the quantiles of summary_quantiles (n of them, at most
 * IMAGEN_SUMMARY_MAX_QUANTILES) for nv_inference_*_summary_us. */
imagen_stats *imagen_stats_new(const char *name, int64_t version, size_t max_batch, bool histogram, bool summaries,
                               const double *summary_quantiles, size_t n_quantiles);
imagen_stats *imagen_stats_ref(imagen_stats *st);
void imagen_stats_unref(imagen_stats *st);
/* Re-sizes the batch table after a reload with a larger max_batch_size; the
 * old counters are kept. Thread-safe. */
void imagen_stats_ensure_batch_rows(imagen_stats *st, size_t max_batch);
void imagen_stats_set_metric_tags(imagen_stats *st, const imagen_config_param *tags, size_t n);
void imagen_stats_set_load_duration(imagen_stats *st, double secs);
/* One successful request: total = end-to-end ns, the others its phases. */
void imagen_stats_record_success(imagen_stats *st, uint64_t total_ns, uint64_t queue_ns, uint64_t input_ns,
                                 uint64_t infer_ns, uint64_t output_ns, uint64_t batch_size);
void imagen_stats_record_failure(imagen_stats *st, imagen_fail_reason reason, uint64_t total_ns);
/* One execution of a batch of `batch_size` items. */
void imagen_stats_record_execution(imagen_stats *st, uint64_t batch_size, uint64_t input_ns, uint64_t infer_ns,
                                   uint64_t output_ns);
void imagen_stats_pending_add(imagen_stats *st, int64_t delta);
/* Fills a snapshot (see imagen_model_stats); allocations owned by it. */
bool imagen_stats_snapshot(imagen_stats *st, imagen_model_stats *out);

/* ---- a loaded model version (model.c) ------------------------------- */

typedef struct imagen_instance imagen_instance;

/* What a backend sees of a model version while loading it. */
struct imagen_backend_model {
    const char *name;
    int64_t version; /* -1 during auto-complete */
    const char *model_dir;
    const char *version_dir;           /* NULL during auto-complete */
    const imagen_model_config *config; /* during auto-complete: before completion */
};

typedef struct output_labels {
    char *output;
    char **labels;
    size_t n;
} output_labels;

struct imagen_model {
    atomic_long refs;
    imagen_server *server;
    char *name;
    int64_t version;
    char *model_dir;               /* <repo>/<model> */
    char *version_dir;             /* <repo>/<model>/<version> */
    imagen_model_config *config;   /* owned */
    const imagen_backend *backend; /* borrowed from the server's registry */
    void *backend_model_state;
    imagen_batcher *batcher;
    imagen_instance *instances;
    size_t n_instances;
    imagen_stats *stats; /* a reference */
    output_labels *labels;
    size_t n_labels;
    bool shape_check; /* requests must agree on non-batch dims */
    struct imagen_backend_model backend_view;
    atomic_bool stopping; /* set by destroy; passive instances exit */
    /* Inline execution (imagen__model_try_inline): allowed by the backend
     * (IMAGEN_BACKEND_EXECUTE_ANY_THREAD), and how long executions take. */
    bool inline_ok;
    _Atomic uint64_t exec_avg_ns;
    _Atomic uint64_t executions;
    pthread_mutex_t passive_lock;
    pthread_cond_t passive_cond;
    struct imagen_model *reap_next; /* reaper queue link */
};

/* Loads one version: backend model_init, instances (each on its own thread,
 * warmed up). Takes ownership of `config` (also on failure). On success
 * *out holds one reference (the caller's). */
imagen_error *imagen__model_load(imagen_server *srv, const char *name, int64_t version, const char *model_dir,
                                 imagen_model_config *config, const imagen_backend *backend, imagen_stats *stats,
                                 imagen_model **out);
imagen_model *imagen__model_ref(imagen_model *m);
/* Drops a reference; the last one queues the model on the reaper. */
void imagen__model_unref(imagen_model *m);
/* Tears a model down (reaper thread only): shutdown batcher, join, fini. */
void imagen__model_destroy(imagen_model *m);
/* Runs a submitted request at once on the calling thread, with an idle
 * instance's state, when the model allows it and that changes nothing but
 * the thread: its executions are short, nothing is queued, and the batcher
 * would have run it alone at once anyway (greedy, no ordering to keep, no
 * hold). Returns false, having done nothing, otherwise. The request is
 * complete (callback called) when it returns true. */
bool imagen__model_try_inline(imagen_model *m, imagen_request *req);

/* ---- requests (request.c) ------------------------------------------- */

/* Completes a request the core could not execute or that the backend ran:
 * records statistics, builds nothing more, calls the user callback, drops
 * the core's reference. `err` is owned (NULL = success with the response's
 * outputs). */
void imagen__request_finish(imagen_request *req, imagen_error *err, imagen_fail_reason reason);
/* Instance side of execution (instance loop in model.c). */
imagen_request *imagen__request_from_item(imagen_batch_item *item);
imagen_batch_item *imagen__request_item(imagen_request *req);
/* The bytes of all the request's inputs, and whether it was cancelled. */
size_t imagen__request_input_bytes(const imagen_request *req);
bool imagen__request_cancelled(const imagen_request *req);
void imagen__request_begin_execution(imagen_request *req, uint64_t start_ns);
/* After execute: finalises the response (drops outputs the client did not
 * ask for, fails requests the backend left untouched). Returns true when the
 * request succeeded. */
bool imagen__request_end_execution(imagen_request *req);
void imagen__request_set_phase_times(imagen_request *req, uint64_t input_ns, uint64_t infer_ns, uint64_t output_ns);
/* Delivery callback for imagen_batcher_complete (ctx unused). */
void imagen__request_deliver(imagen_batch_item *item, void *ctx);
/* batcher on_reject hook (ctx = model). */
void imagen__request_rejected(void *ctx, imagen_batch_item *item, imagen_error *err, imagen_fail_reason reason);
/* A request made by the core itself for warmup: inputs own their data. */
imagen_error *imagen__request_new_internal(imagen_model *m, imagen_request **out);
imagen_error *imagen__request_add_owned_input(imagen_request *req, const char *name, imagen_datatype dt,
                                              const int64_t *shape, size_t rank, void *data, size_t byte_size);
/* Validates a complete internal request (as infer_async does) and readies
 * its response, without queueing it. */
imagen_error *imagen__request_prepare_internal(imagen_request *req);
/* Error the backend set on a request after execute (borrowed) or NULL. */
const imagen_error *imagen__request_error(const imagen_request *req);

/* ---- server internals (server.c, repository.c) ---------------------- */

/* Backend by config name: built-in table first, then <backend_directory>. */
imagen_error *imagen__server_find_backend(imagen_server *srv, const char *name, const imagen_backend **out);
/* Counts a loaded model version; the reaper uncounts it after teardown, and
 * imagen_server_destroy() waits until none is left. */
void imagen__server_model_born(imagen_server *srv);
/* Queues a model whose last reference dropped for teardown. */
void imagen__server_reap(imagen_server *srv, imagen_model *m);
void imagen__server_inflight_add(imagen_server *srv, long delta);
const imagen_server_options *imagen__server_options(const imagen_server *srv);
size_t imagen__server_cpu_threads(const imagen_server *srv);
bool imagen__server_accepting(imagen_server *srv);
typedef struct imagen_repository imagen_repository;
imagen_repository *imagen__server_repository(imagen_server *srv);

/* Repository (repository.c). */
imagen_error *imagen__repository_create(imagen_server *srv, imagen_repository **out);
/* Initial loads per control mode. */
imagen_error *imagen__repository_start(imagen_repository *repo);
/* Stops the poll thread, unloads everything (drops the READY references). */
void imagen__repository_shutdown(imagen_repository *repo);
void imagen__repository_destroy(imagen_repository *repo);
bool imagen__repository_all_ready(imagen_repository *repo);

#endif /* IMAGEN_CORE_CORE_H */
