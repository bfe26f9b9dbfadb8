/*
 * The operations a worker knows: one table entry each (name, the model that
 * serves it, its job parameters and how they map to the model's control
 * inputs, pre- and post-processing). Adding an operation is adding an entry
 * to the table in operation.c; nothing else in the worker names operations.
 */
#ifndef IMAGEN_WORKER_OPERATION_H
#define IMAGEN_WORKER_OPERATION_H

#include <stdbool.h>
#include <stddef.h>

#include "imagen/types.h"

/* A numeric job parameter that becomes a [1]-shaped control input of the
 * model (SCALE, STRENGTH, ...). */
typedef struct imagen_operation_param {
    const char *name;         /* job parameter, lower case: "scale" */
    const char *tensor;       /* model input: "SCALE" */
    imagen_datatype datatype; /* of the tensor: INT32, INT64 or FP32 */
    double min, max;          /* inclusive range accepted at submit time */
    double fallback;          /* value when the job does not give one */
    const char *help;
} imagen_operation_param;

struct imagen_operation_hooks; /* pre/post-processing, defined by the worker */

typedef struct imagen_operation {
    const char *name;  /* queue name and job "op" */
    const char *model; /* model on the server */
    const char *help;  /* one line for --help */
    const imagen_operation_param *params;
    size_t n_params;
    bool output_rgba; /* the model's output has an alpha channel (PNG by default) */
    const struct imagen_operation_hooks *hooks;
} imagen_operation;

/* The table, in a fixed order (upscale, enhance, background_remove,
 * style_comic, style_aged). */
extern const imagen_operation imagen_operations[];
extern const size_t imagen_operation_count;

/* NULL when there is no operation of that name. */
const imagen_operation *imagen_operation_find(const char *name);
/* NULL when the operation has no parameter of that name. */
const imagen_operation_param *imagen_operation_param_find(const imagen_operation *op, const char *name);

#endif /* IMAGEN_WORKER_OPERATION_H */
