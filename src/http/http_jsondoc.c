/*
 * The JSON reader of inference requests: RFC 8259 text into a read-only
 * document of values laid out in one arena.
 *
 * Why not jansson, which the rest of the server uses: an inference request
 * is parsed on every call, and jansson allocates each value separately,
 * reads its input a character at a time through a stream layer and hashes
 * every key; for a small request that was a sixth of the server's CPU. Here
 * arrays and objects are contiguous, strings are copied once into the arena,
 * numbers are converted in place, and the arena's first block is the HTTP
 * thread's scratch memory, so a small request parses without calling malloc.
 * Integers keep their full range: int64, plus uint64 above INT64_MAX
 * (UINT64 tensors carry those), which jansson cannot represent.
 *
 * Strict: invalid UTF-8, control characters in strings, bad escapes, lone
 * surrogates, leading zeros, trailing garbage and nesting deeper than
 * JDOC_MAX_DEPTH are errors that name the offset, line and column.
 */
#include "http/http_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

#define JDOC_MAX_DEPTH 1024          /* containers inside containers */
#define JDOC_CHUNK_BYTES (64u << 10) /* arena growth beyond the first block */
#define JDOC_STACK_INITIAL 64        /* pending container members before the first growth */
#define JDOC_NUMBER_INLINE 64        /* longer real literals are copied to the heap for strtod */

typedef struct jchunk {
    struct jchunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
} jchunk;

typedef struct parser {
    const char *text;
    size_t len, pos;
    imagen__jdoc *doc;
    imagen__jv_member *stack; /* members of the containers being parsed */
    size_t sp, scap;
    imagen__jv_member stack_inline[JDOC_STACK_INITIAL];
    imagen__jdoc_error *err;
    bool failed;
} parser;

/* ---- arena ---------------------------------------------------------------- */

static void *
arena_alloc(imagen__jdoc *doc, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (doc->block != NULL && n <= doc->block_cap - doc->block_used) {
        void *p = doc->block + doc->block_used;
        doc->block_used += n;
        return p;
    }
    jchunk *c = doc->chunks;
    if (c == NULL || n > c->cap - c->used) {
        size_t cap = n > JDOC_CHUNK_BYTES ? n : JDOC_CHUNK_BYTES;
        c = malloc(sizeof(jchunk) + cap);
        if (c == NULL)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = doc->chunks;
        doc->chunks = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

void
imagen__jdoc_init(imagen__jdoc *doc, void *block, size_t block_cap)
{
    memset(doc, 0, sizeof(*doc));
    doc->block = block;
    doc->block_cap = block ? block_cap : 0;
}

void
imagen__jdoc_free(imagen__jdoc *doc)
{
    jchunk *c = doc->chunks;
    while (c != NULL) {
        jchunk *next = c->next;
        free(c);
        c = next;
    }
    doc->chunks = NULL;
    doc->block_used = 0;
}

/* ---- errors ------------------------------------------------------------------ */

static void
fail_at(parser *p, size_t at, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = true;
    if (at > p->len)
        at = p->len; /* an escape's second byte may lie past the end */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err->text, sizeof(p->err->text), fmt, ap);
    va_end(ap);
    int line = 1, col = 1;
    for (size_t i = 0; i < at && i < p->len; i++) {
        if (p->text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    p->err->line = line;
    p->err->column = col;
    p->err->position = at;
}

static void
fail_unexpected(parser *p)
{
    if (p->pos >= p->len) {
        fail_at(p, p->pos, "unexpected end of input");
        return;
    }
    unsigned char c = (unsigned char)p->text[p->pos];
    if (c >= 0x20 && c < 0x7f)
        fail_at(p, p->pos, "unexpected character '%c'", c);
    else
        fail_at(p, p->pos, "unexpected byte 0x%02x", c);
}

/* ---- lexing helpers --------------------------------------------------------- */

static void
skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static bool
literal(parser *p, const char *word, size_t n)
{
    if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0) {
        fail_at(p, p->pos, "invalid literal");
        return false;
    }
    p->pos += n;
    return true;
}

static int
hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Parses the string whose opening quote is at p->pos into a NUL-terminated
 * copy in the arena (escapes decoded; an escaped NUL is kept, so *len
 * counts bytes, not the C string). */
static bool
parse_string(parser *p, const char **out, size_t *out_len)
{
    size_t start = ++p->pos; /* after the quote */
    size_t i = start;
    bool escapes = false;
    /* First pass: find the end and validate, so the copy is sized once. */
    for (;;) {
        if (i >= p->len) {
            fail_at(p, i, "unterminated string");
            return false;
        }
        unsigned char c = (unsigned char)p->text[i];
        if (c == '"')
            break;
        if (c == '\\') {
            escapes = true;
            i += 2;
            continue;
        }
        if (c < 0x20) {
            fail_at(p, i, "control character 0x%02x in a string", c);
            return false;
        }
        size_t n = imagen_utf8_sequence((const unsigned char *)p->text + i, p->len - i);
        if (n == 0) {
            fail_at(p, i, "invalid UTF-8 in a string");
            return false;
        }
        i += n;
    }
    size_t raw = i - start;
    char *dst = arena_alloc(p->doc, raw + 1);
    if (dst == NULL) {
        fail_at(p, start, "out of memory");
        return false;
    }
    if (!escapes) {
        memcpy(dst, p->text + start, raw);
        dst[raw] = '\0';
        *out = dst;
        *out_len = raw;
        p->pos = i + 1;
        return true;
    }
    size_t o = 0;
    for (size_t k = start; k < i;) {
        char c = p->text[k];
        if (c != '\\') {
            dst[o++] = c;
            k++;
            continue;
        }
        char e = p->text[k + 1];
        k += 2;
        switch (e) {
        case '"':
            dst[o++] = '"';
            break;
        case '\\':
            dst[o++] = '\\';
            break;
        case '/':
            dst[o++] = '/';
            break;
        case 'b':
            dst[o++] = '\b';
            break;
        case 'f':
            dst[o++] = '\f';
            break;
        case 'n':
            dst[o++] = '\n';
            break;
        case 'r':
            dst[o++] = '\r';
            break;
        case 't':
            dst[o++] = '\t';
            break;
        case 'u': {
            int hi = k + 4 <= i ? hex4(p->text + k) : -1;
            if (hi < 0) {
                fail_at(p, k - 2, "invalid \\u escape");
                return false;
            }
            k += 4;
            uint32_t cp = (uint32_t)hi;
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                fail_at(p, k - 6, "lone low surrogate in \\u escape");
                return false;
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                int lo = k + 6 <= i && p->text[k] == '\\' && p->text[k + 1] == 'u' ? hex4(p->text + k + 2) : -1;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    fail_at(p, k - 6, "unpaired high surrogate in \\u escape");
                    return false;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
                k += 6;
            }
            /* A \u escape takes 6 source bytes and at most 3 decoded
             * (4 for a pair, from 12): the copy never outgrows `raw`. */
            o += imagen_utf8_encode(cp, dst + o);
            break;
        }
        default:
            fail_at(p, k - 2, "invalid escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
            return false;
        }
    }
    dst[o] = '\0';
    *out = dst;
    *out_len = o;
    p->pos = i + 1;
    return true;
}

static bool
parse_number(parser *p, imagen__jv *out)
{
    size_t start = p->pos, i = start;
    bool neg = false;
    if (i < p->len && p->text[i] == '-') {
        neg = true;
        i++;
    }
    size_t int_start = i;
    while (i < p->len && p->text[i] >= '0' && p->text[i] <= '9')
        i++;
    size_t int_digits = i - int_start;
    if (int_digits == 0) {
        p->pos = i;
        fail_unexpected(p);
        return false;
    }
    if (int_digits > 1 && p->text[int_start] == '0') {
        fail_at(p, int_start, "leading zero in a number");
        return false;
    }
    bool real = false;
    if (i < p->len && p->text[i] == '.') {
        real = true;
        size_t f = ++i;
        while (i < p->len && p->text[i] >= '0' && p->text[i] <= '9')
            i++;
        if (i == f) {
            fail_at(p, i, "digits expected after '.'");
            return false;
        }
    }
    if (i < p->len && (p->text[i] == 'e' || p->text[i] == 'E')) {
        real = true;
        i++;
        if (i < p->len && (p->text[i] == '+' || p->text[i] == '-'))
            i++;
        size_t e = i;
        while (i < p->len && p->text[i] >= '0' && p->text[i] <= '9')
            i++;
        if (i == e) {
            fail_at(p, i, "digits expected in an exponent");
            return false;
        }
    }
    p->pos = i;
    if (!real) {
        uint64_t u = 0;
        bool overflow = false;
        for (size_t k = int_start; k < i; k++) {
            uint64_t d = (uint64_t)(p->text[k] - '0');
            if (u > (UINT64_MAX - d) / 10)
                overflow = true;
            u = u * 10 + d;
        }
        if (!overflow && !neg && u <= (uint64_t)INT64_MAX) {
            out->type = IMAGEN_JV_INT;
            out->v.i = (int64_t)u;
            return true;
        }
        if (!overflow && !neg) {
            out->type = IMAGEN_JV_UINT;
            out->v.u = u;
            return true;
        }
        if (!overflow && neg && u <= (uint64_t)INT64_MAX + 1) {
            out->type = IMAGEN_JV_INT;
            out->v.i = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
            return true;
        }
        fail_at(p, start, "too big integer");
        return false;
    }
    /* The grammar is checked above, so strtod sees exactly a JSON number
     * (no hex, no inf/nan); copied because the text is not terminated. */
    char local[JDOC_NUMBER_INLINE + 1];
    size_t n = i - start;
    char *buf = n <= JDOC_NUMBER_INLINE ? local : malloc(n + 1);
    if (buf == NULL) {
        fail_at(p, start, "out of memory");
        return false;
    }
    memcpy(buf, p->text + start, n);
    buf[n] = '\0';
    errno = 0;
    double d = strtod(buf, NULL);
    if (buf != local)
        free(buf);
    if (errno == ERANGE && (d > 1.0 || d < -1.0)) {
        fail_at(p, start, "real number overflow");
        return false;
    }
    out->type = IMAGEN_JV_REAL;
    out->v.d = d;
    return true;
}

static bool
stack_push(parser *p, const char *key, size_t key_len, const imagen__jv *value)
{
    if (p->sp == p->scap) {
        size_t ncap = p->scap * 2;
        imagen__jv_member *grown = malloc(ncap * sizeof(*grown));
        if (grown == NULL) {
            fail_at(p, p->pos, "out of memory");
            return false;
        }
        memcpy(grown, p->stack, p->sp * sizeof(*grown));
        if (p->stack != p->stack_inline)
            free(p->stack);
        p->stack = grown;
        p->scap = ncap;
    }
    imagen__jv_member *m = &p->stack[p->sp++];
    m->key = key;
    m->key_len = key_len;
    m->value = *value;
    return true;
}

static bool parse_value(parser *p, imagen__jv *out, int depth);

static bool
parse_array(parser *p, imagen__jv *out, int depth)
{
    size_t base = p->sp;
    p->pos++; /* '[' */
    skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == ']') {
        p->pos++;
    } else {
        for (;;) {
            imagen__jv v;
            if (!parse_value(p, &v, depth + 1) || !stack_push(p, NULL, 0, &v))
                return false;
            skip_ws(p);
            if (p->pos < p->len && p->text[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->pos < p->len && p->text[p->pos] == ']') {
                p->pos++;
                break;
            }
            fail_unexpected(p);
            return false;
        }
    }
    size_t n = p->sp - base;
    out->type = IMAGEN_JV_ARRAY;
    out->n = n;
    out->v.items = NULL;
    if (n > 0) {
        if (n > SIZE_MAX / sizeof(imagen__jv) || (out->v.items = arena_alloc(p->doc, n * sizeof(imagen__jv))) == NULL) {
            fail_at(p, p->pos, "out of memory");
            return false;
        }
        for (size_t i = 0; i < n; i++)
            out->v.items[i] = p->stack[base + i].value;
    }
    p->sp = base;
    return true;
}

static bool
parse_object(parser *p, imagen__jv *out, int depth)
{
    size_t base = p->sp;
    p->pos++; /* '{' */
    skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == '}') {
        p->pos++;
    } else {
        for (;;) {
            skip_ws(p);
            if (p->pos >= p->len || p->text[p->pos] != '"') {
                if (p->pos < p->len)
                    fail_at(p, p->pos, "string or '}' expected");
                else
                    fail_unexpected(p);
                return false;
            }
            const char *key;
            size_t key_len;
            if (!parse_string(p, &key, &key_len))
                return false;
            skip_ws(p);
            if (p->pos >= p->len || p->text[p->pos] != ':') {
                fail_at(p, p->pos, "':' expected");
                return false;
            }
            p->pos++;
            imagen__jv v;
            if (!parse_value(p, &v, depth + 1) || !stack_push(p, key, key_len, &v))
                return false;
            skip_ws(p);
            if (p->pos < p->len && p->text[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->pos < p->len && p->text[p->pos] == '}') {
                p->pos++;
                break;
            }
            fail_unexpected(p);
            return false;
        }
    }
    size_t n = p->sp - base;
    out->type = IMAGEN_JV_OBJECT;
    out->n = n;
    out->v.members = NULL;
    if (n > 0) {
        if (n > SIZE_MAX / sizeof(imagen__jv_member) ||
            (out->v.members = arena_alloc(p->doc, n * sizeof(imagen__jv_member))) == NULL) {
            fail_at(p, p->pos, "out of memory");
            return false;
        }
        memcpy(out->v.members, p->stack + base, n * sizeof(imagen__jv_member));
    }
    p->sp = base;
    return true;
}

static bool
parse_value(parser *p, imagen__jv *out, int depth)
{
    memset(out, 0, sizeof(*out));
    skip_ws(p);
    if (p->pos >= p->len) {
        fail_unexpected(p);
        return false;
    }
    char c = p->text[p->pos];
    if ((c == '[' || c == '{') && depth >= JDOC_MAX_DEPTH) {
        fail_at(p, p->pos, "maximum nesting depth of %d exceeded", JDOC_MAX_DEPTH);
        return false;
    }
    switch (c) {
    case '{':
        return parse_object(p, out, depth);
    case '[':
        return parse_array(p, out, depth);
    case '"':
        out->type = IMAGEN_JV_STRING;
        return parse_string(p, &out->v.s, &out->n);
    case 't':
        out->type = IMAGEN_JV_TRUE;
        return literal(p, "true", 4);
    case 'f':
        out->type = IMAGEN_JV_FALSE;
        return literal(p, "false", 5);
    case 'n':
        out->type = IMAGEN_JV_NULL;
        return literal(p, "null", 4);
    default:
        return parse_number(p, out);
    }
}

bool
imagen__jdoc_parse(imagen__jdoc *doc, const char *text, size_t len, const imagen__jv **root, imagen__jdoc_error *err)
{
    memset(err, 0, sizeof(*err));
    parser p;
    p.text = text;
    p.len = len;
    p.pos = 0;
    p.doc = doc;
    p.stack = p.stack_inline;
    p.sp = 0;
    p.scap = JDOC_STACK_INITIAL;
    p.err = err;
    p.failed = false;
    imagen__jv *top = arena_alloc(doc, sizeof(imagen__jv));
    bool ok = top != NULL && parse_value(&p, top, 0);
    if (top == NULL)
        fail_at(&p, 0, "out of memory");
    if (ok) {
        skip_ws(&p);
        if (p.pos != p.len) {
            fail_at(&p, p.pos, "end of input expected");
            ok = false;
        }
    }
    if (p.stack != p.stack_inline)
        free(p.stack);
    *root = ok ? top : NULL;
    return ok;
}

const imagen__jv *
imagen__jv_object_get(const imagen__jv *o, const char *key)
{
    if (o == NULL || o->type != IMAGEN_JV_OBJECT)
        return NULL;
    size_t klen = strlen(key);
    /* The last of duplicate keys wins, as in jansson. */
    for (size_t i = o->n; i-- > 0;) {
        const imagen__jv_member *m = &o->v.members[i];
        if (m->key_len == klen && memcmp(m->key, key, klen) == 0)
            return &m->value;
    }
    return NULL;
}
