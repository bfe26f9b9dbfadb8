/*
 * The operation table: the one place that names the worker's operations,
 * their models, their job parameters (with the ranges and defaults of the
 * models' control inputs, src/backends/imageops/op_*.c) and how the
 * pipeline runs them (operation_hooks.h).
 */
#include "worker/operation.h"

#include <string.h>

#include "worker/operation_hooks.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- upscale ---------------------------------------------------------------- */

static const imagen_operation_param upscale_params[] = {
    {"scale", "SCALE", IMAGEN_TYPE_INT32, 2, 4, 2, "output size factor: 2, 3 or 4"},
};

static const struct imagen_operation_hooks upscale_hooks = {
    .tiled = true,
    .scale_param = "scale",
    .alpha = IMAGEN_ALPHA_RESIZE,
};

/* ---- enhance ------------------------------------------------------------------ */

static const imagen_operation_param enhance_params[] = {
    {"strength", "STRENGTH", IMAGEN_TYPE_FP32, 0, 2, 1, "0 = unchanged, 1 = full enhancement, up to 2 = stronger"},
};

/* enhance and the styles keep the image's size, so the input alpha goes
 * back as it was. */
static const struct imagen_operation_hooks same_size_hooks = {
    .tiled = false,
    .scale_param = NULL,
    .alpha = IMAGEN_ALPHA_KEEP,
};

/* ---- background_remove ---------------------------------------------------------- */

static const struct imagen_operation_hooks background_remove_hooks = {
    .tiled = false,
    .scale_param = NULL,
    .alpha = IMAGEN_ALPHA_MULTIPLY_MASK,
};

/* ---- style_comic ------------------------------------------------------------------ */

static const imagen_operation_param style_comic_params[] = {
    {"strength", "STRENGTH", IMAGEN_TYPE_FP32, 0, 1, 1, "blend of the comic look over the photo, 0 to 1"},
    {"colors", "COLORS", IMAGEN_TYPE_INT32, 2, 64, 8, "palette size, 2 to 64"},
};

/* ---- style_aged ---------------------------------------------------------------------- */

static const imagen_operation_param style_aged_params[] = {
    {"strength", "STRENGTH", IMAGEN_TYPE_FP32, 0, 1, 1, "how old the photo looks, 0 to 1"},
    /* 2^53: the largest seed a double (the job's JSON number) holds exactly. */
    {"seed", "SEED", IMAGEN_TYPE_INT64, 0, 9007199254740992.0, 0, "grain and dust pattern, 0 to 2^53"},
    {"dust", "DUST", IMAGEN_TYPE_FP32, 0, 1, 0, "dust and scratches, 0 (none) to 1"},
    {"sepia", "SEPIA", IMAGEN_TYPE_FP32, 0, 1, 1, "1 = sepia, 0 = faded colour print"},
};

const imagen_operation imagen_operations[] = {
    {"upscale", "upscale", "enlarge a photo 2x, 3x or 4x (tiled, any size up to the server's limits)", upscale_params,
     COUNT_OF(upscale_params), false, &upscale_hooks},
    {"enhance", "enhance", "white balance, levels, noise reduction, local contrast, sharpening", enhance_params,
     COUNT_OF(enhance_params), false, &same_size_hooks},
    {"background_remove", "background_remove", "cut the subject out of a plain background (RGBA PNG)", NULL, 0, true,
     &background_remove_hooks},
    {"style_comic", "style_comic", "flat colours and dark outlines", style_comic_params, COUNT_OF(style_comic_params),
     false, &same_size_hooks},
    {"style_aged", "style_aged", "an old photograph: sepia or faded colour, grain, vignette, dust", style_aged_params,
     COUNT_OF(style_aged_params), false, &same_size_hooks},
};

const size_t imagen_operation_count = COUNT_OF(imagen_operations);

const imagen_operation *
imagen_operation_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < imagen_operation_count; i++)
        if (strcmp(imagen_operations[i].name, name) == 0)
            return &imagen_operations[i];
    return NULL;
}

const imagen_operation_param *
imagen_operation_param_find(const imagen_operation *op, const char *name)
{
    if (op == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < op->n_params; i++)
        if (strcmp(op->params[i].name, name) == 0)
            return &op->params[i];
    return NULL;
}
