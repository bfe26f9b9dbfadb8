/*
 * imageops operation `style_aged` (being written).
 */
#include "backends/imageops/image_op.h"

static imagen_error *
style_aged_process(const imagen__image_task *task)
{
    return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "imageops model '%s': operation 'style_aged' is not built yet",
                            task->model);
}

static const imagen__image_op_desc style_aged_desc = {
    .operation = "style_aged",
    .n_controls = 3,
    .controls = {{"STRENGTH", IMAGEN_TYPE_FP32, 1.0, 0.0, 1.0},
                 {"SEED", IMAGEN_TYPE_INT64, 0, 0, 9007199254740992.0},
                 {"DUST", IMAGEN_TYPE_FP32, 0.0, 0.0, 1.0}},
    .out_channels = 3,
    .has_mask = false,

    .process = style_aged_process,
};

IMAGEN__IMAGE_OP_ROW(style_aged, "style_aged", style_aged_desc);
