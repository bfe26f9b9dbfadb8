/*
 * Protobuf text format (config.pbtxt) parser, spec §3.11: a tokenizer with
 * line:col tracking and a recursive-descent parser driven by the schema
 * tables. Called on a model-load thread; keeps no global state. Input is
 * hostile: size is capped (IMAGEN_CONFIG_MAX_BYTES), recursion is bounded by
 * IMAGEN_CONFIG_MAX_DEPTH, message count by IMAGEN_CONFIG_MAX_MESSAGES_COUNT,
 * every step is linear in the input, and every error path frees what it
 * built. It must never read past `len` or assume NUL termination.
 */
#include "config/schema.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/utf8.h"

typedef enum { TK_END, TK_IDENT, TK_INT, TK_FLOAT, TK_STRING, TK_SYM } tok_kind;

typedef struct {
    tok_kind kind;
    size_t start; /* byte offset in the input */
    size_t len;
    int line; /* 1-based */
    int col;  /* 1-based, in bytes */
} token;

typedef struct {
    const char *src;
    size_t len;
    size_t pos;
    int line;
    int col;
    const char *filename;
    token tok;         /* current lookahead */
    size_t n_msgs;     /* messages created so far */
    imagen_error *err; /* first error; parsing stops at it */
} parser;

/* ---- errors ---- */

static bool fail_at(parser *p, int line, int col, const char *field, const char *fmt, ...) IMAGEN_PRINTF(5, 6);

static bool
fail_at(parser *p, int line, int col, const char *field, const char *fmt, ...)
{
    if (p->err != NULL)
        return false;
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (field != NULL)
        p->err =
            imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s:%d:%d: %s (field '%s')", p->filename, line, col, what, field);
    else
        p->err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s:%d:%d: %s", p->filename, line, col, what);
    return false;
}

#define FAIL_TOK(p, t, field, ...) fail_at((p), (t)->line, (t)->col, (field), __VA_ARGS__)

/* ---- tokenizer ---- */

static bool
is_ident_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool
is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool
is_hex(int c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int
peek_at(const parser *p, size_t off)
{
    return p->pos + off < p->len ? (unsigned char)p->src[p->pos + off] : -1;
}

static void
bump(parser *p)
{
    if (p->src[p->pos] == '\n') {
        p->line++;
        p->col = 1;
    } else {
        p->col++;
    }
    p->pos++;
}

static void
skip_space_and_comments(parser *p)
{
    while (p->pos < p->len) {
        int c = (unsigned char)p->src[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            bump(p);
        } else if (c == '#') {
            while (p->pos < p->len && p->src[p->pos] != '\n')
                bump(p);
        } else {
            break;
        }
    }
}

/* Scans a number starting at the current position into p->tok. */
static bool
scan_number(parser *p)
{
    token *t = &p->tok;
    bool is_float = false;
    if (peek_at(p, 0) == '0' && (peek_at(p, 1) == 'x' || peek_at(p, 1) == 'X')) {
        bump(p);
        bump(p);
        if (!is_hex(peek_at(p, 0)))
            return FAIL_TOK(p, t, NULL, "\"0x\" must be followed by hex digits");
        while (is_hex(peek_at(p, 0)))
            bump(p);
    } else {
        while (is_digit(peek_at(p, 0)))
            bump(p);
        if (peek_at(p, 0) == '.') {
            is_float = true;
            bump(p);
            while (is_digit(peek_at(p, 0)))
                bump(p);
        }
        if (peek_at(p, 0) == 'e' || peek_at(p, 0) == 'E') {
            is_float = true;
            bump(p);
            if (peek_at(p, 0) == '+' || peek_at(p, 0) == '-')
                bump(p);
            if (!is_digit(peek_at(p, 0)))
                return FAIL_TOK(p, t, NULL, "\"e\" must be followed by an exponent");
            while (is_digit(peek_at(p, 0)))
                bump(p);
        }
        if (peek_at(p, 0) == 'f' || peek_at(p, 0) == 'F') {
            is_float = true;
            bump(p);
        }
    }
    int c = peek_at(p, 0);
    if (is_ident_start(c) || is_digit(c) || c == '.')
        return fail_at(p, p->line, p->col, NULL, "need space between number and identifier");
    t->kind = is_float ? TK_FLOAT : TK_INT;
    t->len = p->pos - t->start;
    return true;
}

static bool
scan_string(parser *p)
{
    token *t = &p->tok;
    char quote = p->src[p->pos];
    bump(p);
    for (;;) {
        int c = peek_at(p, 0);
        if (c < 0 || c == '\n')
            return FAIL_TOK(p, t, NULL, "unterminated string literal");
        bump(p);
        if (c == quote)
            break;
        if (c == '\\') {
            if (peek_at(p, 0) < 0 || peek_at(p, 0) == '\n')
                return FAIL_TOK(p, t, NULL, "unterminated string literal");
            bump(p);
        }
    }
    t->kind = TK_STRING;
    t->len = p->pos - t->start;
    return true;
}

/* Advances to the next token. False (with p->err set) on a lexical error. */
static bool
next(parser *p)
{
    skip_space_and_comments(p);
    token *t = &p->tok;
    t->start = p->pos;
    t->line = p->line;
    t->col = p->col;
    t->len = 0;
    if (p->pos >= p->len) {
        t->kind = TK_END;
        return true;
    }
    int c = (unsigned char)p->src[p->pos];
    if (is_ident_start(c)) {
        while (is_ident_start(peek_at(p, 0)) || is_digit(peek_at(p, 0)))
            bump(p);
        t->kind = TK_IDENT;
        t->len = p->pos - t->start;
        return true;
    }
    if (is_digit(c) || (c == '.' && is_digit(peek_at(p, 1))))
        return scan_number(p);
    if (c == '"' || c == '\'')
        return scan_string(p);
    if (strchr("{}<>[]:,;-", c) != NULL && c != '\0') {
        bump(p);
        t->kind = TK_SYM;
        t->len = 1;
        return true;
    }
    if (c >= 0x20 && c < 0x7f)
        return FAIL_TOK(p, t, NULL, "unexpected character '%c'", c);
    return FAIL_TOK(p, t, NULL, "unexpected byte 0x%02x", (unsigned)c);
}

static bool
at_sym(const parser *p, char c)
{
    return p->tok.kind == TK_SYM && p->src[p->tok.start] == c;
}

/* Consumes symbol `c` if it is next; *ok is false on a lexical error. */
static bool
accept(parser *p, char c, bool *ok)
{
    *ok = true;
    if (!at_sym(p, c))
        return false;
    *ok = next(p);
    return true;
}

static bool
tok_is(const parser *p, const char *word)
{
    size_t n = strlen(word);
    return p->tok.kind == TK_IDENT && p->tok.len == n && memcmp(p->src + p->tok.start, word, n) == 0;
}

static bool
tok_is_nocase(const parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->tok.kind != TK_IDENT || p->tok.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)p->src[p->tok.start + i];
        if (c >= 'A' && c <= 'Z')
            c = c - 'A' + 'a';
        if (c != word[i])
            return false;
    }
    return true;
}

/* Short printable description of the current token for messages. */
static void
describe(const parser *p, char *out, size_t cap)
{
    if (p->tok.kind == TK_END) {
        snprintf(out, cap, "end of input");
        return;
    }
    size_t n = p->tok.len > 32 ? 32 : p->tok.len;
    size_t k = 0;
    out[k++] = '\'';
    for (size_t i = 0; i < n && k + 5 < cap; i++) {
        char c = p->src[p->tok.start + i];
        out[k++] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    if (p->tok.len > n && k + 5 < cap) {
        out[k++] = '.';
        out[k++] = '.';
        out[k++] = '.';
    }
    out[k++] = '\'';
    out[k] = '\0';
}

/* ---- values ---- */

/* Converts an INT token to its magnitude: hex, octal (leading 0) or decimal. */
static bool
int_token_value(parser *p, const token *t, const char *field, uint64_t *out)
{
    const char *s = p->src + t->start;
    size_t n = t->len;
    unsigned base = 10;
    size_t i = 0;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    } else if (n > 1 && s[0] == '0') {
        base = 8;
        i = 1;
    }
    uint64_t v = 0;
    for (; i < n; i++) {
        int c = (unsigned char)s[i];
        unsigned d = is_digit(c) ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
        if (d >= base)
            return FAIL_TOK(p, t, field, "invalid digit in octal number");
        if (v > (UINT64_MAX - d) / base)
            return FAIL_TOK(p, t, field, "integer out of range");
        v = v * base + d;
    }
    *out = v;
    return true;
}

static const char *
type_name(imagen_config_type t)
{
    switch (t) {
    case IMAGEN_CONFIG_T_INT32:
        return "int32";
    case IMAGEN_CONFIG_T_INT64:
        return "int64";
    case IMAGEN_CONFIG_T_UINT32:
        return "uint32";
    case IMAGEN_CONFIG_T_UINT64:
        return "uint64";
    default:
        return "integer";
    }
}

static bool
parse_integer(parser *p, const imagen_config_field_desc *f, imagen_config_value *out)
{
    bool ok, neg = accept(p, '-', &ok);
    if (!ok)
        return false;
    token t = p->tok;
    char what[48];
    if (t.kind != TK_INT) {
        describe(p, what, sizeof(what));
        return FAIL_TOK(p, &t, f->name, "expected integer, got %s", what);
    }
    uint64_t mag;
    if (!int_token_value(p, &t, f->name, &mag))
        return false;
    if (!imagen_config_int_in_range(f->type, neg, mag))
        return FAIL_TOK(p, &t, f->name, "value out of range for %s", type_name(f->type));
    if (f->type == IMAGEN_CONFIG_T_UINT32 || f->type == IMAGEN_CONFIG_T_UINT64)
        out->u = mag;
    else
        out->i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return next(p);
}

static bool
parse_bool(parser *p, const imagen_config_field_desc *f, imagen_config_value *out)
{
    token t = p->tok;
    if (tok_is(p, "true") || tok_is(p, "True") || tok_is(p, "t")) {
        out->b = true;
    } else if (tok_is(p, "false") || tok_is(p, "False") || tok_is(p, "f")) {
        out->b = false;
    } else if (t.kind == TK_INT) {
        uint64_t v;
        if (!int_token_value(p, &t, f->name, &v))
            return false;
        if (v > 1)
            return FAIL_TOK(p, &t, f->name, "integer out of range for bool");
        out->b = v == 1;
    } else {
        char what[48];
        describe(p, what, sizeof(what));
        return FAIL_TOK(p, &t, f->name, "expected boolean, got %s", what);
    }
    return next(p);
}

static bool
parse_floating(parser *p, const imagen_config_field_desc *f, imagen_config_value *out)
{
    bool ok, neg = accept(p, '-', &ok);
    if (!ok)
        return false;
    token t = p->tok;
    double d;
    if (t.kind == TK_INT) {
        uint64_t v;
        if (!int_token_value(p, &t, f->name, &v))
            return false;
        d = (double)v;
    } else if (t.kind == TK_FLOAT) {
        char tmp[128];
        size_t n = t.len;
        const char *s = p->src + t.start;
        if (n && (s[n - 1] == 'f' || s[n - 1] == 'F'))
            n--;
        if (n >= sizeof(tmp)) {
            /* Very long literals: only the magnitude matters for a double. */
            char *big = imagen_config_strndup(s, n);
            if (big == NULL)
                return FAIL_TOK(p, &t, f->name, "out of memory");
            d = strtod(big, NULL);
            free(big);
        } else {
            memcpy(tmp, s, n);
            tmp[n] = '\0';
            d = strtod(tmp, NULL);
        }
    } else if (tok_is_nocase(p, "inf") || tok_is_nocase(p, "infinity")) {
        d = INFINITY;
    } else if (tok_is_nocase(p, "nan")) {
        d = NAN;
    } else {
        char what[48];
        describe(p, what, sizeof(what));
        return FAIL_TOK(p, &t, f->name, "expected number, got %s", what);
    }
    if (neg)
        d = -d;
    out->f = f->type == IMAGEN_CONFIG_T_FLOAT ? imagen_config_to_float(d) : d;
    return next(p);
}

static void
append_utf8(imagen_buf *b, uint32_t cp)
{
    char u[4];
    imagen_buf_append(b, u, imagen_utf8_encode(cp, u));
}

static int
hex_value(int c)
{
    return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* Decodes one string token (quotes and escapes) onto `b`. */
static bool
decode_string(parser *p, const token *t, const char *field, imagen_buf *b)
{
    const char *s = p->src + t->start + 1;
    size_t n = t->len - 2;
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && s[run] != '\\')
            run++;
        imagen_buf_append(b, s + i, run - i);
        i = run;
        if (i >= n)
            break;
        i++; /* backslash; the tokenizer guarantees a following byte */
        char c = s[i++];
        switch (c) {
        case 'n':
            imagen_buf_append_char(b, '\n');
            break;
        case 't':
            imagen_buf_append_char(b, '\t');
            break;
        case 'r':
            imagen_buf_append_char(b, '\r');
            break;
        case 'a':
            imagen_buf_append_char(b, '\a');
            break;
        case 'b':
            imagen_buf_append_char(b, '\b');
            break;
        case 'f':
            imagen_buf_append_char(b, '\f');
            break;
        case 'v':
            imagen_buf_append_char(b, '\v');
            break;
        case '\\':
        case '"':
        case '\'':
        case '?':
            imagen_buf_append_char(b, c);
            break;
        case 'x':
        case 'X': {
            if (i >= n || !is_hex((unsigned char)s[i]))
                return FAIL_TOK(p, t, field, "\\x must be followed by hex digits");
            unsigned v = 0;
            for (int k = 0; k < 2 && i < n && is_hex((unsigned char)s[i]); k++)
                v = v * 16 + (unsigned)hex_value((unsigned char)s[i++]);
            imagen_buf_append_char(b, (char)v);
            break;
        }
        case 'u':
        case 'U': {
            int digits = c == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int k = 0; k < digits; k++) {
                if (i >= n || !is_hex((unsigned char)s[i]))
                    return FAIL_TOK(p, t, field, "\\%c must be followed by %d hex digits", c, digits);
                cp = cp * 16 + (uint32_t)hex_value((unsigned char)s[i++]);
            }
            if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return FAIL_TOK(p, t, field, "invalid Unicode code point in \\%c escape", c);
            append_utf8(b, cp);
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                unsigned v = (unsigned)(c - '0');
                for (int k = 0; k < 2 && i < n && s[i] >= '0' && s[i] <= '7'; k++)
                    v = v * 8 + (unsigned)(s[i++] - '0');
                if (v > 0xff)
                    return FAIL_TOK(p, t, field, "octal escape out of range");
                imagen_buf_append_char(b, (char)v);
            } else {
                return FAIL_TOK(p, t, field, "invalid escape sequence in string literal");
            }
        }
    }
    return true;
}

/* Strict UTF-8 check (no overlong forms, no surrogates, <= U+10FFFF). */
static bool
utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0, k; i < n; i += k)
        if ((k = imagen_utf8_sequence(s + i, n - i)) == 0)
            return false;
    return true;
}

static bool
parse_string(parser *p, const imagen_config_field_desc *f, imagen_config_value *out)
{
    token first = p->tok;
    if (first.kind != TK_STRING) {
        char what[48];
        describe(p, what, sizeof(what));
        return FAIL_TOK(p, &first, f->name, "expected string, got %s", what);
    }
    imagen_buf b = IMAGEN_BUF_INIT;
    /* Adjacent literals concatenate: "a" 'b' == "ab". */
    while (p->tok.kind == TK_STRING) {
        token t = p->tok;
        if (!decode_string(p, &t, f->name, &b) || !next(p)) {
            imagen_buf_free(&b);
            return false;
        }
    }
    if (imagen_buf_failed(&b)) {
        imagen_buf_free(&b);
        return FAIL_TOK(p, &first, f->name, "out of memory");
    }
    /* Copied rather than detached: a detached empty imagen_buf is not
     * NUL-terminated. */
    size_t len = b.len;
    char *s = imagen_config_strndup(b.data ? b.data : "", len);
    imagen_buf_free(&b);
    if (s == NULL)
        return FAIL_TOK(p, &first, f->name, "out of memory");
    if (memchr(s, '\0', len) != NULL) {
        free(s);
        return FAIL_TOK(p, &first, f->name, "string contains a NUL character");
    }
    if (!utf8_valid((const unsigned char *)s, len)) {
        free(s);
        return FAIL_TOK(p, &first, f->name, "string is not valid UTF-8");
    }
    out->s.p = s;
    out->s.len = len;
    return true;
}

static bool
parse_enum(parser *p, const imagen_config_field_desc *f, imagen_config_value *out)
{
    token t = p->tok;
    if (t.kind == TK_IDENT) {
        int32_t v;
        if (!imagen_config_enum_by_name(f->en, p->src + t.start, t.len, false, &v))
            return FAIL_TOK(p, &t, f->name, "unknown value '%.*s' for enum %s", t.len > 64 ? 64 : (int)t.len,
                            p->src + t.start, f->en->name);
        out->i = v;
        return next(p);
    }
    if (t.kind == TK_INT || at_sym(p, '-')) {
        imagen_config_field_desc as_int = *f;
        as_int.type = IMAGEN_CONFIG_T_INT32;
        if (!parse_integer(p, &as_int, out))
            return false;
        if (!imagen_config_enum_known(f->en, out->i))
            return FAIL_TOK(p, &t, f->name, "unknown value %lld for enum %s", (long long)out->i, f->en->name);
        return true;
    }
    char what[48];
    describe(p, what, sizeof(what));
    return FAIL_TOK(p, &t, f->name, "expected enum value, got %s", what);
}

static bool
parse_scalar(parser *p, const imagen_config_field_desc *f, imagen_config_value *out)
{
    switch (f->type) {
    case IMAGEN_CONFIG_T_INT32:
    case IMAGEN_CONFIG_T_INT64:
    case IMAGEN_CONFIG_T_UINT32:
    case IMAGEN_CONFIG_T_UINT64:
        return parse_integer(p, f, out);
    case IMAGEN_CONFIG_T_BOOL:
        return parse_bool(p, f, out);
    case IMAGEN_CONFIG_T_FLOAT:
    case IMAGEN_CONFIG_T_DOUBLE:
        return parse_floating(p, f, out);
    case IMAGEN_CONFIG_T_STRING:
        return parse_string(p, f, out);
    case IMAGEN_CONFIG_T_ENUM:
        return parse_enum(p, f, out);
    case IMAGEN_CONFIG_T_MESSAGE:
        break;
    }
    return FAIL_TOK(p, &p->tok, f->name, "internal error: not a scalar");
}

/* ---- messages ---- */

static bool parse_fields(parser *p, imagen_config_msg *m, int depth, char close, const char *owner);

/* Parses `{ ... }` or `< ... >` into a new message appended to / stored in
 * field `fi` of `m`. The new message is attached before its body is parsed so
 * that freeing the root releases it on any error. */
static bool
parse_message_value(parser *p, imagen_config_msg *m, size_t fi, int depth)
{
    const imagen_config_field_desc *f = &m->desc->fields[fi];
    token open = p->tok;
    char close;
    if (at_sym(p, '{')) {
        close = '}';
    } else if (at_sym(p, '<')) {
        close = '>';
    } else {
        char what[48];
        describe(p, what, sizeof(what));
        return FAIL_TOK(p, &open, f->name, "expected '{' or '<', got %s", what);
    }
    if (depth + 1 > IMAGEN_CONFIG_MAX_DEPTH)
        return FAIL_TOK(p, &open, f->name, "messages nested deeper than %d", IMAGEN_CONFIG_MAX_DEPTH);
    if (++p->n_msgs > IMAGEN_CONFIG_MAX_MESSAGES_COUNT)
        return FAIL_TOK(p, &open, f->name, "more than %d messages", IMAGEN_CONFIG_MAX_MESSAGES_COUNT);
    imagen_config_msg *sub = imagen_config_msg_new(f->msg);
    if (sub == NULL)
        return FAIL_TOK(p, &open, f->name, "out of memory");
    if (f->repeated) {
        imagen_config_value *v = imagen_config_msg_push(m, fi);
        if (v == NULL) {
            imagen_config_msg_free(sub);
            return FAIL_TOK(p, &open, f->name, "out of memory");
        }
        v->m = sub;
    } else {
        m->slots[fi].v.m = sub;
        m->slots[fi].set = true;
    }
    if (!next(p) || !parse_fields(p, sub, depth + 1, close, f->name))
        return false;
    if (!imagen_config_msg_finish_maps(sub))
        return FAIL_TOK(p, &open, f->name, "out of memory");
    return true;
}

/* One scalar value for field `fi`: stored, or appended when repeated. */
static bool
parse_scalar_into(parser *p, imagen_config_msg *m, size_t fi)
{
    const imagen_config_field_desc *f = &m->desc->fields[fi];
    imagen_config_value v;
    memset(&v, 0, sizeof(v));
    if (!parse_scalar(p, f, &v))
        return false;
    if (f->repeated) {
        imagen_config_value *dst = imagen_config_msg_push(m, fi);
        if (dst == NULL) {
            imagen_config_value_free(f, &v);
            return FAIL_TOK(p, &p->tok, f->name, "out of memory");
        }
        *dst = v;
    } else {
        m->slots[fi].v = v;
        m->slots[fi].set = true;
    }
    return true;
}

static bool
parse_field(parser *p, imagen_config_msg *m, size_t fi, const token *name_tok, int depth)
{
    const imagen_config_field_desc *f = &m->desc->fields[fi];
    bool ok;
    if (!f->repeated) {
        if (m->slots[fi].set)
            return FAIL_TOK(p, name_tok, f->name, "non-repeated field specified multiple times");
        int other = imagen_config_msg_oneof_conflict(m, fi);
        if (other >= 0)
            return FAIL_TOK(p, name_tok, f->name, "field '%s' of oneof '%s' is already set",
                            m->desc->fields[other].name, m->desc->oneofs[f->oneof]);
    }
    bool is_msg = f->type == IMAGEN_CONFIG_T_MESSAGE;
    bool colon = accept(p, ':', &ok);
    if (!ok)
        return false;
    if (!is_msg && !colon) {
        char what[48];
        describe(p, what, sizeof(what));
        return FAIL_TOK(p, &p->tok, f->name, "expected ':' after field name, got %s", what);
    }
    if (at_sym(p, '[')) {
        if (!f->repeated)
            return FAIL_TOK(p, &p->tok, f->name, "list value for a non-repeated field");
        if (!next(p))
            return false;
        if (accept(p, ']', &ok))
            return ok;
        if (!ok)
            return false;
        for (;;) {
            if (!(is_msg ? parse_message_value(p, m, fi, depth) : parse_scalar_into(p, m, fi)))
                return false;
            if (accept(p, ']', &ok))
                return ok;
            if (!ok)
                return false;
            if (!at_sym(p, ',')) {
                char what[48];
                describe(p, what, sizeof(what));
                return FAIL_TOK(p, &p->tok, f->name, "expected ',' or ']' in list, got %s", what);
            }
            if (!next(p))
                return false;
        }
    }
    return is_msg ? parse_message_value(p, m, fi, depth) : parse_scalar_into(p, m, fi);
}

/* Parses fields until `close` ('}' / '>'), or until the end of input when
 * close is 0. `owner` names the enclosing field for messages. */
static bool
parse_fields(parser *p, imagen_config_msg *m, int depth, char close, const char *owner)
{
    bool ok;
    for (;;) {
        if (p->tok.kind == TK_END) {
            if (close != 0)
                return FAIL_TOK(p, &p->tok, owner, "unexpected end of input, expected '%c'", close);
            return true;
        }
        if (close != 0 && accept(p, close, &ok))
            return ok;
        token name = p->tok;
        if (name.kind != TK_IDENT) {
            char what[48];
            describe(p, what, sizeof(what));
            return FAIL_TOK(p, &name, owner, "expected field name, got %s", what);
        }
        int fi = imagen_config_field_index(m->desc, p->src + name.start, name.len);
        if (fi < 0) {
            char fname[72];
            snprintf(fname, sizeof(fname), "%.*s", name.len > 64 ? 64 : (int)name.len, p->src + name.start);
            return FAIL_TOK(p, &name, fname, "unknown field in message %s", m->desc->name);
        }
        if (!next(p) || !parse_field(p, m, (size_t)fi, &name, depth))
            return false;
        if (at_sym(p, ',') || at_sym(p, ';')) {
            if (!next(p))
                return false;
        }
    }
}

imagen_error *
imagen_config_parse_text(const char *text, size_t len, const char *filename, imagen_config_msg **out)
{
    *out = NULL;
    if (filename == NULL)
        filename = "config.pbtxt";
    if (len > IMAGEN_CONFIG_MAX_BYTES)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s:1:1: config is %zu bytes, more than the limit of %u",
                                filename, len, (unsigned)IMAGEN_CONFIG_MAX_BYTES);
    parser p;
    memset(&p, 0, sizeof(p));
    p.src = text ? text : "";
    p.len = text ? len : 0;
    p.line = 1;
    p.col = 1;
    p.filename = filename;
    imagen_config_msg *root = imagen_config_msg_new(&imagen_config_model_config_desc);
    if (root == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "%s: out of memory", filename);
    if (next(&p) && parse_fields(&p, root, 0, 0, NULL) && !imagen_config_msg_finish_maps(root))
        fail_at(&p, p.line, p.col, NULL, "out of memory");
    if (p.err != NULL) {
        imagen_config_msg_free(root);
        return p.err;
    }
    *out = root;
    return NULL;
}
