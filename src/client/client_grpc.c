/*
 * gRPC transport of the client library (spec §2). The wire is
 * h2_channel.c: HTTP/2 connections of its own, one per concurrent caller,
 * each call driven on the caller's thread. Messages are the protobuf-c code
 * generated from proto/.
 *
 * ModelInfer moves images of tens of megabytes, so it copies as little as
 * it can: a synchronous infer sends large inputs from the caller's memory
 * (the request is packed around them), and the response's raw outputs are
 * used where they arrived: the received message is the result's memory.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"
#include "client/h2_channel.h"
#include "grpc_service.pb-c.h"

#define GRPC_METHOD_PREFIX "/inference.GRPCInferenceService/"

static imagen_error *
grpc_open(imagen_client *c)
{
    imagen__h2_channel *ch = NULL;
    IMAGEN_RETURN_IF_ERROR(imagen__h2_channel_new(c->target, c->url, &ch));
    c->impl = ch;
    return NULL;
}

static void
grpc_close(imagen_client *c)
{
    imagen__h2_channel_free(c->impl);
}

/* Runs one unary call of `method` with the request made of the n_msg
 * chunks, and returns the response message in *resp (malloc'd, *resp_len
 * bytes). The chunks are not copied here: their bytes must stay valid until
 * the call returns, or until `sent` fires (NULL = nobody), which it does
 * once the request is on its way, before the response comes, and at the
 * latest when this returns. */
static imagen_error *
grpc_call_raw(imagen_client *c, const char *method, const imagen__h2_chunk *msg, size_t n_msg,
              imagen__inputs_done *sent, uint8_t **resp, size_t *resp_len)
{
    /* The calls whose second run is not like the first: a repeated load
     * reloads, and a repeated register fails as already registered. The
     * rest only read, or infer. */
    static const char *const changes_state[] = {"RepositoryModelLoad", "RepositoryModelUnload",
                                                "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister"};
    bool idempotent = true;
    for (size_t i = 0; i < sizeof(changes_state) / sizeof(changes_state[0]); i++)
        idempotent = idempotent && strcmp(method, changes_state[i]) != 0;
    char path[128];
    snprintf(path, sizeof(path), GRPC_METHOD_PREFIX "%s", method);
    return imagen__h2_channel_unary(c->impl, path, msg, n_msg, idempotent, atomic_load(&c->timeout_ms), sent, resp,
                                    resp_len);
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
    imagen__h2_chunk payload = {buf, len};
    uint8_t *body = NULL;
    size_t body_len = 0;
    imagen_error *err = grpc_call_raw(c, method, &payload, 1, NULL, &body, &body_len);
    free(buf);
    if (err != NULL)
        return err;
    *resp = protobuf_c_message_unpack(desc, NULL, body_len, body);
    free(body);
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

/* A response as the result holds it: the received message, which the raw
 * outputs point into, and the rest of it unpacked. */
typedef struct infer_response {
    uint8_t *message; /* as received; owned */
    ProtobufCMessage *msg;
    const uint8_t **raw; /* n_raw outputs, inside message */
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
    free(r->message);
    free(r->raw);
    free(r->raw_len);
    free(r);
}

/* Reads a received message front to back. */
typedef struct wire {
    const uint8_t *p;
    size_t left; /* bytes not read yet */
} wire;

/* Copies the next len bytes to dst (NULL: skips them). False, nothing
 * read, when fewer are left. */
static bool
wire_read(wire *w, uint8_t *dst, size_t len)
{
    if (len > w->left)
        return false;
    if (dst != NULL)
        memcpy(dst, w->p, len);
    w->p += len;
    w->left -= len;
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

/* Unpacks a ModelInferResponse without copying its raw outputs, which are
 * nearly all of it: they stay where they arrived, in `message`, and only
 * the rest (names, shapes, parameters) is gathered and unpacked by
 * protobuf-c, which would otherwise copy every raw output. Takes `message`
 * (*out owns it: infer_response_free), and frees it on an error. */
static imagen_error *
infer_response_parse(uint8_t *message, size_t len, infer_response **out)
{
    wire w = {message, len};
    infer_response *r = calloc(1, sizeof(*r));
    bytes rest = {NULL, 0, 0};
    size_t raw_cap = 0;
    const char *why = NULL;
    if (r == NULL) {
        free(message);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    r->message = message;
    while (why == NULL && w.left > 0) {
        uint64_t key, n;
        if (!wire_varint(&w, &key)) {
            why = "truncated field key";
            break;
        }
        if ((key >> 3) != RAW_OUTPUT_CONTENTS_FIELD || (key & 7) != 2) {
            if (!bytes_varint(&rest, key) || !copy_field(&w, (unsigned)(key & 7), &rest))
                why = "malformed or truncated field";
            continue;
        }
        if (!wire_varint(&w, &n) || n > w.left) {
            why = "raw_output_contents longer than the message";
            break;
        }
        if (r->n_raw == raw_cap) {
            size_t ncap = raw_cap ? 2 * raw_cap : 4;
            const uint8_t **nr = realloc(r->raw, ncap * sizeof(*nr));
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
        r->raw[r->n_raw] = w.p;
        r->raw_len[r->n_raw++] = (size_t)n;
        wire_read(&w, NULL, (size_t)n);
    }
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
    (void)own_connection; /* every call has a connection to itself (h2_channel.h) */
    /* One chunk per piece: the bytes (enc's, or the caller's inputs during
     * this synchronous call) outlive the call. */
    imagen__h2_chunk one = {(const uint8_t *)enc->body, enc->body_len}, *payload = &one;
    size_t n_payload = 1;
    if (enc->pieces != NULL) {
        payload = calloc(enc->n_pieces, sizeof(*payload));
        if (payload == NULL) {
            imagen__inputs_done_fire(enc->inputs_done);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        }
        for (size_t i = 0; i < enc->n_pieces; i++) {
            const imagen__piece *pc = &enc->pieces[i];
            payload[i].data = pc->data != NULL ? pc->data : (const uint8_t *)enc->body + pc->offset;
            payload[i].len = pc->len;
        }
        n_payload = enc->n_pieces;
    }
    uint8_t *message = NULL;
    size_t message_len = 0;
    imagen_error *err = grpc_call_raw(c, "ModelInfer", payload, n_payload, enc->inputs_done, &message, &message_len);
    if (payload != &one)
        free(payload);
    IMAGEN_RETURN_IF_ERROR(err);
    infer_response *parsed = NULL;
    IMAGEN_RETURN_IF_ERROR(infer_response_parse(message, message_len, &parsed));
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
