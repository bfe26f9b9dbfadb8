/*
 * The imageops backend: native C operations that need no model files. The
 * config parameter `operation` picks one row of `ops`, and that row's init
 * and execute do the work; a new operation is one more file and one more
 * row. model_init and model_auto_complete run on the loader thread, execute
 * on instance threads (concurrently across instances, with read-only model
 * state). It calls only the imagen_backend_* functions of imagen/backend.h
 * and never blocks on anything but the work (or sleep) it was asked to do.
 */
#include "backends/imageops/imageops.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define COMPONENT "imageops"

/* The operation table: three small operations the tests and benchmarks use,
 * then the five image operations of the bundled repository. */
static const imagen__imageops_op *const ops[] = {
    &imagen__imageops_identity_op,    &imagen__imageops_add_sub_op,    &imagen__imageops_timed_op,
    &imagen__imageops_upscale_op,     &imagen__imageops_enhance_op,    &imagen__imageops_background_remove_op,
    &imagen__imageops_style_comic_op, &imagen__imageops_style_aged_op,
};

#define OP_COUNT (sizeof(ops) / sizeof(ops[0]))

/* Model state: the chosen operation and its state. Read-only after init. */
typedef struct imageops_model {
    const imagen__imageops_op *op;
    void *op_state;
} imageops_model;

/* "identity, add_sub, timed" into buf. */
static const char *
op_names(char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < OP_COUNT && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", ops[i]->name);
    return buf;
}

static const imagen__imageops_op *
find_op(const char *name)
{
    for (size_t i = 0; i < OP_COUNT; i++)
        if (strcmp(ops[i]->name, name) == 0)
            return ops[i];
    return NULL;
}

/* ---------------------------------------------------------------------
 * The vtable
 * ------------------------------------------------------------------- */

/*
 * Auto-complete (spec §3.10.3), kept deliberately small: only `add_sub` has
 * a fixed tensor layout, so only it is completed. When the config of an
 * add_sub model declares no inputs, INPUT0 and INPUT1 (and, when no outputs
 * are declared either, OUTPUT0 and OUTPUT1) are added as TYPE_FP32 with dims
 * [-1]. A config completed that way without max_batch_size gets an explicit
 * max_batch_size 0: the tensors are then whole, unbatched vectors of any
 * length. Every other operation's config is left untouched.
 */
static imagen_error *
imageops_auto_complete(imagen_backend_model *model, imagen_config_msg *msg)
{
    const char *op = imagen_backend_model_parameter(model, "operation");
    if (op == NULL || strcmp(op, "add_sub") != 0)
        return NULL;
    if (imagen_config_msg_tensor_count(msg, false) != 0)
        return NULL;
    static const int64_t dims[1] = {-1};
    bool add_outputs = imagen_config_msg_tensor_count(msg, true) == 0;
    IMAGEN_RETURN_IF_ERROR(imagen_config_msg_add_tensor(msg, false, "INPUT0", IMAGEN_TYPE_FP32, dims, 1));
    IMAGEN_RETURN_IF_ERROR(imagen_config_msg_add_tensor(msg, false, "INPUT1", IMAGEN_TYPE_FP32, dims, 1));
    if (add_outputs) {
        IMAGEN_RETURN_IF_ERROR(imagen_config_msg_add_tensor(msg, true, "OUTPUT0", IMAGEN_TYPE_FP32, dims, 1));
        IMAGEN_RETURN_IF_ERROR(imagen_config_msg_add_tensor(msg, true, "OUTPUT1", IMAGEN_TYPE_FP32, dims, 1));
    }
    if (imagen_config_msg_max_batch_size(msg) == 0)
        imagen_config_msg_set_max_batch_size(msg, 0);
    IMAGEN_LOG_VERBOSE_(COMPONENT, "model '%s': auto-completed add_sub inputs%s", imagen_backend_model_name(model),
                        add_outputs ? " and outputs" : "");
    return NULL;
}

static imagen_error *
imageops_model_init(imagen_backend_model *model, void **model_state)
{
    char names[256];
    const char *name = imagen_backend_model_name(model);
    const char *op_name = imagen_backend_model_parameter(model, "operation");
    if (op_name == NULL || op_name[0] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "imageops model '%s': missing parameter 'operation' (valid operations: %s)", name,
                                op_names(names, sizeof(names)));
    const imagen__imageops_op *op = find_op(op_name);
    if (op == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "imageops model '%s': unknown operation '%s' (valid operations: %s)", name, op_name,
                                op_names(names, sizeof(names)));
    imageops_model *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory", name);
    m->op = op;
    imagen_error *err = op->init(model, &m->op_state);
    if (err != NULL) {
        free(m);
        return err;
    }
    IMAGEN_LOG_VERBOSE_(COMPONENT, "model '%s' version %" PRId64 ": operation '%s'", name,
                        imagen_backend_model_version(model), op->name);
    *model_state = m;
    return NULL;
}

static void
imageops_model_fini(void *model_state)
{
    imageops_model *m = model_state;
    if (m == NULL)
        return;
    m->op->fini(m->op_state);
    free(m);
}

/* Each instance owns a thread pool of the threads the core grants it
 * (--cpu-threads divided among the model's instances), so one image uses
 * every core of its instance and instances do not oversubscribe. */
static imagen_error *
imageops_instance_init(imagen_backend_model *model, void *model_state, const imagen_backend_instance_info *info,
                       void **instance_state)
{
    imagen__pool *pool = NULL;
    size_t threads = info->cpu_threads > 0 ? (size_t)info->cpu_threads : 1;
    imagen_error *err = imagen__pool_create(threads, &pool);
    if (err != NULL)
        return err;
    *instance_state = pool;
    return NULL;
}

static void
imageops_instance_fini(void *instance_state)
{
    imagen__pool_destroy(instance_state);
}

static void
imageops_execute(void *model_state, void *instance_state, imagen_request **requests, size_t n)
{
    const imageops_model *m = model_state;
    m->op->execute(m->op_state, instance_state, requests, n);
}

/* The backend's vtable; listed in src/backends/registry.c. */
const imagen_backend imagen_imageops_backend = {
    .abi_version = IMAGEN_BACKEND_ABI_VERSION,
    .name = "imageops",
    .model_auto_complete = imageops_auto_complete,
    .model_init = imageops_model_init,
    .model_fini = imageops_model_fini,
    .instance_init = imageops_instance_init,
    .instance_fini = imageops_instance_fini,
    .execute = imageops_execute,
    /* An instance's state is its pool, which only needs one caller at a
     * time. */
    .flags = IMAGEN_BACKEND_EXECUTE_ANY_THREAD,
};

/* ---------------------------------------------------------------------
 * Helpers shared by the operations
 * ------------------------------------------------------------------- */

const imagen_tensor_config *
imagen__imageops_tensor(const imagen_model_config *cfg, bool is_output, const char *name, size_t position)
{
    const imagen_tensor_config *t =
        is_output ? imagen_model_config_output(cfg, name) : imagen_model_config_input(cfg, name);
    if (t != NULL)
        return t;
    size_t count = is_output ? cfg->n_outputs : cfg->n_inputs;
    if (position >= count)
        return NULL;
    return is_output ? &cfg->outputs[position] : &cfg->inputs[position];
}

/* The paired input of output `i`: INPUT<k> for an output named OUTPUT<k>
 * when such an input exists, otherwise input i. */
static const imagen_tensor_config *
paired_input(const imagen_model_config *cfg, size_t i)
{
    const char *out = cfg->outputs[i].name;
    if (strncmp(out, "OUTPUT", 6) == 0 && out[6] != '\0') {
        for (size_t k = 0; k < cfg->n_inputs; k++) {
            const char *in = cfg->inputs[k].name;
            if (strncmp(in, "INPUT", 5) == 0 && strcmp(in + 5, out + 6) == 0)
                return &cfg->inputs[k];
        }
    }
    return i < cfg->n_inputs ? &cfg->inputs[i] : NULL;
}

imagen_error *
imagen__imageops_pairs_init(imagen_backend_model *model, imagen__imageops_pairs *out)
{
    const char *name = imagen_backend_model_name(model);
    const imagen_model_config *cfg = imagen_backend_model_config(model);
    memset(out, 0, sizeof(*out));
    out->model_name = strdup(name);
    out->pairs = calloc(cfg->n_outputs ? cfg->n_outputs : 1, sizeof(*out->pairs));
    if (out->model_name == NULL || out->pairs == NULL) {
        imagen__imageops_pairs_free(out);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory", name);
    }
    for (size_t i = 0; i < cfg->n_outputs; i++) {
        const imagen_tensor_config *o = &cfg->outputs[i];
        const imagen_tensor_config *in = paired_input(cfg, i);
        imagen_error *err = NULL;
        if (in == NULL)
            err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                   "imageops model '%s': output '%s' has no input to copy (identity pairs "
                                   "OUTPUT<k> with INPUT<k>, otherwise outputs with inputs by position)",
                                   name, o->name);
        else if (in->datatype != o->datatype)
            err = imagen_error_new(
                IMAGEN_ERR_INVALID_ARG, "imageops model '%s': output '%s' is %s but its input '%s' is %s", name,
                o->name, imagen_datatype_config_name(o->datatype), in->name, imagen_datatype_config_name(in->datatype));
        if (err == NULL) {
            out->pairs[i].input = strdup(in->name);
            out->pairs[i].output = strdup(o->name);
            out->pairs[i].datatype = o->datatype;
            out->n = i + 1;
            if (out->pairs[i].input == NULL || out->pairs[i].output == NULL)
                err = imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory", name);
        }
        if (err != NULL) {
            imagen__imageops_pairs_free(out);
            return err;
        }
    }
    return NULL;
}

void
imagen__imageops_pairs_free(imagen__imageops_pairs *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++) {
        free(p->pairs[i].input);
        free(p->pairs[i].output);
    }
    free(p->pairs);
    free(p->model_name);
    memset(p, 0, sizeof(*p));
}

void
imagen__imageops_pairs_copy(const imagen__imageops_pairs *p, imagen_request *req)
{
    for (size_t i = 0; i < p->n; i++) {
        const imagen__imageops_pair *pair = &p->pairs[i];
        if (!imagen_backend_request_output_requested(req, pair->output))
            continue;
        const imagen_tensor *in = imagen_backend_request_input_by_name(req, pair->input);
        if (in == NULL) {
            imagen_backend_request_fail(req, imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                                              "imageops model '%s': output '%s' needs input '%s', "
                                                              "which the request does not have",
                                                              p->model_name, pair->output, pair->input));
            return;
        }
        void *buf = NULL;
        imagen_error *err =
            imagen_backend_output_alloc(req, pair->output, in->datatype, in->shape, in->rank, in->byte_size, &buf);
        if (err != NULL) {
            imagen_backend_request_fail(req, err);
            return;
        }
        if (in->byte_size > 0)
            memcpy(buf, in->data, in->byte_size);
    }
}

imagen_error *
imagen__imageops_param_u64(imagen_backend_model *model, const char *key, uint64_t def, uint64_t max, uint64_t *out)
{
    const char *v = imagen_backend_model_parameter(model, key);
    if (v == NULL) {
        *out = def;
        return NULL;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long x = (v[0] >= '0' && v[0] <= '9') ? strtoull(v, &end, 10) : 0;
    if (end == NULL || end == v || *end != '\0' || errno != 0 || x > max)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "imageops model '%s': parameter '%s' must be an integer from 0 to %" PRIu64
                                ", got '%s'",
                                imagen_backend_model_name(model), key, max, v);
    *out = x;
    return NULL;
}

const char *
imagen__imageops_shape_str(const int64_t *shape, size_t rank, char *buf, size_t len)
{
    size_t off = 0;
    if (len == 0)
        return buf;
    buf[0] = '\0';
    off += (size_t)snprintf(buf + off, len - off, "[");
    for (size_t i = 0; i < rank && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%" PRId64, i ? "," : "", shape[i]);
    if (off < len)
        snprintf(buf + off, len - off, "]");
    return buf;
}
