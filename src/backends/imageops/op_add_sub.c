/*
 * imageops operation `add_sub`: OUTPUT0 = INPUT0 + INPUT1 and
 * OUTPUT1 = INPUT0 - INPUT1, element-wise, for INT32 (wrapping) and FP32.
 * Tensors are found by those names, else by position. Execute runs on
 * instance threads and reads only the immutable state; inputs may be
 * unaligned (they point into the frontend's buffer), so elements are loaded
 * with memcpy.
 */
#include <stdlib.h>
#include <string.h>

#include "backends/imageops/imageops.h"

typedef struct add_sub_state {
    char *model;              /* owned, for error messages */
    char *in[2];              /* owned input names */
    char *out[2];             /* owned output names: sum, difference */
    imagen_datatype datatype; /* INT32 or FP32 */
} add_sub_state;

static void
add_sub_fini(void *state)
{
    add_sub_state *s = state;
    if (s == NULL)
        return;
    free(s->model);
    for (int i = 0; i < 2; i++) {
        free(s->in[i]);
        free(s->out[i]);
    }
    free(s);
}

static imagen_error *
add_sub_init(imagen_backend_model *model, void **state)
{
    static const char *const in_names[2] = {"INPUT0", "INPUT1"};
    static const char *const out_names[2] = {"OUTPUT0", "OUTPUT1"};
    const char *name = imagen_backend_model_name(model);
    const imagen_model_config *cfg = imagen_backend_model_config(model);
    const imagen_tensor_config *t[4];
    for (int i = 0; i < 2; i++) {
        t[i] = imagen__imageops_tensor(cfg, false, in_names[i], (size_t)i);
        t[2 + i] = imagen__imageops_tensor(cfg, true, out_names[i], (size_t)i);
    }
    if (cfg->n_inputs != 2 || cfg->n_outputs != 2 || t[0] == t[1] || t[2] == t[3])
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "imageops model '%s': add_sub needs exactly two inputs (INPUT0, INPUT1) and two "
                                "outputs (OUTPUT0, OUTPUT1), config has %zu and %zu",
                                name, cfg->n_inputs, cfg->n_outputs);
    imagen_datatype dt = t[0]->datatype;
    if (dt != IMAGEN_TYPE_INT32 && dt != IMAGEN_TYPE_FP32)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "imageops model '%s': add_sub supports TYPE_INT32 and TYPE_FP32, input '%s' is %s",
                                name, t[0]->name, imagen_datatype_config_name(dt));
    for (int i = 1; i < 4; i++)
        if (t[i]->datatype != dt)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "imageops model '%s': add_sub tensors must share one data type: '%s' is %s, "
                                    "'%s' is %s",
                                    name, t[0]->name, imagen_datatype_config_name(dt), t[i]->name,
                                    imagen_datatype_config_name(t[i]->datatype));
    add_sub_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory", name);
    s->datatype = dt;
    s->model = strdup(name);
    for (int i = 0; i < 2; i++) {
        s->in[i] = strdup(t[i]->name);
        s->out[i] = strdup(t[2 + i]->name);
    }
    if (s->model == NULL || !s->in[0] || !s->in[1] || !s->out[0] || !s->out[1]) {
        add_sub_fini(s);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory", name);
    }
    *state = s;
    return NULL;
}

static bool
same_shape(const imagen_tensor *a, const imagen_tensor *b)
{
    if (a->rank != b->rank)
        return false;
    for (size_t i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return a->byte_size == b->byte_size;
}

/* out[k] = a[k] + b[k] (sign 1) or a[k] - b[k] (sign -1) over `count` elements. */
static void
combine(imagen_datatype dt, const unsigned char *a, const unsigned char *b, unsigned char *out, size_t count, int sign)
{
    for (size_t k = 0; k < count; k++) {
        if (dt == IMAGEN_TYPE_INT32) {
            uint32_t x, y, r;
            memcpy(&x, a + 4 * k, 4);
            memcpy(&y, b + 4 * k, 4);
            r = sign > 0 ? x + y : x - y; /* unsigned: wraps like two's complement */
            memcpy(out + 4 * k, &r, 4);
        } else {
            float x, y, r;
            memcpy(&x, a + 4 * k, 4);
            memcpy(&y, b + 4 * k, 4);
            r = sign > 0 ? x + y : x - y;
            memcpy(out + 4 * k, &r, 4);
        }
    }
}

static void
add_sub_one(const add_sub_state *s, imagen_request *req)
{
    const imagen_tensor *in[2];
    for (int i = 0; i < 2; i++) {
        in[i] = imagen_backend_request_input_by_name(req, s->in[i]);
        if (in[i] == NULL) {
            imagen_backend_request_fail(req, imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                                              "imageops model '%s': add_sub needs input '%s'", s->model,
                                                              s->in[i]));
            return;
        }
        if (in[i]->datatype != s->datatype) {
            imagen_backend_request_fail(req, imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                                              "imageops model '%s': input '%s' is %s, expected %s",
                                                              s->model, s->in[i], imagen_datatype_name(in[i]->datatype),
                                                              imagen_datatype_name(s->datatype)));
            return;
        }
    }
    if (!same_shape(in[0], in[1])) {
        char a[128], b[128];
        imagen_backend_request_fail(
            req, imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                  "imageops model '%s': add_sub inputs '%s' %s and '%s' %s must have the same shape",
                                  s->model, s->in[0], imagen__imageops_shape_str(in[0]->shape, in[0]->rank, a, 128),
                                  s->in[1], imagen__imageops_shape_str(in[1]->shape, in[1]->rank, b, 128)));
        return;
    }
    size_t count = in[0]->byte_size / 4;
    for (int o = 0; o < 2; o++) {
        if (!imagen_backend_request_output_requested(req, s->out[o]))
            continue;
        void *buf = NULL;
        imagen_error *err =
            imagen_backend_output_alloc(req, s->out[o], s->datatype, in[0]->shape, in[0]->rank, count * 4, &buf);
        if (err != NULL) {
            imagen_backend_request_fail(req, err);
            return;
        }
        if (count > 0)
            combine(s->datatype, in[0]->data, in[1]->data, buf, count, o == 0 ? 1 : -1);
    }
}

static void
add_sub_execute(void *state, imagen__pool *pool, imagen_request **requests, size_t n)
{
    for (size_t i = 0; i < n; i++)
        add_sub_one(state, requests[i]);
}

/* Row of the imageops operation table. */
const imagen__imageops_op imagen__imageops_add_sub_op = {
    .name = "add_sub",
    .init = add_sub_init,
    .fini = add_sub_fini,
    .execute = add_sub_execute,
};
