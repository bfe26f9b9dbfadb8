/* Unit tests for the request JSON reader (src/http/http_jsondoc.c): values
 * of every type, escapes and UTF-8, the integer range, arenas that spill
 * past their first block, and every class of malformed text. */
#include <string.h>

#include "http/http_internal.h"
#include "test.h"

typedef struct parsed {
    imagen__jdoc doc;
    const imagen__jv *root;
    imagen__jdoc_error err;
    bool ok;
} parsed;

static void
parse_into(parsed *p, const char *text, size_t len, void *block, size_t cap)
{
    imagen__jdoc_init(&p->doc, block, cap);
    p->ok = imagen__jdoc_parse(&p->doc, text, len, &p->root, &p->err);
}

static bool
parses(const char *text)
{
    parsed p;
    parse_into(&p, text, strlen(text), NULL, 0);
    imagen__jdoc_free(&p.doc);
    return p.ok;
}

static void
test_infer_request_shape(void)
{
    const char *t = "{\"id\":\"r1\",\"inputs\":[{\"name\":\"INPUT0\",\"shape\":[1,3],\"datatype\":\"INT32\","
                    "\"data\":[1,-2,3]}],\"parameters\":{\"binary_data_output\":true,\"x\":1.5e2},\"id\":\"r2\"}";
    char block[4096];
    parsed p;
    parse_into(&p, t, strlen(t), block, sizeof(block));
    CHECK(p.ok);
    CHECK(p.doc.chunks == NULL); /* all of it in the caller's block */
    const imagen__jv *id = imagen__jv_object_get(p.root, "id");
    CHECK(imagen__jv_is(id, IMAGEN_JV_STRING));
    CHECK_STR_EQ(id->v.s, "r2"); /* the last duplicate wins */
    const imagen__jv *in = imagen__jv_object_get(p.root, "inputs");
    CHECK(imagen__jv_is(in, IMAGEN_JV_ARRAY) && in->n == 1);
    const imagen__jv *data = imagen__jv_object_get(&in->v.items[0], "data");
    CHECK(imagen__jv_is(data, IMAGEN_JV_ARRAY) && data->n == 3);
    CHECK_INT_EQ(data->v.items[1].v.i, -2);
    const imagen__jv *params = imagen__jv_object_get(p.root, "parameters");
    CHECK(imagen__jv_is(imagen__jv_object_get(params, "binary_data_output"), IMAGEN_JV_TRUE));
    const imagen__jv *x = imagen__jv_object_get(params, "x");
    CHECK(imagen__jv_is(x, IMAGEN_JV_REAL) && x->v.d == 150.0);
    CHECK(imagen__jv_object_get(params, "missing") == NULL);
    CHECK(imagen__jv_object_get(data, "x") == NULL); /* not an object */
    imagen__jdoc_free(&p.doc);
}

static void
test_integer_range(void)
{
    parsed p;
    const char *t = "[9223372036854775807,-9223372036854775808,9223372036854775808,18446744073709551615,-0,0]";
    parse_into(&p, t, strlen(t), NULL, 0);
    CHECK(p.ok);
    const imagen__jv *a = p.root->v.items;
    CHECK(a[0].type == IMAGEN_JV_INT && a[0].v.i == INT64_MAX);
    CHECK(a[1].type == IMAGEN_JV_INT && a[1].v.i == INT64_MIN);
    CHECK(a[2].type == IMAGEN_JV_UINT && a[2].v.u == (uint64_t)INT64_MAX + 1);
    CHECK(a[3].type == IMAGEN_JV_UINT && a[3].v.u == UINT64_MAX);
    CHECK(a[4].type == IMAGEN_JV_INT && a[4].v.i == 0);
    uint64_t u = 0;
    CHECK(imagen__jv_u64(&a[3], &u) && u == UINT64_MAX);
    CHECK(!imagen__jv_u64(&a[1], &u));
    imagen__jdoc_free(&p.doc);
    CHECK(!parses("[18446744073709551616]"));
    CHECK(!parses("[-9223372036854775809]"));
    CHECK(parses("[1e400]") == false); /* real overflow */
    CHECK(parses("[1e-400]"));         /* underflow to zero is fine */
}

static void
test_strings_escapes_and_utf8(void)
{
    parsed p;
    const char *t =
        "[\"a\\\"b\\\\c\\/\\b\\f\\n\\r\\t\", \"\\u00e9\\u20ac\\ud83d\\ude00\", \"x\\u0000y\", \"\xc3\xa9\"]";
    parse_into(&p, t, strlen(t), NULL, 0);
    CHECK(p.ok);
    const imagen__jv *a = p.root->v.items;
    CHECK_STR_EQ(a[0].v.s, "a\"b\\c/\b\f\n\r\t");
    CHECK_STR_EQ(a[1].v.s, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    CHECK_INT_EQ(a[2].n, 3); /* the escaped NUL is kept */
    CHECK(memcmp(a[2].v.s, "x\0y", 3) == 0);
    CHECK_STR_EQ(a[3].v.s, "\xc3\xa9");
    imagen__jdoc_free(&p.doc);
}

static void
test_malformed_text(void)
{
    static const char *bad[] = {
        "",
        "   ",
        "{",
        "[1,]",
        "[1 2]",
        "{\"a\" 1}",
        "{\"a\":1,}",
        "{1:2}",
        "[01]",
        "[1.]",
        "[.5]",
        "[1e]",
        "[+1]",
        "[-]",
        "[0x10]",
        "[NaN]",
        "[Infinity]",
        "[tru]",
        "[nul]",
        "\"abc",
        "\"a\x01\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\xff\"",
        "\"\xc3\"",
        "\"\xed\xa0\x80\"", /* an encoded surrogate */
        "\"\xc0\xaf\"",     /* overlong */
        "[1] x",
        "{} {}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        parsed p;
        parse_into(&p, bad[i], strlen(bad[i]), NULL, 0);
        if (p.ok)
            fprintf(stderr, "case %zu parsed: %s\n", i, bad[i]);
        CHECK(!p.ok);
        CHECK(p.err.text[0] != '\0');
        imagen__jdoc_free(&p.doc);
    }
    parsed p;
    parse_into(&p, "{\n  \"a\": [1,\n  ?]}", 17, NULL, 0);
    CHECK(!p.ok);
    CHECK_INT_EQ(p.err.line, 3);
    CHECK_INT_EQ(p.err.column, 3);
    CHECK_INT_EQ(p.err.position, 15);
    imagen__jdoc_free(&p.doc);
}

static void
test_text_is_not_read_past_its_length(void)
{
    /* A binary request: the JSON header is followed by tensor bytes that
     * must not be taken for more of the number. */
    const char body[] = "{\"x\":12}e5";
    parsed p;
    parse_into(&p, body, 8, NULL, 0);
    CHECK(p.ok);
    CHECK_INT_EQ(imagen__jv_object_get(p.root, "x")->v.i, 12);
    imagen__jdoc_free(&p.doc);
    const char real[] = "[1.5]9";
    parse_into(&p, real, 5, NULL, 0);
    CHECK(p.ok && p.root->v.items[0].v.d == 1.5);
    imagen__jdoc_free(&p.doc);
}

static void
test_nesting_limit(void)
{
    char deep[2100 * 2 + 1];
    memset(deep, '[', 1024);
    memset(deep + 1024, ']', 1024);
    CHECK(parses("[[[[1]]]]"));
    deep[2048] = '\0';
    CHECK(parses(deep)); /* exactly the limit */
    memset(deep, '[', 1025);
    memset(deep + 1025, ']', 1025);
    deep[2050] = '\0';
    CHECK(!parses(deep));
}

static void
test_large_document_spills_into_chunks(void)
{
    /* 20,000 numbers: far past a small first block. */
    size_t n = 20000;
    char *t = malloc(n * 6 + 3);
    size_t o = 0;
    t[o++] = '[';
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(t + o, i ? ",%zu" : "%zu", i % 1000);
    t[o++] = ']';
    char block[1024];
    parsed p;
    parse_into(&p, t, o, block, sizeof(block));
    CHECK(p.ok);
    CHECK(p.doc.chunks != NULL);
    CHECK_INT_EQ(p.root->n, n);
    CHECK_INT_EQ(p.root->v.items[n - 1].v.i, (int64_t)((n - 1) % 1000));
    imagen__jdoc_free(&p.doc);
    free(t);
}

int
main(void)
{
    RUN(test_infer_request_shape);
    RUN(test_integer_range);
    RUN(test_strings_escapes_and_utf8);
    RUN(test_malformed_text);
    RUN(test_text_is_not_read_past_its_length);
    RUN(test_nesting_limit);
    RUN(test_large_document_spills_into_chunks);
    TEST_MAIN_END();
}
