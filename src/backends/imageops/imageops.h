/*
 * Internals of the imageops backend: the operation table type and helpers
 * shared by the operations (op_*.c). Not a public header; only files under
 * src/backends/imageops include it.
 *
 * An operation's init runs on the loader thread (inside model_init) and
 * builds read-only state; its execute runs on instance threads, possibly on
 * several at once for one model, so it must not write that state.
 */
#ifndef IMAGEN_BACKENDS_IMAGEOPS_H
#define IMAGEN_BACKENDS_IMAGEOPS_H

#include <stddef.h>
#include <stdint.h>

#include "backends/imageops/pool.h"
#include "imagen/backend.h"

/* One row of the operation table (imageops.c). */
typedef struct imagen__imageops_op {
    const char *name; /* value of the config parameter `operation` */
    /* Reads the config and parameters of `model`; *state is the operation's
     * own and is passed to execute and fini. Errors name the model and the
     * parameter or tensor at fault. Loader thread. */
    imagen_error *(*init)(imagen_backend_model *model, void **state);
    /* Frees the state; accepts NULL. */
    void (*fini)(void *state);
    /* Executes a batch: fills or fails every request. Instance threads,
     * concurrently; `state` is read-only here. `pool` is the calling
     * instance's thread pool (see pool.h), never NULL. */
    void (*execute)(void *state, imagen__pool *pool, imagen_request **requests, size_t n);
} imagen__imageops_op;

/* Operation rows, defined in op_<name>.c. */
extern const imagen__imageops_op imagen__imageops_identity_op;
extern const imagen__imageops_op imagen__imageops_add_sub_op;
extern const imagen__imageops_op imagen__imageops_timed_op;
/* The five image operations (op_<name>.c, built on image_op.h). */
extern const imagen__imageops_op imagen__imageops_upscale_op;
extern const imagen__imageops_op imagen__imageops_enhance_op;
extern const imagen__imageops_op imagen__imageops_background_remove_op;
extern const imagen__imageops_op imagen__imageops_style_comic_op;
extern const imagen__imageops_op imagen__imageops_style_aged_op;

/* ---- helpers (imageops.c) ---- */

/* Identity pairing: output i copies input `input`. */
typedef struct imagen__imageops_pair {
    char *input;              /* owned */
    char *output;             /* owned */
    imagen_datatype datatype; /* both tensors' config data type */
} imagen__imageops_pair;

typedef struct imagen__imageops_pairs {
    char *model_name;             /* owned, for error messages */
    imagen__imageops_pair *pairs; /* owned array */
    size_t n;
} imagen__imageops_pairs;

/* Pairs every config output with an input: OUTPUT<k> with INPUT<k> when the
 * config has both names, otherwise output i with input i. Fails
 * INVALID_ARG when an output has no input or their data types differ. On
 * success *out is filled (free with imagen__imageops_pairs_free()). Loader
 * thread. */
imagen_error *imagen__imageops_pairs_init(imagen_backend_model *model, imagen__imageops_pairs *out);
void imagen__imageops_pairs_free(imagen__imageops_pairs *p);

/* Copies each paired input of `req` to its output (skipping outputs the
 * client did not request) or fails the request. Instance threads. */
void imagen__imageops_pairs_copy(const imagen__imageops_pairs *p, imagen_request *req);

/* Config tensor chosen by name, else by position: the input (or output)
 * called `name` if the config has one, otherwise entry `position`; NULL if
 * neither exists. Borrowed from the config. */
const imagen_tensor_config *imagen__imageops_tensor(const imagen_model_config *cfg, bool is_output, const char *name,
                                                    size_t position);

/* Reads config parameter `key` as a non-negative integer no larger than
 * `max`; `def` when the parameter is absent. Fails INVALID_ARG naming the
 * model and the parameter. */
imagen_error *imagen__imageops_param_u64(imagen_backend_model *model, const char *key, uint64_t def, uint64_t max,
                                         uint64_t *out);

/* Formats `shape` as "[2,16]" into buf (always NUL-terminated); returns buf. */
const char *imagen__imageops_shape_str(const int64_t *shape, size_t rank, char *buf, size_t len);

#endif /* IMAGEN_BACKENDS_IMAGEOPS_H */
