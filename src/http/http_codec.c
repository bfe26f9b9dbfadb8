/*
 * HTTP content coding (spec §1.1): parses Content-Encoding and
 * Accept-Encoding, inflates compressed request bodies under a hard output
 * limit (a small gzip body can expand a thousandfold), and compresses infer
 * responses. Pure functions over memory, called from network threads; they
 * never trust a compressed stream's own size claims.
 */
#include "http/http_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define INFLATE_CHUNK_BYTES (256u << 10) /* output growth step while inflating */
#define ZLIB_WINDOW_BITS 15
#define ZLIB_GZIP_WINDOW_BITS (15 + 16)

imagen__http_encoding
imagen__http_parse_content_encoding(const char *value)
{
    if (value == NULL)
        return IMAGEN_HTTP_ENC_IDENTITY;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0 || (len == 8 && strncasecmp(value, "identity", 8) == 0))
        return IMAGEN_HTTP_ENC_IDENTITY;
    if (len == 4 && strncasecmp(value, "gzip", 4) == 0)
        return IMAGEN_HTTP_ENC_GZIP;
    if (len == 7 && strncasecmp(value, "deflate", 7) == 0)
        return IMAGEN_HTTP_ENC_DEFLATE;
    return IMAGEN_HTTP_ENC_UNKNOWN;
}

const char *
imagen__http_encoding_name(imagen__http_encoding enc)
{
    switch (enc) {
    case IMAGEN_HTTP_ENC_GZIP:
        return "gzip";
    case IMAGEN_HTTP_ENC_DEFLATE:
        return "deflate";
    default:
        return NULL;
    }
}

/* Parses the q parameter of one Accept-Encoding element ("q=0.5"); 1.0 when
 * absent, -1 when malformed. */
static double
parse_q(const char *params, size_t len)
{
    double q = 1.0;
    size_t i = 0;
    while (i < len) {
        while (i < len && (params[i] == ';' || params[i] == ' ' || params[i] == '\t'))
            i++;
        size_t start = i;
        while (i < len && params[i] != ';')
            i++;
        if (i - start >= 2 && (params[start] == 'q' || params[start] == 'Q') && params[start + 1] == '=') {
            char tmp[16];
            size_t n = i - start - 2;
            if (n == 0 || n >= sizeof(tmp))
                return -1;
            memcpy(tmp, params + start + 2, n);
            tmp[n] = '\0';
            char *end;
            q = strtod(tmp, &end);
            while (*end == ' ' || *end == '\t')
                end++;
            if (*end != '\0' || q < 0 || q > 1)
                return -1;
        }
    }
    return q;
}

imagen__http_encoding
imagen__http_select_accept_encoding(const char *value)
{
    if (value == NULL)
        return IMAGEN_HTTP_ENC_IDENTITY;
    imagen__http_encoding best = IMAGEN_HTTP_ENC_IDENTITY;
    double best_q = 0.0;
    const char *p = value;
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        size_t i = 0;
        while (i < len && (p[i] == ' ' || p[i] == '\t'))
            i++;
        size_t tok = i;
        while (i < len && p[i] != ';' && p[i] != ' ' && p[i] != '\t')
            i++;
        size_t tok_len = i - tok;
        double q = parse_q(p + i, len - i);
        imagen__http_encoding enc = IMAGEN_HTTP_ENC_UNKNOWN;
        if (tok_len == 4 && strncasecmp(p + tok, "gzip", 4) == 0)
            enc = IMAGEN_HTTP_ENC_GZIP;
        else if (tok_len == 7 && strncasecmp(p + tok, "deflate", 7) == 0)
            enc = IMAGEN_HTTP_ENC_DEFLATE;
        else if (tok_len == 8 && strncasecmp(p + tok, "identity", 8) == 0)
            enc = IMAGEN_HTTP_ENC_IDENTITY;
        if (enc != IMAGEN_HTTP_ENC_UNKNOWN && q > best_q) {
            best = enc;
            best_q = q;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return best;
}

/* One inflate pass with the given window bits. Returns Z_OK on success,
 * Z_BUF_ERROR when the limit was hit, another zlib code on corrupt input. */
static int
inflate_with(int window_bits, const void *in, size_t len, size_t max_bytes, char **out, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, window_bits) != Z_OK)
        return Z_MEM_ERROR;
    size_t cap = len < INFLATE_CHUNK_BYTES ? INFLATE_CHUNK_BYTES : len * 2;
    if (cap > max_bytes + 1)
        cap = max_bytes + 1;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        inflateEnd(&zs);
        return Z_MEM_ERROR;
    }
    const unsigned char *src = in;
    size_t src_left = len, produced = 0;
    int rc = Z_OK;
    for (;;) {
        if (produced == cap) {
            if (cap > max_bytes) {
                rc = Z_BUF_ERROR;
                break;
            }
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (nb == NULL) {
                rc = Z_MEM_ERROR;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        uInt in_chunk = src_left > UINT32_MAX ? UINT32_MAX : (uInt)src_left;
        uInt out_chunk = cap - produced > UINT32_MAX ? UINT32_MAX : (uInt)(cap - produced);
        zs.next_in = (Bytef *)src;
        zs.avail_in = in_chunk;
        zs.next_out = (Bytef *)buf + produced;
        zs.avail_out = out_chunk;
        int z = inflate(&zs, Z_NO_FLUSH);
        src += in_chunk - zs.avail_in;
        src_left -= in_chunk - zs.avail_in;
        produced += out_chunk - zs.avail_out;
        if (z == Z_STREAM_END) {
            rc = produced > max_bytes ? Z_BUF_ERROR : Z_OK;
            break;
        }
        if (z == Z_BUF_ERROR && src_left == 0 && zs.avail_out > 0) {
            rc = Z_DATA_ERROR; /* truncated stream */
            break;
        }
        if (z != Z_OK && z != Z_BUF_ERROR) {
            rc = z;
            break;
        }
    }
    inflateEnd(&zs);
    if (rc != Z_OK) {
        free(buf);
        return rc;
    }
    buf[produced] = '\0';
    *out = buf;
    *out_len = produced;
    return Z_OK;
}

imagen_error *
imagen__http_inflate(imagen__http_encoding enc, const void *in, size_t len, size_t max_bytes, char **out,
                     size_t *out_len)
{
    int rc;
    if (enc == IMAGEN_HTTP_ENC_GZIP) {
        rc = inflate_with(ZLIB_GZIP_WINDOW_BITS, in, len, max_bytes, out, out_len);
    } else {
        rc = inflate_with(ZLIB_WINDOW_BITS, in, len, max_bytes, out, out_len);
        if (rc == Z_DATA_ERROR) /* some clients send raw deflate */
            rc = inflate_with(-ZLIB_WINDOW_BITS, in, len, max_bytes, out, out_len);
    }
    if (rc == Z_OK)
        return NULL;
    if (rc == Z_BUF_ERROR)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "decompressed request body exceeds the maximum input size of %zu bytes "
                                "(--http-max-input-size)",
                                max_bytes);
    if (rc == Z_MEM_ERROR)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory while decompressing the request body");
    return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "failed to decompress the request body as %s",
                            enc == IMAGEN_HTTP_ENC_GZIP ? "gzip" : "deflate");
}

bool
imagen__http_deflate(imagen__http_encoding enc, const void *in, size_t len, char **out, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    int bits = enc == IMAGEN_HTTP_ENC_GZIP ? ZLIB_GZIP_WINDOW_BITS : ZLIB_WINDOW_BITS;
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return false;
    uLong bound = deflateBound(&zs, (uLong)len) + 32;
    char *buf = malloc(bound);
    if (buf == NULL) {
        deflateEnd(&zs);
        return false;
    }
    const unsigned char *src = in;
    size_t src_left = len, produced = 0;
    int z;
    do {
        uInt in_chunk = src_left > UINT32_MAX ? UINT32_MAX : (uInt)src_left;
        uInt out_chunk = bound - produced > UINT32_MAX ? UINT32_MAX : (uInt)(bound - produced);
        zs.next_in = (Bytef *)src;
        zs.avail_in = in_chunk;
        zs.next_out = (Bytef *)buf + produced;
        zs.avail_out = out_chunk;
        z = deflate(&zs, in_chunk == src_left ? Z_FINISH : Z_NO_FLUSH);
        src += in_chunk - zs.avail_in;
        src_left -= in_chunk - zs.avail_in;
        produced += out_chunk - zs.avail_out;
    } while (z == Z_OK && produced < bound);
    deflateEnd(&zs);
    if (z != Z_STREAM_END) {
        free(buf);
        return false;
    }
    *out = buf;
    *out_len = produced;
    return true;
}
