/*
 * Renders a ModelConfig message as Triton's model-config JSON (spec §1.6) and
 * as protobuf binary (proto3 wire rules) for gRPC, both by walking the schema
 * tables. Called from request threads on a message nobody is writing; keeps
 * no state. Recursion follows the schema (a handful of levels) and output is
 * linear in the message size; allocation failure yields NULL / an error,
 * never a partial result.
 */
#include "config/schema.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

/* ---- JSON ---- */

static void json_message(imagen_buf *b, const imagen_config_msg *m);

/* Shortest text that reads back as the same float. */
static void
append_float(imagen_buf *b, double v)
{
    char tmp[40];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if ((float)strtod(tmp, NULL) == (float)v)
            break;
    }
    imagen_buf_append_str(b, tmp);
}

static void
json_scalar(imagen_buf *b, const imagen_config_field_desc *f, const imagen_config_value *v)
{
    switch (f->type) {
    case IMAGEN_CONFIG_T_INT32:
    case IMAGEN_CONFIG_T_INT64:
        imagen_buf_append_i64(b, v->i);
        break;
    case IMAGEN_CONFIG_T_UINT32:
    case IMAGEN_CONFIG_T_UINT64:
        imagen_buf_append_u64(b, v->u);
        break;
    case IMAGEN_CONFIG_T_BOOL:
        imagen_buf_append_str(b, v->b ? "true" : "false");
        break;
    case IMAGEN_CONFIG_T_FLOAT:
    case IMAGEN_CONFIG_T_DOUBLE:
        /* JSON has no NaN/Infinity; protobuf-JSON spells them as strings. */
        if (isnan(v->f))
            imagen_buf_append_str(b, "\"NaN\"");
        else if (isinf(v->f))
            imagen_buf_append_str(b, v->f > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        else if (v->f == 0 && signbit(v->f))
            imagen_buf_append_str(b, "-0.0"); /* "-0" would read back as integer 0 */
        else if (f->type == IMAGEN_CONFIG_T_FLOAT)
            append_float(b, v->f);
        else
            imagen_buf_append_double(b, v->f);
        break;
    case IMAGEN_CONFIG_T_STRING:
        imagen_buf_append_json_string(b, v->s.p ? v->s.p : "", v->s.len);
        break;
    case IMAGEN_CONFIG_T_ENUM: {
        const char *name = imagen_config_enum_name(f->en, v->i);
        if (name != NULL) {
            imagen_buf_append_char(b, '"');
            imagen_buf_append_str(b, name);
            imagen_buf_append_char(b, '"');
        } else {
            imagen_buf_append_i64(b, v->i);
        }
        break;
    }
    case IMAGEN_CONFIG_T_MESSAGE:
        if (v->m != NULL)
            json_message(b, v->m);
        else
            imagen_buf_append_str(b, "{}");
        break;
    }
}

/* A map as a JSON object; keys are always strings. */
static void
json_map(imagen_buf *b, const imagen_config_field_desc *f, const imagen_config_slot *s)
{
    const imagen_config_field_desc *kf = &f->msg->fields[0];
    const imagen_config_field_desc *vf = &f->msg->fields[1];
    static const imagen_config_value zero;
    imagen_buf_append_char(b, '{');
    for (uint32_t i = 0; i < s->n; i++) {
        const imagen_config_msg *e = s->vals[i].m;
        const imagen_config_value *k = e->slots[0].set ? &e->slots[0].v : &zero;
        const imagen_config_value *v = e->slots[1].set ? &e->slots[1].v : &zero;
        if (i)
            imagen_buf_append_char(b, ',');
        if (kf->type == IMAGEN_CONFIG_T_STRING) {
            imagen_buf_append_json_string(b, k->s.p ? k->s.p : "", k->s.len);
        } else {
            imagen_buf_append_char(b, '"');
            json_scalar(b, kf, k);
            imagen_buf_append_char(b, '"');
        }
        imagen_buf_append_char(b, ':');
        json_scalar(b, vf, v);
    }
    imagen_buf_append_char(b, '}');
}

static void
json_message(imagen_buf *b, const imagen_config_msg *m)
{
    static const imagen_config_value zero;
    bool first = true;
    imagen_buf_append_char(b, '{');
    for (size_t i = 0; i < m->desc->n_fields; i++) {
        const imagen_config_field_desc *f = &m->desc->fields[i];
        const imagen_config_slot *s = &m->slots[i];
        /* Unset sub-messages and unset oneof members are omitted; every
         * other field is printed, defaults included. */
        if (!f->repeated && !s->set && (f->type == IMAGEN_CONFIG_T_MESSAGE || f->oneof >= 0))
            continue;
        if (!first)
            imagen_buf_append_char(b, ',');
        first = false;
        imagen_buf_append_char(b, '"');
        imagen_buf_append_str(b, f->name);
        imagen_buf_append_str(b, "\":");
        if (f->is_map) {
            json_map(b, f, s);
        } else if (f->repeated) {
            imagen_buf_append_char(b, '[');
            for (uint32_t k = 0; k < s->n; k++) {
                if (k)
                    imagen_buf_append_char(b, ',');
                json_scalar(b, f, &s->vals[k]);
            }
            imagen_buf_append_char(b, ']');
        } else {
            json_scalar(b, f, s->set ? &s->v : &zero);
        }
    }
    imagen_buf_append_char(b, '}');
}

char *
imagen_config_msg_to_json(const imagen_config_msg *msg)
{
    if (msg == NULL)
        return NULL;
    imagen_buf b = IMAGEN_BUF_INIT;
    json_message(&b, msg);
    return imagen_buf_detach(&b, NULL);
}

/* ---- protobuf binary ---- */

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

static void
put_varint(imagen_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        uint8_t byte = (uint8_t)(v & 0x7f);
        v >>= 7;
        tmp[n++] = v ? (uint8_t)(byte | 0x80) : byte;
    } while (v);
    imagen_buf_append(b, tmp, n);
}

static void
put_tag(imagen_buf *b, uint32_t number, int wire)
{
    put_varint(b, ((uint64_t)number << 3) | (uint64_t)wire);
}

static void
put_fixed(imagen_buf *b, uint64_t v, size_t n)
{
    uint8_t tmp[8];
    for (size_t i = 0; i < n; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    imagen_buf_append(b, tmp, n);
}

static int
wire_type(imagen_config_type t)
{
    switch (t) {
    case IMAGEN_CONFIG_T_FLOAT:
        return WIRE_I32;
    case IMAGEN_CONFIG_T_DOUBLE:
        return WIRE_I64;
    case IMAGEN_CONFIG_T_STRING:
    case IMAGEN_CONFIG_T_MESSAGE:
        return WIRE_LEN;
    default:
        return WIRE_VARINT;
    }
}

/* Appends the payload of a numeric value (no tag). */
static void
put_number(imagen_buf *b, imagen_config_type t, const imagen_config_value *v)
{
    switch (t) {
    case IMAGEN_CONFIG_T_INT32:
    case IMAGEN_CONFIG_T_INT64:
    case IMAGEN_CONFIG_T_ENUM:
        put_varint(b, (uint64_t)v->i);
        break; /* negative: 10 bytes */
    case IMAGEN_CONFIG_T_UINT32:
    case IMAGEN_CONFIG_T_UINT64:
        put_varint(b, v->u);
        break;
    case IMAGEN_CONFIG_T_BOOL:
        put_varint(b, v->b ? 1 : 0);
        break;
    case IMAGEN_CONFIG_T_FLOAT: {
        float fl = (float)v->f;
        uint32_t bits;
        memcpy(&bits, &fl, 4);
        put_fixed(b, bits, 4);
        break;
    }
    case IMAGEN_CONFIG_T_DOUBLE: {
        uint64_t bits;
        memcpy(&bits, &v->f, 8);
        put_fixed(b, bits, 8);
        break;
    }
    default:
        break;
    }
}

static bool
is_default(imagen_config_type t, const imagen_config_value *v)
{
    switch (t) {
    case IMAGEN_CONFIG_T_UINT32:
    case IMAGEN_CONFIG_T_UINT64:
        return v->u == 0;
    case IMAGEN_CONFIG_T_BOOL:
        return !v->b;
    case IMAGEN_CONFIG_T_FLOAT:
    case IMAGEN_CONFIG_T_DOUBLE: {
        /* proto3 compares bit patterns: -0.0 is emitted. */
        uint64_t bits;
        memcpy(&bits, &v->f, 8);
        return bits == 0;
    }
    case IMAGEN_CONFIG_T_STRING:
        return v->s.len == 0;
    case IMAGEN_CONFIG_T_MESSAGE:
        return false;
    default:
        return v->i == 0;
    }
}

static void pb_message(imagen_buf *b, const imagen_config_msg *m);

static void
put_len_prefixed(imagen_buf *b, const imagen_buf *inner)
{
    put_varint(b, inner->len);
    imagen_buf_append(b, inner->data, inner->len);
}

/* Field `number` with one value (tag + payload). `force` emits defaults
 * (oneof members, map entry keys and values). */
static void
pb_value(imagen_buf *b, const imagen_config_field_desc *f, const imagen_config_value *v, bool force)
{
    if (!force && is_default(f->type, v))
        return;
    put_tag(b, f->number, wire_type(f->type));
    if (f->type == IMAGEN_CONFIG_T_STRING) {
        put_varint(b, v->s.len);
        imagen_buf_append(b, v->s.p ? v->s.p : "", v->s.len);
    } else if (f->type == IMAGEN_CONFIG_T_MESSAGE) {
        imagen_buf inner = IMAGEN_BUF_INIT;
        if (v->m != NULL)
            pb_message(&inner, v->m);
        if (imagen_buf_failed(&inner))
            b->failed = true;
        put_len_prefixed(b, &inner);
        imagen_buf_free(&inner);
    } else {
        put_number(b, f->type, v);
    }
}

static void
pb_message(imagen_buf *b, const imagen_config_msg *m)
{
    static const imagen_config_value zero;
    /* Fields go out in field-number order, as protobuf's own serializer
     * writes them (declaration order differs, e.g. backend = 17 is third).
     * Insertion sort of at most 64 indices. */
    size_t order[64];
    size_t nf = m->desc->n_fields < 64 ? m->desc->n_fields : 64;
    for (size_t i = 0; i < nf; i++) {
        size_t k = i;
        while (k > 0 && m->desc->fields[order[k - 1]].number > m->desc->fields[i].number) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    for (size_t oi = 0; oi < nf; oi++) {
        size_t i = order[oi];
        const imagen_config_field_desc *f = &m->desc->fields[i];
        const imagen_config_slot *s = &m->slots[i];
        if (!f->repeated) {
            /* A map entry always carries its key and value (as protobuf's
             * own map serializer does); oneof members and sub-messages are
             * emitted when set; other scalars only when not default. */
            if (m->desc->map_entry)
                pb_value(b, f, s->set ? &s->v : &zero, true);
            else if (s->set)
                pb_value(b, f, &s->v, f->oneof >= 0 || f->type == IMAGEN_CONFIG_T_MESSAGE);
            continue;
        }
        if (s->n == 0)
            continue;
        if (f->type == IMAGEN_CONFIG_T_STRING || f->type == IMAGEN_CONFIG_T_MESSAGE) {
            for (uint32_t k = 0; k < s->n; k++)
                pb_value(b, f, &s->vals[k], true);
        } else {
            /* proto3 packs repeated numeric fields. */
            imagen_buf inner = IMAGEN_BUF_INIT;
            for (uint32_t k = 0; k < s->n; k++)
                put_number(&inner, f->type, &s->vals[k]);
            if (imagen_buf_failed(&inner))
                b->failed = true;
            put_tag(b, f->number, WIRE_LEN);
            put_len_prefixed(b, &inner);
            imagen_buf_free(&inner);
        }
    }
}

imagen_error *
imagen_config_msg_to_protobuf(const imagen_config_msg *msg, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (msg == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "no model config to encode");
    imagen_buf b = IMAGEN_BUF_INIT;
    pb_message(&b, msg);
    size_t len = 0;
    char *data = imagen_buf_detach(&b, &len);
    if (data == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory encoding model config");
    *out = (uint8_t *)data;
    *out_len = len;
    return NULL;
}
