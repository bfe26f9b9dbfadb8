/*
 * gRPC transport of the client library (spec §2) on gRPC's C core. One
 * channel per client, shared by every call (a channel is thread-safe and
 * multiplexes calls over one HTTP/2 connection). Each unary call runs on a
 * completion queue of its own, so concurrent callers never see each other's
 * events. Messages are the protobuf-c code generated from proto/.
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <jansson.h>
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

/* Runs one unary call: sends `len` bytes of a packed request to `method`
 * and unpacks the response as `desc`. *resp is owned by the caller
 * (protobuf_c_message_free_unpacked). */
static imagen_error *
grpc_unary_raw(imagen_client *c, const char *method, const uint8_t *data, size_t len,
               const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp)
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
    /* The request bytes outlive the call (we wait for it), so no copy. */
    grpc_slice payload = grpc_slice_from_static_buffer(data, len);
    grpc_byte_buffer *send_bb = grpc_raw_byte_buffer_create(&payload, 1);
    grpc_byte_buffer *recv_bb = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;

    imagen_error *err = NULL;
    grpc_call_error ce = grpc_call_start_batch(call, ops, 6, (void *)1, NULL);
    if (ce != GRPC_CALL_OK) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC call to %s could not start (%d)", method, (int)ce);
    } else {
        /* The deadline is the call's: the batch always completes. */
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC call to %s: unexpected completion event", method);
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
    } else if (err == NULL) {
        if (recv_bb == NULL) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC %s: the server sent no response message", method);
        } else {
            grpc_byte_buffer_reader reader;
            grpc_byte_buffer_reader_init(&reader, recv_bb);
            grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
            grpc_byte_buffer_reader_destroy(&reader);
            *resp = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
            grpc_slice_unref(all);
            if (*resp == NULL)
                err = imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC %s: cannot parse the response", method);
        }
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

static imagen_error *
grpc_unary(imagen_client *c, const char *method, const void *req, const ProtobufCMessageDescriptor *desc,
           ProtobufCMessage **resp)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    protobuf_c_message_pack(req, buf);
    imagen_error *err = grpc_unary_raw(c, method, buf, len, desc, resp);
    free(buf);
    return err;
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
    enc->body_len = inference__model_infer_request__get_packed_size(&req);
    enc->body = malloc(enc->body_len ? enc->body_len : 1);
    if (enc->body == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %zu-byte request", enc->body_len);
        goto done;
    }
    inference__model_infer_request__pack(&req, (uint8_t *)enc->body);
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

static void
response_free(void *arg)
{
    protobuf_c_message_free_unpacked(arg, NULL);
}

static imagen_error *
grpc_send(imagen_client *c, const imagen__encoded *enc, bool own_connection, imagen_infer_result **out)
{
    ProtobufCMessage *msg = NULL;
    IMAGEN_RETURN_IF_ERROR(grpc_unary_raw(c, "ModelInfer", (const uint8_t *)enc->body, enc->body_len,
                                          &inference__model_infer_response__descriptor, &msg));
    Inference__ModelInferResponse *resp = (Inference__ModelInferResponse *)msg;
    imagen_infer_result *res = imagen__result_new(resp->n_outputs);
    if (res == NULL) {
        response_free(msg);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    res->owner = msg;
    res->owner_free = response_free;
    res->model_name = strdup(resp->model_name);
    res->model_version = strdup(resp->model_version);
    res->id = strdup(resp->id);
    imagen_error *err = NULL;
    for (size_t i = 0; i < resp->n_outputs && err == NULL; i++) {
        const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[i];
        imagen_datatype dt = imagen_datatype_from_name(o->datatype, strlen(o->datatype));
        /* Outputs travel in raw_output_contents, one per output in order
         * (§2.3); the typed `contents` form is not produced by the server. */
        if (i >= resp->n_raw_output_contents && enc->shm_outputs)
            /* Outputs written into shared memory carry no bytes (§2.3);
             * a server may leave their trailing raw entries out. */
            err = imagen__result_set(res, i, o->name, strlen(o->name), dt, o->shape, o->n_shape, NULL, 0)
                      ? NULL
                      : imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s': rank above %d or out of memory", o->name,
                                         IMAGEN_MAX_RANK);
        else if (i >= resp->n_raw_output_contents)
            err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "output '%s' came without raw_output_contents", o->name);
        else if (dt == IMAGEN_TYPE_INVALID)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s' has unknown datatype '%s'", o->name, o->datatype);
        else if (!imagen__result_set(res, i, o->name, strlen(o->name), dt, o->shape, o->n_shape,
                                     resp->raw_output_contents[i].data, resp->raw_output_contents[i].len))
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
