/* Unit tests for JSON tensor decoding/encoding in src/http/http_json.c. */
#include <string.h>

#include "http/http_internal.h"
#include "test.h"

#define MAX_BYTES (1u << 20)

static imagen_error *
decode(const char *json, imagen_datatype dt, uint64_t expected, void **out, size_t *size)
{
    imagen__jdoc doc;
    imagen__jdoc_init(&doc, NULL, 0);
    const imagen__jv *v = NULL;
    imagen__jdoc_error e;
    if (!imagen__jdoc_parse(&doc, json, strlen(json), &v, &e)) {
        imagen__jdoc_free(&doc);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "test JSON invalid: %s", e.text);
    }
    imagen_error *err = imagen__http_json_decode_tensor(v, dt, expected, MAX_BYTES, "IN", out, size);
    imagen__jdoc_free(&doc);
    return err;
}

static void
test_nested_and_flat_int32_decode_alike(void)
{
    void *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(decode("[[1,2],[3,-4]]", IMAGEN_TYPE_INT32, 4, &a, &na));
    CHECK_OK(decode("[1,2,3,-4]", IMAGEN_TYPE_INT32, 4, &b, &nb));
    CHECK_INT_EQ(na, 16);
    CHECK(na == nb && memcmp(a, b, na) == 0);
    CHECK_INT_EQ(((int32_t *)a)[3], -4);
    free(a);
    free(b);
}

static void
test_element_count_must_match_shape(void)
{
    void *p = NULL;
    size_t n = 0;
    CHECK_ERR(decode("[1,2,3]", IMAGEN_TYPE_INT32, 4, &p, &n), IMAGEN_ERR_INVALID_ARG, "does not match");
    CHECK_ERR(decode("[1,2,3]", IMAGEN_TYPE_INT32, 2, &p, &n), IMAGEN_ERR_INVALID_ARG, "does not match");
}

static void
test_depth_limit(void)
{
    char json[512];
    size_t k = 0;
    for (int i = 0; i < IMAGEN_HTTP_JSON_MAX_DEPTH + 1; i++)
        json[k++] = '[';
    json[k++] = '1';
    for (int i = 0; i < IMAGEN_HTTP_JSON_MAX_DEPTH + 1; i++)
        json[k++] = ']';
    json[k] = '\0';
    void *p = NULL;
    size_t n = 0;
    CHECK_ERR(decode(json, IMAGEN_TYPE_INT32, 1, &p, &n), IMAGEN_ERR_INVALID_ARG, "nesting");
}

static void
test_bool_requires_json_booleans(void)
{
    void *p = NULL;
    size_t n = 0;
    CHECK_OK(decode("[true,false]", IMAGEN_TYPE_BOOL, 2, &p, &n));
    CHECK(n == 2 && ((unsigned char *)p)[0] == 1 && ((unsigned char *)p)[1] == 0);
    free(p);
    CHECK_ERR(decode("[1,0]", IMAGEN_TYPE_BOOL, 2, &p, &n), IMAGEN_ERR_INVALID_ARG, "boolean");
}

static void
test_integers_truncate_and_unsigned_rejects_negative(void)
{
    void *p = NULL;
    size_t n = 0;
    CHECK_OK(decode("[300]", IMAGEN_TYPE_INT8, 1, &p, &n));
    CHECK_INT_EQ(((int8_t *)p)[0], 44);
    free(p);
    CHECK_ERR(decode("[-1]", IMAGEN_TYPE_UINT8, 1, &p, &n), IMAGEN_ERR_INVALID_ARG, "unsigned");
    CHECK_ERR(decode("[1.5]", IMAGEN_TYPE_INT32, 1, &p, &n), IMAGEN_ERR_INVALID_ARG, "integer");
}

static void
test_fp32_accepts_integers_and_reals(void)
{
    void *p = NULL;
    size_t n = 0;
    CHECK_OK(decode("[1, 0.5]", IMAGEN_TYPE_FP32, 2, &p, &n));
    CHECK(((float *)p)[0] == 1.0f && ((float *)p)[1] == 0.5f);
    free(p);
    CHECK_ERR(decode("[\"1\"]", IMAGEN_TYPE_FP32, 1, &p, &n), IMAGEN_ERR_INVALID_ARG, "number");
}

static void
test_bytes_get_length_prefixes(void)
{
    void *p = NULL;
    size_t n = 0;
    CHECK_OK(decode("[\"ab\", \"\", \"a\\u0000b\"]", IMAGEN_TYPE_BYTES, 3, &p, &n));
    CHECK_INT_EQ(n, 4 + 2 + 4 + 0 + 4 + 3);
    CHECK(memcmp(p, "\x02\0\0\0ab\0\0\0\0\x03\0\0\0a\0b", n) == 0);
    free(p);
    CHECK_ERR(decode("[1]", IMAGEN_TYPE_BYTES, 1, &p, &n), IMAGEN_ERR_INVALID_ARG, "string");
}

static void
test_fp16_and_bf16_are_rejected(void)
{
    void *p = NULL;
    size_t n = 0;
    CHECK_ERR(decode("[1]", IMAGEN_TYPE_FP16, 1, &p, &n), IMAGEN_ERR_INVALID_ARG, "FP16 data via JSON");
    CHECK_ERR(decode("[1]", IMAGEN_TYPE_BF16, 1, &p, &n), IMAGEN_ERR_INVALID_ARG, "BF16 data via JSON");
}

static void
test_decoded_size_limit(void)
{
    void *p = NULL;
    size_t n = 0;
    CHECK_ERR(decode("[1]", IMAGEN_TYPE_INT64, MAX_BYTES, &p, &n), IMAGEN_ERR_INVALID_ARG, "maximum input size");
}

static void
test_encode_numbers_flat(void)
{
    float f[3] = {0.5f, -2.0f, 0.1f};
    int64_t shape[2] = {1, 3};
    imagen_tensor t = {"OUT", IMAGEN_TYPE_FP32, shape, 2, f, sizeof(f)};
    imagen_buf b = IMAGEN_BUF_INIT;
    CHECK_OK(imagen__http_json_encode_tensor(&b, &t));
    CHECK_STR_EQ(b.data, "[0.5,-2,0.10000000149011612]");
    imagen_buf_free(&b);
}

static void
test_encode_bytes_and_reject_malformed(void)
{
    const char good[] = "\x01\0\0\0\"\x02\0\0\0hi";
    int64_t shape[1] = {2};
    imagen_tensor t = {"OUT", IMAGEN_TYPE_BYTES, shape, 1, good, sizeof(good) - 1};
    imagen_buf b = IMAGEN_BUF_INIT;
    CHECK_OK(imagen__http_json_encode_tensor(&b, &t));
    CHECK_STR_EQ(b.data, "[\"\\\"\",\"hi\"]");
    imagen_buf_reset(&b);
    t.data = "\x09\0\0\0ab";
    t.byte_size = 6;
    CHECK_ERR(imagen__http_json_encode_tensor(&b, &t), IMAGEN_ERR_INTERNAL, "malformed");
    imagen_buf_free(&b);
}

static void
test_error_body_is_valid_utf8(void)
{
    imagen_buf b = IMAGEN_BUF_INIT;
    imagen__http_json_error_body(&b, "bad '\xff\xfe' \xc3\xa9");
    CHECK_STR_EQ(b.data, "{\"error\":\"bad '\xef\xbf\xbd\xef\xbf\xbd' \xc3\xa9\"}");
    imagen_buf_free(&b);
}

static void
test_big_unsigned_only_for_unsigned_types(void)
{
    void *p = NULL;
    size_t n = 0;
    /* 2^64-1 is a JSON integer the document keeps whole. */
    CHECK_OK(decode("[18446744073709551615, 5]", IMAGEN_TYPE_UINT64, 2, &p, &n));
    CHECK(p != NULL && ((uint64_t *)p)[0] == UINT64_MAX && ((uint64_t *)p)[1] == 5);
    free(p);
    p = NULL;
    /* Signed types refuse it; negative values and strings stay refused. */
    CHECK_ERR(decode("[18446744073709551615]", IMAGEN_TYPE_INT64, 1, &p, &n), IMAGEN_ERR_INVALID_ARG, "integer");
    CHECK_ERR(decode("[-1, 18446744073709551615]", IMAGEN_TYPE_UINT64, 2, &p, &n), IMAGEN_ERR_INVALID_ARG, "unsigned");
    CHECK_ERR(decode("[\"5\"]", IMAGEN_TYPE_UINT64, 1, &p, &n), IMAGEN_ERR_INVALID_ARG, "unsigned");
    /* Floating types take it as the nearest double. */
    CHECK_OK(decode("[18446744073709551615]", IMAGEN_TYPE_FP64, 1, &p, &n));
    CHECK(p != NULL && ((double *)p)[0] == 18446744073709551615.0);
    free(p);
}

int
main(void)
{
    RUN(test_big_unsigned_only_for_unsigned_types);
    RUN(test_nested_and_flat_int32_decode_alike);
    RUN(test_element_count_must_match_shape);
    RUN(test_depth_limit);
    RUN(test_bool_requires_json_booleans);
    RUN(test_integers_truncate_and_unsigned_rejects_negative);
    RUN(test_fp32_accepts_integers_and_reals);
    RUN(test_bytes_get_length_prefixes);
    RUN(test_fp16_and_bf16_are_rejected);
    RUN(test_decoded_size_limit);
    RUN(test_encode_numbers_flat);
    RUN(test_encode_bytes_and_reject_malformed);
    RUN(test_error_body_is_valid_utf8);
    TEST_MAIN_END();
}
