/*
 * JSON tensor coding for the KServe v2 protocol (spec §1.9, §1.12): decodes
 * the "data" arrays of request inputs into contiguous little-endian buffers
 * and encodes output tensors as flat JSON arrays. Called from network
 * threads; pure. Every element count and byte size is checked against the
 * caller's limits before a byte is written, and nesting depth is bounded.
 */
#include "http/http_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

typedef struct decoder {
    imagen_datatype dt;
    size_t elem_size;     /* 0 for BYTES */
    uint64_t expected;    /* element count from the shape */
    uint64_t count;       /* elements written so far */
    unsigned char *fixed; /* fixed-size types: expected * elem_size bytes */
    imagen_buf bytes;     /* BYTES: [u32 len][bytes]... */
    size_t max_bytes;
    const char *name;
} decoder;

static imagen_error *
element_error(const decoder *d, const char *want)
{
    return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                            "Unable to parse 'data': expected %s value at element %" PRIu64
                            " of input '%s' with datatype '%s'",
                            want, d->count, d->name, imagen_datatype_name(d->dt));
}

static imagen_error *
count_error(const decoder *d)
{
    return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                            "Unable to parse 'data': Shape does not match true shape of 'data' field "
                            "for input '%s' (shape has %" PRIu64 " elements)",
                            d->name, d->expected);
}

/* Stores one scalar. JSON integers are read as int64 and truncated to the
 * element type without a range check (as Triton does). */
static imagen_error *
put_scalar(decoder *d, const imagen__jv *v)
{
    if (d->count >= d->expected)
        return count_error(d);
    unsigned char *dst = d->fixed + d->count * d->elem_size;
    switch (d->dt) {
    case IMAGEN_TYPE_BOOL: {
        if (!imagen__jv_is_boolean(v))
            return element_error(d, "a boolean");
        dst[0] = imagen__jv_is(v, IMAGEN_JV_TRUE) ? 1 : 0;
        break;
    }
    case IMAGEN_TYPE_UINT8:
    case IMAGEN_TYPE_UINT16:
    case IMAGEN_TYPE_UINT32:
    case IMAGEN_TYPE_UINT64: {
        uint64_t u = 0;
        if (!imagen__jv_u64(v, &u))
            return element_error(d, "an unsigned integer");
        if (d->dt == IMAGEN_TYPE_UINT8) {
            uint8_t x = (uint8_t)u;
            memcpy(dst, &x, 1);
        } else if (d->dt == IMAGEN_TYPE_UINT16) {
            uint16_t x = (uint16_t)u;
            memcpy(dst, &x, 2);
        } else if (d->dt == IMAGEN_TYPE_UINT32) {
            uint32_t x = (uint32_t)u;
            memcpy(dst, &x, 4);
        } else {
            memcpy(dst, &u, 8);
        }
        break;
    }
    case IMAGEN_TYPE_INT8:
    case IMAGEN_TYPE_INT16:
    case IMAGEN_TYPE_INT32:
    case IMAGEN_TYPE_INT64: {
        if (!imagen__jv_is(v, IMAGEN_JV_INT))
            return element_error(d, "an integer");
        int64_t s = (int64_t)(v)->v.i;
        if (d->dt == IMAGEN_TYPE_INT8) {
            int8_t x = (int8_t)s;
            memcpy(dst, &x, 1);
        } else if (d->dt == IMAGEN_TYPE_INT16) {
            int16_t x = (int16_t)s;
            memcpy(dst, &x, 2);
        } else if (d->dt == IMAGEN_TYPE_INT32) {
            int32_t x = (int32_t)s;
            memcpy(dst, &x, 4);
        } else {
            memcpy(dst, &s, 8);
        }
        break;
    }
    case IMAGEN_TYPE_FP32:
    case IMAGEN_TYPE_FP64: {
        if (!imagen__jv_is_number(v))
            return element_error(d, "a number");
        double x = imagen__jv_number_value(v);
        if (d->dt == IMAGEN_TYPE_FP32) {
            float f = (float)x;
            memcpy(dst, &f, 4);
        } else {
            memcpy(dst, &x, 8);
        }
        break;
    }
    default:
        return element_error(d, "a supported");
    }
    d->count++;
    return NULL;
}

static imagen_error *
put_string(decoder *d, const imagen__jv *v)
{
    if (d->count >= d->expected)
        return count_error(d);
    if (!imagen__jv_is(v, IMAGEN_JV_STRING))
        return element_error(d, "a string");
    size_t len = (v)->n;
    if (len > UINT32_MAX || d->bytes.len + 4 + len > d->max_bytes)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "input '%s' exceeds the maximum input size of %zu bytes (--http-max-input-size)",
                                d->name, d->max_bytes);
    uint32_t len32 = (uint32_t)len;
    unsigned char prefix[4] = {(unsigned char)len32, (unsigned char)(len32 >> 8), (unsigned char)(len32 >> 16),
                               (unsigned char)(len32 >> 24)};
    imagen_buf_append(&d->bytes, prefix, 4);
    imagen_buf_append(&d->bytes, (v)->v.s, len);
    if (imagen_buf_failed(&d->bytes))
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory decoding input '%s'", d->name);
    d->count++;
    return NULL;
}

/* Walks nested arrays depth-first; bounded by IMAGEN_HTTP_JSON_MAX_DEPTH so a
 * hostile body cannot exhaust the stack. */
static imagen_error *
walk(decoder *d, const imagen__jv *v, int depth)
{
    if (imagen__jv_is(v, IMAGEN_JV_ARRAY)) {
        if (depth >= IMAGEN_HTTP_JSON_MAX_DEPTH)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "Unable to parse 'data' of input '%s': nesting deeper than %d levels", d->name,
                                    IMAGEN_HTTP_JSON_MAX_DEPTH);
        size_t n = (v)->n;
        for (size_t i = 0; i < n; i++)
            IMAGEN_RETURN_IF_ERROR(walk(d, &(v)->v.items[i], depth + 1));
        return NULL;
    }
    return d->dt == IMAGEN_TYPE_BYTES ? put_string(d, v) : put_scalar(d, v);
}

imagen_error *
imagen__http_json_decode_tensor(const imagen__jv *data, imagen_datatype dt, uint64_t expected, size_t max_bytes,
                                const char *name, void **out, size_t *out_size)
{
    *out = NULL;
    *out_size = 0;
    if (dt == IMAGEN_TYPE_FP16 || dt == IMAGEN_TYPE_BF16)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "receiving %s data via JSON is not supported. Please use the binary data "
                                "format for input '%s'",
                                imagen_datatype_name(dt), name);
    if (dt == IMAGEN_TYPE_INVALID || (int)dt < 0 || (int)dt >= IMAGEN_DATATYPE_COUNT)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "invalid datatype for input '%s'", name);
    if (!imagen__jv_is(data, IMAGEN_JV_ARRAY))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'data' of input '%s': expected an array",
                                name);
    decoder d;
    memset(&d, 0, sizeof(d));
    d.dt = dt;
    d.elem_size = imagen_datatype_size(dt);
    d.expected = expected;
    d.max_bytes = max_bytes;
    d.name = name;
    imagen_buf_init(&d.bytes);
    if (dt != IMAGEN_TYPE_BYTES) {
        if (expected > (uint64_t)(max_bytes / d.elem_size))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "input '%s' of %" PRIu64
                                    " elements exceeds the maximum input size of %zu bytes (--http-max-input-size)",
                                    name, expected, max_bytes);
        if (expected > 0) {
            d.fixed = malloc((size_t)expected * d.elem_size);
            if (d.fixed == NULL)
                return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory decoding input '%s'", name);
        }
    }
    imagen_error *err = walk(&d, data, 0);
    if (err == NULL && d.count != d.expected)
        err = count_error(&d);
    if (err != NULL) {
        free(d.fixed);
        imagen_buf_free(&d.bytes);
        return err;
    }
    if (dt == IMAGEN_TYPE_BYTES) {
        size_t len = d.bytes.len;
        *out = d.bytes.data; /* may be NULL for an empty tensor */
        *out_size = len;
    } else {
        *out = d.fixed;
        *out_size = (size_t)expected * d.elem_size;
    }
    return NULL;
}

void
imagen__http_json_append_shape(imagen_buf *b, const int64_t *shape, size_t rank)
{
    imagen_buf_append_char(b, '[');
    for (size_t i = 0; i < rank; i++) {
        if (i)
            imagen_buf_append_char(b, ',');
        imagen_buf_append_i64(b, shape[i]);
    }
    imagen_buf_append_char(b, ']');
}

void
imagen__http_json_error_body(imagen_buf *b, const char *msg)
{
    /* Messages can quote client bytes (model names); invalid UTF-8 becomes
     * U+FFFD so that the error body is always valid JSON text. */
    imagen_buf clean = IMAGEN_BUF_INIT;
    const unsigned char *p = (const unsigned char *)msg;
    size_t n = strlen(msg);
    for (size_t i = 0; i < n;) {
        size_t len = imagen_utf8_sequence(p + i, n - i);
        if (len == 0) {
            imagen_buf_append(&clean, "\xef\xbf\xbd", 3);
            i++;
        } else {
            imagen_buf_append(&clean, p + i, len);
            i += len;
        }
    }
    imagen_buf_append_str(b, "{\"error\":");
    imagen_buf_append_json_string(b, clean.data ? clean.data : "", clean.len);
    imagen_buf_append_char(b, '}');
    imagen_buf_free(&clean);
}

/* Doubles that JSON cannot carry are written as the tokens Python's json
 * module reads (NaN, Infinity). */
static void
append_real(imagen_buf *b, double v)
{
    if (isnan(v))
        imagen_buf_append_str(b, "NaN");
    else if (isinf(v))
        imagen_buf_append_str(b, v > 0 ? "Infinity" : "-Infinity");
    else
        imagen_buf_append_double(b, v);
}

imagen_error *
imagen__http_json_encode_tensor(imagen_buf *b, const imagen_tensor *t)
{
    const unsigned char *p = t->data;
    imagen_buf_append_char(b, '[');
    if (t->datatype == IMAGEN_TYPE_BYTES) {
        size_t off = 0;
        bool first = true;
        while (off < t->byte_size) {
            if (t->byte_size - off < 4)
                return imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s' holds malformed BYTES data", t->name);
            uint32_t len =
                (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 | (uint32_t)p[off + 3] << 24;
            off += 4;
            if (len > t->byte_size - off)
                return imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s' holds malformed BYTES data", t->name);
            if (!first)
                imagen_buf_append_char(b, ',');
            first = false;
            imagen_buf_append_json_string(b, (const char *)p + off, len);
            off += len;
        }
        imagen_buf_append_char(b, ']');
        return NULL;
    }
    if (t->datatype == IMAGEN_TYPE_FP16 || t->datatype == IMAGEN_TYPE_BF16)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "sending %s data via JSON is not supported. Please use the binary data format "
                                "for output '%s'",
                                imagen_datatype_name(t->datatype), t->name);
    size_t es = imagen_datatype_size(t->datatype);
    if (es == 0)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s' has an invalid datatype", t->name);
    size_t n = t->byte_size / es;
    /* Rough reservation: most numbers fit in 12 characters. */
    imagen_buf_reserve(b, n * 12 + 2);
    for (size_t i = 0; i < n; i++) {
        if (i)
            imagen_buf_append_char(b, ',');
        const unsigned char *e = p + i * es;
        switch (t->datatype) {
        case IMAGEN_TYPE_BOOL:
            imagen_buf_append_str(b, e[0] ? "true" : "false");
            break;
        case IMAGEN_TYPE_UINT8:
            imagen_buf_append_u64(b, e[0]);
            break;
        case IMAGEN_TYPE_UINT16: {
            uint16_t x;
            memcpy(&x, e, 2);
            imagen_buf_append_u64(b, x);
            break;
        }
        case IMAGEN_TYPE_UINT32: {
            uint32_t x;
            memcpy(&x, e, 4);
            imagen_buf_append_u64(b, x);
            break;
        }
        case IMAGEN_TYPE_UINT64: {
            uint64_t x;
            memcpy(&x, e, 8);
            imagen_buf_append_u64(b, x);
            break;
        }
        case IMAGEN_TYPE_INT8: {
            int8_t x;
            memcpy(&x, e, 1);
            imagen_buf_append_i64(b, x);
            break;
        }
        case IMAGEN_TYPE_INT16: {
            int16_t x;
            memcpy(&x, e, 2);
            imagen_buf_append_i64(b, x);
            break;
        }
        case IMAGEN_TYPE_INT32: {
            int32_t x;
            memcpy(&x, e, 4);
            imagen_buf_append_i64(b, x);
            break;
        }
        case IMAGEN_TYPE_INT64: {
            int64_t x;
            memcpy(&x, e, 8);
            imagen_buf_append_i64(b, x);
            break;
        }
        case IMAGEN_TYPE_FP32: {
            float x;
            memcpy(&x, e, 4);
            append_real(b, (double)x);
            break;
        }
        case IMAGEN_TYPE_FP64: {
            double x;
            memcpy(&x, e, 8);
            append_real(b, x);
            break;
        }
        default:
            break;
        }
    }
    imagen_buf_append_char(b, ']');
    return NULL;
}
