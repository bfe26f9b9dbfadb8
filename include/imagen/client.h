/*
 * imagen — C client library for imagen-server (and any Triton server).
 *
 * One API over both protocols; the URL picks the transport:
 *   http://host:port   KServe v2 REST, tensors in the binary extension (spec §1.10)
 *   grpc://host:port   inference.GRPCInferenceService (spec §2)
 * A URL without a scheme is taken as gRPC ("localhost:8001").
 *
 * Conventions (the same as the rest of imagen, see error.h):
 * - Functions that can fail return an owned `imagen_error *`; NULL is success.
 *   Errors from the server carry its code (HTTP status or gRPC status mapped
 *   back to the spec §0 codes) and its message unchanged. A server that cannot
 *   be reached gives IMAGEN_ERR_UNAVAILABLE and imagen_client_error_is_connect()
 *   returns true for it.
 * - Out-parameters are written only on success. Strings returned through
 *   `char **` are owned by the caller and freed with free().
 * - JSON strings have the HTTP shapes of spec §1 whatever the protocol:
 *   over gRPC the response message is rendered with proto field names,
 *   64-bit integers as numbers and enums by name.
 *
 * Thread-safety: a client may be used from several threads at once. HTTP
 * calls on one client share one keep-alive connection and take turns on it;
 * gRPC calls share one channel and run in parallel. Each asynchronous infer
 * runs on its own thread (with its own HTTP connection).
 */
#ifndef IMAGEN_CLIENT_H
#define IMAGEN_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"
#include "imagen/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IMAGEN_CLIENT_DEFAULT_URL "grpc://localhost:8001"

typedef struct imagen_client imagen_client;
typedef struct imagen_infer_result imagen_infer_result;

/* ---- client lifetime ----------------------------------------------------- */

/* Creates a client for `url` (NULL = IMAGEN_CLIENT_DEFAULT_URL). Does not
 * connect: the first call does, and later calls reuse the connection.
 * On success *out is owned by the caller (imagen_client_destroy()). */
imagen_error *imagen_client_create(const char *url, imagen_client **out);

/* Waits for the client's asynchronous infers to finish (their callbacks have
 * returned), then closes the connection and frees the client. Accepts NULL.
 * Must not be called from a callback of this client nor concurrently with
 * another call on it. */
void imagen_client_destroy(imagen_client *client);

/* Per-call timeout in milliseconds for every later call; 0 (the default)
 * means none. A call that runs out fails with IMAGEN_ERR_UNAVAILABLE.
 * Thread-safe; calls already started keep their timeout. */
void imagen_client_set_timeout_ms(imagen_client *client, int64_t timeout_ms);

/* "http" or "grpc". Static string. */
const char *imagen_client_protocol(const imagen_client *client);

/* True when `err` says the server could not be reached at all (refused,
 * unresolvable, no route), as opposed to an error the server returned. */
bool imagen_client_error_is_connect(const imagen_error *err);

/* ---- health, metadata, configuration, statistics ------------------------- */

/* Liveness / readiness (spec §1.3). A server that answers "no" is not an
 * error: *live / *ready is set to false. */
imagen_error *imagen_client_server_live(imagen_client *client, bool *live);
imagen_error *imagen_client_server_ready(imagen_client *client, bool *ready);

/* Readiness of one model; version NULL or "" lets the server choose. */
imagen_error *imagen_client_model_ready(imagen_client *client, const char *model, const char *version, bool *ready);

/* JSON documents (caller frees *json):
 * server metadata  {"name","version","extensions":[...]}        (§1.4)
 * model metadata   {"name","versions","platform","inputs","outputs"} (§1.5)
 * model config     the ModelConfig object                        (§1.6)
 * statistics       {"model_stats":[...]}; model NULL = all models (§1.7) */
imagen_error *imagen_client_server_metadata(imagen_client *client, char **json);
imagen_error *imagen_client_model_metadata(imagen_client *client, const char *model, const char *version, char **json);
imagen_error *imagen_client_model_config(imagen_client *client, const char *model, const char *version, char **json);
imagen_error *imagen_client_model_statistics(imagen_client *client, const char *model, const char *version,
                                             char **json);

/* ---- model repository (spec §1.8) ----------------------------------------- */

/* The repository index as a JSON array of {"name","version","state","reason"}
 * (absent members omitted); ready_only keeps READY versions only. */
imagen_error *imagen_client_repository_index(imagen_client *client, bool ready_only, char **json);

/* Loads (or reloads) / unloads a model; returns when the server has done so.
 * The server must run with --model-control-mode=explicit. */
imagen_error *imagen_client_load_model(imagen_client *client, const char *model);
imagen_error *imagen_client_unload_model(imagen_client *client, const char *model);

/* ---- inference ------------------------------------------------------------ */

/* What to run. Everything is borrowed, and only for the duration of the
 * call that takes it: infer_async() encodes the request before it returns,
 * so inputs may be freed as soon as it does. */
typedef struct imagen_infer_request {
    const char *model;
    const char *version;         /* NULL or "" = server's choice */
    const char *id;              /* NULL = no request id */
    const imagen_tensor *inputs; /* name, datatype, shape, data, byte_size */
    size_t n_inputs;
    const char *const *outputs; /* names; n_outputs 0 = every output */
    size_t n_outputs;
} imagen_infer_request;

/* Runs one inference and waits for it. On success *result is owned by the
 * caller (imagen_infer_result_free()). */
imagen_error *imagen_client_infer(imagen_client *client, const imagen_infer_request *request,
                                  imagen_infer_result **result);

/* Completion of an asynchronous infer: exactly one of result and err is
 * non-NULL, and the callback owns it. Runs on a thread of the library; it
 * may call the client (not destroy it). */
typedef void (*imagen_infer_cb)(imagen_infer_result *result, imagen_error *err, void *user_data);

/* Starts one inference and returns at once. If it returns an error the
 * callback is never called; otherwise it is called exactly once. */
imagen_error *imagen_client_infer_async(imagen_client *client, const imagen_infer_request *request, imagen_infer_cb cb,
                                        void *user_data);

/* Result accessors. Everything returned is borrowed from the result and
 * lives until imagen_infer_result_free(). Tensor data is contiguous,
 * little-endian, row-major, and may be unaligned (memcpy it before reading
 * elements wider than a byte). A result is read-only: reading it from
 * several threads is safe. */
size_t imagen_infer_result_output_count(const imagen_infer_result *result);
const imagen_tensor *imagen_infer_result_output(const imagen_infer_result *result, size_t index);
/* NULL when no output has that name. */
const imagen_tensor *imagen_infer_result_output_by_name(const imagen_infer_result *result, const char *name);
const char *imagen_infer_result_model_name(const imagen_infer_result *result);
const char *imagen_infer_result_model_version(const imagen_infer_result *result);
const char *imagen_infer_result_id(const imagen_infer_result *result); /* "" when none */
/* Accepts NULL. */
void imagen_infer_result_free(imagen_infer_result *result);

#ifdef __cplusplus
}
#endif
#endif /* IMAGEN_CLIENT_H */
