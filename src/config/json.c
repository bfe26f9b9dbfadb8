/*
 * Protobuf-JSON parser for ModelConfig: the load API's "config" override
 * (spec §1.8). jansson parses the text; this file maps the JSON tree onto the
 * schema (proto or lowerCamelCase names, enum names case-insensitive or
 * numbers, 64-bit integers as numbers or strings, maps as objects). Called on
 * request or load threads with no shared state; input is hostile, so size,
 * depth and message count are bounded and every error path frees the
 * partial message.
 */
#include "config/schema.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

typedef struct {
    size_t n_msgs;
    imagen_error *err;
} jctx;

static bool jfail(jctx *c, const char *field, const char *fmt, ...) IMAGEN_PRINTF(3, 4);

static bool
jfail(jctx *c, const char *field, const char *fmt, ...)
{
    if (c->err != NULL)
        return false;
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (field != NULL)
        c->err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "config JSON: %s (field '%s')", what, field);
    else
        c->err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "config JSON: %s", what);
    return false;
}

static const char *
kind_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

/* Parses a decimal integer string (optional '-') into sign + magnitude. */
static bool
decimal_string(const char *s, size_t n, bool *neg, uint64_t *mag)
{
    size_t i = 0;
    *neg = false;
    if (n > 0 && s[0] == '-') {
        *neg = true;
        i = 1;
    }
    if (i >= n)
        return false;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *mag = v;
    return true;
}

static bool
json_to_integer(jctx *c, const imagen_config_field_desc *f, const json_t *j, imagen_config_value *out)
{
    bool neg;
    uint64_t mag;
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        neg = v < 0;
        mag = neg ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    } else if (json_is_real(j)) {
        double d = json_real_value(j);
        if (!(d == floor(d)) || fabs(d) >= 18446744073709551616.0)
            return jfail(c, f->name, "expected an integer, got %g", d);
        neg = d < 0;
        mag = (uint64_t)fabs(d);
    } else if (json_is_string(j)) {
        if (!decimal_string(json_string_value(j), json_string_length(j), &neg, &mag))
            return jfail(c, f->name, "expected an integer string");
    } else {
        return jfail(c, f->name, "expected an integer, got %s", kind_name(j));
    }
    if (!imagen_config_int_in_range(f->type, neg, mag))
        return jfail(c, f->name, "value out of range");
    if (f->type == IMAGEN_CONFIG_T_UINT32 || f->type == IMAGEN_CONFIG_T_UINT64)
        out->u = mag;
    else
        out->i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return true;
}

static bool
json_scalar(jctx *c, const imagen_config_field_desc *f, const json_t *j, imagen_config_value *out)
{
    switch (f->type) {
    case IMAGEN_CONFIG_T_INT32:
    case IMAGEN_CONFIG_T_INT64:
    case IMAGEN_CONFIG_T_UINT32:
    case IMAGEN_CONFIG_T_UINT64:
        return json_to_integer(c, f, j, out);
    case IMAGEN_CONFIG_T_BOOL:
        if (!json_is_boolean(j))
            return jfail(c, f->name, "expected a boolean, got %s", kind_name(j));
        out->b = json_is_true(j);
        return true;
    case IMAGEN_CONFIG_T_FLOAT:
    case IMAGEN_CONFIG_T_DOUBLE: {
        double d;
        if (json_is_number(j)) {
            d = json_number_value(j);
        } else if (json_is_string(j)) {
            const char *s = json_string_value(j);
            char *end = NULL;
            if (strcmp(s, "NaN") == 0)
                d = NAN;
            else if (strcmp(s, "Infinity") == 0)
                d = INFINITY;
            else if (strcmp(s, "-Infinity") == 0)
                d = -INFINITY;
            else if (s[0] != '\0' && (d = strtod(s, &end), *end == '\0') && isfinite(d))
                ;
            else
                return jfail(c, f->name, "expected a number");
        } else {
            return jfail(c, f->name, "expected a number, got %s", kind_name(j));
        }
        out->f = f->type == IMAGEN_CONFIG_T_FLOAT ? imagen_config_to_float(d) : d;
        return true;
    }
    case IMAGEN_CONFIG_T_STRING:
        if (!json_is_string(j))
            return jfail(c, f->name, "expected a string, got %s", kind_name(j));
        out->s.len = json_string_length(j);
        out->s.p = imagen_config_strndup(json_string_value(j), out->s.len);
        if (out->s.p == NULL)
            return jfail(c, f->name, "out of memory");
        return true;
    case IMAGEN_CONFIG_T_ENUM: {
        int32_t v;
        if (json_is_string(j)) {
            if (!imagen_config_enum_by_name(f->en, json_string_value(j), json_string_length(j), true, &v)) {
                char shown[68];
                snprintf(shown, sizeof(shown), "%s", json_string_value(j));
                return jfail(c, f->name, "unknown value '%s' for enum %s", shown, f->en->name);
            }
            out->i = v;
            return true;
        }
        if (json_is_integer(j)) {
            json_int_t n = json_integer_value(j);
            if (!imagen_config_enum_known(f->en, n))
                return jfail(c, f->name, "unknown value %lld for enum %s", (long long)n, f->en->name);
            out->i = n;
            return true;
        }
        return jfail(c, f->name, "expected an enum name or number, got %s", kind_name(j));
    }
    case IMAGEN_CONFIG_T_MESSAGE:
        break;
    }
    return jfail(c, f->name, "internal error: not a scalar");
}

static bool json_object_into(jctx *c, const json_t *obj, imagen_config_msg *m, int depth, const char *owner);

/* Creates a message of `f`'s type from JSON object `j` (depth = its depth). */
static bool
json_new_message(jctx *c, const imagen_config_field_desc *f, const json_t *j, int depth, imagen_config_msg **out)
{
    *out = NULL;
    if (!json_is_object(j))
        return jfail(c, f->name, "expected an object, got %s", kind_name(j));
    if (depth > IMAGEN_CONFIG_MAX_DEPTH)
        return jfail(c, f->name, "messages nested deeper than %d", IMAGEN_CONFIG_MAX_DEPTH);
    if (++c->n_msgs > IMAGEN_CONFIG_MAX_MESSAGES_COUNT)
        return jfail(c, f->name, "more than %d messages", IMAGEN_CONFIG_MAX_MESSAGES_COUNT);
    imagen_config_msg *m = imagen_config_msg_new(f->msg);
    if (m == NULL)
        return jfail(c, f->name, "out of memory");
    *out = m; /* owned by the caller even on failure */
    return json_object_into(c, j, m, depth, f->name);
}

static bool
json_value_into(jctx *c, const imagen_config_field_desc *f, const json_t *j, int depth, imagen_config_value *out)
{
    if (f->type == IMAGEN_CONFIG_T_MESSAGE)
        return json_new_message(c, f, j, depth, &out->m);
    return json_scalar(c, f, j, out);
}

/* A map object: each member becomes an entry message {key, value}. */
static bool
json_map_into(jctx *c, imagen_config_msg *m, size_t fi, const json_t *obj, int depth)
{
    const imagen_config_field_desc *f = &m->desc->fields[fi];
    const imagen_config_field_desc *kf = &f->msg->fields[0];
    const imagen_config_field_desc *vf = &f->msg->fields[1];
    if (!json_is_object(obj))
        return jfail(c, f->name, "expected an object (map), got %s", kind_name(obj));
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        if (++c->n_msgs > IMAGEN_CONFIG_MAX_MESSAGES_COUNT)
            return jfail(c, f->name, "more than %d messages", IMAGEN_CONFIG_MAX_MESSAGES_COUNT);
        imagen_config_msg *e = imagen_config_msg_new(f->msg);
        imagen_config_value *slot = e ? imagen_config_msg_push(m, fi) : NULL;
        if (slot == NULL) {
            imagen_config_msg_free(e);
            return jfail(c, f->name, "out of memory");
        }
        slot->m = e;
        e->slots[0].set = true;
        if (kf->type == IMAGEN_CONFIG_T_STRING) {
            e->slots[0].v.s.len = strlen(key);
            e->slots[0].v.s.p = imagen_config_strndup(key, e->slots[0].v.s.len);
            if (e->slots[0].v.s.p == NULL)
                return jfail(c, f->name, "out of memory");
        } else {
            bool neg;
            uint64_t mag;
            if (!decimal_string(key, strlen(key), &neg, &mag) || neg)
                return jfail(c, f->name, "map key must be an unsigned integer");
            e->slots[0].v.u = mag;
        }
        if (json_is_null(val))
            continue;
        e->slots[1].set = true;
        if (!json_value_into(c, vf, val, depth + 1, &e->slots[1].v))
            return false;
    }
    return true;
}

static bool
json_field(jctx *c, imagen_config_msg *m, size_t fi, const json_t *j, int depth)
{
    const imagen_config_field_desc *f = &m->desc->fields[fi];
    if (f->is_map)
        return json_map_into(c, m, fi, j, depth);
    if (f->repeated) {
        if (!json_is_array(j))
            return jfail(c, f->name, "expected an array, got %s", kind_name(j));
        size_t i;
        json_t *el;
        json_array_foreach(j, i, el)
        {
            imagen_config_value *v = imagen_config_msg_push(m, fi);
            if (v == NULL)
                return jfail(c, f->name, "out of memory");
            if (!json_value_into(c, f, el, depth + 1, v))
                return false;
        }
        return true;
    }
    int other = imagen_config_msg_oneof_conflict(m, fi);
    if (other >= 0)
        return jfail(c, f->name, "field '%s' of oneof '%s' is already set", m->desc->fields[other].name,
                     m->desc->oneofs[f->oneof]);
    m->slots[fi].set = true;
    return json_value_into(c, f, j, depth + 1, &m->slots[fi].v);
}

static bool
json_object_into(jctx *c, const json_t *obj, imagen_config_msg *m, int depth, const char *owner)
{
    uint64_t seen = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        int fi = imagen_config_field_index_json(m->desc, key, strlen(key));
        if (fi < 0) {
            char shown[68];
            snprintf(shown, sizeof(shown), "%s", key);
            return jfail(c, shown, "unknown field in message %s", m->desc->name);
        }
        if (seen & (1ull << fi))
            return jfail(c, m->desc->fields[fi].name, "field specified multiple times");
        seen |= 1ull << fi;
        if (json_is_null(val))
            continue; /* null = default */
        if (!json_field(c, m, (size_t)fi, val, depth))
            return false;
    }
    (void)owner;
    if (!imagen_config_msg_finish_maps(m))
        return jfail(c, owner, "out of memory");
    return true;
}

/* jansson reads integers as int64, but uint64 fields render values above
 * INT64_MAX as plain JSON numbers. Such tokens (outside strings) are quoted
 * here so they reach the schema as strings, which integer fields accept.
 * One linear pass; *changed tells whether `out` holds a rewritten copy. */
static void
quote_big_integers(const char *s, size_t n, imagen_buf *out, bool *changed)
{
    static const char int64_max[] = "9223372036854775807";
    bool in_str = false;
    size_t i = 0, copied = 0;
    *changed = false;
    while (i < n) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = false;
            i++;
            continue;
        }
        if (ch == '"') {
            in_str = true;
            i++;
            continue;
        }
        bool starts = ch >= '1' && ch <= '9' && (i == 0 || strchr("0123456789.eE+-", s[i - 1]) == NULL);
        if (!starts) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && s[j] >= '0' && s[j] <= '9')
            j++;
        bool plain = j >= n || (s[j] != '.' && s[j] != 'e' && s[j] != 'E');
        size_t d = j - i;
        if (plain && (d > 19 || (d == 19 && memcmp(s + i, int64_max, 19) > 0))) {
            imagen_buf_append(out, s + copied, i - copied);
            imagen_buf_append_char(out, '"');
            imagen_buf_append(out, s + i, d);
            imagen_buf_append_char(out, '"');
            copied = j;
            *changed = true;
        }
        i = j;
    }
    if (*changed)
        imagen_buf_append(out, s + copied, n - copied);
}

imagen_error *
imagen_config_parse_json(const char *json, size_t len, imagen_config_msg **out)
{
    *out = NULL;
    if (len > IMAGEN_CONFIG_MAX_BYTES)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "config JSON is %zu bytes, more than the limit of %u", len,
                                (unsigned)IMAGEN_CONFIG_MAX_BYTES);
    if (json == NULL)
        json = "", len = 0;
    imagen_buf quoted = IMAGEN_BUF_INIT;
    bool changed;
    quote_big_integers(json, len, &quoted, &changed);
    if (imagen_buf_failed(&quoted)) {
        imagen_buf_free(&quoted);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    json_error_t jerr;
    json_t *root = changed ? json_loadb(quoted.data, quoted.len, JSON_REJECT_DUPLICATES, &jerr)
                           : json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    imagen_buf_free(&quoted);
    if (root == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "config JSON:%d:%d: %s", jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "config JSON: expected an object");
    }
    imagen_config_msg *m = imagen_config_msg_new(&imagen_config_model_config_desc);
    if (m == NULL) {
        json_decref(root);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    jctx c = {0, NULL};
    json_object_into(&c, root, m, 0, NULL);
    json_decref(root);
    if (c.err != NULL) {
        imagen_config_msg_free(m);
        return c.err;
    }
    *out = m;
    return NULL;
}
