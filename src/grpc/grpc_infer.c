/*
 * ModelInfer (spec §2.2-§2.3): decodes a ModelInferRequest into an
 * imagen_request, submits it asynchronously and, in the completion callback
 * (an instance thread), encodes the ModelInferResponse and starts the send.
 * The decoding and encoding (imagen__grpc_infer_*) are shared with
 * ModelStreamInfer (grpc_stream.c), which wraps responses in
 * ModelStreamInferResponse.
 * Tensors from raw_input_contents point straight into the received message:
 * its bytes are taken as one contiguous slice (the one slice gRPC received,
 * referenced, or one gather copy when it came in several), a wire scanner
 * (grpc_wire.c) finds the raw_input_contents fields in it, and protobuf-c
 * unpacks only the other fields, so the raw bytes are never copied. The
 * slice lives until the response is serialized and is released before the
 * send starts, so a response waiting for its client does not hold the
 * input as well. Typed `contents` are converted into owned buffers. Outputs always go in raw_output_contents,
 * index-aligned with `outputs`. A call cancelled by its client or its deadline cancels the request if it is still
 * queued. Inputs in a client's shared-memory region are read in place; outputs bound to a region are copied into it on
 * completion and get an empty raw_output_contents entry. An output
 * requested with the `classification` parameter comes back as BYTES top-K
 * strings, built by the same code as HTTP's (common/classify.c).
 */
#include "grpc/grpc_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "common/classify.h"
#include "common/copy_stats.h"
#include "grpc/grpc_wire.h"
#include "grpc_service.pb-c.h"

/* ModelInferRequest's field number of raw_input_contents (proto/grpc_service.proto). */
#define RAW_INPUT_CONTENTS_FIELD 7

typedef Inference__ModelInferRequest infer_msg;
typedef Inference__ModelInferRequest__InferInputTensor infer_input;

/* A requested output bound to a shared-memory region. */
typedef struct shm_output {
    const char *name; /* borrowed from msg */
    void *addr;       /* where the output's bytes go */
    uint64_t size;    /* bytes available at addr */
} shm_output;

/* Requests whose received message is at least this large release their
 * inputs as soon as they have executed (see on_complete). */
#define GRPC_EARLY_RELEASE_BYTES (64u << 10)

typedef struct imagen__grpc_infer {
    imagen_shm *shm; /* borrowed registry; NULL = client shm disabled */
    infer_msg *msg;  /* owned; unpacked without raw_input_contents */
    grpc_slice wire; /* the received message, contiguous; raw inputs point into it */
    bool has_wire;
    imagen__grpc_span *raw; /* owned: raw_input_contents entries, as ranges of wire */
    size_t n_raw;
    imagen_request *req; /* owned reference */
    void **owned;        /* buffers converted from typed contents */
    size_t n_owned;
    imagen_shm_ref **shm_refs; /* mappings inputs/outputs use; released after the request */
    size_t n_shm_refs;
    shm_output *shm_outs; /* one slot per requested output */
    size_t n_shm_outs;
    uint64_t *class_k; /* per msg->outputs entry: classification K, 0 = none; NULL when none asked */
} infer_state;

void
imagen__grpc_infer_free(imagen__grpc_infer *st)
{
    if (st == NULL)
        return;
    if (st->req != NULL)
        imagen_request_release(st->req);
    /* After the request: its inputs may point into these mappings. */
    for (size_t i = 0; i < st->n_shm_refs; i++)
        imagen_shm_release(st->shm_refs[i]);
    free(st->shm_refs);
    free(st->shm_outs);
    free(st->class_k);
    for (size_t i = 0; i < st->n_owned; i++)
        free(st->owned[i]);
    free(st->owned);
    if (st->msg != NULL)
        protobuf_c_message_free_unpacked(&st->msg->base, NULL);
    free(st->raw);
    if (st->has_wire)
        grpc_slice_unref(st->wire);
    free(st);
}

imagen__grpc_infer *
imagen__grpc_infer_new(imagen_shm *shm)
{
    imagen__grpc_infer *st = calloc(1, sizeof(*st));
    if (st != NULL)
        st->shm = shm;
    return st;
}

imagen_request *
imagen__grpc_infer_request(const imagen__grpc_infer *inf)
{
    return inf->req;
}

static void
state_free(void *p)
{
    imagen__grpc_infer_free(p);
}

static void
on_cancel(imagen__grpc_call *c)
{
    infer_state *st = c->state;
    if (st != NULL && st->req != NULL)
        imagen_request_cancel(st->req);
}

static imagen_error *
shm_disabled(void)
{
    return imagen_error_new(IMAGEN_ERR_UNSUPPORTED,
                            "Client shared memory is disabled. Start the server with '--allow-client-shm=true' "
                            "to enable.");
}

/* ======================================================================
 * Request decoding
 * ==================================================================== */

/* Inputs and requested outputs have distinct parameter-entry types; these
 * read entry i of either as (key, value). */
typedef const Inference__InferParameter *(*param_at_fn)(const void *params, size_t i, const char **key);

static const Inference__InferParameter *
input_param_at(const void *params, size_t i, const char **key)
{
    const Inference__ModelInferRequest__InferInputTensor__ParametersEntry *const *e = params;
    *key = e[i]->key;
    return e[i]->value;
}

static const Inference__InferParameter *
output_param_at(const void *params, size_t i, const char **key)
{
    const Inference__ModelInferRequest__InferRequestedOutputTensor__ParametersEntry *const *e = params;
    *key = e[i]->key;
    return e[i]->value;
}

/* Reads an unsigned shm parameter (int64_param >= 0 or uint64_param). */
static imagen_error *
shm_param_u64(const char *key, const Inference__InferParameter *v, const char *what, const char *name, uint64_t *out)
{
    if (v != NULL && v->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM &&
        v->int64_param >= 0) {
        *out = (uint64_t)v->int64_param;
        return NULL;
    }
    if (v != NULL && v->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM) {
        *out = v->uint64_param;
        return NULL;
    }
    return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s '%s': '%s' must be a non-negative int64_param", what, name,
                            key);
}

/* Looks at the shared_memory_* parameters of an input or requested output.
 * *addr stays NULL when there are none; otherwise it is resolved in the
 * registry and the call keeps the mapping referenced until it is freed. */
static imagen_error *
shm_resolve(infer_state *st, const void *params, param_at_fn param_at, size_t n_params, const char *what,
            const char *name, void **addr, uint64_t *size)
{
    const char *region = NULL;
    bool has_size = false;
    uint64_t offset = 0;
    *addr = NULL;
    *size = 0;
    bool any = false;
    for (size_t p = 0; p < n_params; p++) {
        const char *key = NULL;
        const Inference__InferParameter *v = param_at(params, p, &key);
        if (strncmp(key, "shared_memory_", 14) != 0)
            continue;
        any = true;
        if (st->shm == NULL)
            return shm_disabled();
        if (strcmp(key, "shared_memory_region") == 0) {
            if (v == NULL || v->parameter_choice_case != INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "%s '%s': 'shared_memory_region' must be a string_param", what, name);
            region = v->string_param;
        } else if (strcmp(key, "shared_memory_byte_size") == 0) {
            IMAGEN_RETURN_IF_ERROR(shm_param_u64(key, v, what, name, size));
            has_size = true;
        } else if (strcmp(key, "shared_memory_offset") == 0) {
            IMAGEN_RETURN_IF_ERROR(shm_param_u64(key, v, what, name, &offset));
        }
    }
    if (!any)
        return NULL;
    if (region == NULL || !has_size)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "%s '%s': shared memory needs both 'shared_memory_region' and "
                                "'shared_memory_byte_size'",
                                what, name);
    if (st->shm_refs == NULL) {
        st->shm_refs = calloc(IMAGEN_REQUEST_MAX_INPUTS + IMAGEN_REQUEST_MAX_OUTPUTS, sizeof(imagen_shm_ref *));
        if (st->shm_refs == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    IMAGEN_RETURN_IF_ERROR(imagen_shm_acquire(st->shm, region, offset, *size, addr, &st->shm_refs[st->n_shm_refs]));
    st->n_shm_refs++;
    return NULL;
}

static const char *
param_kind_name(int which)
{
    static const char *const names[] = {"unset",        "bool_param",   "int64_param",
                                        "string_param", "double_param", "uint64_param"};
    return which >= 0 && which <= 5 ? names[which] : "unknown";
}

static imagen_error *
parse_request_parameters(infer_state *st)
{
    for (size_t i = 0; i < st->msg->n_parameters; i++) {
        const char *key = st->msg->parameters[i]->key;
        const Inference__InferParameter *v = st->msg->parameters[i]->value;
        int which = v ? (int)v->parameter_choice_case : 0;
        enum { B = 1, I = 2, S = 3, D = 4, U = 5 };
        if (strcmp(key, "priority") == 0) {
            if (which == I && v->int64_param >= 0)
                imagen_request_set_priority(st->req, (uint64_t)v->int64_param);
            else if (which == U)
                imagen_request_set_priority(st->req, v->uint64_param);
            else
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "invalid value type for 'priority' parameter, expected a non-negative "
                                        "int64_param or uint64_param");
        } else if (strcmp(key, "timeout") == 0) {
            if (which != I || v->int64_param < 0)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "invalid value type for 'timeout' parameter, expected a non-negative "
                                        "int64_param");
            imagen_request_set_timeout_us(st->req, (uint64_t)v->int64_param);
        } else if (strcmp(key, "sequence_id") == 0) {
            if (which != I && which != S)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "invalid value type for 'sequence_id' parameter, expected int64_param or "
                                        "string_param");
        } else if (strcmp(key, "sequence_start") == 0 || strcmp(key, "sequence_end") == 0) {
            if (which != B)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "invalid value type for '%s' parameter, expected bool_param", key);
        } else if (strcmp(key, "triton_enable_empty_final_response") == 0) {
            if (which != B)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "invalid value type for '%s' parameter, expected bool_param", key);
        } else if (strncmp(key, "triton_", 7) == 0) {
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "parameter keys starting with 'triton_' are reserved for Triton usage and "
                                    "should not be specified.");
        } else {
            imagen_request_param p;
            memset(&p, 0, sizeof(p));
            p.key = (char *)key;
            switch (which) {
            case B:
                p.type = IMAGEN_PARAM_BOOL;
                p.bool_value = v->bool_param;
                break;
            case I:
                p.type = IMAGEN_PARAM_INT;
                p.int_value = v->int64_param;
                break;
            case S:
                p.type = IMAGEN_PARAM_STRING;
                p.string_value = v->string_param;
                break;
            case D:
                p.type = IMAGEN_PARAM_DOUBLE;
                p.double_value = v->double_param;
                break;
            default:
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "parameter '%s' has invalid type (%s). It should be either 'int64_param', "
                                        "'bool_param', 'double_param' or 'string_param'.",
                                        key, param_kind_name(which));
            }
            IMAGEN_RETURN_IF_ERROR(imagen_request_add_parameter(st->req, &p));
        }
    }
    return NULL;
}

static imagen_error *
own(infer_state *st, void *p)
{
    void **grown = realloc(st->owned, (st->n_owned + 1) * sizeof(void *));
    if (grown == NULL) {
        free(p);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    st->owned = grown;
    st->owned[st->n_owned++] = p;
    return NULL;
}

/* Narrows or copies `n` typed values into a new little-endian buffer of
 * element size `es` (the host is little-endian, as everywhere in imagen). */
#define CONVERT(dst_type, src, n)              \
    do {                                       \
        dst_type *d__ = (dst_type *)buf;       \
        for (size_t k__ = 0; k__ < (n); k__++) \
            d__[k__] = (dst_type)(src)[k__];   \
    } while (0)

/* Converts typed `contents` of one input into an owned buffer. */
static imagen_error *
convert_contents(infer_state *st, const infer_input *in, imagen_datatype dt, uint64_t elems, const void **data,
                 size_t *size)
{
    const Inference__InferTensorContents *tc = in->contents;
    const char *model = st->msg->model_name;
    size_t count = 0;
    switch (dt) {
    case IMAGEN_TYPE_BOOL:
        count = tc->n_bool_contents;
        break;
    case IMAGEN_TYPE_INT8:
    case IMAGEN_TYPE_INT16:
    case IMAGEN_TYPE_INT32:
        count = tc->n_int_contents;
        break;
    case IMAGEN_TYPE_INT64:
        count = tc->n_int64_contents;
        break;
    case IMAGEN_TYPE_UINT8:
    case IMAGEN_TYPE_UINT16:
    case IMAGEN_TYPE_UINT32:
        count = tc->n_uint_contents;
        break;
    case IMAGEN_TYPE_UINT64:
        count = tc->n_uint64_contents;
        break;
    case IMAGEN_TYPE_FP32:
        count = tc->n_fp32_contents;
        break;
    case IMAGEN_TYPE_FP64:
        count = tc->n_fp64_contents;
        break;
    case IMAGEN_TYPE_BYTES:
        count = tc->n_bytes_contents;
        break;
    default:
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "unable to use 'contents' for input '%s' of model '%s': datatype %s is only "
                                "accepted in raw_input_contents",
                                in->name, model, imagen_datatype_name(dt));
    }
    if (count != elems)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "unexpected number of elements in 'contents' of input '%s' for model '%s': expected "
                                "%" PRIu64 " (from the shape), got %zu",
                                in->name, model, elems, count);
    size_t bytes;
    if (dt == IMAGEN_TYPE_BYTES) {
        bytes = 0;
        for (size_t i = 0; i < count; i++) {
            if (tc->bytes_contents[i].len > UINT32_MAX)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "element %zu of input '%s' is longer than 4 GiB", i,
                                        in->name);
            bytes += 4 + tc->bytes_contents[i].len;
        }
    } else {
        bytes = count * imagen_datatype_size(dt);
    }
    unsigned char *buf = malloc(bytes ? bytes : 1);
    if (buf == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    switch (dt) {
    case IMAGEN_TYPE_BOOL:
        for (size_t k = 0; k < count; k++)
            buf[k] = tc->bool_contents[k] ? 1 : 0;
        break;
    case IMAGEN_TYPE_INT8:
        CONVERT(int8_t, tc->int_contents, count);
        break;
    case IMAGEN_TYPE_INT16:
        CONVERT(int16_t, tc->int_contents, count);
        break;
    case IMAGEN_TYPE_INT32:
        CONVERT(int32_t, tc->int_contents, count);
        break;
    case IMAGEN_TYPE_INT64:
        CONVERT(int64_t, tc->int64_contents, count);
        break;
    case IMAGEN_TYPE_UINT8:
        CONVERT(uint8_t, tc->uint_contents, count);
        break;
    case IMAGEN_TYPE_UINT16:
        CONVERT(uint16_t, tc->uint_contents, count);
        break;
    case IMAGEN_TYPE_UINT32:
        CONVERT(uint32_t, tc->uint_contents, count);
        break;
    case IMAGEN_TYPE_UINT64:
        CONVERT(uint64_t, tc->uint64_contents, count);
        break;
    case IMAGEN_TYPE_FP32:
        CONVERT(float, tc->fp32_contents, count);
        break;
    case IMAGEN_TYPE_FP64:
        CONVERT(double, tc->fp64_contents, count);
        break;
    case IMAGEN_TYPE_BYTES: {
        size_t off = 0;
        for (size_t i = 0; i < count; i++) {
            uint32_t n = (uint32_t)tc->bytes_contents[i].len;
            buf[off] = (unsigned char)n;
            buf[off + 1] = (unsigned char)(n >> 8);
            buf[off + 2] = (unsigned char)(n >> 16);
            buf[off + 3] = (unsigned char)(n >> 24);
            if (n)
                memcpy(buf + off + 4, tc->bytes_contents[i].data, n);
            off += 4 + n;
        }
        break;
    }
    default:
        break;
    }
    IMAGEN_RETURN_IF_ERROR(own(st, buf));
    imagen_copy_stats_add(IMAGEN_COPY_GRPC, IMAGEN_COPY_INPUT, bytes);
    *data = buf;
    *size = bytes;
    return NULL;
}

static imagen_error *
parse_inputs(infer_state *st)
{
    const infer_msg *msg = st->msg;
    const char *model = msg->model_name;
    if (msg->n_inputs > IMAGEN_REQUEST_MAX_INPUTS)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "too many inputs (at most %d)", IMAGEN_REQUEST_MAX_INPUTS);
    size_t raw_next = 0;
    for (size_t i = 0; i < msg->n_inputs; i++) {
        const infer_input *in = msg->inputs[i];
        if (in->contents != NULL && st->n_raw > 0)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "contents field must not be specified when using raw_input_contents for '%s' "
                                    "for model '%s'",
                                    in->name, model);
        void *shm_addr = NULL;
        uint64_t shm_size = 0;
        IMAGEN_RETURN_IF_ERROR(
            shm_resolve(st, in->parameters, input_param_at, in->n_parameters, "input", in->name, &shm_addr, &shm_size));
        if (shm_addr != NULL && in->contents != NULL)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "contents field must not be specified when using shared memory for '%s' for "
                                    "model '%s'",
                                    in->name, model);
        imagen_datatype dt = imagen_datatype_from_name(in->datatype, strlen(in->datatype));
        if (dt == IMAGEN_TYPE_INVALID)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "invalid datatype '%.64s' for input '%s' of model '%s'",
                                    in->datatype, in->name, model);
        if (in->n_shape > IMAGEN_MAX_RANK)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input '%s' has %zu dimensions, more than the limit of %d",
                                    in->name, in->n_shape, IMAGEN_MAX_RANK);
        for (size_t d = 0; d < in->n_shape; d++)
            if (in->shape[d] < 0)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "input '%s' of model '%s' has a negative dimension %" PRId64, in->name, model,
                                        in->shape[d]);
        uint64_t elems = 0;
        if (!imagen_shape_element_count(in->shape, in->n_shape, IMAGEN_REQUEST_MAX_ELEMENTS, &elems))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "input '%s' has a shape whose element count exceeds the limit of %" PRIu64,
                                    in->name, (uint64_t)IMAGEN_REQUEST_MAX_ELEMENTS);
        const void *data = NULL;
        size_t size = 0;
        if (shm_addr != NULL) {
            /* Zero copy: the request reads the client's region in place. */
            data = shm_addr;
            size = (size_t)shm_size;
        } else if (in->contents != NULL) {
            IMAGEN_RETURN_IF_ERROR(convert_contents(st, in, dt, elems, &data, &size));
        } else if (raw_next < st->n_raw) {
            /* Zero copy: the core borrows the bytes of the received message. */
            data = GRPC_SLICE_START_PTR(st->wire) + st->raw[raw_next].offset;
            size = st->raw[raw_next].len;
            raw_next++;
        } else {
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unable to find data for input tensor '%s' for model '%s'",
                                    in->name, model);
        }
        IMAGEN_RETURN_IF_ERROR(
            imagen_request_add_input(st->req, in->name, dt, in->shape, in->n_shape, size ? data : NULL, size));
    }
    if (raw_next < st->n_raw)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "expected %zu raw_input_contents entries (one per input) for model '%s' but got %zu",
                                raw_next, model, st->n_raw);
    return NULL;
}

static imagen_error *
parse_outputs(infer_state *st)
{
    const infer_msg *msg = st->msg;
    if (msg->n_outputs > IMAGEN_REQUEST_MAX_OUTPUTS)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "too many requested outputs (at most %d)",
                                IMAGEN_REQUEST_MAX_OUTPUTS);
    for (size_t i = 0; i < msg->n_outputs; i++) {
        const Inference__ModelInferRequest__InferRequestedOutputTensor *o = msg->outputs[i];
        void *shm_addr = NULL;
        uint64_t shm_size = 0;
        IMAGEN_RETURN_IF_ERROR(
            shm_resolve(st, o->parameters, output_param_at, o->n_parameters, "output", o->name, &shm_addr, &shm_size));
        if (shm_addr != NULL) {
            if (st->shm_outs == NULL && (st->shm_outs = calloc(msg->n_outputs, sizeof(shm_output))) == NULL)
                return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
            st->shm_outs[st->n_shm_outs++] = (shm_output){o->name, shm_addr, shm_size};
        }
        for (size_t p = 0; p < o->n_parameters; p++) {
            const char *key = o->parameters[p]->key;
            const Inference__InferParameter *v = o->parameters[p]->value;
            if (strcmp(key, "classification") != 0)
                continue;
            if (v == NULL || v->parameter_choice_case != INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM ||
                v->int64_param < 0)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "invalid value type for 'classification' parameter of output '%s', expected "
                                        "a non-negative int64_param",
                                        o->name);
            if (v->int64_param == 0)
                continue; /* as over HTTP: 0 asks for no classification */
            if (shm_addr != NULL)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "Output can't set both 'shared_memory_region' and 'classification' "
                                        "(output '%s')",
                                        o->name);
            if (st->class_k == NULL && (st->class_k = calloc(msg->n_outputs, sizeof(uint64_t))) == NULL)
                return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
            st->class_k[i] = (uint64_t)v->int64_param;
        }
        IMAGEN_RETURN_IF_ERROR(imagen_request_add_requested_output(st->req, o->name));
    }
    return NULL;
}

/* ======================================================================
 * Completion: response encoding (instance thread)
 * ==================================================================== */

/* Packs `msg` into a new buffer (*out owned). */
static imagen_error *
pack(const ProtobufCMessage *msg, uint8_t **out, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(msg);
    if (*len > INT32_MAX)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "response of %zu bytes exceeds the maximum message size", *len);
    *out = malloc(*len ? *len : 1);
    if (*out == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory encoding the response");
    protobuf_c_message_pack(msg, *out);
    return NULL;
}

/* Packs `r` as is, or wrapped in a ModelStreamInferResponse with the
 * triton_final_response parameter. */
static imagen_error *
pack_response(Inference__ModelInferResponse *r, bool stream, const char *error_message, uint8_t **out, size_t *len)
{
    if (!stream)
        return pack(&r->base, out, len);
    /* Every streamed response carries triton_final_response (spec §2.3);
     * a non-decoupled model's one response is always the final one. */
    Inference__InferParameter final_value = INFERENCE__INFER_PARAMETER__INIT;
    final_value.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM;
    final_value.bool_param = 1;
    Inference__ModelInferResponse__ParametersEntry final_entry =
        INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT;
    final_entry.key = "triton_final_response";
    final_entry.value = &final_value;
    Inference__ModelInferResponse__ParametersEntry *entries[1] = {&final_entry};
    r->n_parameters = 1;
    r->parameters = entries;
    Inference__ModelStreamInferResponse sr = INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
    if (error_message != NULL)
        sr.error_message = (char *)error_message;
    sr.infer_response = r;
    return pack(&sr.base, out, len);
}

/* The classification K asked for output `name`; 0 when none. */
static uint64_t
class_k_of(const infer_state *st, const char *name)
{
    for (size_t i = 0; st->class_k != NULL && i < st->msg->n_outputs; i++)
        if (strcmp(st->msg->outputs[i]->name, name) == 0)
            return st->class_k[i];
    return 0;
}

imagen_error *
imagen__grpc_infer_encode(const imagen__grpc_infer *st, const imagen_response *resp, bool stream, uint8_t **out,
                          size_t *len)
{
    *out = NULL;
    *len = 0;
    size_t n = imagen_response_output_count(resp);
    Inference__ModelInferResponse__InferOutputTensor *outs = calloc(n + 1, sizeof(*outs));
    Inference__ModelInferResponse__InferOutputTensor **ptrs = calloc(n + 1, sizeof(*ptrs));
    ProtobufCBinaryData *raw = calloc(n + 1, sizeof(*raw));
    imagen_buf *cls = calloc(n + 1, sizeof(*cls));        /* classified outputs' strings */
    int64_t(*cshape)[2] = calloc(n + 1, sizeof(*cshape)); /* and their shapes */
    imagen_error *err = NULL;
    const imagen_model *model = imagen_request_model(st->req);
    const imagen_model_config *cfg = model ? imagen_model_get_config(model) : NULL;
    bool batching = cfg && cfg->max_batch_size > 0;
    if (outs == NULL || ptrs == NULL || raw == NULL || cls == NULL || cshape == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory encoding the response");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const imagen_tensor *t = imagen_response_output(resp, i);
        uint64_t class_count = class_k_of(st, t->name);
        imagen_tensor view;
        if (class_count > 0) {
            size_t n_labels = 0;
            const char *const *labels = imagen_model_output_labels(model, t->name, &n_labels);
            size_t crank = 0;
            imagen_buf_init(&cls[i]);
            err = imagen_classify(t, class_count, batching, labels, n_labels, &cls[i], cshape[i], &crank);
            if (err != NULL)
                goto done;
            view = *t;
            view.datatype = IMAGEN_TYPE_BYTES;
            view.shape = cshape[i];
            view.rank = crank;
            view.data = cls[i].data;
            view.byte_size = cls[i].len;
            t = &view;
        }
        const shm_output *so = NULL;
        for (size_t k = 0; k < st->n_shm_outs && so == NULL; k++)
            if (strcmp(st->shm_outs[k].name, t->name) == 0)
                so = &st->shm_outs[k];
        if (so != NULL && t->byte_size > so->size) {
            err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                   "shared memory size specified with the request for output '%s' (%" PRIu64
                                   " bytes) should be at least %zu bytes to hold the results",
                                   t->name, so->size, t->byte_size);
            goto done;
        }
        inference__model_infer_response__infer_output_tensor__init(&outs[i]);
        outs[i].name = (char *)t->name;
        outs[i].datatype = (char *)imagen_datatype_name(t->datatype);
        outs[i].n_shape = t->rank;
        outs[i].shape = (int64_t *)t->shape;
        ptrs[i] = &outs[i];
        if (so != NULL) {
            /* The bytes go to the region; the raw entry stays empty. */
            if (t->byte_size)
                memcpy(so->addr, t->data, t->byte_size);
            imagen_copy_stats_add(IMAGEN_COPY_GRPC, IMAGEN_COPY_OUTPUT, t->byte_size);
        } else {
            raw[i].data = (uint8_t *)t->data;
            raw[i].len = t->byte_size;
            imagen_copy_stats_add(IMAGEN_COPY_GRPC, IMAGEN_COPY_OUTPUT, t->byte_size); /* packed below */
        }
    }
    char version[24];
    snprintf(version, sizeof(version), "%" PRId64, imagen_response_model_version(resp));
    const char *mname = imagen_response_model_name(resp);
    Inference__ModelInferResponse r = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    r.model_name = (char *)(mname ? mname : st->msg->model_name);
    r.model_version = version;
    r.id = st->msg->id;
    r.n_outputs = n;
    r.outputs = ptrs;
    r.n_raw_output_contents = n;
    r.raw_output_contents = raw;
    err = pack_response(&r, stream, NULL, out, len);
done:
    for (size_t i = 0; cls != NULL && i < n; i++)
        imagen_buf_free(&cls[i]);
    free(cls);
    free(cshape);
    free(outs);
    free(ptrs);
    free(raw);
    return err;
}

imagen_error *
imagen__grpc_infer_encode_error(const imagen__grpc_infer *st, const imagen_error *e, const imagen_response *resp,
                                uint8_t **out, size_t *len)
{
    Inference__ModelInferResponse r = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    char version[24];
    if (st != NULL && st->msg != NULL)
        r.id = st->msg->id;
    if (resp == NULL) {
        /* Rejected while decoding: Triton echoes only the id. */
        Inference__ModelStreamInferResponse sr = INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
        sr.error_message = (char *)imagen_error_message(e);
        sr.infer_response = &r;
        return pack(&sr.base, out, len);
    }
    const char *mname = imagen_response_model_name(resp);
    r.model_name = (char *)(mname ? mname : st->msg->model_name);
    int64_t v = imagen_response_model_version(resp);
    if (v > 0) {
        snprintf(version, sizeof(version), "%" PRId64, v);
        r.model_version = version;
    } else {
        r.model_version = st->msg->model_version;
    }
    return pack_response(&r, true, imagen_error_message(e), out, len);
}

/* Frees the input bytes of a request whose execution has completed: the
 * received message (its raw inputs point into it) and the buffers converted
 * from typed contents. The request itself stays (a late cancel may still
 * reach it) but nothing reads its inputs any more. Without this a response
 * waiting for its client to read it would keep the input alive beside the
 * serialized output until the call is freed. */
static void
release_inputs(infer_state *st)
{
    if (st->has_wire) {
        grpc_slice_unref(st->wire);
        st->has_wire = false;
    }
    free(st->raw);
    st->raw = NULL;
    st->n_raw = 0;
    for (size_t i = 0; i < st->n_owned; i++)
        free(st->owned[i]);
    free(st->owned);
    st->owned = NULL;
    st->n_owned = 0;
}

static void
on_complete(imagen_response *resp, void *user_data)
{
    imagen__grpc_call *c = user_data;
    const imagen_error *e = imagen_response_error(resp);
    uint8_t *buf = NULL;
    size_t len = 0;
    imagen_error *err = NULL;
    if (e != NULL)
        err = imagen_error_new(imagen_error_code_of(e), "%s", imagen_error_message(e));
    else
        err = imagen__grpc_infer_encode(c->state, resp, false, &buf, &len);
    /* The outputs (which may point into the inputs) are serialized; free
     * them before the send starts: once it has, the call and its state may
     * be freed on a completion-queue thread at any time. Large inputs go now
     * too, so that a reply waiting to be sent does not hold them. Small ones
     * are freed with the call's state on a completion-queue thread, where
     * they were allocated: glibc's per-thread caches then recycle them
     * instead of every block crossing threads through the one arena's lock. */
    imagen_response_free(resp);
    infer_state *st = c->state;
    if (!st->has_wire || GRPC_SLICE_LENGTH(st->wire) >= GRPC_EARLY_RELEASE_BYTES)
        release_inputs(st);
    if (err != NULL)
        imagen__grpc_reply_error(c, err);
    else
        imagen__grpc_reply_bytes(c, buf, len);
}

/* ======================================================================
 * Handler
 * ==================================================================== */

/* Takes the received message as one contiguous slice (*out referenced).
 * An uncompressed message that arrived as one slice is used as is; one in
 * several slices is gathered once (gRPC's reader decompresses as needed). */
static bool
take_message(grpc_byte_buffer *bb, grpc_slice *out)
{
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1) {
        *out = grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
        return true;
    }
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return false;
    *out = grpc_byte_buffer_reader_readall(&reader);
    imagen_copy_stats_add(IMAGEN_COPY_GRPC, IMAGEN_COPY_INPUT, GRPC_SLICE_LENGTH(*out));
    grpc_byte_buffer_reader_destroy(&reader);
    return true;
}

/* Takes *bb (consumed) into st->wire, records where its raw_input_contents
 * are, and unpacks the rest of the message into st->msg. */
static imagen_error *
unpack_request(infer_state *st, grpc_byte_buffer **bb)
{
    const ProtobufCMessageDescriptor *desc = &inference__model_infer_request__descriptor;
    bool readable = take_message(*bb, &st->wire);
    grpc_byte_buffer_destroy(*bb);
    *bb = NULL;
    if (!readable)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "cannot read the request message (bad compression?)");
    st->has_wire = true;
    /* st->wire, not a copy: a small slice keeps its bytes inline. */
    const uint8_t *base = GRPC_SLICE_START_PTR(st->wire);
    imagen__grpc_wire_scan scan;
    imagen__grpc_wire_result r =
        imagen__grpc_wire_scan_message(base, GRPC_SLICE_LENGTH(st->wire), RAW_INPUT_CONTENTS_FIELD, &scan);
    if (r == IMAGEN_GRPC_WIRE_NOMEM)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory reading the request message");
    if (r != IMAGEN_GRPC_WIRE_OK)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "failed to parse the request message as %s", desc->name);
    st->raw = scan.found;
    st->n_raw = scan.n_found;
    /* The other fields usually precede the raw contents and form one range,
     * unpacked in place; otherwise only they (small) are gathered. */
    const uint8_t *rest = base; /* no other field: an empty message */
    uint8_t *gathered = NULL;
    size_t rest_len = 0;
    if (scan.n_rest == 1) {
        rest = base + scan.rest[0].offset;
        rest_len = scan.rest[0].len;
    } else if (scan.n_rest > 1) {
        for (size_t i = 0; i < scan.n_rest; i++)
            rest_len += scan.rest[i].len;
        if ((gathered = malloc(rest_len)) == NULL) {
            free(scan.rest);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory reading the request message");
        }
        size_t off = 0;
        for (size_t i = 0; i < scan.n_rest; i++) {
            memcpy(gathered + off, base + scan.rest[i].offset, scan.rest[i].len);
            off += scan.rest[i].len;
        }
        rest = gathered;
    }
    free(scan.rest);
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, rest_len, rest);
    free(gathered);
    if (m == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "failed to parse the request message as %s", desc->name);
    st->msg = (infer_msg *)m;
    return NULL;
}

imagen_error *
imagen__grpc_infer_decode(imagen__grpc_infer *st, imagen_server *srv, grpc_byte_buffer **bb)
{
    imagen_copy_stats_request(IMAGEN_COPY_GRPC);
    IMAGEN_RETURN_IF_ERROR(unpack_request(st, bb));
    int64_t version = -1;
    IMAGEN_RETURN_IF_ERROR(imagen__grpc_parse_version(st->msg->model_version, &version));
    IMAGEN_RETURN_IF_ERROR(imagen_request_new(srv, st->msg->model_name, version, &st->req));
    if (st->msg->id[0] != '\0')
        IMAGEN_RETURN_IF_ERROR(imagen_request_set_id(st->req, st->msg->id));
    IMAGEN_RETURN_IF_ERROR(parse_request_parameters(st));
    IMAGEN_RETURN_IF_ERROR(parse_inputs(st));
    return parse_outputs(st);
}

void
imagen__grpc_model_infer(imagen__grpc_call *c)
{
    infer_state *st = imagen__grpc_infer_new(imagen__grpc_shm(c));
    if (st == NULL) {
        imagen__grpc_reply_error(c, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory"));
        return;
    }
    c->state = st;
    c->state_free = state_free;
    imagen_error *err = c->payload == NULL
                            ? imagen_error_new(IMAGEN_ERR_INVALID_ARG, "the call carries no request message")
                            : imagen__grpc_infer_decode(st, imagen__grpc_server(c), &c->payload);
    if (err == NULL) {
        /* Set before submitting: the close event may arrive at any time. */
        c->on_cancel = on_cancel;
        err = imagen_server_infer_async(imagen__grpc_server(c), st->req, on_complete, c);
    }
    if (err != NULL)
        imagen__grpc_reply_error(c, err);
}
