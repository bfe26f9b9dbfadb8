/*
 * imageops operation `upscale` (being written).
 */
#include "backends/imageops/image_op.h"

static void
upscale_output_size(const double *controls, size_t width, size_t height, size_t *out_width, size_t *out_height)
{
    *out_width = width * (size_t)controls[0];
    *out_height = height * (size_t)controls[0];
}

static imagen_error *
upscale_process(const imagen__image_task *task)
{
    return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "imageops model '%s': operation 'upscale' is not built yet",
                            task->model);
}

static const imagen__image_op_desc upscale_desc = {
    .operation = "upscale",
    .n_controls = 1,
    .controls = {{"SCALE", IMAGEN_TYPE_INT32, 2, 2, 4}},
    .out_channels = 3,
    .has_mask = false,
    .output_size = upscale_output_size,
    .process = upscale_process,
};

IMAGEN__IMAGE_OP_ROW(upscale, "upscale", upscale_desc);
