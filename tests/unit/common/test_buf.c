/* Unit tests for src/common/buf.c and the data type tables. */
#include "common/buf.h"
#include "imagen/types.h"
#include "test.h"

static void
test_json_string_escapes_controls_and_quotes(void)
{
    imagen_buf b = IMAGEN_BUF_INIT;
    imagen_buf_append_json_string(&b, "a\"b\\c\n\x01", 7);
    CHECK_STR_EQ(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    imagen_buf_free(&b);
}

static void
test_integers_and_doubles(void)
{
    imagen_buf b = IMAGEN_BUF_INIT;
    imagen_buf_append_i64(&b, INT64_MIN);
    imagen_buf_append_char(&b, ' ');
    imagen_buf_append_u64(&b, UINT64_MAX);
    imagen_buf_append_char(&b, ' ');
    imagen_buf_append_double(&b, 0.1);
    CHECK_STR_EQ(b.data, "-9223372036854775808 18446744073709551615 0.1");
    imagen_buf_free(&b);
}

static void
test_datatype_names_round_trip(void)
{
    CHECK_INT_EQ(imagen_datatype_from_name("FP32", 4), IMAGEN_TYPE_FP32);
    CHECK_INT_EQ(imagen_datatype_from_name("STRING", 6), IMAGEN_TYPE_INVALID);
    CHECK_INT_EQ(imagen_datatype_from_name("fp32", 4), IMAGEN_TYPE_INVALID);
    CHECK_STR_EQ(imagen_datatype_config_name(IMAGEN_TYPE_BYTES), "TYPE_STRING");
    CHECK_STR_EQ(imagen_datatype_name(IMAGEN_TYPE_BYTES), "BYTES");
    CHECK_INT_EQ(imagen_datatype_size(IMAGEN_TYPE_BF16), 2);
}

static void
test_shape_element_count_rejects_overflow(void)
{
    uint64_t n = 0;
    int64_t ok[] = {2, 3, 4};
    CHECK(imagen_shape_element_count(ok, 3, 1000, &n));
    CHECK_INT_EQ(n, 24);
    int64_t big[] = {INT64_MAX, INT64_MAX};
    CHECK(!imagen_shape_element_count(big, 2, UINT64_MAX, &n));
    int64_t neg[] = {2, -1};
    CHECK(!imagen_shape_element_count(neg, 2, 1000, &n));
    int64_t zero[] = {0, INT64_MAX};
    CHECK(imagen_shape_element_count(zero, 2, 10, &n));
    CHECK_INT_EQ(n, 0);
}

static void
test_detach_of_empty_buffer_is_terminated(void)
{
    imagen_buf b = IMAGEN_BUF_INIT;
    size_t len = 99;
    char *s = imagen_buf_detach(&b, &len);
    CHECK(s != NULL);
    CHECK_INT_EQ(len, 0);
    if (s)
        CHECK_STR_EQ(s, "");
    free(s);
}

int
main(void)
{
    RUN(test_detach_of_empty_buffer_is_terminated);
    RUN(test_json_string_escapes_controls_and_quotes);
    RUN(test_integers_and_doubles);
    RUN(test_datatype_names_round_trip);
    RUN(test_shape_element_count_rejects_overflow);
    TEST_MAIN_END();
}
