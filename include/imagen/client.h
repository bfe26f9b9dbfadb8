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
 * gRPC calls run in parallel, each on a pooled HTTP/2 connection of its
 * own. Each asynchronous infer runs on its own thread (with its own HTTP
 * connection).
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

/* ---- system shared memory (spec §1.13) ----------------------------------- */

/* A POSIX shared-memory object made and mapped by this process, for a
 * server on the same machine to read inputs from and write outputs to
 * without copying them through a socket. The region owns the object: it is
 * created with a unique key ("/imagen_<pid>_<n>_<random>") and destroying
 * the region unmaps and unlinks it. The server maps an object when it is
 * registered, so the name may be unlinked early (imagen_shm_region_unlink)
 * once registered: the memory then lives while either side maps it and
 * nothing is left in /dev/shm even if this process dies.
 *
 * Thread-safety: create/destroy/unlink are not safe on the same region
 * concurrently with other calls on it; the memory itself is plain memory
 * (callers synchronize their own reads and writes). */
typedef struct imagen_shm_region imagen_shm_region;

/* Where a tensor lives in a region registered with the server under
 * `region` (its registration name, not its key). */
typedef struct imagen_shm_ref {
    const char *region; /* NULL = this tensor is not in shared memory */
    size_t offset;      /* from the start of the registered range */
    size_t byte_size;   /* bytes of the tensor (inputs) or room for it (outputs) */
} imagen_shm_ref;

/* Creates, sizes (zero-filled) and maps a new object of byte_size > 0
 * bytes. On success *out is owned by the caller (imagen_shm_region_destroy). */
imagen_error *imagen_shm_region_create(size_t byte_size, imagen_shm_region **out);
/* Unmaps the region and unlinks its key (if not unlinked yet). Does not
 * unregister it from any server. Accepts NULL. */
void imagen_shm_region_destroy(imagen_shm_region *region);
/* Removes the key from /dev/shm now; the mapping stays valid. Idempotent. */
void imagen_shm_region_unlink(imagen_shm_region *region);
/* Hands the memory of [offset, offset + byte_size) back to the system: the
 * whole pages inside the range (a page it only partly covers is kept) read
 * as zeros afterwards, for this process and for a server that maps the
 * region, and take memory again only when written. For a region whose
 * tensors are large and used once: its pages need not stay resident
 * between jobs. The caller makes sure nobody (the server included) still
 * needs the bytes. Returns false when the system refused (the bytes are
 * then unchanged); a range outside the region is clipped to it. */
bool imagen_shm_region_release(imagen_shm_region *region, size_t offset, size_t byte_size);
/* The mapping (page-aligned, writable), its size and the key to register.
 * Borrowed; valid until destroy. */
void *imagen_shm_region_data(const imagen_shm_region *region);
size_t imagen_shm_region_size(const imagen_shm_region *region);
const char *imagen_shm_region_key(const imagen_shm_region *region);

/* Registers [offset, offset + byte_size) of the object `key` with the
 * server under `name`. The server must run on this machine with
 * --allow-client-shm=true; otherwise it answers IMAGEN_ERR_UNSUPPORTED. */
imagen_error *imagen_client_shm_register(imagen_client *client, const char *name, const char *key, size_t offset,
                                         size_t byte_size);
/* Unregisters one region; name NULL or "" unregisters every system region. */
imagen_error *imagen_client_shm_unregister(imagen_client *client, const char *name);
/* The registered system regions as a JSON array of
 * {"name","key","offset","byte_size"}; name NULL or "" = all. */
imagen_error *imagen_client_shm_status(imagen_client *client, const char *name, char **json);

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
    /* Optional shared-memory placement (see "system shared memory" below).
     * NULL = none; otherwise one entry per input / per named output, and an
     * entry whose region is NULL keeps that tensor in the message. An input
     * in a region sends no bytes: its data and byte_size are ignored and
     * the server reads it from the region. An output in a region comes
     * back with its name, datatype and shape but no data (data NULL,
     * byte_size 0): the server wrote the bytes into the region. Region
     * outputs need named outputs (n_outputs > 0). */
    const struct imagen_shm_ref *input_shm;
    const struct imagen_shm_ref *output_shm;
} imagen_infer_request;

/* Runs one inference and waits for it. On success *result is owned by the
 * caller (imagen_infer_result_free()). Over gRPC, inputs of 64 KiB and more
 * are sent from the caller's memory, not copied into the request. */
imagen_error *imagen_client_infer(imagen_client *client, const imagen_infer_request *request,
                                  imagen_infer_result **result);

/* Says that the library no longer reads a request's input bytes. */
typedef void (*imagen_inputs_done_cb)(void *user_data);

/* imagen_client_infer() that also says when the inputs may go: inputs_done
 * (NULL = not wanted) is called exactly once, on the calling thread, before
 * this returns, whatever the outcome, as soon as the library no longer
 * reads the input bytes: over gRPC when the request has been written out
 * (before the server has answered), over HTTP once it has been copied into
 * the request. From then on the caller may free or reuse them, so that a
 * caller with large inputs does not hold them while a large response comes
 * back. Everything else as imagen_client_infer(). */
imagen_error *imagen_client_infer_with_inputs_done(imagen_client *client, const imagen_infer_request *request,
                                                   imagen_inputs_done_cb inputs_done, void *user_data,
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
