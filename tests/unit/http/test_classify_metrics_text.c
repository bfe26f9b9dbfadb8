/* Unit tests for classification formatting (src/common/classify.c, called
 * through src/http/http_infer.c) and the Prometheus text escapes
 * (src/http/metrics.c). */
#include <string.h>

#include "http/http_internal.h"
#include "test.h"

/* Unpacks element i of a [u32 len][bytes] buffer into `out`. */
static void
element(const imagen_buf *b, size_t index, char *out, size_t cap)
{
    size_t off = 0;
    for (size_t i = 0;; i++) {
        uint32_t len;
        memcpy(&len, b->data + off, 4);
        if (i == index) {
            size_t n = len < cap - 1 ? len : cap - 1;
            memcpy(out, b->data + off + 4, n);
            out[n] = '\0';
            return;
        }
        off += 4 + len;
    }
}

static void
test_float_values_use_six_decimals_and_labels(void)
{
    float v[4] = {0.1f, 3.3f, 0.5f, 2.0f};
    int64_t shape[1] = {4}, oshape[2];
    size_t orank = 0;
    imagen_tensor t = {"OUT", IMAGEN_TYPE_FP32, shape, 1, v, sizeof(v)};
    const char *labels[] = {"cat", "dog"};
    imagen_buf b = IMAGEN_BUF_INIT;
    CHECK_OK(imagen__http_classify(&t, 2, false, labels, 2, &b, oshape, &orank));
    char s[64];
    element(&b, 0, s, sizeof(s));
    CHECK_STR_EQ(s, "3.300000:1:dog");
    element(&b, 1, s, sizeof(s));
    CHECK_STR_EQ(s, "2.000000:3");
    CHECK_INT_EQ(orank, 1);
    CHECK_INT_EQ(oshape[0], 2);
    imagen_buf_free(&b);
}

static void
test_integer_values_print_plainly_per_batch_item(void)
{
    int32_t v[6] = {1, 9, 5, 7, 2, 8};
    int64_t shape[2] = {2, 3}, oshape[2];
    size_t orank = 0;
    imagen_tensor t = {"OUT", IMAGEN_TYPE_INT32, shape, 2, v, sizeof(v)};
    imagen_buf b = IMAGEN_BUF_INIT;
    CHECK_OK(imagen__http_classify(&t, 10, true, NULL, 0, &b, oshape, &orank));
    char s[64];
    element(&b, 0, s, sizeof(s));
    CHECK_STR_EQ(s, "9:1");
    element(&b, 3, s, sizeof(s));
    CHECK_STR_EQ(s, "8:2");
    CHECK_INT_EQ(orank, 2);
    CHECK_INT_EQ(oshape[0], 2);
    CHECK_INT_EQ(oshape[1], 3);
    imagen_buf_free(&b);
}

static void
test_ties_keep_index_order(void)
{
    uint8_t v[3] = {4, 4, 4};
    int64_t shape[1] = {3}, oshape[2];
    size_t orank = 0;
    imagen_tensor t = {"OUT", IMAGEN_TYPE_UINT8, shape, 1, v, sizeof(v)};
    imagen_buf b = IMAGEN_BUF_INIT;
    CHECK_OK(imagen__http_classify(&t, 3, false, NULL, 0, &b, oshape, &orank));
    char s[16];
    element(&b, 1, s, sizeof(s));
    CHECK_STR_EQ(s, "4:1");
    imagen_buf_free(&b);
}

static void
test_bytes_output_cannot_be_classified(void)
{
    int64_t shape[1] = {1}, oshape[2];
    size_t orank = 0;
    imagen_tensor t = {"OUT", IMAGEN_TYPE_BYTES, shape, 1, "\0\0\0\0", 4};
    imagen_buf b = IMAGEN_BUF_INIT;
    CHECK_ERR(imagen__http_classify(&t, 1, false, NULL, 0, &b, oshape, &orank), IMAGEN_ERR_INVALID_ARG, "BYTES");
    imagen_buf_free(&b);
}

static void
test_label_values_escape_backslash_quote_newline(void)
{
    imagen_buf b = IMAGEN_BUF_INIT;
    imagen__metrics_append_label_value(&b, "a\\b\"c\nd");
    CHECK_STR_EQ(b.data, "a\\\\b\\\"c\\nd");
    imagen_buf_free(&b);
}

static void
test_tag_names_are_sanitised(void)
{
    imagen_buf b = IMAGEN_BUF_INIT;
    imagen__metrics_append_tag_name(&b, "team-name.x");
    CHECK_STR_EQ(b.data, "_team_name_x");
    imagen_buf_free(&b);
}

int
main(void)
{
    RUN(test_float_values_use_six_decimals_and_labels);
    RUN(test_integer_values_print_plainly_per_batch_item);
    RUN(test_ties_keep_index_order);
    RUN(test_bytes_output_cannot_be_classified);
    RUN(test_label_values_escape_backslash_quote_newline);
    RUN(test_tag_names_are_sanitised);
    TEST_MAIN_END();
}
