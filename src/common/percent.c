/*
 * Percent-decoding (RFC 3986 §2.1), for the two places text arrives escaped:
 * model names in request paths (the HTTP frontend) and grpc-message in gRPC
 * trailers (the client).
 */
#include "common/percent.h"

#include <stdlib.h>

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *
imagen_percent_decode(const char *s, size_t len, bool *has_nul)
{
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    bool nul = false;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < len && (hi = hex_value(s[i + 1])) >= 0 && (lo = hex_value(s[i + 2])) >= 0) {
            char c = (char)(hi * 16 + lo);
            if (c == '\0')
                nul = true;
            out[o++] = c;
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    if (has_nul)
        *has_nul = nul;
    return out;
}
