/*
 * imageops operation `identity`: every output is a byte-for-byte copy of its
 * paired input (OUTPUT<k> <- INPUT<k>, or by position), for any data type
 * including BYTES and any shape. Init runs on the loader thread; execute on
 * instance threads, reading only the immutable pairing.
 */
#include <stdlib.h>

#include "backends/imageops/imageops.h"

static imagen_error *
identity_init(imagen_backend_model *model, void **state)
{
    imagen__imageops_pairs *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "imageops model '%s': out of memory",
                                imagen_backend_model_name(model));
    imagen_error *err = imagen__imageops_pairs_init(model, p);
    if (err != NULL) {
        free(p);
        return err;
    }
    *state = p;
    return NULL;
}

static void
identity_fini(void *state)
{
    imagen__imageops_pairs_free(state);
    free(state);
}

static void
identity_execute(void *state, imagen__pool *pool, imagen_request **requests, size_t n)
{
    for (size_t i = 0; i < n; i++)
        imagen__imageops_pairs_copy(state, requests[i]);
}

/* Row of the imageops operation table. */
const imagen__imageops_op imagen__imageops_identity_op = {
    .name = "identity",
    .init = identity_init,
    .fini = identity_fini,
    .execute = identity_execute,
};
