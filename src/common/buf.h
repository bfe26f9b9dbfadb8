/*
 * imagen_buf: a growable byte buffer for building responses (JSON text,
 * Prometheus text, binary framing). Owned by whoever initialised it; free
 * with imagen_buf_free(). Not thread-safe.
 *
 * Allocation failure is sticky: after one, every append is a no-op and
 * imagen_buf_failed() returns true, so builders check once at the end.
 */
#ifndef IMAGEN_COMMON_BUF_H
#define IMAGEN_COMMON_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"

typedef struct imagen_buf {
    char *data; /* NUL-terminated while not failed */
    size_t len;
    size_t cap;
    bool failed;
} imagen_buf;

#define IMAGEN_BUF_INIT   \
    {                     \
        NULL, 0, 0, false \
    }

void imagen_buf_init(imagen_buf *b);
void imagen_buf_free(imagen_buf *b);
void imagen_buf_reset(imagen_buf *b); /* len = 0, keeps capacity */
bool imagen_buf_reserve(imagen_buf *b, size_t extra);
void imagen_buf_append(imagen_buf *b, const void *data, size_t len);
void imagen_buf_append_str(imagen_buf *b, const char *s);
void imagen_buf_append_char(imagen_buf *b, char c);
void imagen_buf_appendf(imagen_buf *b, const char *fmt, ...) IMAGEN_PRINTF(2, 3);
void imagen_buf_append_u64(imagen_buf *b, uint64_t v);
void imagen_buf_append_i64(imagen_buf *b, int64_t v);
/* Shortest representation that round-trips ("%.17g" trimmed); NaN/Inf as
 * JSON-incompatible tokens "nan"/"inf" are avoided by the caller. */
void imagen_buf_append_double(imagen_buf *b, double v);
/* Appends `s` as a JSON string literal with quotes, escaping as RFC 8259
 * requires; bytes >= 0x80 are copied unchanged. */
void imagen_buf_append_json_string(imagen_buf *b, const char *s, size_t len);
bool imagen_buf_failed(const imagen_buf *b);
/* Hands the data to the caller (owned, free()); the buffer is reset. */
char *imagen_buf_detach(imagen_buf *b, size_t *len);

#endif
