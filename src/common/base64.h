/*
 * Base64 (RFC 4648) for the places JSON carries bytes: model files in the
 * repository load API and inline inputs of jobs.
 */
#ifndef IMAGEN_COMMON_BASE64_H
#define IMAGEN_COMMON_BASE64_H

#include <stdbool.h>
#include <stddef.h>

/* Standard alphabet with padding. Returns an owned NUL-terminated string
 * (free()), NULL when out of memory. */
char *imagen_base64_encode(const unsigned char *data, size_t len);

/* Decodes standard or URL-safe base64 (padding optional, whitespace
 * skipped). Returns false on a malformed string or out of memory; on
 * success *out is owned (free()) and *out_len its length. */
bool imagen_base64_decode(const char *s, size_t len, unsigned char **out, size_t *out_len);

#endif /* IMAGEN_COMMON_BASE64_H */
