/*
 * HTTP/1.1 request framing (RFC 9112): the request line and header section,
 * and the chunked transfer coding. Pure functions over caller-owned bytes:
 * no allocation, no sockets, no locks, so the server's connections, the unit
 * tests and the fuzzer all drive exactly the same code.
 *
 * The parser is strict where leniency would let two parties disagree about
 * where a request ends (duplicate or malformed Content-Length, a
 * Transfer-Encoding beside a Content-Length, obsolete line folding, bare CR)
 * and lenient where nothing is at stake (a bare LF ends a line, empty lines
 * before the request line are skipped).
 */
#include "http/http_internal.h"

#include <string.h>

static bool
is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool
span_ieq(const char *p, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    if (n != m)
        return false;
    for (size_t i = 0; i < n; i++) {
        char a = p[i], b = lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

/* Finds the end of the line starting at buf[i]: *eol is the index of the
 * CR or LF, the return value the index after the terminator; 0 when the
 * line is not complete; (size_t)-1 for a CR not followed by LF. */
static size_t
line_end(const char *buf, size_t len, size_t i, size_t *eol)
{
    const char *lf = memchr(buf + i, '\n', len - i);
    if (lf == NULL)
        return 0;
    size_t at = (size_t)(lf - buf);
    const char *cr = memchr(buf + i, '\r', at - i);
    if (cr != NULL && (size_t)(cr - buf) != at - 1)
        return (size_t)-1;
    *eol = cr != NULL ? at - 1 : at;
    return at + 1;
}

/* Walks the comma-separated tokens of a Connection value. */
static void
parse_connection(const char *v, size_t n, bool *close, bool *keep_alive)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (span_ieq(v + s, i - s, "close"))
            *close = true;
        else if (span_ieq(v + s, i - s, "keep-alive"))
            *keep_alive = true;
        while (i < n && v[i] != ',')
            i++;
    }
}

/* Transfer-Encoding: only "chunked" (optionally after "identity") is
 * understood; chunked must be the last coding (RFC 9112 §6.1). */
static int
parse_transfer_encoding(const char *v, size_t n, bool *chunked)
{
    bool saw_chunked = false;
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t' && v[i] != ';')
            i++;
        if (i == s)
            break;
        if (saw_chunked)
            return 400; /* a coding after chunked: the body's end is unknowable */
        if (span_ieq(v + s, i - s, "chunked"))
            saw_chunked = true;
        else if (!span_ieq(v + s, i - s, "identity"))
            return 501;
        while (i < n && v[i] != ',')
            i++;
    }
    *chunked = saw_chunked;
    return saw_chunked ? 0 : 400;
}

#define FAIL(st, msg)                   \
    do {                                \
        *status = (st);                 \
        *message = (msg);               \
        return IMAGEN_HTTP_PARSE_ERROR; \
    } while (0)

imagen__http_parse_result
imagen__http_parse_head(const char *buf, size_t len, imagen__http_head *head, int *status, const char **message)
{
    memset(head, 0, sizeof(*head));
    size_t i = 0;
    /* RFC 9112 §2.2: ignore empty lines before the request line. */
    while (i < len && (buf[i] == '\r' || buf[i] == '\n'))
        i++;
    if (i > 64)
        FAIL(400, "too many empty lines before the request line");

    /* ---- request line: method SP target SP HTTP/1.x ---- */
    size_t eol, next = line_end(buf, len, i, &eol);
    if (next == (size_t)-1)
        FAIL(400, "malformed request line");
    if (next == 0) {
        if (len > IMAGEN_HTTP_MAX_HEAD_BYTES)
            FAIL(414, "request line too long");
        return IMAGEN_HTTP_PARSE_INCOMPLETE;
    }
    if (next > IMAGEN_HTTP_MAX_HEAD_BYTES)
        FAIL(414, "request line too long");
    const char *line = buf + i;
    size_t n = eol - i;
    size_t m = 0;
    while (m < n && is_tchar((unsigned char)line[m]))
        m++;
    if (m == 0 || m >= n || line[m] != ' ')
        FAIL(400, "malformed request line");
    head->method = line;
    head->method_len = m;
    size_t t = m + 1, te = t;
    while (te < n && line[te] != ' ') {
        unsigned char c = (unsigned char)line[te];
        if (c <= 0x20 || c == 0x7f)
            FAIL(400, "malformed request target");
        te++;
    }
    if (te == t || te >= n)
        FAIL(400, "malformed request line");
    const char *ver = line + te + 1;
    size_t vlen = n - te - 1;
    if (vlen != 8 || memcmp(ver, "HTTP/", 5) != 0 || ver[5] < '0' || ver[5] > '9' || ver[6] != '.' || ver[7] < '0' ||
        ver[7] > '9')
        FAIL(400, "malformed HTTP version");
    if (ver[5] != '1')
        FAIL(505, "HTTP version not supported");
    head->minor_version = ver[7] - '0';

    /* Origin form "/path?query"; absolute form "http://host/path" is reduced
     * to its path (RFC 9112 §3.2.2); "*" and anything else route nowhere. */
    const char *target = line + t;
    size_t tlen = te - t;
    if (tlen > 7 && (span_ieq(target, 7, "http://") || (tlen > 8 && span_ieq(target, 8, "https://")))) {
        size_t k = target[4] == ':' ? 7 : 8;
        const char *slash = memchr(target + k, '/', tlen - k);
        if (slash == NULL) {
            target = "/";
            tlen = 1;
        } else {
            tlen -= (size_t)(slash - target);
            target = slash;
        }
    }
    const char *q = memchr(target, '?', tlen);
    head->path = target;
    head->path_len = q ? (size_t)(q - target) : tlen;

    /* ---- header fields ---- */
    bool conn_close = false, conn_keep_alive = false, has_te = false;
    i = next;
    for (;;) {
        if (i >= len) {
            if (len > IMAGEN_HTTP_MAX_HEAD_BYTES)
                FAIL(431, "request header fields too large");
            return IMAGEN_HTTP_PARSE_INCOMPLETE;
        }
        next = line_end(buf, len, i, &eol);
        if (next == (size_t)-1)
            FAIL(400, "malformed header line");
        if (next == 0) {
            if (len > IMAGEN_HTTP_MAX_HEAD_BYTES)
                FAIL(431, "request header fields too large");
            return IMAGEN_HTTP_PARSE_INCOMPLETE;
        }
        if (next > IMAGEN_HTTP_MAX_HEAD_BYTES)
            FAIL(431, "request header fields too large");
        if (eol == i)
            break; /* the empty line ending the head */
        line = buf + i;
        n = eol - i;
        if (line[0] == ' ' || line[0] == '\t')
            FAIL(400, "obsolete header line folding");
        m = 0;
        while (m < n && is_tchar((unsigned char)line[m]))
            m++;
        if (m == 0 || m >= n || line[m] != ':')
            FAIL(400, "malformed header line");
        size_t vs = m + 1, ve = n;
        while (vs < ve && (line[vs] == ' ' || line[vs] == '\t'))
            vs++;
        while (ve > vs && (line[ve - 1] == ' ' || line[ve - 1] == '\t'))
            ve--;
        for (size_t k = vs; k < ve; k++) {
            unsigned char c = (unsigned char)line[k];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                FAIL(400, "control character in a header value");
        }
        const char *v = line + vs;
        size_t vl = ve - vs;
        if (span_ieq(line, m, "content-length")) {
            if (vl == 0 || vl > 19)
                FAIL(400, "invalid Content-Length");
            uint64_t cl = 0;
            for (size_t k = 0; k < vl; k++) {
                if (v[k] < '0' || v[k] > '9')
                    FAIL(400, "invalid Content-Length");
                cl = cl * 10 + (uint64_t)(v[k] - '0');
            }
            if (head->has_content_length && cl != head->content_length)
                FAIL(400, "conflicting Content-Length headers");
            head->has_content_length = true;
            head->content_length = cl;
        } else if (span_ieq(line, m, "transfer-encoding")) {
            if (has_te)
                FAIL(400, "more than one Transfer-Encoding header");
            has_te = true;
            int st = parse_transfer_encoding(v, vl, &head->chunked);
            if (st == 501)
                FAIL(501, "unsupported Transfer-Encoding");
            if (st != 0)
                FAIL(400, "invalid Transfer-Encoding");
        } else if (span_ieq(line, m, "connection")) {
            parse_connection(v, vl, &conn_close, &conn_keep_alive);
        } else if (span_ieq(line, m, "expect")) {
            if (!span_ieq(v, vl, "100-continue"))
                FAIL(417, "unsupported Expect value");
            head->expect_continue = true;
        } else if (span_ieq(line, m, "content-encoding")) {
            head->content_encoding = v;
            head->content_encoding_len = vl;
        } else if (span_ieq(line, m, "accept-encoding")) {
            head->accept_encoding = v;
            head->accept_encoding_len = vl;
        } else if (span_ieq(line, m, "inference-header-content-length")) {
            head->infer_header_length = v;
            head->infer_header_length_len = vl;
        }
        i = next;
    }
    if (head->chunked && head->has_content_length)
        FAIL(400, "both Transfer-Encoding and Content-Length");
    head->head_len = next;
    head->keep_alive = head->minor_version >= 1 ? !conn_close : (conn_keep_alive && !conn_close);
    return IMAGEN_HTTP_PARSE_OK;
}

#undef FAIL

/* ---- chunked transfer coding (RFC 9112 §7.1) ---- */

enum {
    CHUNK_SIZE = 0, /* hex digits of the chunk size */
    CHUNK_EXT,      /* ";ext" up to the line end */
    CHUNK_SIZE_LF,  /* after CR of the size line */
    CHUNK_DATA,     /* `remaining` data bytes */
    CHUNK_DATA_CR,  /* CRLF after the data */
    CHUNK_DATA_LF,  /* LF after that CR */
    CHUNK_TRAILER,  /* start of a trailer line (or the final empty line) */
    CHUNK_TRAILER_LINE,
    CHUNK_TRAILER_LF, /* LF after the CR of a trailer line */
    CHUNK_FINAL_LF,   /* LF after the CR of the final empty line */
    CHUNK_DONE
};

#define CHUNK_MAX_LINE 4096 /* size line with extensions, or a trailer line */

void
imagen__http_chunked_init(imagen__http_chunked *c)
{
    memset(c, 0, sizeof(*c));
}

bool
imagen__http_chunked_done(const imagen__http_chunked *c)
{
    return c->state == CHUNK_DONE;
}

#define CHUNK_FAIL(msg)    \
    do {                   \
        *message = (msg);  \
        return (size_t)-1; \
    } while (0)

size_t
imagen__http_chunked_feed(imagen__http_chunked *c, const char *in, size_t len, imagen__http_body_sink sink, void *ctx,
                          const char **message)
{
    size_t i = 0;
    while (i < len && c->state != CHUNK_DONE) {
        char ch = in[i];
        switch (c->state) {
        case CHUNK_SIZE: {
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d >= 0) {
                if (c->remaining >> 59)
                    CHUNK_FAIL("chunk size too large");
                c->remaining = (c->remaining << 4) | (uint64_t)d;
                c->digits++;
                i++;
                break;
            }
            if (c->digits == 0)
                CHUNK_FAIL("malformed chunk size");
            if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = CHUNK_EXT;
            } else if (ch == '\r') {
                c->state = CHUNK_SIZE_LF;
            } else if (ch == '\n') {
                c->state = c->remaining ? CHUNK_DATA : CHUNK_TRAILER;
            } else {
                CHUNK_FAIL("malformed chunk size");
            }
            i++;
            break;
        }
        case CHUNK_EXT:
            if (++c->line_len > CHUNK_MAX_LINE)
                CHUNK_FAIL("chunk extension too long");
            if (ch == '\r')
                c->state = CHUNK_SIZE_LF;
            else if (ch == '\n')
                c->state = c->remaining ? CHUNK_DATA : CHUNK_TRAILER;
            i++;
            break;
        case CHUNK_SIZE_LF:
            if (ch != '\n')
                CHUNK_FAIL("malformed chunk size line");
            c->state = c->remaining ? CHUNK_DATA : CHUNK_TRAILER;
            i++;
            break;
        case CHUNK_DATA: {
            size_t take = len - i;
            if ((uint64_t)take > c->remaining)
                take = (size_t)c->remaining;
            if (!sink(ctx, in + i, take))
                CHUNK_FAIL("out of memory receiving the body");
            c->remaining -= take;
            i += take;
            if (c->remaining == 0)
                c->state = CHUNK_DATA_CR;
            break;
        }
        case CHUNK_DATA_CR:
            if (ch == '\r')
                c->state = CHUNK_DATA_LF;
            else if (ch == '\n')
                goto next_chunk;
            else
                CHUNK_FAIL("missing CRLF after chunk data");
            i++;
            break;
        case CHUNK_DATA_LF:
            if (ch != '\n')
                CHUNK_FAIL("missing CRLF after chunk data");
        next_chunk:
            c->state = CHUNK_SIZE;
            c->digits = 0;
            c->line_len = 0;
            i++;
            break;
        case CHUNK_TRAILER:
            c->line_len = 0;
            if (ch == '\r') {
                c->state = CHUNK_FINAL_LF;
            } else if (ch == '\n') {
                c->state = CHUNK_DONE;
            } else {
                c->state = CHUNK_TRAILER_LINE; /* trailer fields are read and ignored */
                c->line_len = 1;
            }
            i++;
            break;
        case CHUNK_TRAILER_LINE:
            if (++c->line_len > CHUNK_MAX_LINE)
                CHUNK_FAIL("trailer line too long");
            if (ch == '\r')
                c->state = CHUNK_TRAILER_LF;
            else if (ch == '\n')
                c->state = CHUNK_TRAILER;
            i++;
            break;
        case CHUNK_TRAILER_LF:
            if (ch != '\n')
                CHUNK_FAIL("malformed trailer line");
            c->state = CHUNK_TRAILER;
            i++;
            break;
        case CHUNK_FINAL_LF:
            if (ch != '\n')
                CHUNK_FAIL("malformed end of chunked body");
            c->state = CHUNK_DONE;
            i++;
            break;
        default:
            CHUNK_FAIL("chunked decoder in an impossible state");
        }
    }
    return i;
}

#undef CHUNK_FAIL
