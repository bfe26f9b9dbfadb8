/* Unit tests for HTTP/1.1 request framing (src/http/http_parse.c): request
 * heads byte by byte, every error status, and the chunked decoder fed in
 * every split. */
#include <string.h>

#include "http/http_internal.h"
#include "test.h"

static imagen__http_parse_result
parse(const char *text, imagen__http_head *h, int *status)
{
    const char *msg = NULL;
    *status = 0;
    return imagen__http_parse_head(text, strlen(text), h, status, &msg);
}

static void
test_simple_post_head(void)
{
    const char *req = "POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n"
                      "Inference-Header-Content-Length:  7 \r\nAccept-Encoding: gzip\r\n\r\nBODY";
    imagen__http_head h;
    int st;
    CHECK_INT_EQ(parse(req, &h, &st), IMAGEN_HTTP_PARSE_OK);
    CHECK_INT_EQ(h.head_len, strlen(req) - 4);
    CHECK_INT_EQ(h.method_len, 4);
    CHECK(memcmp(h.method, "POST", 4) == 0);
    CHECK_INT_EQ(h.path_len, strlen("/v2/models/m/infer"));
    CHECK(memcmp(h.path, "/v2/models/m/infer", h.path_len) == 0);
    CHECK_INT_EQ(h.minor_version, 1);
    CHECK(h.keep_alive);
    CHECK(h.has_content_length);
    CHECK_INT_EQ(h.content_length, 12);
    CHECK(!h.chunked);
    CHECK_INT_EQ(h.infer_header_length_len, 1); /* surrounding spaces trimmed */
    CHECK(h.infer_header_length[0] == '7');
    CHECK_INT_EQ(h.accept_encoding_len, 4);
    CHECK(h.content_encoding == NULL);
}

static void
test_every_prefix_is_incomplete(void)
{
    const char *req = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    size_t n = strlen(req);
    for (size_t i = 0; i < n; i++) {
        imagen__http_head h;
        int st = 0;
        const char *msg = NULL;
        CHECK_INT_EQ(imagen__http_parse_head(req, i, &h, &st, &msg), IMAGEN_HTTP_PARSE_INCOMPLETE);
    }
    imagen__http_head h;
    int st;
    CHECK_INT_EQ(parse(req, &h, &st), IMAGEN_HTTP_PARSE_OK);
    CHECK(!h.keep_alive);
}

static void
test_keep_alive_by_version_and_connection(void)
{
    imagen__http_head h;
    int st;
    CHECK_INT_EQ(parse("GET / HTTP/1.0\r\n\r\n", &h, &st), IMAGEN_HTTP_PARSE_OK);
    CHECK(!h.keep_alive);
    CHECK_INT_EQ(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h, &st), IMAGEN_HTTP_PARSE_OK);
    CHECK(h.keep_alive);
    CHECK_INT_EQ(parse("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n", &h, &st), IMAGEN_HTTP_PARSE_OK);
    CHECK(!h.keep_alive);
    /* Bare LF line ends and leading empty lines are accepted. */
    CHECK_INT_EQ(parse("\r\n\nGET /x HTTP/1.1\nHost: y\n\n", &h, &st), IMAGEN_HTTP_PARSE_OK);
    CHECK(h.keep_alive);
    CHECK_INT_EQ(h.path_len, 2);
}

static void
test_absolute_form_target_is_reduced_to_its_path(void)
{
    imagen__http_head h;
    int st;
    CHECK_INT_EQ(parse("GET http://example.com:8000/v2/health/ready?q HTTP/1.1\r\n\r\n", &h, &st),
                 IMAGEN_HTTP_PARSE_OK);
    CHECK_INT_EQ(h.path_len, strlen("/v2/health/ready"));
    CHECK(memcmp(h.path, "/v2/health/ready", h.path_len) == 0);
    CHECK_INT_EQ(parse("GET http://example.com HTTP/1.1\r\n\r\n", &h, &st), IMAGEN_HTTP_PARSE_OK);
    CHECK_INT_EQ(h.path_len, 1);
}

static void
test_framing_errors_and_their_statuses(void)
{
    static const struct {
        const char *req;
        int status;
    } cases[] = {
        {"GET  / HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1 extra\r\n\r\n", 400},
        {"GET /\x01 HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/2.0\r\n\r\n", 505},
        {"GET / HTTP/1.x\r\n\r\n", 400},
        {"GET / FTP/1.1\r\n\r\n", 400},
        {"G(T / HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nNo colon\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nExpect: something-else\r\n\r\n", 417},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        imagen__http_head h;
        int st;
        imagen__http_parse_result r = parse(cases[i].req, &h, &st);
        if (r != IMAGEN_HTTP_PARSE_ERROR || st != cases[i].status)
            fprintf(stderr, "case %zu: %s\n", i, cases[i].req);
        CHECK_INT_EQ(r, IMAGEN_HTTP_PARSE_ERROR);
        CHECK_INT_EQ(st, cases[i].status);
    }
    /* Equal duplicate lengths are one length. */
    imagen__http_head h;
    int st;
    CHECK_INT_EQ(parse("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", &h, &st),
                 IMAGEN_HTTP_PARSE_OK);
    CHECK_INT_EQ(h.content_length, 5);
    CHECK_INT_EQ(
        parse("POST / HTTP/1.1\r\nTransfer-Encoding: identity, Chunked\r\nExpect: 100-Continue\r\n\r\n", &h, &st),
        IMAGEN_HTTP_PARSE_OK);
    CHECK(h.chunked);
    CHECK(h.expect_continue);
}

static void
test_oversized_heads(void)
{
    size_t n = IMAGEN_HTTP_MAX_HEAD_BYTES + 100;
    char *buf = malloc(n + 1);
    memset(buf, 'a', n);
    memcpy(buf, "GET /", 5);
    buf[n] = '\0';
    imagen__http_head h;
    int st;
    CHECK_INT_EQ(parse(buf, &h, &st), IMAGEN_HTTP_PARSE_ERROR);
    CHECK_INT_EQ(st, 414); /* no line end yet: a request line this long */
    memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
    CHECK_INT_EQ(parse(buf, &h, &st), IMAGEN_HTTP_PARSE_ERROR);
    CHECK_INT_EQ(st, 431);
    free(buf);
}

/* ---- chunked ---- */

typedef struct collect {
    char data[256];
    size_t len;
} collect;

static bool
collect_sink(void *ctx, const char *data, size_t n)
{
    collect *c = ctx;
    if (c->len + n > sizeof(c->data))
        return false;
    memcpy(c->data + c->len, data, n);
    c->len += n;
    return true;
}

static const char chunked_body[] = "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT";

static void
test_chunked_in_one_piece(void)
{
    imagen__http_chunked ch;
    imagen__http_chunked_init(&ch);
    collect out = {.len = 0};
    const char *msg = NULL;
    size_t used = imagen__http_chunked_feed(&ch, chunked_body, strlen(chunked_body), collect_sink, &out, &msg);
    CHECK(imagen__http_chunked_done(&ch));
    CHECK_INT_EQ(used, strlen(chunked_body) - 4); /* "NEXT" is the next request's */
    CHECK_INT_EQ(out.len, 16);
    CHECK(memcmp(out.data, "hello 0123456789", 16) == 0);
}

static void
test_chunked_byte_by_byte(void)
{
    imagen__http_chunked ch;
    imagen__http_chunked_init(&ch);
    collect out = {.len = 0};
    const char *msg = NULL;
    size_t total = strlen(chunked_body) - 4, i = 0;
    while (i < total) {
        size_t used = imagen__http_chunked_feed(&ch, chunked_body + i, 1, collect_sink, &out, &msg);
        CHECK_INT_EQ(used, 1);
        if (used != 1)
            break;
        i++;
        CHECK(imagen__http_chunked_done(&ch) == (i == total));
    }
    CHECK_INT_EQ(out.len, 16);
    CHECK(memcmp(out.data, "hello 0123456789", 16) == 0);
}

static void
test_chunked_errors(void)
{
    static const char *bad[] = {
        "x\r\n",                   /* not hex */
        "\r\n",                    /* no digits */
        "3\r\nabcX",               /* no CRLF after data */
        "3\r\nabc\rX",             /* CR without LF */
        "1000000000000000000\r\n", /* size overflows */
        "0\r\nTrailer\rX",         /* broken trailer line */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        imagen__http_chunked ch;
        imagen__http_chunked_init(&ch);
        collect out = {.len = 0};
        const char *msg = NULL;
        CHECK(imagen__http_chunked_feed(&ch, bad[i], strlen(bad[i]), collect_sink, &out, &msg) == (size_t)-1);
        CHECK(msg != NULL);
    }
}

int
main(void)
{
    RUN(test_simple_post_head);
    RUN(test_every_prefix_is_incomplete);
    RUN(test_keep_alive_by_version_and_connection);
    RUN(test_absolute_form_target_is_reduced_to_its_path);
    RUN(test_framing_errors_and_their_statuses);
    RUN(test_oversized_heads);
    RUN(test_chunked_in_one_piece);
    RUN(test_chunked_byte_by_byte);
    RUN(test_chunked_errors);
    TEST_MAIN_END();
}
