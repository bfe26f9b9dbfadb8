/*
 * The protobuf wire-format scanner of grpc_wire.h. It walks the top-level
 * fields only: each is a varint tag (field number << 3 | wire type)
 * followed by a varint (type 0), 8 bytes (type 1), a varint length and
 * that many bytes (type 2) or 4 bytes (type 5).
 */
#include "grpc/grpc_wire.h"

#include <stdbool.h>
#include <stdlib.h>

/* Largest field number protobuf allows (2^29 - 1). */
#define WIRE_MAX_FIELD 536870911u

/* Reads a varint of at most 10 bytes at buf[*pos, len). */
static bool
read_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (*pos >= len)
            return false;
        uint8_t b = buf[(*pos)++];
        if (i == 9 && b > 1) /* more than 64 bits */
            return false;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* Appends a span, merging it with the previous one when adjacent. */
static bool
push_span(imagen__grpc_span **arr, size_t *n, size_t *cap, size_t offset, size_t len, bool merge)
{
    if (merge && *n > 0 && (*arr)[*n - 1].offset + (*arr)[*n - 1].len == offset) {
        (*arr)[*n - 1].len += len;
        return true;
    }
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        imagen__grpc_span *a = realloc(*arr, ncap * sizeof(*a));
        if (a == NULL)
            return false;
        *arr = a;
        *cap = ncap;
    }
    (*arr)[(*n)++] = (imagen__grpc_span){offset, len};
    return true;
}

imagen__grpc_wire_result
imagen__grpc_wire_scan_message(const uint8_t *buf, size_t len, uint32_t field, imagen__grpc_wire_scan *out)
{
    *out = (imagen__grpc_wire_scan){0};
    size_t cap_found = 0, cap_rest = 0;
    size_t pos = 0;
    imagen__grpc_wire_result r = IMAGEN_GRPC_WIRE_MALFORMED;
    while (pos < len) {
        size_t start = pos;
        uint64_t tag = 0;
        if (!read_varint(buf, len, &pos, &tag))
            goto fail;
        uint64_t number = tag >> 3;
        unsigned wire = (unsigned)(tag & 7);
        if (number == 0 || number > WIRE_MAX_FIELD)
            goto fail;
        size_t payload = pos, payload_len = 0;
        uint64_t v = 0;
        switch (wire) {
        case 0:
            if (!read_varint(buf, len, &pos, &v))
                goto fail;
            break;
        case 1:
        case 5:
            payload_len = wire == 1 ? 8 : 4;
            if (len - pos < payload_len)
                goto fail;
            pos += payload_len;
            break;
        case 2:
            if (!read_varint(buf, len, &pos, &v) || v > len - pos)
                goto fail;
            payload = pos;
            payload_len = (size_t)v;
            pos += payload_len;
            break;
        default: /* groups (3, 4) and the undefined 6, 7 */
            goto fail;
        }
        bool ok;
        if (number == field) {
            if (wire != 2)
                goto fail;
            ok = push_span(&out->found, &out->n_found, &cap_found, payload, payload_len, false);
        } else {
            ok = push_span(&out->rest, &out->n_rest, &cap_rest, start, pos - start, true);
        }
        if (!ok) {
            r = IMAGEN_GRPC_WIRE_NOMEM;
            goto fail;
        }
    }
    return IMAGEN_GRPC_WIRE_OK;
fail:
    imagen__grpc_wire_scan_free(out);
    return r;
}

void
imagen__grpc_wire_scan_free(imagen__grpc_wire_scan *scan)
{
    free(scan->found);
    free(scan->rest);
    *scan = (imagen__grpc_wire_scan){0};
}
