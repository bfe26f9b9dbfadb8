/*
 * Internals of the client library: the transport vtable that client_http.c
 * and client_grpc.c fill in, the request encoded ahead of sending (so
 * infer_async() can return before the request leaves) and helpers shared by
 * both transports. Not a public header.
 */
#ifndef IMAGEN_CLIENT_INTERNAL_H
#define IMAGEN_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "imagen/client.h"

/* Who to tell, once, that a request's input bytes are no longer read
 * (imagen_client_infer_with_inputs_done). fn is cleared when it fires. */
typedef struct imagen__inputs_done {
    imagen_inputs_done_cb fn; /* NULL: nobody, or already told */
    void *arg;
} imagen__inputs_done;

/* Calls d->fn once (later calls do nothing). Accepts NULL. */
void imagen__inputs_done_fire(imagen__inputs_done *d);

/* A stretch of an encoded request: bytes of enc->body at `offset` when
 * data is NULL, else `len` bytes at data, borrowed from the caller's input
 * tensor (no copy). */
typedef struct imagen__piece {
    const uint8_t *data;
    size_t offset;
    size_t len;
} imagen__piece;

/* An infer request in wire form, owned by whoever holds it; made by
 * transport->encode() on the caller's thread, consumed by ->send().
 *
 * A gRPC request whose inputs are large is not packed whole: body holds
 * everything but the big raw_input_contents, and `pieces` lists the wire
 * bytes in order, the big ones borrowed from the caller's tensors. Such an
 * encoding is valid only while the caller keeps its inputs, i.e. during a
 * synchronous infer; imagen__encoded_detach() turns it into one owned body
 * (what infer_async() needs). */
typedef struct imagen__encoded {
    char *path;            /* HTTP: request path; gRPC: unused */
    char *body;            /* HTTP: JSON header + blobs; gRPC: packed ModelInferRequest, or its owned pieces */
    size_t body_len;       /* bytes of body in use */
    size_t header_len;     /* HTTP: Inference-Header-Content-Length */
    bool shm_outputs;      /* some outputs go to shared memory (no bytes back) */
    imagen__piece *pieces; /* NULL: body is the whole request */
    size_t n_pieces;
    size_t wire_len; /* with pieces: their total, the request's size */
    /* Fired by ->send() once the borrowed pieces are on their way and no
     * longer read (NULL: nobody to tell). Set by client.c; borrowed. */
    imagen__inputs_done *inputs_done;
} imagen__encoded;

void imagen__encoded_free(imagen__encoded *enc);
/* Copies the borrowed pieces into one owned body (pieces NULL after); does
 * nothing when there are none. False on allocation failure, enc unchanged. */
bool imagen__encoded_detach(imagen__encoded *enc);

/* Which admin document a call wants (imagen__client_transport.get_json). */
typedef enum {
    IMAGEN__DOC_SERVER_METADATA,
    IMAGEN__DOC_MODEL_METADATA,
    IMAGEN__DOC_MODEL_CONFIG,
    IMAGEN__DOC_STATISTICS,
    IMAGEN__DOC_REPOSITORY_INDEX,
    IMAGEN__DOC_REPOSITORY_INDEX_READY
} imagen__doc;

typedef enum { IMAGEN__HEALTH_LIVE, IMAGEN__HEALTH_READY, IMAGEN__HEALTH_MODEL } imagen__health;

typedef enum { IMAGEN__SHM_REGISTER, IMAGEN__SHM_UNREGISTER, IMAGEN__SHM_STATUS } imagen__shm_op;

typedef struct imagen__client_transport {
    const char *name;
    imagen_error *(*open)(imagen_client *c);
    void (*close)(imagen_client *c);
    imagen_error *(*health)(imagen_client *c, imagen__health what, const char *model, const char *version, bool *ok);
    imagen_error *(*get_json)(imagen_client *c, imagen__doc doc, const char *model, const char *version, char **json);
    imagen_error *(*repository)(imagen_client *c, bool load, const char *model);
    imagen_error *(*encode)(imagen_client *c, const imagen_infer_request *req, imagen__encoded **out);
    /* Sends an encoded request; `own_connection` asks for a connection of
     * this call only (async calls must not take turns on the shared one). */
    imagen_error *(*send)(imagen_client *c, const imagen__encoded *enc, bool own_connection, imagen_infer_result **out);
    /* System shared memory: register (name, key, offset, byte_size),
     * unregister (name; "" = all) or status (name; "" = all; *json gets
     * the HTTP-shaped array). */
    imagen_error *(*shm)(imagen_client *c, imagen__shm_op op, const char *name, const char *key, size_t offset,
                         size_t byte_size, char **json);
} imagen__client_transport;

extern const imagen__client_transport imagen__client_http;
extern const imagen__client_transport imagen__client_grpc;

struct imagen_client {
    const imagen__client_transport *t;
    char *url;                  /* as given, for messages */
    char *target;               /* host:port */
    _Atomic int64_t timeout_ms; /* 0 = none */
    void *impl;                 /* transport state */
    pthread_mutex_t async_mu;   /* guards async_pending */
    pthread_cond_t async_done;  /* signalled when async_pending drops */
    size_t async_pending;       /* async infers whose callback has not returned */
};

/* Result under construction. The transports fill `tensors` (names and shape
 * storage below) and hand over whatever owns the tensor bytes. */
struct imagen_infer_result {
    char *model_name;
    char *model_version;
    char *id;
    imagen_tensor *tensors;
    size_t n_tensors;
    char **names;
    int64_t *shapes; /* n_tensors * IMAGEN_MAX_RANK */
    void *owner;     /* holds the bytes tensors point into */
    void (*owner_free)(void *owner);
};

/* Allocates a result with room for n tensors; NULL on allocation failure. */
imagen_infer_result *imagen__result_new(size_t n);
/* Sets tensor i; copies name and shape. False on allocation failure or a
 * rank above IMAGEN_MAX_RANK. */
bool imagen__result_set(imagen_infer_result *r, size_t i, const char *name, size_t name_len, imagen_datatype dt,
                        const int64_t *shape, size_t rank, const void *data, size_t byte_size);

/* Message prefix that marks "could not reach the server" errors. */
#define IMAGEN__CONNECT_PREFIX "cannot connect to "

/* Maps an HTTP status / gRPC status back to the spec §0 code. */
imagen_error_code imagen__code_from_http(long status);
imagen_error_code imagen__code_from_grpc(int status);

/* Renders a protobuf-c message as JSON (proto field names, 64-bit ints as
 * numbers, enums by name, maps as objects). Owned string or NULL. Defined
 * in pb_json.c; `msg` is a const ProtobufCMessage *. */
char *imagen__pb_to_json(const void *msg, const char *only_field);

#endif
