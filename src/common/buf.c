/*
 * Growable buffer. Grows geometrically; a failed allocation marks the buffer
 * failed rather than aborting, so request handlers can answer 500 instead of
 * dying.
 */
#include "common/buf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
imagen_buf_init(imagen_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = false;
}

void
imagen_buf_free(imagen_buf *b)
{
    free(b->data);
    imagen_buf_init(b);
}

void
imagen_buf_reset(imagen_buf *b)
{
    b->len = 0;
    b->failed = false;
    if (b->data)
        b->data[0] = '\0';
}

bool
imagen_buf_reserve(imagen_buf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (extra > SIZE_MAX - b->len - 1) {
        b->failed = true;
        return false;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    b->data[b->len] = '\0';
    return true;
}

void
imagen_buf_append(imagen_buf *b, const void *data, size_t len)
{
    if (!imagen_buf_reserve(b, len))
        return;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void
imagen_buf_append_str(imagen_buf *b, const char *s)
{
    imagen_buf_append(b, s, strlen(s));
}

void
imagen_buf_append_char(imagen_buf *b, char c)
{
    imagen_buf_append(b, &c, 1);
}

void
imagen_buf_appendf(imagen_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        imagen_buf_append(b, small, (size_t)n);
        return;
    }
    if (!imagen_buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void
imagen_buf_append_u64(imagen_buf *b, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    imagen_buf_append(b, tmp + i, sizeof(tmp) - (size_t)i);
}

void
imagen_buf_append_i64(imagen_buf *b, int64_t v)
{
    if (v < 0) {
        imagen_buf_append_char(b, '-');
        imagen_buf_append_u64(b, (uint64_t)(-(v + 1)) + 1);
    } else {
        imagen_buf_append_u64(b, (uint64_t)v);
    }
}

void
imagen_buf_append_double(imagen_buf *b, double v)
{
    char tmp[40];
    /* Shortest of %.15g/%.16g/%.17g that parses back to the same value. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    imagen_buf_append_str(b, tmp);
}

void
imagen_buf_append_json_string(imagen_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (!imagen_buf_reserve(b, len + 2))
        return;
    imagen_buf_append_char(b, '"');
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        imagen_buf_append(b, s + start, i - start);
        start = i + 1;
        switch (c) {
        case '"':
            imagen_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            imagen_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            imagen_buf_append(b, "\\n", 2);
            break;
        case '\r':
            imagen_buf_append(b, "\\r", 2);
            break;
        case '\t':
            imagen_buf_append(b, "\\t", 2);
            break;
        case '\b':
            imagen_buf_append(b, "\\b", 2);
            break;
        case '\f':
            imagen_buf_append(b, "\\f", 2);
            break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            imagen_buf_append(b, esc, 6);
        }
        }
    }
    imagen_buf_append(b, s + start, len - start);
    imagen_buf_append_char(b, '"');
}

bool
imagen_buf_failed(const imagen_buf *b)
{
    return b->failed;
}

char *
imagen_buf_detach(imagen_buf *b, size_t *len)
{
    if (b->failed) {
        imagen_buf_free(b);
        return NULL;
    }
    if (b->data == NULL && !imagen_buf_reserve(b, 0))
        return NULL;
    char *d = b->data;
    if (len)
        *len = b->len;
    imagen_buf_init(b);
    return d;
}
