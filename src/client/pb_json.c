/*
 * Renders any protobuf-c message as JSON by walking its descriptor, so the
 * gRPC transport returns the same documents as HTTP (spec §1.4-§1.8) without
 * one printer per message: proto field names, every scalar printed even when
 * default (as Triton's HTTP frontend does), 64-bit integers as JSON numbers,
 * enums by name, map entries as objects, unset sub-messages omitted. Bytes
 * fields are omitted: no admin response the client renders carries one.
 */
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <string.h>

#include "client/client_internal.h"

static json_t *message_json(const ProtobufCMessage *m);

/* Size of one element of a repeated field of this type in protobuf-c's
 * in-memory layout. */
static size_t
element_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    default:
        return 4; /* 32-bit integers, float, enum */
    }
}

/* One value of `f` stored at `p`; NULL for values not rendered. */
static json_t *
value_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        /* json_int_t is signed: values past 2^63 (never seen in counters)
         * would wrap, so they are printed as reals instead. */
        if (*(const uint64_t *)p > (uint64_t)INT64_MAX)
            return json_real((double)*(const uint64_t *)p);
        return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        return ev != NULL ? json_string(ev->name) : json_integer(v);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return json_string(s != NULL ? s : "");
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        return sub != NULL ? message_json(sub) : NULL;
    }
    default:
        return NULL;
    }
}

/* protobuf-c has no map flag: a map is a repeated "...Entry" message of
 * exactly the fields key (1) and value (2). */
static bool
is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED)
        return false;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t n = strlen(d->name);
    return d->n_fields == 2 && n > 5 && strcmp(d->name + n - 5, "Entry") == 0 &&
           strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static json_t *
field_json(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t n = *(const size_t *)(base + f->quantifier_offset);
        const char *arr = *(char *const *)(base + f->offset);
        if (is_map(f)) {
            json_t *obj = json_object();
            for (size_t i = 0; i < n; i++) {
                const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[i];
                const ProtobufCFieldDescriptor *kf = &e->descriptor->fields[0];
                json_t *k = value_json(kf, (const char *)e + kf->offset);
                json_t *v = field_json(e, &e->descriptor->fields[1]);
                char kbuf[32];
                const char *key = json_string_value(k);
                if (key == NULL) {
                    snprintf(kbuf, sizeof(kbuf), "%" JSON_INTEGER_FORMAT, json_integer_value(k));
                    key = kbuf;
                }
                if (v != NULL)
                    json_object_set_new(obj, key, v);
                json_decref(k);
            }
            return obj;
        }
        json_t *a = json_array();
        size_t size = element_size(f->type);
        for (size_t i = 0; i < n; i++) {
            json_t *v = value_json(f, arr + i * size);
            if (v != NULL)
                json_array_append_new(a, v);
        }
        return a;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
            return NULL;
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset != 0 &&
               f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING) {
        if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset))
            return NULL;
    }
    return value_json(f, base + f->offset);
}

static json_t *
message_json(const ProtobufCMessage *m)
{
    json_t *obj = json_object();
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        json_t *v = field_json(m, &d->fields[i]);
        if (v != NULL)
            json_object_set_new(obj, d->fields[i].name, v);
    }
    return obj;
}

char *
imagen__pb_to_json(const void *msg, const char *only_field)
{
    const ProtobufCMessage *m = msg;
    json_t *doc;
    if (only_field != NULL) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, only_field);
        doc = f != NULL ? field_json(m, f) : NULL;
        if (doc == NULL)
            doc = json_object();
    } else {
        doc = message_json(m);
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}
