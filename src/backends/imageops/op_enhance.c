/*
 * imageops operation `enhance` (being written).
 */
#include "backends/imageops/image_op.h"

static imagen_error *
enhance_process(const imagen__image_task *task)
{
    return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "imageops model '%s': operation 'enhance' is not built yet",
                            task->model);
}

static const imagen__image_op_desc enhance_desc = {
    .operation = "enhance",
    .n_controls = 1,
    .controls = {{"STRENGTH", IMAGEN_TYPE_FP32, 1.0, 0.0, 2.0}},
    .out_channels = 3,
    .has_mask = false,

    .process = enhance_process,
};

IMAGEN__IMAGE_OP_ROW(enhance, "enhance", enhance_desc);
