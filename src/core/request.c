/*
 * Inference requests and responses: creation and validation against the
 * model config (on the frontend's thread), submission to the model's
 * batcher, the accessors backends use during execute (on the instance
 * thread), and completion (statistics, the user's callback).
 *
 * Input tensor bytes are borrowed from the frontend: the request stores
 * pointers into the frontend's buffer and never copies them. Every length,
 * rank and count is checked here before a backend sees it, so backends can
 * trust shapes and byte sizes.
 *
 * A request is reference counted: one reference for the frontend, one for
 * the core while in flight. It must never call the user's callback with a
 * lock held.
 */
#include "core/core.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/time.h"

typedef struct req_input {
    char *name;
    imagen_tensor tensor; /* tensor.shape points at shape[] */
    int64_t shape[IMAGEN_MAX_RANK];
    void *owned_data;                /* internal (warmup) requests only */
    const imagen_tensor_config *cfg; /* borrowed from the model config */
} req_input;

typedef struct resp_output {
    imagen_tensor tensor; /* points at name/shape/data below */
    char *name;
    int64_t shape[IMAGEN_MAX_RANK];
    void *data;
} resp_output;

struct imagen_response {
    imagen_error *error;
    char *id;
    char *model_name;
    int64_t model_version;
    resp_output *outputs;
    size_t n_outputs;
    size_t cap_outputs;
};

struct imagen_request {
    imagen_batch_item item; /* first: the batcher links requests through it */
    atomic_long refs;
    imagen_model *model; /* a reference */
    char *id;
    uint64_t priority;
    uint64_t timeout_us;
    req_input *inputs;
    size_t n_inputs, cap_inputs;
    char **requested; /* requested output names */
    size_t n_requested;
    imagen_request_param *params;
    size_t n_params;
    imagen_response_cb cb;
    void *user_data;
    atomic_bool cancelled;
    atomic_bool submitted; /* read by imagen_request_cancel on other threads */
    bool internal;
    uint64_t submit_ns;
    uint64_t exec_start_ns;
    uint64_t input_ns, infer_ns, output_ns;
    imagen_response *response; /* built during execute */
    imagen_error *exec_error;  /* set by imagen_backend_request_fail */
    bool touched;              /* backend produced an output or failed it */
    int64_t *shape_sig;
    uint64_t batch_size;
};

/* Handed to a completion callback when not even a response can be
 * allocated; imagen_response_free() ignores it. */
static imagen_response out_of_memory_response = {.error = &imagen__error_out_of_memory};

/* ---- helpers ---------------------------------------------------------- */

static void
free_response_outputs(imagen_response *resp)
{
    for (size_t i = 0; i < resp->n_outputs; i++) {
        free(resp->outputs[i].name);
        free(resp->outputs[i].data);
    }
    free(resp->outputs);
    resp->outputs = NULL;
    resp->n_outputs = resp->cap_outputs = 0;
}

static void
format_shape(imagen_buf *b, const int64_t *dims, size_t rank, bool batch_dim)
{
    imagen_buf_append_char(b, '[');
    if (batch_dim) {
        imagen_buf_append_str(b, "-1");
        if (rank)
            imagen_buf_append_char(b, ',');
    }
    for (size_t i = 0; i < rank; i++) {
        if (i)
            imagen_buf_append_char(b, ',');
        imagen_buf_append_i64(b, dims[i]);
    }
    imagen_buf_append_char(b, ']');
}

static imagen_error *
shape_mismatch(const imagen_request *req, const imagen_tensor_config *cfg, const int64_t *shape, size_t rank)
{
    const imagen_model_config *mc = req->model->config;
    imagen_buf want = IMAGEN_BUF_INIT, got = IMAGEN_BUF_INIT;
    format_shape(&want, cfg->dims, cfg->rank, mc->max_batch_size > 0);
    format_shape(&got, shape, rank, false);
    imagen_error *err =
        imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unexpected shape for input '%s' for model '%s'. Expected %s, got %s",
                         cfg->name, mc->name, want.data ? want.data : "[]", got.data ? got.data : "[]");
    imagen_buf_free(&want);
    imagen_buf_free(&got);
    return err;
}

/* Checks a BYTES tensor: `count` elements of [u32 len][bytes], exactly
 * filling the buffer. */
static imagen_error *
check_bytes_tensor(const char *name, const void *data, size_t byte_size, uint64_t count)
{
    const unsigned char *p = data;
    size_t off = 0;
    uint64_t seen = 0;
    while (off < byte_size) {
        if (byte_size - off < 4)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "incomplete string length for inference input '%s'", name);
        uint32_t len =
            (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 | (uint32_t)p[off + 3] << 24;
        off += 4;
        if (len > byte_size - off)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "element byte size indicates more data than the remaining buffer "
                                    "for inference input '%s'",
                                    name);
        off += len;
        seen++;
    }
    if (seen != count)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "expected %" PRIu64 " string elements for inference input '%s', got %" PRIu64, count,
                                name, seen);
    return NULL;
}

/* ---- creation and setters (frontend threads) -------------------------- */

static imagen_error *
request_alloc(imagen_model *model, imagen_request **out)
{
    imagen_request *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory creating a request");
    atomic_init(&req->refs, 1);
    atomic_init(&req->cancelled, false);
    atomic_init(&req->submitted, false);
    req->model = model;
    *out = req;
    return NULL;
}

imagen_error *
imagen_request_new(imagen_server *srv, const char *model, int64_t version, imagen_request **out)
{
    imagen_model *m = NULL;
    IMAGEN_RETURN_IF_ERROR(imagen_server_model_acquire(srv, model, version, &m));
    imagen_error *err = request_alloc(m, out);
    if (err)
        imagen_model_release(m);
    return err;
}

imagen_error *
imagen__request_new_internal(imagen_model *m, imagen_request **out)
{
    IMAGEN_RETURN_IF_ERROR(request_alloc(imagen__model_ref(m), out));
    (*out)->internal = true;
    return NULL;
}

static void
request_free(imagen_request *req)
{
    for (size_t i = 0; i < req->n_inputs; i++) {
        free(req->inputs[i].name);
        free(req->inputs[i].owned_data);
    }
    free(req->inputs);
    for (size_t i = 0; i < req->n_requested; i++)
        free(req->requested[i]);
    free(req->requested);
    for (size_t i = 0; i < req->n_params; i++) {
        free(req->params[i].key);
        free(req->params[i].string_value);
    }
    free(req->params);
    if (req->response)
        imagen_response_free(req->response);
    imagen_error_free(req->exec_error);
    free(req->shape_sig);
    free(req->id);
    imagen_model *m = req->model;
    free(req);
    imagen__model_unref(m);
}

void
imagen_request_release(imagen_request *req)
{
    if (req == NULL)
        return;
    if (atomic_fetch_sub_explicit(&req->refs, 1, memory_order_acq_rel) == 1)
        request_free(req);
}

const imagen_model *
imagen_request_model(const imagen_request *req)
{
    return req->model;
}

imagen_error *
imagen_request_set_id(imagen_request *req, const char *id)
{
    char *copy = strdup(id ? id : "");
    if (copy == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    free(req->id);
    req->id = copy;
    return NULL;
}

void
imagen_request_set_priority(imagen_request *req, uint64_t priority)
{
    req->priority = priority;
}

void
imagen_request_set_timeout_us(imagen_request *req, uint64_t timeout_us)
{
    req->timeout_us = timeout_us;
}

static imagen_error *
add_input(imagen_request *req, const char *name, imagen_datatype datatype, const int64_t *shape, size_t rank,
          const void *data, size_t byte_size, void *owned)
{
    const imagen_model_config *mc = req->model->config;
    if (req->submitted)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "request already submitted");
    if (name == NULL || strlen(name) > IMAGEN_NAME_MAX_BYTES)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input name missing or longer than %d bytes",
                                IMAGEN_NAME_MAX_BYTES);
    const imagen_tensor_config *cfg = imagen_model_config_input(mc, name);
    if (cfg == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unexpected inference input '%s' for model '%s'", name,
                                mc->name);
    for (size_t i = 0; i < req->n_inputs; i++)
        if (strcmp(req->inputs[i].name, name) == 0)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input '%s' already exists in request", name);
    if (req->n_inputs >= IMAGEN_REQUEST_MAX_INPUTS)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "too many inputs (limit %d)", IMAGEN_REQUEST_MAX_INPUTS);
    if (datatype != cfg->datatype)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "inference input '%s' data-type is '%s', but model '%s' expects '%s'", name,
                                imagen_datatype_name(datatype), mc->name, imagen_datatype_name(cfg->datatype));
    if (rank > IMAGEN_MAX_RANK)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input '%s' has rank %zu, above the limit of %d", name, rank,
                                IMAGEN_MAX_RANK);
    for (size_t i = 0; i < rank; i++)
        if (shape[i] < 0)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input '%s' has negative dimension %" PRId64, name,
                                    shape[i]);

    /* Shape against the config: the batch dim first when the model batches. */
    size_t lead = mc->max_batch_size > 0 ? 1 : 0;
    if (rank != cfg->rank + lead)
        return shape_mismatch(req, cfg, shape, rank);
    for (size_t i = 0; i < cfg->rank; i++)
        if (cfg->dims[i] != -1 && cfg->dims[i] != shape[i + lead])
            return shape_mismatch(req, cfg, shape, rank);
    if (lead && shape[0] > mc->max_batch_size)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "inference request batch-size must be <= %d for '%s'",
                                mc->max_batch_size, mc->name);

    uint64_t count = 0;
    if (!imagen_shape_element_count(shape, rank, IMAGEN_REQUEST_MAX_ELEMENTS, &count))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input '%s' has too many elements (limit %" PRIu64 ")", name,
                                (uint64_t)IMAGEN_REQUEST_MAX_ELEMENTS);
    if (data == NULL && byte_size != 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input '%s' has no data", name);
    if (datatype == IMAGEN_TYPE_BYTES) {
        IMAGEN_RETURN_IF_ERROR(check_bytes_tensor(name, data, byte_size, count));
    } else {
        uint64_t want = count * imagen_datatype_size(datatype);
        if (want != byte_size)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "unexpected total byte size %zu for input '%s', expecting %" PRIu64, byte_size,
                                    name, want);
    }

    if (req->n_inputs == req->cap_inputs) {
        size_t cap = req->cap_inputs ? req->cap_inputs * 2 : 4;
        req_input *p = realloc(req->inputs, cap * sizeof(*p));
        if (p == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        /* each tensor's shape points into its own entry: re-point them */
        for (size_t k = 0; k < req->n_inputs; k++)
            p[k].tensor.shape = p[k].shape;
        req->inputs = p;
        req->cap_inputs = cap;
    }
    req_input *in = &req->inputs[req->n_inputs];
    memset(in, 0, sizeof(*in));
    in->name = strdup(name);
    if (in->name == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    memcpy(in->shape, shape, rank * sizeof(int64_t));
    in->cfg = cfg;
    in->owned_data = owned;
    in->tensor.name = in->name;
    in->tensor.datatype = datatype;
    in->tensor.shape = in->shape;
    in->tensor.rank = rank;
    in->tensor.data = data;
    in->tensor.byte_size = byte_size;
    req->n_inputs++;
    return NULL;
}

imagen_error *
imagen_request_add_input(imagen_request *req, const char *name, imagen_datatype datatype, const int64_t *shape,
                         size_t rank, const void *data, size_t byte_size)
{
    return add_input(req, name, datatype, shape, rank, data, byte_size, NULL);
}

imagen_error *
imagen__request_add_owned_input(imagen_request *req, const char *name, imagen_datatype dt, const int64_t *shape,
                                size_t rank, void *data, size_t byte_size)
{
    imagen_error *err = add_input(req, name, dt, shape, rank, data, byte_size, data);
    if (err)
        free(data);
    return err;
}

imagen_error *
imagen_request_add_requested_output(imagen_request *req, const char *name)
{
    const imagen_model_config *mc = req->model->config;
    if (name == NULL || imagen_model_config_output(mc, name) == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unexpected inference output '%s' for model '%s'",
                                name ? name : "", mc->name);
    for (size_t i = 0; i < req->n_requested; i++)
        if (strcmp(req->requested[i], name) == 0)
            return NULL;
    if (req->n_requested >= IMAGEN_REQUEST_MAX_OUTPUTS)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "too many requested outputs");
    char **p = realloc(req->requested, (req->n_requested + 1) * sizeof(char *));
    if (p == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    req->requested = p;
    if ((p[req->n_requested] = strdup(name)) == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    req->n_requested++;
    return NULL;
}

imagen_error *
imagen_request_add_parameter(imagen_request *req, const imagen_request_param *param)
{
    if (param == NULL || param->key == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "parameter without a key");
    imagen_request_param *p = realloc(req->params, (req->n_params + 1) * sizeof(*p));
    if (p == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    req->params = p;
    imagen_request_param *dst = &p[req->n_params];
    *dst = *param;
    dst->key = strdup(param->key);
    dst->string_value = param->type == IMAGEN_PARAM_STRING && param->string_value ? strdup(param->string_value) : NULL;
    if (dst->key == NULL || (param->type == IMAGEN_PARAM_STRING && param->string_value && !dst->string_value)) {
        free(dst->key);
        free(dst->string_value);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    req->n_params++;
    return NULL;
}

size_t
imagen_request_parameter_count(const imagen_request *req)
{
    return req->n_params;
}

const imagen_request_param *
imagen_request_parameter(const imagen_request *req, size_t i)
{
    return i < req->n_params ? &req->params[i] : NULL;
}

/* ---- submission ---------------------------------------------------------- */

/* Element values of an INT32/INT64 shape tensor, stored into `out` when
 * not NULL; returns how many there are (0 for other data types). */
static size_t
shape_tensor_values(const imagen_tensor *t, int64_t *out)
{
    size_t size = imagen_datatype_size(t->datatype);
    if ((t->datatype != IMAGEN_TYPE_INT32 && t->datatype != IMAGEN_TYPE_INT64) || size == 0)
        return 0;
    size_t n = t->byte_size / size;
    for (size_t i = 0; out && i < n; i++) {
        if (t->datatype == IMAGEN_TYPE_INT32) {
            int32_t v;
            memcpy(&v, (const char *)t->data + i * 4, 4);
            out[i] = v;
        } else {
            memcpy(&out[i], (const char *)t->data + i * 8, 8);
        }
    }
    return n;
}

/* Checks the request as a whole: required inputs present, batch dims agree;
 * computes batch_size and the shape signature. */
static imagen_error *
validate_complete(imagen_request *req)
{
    const imagen_model_config *mc = req->model->config;
    size_t required = 0, present_required = 0;
    imagen_buf missing = IMAGEN_BUF_INIT;
    for (size_t i = 0; i < mc->n_inputs; i++) {
        const imagen_tensor_config *cfg = &mc->inputs[i];
        if (cfg->optional)
            continue;
        required++;
        bool found = false;
        for (size_t k = 0; k < req->n_inputs && !found; k++)
            found = req->inputs[k].cfg == cfg;
        if (found) {
            present_required++;
        } else {
            imagen_buf_append_str(&missing, missing.len ? ", '" : "'");
            imagen_buf_append_str(&missing, cfg->name);
            imagen_buf_append_char(&missing, '\'');
        }
    }
    if (present_required != required) {
        imagen_error *err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                             "expected %zu inputs but got %zu inputs for model '%s'. "
                                             "Missing required input(s) %s",
                                             required, req->n_inputs, mc->name, missing.data ? missing.data : "");
        imagen_buf_free(&missing);
        return err;
    }
    imagen_buf_free(&missing);

    req->batch_size = 1;
    if (mc->max_batch_size > 0 && req->n_inputs > 0) {
        int64_t b = req->inputs[0].shape[0];
        for (size_t k = 1; k < req->n_inputs; k++) {
            if (req->inputs[k].cfg->is_shape_tensor)
                continue;
            if (req->inputs[k].shape[0] != b)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "input '%s' batch size %" PRId64
                                        " does not match other inputs' batch size %" PRId64 " for model '%s'",
                                        req->inputs[k].name, req->inputs[k].shape[0], b, mc->name);
        }
        req->batch_size = b > 0 ? (uint64_t)b : 1;
    }

    if (req->model->shape_check) {
        /* Signature: for each config input in config order, its rank (or -1
         * when absent) followed by its non-batch dims; a shape tensor adds
         * its element count and values, since requests share a batch only
         * when their shape tensors hold the same values (spec 5.3). */
        size_t len = 0;
        for (size_t i = 0; i < mc->n_inputs; i++)
            len += 1 + mc->inputs[i].rank;
        for (size_t k = 0; k < req->n_inputs; k++)
            if (req->inputs[k].cfg->is_shape_tensor)
                len += 1 + shape_tensor_values(&req->inputs[k].tensor, NULL);
        free(req->shape_sig);
        req->shape_sig = calloc(len ? len : 1, sizeof(int64_t));
        if (req->shape_sig == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        size_t lead = mc->max_batch_size > 0 ? 1 : 0, pos = 0;
        for (size_t i = 0; i < mc->n_inputs; i++) {
            const req_input *in = NULL;
            for (size_t k = 0; k < req->n_inputs && !in; k++)
                if (req->inputs[k].cfg == &mc->inputs[i])
                    in = &req->inputs[k];
            req->shape_sig[pos++] = in ? (int64_t)in->tensor.rank : -1;
            for (size_t d = 0; d < mc->inputs[i].rank; d++)
                req->shape_sig[pos++] = in ? in->shape[d + lead] : -1;
            if (in && mc->inputs[i].is_shape_tensor) {
                size_t n = shape_tensor_values(&in->tensor, req->shape_sig + pos + 1);
                req->shape_sig[pos] = (int64_t)n;
                pos += 1 + n;
            }
        }
        req->item.shape_sig = req->shape_sig;
        req->item.shape_sig_len = pos;
    }
    return NULL;
}

imagen_error *
imagen_server_infer_async(imagen_server *srv, imagen_request *req, imagen_response_cb cb, void *user_data)
{
    if (req->submitted)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "request already submitted");
    if (!imagen__server_accepting(srv))
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "Server exiting");
    if (atomic_load(&req->cancelled))
        return imagen_error_new(IMAGEN_ERR_CANCELLED, "request cancelled");
    IMAGEN_RETURN_IF_ERROR(validate_complete(req));

    imagen_model *m = req->model;
    req->response = calloc(1, sizeof(imagen_response));
    if (req->response == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    req->cb = cb;
    req->user_data = user_data;
    req->item.batch_size = req->batch_size;
    req->item.priority = req->priority;
    req->item.timeout_us = req->timeout_us;
    req->submit_ns = imagen_time_now_ns();
    atomic_store(&req->submitted, true);

    /* The core's reference, plus one held until this function returns: once
     * enqueued, the request may complete and its callback release the
     * caller's reference on another thread before the check below. */
    atomic_fetch_add(&req->refs, 2);
    imagen__server_inflight_add(srv, 1);
    imagen_stats_pending_add(m->stats, 1);
    if (imagen__model_try_inline(m, req)) {
        /* Executed and completed on this thread: the callback has run. */
        imagen_request_release(req);
        return NULL;
    }
    imagen_error *err = imagen_batcher_enqueue(m->batcher, &req->item);
    if (err == NULL) {
        /* A cancel that ran between the check above and the enqueue found
         * nothing queued; honour it now. */
        if (atomic_load(&req->cancelled))
            imagen_batcher_cancel(m->batcher, &req->item);
        imagen_request_release(req);
        return NULL;
    }
    atomic_fetch_sub(&req->refs, 1);
    imagen_stats_pending_add(m->stats, -1);
    imagen_stats_record_failure(m->stats, IMAGEN_FAIL_REJECTED, imagen_time_now_ns() - req->submit_ns);
    imagen__server_inflight_add(srv, -1);
    imagen_response_free(req->response);
    req->response = NULL;
    atomic_store(&req->submitted, false);
    atomic_fetch_sub(&req->refs, 1);
    return err;
}

imagen_error *
imagen__request_prepare_internal(imagen_request *req)
{
    IMAGEN_RETURN_IF_ERROR(validate_complete(req));
    if (req->response == NULL && (req->response = calloc(1, sizeof(imagen_response))) == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    atomic_store(&req->submitted, true);
    return NULL;
}

void
imagen_request_cancel(imagen_request *req)
{
    atomic_store(&req->cancelled, true);
    if (atomic_load(&req->submitted) && !req->internal)
        imagen_batcher_cancel(req->model->batcher, &req->item);
}

/* ---- execution (instance thread) ---------------------------------------- */

imagen_request *
imagen__request_from_item(imagen_batch_item *item)
{
    /* item is the first member of imagen_request. */
    return (imagen_request *)(void *)item;
}

imagen_batch_item *
imagen__request_item(imagen_request *req)
{
    return &req->item;
}

size_t
imagen__request_input_bytes(const imagen_request *req)
{
    size_t total = 0;
    for (size_t i = 0; i < req->n_inputs; i++)
        total += req->inputs[i].tensor.byte_size;
    return total;
}

bool
imagen__request_cancelled(const imagen_request *req)
{
    return atomic_load(&req->cancelled);
}

void
imagen__request_begin_execution(imagen_request *req, uint64_t start_ns)
{
    req->exec_start_ns = start_ns;
    if (!req->internal)
        imagen_stats_pending_add(req->model->stats, -1);
    if (req->response == NULL)
        req->response = calloc(1, sizeof(imagen_response));
}

void
imagen__request_set_phase_times(imagen_request *req, uint64_t input_ns, uint64_t infer_ns, uint64_t output_ns)
{
    req->input_ns = input_ns;
    req->infer_ns = infer_ns;
    req->output_ns = output_ns;
}

const imagen_error *
imagen__request_error(const imagen_request *req)
{
    return req->exec_error;
}

static bool
output_wanted(const imagen_request *req, const char *name)
{
    if (req->n_requested == 0)
        return true;
    for (size_t i = 0; i < req->n_requested; i++)
        if (strcmp(req->requested[i], name) == 0)
            return true;
    return false;
}

bool
imagen__request_end_execution(imagen_request *req)
{
    imagen_response *resp = req->response;
    if (resp == NULL) {
        if (req->exec_error == NULL)
            req->exec_error = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory building a response");
        return false;
    }
    if (req->exec_error) {
        free_response_outputs(resp);
        return false;
    }
    if (!req->touched) {
        req->exec_error = imagen_error_new(IMAGEN_ERR_INTERNAL, "backend '%s' produced no response for model '%s'",
                                           req->model->backend->name, req->model->name);
        return false;
    }
    /* Drop outputs the client did not ask for, keeping order. */
    size_t kept = 0;
    for (size_t i = 0; i < resp->n_outputs; i++) {
        if (output_wanted(req, resp->outputs[i].name)) {
            resp->outputs[kept++] = resp->outputs[i];
        } else {
            free(resp->outputs[i].name);
            free(resp->outputs[i].data);
        }
    }
    resp->n_outputs = kept;
    /* Re-point tensors at their (moved) name/shape storage. */
    for (size_t i = 0; i < kept; i++) {
        resp->outputs[i].tensor.name = resp->outputs[i].name;
        resp->outputs[i].tensor.shape = resp->outputs[i].shape;
    }
    return true;
}

void
imagen__request_finish(imagen_request *req, imagen_error *err, imagen_fail_reason reason)
{
    imagen_model *m = req->model;
    imagen_response *resp = req->response;
    req->response = NULL;
    uint64_t now = imagen_time_now_ns();
    uint64_t total = now - req->submit_ns;

    if (resp == NULL) {
        /* Out of memory earlier: answer with a minimal response, or with
         * the static one; the callback is called whatever happens. */
        resp = calloc(1, sizeof(*resp));
        if (resp == NULL) {
            imagen_error_free(err);
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
            reason = IMAGEN_FAIL_OTHER;
        }
    }
    if (err != NULL) {
        imagen_stats_record_failure(m->stats, reason, total);
    } else {
        uint64_t queue = req->exec_start_ns > req->item.enqueue_ns ? req->exec_start_ns - req->item.enqueue_ns : 0;
        imagen_stats_record_success(m->stats, total, queue, req->input_ns, req->infer_ns, req->output_ns,
                                    req->batch_size);
    }
    if (resp != NULL) {
        if (err != NULL)
            free_response_outputs(resp);
        resp->error = err;
        resp->id = strdup(req->id ? req->id : "");
        resp->model_name = strdup(m->name);
        resp->model_version = m->version;
        req->cb(resp, req->user_data);
    } else {
        imagen_error_free(err);
        req->cb(&out_of_memory_response, req->user_data);
    }
    /* Drop the core's reference (and with it, possibly, the last reference
     * to the model) before the in-flight count: once that count reaches
     * zero, shutdown may destroy the server, which must not happen while
     * this thread still holds the model. */
    imagen_server *srv = m->server;
    imagen_request_release(req);
    imagen__server_inflight_add(srv, -1);
}

void
imagen__request_deliver(imagen_batch_item *item, void *ctx)
{
    (void)ctx;
    imagen_request *req = imagen__request_from_item(item);
    imagen_error *err = req->exec_error;
    req->exec_error = NULL;
    imagen__request_finish(req, err, IMAGEN_FAIL_BACKEND);
}

void
imagen__request_rejected(void *ctx, imagen_batch_item *item, imagen_error *err, imagen_fail_reason reason)
{
    (void)ctx;
    imagen_request *req = imagen__request_from_item(item);
    imagen_stats_pending_add(req->model->stats, -1);
    imagen__request_finish(req, err, reason);
}

/* ---- backend accessors (instance thread, during execute) --------------- */

size_t
imagen_backend_request_input_count(const imagen_request *req)
{
    return req->n_inputs;
}

const imagen_tensor *
imagen_backend_request_input(const imagen_request *req, size_t i)
{
    return i < req->n_inputs ? &req->inputs[i].tensor : NULL;
}

const imagen_tensor *
imagen_backend_request_input_by_name(const imagen_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_inputs; i++)
        if (strcmp(req->inputs[i].name, name) == 0)
            return &req->inputs[i].tensor;
    return NULL;
}

uint64_t
imagen_backend_request_batch_size(const imagen_request *req)
{
    return req->batch_size ? req->batch_size : 1;
}

bool
imagen_backend_request_output_requested(const imagen_request *req, const char *name)
{
    return output_wanted(req, name);
}

imagen_error *
imagen_backend_output_alloc(imagen_request *req, const char *name, imagen_datatype datatype, const int64_t *shape,
                            size_t rank, size_t byte_size, void **buffer)
{
    const imagen_model_config *mc = req->model->config;
    if (name == NULL || imagen_model_config_output(mc, name) == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "backend produced unknown output '%s' for model '%s'",
                                name ? name : "", mc->name);
    if (rank > IMAGEN_MAX_RANK)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s' rank %zu above the limit", name, rank);
    imagen_response *resp = req->response;
    if (resp == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    if (resp->n_outputs == resp->cap_outputs) {
        size_t cap = resp->cap_outputs ? resp->cap_outputs * 2 : 2;
        resp_output *p = realloc(resp->outputs, cap * sizeof(*p));
        if (p == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        resp->outputs = p;
        resp->cap_outputs = cap;
        for (size_t i = 0; i < resp->n_outputs; i++) {
            resp->outputs[i].tensor.name = resp->outputs[i].name;
            resp->outputs[i].tensor.shape = resp->outputs[i].shape;
        }
    }
    resp_output *o = &resp->outputs[resp->n_outputs];
    memset(o, 0, sizeof(*o));
    o->name = strdup(name);
    o->data = calloc(1, byte_size ? byte_size : 1);
    if (o->name == NULL || o->data == NULL) {
        free(o->name);
        free(o->data);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory allocating output '%s' (%zu bytes)", name,
                                byte_size);
    }
    if (rank)
        memcpy(o->shape, shape, rank * sizeof(int64_t));
    o->tensor.name = o->name;
    o->tensor.datatype = datatype;
    o->tensor.shape = o->shape;
    o->tensor.rank = rank;
    o->tensor.data = o->data;
    o->tensor.byte_size = byte_size;
    resp->n_outputs++;
    req->touched = true;
    *buffer = o->data;
    return NULL;
}

void
imagen_backend_request_fail(imagen_request *req, imagen_error *err)
{
    req->touched = true;
    if (req->exec_error == NULL)
        req->exec_error = err;
    else
        imagen_error_free(err);
}

/* ---- responses (any thread) ---------------------------------------------- */

const imagen_error *
imagen_response_error(const imagen_response *resp)
{
    return resp->error;
}

const char *
imagen_response_id(const imagen_response *resp)
{
    return resp->id ? resp->id : "";
}

const char *
imagen_response_model_name(const imagen_response *resp)
{
    return resp->model_name ? resp->model_name : "";
}

int64_t
imagen_response_model_version(const imagen_response *resp)
{
    return resp->model_version;
}

size_t
imagen_response_output_count(const imagen_response *resp)
{
    return resp->n_outputs;
}

const imagen_tensor *
imagen_response_output(const imagen_response *resp, size_t i)
{
    return i < resp->n_outputs ? &resp->outputs[i].tensor : NULL;
}

void
imagen_response_free(imagen_response *resp)
{
    if (resp == NULL || resp == &out_of_memory_response)
        return;
    free_response_outputs(resp);
    imagen_error_free(resp->error);
    free(resp->id);
    free(resp->model_name);
    free(resp);
}
