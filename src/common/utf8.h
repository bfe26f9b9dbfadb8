/*
 * UTF-8 for the parsers that read text from clients and config files
 * (request JSON, config.pbtxt) and for the error bodies that quote it.
 */
#ifndef IMAGEN_COMMON_UTF8_H
#define IMAGEN_COMMON_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the well-formed UTF-8 sequence at s[0..avail) (avail >= 1),
 * 0 when it is not one: no overlong forms, no surrogates, <= U+10FFFF. */
size_t imagen_utf8_sequence(const unsigned char *s, size_t avail);

/* Writes code point cp (<= U+10FFFF, not a surrogate) to out; returns the
 * bytes written, 1 to 4. */
size_t imagen_utf8_encode(uint32_t cp, char out[4]);

#endif /* IMAGEN_COMMON_UTF8_H */
