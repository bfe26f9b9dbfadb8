/*
 * imagen — the backend interface.
 *
 * A backend is a small vtable (struct imagen_backend). Built-in backends are
 * rows of a table in src/backends/registry.c; an external backend is a shared
 * object `<backend-directory>/<name>/libimagen_<name>.so` (or
 * `<backend-directory>/libimagen_<name>.so`) that exports one symbol,
 * IMAGEN_BACKEND_ENTRY_SYMBOL, returning its vtable. The server executable
 * exports the imagen_backend_* functions below for such objects to call.
 *
 * Threading contract:
 *   - model_init/model_fini run on a loader thread, once per model version.
 *   - instance_init/instance_fini/execute for one instance always run on that
 *     instance's own thread; execute is never concurrent for one instance but
 *     is for different instances of the same model. A backend that sets
 *     IMAGEN_BACKEND_EXECUTE_ANY_THREAD (version 2) lets execute run on other
 *     threads too, still never concurrently for one instance.
 *   - fini functions must join any thread the backend started.
 *
 * ABI rule: methods are only ever appended; abi_version says how many exist.
 * A NULL optional method means "nothing to do".
 */
#ifndef IMAGEN_BACKEND_H
#define IMAGEN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"
#include "imagen/model_config.h"
#include "imagen/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IMAGEN_BACKEND_ABI_VERSION 2
#define IMAGEN_BACKEND_ENTRY_SYMBOL "imagen_backend_entry"

typedef struct imagen_backend_model imagen_backend_model; /* core's view of a loading model version */
typedef struct imagen_request imagen_request;

typedef struct imagen_backend_instance_info {
    const char *name;          /* "<group>_<k>" */
    size_t index;              /* 0-based across the model's instances */
    imagen_instance_kind kind; /* CPU or GPU (never AUTO) */
    int device_id;             /* GPU id, or 0 */
    int cpu_threads;           /* threads this instance may use (>= 1) */
} imagen_backend_instance_info;

typedef struct imagen_backend {
    uint32_t abi_version; /* IMAGEN_BACKEND_ABI_VERSION the backend was built for */
    const char *name;     /* config `backend` value this serves, e.g. "imageops" */

    /* Optional. Called before validation when auto-complete is allowed: may
     * add inputs, outputs, max_batch_size and dynamic_batching to `msg`. */
    imagen_error *(*model_auto_complete)(imagen_backend_model *model, imagen_config_msg *msg);

    /* Required. Reads the config and model files; *model_state is the
     * backend's own (may stay NULL). An error fails the load. */
    imagen_error *(*model_init)(imagen_backend_model *model, void **model_state);
    /* Optional. */
    void (*model_fini)(void *model_state);

    /* Optional. Per-instance state; runs on the instance thread. */
    imagen_error *(*instance_init)(imagen_backend_model *model, void *model_state,
                                   const imagen_backend_instance_info *info, void **instance_state);
    void (*instance_fini)(void *instance_state);

    /* Required. Executes a batch of n >= 1 requests that agree on every
     * non-batch dimension (unless allow_ragged_batch). For each request the
     * backend either allocates and fills its outputs with
     * imagen_backend_output_alloc(), or fails it with
     * imagen_backend_request_fail(); requests left untouched fail INTERNAL.
     * The request array is borrowed for the call only. */
    void (*execute)(void *model_state, void *instance_state, imagen_request **requests, size_t n);
    /* ---- version 1 ends here ---- */

    /* IMAGEN_BACKEND_* flags below; 0 for none. */
    uint32_t flags;
    /* ---- version 2 ends here ---- */
} imagen_backend;

/* execute() needs no particular thread: only that calls for one instance
 * never overlap. The core may then run a request of a model whose
 * executions take microseconds on the thread that received it, while an
 * instance is idle and nothing is queued, instead of waking the instance's
 * thread: the hand-off costs more than such a model's execution. */
#define IMAGEN_BACKEND_EXECUTE_ANY_THREAD 1u

typedef const imagen_backend *(*imagen_backend_entry_fn)(void);

/* ---- model, during model_init / instance_init (src/core/backend_api.c) ---- */
const char *imagen_backend_model_name(const imagen_backend_model *model);
int64_t imagen_backend_model_version(const imagen_backend_model *model);
/* The model directory (<repo>/<model>) and version directory; borrowed. */
const char *imagen_backend_model_directory(const imagen_backend_model *model);
const char *imagen_backend_model_version_directory(const imagen_backend_model *model);
/* The validated config; inside model_auto_complete, the config as read
 * before completion (parameters are there). Borrowed. */
const imagen_model_config *imagen_backend_model_config(const imagen_backend_model *model);
/* Config parameter string_value, or NULL; borrowed. */
const char *imagen_backend_model_parameter(const imagen_backend_model *model, const char *key);

/* ---- requests, during execute (src/core/request.c) ---- */
size_t imagen_backend_request_input_count(const imagen_request *req);
/* Borrowed; valid during execute. The shape includes the batch dim when
 * max_batch_size > 0. */
const imagen_tensor *imagen_backend_request_input(const imagen_request *req, size_t i);
const imagen_tensor *imagen_backend_request_input_by_name(const imagen_request *req, const char *name);
/* Batch size of the request (first dim; 1 for non-batching models). */
uint64_t imagen_backend_request_batch_size(const imagen_request *req);
/* True if the client wants this output. */
bool imagen_backend_request_output_requested(const imagen_request *req, const char *name);

/* Allocates an output of the request's response and returns its buffer in
 * *buffer (owned by the response, zeroed, byte_size bytes). The name must be
 * a config output; outputs not requested are accepted and dropped. */
imagen_error *imagen_backend_output_alloc(imagen_request *req, const char *name, imagen_datatype datatype,
                                          const int64_t *shape, size_t rank, size_t byte_size, void **buffer);

/* Fails the request with `err` (ownership taken); its outputs are dropped. */
void imagen_backend_request_fail(imagen_request *req, imagen_error *err);

#ifdef __cplusplus
}
#endif
#endif /* IMAGEN_BACKEND_H */
