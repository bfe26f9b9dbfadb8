/* Unit tests for binary framing (Inference-Header-Content-Length) and the
 * content codings of src/http/http_codec.c. */
#include <string.h>

#include "http/http_internal.h"
#include "test.h"

static void
test_header_length_accepts_digits_within_body(void)
{
    size_t n = 99;
    CHECK_OK(imagen__http_parse_header_length("0", 10, &n));
    CHECK_INT_EQ(n, 0);
    CHECK_OK(imagen__http_parse_header_length("10", 10, &n));
    CHECK_INT_EQ(n, 10);
}

static void
test_header_length_rejects_bad_values(void)
{
    size_t n = 0;
    CHECK_ERR(imagen__http_parse_header_length("11", 10, &n), IMAGEN_ERR_INVALID_ARG, "exceeds");
    CHECK_ERR(imagen__http_parse_header_length("-1", 10, &n), IMAGEN_ERR_INVALID_ARG, "non-negative");
    CHECK_ERR(imagen__http_parse_header_length("1x", 10, &n), IMAGEN_ERR_INVALID_ARG, "non-negative");
    CHECK_ERR(imagen__http_parse_header_length("", 10, &n), IMAGEN_ERR_INVALID_ARG, "empty");
    CHECK_ERR(imagen__http_parse_header_length("99999999999999999999999", 10, &n), IMAGEN_ERR_INVALID_ARG, "too large");
}

static void
test_content_encoding_names(void)
{
    CHECK_INT_EQ(imagen__http_parse_content_encoding(NULL), IMAGEN_HTTP_ENC_IDENTITY);
    CHECK_INT_EQ(imagen__http_parse_content_encoding("identity"), IMAGEN_HTTP_ENC_IDENTITY);
    CHECK_INT_EQ(imagen__http_parse_content_encoding(" GZIP "), IMAGEN_HTTP_ENC_GZIP);
    CHECK_INT_EQ(imagen__http_parse_content_encoding("deflate"), IMAGEN_HTTP_ENC_DEFLATE);
    CHECK_INT_EQ(imagen__http_parse_content_encoding("br"), IMAGEN_HTTP_ENC_UNKNOWN);
}

static void
test_accept_encoding_picks_highest_q(void)
{
    CHECK_INT_EQ(imagen__http_select_accept_encoding(NULL), IMAGEN_HTTP_ENC_IDENTITY);
    CHECK_INT_EQ(imagen__http_select_accept_encoding("gzip"), IMAGEN_HTTP_ENC_GZIP);
    CHECK_INT_EQ(imagen__http_select_accept_encoding("gzip;q=0.2, deflate;q=0.8"), IMAGEN_HTTP_ENC_DEFLATE);
    CHECK_INT_EQ(imagen__http_select_accept_encoding("br, identity;q=0.5, gzip;q=0.4"), IMAGEN_HTTP_ENC_IDENTITY);
    CHECK_INT_EQ(imagen__http_select_accept_encoding("gzip;q=0"), IMAGEN_HTTP_ENC_IDENTITY);
    CHECK_INT_EQ(imagen__http_select_accept_encoding("deflate, gzip"), IMAGEN_HTTP_ENC_DEFLATE);
    CHECK_INT_EQ(imagen__http_select_accept_encoding("gzip;q=abc"), IMAGEN_HTTP_ENC_IDENTITY);
}

static void
test_deflate_then_inflate_round_trips(void)
{
    const char text[] = "hello hello hello hello hello";
    imagen__http_encoding encs[2] = {IMAGEN_HTTP_ENC_GZIP, IMAGEN_HTTP_ENC_DEFLATE};
    for (int i = 0; i < 2; i++) {
        char *z = NULL, *plain = NULL;
        size_t zlen = 0, plen = 0;
        CHECK(imagen__http_deflate(encs[i], text, sizeof(text), &z, &zlen));
        CHECK_OK(imagen__http_inflate(encs[i], z, zlen, 1024, &plain, &plen));
        CHECK(plen == sizeof(text) && memcmp(plain, text, plen) == 0);
        free(z);
        free(plain);
    }
}

static void
test_inflate_stops_at_the_limit(void)
{
    size_t big = 1u << 20;
    char *zeros = calloc(1, big);
    char *z = NULL, *plain = NULL;
    size_t zlen = 0, plen = 0;
    CHECK(imagen__http_deflate(IMAGEN_HTTP_ENC_GZIP, zeros, big, &z, &zlen));
    CHECK_ERR(imagen__http_inflate(IMAGEN_HTTP_ENC_GZIP, z, zlen, 4096, &plain, &plen), IMAGEN_ERR_INVALID_ARG,
              "4096 bytes");
    CHECK_OK(imagen__http_inflate(IMAGEN_HTTP_ENC_GZIP, z, zlen, big, &plain, &plen));
    CHECK_INT_EQ(plen, big);
    free(plain);
    free(z);
    free(zeros);
}

static void
test_inflate_rejects_corrupt_and_truncated_input(void)
{
    char *z = NULL, *plain = NULL;
    size_t zlen = 0, plen = 0;
    CHECK_ERR(imagen__http_inflate(IMAGEN_HTTP_ENC_GZIP, "not gzip", 8, 1024, &plain, &plen), IMAGEN_ERR_INVALID_ARG,
              "decompress");
    CHECK(imagen__http_deflate(IMAGEN_HTTP_ENC_GZIP, "abcdefabcdef", 12, &z, &zlen));
    CHECK_ERR(imagen__http_inflate(IMAGEN_HTTP_ENC_GZIP, z, zlen / 2, 1024, &plain, &plen), IMAGEN_ERR_INVALID_ARG,
              "decompress");
    free(z);
}

int
main(void)
{
    RUN(test_header_length_accepts_digits_within_body);
    RUN(test_header_length_rejects_bad_values);
    RUN(test_content_encoding_names);
    RUN(test_accept_encoding_picks_highest_q);
    RUN(test_deflate_then_inflate_round_trips);
    RUN(test_inflate_stops_at_the_limit);
    RUN(test_inflate_rejects_corrupt_and_truncated_input);
    TEST_MAIN_END();
}
