/*
 * Internals shared by the files of the gRPC frontend: the per-call object,
 * its reference counting, and the reply helpers every handler ends with.
 * Not part of any public API.
 */
#ifndef IMAGEN_GRPC_INTERNAL_H
#define IMAGEN_GRPC_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "grpc/grpc_frontend.h"
#include "imagen/server.h"

/* What a completion-queue event is about; every tag starts with one. */
typedef enum {
    IMAGEN_GRPC_TAG_NEW_CALL = 0, /* a requested call arrived (or the request failed) */
    IMAGEN_GRPC_TAG_SEND = 1,     /* the reply batch finished */
    IMAGEN_GRPC_TAG_CLOSE = 2,    /* RECV_CLOSE_ON_SERVER: the call is over for the client */
    IMAGEN_GRPC_TAG_SHUTDOWN = 3, /* grpc_server_shutdown_and_notify completed */
    IMAGEN_GRPC_TAG_OP = 4        /* a handler's own batch (streaming): calls tag->done */
} imagen__grpc_tag_kind;

typedef struct imagen__grpc_call imagen__grpc_call;

typedef struct imagen__grpc_tag {
    imagen__grpc_tag_kind kind;
    imagen__grpc_call *call; /* NULL for the shutdown tag */
    /* IMAGEN_GRPC_TAG_OP only: run on a completion-queue thread with the
     * batch's success flag; it owns (and must drop) the reference the
     * handler took for the batch. */
    void (*done)(imagen__grpc_call *c, bool ok);
} imagen__grpc_tag;

/* A handler owns the reply path of `c`: it must end, now or later and on
 * any thread, with exactly one imagen__grpc_reply*() call. */
typedef void (*imagen__grpc_handler_fn)(imagen__grpc_call *c);

typedef struct imagen__grpc_method {
    const char *path;           /* "/inference.GRPCInferenceService/ModelInfer" */
    imagen__grpc_handler_fn fn; /* NULL: answer UNIMPLEMENTED */
    bool streaming;             /* no initial payload is read */
    int slots;                  /* calls requested ahead per completion queue */
} imagen__grpc_method;

/* One accepted call. Two references while it is open: the reply path
 * (dropped when the send batch completes) and the RECV_CLOSE_ON_SERVER
 * batch (dropped when the client side is over); a streaming handler adds
 * its own (imagen__grpc_call_ref). Freed at zero. */
struct imagen__grpc_call {
    imagen__grpc_tag new_tag, send_tag, close_tag;
    imagen_grpc *grpc;
    size_t method_index;       /* into the method table; SIZE_MAX = unregistered */
    grpc_completion_queue *cq; /* bound to the call and its notifications */
    grpc_call *call;           /* NULL until the call arrived */
    gpr_timespec deadline;     /* registered calls */
    grpc_call_details details; /* unregistered calls */
    grpc_metadata_array request_md;
    grpc_byte_buffer *payload; /* request message; NULL after it was read */
    atomic_int refs;
    int cancelled;           /* set by RECV_CLOSE_ON_SERVER */
    grpc_byte_buffer *reply; /* owned until the send batch completes */
    grpc_slice status_details;
    atomic_bool replied;  /* guards the one-reply rule */
    bool initial_md_sent; /* a streaming handler sent it already; the reply skips it */
    void *state;          /* handler's state, freed by state_free */
    void (*state_free)(void *state);
    /* The handler's hook for cancellation (deadline expired or client gone);
     * called on a completion-queue thread while the call is referenced. */
    void (*on_cancel)(imagen__grpc_call *c);
    /* Long-lived calls (streams) only, see imagen__grpc_track: called once
     * when the frontend quiesces, on the quiescing thread, while the call is
     * referenced. The handler should stop reading and end the call once its
     * work is done, so that shutdown does not wait for the client. */
    void (*on_quiesce)(imagen__grpc_call *c);
    imagen__grpc_call *tracked_prev, *tracked_next; /* in the frontend's list; guarded by its lock */
    bool tracked;
};

/* ---- grpc_server.c ---- */

imagen_server *imagen__grpc_server(const imagen__grpc_call *c);
/* The shared-memory registry (borrowed); NULL when client shm is disabled. */
imagen_shm *imagen__grpc_shm(const imagen__grpc_call *c);

/* Extra references for a handler's own batches and pending work
 * (streaming); the call is freed when the last one is dropped. Any thread. */
void imagen__grpc_call_ref(imagen__grpc_call *c);
void imagen__grpc_call_unref(imagen__grpc_call *c);

/* Puts a call with an on_quiesce hook on the list quiesce walks (it leaves
 * it when freed). Returns false, tracking nothing, when the frontend is
 * already quiescing: the handler should then act as if told so. */
bool imagen__grpc_track(imagen__grpc_call *c);

/* Reads and unpacks the request message. Returns owned (free with
 * protobuf_c_message_free_unpacked) or an INVALID_ARG error. */
imagen_error *imagen__grpc_unpack(imagen__grpc_call *c, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out);
/* The same for a message received on a stream; *bb is consumed (set NULL). */
imagen_error *imagen__grpc_unpack_buffer(grpc_byte_buffer **bb, const ProtobufCMessageDescriptor *desc,
                                         ProtobufCMessage **out);

/* Reply with a message (serialized here; the message stays the caller's),
 * with already-serialized bytes (taken: freed with free()), or with an
 * error (consumed; mapped to a gRPC status through error.h's table). Any
 * thread; each call gets exactly one reply. */
void imagen__grpc_reply_msg(imagen__grpc_call *c, const ProtobufCMessage *msg);
void imagen__grpc_reply_bytes(imagen__grpc_call *c, void *data, size_t len);
void imagen__grpc_reply_error(imagen__grpc_call *c, imagen_error *err);
/* Ends a call with only a status: OK when err is NULL, else as
 * imagen__grpc_reply_error (streaming handlers, whose messages went out
 * one by one before). */
void imagen__grpc_reply_status(imagen__grpc_call *c, imagen_error *err);

/* Parses a request's model_version: "" = -1 (policy default). */
imagen_error *imagen__grpc_parse_version(const char *text, int64_t *out);

/* ---- grpc_admin.c: health, metadata, config, statistics, repository, logging ---- */
void imagen__grpc_server_live(imagen__grpc_call *c);
void imagen__grpc_server_ready(imagen__grpc_call *c);
void imagen__grpc_health_check(imagen__grpc_call *c);
void imagen__grpc_server_metadata(imagen__grpc_call *c);
void imagen__grpc_model_ready(imagen__grpc_call *c);
void imagen__grpc_model_metadata(imagen__grpc_call *c);
void imagen__grpc_model_config(imagen__grpc_call *c);
void imagen__grpc_model_statistics(imagen__grpc_call *c);
void imagen__grpc_repository_index(imagen__grpc_call *c);
void imagen__grpc_repository_load(imagen__grpc_call *c);
void imagen__grpc_repository_unload(imagen__grpc_call *c);
void imagen__grpc_log_settings(imagen__grpc_call *c);
void imagen__grpc_shm_status(imagen__grpc_call *c);
void imagen__grpc_shm_register(imagen__grpc_call *c);
void imagen__grpc_shm_unregister(imagen__grpc_call *c);

/* ---- grpc_infer.c: ModelInfer, and request decoding / response encoding
 * shared with ModelStreamInfer ---- */
void imagen__grpc_model_infer(imagen__grpc_call *c);

/* One decoded ModelInferRequest with everything its imagen_request borrows
 * (the unpacked message, converted contents, shared-memory mappings). */
typedef struct imagen__grpc_infer imagen__grpc_infer;

/* shm: the registry (borrowed; NULL = client shared memory disabled).
 * Returns NULL when out of memory. */
imagen__grpc_infer *imagen__grpc_infer_new(imagen_shm *shm);
/* Releases the request, then what its inputs point into. Accepts NULL. */
void imagen__grpc_infer_free(imagen__grpc_infer *inf);
/* Unpacks *bb (consumed) and builds the request: model, version, id,
 * parameters, inputs (shm, contents, raw) and requested outputs. */
imagen_error *imagen__grpc_infer_decode(imagen__grpc_infer *inf, imagen_server *srv, grpc_byte_buffer **bb);
/* The request built by decode (owned by inf; NULL before). */
imagen_request *imagen__grpc_infer_request(const imagen__grpc_infer *inf);
/* Encodes a successful response as a ModelInferResponse, or (stream) as a
 * ModelStreamInferResponse whose infer_response carries the parameter
 * triton_final_response = true. *out is owned (free()). Copies outputs
 * bound to shared memory into their regions. */
imagen_error *imagen__grpc_infer_encode(const imagen__grpc_infer *inf, const imagen_response *resp, bool stream,
                                        uint8_t **out, size_t *len);
/* Encodes an in-band ModelStreamInferResponse{error_message} whose
 * infer_response echoes the request id (inf may be NULL: no id) and, when resp is not NULL (the
 * model ran or rejected it), the model name and version. *out is owned. */
imagen_error *imagen__grpc_infer_encode_error(const imagen__grpc_infer *inf, const imagen_error *err,
                                              const imagen_response *resp, uint8_t **out, size_t *len);

/* ---- grpc_stream.c ---- */
void imagen__grpc_model_stream_infer(imagen__grpc_call *c);

#endif /* IMAGEN_GRPC_INTERNAL_H */
