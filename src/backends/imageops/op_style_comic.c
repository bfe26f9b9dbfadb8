/*
 * imageops operation `style_comic` (being written).
 */
#include "backends/imageops/image_op.h"

static imagen_error *
style_comic_process(const imagen__image_task *task)
{
    return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "imageops model '%s': operation 'style_comic' is not built yet",
                            task->model);
}

static const imagen__image_op_desc style_comic_desc = {
    .operation = "style_comic",
    .n_controls = 2,
    .controls = {{"STRENGTH", IMAGEN_TYPE_FP32, 1.0, 0.0, 1.0}, {"COLORS", IMAGEN_TYPE_INT32, 8, 2, 64}},
    .out_channels = 3,
    .has_mask = false,

    .process = style_comic_process,
};

IMAGEN__IMAGE_OP_ROW(style_comic, "style_comic", style_comic_desc);
