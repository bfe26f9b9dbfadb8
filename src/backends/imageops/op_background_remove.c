/*
 * imageops operation `background_remove` (being written).
 */
#include "backends/imageops/image_op.h"

static imagen_error *
background_remove_process(const imagen__image_task *task)
{
    return imagen_error_new(IMAGEN_ERR_UNAVAILABLE,
                            "imageops model '%s': operation 'background_remove' is not built yet", task->model);
}

static const imagen__image_op_desc background_remove_desc = {
    .operation = "background_remove",
    .n_controls = 0,
    .out_channels = 4,
    .has_mask = true,

    .process = background_remove_process,
};

IMAGEN__IMAGE_OP_ROW(background_remove, "background_remove", background_remove_desc);
