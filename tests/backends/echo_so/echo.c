/*
 * "echo": a minimal external backend, built as libimagen_echo.so, that the
 * integration tests load with --backend-directory. Output i is a copy of
 * input i (by position). It shows the whole contract of an external
 * backend: one exported entry symbol returning the vtable, and calls only to
 * the imagen_backend_* functions the server exports. model_init copies what
 * execute needs; execute runs on instance threads and only reads it.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "imagen/backend.h"

/* Model state: the config's input and output names, paired by position. */
typedef struct echo_model {
    size_t n;       /* pairs */
    char **inputs;  /* owned */
    char **outputs; /* owned */
} echo_model;

static void
echo_model_fini(void *model_state)
{
    echo_model *m = model_state;
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->inputs ? m->inputs[i] : NULL);
        free(m->outputs ? m->outputs[i] : NULL);
    }
    free(m->inputs);
    free(m->outputs);
    free(m);
}

static imagen_error *
echo_model_init(imagen_backend_model *model, void **model_state)
{
    const imagen_model_config *cfg = imagen_backend_model_config(model);
    const char *name = imagen_backend_model_name(model);
    if (cfg->n_outputs > cfg->n_inputs)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "echo model '%s': %zu outputs but only %zu inputs", name,
                                cfg->n_outputs, cfg->n_inputs);
    echo_model *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "echo model '%s': out of memory", name);
    m->n = cfg->n_outputs;
    m->inputs = calloc(m->n + 1, sizeof(char *));
    m->outputs = calloc(m->n + 1, sizeof(char *));
    bool ok = m->inputs != NULL && m->outputs != NULL;
    for (size_t i = 0; ok && i < m->n; i++) {
        m->inputs[i] = strdup(cfg->inputs[i].name);
        m->outputs[i] = strdup(cfg->outputs[i].name);
        ok = m->inputs[i] != NULL && m->outputs[i] != NULL;
    }
    if (!ok) {
        echo_model_fini(m);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "echo model '%s': out of memory", name);
    }
    *model_state = m;
    return NULL;
}

/* Copies input i of each request to output i. */
static void
echo_execute(void *model_state, void *instance_state, imagen_request **requests, size_t n)
{
    const echo_model *m = model_state;
    for (size_t r = 0; r < n; r++) {
        imagen_request *req = requests[r];
        for (size_t i = 0; i < m->n; i++) {
            const imagen_tensor *in = imagen_backend_request_input_by_name(req, m->inputs[i]);
            if (in == NULL) {
                imagen_backend_request_fail(
                    req, imagen_error_new(IMAGEN_ERR_INVALID_ARG, "echo: input '%s' missing", m->inputs[i]));
                break;
            }
            void *buf = NULL;
            imagen_error *err =
                imagen_backend_output_alloc(req, m->outputs[i], in->datatype, in->shape, in->rank, in->byte_size, &buf);
            if (err != NULL) {
                imagen_backend_request_fail(req, err);
                break;
            }
            if (in->byte_size > 0)
                memcpy(buf, in->data, in->byte_size);
        }
    }
}

static const imagen_backend echo_backend = {
    .abi_version = IMAGEN_BACKEND_ABI_VERSION,
    .name = "echo",
    .model_init = echo_model_init,
    .model_fini = echo_model_fini,
    .execute = echo_execute,
};

/* The one exported symbol (IMAGEN_BACKEND_ENTRY_SYMBOL): returns the vtable. */
__attribute__((visibility("default"))) const imagen_backend *imagen_backend_entry(void);

const imagen_backend *
imagen_backend_entry(void)
{
    return &echo_backend;
}
