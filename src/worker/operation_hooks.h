/*
 * How the pipeline runs each operation: the part of a table entry that is
 * about pixels rather than parameters. Kept apart from operation.h so the
 * submit side (job_spec, the CLI) never sees pipeline internals.
 */
#ifndef IMAGEN_WORKER_OPERATION_HOOKS_H
#define IMAGEN_WORKER_OPERATION_HOOKS_H

#include <stdbool.h>

/* What happens to the input's alpha channel. */
typedef enum imagen_alpha_policy {
    IMAGEN_ALPHA_KEEP,         /* same size out as in: put the input alpha back unchanged */
    IMAGEN_ALPHA_RESIZE,       /* the output is larger: resize the alpha by the same factor */
    IMAGEN_ALPHA_MULTIPLY_MASK /* the model cuts its own alpha: multiply it with the input's */
} imagen_alpha_policy;

struct imagen_operation_hooks {
    /* Split large images into overlapping tiles sent max_batch_size at a
     * time and stitched back (models that only look at a neighbourhood,
     * like upscale). Otherwise the whole image goes in one request and an
     * image beyond the model's limits is refused. */
    bool tiled;
    /* Job parameter giving the output/input side ratio (an integer), or
     * NULL when the output has the input's size. */
    const char *scale_param;
    imagen_alpha_policy alpha;
};

#endif /* IMAGEN_WORKER_OPERATION_HOOKS_H */
