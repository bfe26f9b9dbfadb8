/*
 * The dynamic ModelConfig message: allocation, free, deep copy, repeated
 * growth, oneof bookkeeping, map de-duplication and by-name accessors used by
 * normalization and the typed builder. A message is owned by one thread at a
 * time; nothing here locks. Every allocation failure is reported to the
 * caller, never aborted on, and no function here recurses deeper than the
 * schema nests (a handful of levels).
 */
#include "config/schema.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

double
imagen_config_to_float(double d)
{
    /* Beyond FLT_MAX + half an ulp (2^103) a value rounds to infinity. */
    const double limit = (double)FLT_MAX + 0x1p103;
    if (isnan(d))
        return d;
    if (d >= limit)
        return (double)INFINITY;
    if (d <= -limit)
        return -(double)INFINITY;
    if (d > FLT_MAX)
        return FLT_MAX;
    if (d < -FLT_MAX)
        return -FLT_MAX;
    return (double)(float)d;
}

char *
imagen_config_strndup(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p == NULL)
        return NULL;
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

imagen_config_msg *
imagen_config_msg_new(const imagen_config_msg_desc *d)
{
    imagen_config_msg *m = calloc(1, sizeof(*m) + d->n_fields * sizeof(imagen_config_slot));
    if (m != NULL)
        m->desc = d;
    return m;
}

void
imagen_config_value_free(const imagen_config_field_desc *f, imagen_config_value *v)
{
    if (f->type == IMAGEN_CONFIG_T_STRING) {
        free(v->s.p);
        v->s.p = NULL;
        v->s.len = 0;
    } else if (f->type == IMAGEN_CONFIG_T_MESSAGE) {
        imagen_config_msg_free(v->m);
        v->m = NULL;
    }
}

void
imagen_config_msg_clear_field(imagen_config_msg *m, size_t fi)
{
    const imagen_config_field_desc *f = &m->desc->fields[fi];
    imagen_config_slot *s = &m->slots[fi];
    if (f->repeated) {
        for (uint32_t i = 0; i < s->n; i++)
            imagen_config_value_free(f, &s->vals[i]);
        free(s->vals);
        s->vals = NULL;
        s->n = s->cap = 0;
    } else {
        imagen_config_value_free(f, &s->v);
        memset(&s->v, 0, sizeof(s->v));
    }
    s->set = false;
}

void
imagen_config_msg_free(imagen_config_msg *msg)
{
    if (msg == NULL)
        return;
    for (size_t i = 0; i < msg->desc->n_fields; i++)
        imagen_config_msg_clear_field(msg, i);
    free(msg);
}

imagen_config_value *
imagen_config_msg_push(imagen_config_msg *m, size_t fi)
{
    imagen_config_slot *s = &m->slots[fi];
    if (s->n == s->cap) {
        if (s->cap >= UINT32_MAX / 2)
            return NULL;
        uint32_t cap = s->cap ? s->cap * 2 : 4;
        imagen_config_value *p = realloc(s->vals, cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        s->vals = p;
        s->cap = cap;
    }
    imagen_config_value *v = &s->vals[s->n++];
    memset(v, 0, sizeof(*v));
    return v;
}

int
imagen_config_msg_oneof_conflict(const imagen_config_msg *m, size_t fi)
{
    int o = m->desc->fields[fi].oneof;
    if (o < 0)
        return -1;
    for (size_t i = 0; i < m->desc->n_fields; i++) {
        if (i != fi && m->desc->fields[i].oneof == o && m->slots[i].set)
            return (int)i;
    }
    return -1;
}

/* ---- deep copy ---- */

static bool
copy_value(const imagen_config_field_desc *f, const imagen_config_value *src, imagen_config_value *dst)
{
    *dst = *src;
    if (f->type == IMAGEN_CONFIG_T_STRING) {
        dst->s.p = imagen_config_strndup(src->s.p ? src->s.p : "", src->s.len);
        return dst->s.p != NULL;
    }
    if (f->type == IMAGEN_CONFIG_T_MESSAGE && src->m != NULL) {
        dst->m = imagen_config_msg_clone(src->m);
        return dst->m != NULL;
    }
    return true;
}

imagen_config_msg *
imagen_config_msg_clone(const imagen_config_msg *msg)
{
    if (msg == NULL)
        return NULL;
    imagen_config_msg *c = imagen_config_msg_new(msg->desc);
    if (c == NULL)
        return NULL;
    for (size_t i = 0; i < msg->desc->n_fields; i++) {
        const imagen_config_field_desc *f = &msg->desc->fields[i];
        const imagen_config_slot *s = &msg->slots[i];
        if (f->repeated) {
            for (uint32_t k = 0; k < s->n; k++) {
                imagen_config_value *v = imagen_config_msg_push(c, i);
                if (v == NULL || !copy_value(f, &s->vals[k], v)) {
                    imagen_config_msg_free(c);
                    return NULL;
                }
            }
        } else if (s->set) {
            c->slots[i].set = true;
            if (!copy_value(f, &s->v, &c->slots[i].v)) {
                memset(&c->slots[i].v, 0, sizeof(c->slots[i].v));
                imagen_config_msg_free(c);
                return NULL;
            }
        }
    }
    return c;
}

/* ---- maps: sort by key, last duplicate wins ---- */

typedef struct {
    const imagen_config_value *key; /* NULL when the entry has no key set */
    imagen_config_type key_type;
    uint32_t index; /* position in input order */
} map_item;

static int
compare_keys(const map_item *a, const map_item *b)
{
    static const imagen_config_value zero;
    const imagen_config_value *ka = a->key ? a->key : &zero;
    const imagen_config_value *kb = b->key ? b->key : &zero;
    if (a->key_type == IMAGEN_CONFIG_T_STRING) {
        size_t la = ka->s.len, lb = kb->s.len;
        int c = (la && lb) ? memcmp(ka->s.p, kb->s.p, la < lb ? la : lb) : 0;
        if (c != 0)
            return c;
        return la < lb ? -1 : la > lb ? 1 : 0;
    }
    if (a->key_type == IMAGEN_CONFIG_T_UINT64 || a->key_type == IMAGEN_CONFIG_T_UINT32)
        return ka->u < kb->u ? -1 : ka->u > kb->u ? 1 : 0;
    if (a->key_type == IMAGEN_CONFIG_T_BOOL)
        return (int)ka->b - (int)kb->b;
    return ka->i < kb->i ? -1 : ka->i > kb->i ? 1 : 0;
}

static int
compare_items(const void *pa, const void *pb)
{
    const map_item *a = pa, *b = pb;
    int c = compare_keys(a, b);
    if (c != 0)
        return c;
    return a->index < b->index ? -1 : a->index > b->index ? 1 : 0;
}

static bool
finish_map(imagen_config_msg *m, size_t fi)
{
    const imagen_config_field_desc *f = &m->desc->fields[fi];
    imagen_config_slot *s = &m->slots[fi];
    /* Entries always hold a key and a value (a map value message given as
     * nothing is an empty message), so every view renders them alike. */
    for (uint32_t i = 0; i < s->n; i++) {
        imagen_config_msg *e = s->vals[i].m;
        for (int k = 0; k < 2; k++) {
            if (e->slots[k].set)
                continue;
            if (e->desc->fields[k].type == IMAGEN_CONFIG_T_MESSAGE &&
                (e->slots[k].v.m = imagen_config_msg_new(e->desc->fields[k].msg)) == NULL)
                return false;
            e->slots[k].set = true;
        }
    }
    if (s->n < 2)
        return true;
    map_item *items = malloc(s->n * sizeof(*items));
    imagen_config_value *out = malloc(s->n * sizeof(*out));
    if (items == NULL || out == NULL) {
        free(items);
        free(out);
        return false;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        const imagen_config_msg *e = s->vals[i].m;
        items[i].key = e->slots[0].set ? &e->slots[0].v : NULL;
        items[i].key_type = f->msg->fields[0].type;
        items[i].index = i;
    }
    qsort(items, s->n, sizeof(*items), compare_items);
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        bool last = i + 1 == s->n || compare_keys(&items[i], &items[i + 1]) != 0;
        if (last)
            out[n++] = s->vals[items[i].index];
        else
            imagen_config_value_free(f, &s->vals[items[i].index]);
    }
    free(items);
    free(s->vals);
    s->vals = out;
    s->n = n;
    s->cap = s->n ? s->n : 1;
    return true;
}

bool
imagen_config_msg_finish_maps(imagen_config_msg *m)
{
    for (size_t i = 0; i < m->desc->n_fields; i++) {
        if (m->desc->fields[i].is_map && !finish_map(m, i))
            return false;
    }
    return true;
}

/* ---- accessors by name ---- */

static const imagen_config_slot *
slot_of(const imagen_config_msg *m, const char *name)
{
    return &m->slots[imagen_config_field_must(m->desc, name)];
}

const char *
imagen_config_get_str(const imagen_config_msg *m, const char *name)
{
    const imagen_config_slot *s = slot_of(m, name);
    return s->set && s->v.s.p ? s->v.s.p : "";
}

int64_t
imagen_config_get_int(const imagen_config_msg *m, const char *name)
{
    const imagen_config_slot *s = slot_of(m, name);
    return s->set ? s->v.i : 0;
}

uint64_t
imagen_config_get_uint(const imagen_config_msg *m, const char *name)
{
    const imagen_config_slot *s = slot_of(m, name);
    return s->set ? s->v.u : 0;
}

bool
imagen_config_get_bool(const imagen_config_msg *m, const char *name)
{
    const imagen_config_slot *s = slot_of(m, name);
    return s->set && s->v.b;
}

bool
imagen_config_has(const imagen_config_msg *m, const char *name)
{
    return slot_of(m, name)->set;
}

const imagen_config_msg *
imagen_config_get_msg(const imagen_config_msg *m, const char *name)
{
    const imagen_config_slot *s = slot_of(m, name);
    return s->set ? s->v.m : NULL;
}

imagen_config_msg *
imagen_config_mutable_msg(imagen_config_msg *m, const char *name)
{
    int fi = imagen_config_field_must(m->desc, name);
    imagen_config_slot *s = &m->slots[fi];
    if (s->set)
        return s->v.m;
    imagen_config_msg *sub = imagen_config_msg_new(m->desc->fields[fi].msg);
    if (sub == NULL)
        return NULL;
    int other;
    while ((other = imagen_config_msg_oneof_conflict(m, (size_t)fi)) >= 0)
        imagen_config_msg_clear_field(m, (size_t)other);
    s->v.m = sub;
    s->set = true;
    return sub;
}

size_t
imagen_config_count(const imagen_config_msg *m, const char *name)
{
    return slot_of(m, name)->n;
}

const imagen_config_value *
imagen_config_at(const imagen_config_msg *m, const char *name, size_t i)
{
    const imagen_config_slot *s = slot_of(m, name);
    return i < s->n ? &s->vals[i] : NULL;
}

imagen_config_value *
imagen_config_at_mut(imagen_config_msg *m, const char *name, size_t i)
{
    imagen_config_slot *s = &m->slots[imagen_config_field_must(m->desc, name)];
    return i < s->n ? &s->vals[i] : NULL;
}

bool
imagen_config_set_str(imagen_config_msg *m, const char *name, const char *str)
{
    imagen_config_slot *s = &m->slots[imagen_config_field_must(m->desc, name)];
    char *p = imagen_config_strndup(str, strlen(str));
    if (p == NULL)
        return false;
    free(s->v.s.p);
    s->v.s.p = p;
    s->v.s.len = strlen(str);
    s->set = true;
    return true;
}

void
imagen_config_set_int(imagen_config_msg *m, const char *name, int64_t v)
{
    imagen_config_slot *s = &m->slots[imagen_config_field_must(m->desc, name)];
    s->v.i = v;
    s->set = true;
}

void
imagen_config_set_uint(imagen_config_msg *m, const char *name, uint64_t v)
{
    imagen_config_slot *s = &m->slots[imagen_config_field_must(m->desc, name)];
    s->v.u = v;
    s->set = true;
}

void
imagen_config_set_bool(imagen_config_msg *m, const char *name, bool v)
{
    imagen_config_slot *s = &m->slots[imagen_config_field_must(m->desc, name)];
    s->v.b = v;
    s->set = true;
}

imagen_config_msg *
imagen_config_add_msg(imagen_config_msg *m, const char *name)
{
    int fi = imagen_config_field_must(m->desc, name);
    imagen_config_msg *sub = imagen_config_msg_new(m->desc->fields[fi].msg);
    if (sub == NULL)
        return NULL;
    imagen_config_value *v = imagen_config_msg_push(m, (size_t)fi);
    if (v == NULL) {
        imagen_config_msg_free(sub);
        return NULL;
    }
    v->m = sub;
    return sub;
}

bool
imagen_config_add_int(imagen_config_msg *m, const char *name, int64_t val)
{
    imagen_config_value *v = imagen_config_msg_push(m, (size_t)imagen_config_field_must(m->desc, name));
    if (v == NULL)
        return false;
    v->i = val;
    return true;
}
