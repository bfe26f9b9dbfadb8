/*
 * gRPC transport of the client library (spec §2) on gRPC's C core. One
 * channel per client, shared by every call (a channel is thread-safe and
 * multiplexes calls over one HTTP/2 connection). Each unary call runs on a
 * completion queue of its own, so concurrent callers never see each other's
 * events. Messages are the protobuf-c code generated from proto/.
 *
 * ModelInfer moves images of tens of megabytes, so it copies as little as
 * it can: a synchronous infer sends large inputs from the caller's memory
 * (the request is packed around them), and the response's raw outputs are
 * copied once, straight from the received slices, each slice released as
 * it is read.
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <jansson.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"
#include "grpc_service.pb-c.h"

#define GRPC_METHOD_PREFIX "/inference.GRPCInferenceService/"

static imagen_error *
grpc_open(imagen_client *c)
{
    grpc_init();
    /* gRPC's default 4 MiB receive cap would refuse a 1024x1024x3 image
     * response; the server bounds what it sends. Its default reconnect
     * backoff (1 s growing to 120 s) would leave a worker idle for a long
     * while after a server restart: a refused connection is cheap to retry,
     * so retry after 100 ms and never wait more than 1 s between attempts.
     * GRPC_ARG_MIN_RECONNECT_BACKOFF_MS stays at its default: gRPC also uses
     * it as the shortest time a connection attempt is given, and a slow
     * server (or a far one) must get its 20 s to answer. */
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = -1},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, .value.integer = -1},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, .value.integer = 100},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, .value.integer = 1000},
    };
    grpc_channel_args chargs = {sizeof(args) / sizeof(args[0]), args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(c->target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (ch == NULL) {
        grpc_shutdown();
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "cannot create a gRPC channel to '%s'", c->target);
    }
    c->impl = ch;
    return NULL;
}

static void
grpc_close(imagen_client *c)
{
    grpc_channel_destroy(c->impl);
    grpc_shutdown();
}

/* Tags of a call's two batches. */
#define SEND_TAG ((void *)1)
#define RECV_TAG ((void *)2)

/* Runs one unary call: sends the request made of `n_payload` slices to
 * `method` and returns the response message in *resp_bb (owned:
 * grpc_byte_buffer_destroy). The slices are not copied: their bytes must
 * stay valid until the call returns, or until `sent` fires. `sent` (NULL =
 * nobody) fires once the request has been written out, before the
 * response comes; on paths where the request never leaves, the caller
 * fires it. */
static imagen_error *
grpc_call_raw(imagen_client *c, const char *method, grpc_slice *payload, size_t n_payload, imagen__inputs_done *sent,
              grpc_byte_buffer **resp_bb)
{
    grpc_channel *ch = c->impl;
    int64_t timeout = atomic_load(&c->timeout_ms);
    gpr_timespec deadline =
        timeout > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout, GPR_TIMESPAN))
                    : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    char path[128];
    snprintf(path, sizeof(path), GRPC_METHOD_PREFIX "%s", method);

    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    /* Copied, not static: gRPC may keep the method name (its header
     * compression table) after this call, and path is on this stack. */
    grpc_slice method_slice = grpc_slice_from_copied_string(path);
    grpc_call *call =
        grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method_slice, NULL, deadline, NULL);
    grpc_byte_buffer *send_bb = grpc_raw_byte_buffer_create(payload, n_payload);
    grpc_byte_buffer *recv_bb = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    /* Two batches rather than one: the sending one completes by itself
     * once the request is written out, which is when the caller's input
     * bytes may go, long before the response is in. */
    grpc_op send_ops[3], recv_ops[3];
    memset(send_ops, 0, sizeof(send_ops));
    memset(recv_ops, 0, sizeof(recv_ops));
    send_ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    send_ops[1].op = GRPC_OP_SEND_MESSAGE;
    send_ops[1].data.send_message.send_message = send_bb;
    send_ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    recv_ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    recv_ops[0].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    recv_ops[1].op = GRPC_OP_RECV_MESSAGE;
    recv_ops[1].data.recv_message.recv_message = &recv_bb;
    recv_ops[2].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    recv_ops[2].data.recv_status_on_client.trailing_metadata = &trailing_md;
    recv_ops[2].data.recv_status_on_client.status = &status;
    recv_ops[2].data.recv_status_on_client.status_details = &details;

    imagen_error *err = NULL;
    bool send_pending = false, recv_pending = false;
    grpc_call_error ce = grpc_call_start_batch(call, send_ops, 3, SEND_TAG, NULL);
    if (ce == GRPC_CALL_OK) {
        send_pending = true;
        ce = grpc_call_start_batch(call, recv_ops, 3, RECV_TAG, NULL);
        if (ce == GRPC_CALL_OK)
            recv_pending = true;
        else
            grpc_call_cancel(call, NULL); /* so that the send batch ends */
    }
    if (ce != GRPC_CALL_OK)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC call to %s could not start (%d)", method, (int)ce);
    /* The deadline is the call's: both batches always complete. */
    while (send_pending || recv_pending) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE) {
            if (err == NULL)
                err = imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC call to %s: unexpected completion event", method);
            break;
        }
        if (ev.tag == SEND_TAG) {
            send_pending = false;
            /* Written out, or failed: gRPC reads the request no more. */
            imagen__inputs_done_fire(sent);
        } else if (ev.tag == RECV_TAG) {
            recv_pending = false;
        }
    }
    if (err == NULL && status != GRPC_STATUS_OK) {
        char *msg = grpc_slice_to_c_string(details);
        if (status == GRPC_STATUS_UNAVAILABLE && grpc_channel_check_connectivity_state(ch, 0) != GRPC_CHANNEL_READY)
            err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, IMAGEN__CONNECT_PREFIX "%s: %s", c->url, msg);
        else if (status == GRPC_STATUS_DEADLINE_EXCEEDED)
            err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "request to %s timed out after %lld ms", c->url,
                                   (long long)timeout);
        else
            err = imagen_error_new(imagen__code_from_grpc(status), "%s", msg);
        gpr_free(msg);
    } else if (err == NULL && recv_bb == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC %s: the server sent no response message", method);
    }
    if (err == NULL) {
        *resp_bb = recv_bb;
        recv_bb = NULL;
    }

    grpc_byte_buffer_destroy(send_bb);
    if (recv_bb != NULL)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_call_unref(call);
    grpc_slice_unref(method_slice);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return err;
}

/* A unary call with small messages: packs `req`, and unpacks the response
 * as `desc` into *resp (owned: protobuf_c_message_free_unpacked). */
static imagen_error *
grpc_unary(imagen_client *c, const char *method, const void *req, const ProtobufCMessageDescriptor *desc,
           ProtobufCMessage **resp)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    protobuf_c_message_pack(req, buf);
    /* The request bytes outlive the call (we wait for it), so no copy. */
    grpc_slice payload = grpc_slice_from_static_buffer(buf, len);
    grpc_byte_buffer *bb = NULL;
    imagen_error *err = grpc_call_raw(c, method, &payload, 1, NULL, &bb);
    free(buf);
    if (err != NULL)
        return err;
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb)) {
        grpc_byte_buffer_destroy(bb);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC %s: cannot read the response", method);
    }
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(bb);
    *resp = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (*resp == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC %s: cannot parse the response", method);
    return NULL;
}

/* proto3 strings cannot be NULL when packed. */
static char *
str(const char *s)
{
    return (char *)(s != NULL ? s : "");
}

/* ---- admin calls ----------------------------------------------------------- */

static imagen_error *
grpc_health(imagen_client *c, imagen__health what, const char *model, const char *version, bool *ok)
{
    ProtobufCMessage *resp = NULL;
    imagen_error *err;
    if (what == IMAGEN__HEALTH_LIVE) {
        Inference__ServerLiveRequest req = INFERENCE__SERVER_LIVE_REQUEST__INIT;
        err = grpc_unary(c, "ServerLive", &req, &inference__server_live_response__descriptor, &resp);
        if (err == NULL)
            *ok = ((Inference__ServerLiveResponse *)resp)->live;
    } else if (what == IMAGEN__HEALTH_READY) {
        Inference__ServerReadyRequest req = INFERENCE__SERVER_READY_REQUEST__INIT;
        err = grpc_unary(c, "ServerReady", &req, &inference__server_ready_response__descriptor, &resp);
        if (err == NULL)
            *ok = ((Inference__ServerReadyResponse *)resp)->ready;
    } else {
        Inference__ModelReadyRequest req = INFERENCE__MODEL_READY_REQUEST__INIT;
        req.name = str(model);
        req.version = str(version);
        err = grpc_unary(c, "ModelReady", &req, &inference__model_ready_response__descriptor, &resp);
        if (err == NULL)
            *ok = ((Inference__ModelReadyResponse *)resp)->ready;
    }
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    return err;
}

static imagen_error *
grpc_get_json(imagen_client *c, imagen__doc doc, const char *model, const char *version, char **json)
{
    ProtobufCMessage *resp = NULL;
    imagen_error *err = NULL;
    const char *only = NULL; /* the field that holds the HTTP-shaped document */
    switch (doc) {
    case IMAGEN__DOC_SERVER_METADATA: {
        Inference__ServerMetadataRequest req = INFERENCE__SERVER_METADATA_REQUEST__INIT;
        err = grpc_unary(c, "ServerMetadata", &req, &inference__server_metadata_response__descriptor, &resp);
        break;
    }
    case IMAGEN__DOC_MODEL_METADATA: {
        Inference__ModelMetadataRequest req = INFERENCE__MODEL_METADATA_REQUEST__INIT;
        req.name = str(model);
        req.version = str(version);
        err = grpc_unary(c, "ModelMetadata", &req, &inference__model_metadata_response__descriptor, &resp);
        break;
    }
    case IMAGEN__DOC_MODEL_CONFIG: {
        Inference__ModelConfigRequest req = INFERENCE__MODEL_CONFIG_REQUEST__INIT;
        req.name = str(model);
        req.version = str(version);
        err = grpc_unary(c, "ModelConfig", &req, &inference__model_config_response__descriptor, &resp);
        only = "config";
        break;
    }
    case IMAGEN__DOC_STATISTICS: {
        Inference__ModelStatisticsRequest req = INFERENCE__MODEL_STATISTICS_REQUEST__INIT;
        req.name = str(model);
        req.version = str(version);
        err = grpc_unary(c, "ModelStatistics", &req, &inference__model_statistics_response__descriptor, &resp);
        break;
    }
    case IMAGEN__DOC_REPOSITORY_INDEX:
    case IMAGEN__DOC_REPOSITORY_INDEX_READY: {
        Inference__RepositoryIndexRequest req = INFERENCE__REPOSITORY_INDEX_REQUEST__INIT;
        req.ready = doc == IMAGEN__DOC_REPOSITORY_INDEX_READY;
        err = grpc_unary(c, "RepositoryIndex", &req, &inference__repository_index_response__descriptor, &resp);
        only = "models";
        break;
    }
    }
    if (err != NULL)
        return err;
    char *text = imagen__pb_to_json(resp, only);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (text == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot render the response as JSON");
    if (doc == IMAGEN__DOC_REPOSITORY_INDEX || doc == IMAGEN__DOC_REPOSITORY_INDEX_READY) {
        /* HTTP omits empty version/state/reason (§1.8); gRPC cannot tell
         * empty from absent, so drop the empty ones to match. */
        json_t *arr = json_loads(text, 0, NULL);
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e)
        {
            const char *keys[] = {"version", "state", "reason"};
            for (size_t k = 0; k < 3; k++) {
                const char *v = json_string_value(json_object_get(e, keys[k]));
                if (v != NULL && v[0] == '\0')
                    json_object_del(e, keys[k]);
            }
        }
        char *clean = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
        json_decref(arr);
        if (clean != NULL) {
            free(text);
            text = clean;
        }
    }
    *json = text;
    return NULL;
}

static imagen_error *
grpc_repository(imagen_client *c, bool load, const char *model)
{
    ProtobufCMessage *resp = NULL;
    imagen_error *err;
    if (load) {
        Inference__RepositoryModelLoadRequest req = INFERENCE__REPOSITORY_MODEL_LOAD_REQUEST__INIT;
        req.model_name = str(model);
        err = grpc_unary(c, "RepositoryModelLoad", &req, &inference__repository_model_load_response__descriptor, &resp);
    } else {
        Inference__RepositoryModelUnloadRequest req = INFERENCE__REPOSITORY_MODEL_UNLOAD_REQUEST__INIT;
        req.model_name = str(model);
        err = grpc_unary(c, "RepositoryModelUnload", &req, &inference__repository_model_unload_response__descriptor,
                         &resp);
    }
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    return err;
}

/* ---- infer ----------------------------------------------------------------- */

/* The §1.13 parameters of one tensor in shared memory, as the entries of
 * an input's or a requested output's parameter map (same fields, distinct
 * message types). */
typedef Inference__ModelInferRequest__InferInputTensor__ParametersEntry in_param_entry;
typedef Inference__ModelInferRequest__InferRequestedOutputTensor__ParametersEntry out_param_entry;
typedef struct shm_params {
    union {
        in_param_entry in[3];
        out_param_entry out[3];
    } entry;
    union {
        in_param_entry *in[3];
        out_param_entry *out[3];
    } entryp;
    Inference__InferParameter value[3];
} shm_params;

static void
shm_params_fill(shm_params *p, const imagen_shm_ref *ref, bool output)
{
    static const char *const keys[] = {"shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"};
    for (int k = 0; k < 3; k++) {
        inference__infer_parameter__init(&p->value[k]);
        if (output) {
            inference__model_infer_request__infer_requested_output_tensor__parameters_entry__init(&p->entry.out[k]);
            p->entry.out[k].key = (char *)keys[k];
            p->entry.out[k].value = &p->value[k];
            p->entryp.out[k] = &p->entry.out[k];
        } else {
            inference__model_infer_request__infer_input_tensor__parameters_entry__init(&p->entry.in[k]);
            p->entry.in[k].key = (char *)keys[k];
            p->entry.in[k].value = &p->value[k];
            p->entryp.in[k] = &p->entry.in[k];
        }
    }
    p->value[0].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
    p->value[0].string_param = (char *)ref->region;
    p->value[1].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    p->value[1].int64_param = (int64_t)ref->offset;
    p->value[2].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    p->value[2].int64_param = (int64_t)ref->byte_size;
}

/* Raw inputs of this size or more are sent from the caller's memory (a
 * slice of their own); a smaller one costs less copied into the request. */
#define BORROW_MIN_BYTES (64u << 10)

/* protobuf-c output that copies everything into enc->body except the
 * bytes of the raw inputs in `raw`, which become borrowed pieces.
 * protobuf-c hands a bytes field's data over as its own append of exactly
 * that pointer and length, which is how they are recognised. */
typedef struct piece_sink {
    ProtobufCBuffer base; /* first: protobuf-c passes &base */
    imagen__encoded *enc;
    const ProtobufCBinaryData *raw; /* the entries to borrow (len >= BORROW_MIN_BYTES) */
    size_t n_raw;
    size_t body_cap;   /* bytes allocated for enc->body */
    size_t pieces_cap; /* entries allocated for enc->pieces */
    bool overflow;     /* the plan did not hold: fall back to packing */
} piece_sink;

static void
piece_append(ProtobufCBuffer *buffer, size_t len, const uint8_t *data)
{
    piece_sink *ps = (piece_sink *)buffer;
    imagen__encoded *enc = ps->enc;
    if (ps->overflow || len == 0)
        return;
    bool borrow = false;
    for (size_t i = 0; i < ps->n_raw && !borrow; i++)
        borrow = data == ps->raw[i].data && len == ps->raw[i].len;
    imagen__piece *last = enc->n_pieces > 0 ? &enc->pieces[enc->n_pieces - 1] : NULL;
    bool new_piece = borrow || last == NULL || last->data != NULL;
    if ((new_piece && enc->n_pieces == ps->pieces_cap) || (!borrow && len > ps->body_cap - enc->body_len)) {
        ps->overflow = true;
        return;
    }
    if (borrow) {
        enc->pieces[enc->n_pieces++] = (imagen__piece){data, 0, len};
        return;
    }
    /* Owned bytes are appended in order, so consecutive ones are one piece. */
    memcpy(enc->body + enc->body_len, data, len);
    if (new_piece)
        enc->pieces[enc->n_pieces++] = (imagen__piece){NULL, enc->body_len, len};
    else
        last->len += len;
    enc->body_len += len;
}

/* Encodes `req` into enc as owned bytes plus borrowed pieces for the raw
 * inputs of BORROW_MIN_BYTES or more. False when there are none, or on
 * allocation failure: enc is then as it was, to be packed whole. */
static bool
encode_pieces(const Inference__ModelInferRequest *req, size_t total, imagen__encoded *enc)
{
    size_t n_big = 0, big_bytes = 0;
    for (size_t i = 0; i < req->n_raw_input_contents; i++)
        if (req->raw_input_contents[i].len >= BORROW_MIN_BYTES) {
            n_big++;
            big_bytes += req->raw_input_contents[i].len;
        }
    if (n_big == 0)
        return false;
    ProtobufCBinaryData *big = calloc(n_big, sizeof(*big));
    piece_sink ps = {.base = {piece_append}, .enc = enc, .raw = big, .n_raw = 0};
    ps.body_cap = total - big_bytes;
    ps.pieces_cap = 2 * n_big + 1; /* owned runs between and around the borrowed */
    enc->body = malloc(ps.body_cap ? ps.body_cap : 1);
    enc->pieces = calloc(ps.pieces_cap, sizeof(*enc->pieces));
    bool ok = big != NULL && enc->body != NULL && enc->pieces != NULL;
    if (ok) {
        for (size_t i = 0; i < req->n_raw_input_contents; i++)
            if (req->raw_input_contents[i].len >= BORROW_MIN_BYTES)
                big[ps.n_raw++] = req->raw_input_contents[i];
        inference__model_infer_request__pack_to_buffer(req, &ps.base);
        /* Every byte accounted for, or the plan was wrong somewhere. */
        ok = !ps.overflow && enc->body_len == ps.body_cap;
    }
    free(big);
    if (!ok) {
        free(enc->body);
        free(enc->pieces);
        enc->body = NULL;
        enc->pieces = NULL;
        enc->n_pieces = 0;
        enc->body_len = 0;
        return false;
    }
    enc->wire_len = total;
    return true;
}

static imagen_error *
grpc_encode(imagen_client *c, const imagen_infer_request *r, imagen__encoded **out)
{
    size_t ni = r->n_inputs, no = r->n_outputs;
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    Inference__ModelInferRequest__InferInputTensor *in = calloc(ni + 1, sizeof(*in));
    Inference__ModelInferRequest__InferInputTensor **inp = calloc(ni + 1, sizeof(*inp));
    Inference__ModelInferRequest__InferRequestedOutputTensor *outs = calloc(no + 1, sizeof(*outs));
    Inference__ModelInferRequest__InferRequestedOutputTensor **outp = calloc(no + 1, sizeof(*outp));
    ProtobufCBinaryData *raw = calloc(ni + 1, sizeof(*raw));
    /* Three parameters per tensor in shared memory (one block for all). */
    shm_params *sp = calloc(ni + no + 1, sizeof(*sp));
    imagen__encoded *enc = calloc(1, sizeof(*enc));
    imagen_error *err = NULL;
    size_t n_raw = 0;
    if (in == NULL || inp == NULL || outs == NULL || outp == NULL || raw == NULL || sp == NULL || enc == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        goto done;
    }
    req.model_name = str(r->model);
    req.model_version = str(r->version);
    req.id = str(r->id);
    for (size_t i = 0; i < ni; i++) {
        const imagen_tensor *t = &r->inputs[i];
        inference__model_infer_request__infer_input_tensor__init(&in[i]);
        in[i].name = str(t->name);
        in[i].datatype = (char *)imagen_datatype_name(t->datatype);
        in[i].n_shape = t->rank;
        in[i].shape = (int64_t *)t->shape;
        inp[i] = &in[i];
        if (r->input_shm != NULL && r->input_shm[i].region != NULL) {
            /* No raw entry: raw contents are positional over the inputs
             * that are neither shm nor contents-based (§2.3). */
            shm_params_fill(&sp[i], &r->input_shm[i], false);
            in[i].n_parameters = 3;
            in[i].parameters = sp[i].entryp.in;
            continue;
        }
        raw[n_raw].len = t->byte_size;
        raw[n_raw].data = (uint8_t *)t->data;
        n_raw++;
    }
    for (size_t i = 0; i < no; i++) {
        inference__model_infer_request__infer_requested_output_tensor__init(&outs[i]);
        outs[i].name = str(r->outputs[i]);
        outp[i] = &outs[i];
        if (r->output_shm != NULL && r->output_shm[i].region != NULL) {
            shm_params_fill(&sp[ni + i], &r->output_shm[i], true);
            outs[i].n_parameters = 3;
            outs[i].parameters = sp[ni + i].entryp.out;
            enc->shm_outputs = true;
        }
    }
    req.n_inputs = ni;
    req.inputs = inp;
    req.n_outputs = no;
    req.outputs = outp;
    req.n_raw_input_contents = n_raw;
    req.raw_input_contents = raw;
    size_t total = inference__model_infer_request__get_packed_size(&req);
    /* Large inputs are not copied into the request (the caller's image
     * would otherwise be held twice until the request is sent). */
    if (!encode_pieces(&req, total, enc)) {
        enc->body_len = enc->wire_len = total;
        enc->body = malloc(total ? total : 1);
        if (enc->body == NULL) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %zu-byte request", total);
            goto done;
        }
        inference__model_infer_request__pack(&req, (uint8_t *)enc->body);
    }
    *out = enc;
    enc = NULL;
done:
    imagen__encoded_free(enc);
    free(in);
    free(inp);
    free(outs);
    free(outp);
    free(raw);
    free(sp);
    return err;
}

/* ---- infer response -------------------------------------------------------- */

/* ModelInferResponse.raw_output_contents (spec §2.3). */
#define RAW_OUTPUT_CONTENTS_FIELD 6u

/* A response as the result holds it: the message without its raw outputs,
 * and each raw output in a buffer of its own. */
typedef struct infer_response {
    ProtobufCMessage *msg;
    uint8_t **raw; /* n_raw buffers, NULL for an empty one */
    size_t *raw_len;
    size_t n_raw;
} infer_response;

static void
infer_response_free(void *arg)
{
    infer_response *r = arg;
    if (r == NULL)
        return;
    if (r->msg != NULL)
        protobuf_c_message_free_unpacked(r->msg, NULL);
    for (size_t i = 0; i < r->n_raw; i++)
        free(r->raw[i]);
    free(r->raw);
    free(r->raw_len);
    free(r);
}

/* Reads a message that arrived in slices, front to back, releasing each
 * slice as soon as it has been read: the message's memory goes while the
 * outputs are copied out of it, rather than after. */
typedef struct wire {
    grpc_slice_buffer rest; /* slices not started yet */
    grpc_slice cur;         /* the slice being read */
    size_t off;             /* read of cur */
    size_t left;            /* bytes not read yet, cur's included */
    size_t total;           /* of the message */
    size_t untrimmed;       /* bytes released since the heap was last trimmed */
} wire;

/* Released slices are heap blocks of 64 KiB (gRPC reads the socket in
 * such blocks), below the worker's mmap threshold: glibc keeps them when
 * they are freed, except the ones at the very top of a heap, and a
 * response of 34 MiB would stay resident in full until the copy of its
 * outputs is done, and mostly after. Trimming every this many released
 * bytes hands them back while the copy is under way, so that a large
 * response costs its size about once, not twice. Smaller responses are
 * never trimmed for. */
#define TRIM_EVERY_BYTES (8u << 20)

static void
wire_trim(wire *w)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    w->untrimmed = 0;
}

/* Takes over a received message's slices (bb keeps none). False when the
 * message cannot be read (wire_destroy is still due). */
static bool
wire_init(wire *w, grpc_byte_buffer *bb)
{
    bool ok = true;
    grpc_slice_buffer_init(&w->rest);
    /* Received messages are raw and already inflated by gRPC; anything
     * else goes through the reader, which inflates into a copy. */
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE) {
        grpc_slice_buffer_swap(&w->rest, &bb->data.raw.slice_buffer);
    } else {
        grpc_byte_buffer_reader reader;
        ok = grpc_byte_buffer_reader_init(&reader, bb) != 0;
        if (ok) {
            grpc_slice_buffer_add(&w->rest, grpc_byte_buffer_reader_readall(&reader));
            grpc_byte_buffer_reader_destroy(&reader);
        }
    }
    w->cur = grpc_empty_slice();
    w->off = 0;
    w->untrimmed = 0;
    w->left = w->total = w->rest.length;
    return ok;
}

static void
wire_destroy(wire *w)
{
    grpc_slice_unref(w->cur);
    grpc_slice_buffer_destroy(&w->rest);
    /* The tail of a large message, since the last trim. */
    if (w->total >= TRIM_EVERY_BYTES)
        wire_trim(w);
}

/* Copies the next len bytes to dst (NULL: skips them). False, nothing
 * read, when fewer are left. */
static bool
wire_read(wire *w, uint8_t *dst, size_t len)
{
    if (len > w->left)
        return false;
    w->left -= len;
    while (len > 0) {
        size_t have = GRPC_SLICE_LENGTH(w->cur) - w->off;
        if (have == 0) {
            w->untrimmed += GRPC_SLICE_LENGTH(w->cur);
            grpc_slice_unref(w->cur);
            if (w->untrimmed >= TRIM_EVERY_BYTES)
                wire_trim(w);
            w->cur = grpc_slice_buffer_take_first(&w->rest);
            w->off = 0;
            continue;
        }
        size_t n = have < len ? have : len;
        if (dst != NULL) {
            memcpy(dst, GRPC_SLICE_START_PTR(w->cur) + w->off, n);
            dst += n;
        }
        w->off += n;
        len -= n;
    }
    return true;
}

static bool
wire_varint(wire *w, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        uint8_t b;
        if (!wire_read(w, &b, 1))
            return false;
        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* A growing byte buffer for the small fields. */
typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes;

/* Room for n more bytes; false on allocation failure. */
static bool
bytes_reserve(bytes *b, size_t n)
{
    if (n <= b->cap - b->len)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

static bool
bytes_varint(bytes *b, uint64_t v)
{
    if (!bytes_reserve(b, 10))
        return false;
    do {
        b->p[b->len++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v != 0);
    return true;
}

/* Copies one field's value (its key already read) from w to b. */
static bool
copy_field(wire *w, unsigned wire_type, bytes *b)
{
    uint64_t v;
    switch (wire_type) {
    case 0: /* varint */
        return wire_varint(w, &v) && bytes_varint(b, v);
    case 1: /* 64-bit */
    case 5: /* 32-bit */ {
        size_t n = wire_type == 1 ? 8 : 4;
        if (!bytes_reserve(b, n) || !wire_read(w, b->p + b->len, n))
            return false;
        b->len += n;
        return true;
    }
    case 2: /* length-delimited */
        if (!wire_varint(w, &v) || v > w->left || !bytes_varint(b, v) || !bytes_reserve(b, (size_t)v) ||
            !wire_read(w, b->p + b->len, (size_t)v))
            return false;
        b->len += (size_t)v;
        return true;
    default: /* groups: not in proto3 */
        return false;
    }
}

/* Unpacks a ModelInferResponse that arrived as `bb` without ever holding
 * it twice in full: the raw outputs, which are nearly all of it, are
 * copied straight from the received slices into a buffer each, each slice
 * released once copied, and only the rest (names, shapes, parameters) is
 * gathered and unpacked by protobuf-c, which would otherwise copy every
 * raw output again after the whole message had been made contiguous. The
 * message's slices are taken out of bb. *out is owned
 * (infer_response_free). */
static imagen_error *
infer_response_parse(grpc_byte_buffer *bb, infer_response **out)
{
    wire w;
    infer_response *r = calloc(1, sizeof(*r));
    bytes rest = {NULL, 0, 0};
    size_t raw_cap = 0;
    const char *why = !wire_init(&w, bb) ? "cannot read it" : r == NULL ? "out of memory" : NULL;
    while (why == NULL && w.left > 0) {
        uint64_t key, len;
        if (!wire_varint(&w, &key)) {
            why = "truncated field key";
            break;
        }
        if ((key >> 3) != RAW_OUTPUT_CONTENTS_FIELD || (key & 7) != 2) {
            if (!bytes_varint(&rest, key) || !copy_field(&w, (unsigned)(key & 7), &rest))
                why = "malformed or truncated field";
            continue;
        }
        if (!wire_varint(&w, &len) || len > w.left) {
            why = "raw_output_contents longer than the message";
            break;
        }
        if (r->n_raw == raw_cap) {
            size_t ncap = raw_cap ? 2 * raw_cap : 4;
            uint8_t **nr = realloc(r->raw, ncap * sizeof(*nr));
            if (nr != NULL)
                r->raw = nr;
            size_t *nl = nr != NULL ? realloc(r->raw_len, ncap * sizeof(*nl)) : NULL;
            if (nl == NULL) {
                why = "out of memory";
                break;
            }
            r->raw_len = nl;
            raw_cap = ncap;
        }
        uint8_t *buf = len > 0 ? malloc((size_t)len) : NULL;
        if (len > 0 && buf == NULL) {
            why = "out of memory for an output";
            break;
        }
        r->raw[r->n_raw] = buf;
        r->raw_len[r->n_raw++] = (size_t)len;
        wire_read(&w, buf, (size_t)len);
    }
    wire_destroy(&w);
    if (why == NULL) {
        r->msg = protobuf_c_message_unpack(&inference__model_infer_response__descriptor, NULL, rest.len,
                                           rest.p != NULL ? rest.p : (const uint8_t *)"");
        if (r->msg == NULL)
            why = "protobuf-c refused it";
    }
    free(rest.p);
    if (why != NULL) {
        infer_response_free(r);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC ModelInfer: cannot parse the response: %s", why);
    }
    *out = r;
    return NULL;
}

static imagen_error *
grpc_send(imagen_client *c, const imagen__encoded *enc, bool own_connection, imagen_infer_result **out)
{
    /* One slice per piece, all static: the bytes (enc's, or the caller's
     * inputs during this synchronous call) outlive the call. */
    grpc_slice one, *payload = &one;
    size_t n_payload = 1;
    if (enc->pieces != NULL) {
        payload = calloc(enc->n_pieces, sizeof(*payload));
        if (payload == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        for (size_t i = 0; i < enc->n_pieces; i++) {
            const imagen__piece *pc = &enc->pieces[i];
            const void *p = pc->data != NULL ? (const void *)pc->data : (const void *)(enc->body + pc->offset);
            payload[i] = grpc_slice_from_static_buffer(p, pc->len);
        }
        n_payload = enc->n_pieces;
    } else {
        one = grpc_slice_from_static_buffer(enc->body, enc->body_len);
    }
    grpc_byte_buffer *bb = NULL;
    imagen_error *err = grpc_call_raw(c, "ModelInfer", payload, n_payload, enc->inputs_done, &bb);
    if (payload != &one)
        free(payload);
    IMAGEN_RETURN_IF_ERROR(err);
    infer_response *parsed = NULL;
    err = infer_response_parse(bb, &parsed);
    /* The received message goes before the result is used: only the copied
     * outputs stay. */
    grpc_byte_buffer_destroy(bb);
    IMAGEN_RETURN_IF_ERROR(err);
    Inference__ModelInferResponse *resp = (Inference__ModelInferResponse *)parsed->msg;
    imagen_infer_result *res = imagen__result_new(resp->n_outputs);
    if (res == NULL) {
        infer_response_free(parsed);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    res->owner = parsed;
    res->owner_free = infer_response_free;
    res->model_name = strdup(resp->model_name);
    res->model_version = strdup(resp->model_version);
    res->id = strdup(resp->id);
    for (size_t i = 0; i < resp->n_outputs && err == NULL; i++) {
        const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[i];
        imagen_datatype dt = imagen_datatype_from_name(o->datatype, strlen(o->datatype));
        /* Outputs travel in raw_output_contents, one per output in order
         * (§2.3); the typed `contents` form is not produced by the server. */
        if (i >= parsed->n_raw && enc->shm_outputs)
            /* Outputs written into shared memory carry no bytes (§2.3);
             * a server may leave their trailing raw entries out. */
            err = imagen__result_set(res, i, o->name, strlen(o->name), dt, o->shape, o->n_shape, NULL, 0)
                      ? NULL
                      : imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s': rank above %d or out of memory", o->name,
                                         IMAGEN_MAX_RANK);
        else if (i >= parsed->n_raw)
            err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "output '%s' came without raw_output_contents", o->name);
        else if (dt == IMAGEN_TYPE_INVALID)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s' has unknown datatype '%s'", o->name, o->datatype);
        else if (!imagen__result_set(res, i, o->name, strlen(o->name), dt, o->shape, o->n_shape, parsed->raw[i],
                                     parsed->raw_len[i]))
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s': rank above %d or out of memory", o->name,
                                   IMAGEN_MAX_RANK);
    }
    if (err != NULL) {
        imagen_infer_result_free(res);
        return err;
    }
    *out = res;
    return NULL;
}

/* ---- system shared memory ------------------------------------------------- */

/* Status in the HTTP shape: the response's map of regions as an array. */
static char *
shm_status_json(const Inference__SystemSharedMemoryStatusResponse *resp)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < resp->n_regions; i++) {
        const Inference__SystemSharedMemoryStatusResponse__RegionStatus *st = resp->regions[i]->value;
        if (st == NULL)
            continue;
        json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I}", "name", str(st->name), "key", str(st->key),
                                             "offset", (json_int_t)st->offset, "byte_size", (json_int_t)st->byte_size));
    }
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    return text;
}

static imagen_error *
grpc_shm(imagen_client *c, imagen__shm_op op, const char *name, const char *key, size_t offset, size_t byte_size,
         char **json)
{
    ProtobufCMessage *resp = NULL;
    imagen_error *err;
    if (op == IMAGEN__SHM_REGISTER) {
        Inference__SystemSharedMemoryRegisterRequest req = INFERENCE__SYSTEM_SHARED_MEMORY_REGISTER_REQUEST__INIT;
        req.name = str(name);
        req.key = str(key);
        req.offset = offset;
        req.byte_size = byte_size;
        err = grpc_unary(c, "SystemSharedMemoryRegister", &req,
                         &inference__system_shared_memory_register_response__descriptor, &resp);
    } else if (op == IMAGEN__SHM_UNREGISTER) {
        Inference__SystemSharedMemoryUnregisterRequest req = INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_REQUEST__INIT;
        req.name = str(name);
        err = grpc_unary(c, "SystemSharedMemoryUnregister", &req,
                         &inference__system_shared_memory_unregister_response__descriptor, &resp);
    } else {
        Inference__SystemSharedMemoryStatusRequest req = INFERENCE__SYSTEM_SHARED_MEMORY_STATUS_REQUEST__INIT;
        req.name = str(name);
        err = grpc_unary(c, "SystemSharedMemoryStatus", &req,
                         &inference__system_shared_memory_status_response__descriptor, &resp);
        if (err == NULL) {
            *json = shm_status_json((Inference__SystemSharedMemoryStatusResponse *)resp);
            if (*json == NULL)
                err = imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot render the status as JSON");
        }
    }
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    return err;
}

const imagen__client_transport imagen__client_grpc = {
    "grpc", grpc_open, grpc_close, grpc_health, grpc_get_json, grpc_repository, grpc_encode, grpc_send, grpc_shm,
};
