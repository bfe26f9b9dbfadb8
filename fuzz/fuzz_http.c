/*
 * libFuzzer target for HTTP/1.1 request framing (src/http/http_parse.c):
 * the bytes a client puts on the socket. The head parser runs on the input;
 * when it accepts a head, its pointers must lie inside the input (the path
 * of an absolute-form target without one is the constant "/") and the
 * head length must not exceed it. The bytes after a chunked head go through
 * the chunked decoder, whole and then split at every position the first
 * byte picks, and both runs must decode the same body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_internal.h"

typedef struct sink_buf {
    char *data;
    size_t len;
} sink_buf;

static bool
sink(void *ctx, const char *data, size_t n)
{
    sink_buf *b = ctx;
    char *grown = realloc(b->data, b->len + n + 1);
    if (grown == NULL)
        return false;
    memcpy(grown + b->len, data, n);
    b->data = grown;
    b->len += n;
    return true;
}

static bool
inside(const char *p, size_t n, const uint8_t *data, size_t size)
{
    return p == NULL || ((const uint8_t *)p >= data && (const uint8_t *)p + n <= data + size);
}

static size_t
decode(const char *in, size_t len, size_t step, sink_buf *out, bool *ok)
{
    imagen__http_chunked ch;
    imagen__http_chunked_init(&ch);
    size_t at = 0;
    *ok = true;
    while (at < len && !imagen__http_chunked_done(&ch)) {
        size_t n = len - at < step ? len - at : step;
        const char *msg = NULL;
        size_t used = imagen__http_chunked_feed(&ch, in + at, n, sink, out, &msg);
        if (used == (size_t)-1) {
            if (msg == NULL)
                abort();
            *ok = false;
            return at;
        }
        if (used > n || (used < n && !imagen__http_chunked_done(&ch)))
            abort(); /* consumed less without the body having ended */
        at += used;
    }
    return at;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    imagen__http_head h;
    int status = 0;
    const char *msg = NULL;
    imagen__http_parse_result r = imagen__http_parse_head((const char *)data, size, &h, &status, &msg);
    if (r == IMAGEN_HTTP_PARSE_ERROR && (msg == NULL || status < 400 || status > 505))
        abort();
    if (r != IMAGEN_HTTP_PARSE_OK)
        return 0;
    if (h.head_len > size || !inside(h.method, h.method_len, data, size) ||
        (!inside(h.path, h.path_len, data, size) && strcmp(h.path, "/") != 0) ||
        !inside(h.content_encoding, h.content_encoding_len, data, size) ||
        !inside(h.accept_encoding, h.accept_encoding_len, data, size) ||
        !inside(h.infer_header_length, h.infer_header_length_len, data, size))
        abort();
    if (!h.chunked)
        return 0;
    const char *body = (const char *)data + h.head_len;
    size_t len = size - h.head_len;
    size_t step = len ? (size_t)data[0] % len + 1 : 1;
    sink_buf whole = {NULL, 0}, split = {NULL, 0};
    bool ok1, ok2;
    size_t used1 = decode(body, len, len ? len : 1, &whole, &ok1);
    size_t used2 = decode(body, len, step, &split, &ok2);
    if (ok1 != ok2 || (ok1 && (used1 != used2 || whole.len != split.len ||
                               (whole.len && memcmp(whole.data, split.data, whole.len) != 0))))
        abort();
    free(whole.data);
    free(split.data);
    return 0;
}
