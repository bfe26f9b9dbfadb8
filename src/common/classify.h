/*
 * Top-K classification of one output tensor (spec §1.11), the one copy both
 * frontends call. Pure: takes no locks and reads nothing but its arguments,
 * so the model's labels are passed in by the caller.
 */
#ifndef IMAGEN_COMMON_CLASSIFY_H
#define IMAGEN_COMMON_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "imagen/error.h"
#include "imagen/types.h"

/* Most strings one classified output may hold (batch * K'), spec §1.11. */
#define IMAGEN_CLASSIFY_MAX_ELEMS 1000000

/* Replaces numeric tensor `t` by its top `k` entries per batch item, as BYTES
 * strings "<value>:<index>[:<label>]" in the [u32 len][bytes] layout,
 * appended to `data` (initialised by the caller). `batching` tells whether
 * dim 0 is the batch dim. `labels` (n_labels entries, may be NULL) name
 * class i. Fills OUT: shape (room for 2 dims) and *rank: [K'] or
 * [batch, K'], K' = min(k, elements per batch item). Values are printed as
 * C++ std::to_string would (integers plainly, floats "%f"); ties keep the
 * lower index first. INVALID_ARG for BYTES/FP16/BF16 outputs or more than
 * IMAGEN_CLASSIFY_MAX_ELEMS strings; INTERNAL on allocation failure. */
imagen_error *imagen_classify(const imagen_tensor *t, uint64_t k, bool batching, const char *const *labels,
                              size_t n_labels, imagen_buf *data, int64_t *shape, size_t *rank);

#endif
