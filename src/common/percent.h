/*
 * Percent-decoding (RFC 3986 §2.1).
 */
#ifndef IMAGEN_COMMON_PERCENT_H
#define IMAGEN_COMMON_PERCENT_H

#include <stdbool.h>
#include <stddef.h>

/* Percent-decodes `len` bytes of `s` into a new NUL-terminated string (owned,
 * free()). *has_nul (NULL: not wanted) is set when a decoded byte is NUL.
 * Malformed escapes are kept literally. Returns NULL on allocation failure. */
char *imagen_percent_decode(const char *s, size_t len, bool *has_nul);

#endif /* IMAGEN_COMMON_PERCENT_H */
