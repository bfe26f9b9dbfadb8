/*
 * Top-K classification of an output tensor (spec §1.11), shared by the HTTP
 * and gRPC frontends so both print the same "<value>:<index>[:<label>]"
 * strings. Pure function over memory: no locks, no core calls; the caller
 * passes the model's labels in.
 */
#include "common/classify.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct class_item {
    long double key; /* exact for every integer type and for doubles */
    size_t index;
} class_item;

static int
class_cmp(const void *a, const void *b)
{
    const class_item *x = a, *y = b;
    if (x->key > y->key)
        return -1;
    if (x->key < y->key)
        return 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Reads element i of a numeric tensor as a sort key and as printed text
 * (std::to_string of the native type: integers plainly, floats "%f"). */
static void
element_value(const imagen_tensor *t, size_t i, long double *key, char *text, size_t text_len)
{
    const unsigned char *e = (const unsigned char *)t->data + i * imagen_datatype_size(t->datatype);
    int64_t s = 0;
    uint64_t u = 0;
    double d = 0;
    int kind = 0; /* 0 signed, 1 unsigned, 2 real */
    switch (t->datatype) {
    case IMAGEN_TYPE_BOOL:
        u = e[0] ? 1 : 0;
        kind = 1;
        break;
    case IMAGEN_TYPE_UINT8:
        u = e[0];
        kind = 1;
        break;
    case IMAGEN_TYPE_UINT16: {
        uint16_t x;
        memcpy(&x, e, 2);
        u = x;
        kind = 1;
        break;
    }
    case IMAGEN_TYPE_UINT32: {
        uint32_t x;
        memcpy(&x, e, 4);
        u = x;
        kind = 1;
        break;
    }
    case IMAGEN_TYPE_UINT64: {
        memcpy(&u, e, 8);
        kind = 1;
        break;
    }
    case IMAGEN_TYPE_INT8: {
        int8_t x;
        memcpy(&x, e, 1);
        s = x;
        break;
    }
    case IMAGEN_TYPE_INT16: {
        int16_t x;
        memcpy(&x, e, 2);
        s = x;
        break;
    }
    case IMAGEN_TYPE_INT32: {
        int32_t x;
        memcpy(&x, e, 4);
        s = x;
        break;
    }
    case IMAGEN_TYPE_INT64: {
        memcpy(&s, e, 8);
        break;
    }
    case IMAGEN_TYPE_FP32: {
        float x;
        memcpy(&x, e, 4);
        d = x;
        kind = 2;
        break;
    }
    case IMAGEN_TYPE_FP64: {
        memcpy(&d, e, 8);
        kind = 2;
        break;
    }
    default:
        kind = 2;
        break;
    }
    if (kind == 0) {
        *key = (long double)s;
        snprintf(text, text_len, "%" PRId64, s);
    } else if (kind == 1) {
        *key = (long double)u;
        snprintf(text, text_len, "%" PRIu64, u);
    } else {
        *key = (long double)d;
        snprintf(text, text_len, "%f", d);
    }
}

imagen_error *
imagen_classify(const imagen_tensor *t, uint64_t k, bool batching, const char *const *labels, size_t n_labels,
                imagen_buf *data, int64_t *shape, size_t *rank)
{
    imagen_datatype dt = t->datatype;
    if (dt == IMAGEN_TYPE_BYTES || dt == IMAGEN_TYPE_FP16 || dt == IMAGEN_TYPE_BF16 || dt == IMAGEN_TYPE_INVALID)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "class result not available for output '%s' due to "
                                "unsupported type '%s'",
                                t->name, imagen_datatype_name(dt));
    size_t es = imagen_datatype_size(dt);
    size_t total = t->byte_size / es;
    size_t batch = 1;
    if (batching && t->rank >= 1)
        batch = t->shape[0] < 0 ? 0 : (size_t)t->shape[0];
    size_t per = batch ? total / batch : 0;
    size_t kk = k < per ? (size_t)k : per;
    if (batch * kk > IMAGEN_CLASSIFY_MAX_ELEMS)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "classification of output '%s' would produce more than %d elements", t->name,
                                IMAGEN_CLASSIFY_MAX_ELEMS);
    class_item *items = per ? malloc(per * sizeof(class_item)) : NULL;
    if (per && items == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    char value[64], entry[128];
    for (size_t b = 0; b < batch; b++) {
        for (size_t i = 0; i < per; i++) {
            element_value(t, b * per + i, &items[i].key, value, sizeof(value));
            items[i].index = i;
        }
        qsort(items, per, sizeof(class_item), class_cmp);
        for (size_t j = 0; j < kk; j++) {
            size_t idx = items[j].index;
            long double unused;
            element_value(t, b * per + idx, &unused, value, sizeof(value));
            int n = snprintf(entry, sizeof(entry), "%s:%zu", value, idx);
            const char *label = idx < n_labels ? labels[idx] : NULL;
            size_t label_len = label ? strlen(label) + 1 : 0;
            uint32_t len = (uint32_t)((size_t)n + label_len);
            unsigned char prefix[4] = {(unsigned char)len, (unsigned char)(len >> 8), (unsigned char)(len >> 16),
                                       (unsigned char)(len >> 24)};
            imagen_buf_append(data, prefix, 4);
            imagen_buf_append(data, entry, (size_t)n);
            if (label) {
                imagen_buf_append_char(data, ':');
                imagen_buf_append_str(data, label);
            }
        }
    }
    free(items);
    if (imagen_buf_failed(data))
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    *rank = 0;
    if (batching && t->rank >= 1)
        shape[(*rank)++] = (int64_t)batch;
    shape[(*rank)++] = (int64_t)kk;
    return NULL;
}
