/*
 * Internal to src/config: the schema of model_config.proto (descriptors for
 * every message, field and enum of spec §3) and the dynamic message that holds
 * parsed values against it. The text parser, the JSON parser, the renderers,
 * normalization and the typed builder all walk these tables; nothing outside
 * src/config includes this header.
 */
#ifndef IMAGEN_CONFIG_SCHEMA_H
#define IMAGEN_CONFIG_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imagen/model_config.h"

/* Most messages one parse may create. A legitimate config has a few hundred;
 * the cap bounds memory on hostile input (every message costs ~40 bytes per
 * schema field, so `input [{},{},...]` would otherwise amplify the input
 * ~100x). */
#define IMAGEN_CONFIG_MAX_MESSAGES_COUNT 65536

/* Most priority levels accepted by the typed builder: it allocates one queue
 * policy per level, so the uint64 from the config must be bounded. */
#define IMAGEN_CONFIG_MAX_PRIORITY_LEVELS_COUNT 65536

typedef enum imagen_config_type {
    IMAGEN_CONFIG_T_INT32,
    IMAGEN_CONFIG_T_INT64,
    IMAGEN_CONFIG_T_UINT32,
    IMAGEN_CONFIG_T_UINT64,
    IMAGEN_CONFIG_T_BOOL,
    IMAGEN_CONFIG_T_FLOAT,
    IMAGEN_CONFIG_T_DOUBLE,
    IMAGEN_CONFIG_T_STRING,
    IMAGEN_CONFIG_T_ENUM,
    IMAGEN_CONFIG_T_MESSAGE, /* also map fields: repeated entries with key = 1, value = 2 */
} imagen_config_type;

typedef struct imagen_config_enum_value {
    const char *name;
    int32_t number;
} imagen_config_enum_value;

typedef struct imagen_config_enum_desc {
    const char *name;                       /* proto name, for messages */
    const imagen_config_enum_value *values; /* declaration order; values[0] is the default */
    size_t n_values;
} imagen_config_enum_desc;

typedef struct imagen_config_msg_desc imagen_config_msg_desc;

typedef struct imagen_config_field_desc {
    const char *name; /* proto field name (snake_case) */
    uint32_t number;  /* proto field number */
    imagen_config_type type;
    bool repeated;
    bool is_map;                       /* repeated MESSAGE of a map-entry descriptor */
    int8_t oneof;                      /* index into the message's oneofs, -1 = none */
    const imagen_config_msg_desc *msg; /* MESSAGE fields */
    const imagen_config_enum_desc *en; /* ENUM fields */
} imagen_config_field_desc;

struct imagen_config_msg_desc {
    const char *name;                       /* e.g. "ModelInput" */
    const imagen_config_field_desc *fields; /* declaration order (= JSON order) */
    size_t n_fields;                        /* at most 64 (JSON parse uses a bitmask) */
    const char *const *oneofs;              /* oneof names */
    size_t n_oneofs;
    bool map_entry; /* fields are key (1) and value (2) */
};

/* One parsed value. Which member is live follows the field type. */
typedef union imagen_config_value {
    int64_t i;  /* INT32, INT64, ENUM */
    uint64_t u; /* UINT32, UINT64 */
    double f;   /* FLOAT (already rounded to float), DOUBLE */
    bool b;     /* BOOL */
    struct {
        char *p; /* owned, NUL-terminated (may also contain NULs) */
        size_t len;
    } s;                  /* STRING */
    imagen_config_msg *m; /* MESSAGE, owned */
} imagen_config_value;

/* Values of one field. Singular fields live in `v`, repeated ones in `vals`. */
typedef struct imagen_config_slot {
    imagen_config_value v;     /* singular value (valid when `set`) */
    imagen_config_value *vals; /* repeated values, owned */
    uint32_t n;                /* repeated count */
    uint32_t cap;
    bool set; /* singular: given explicitly (presence) */
} imagen_config_slot;

struct imagen_config_msg {
    const imagen_config_msg_desc *desc;
    imagen_config_slot slots[]; /* one per desc->fields entry */
};

/* The ModelConfig root descriptor and the DataType enum. */
extern const imagen_config_msg_desc imagen_config_model_config_desc;
extern const imagen_config_enum_desc imagen_config_datatype_enum;

/* ---- schema lookups (schema.c) ---- */

/* Index of the field named `name` (exact proto name, `len` bytes), or -1. */
int imagen_config_field_index(const imagen_config_msg_desc *d, const char *name, size_t len);
/* Index of the field whose proto name or lowerCamelCase name is `name`, or -1. */
int imagen_config_field_index_json(const imagen_config_msg_desc *d, const char *name, size_t len);
/* Index of a field that must exist (programming error otherwise: aborts). */
int imagen_config_field_must(const imagen_config_msg_desc *d, const char *name);
/* Enum value lookups; return false when unknown. `nocase` compares ASCII
 * case-insensitively (JSON). */
bool imagen_config_enum_by_name(const imagen_config_enum_desc *e, const char *name, size_t len, bool nocase,
                                int32_t *out);
bool imagen_config_enum_known(const imagen_config_enum_desc *e, int64_t number);
/* Name of an enum value, or NULL when the number is not declared. */
const char *imagen_config_enum_name(const imagen_config_enum_desc *e, int64_t number);
/* True if the integer -mag (neg) or +mag fits the integer field type `type`
 * (one of the IMAGEN_CONFIG_T_*INT* types). Shared by both parsers. */
bool imagen_config_int_in_range(int type, bool neg, uint64_t mag);

/* ---- dynamic message (msg.c) ---- */

/* Allocates an empty message of type `d`; NULL on allocation failure. */
imagen_config_msg *imagen_config_msg_new(const imagen_config_msg_desc *d);
/* Frees the values of field `f` held in `v` (strings, sub-messages). */
void imagen_config_value_free(const imagen_config_field_desc *f, imagen_config_value *v);
/* Clears field `fi` back to unset/empty. */
void imagen_config_msg_clear_field(imagen_config_msg *m, size_t fi);
/* Appends a zeroed value to repeated field `fi`; NULL on allocation failure
 * or when the count would exceed UINT32_MAX. */
imagen_config_value *imagen_config_msg_push(imagen_config_msg *m, size_t fi);
/* Returns the index of another set member of the oneof of field `fi`, or -1. */
int imagen_config_msg_oneof_conflict(const imagen_config_msg *m, size_t fi);
/* Sorts every map field of `m` (not recursively) by key and drops all but
 * the last entry of equal keys ("last wins"). O(n log n). False on OOM. */
bool imagen_config_msg_finish_maps(imagen_config_msg *m);
/* Rounds a double to the nearest float value (as a double), without the
 * undefined behaviour of converting an out-of-range value. */
double imagen_config_to_float(double d);
/* Copies `len` bytes into a fresh NUL-terminated string; NULL on OOM. */
char *imagen_config_strndup(const char *s, size_t len);

/* Accessors by field name for normalization and the typed builder. The
 * names must exist in the schema (checked by abort). Getters return the
 * proto3 default when unset. */
const char *imagen_config_get_str(const imagen_config_msg *m, const char *name);
int64_t imagen_config_get_int(const imagen_config_msg *m, const char *name);
uint64_t imagen_config_get_uint(const imagen_config_msg *m, const char *name);
bool imagen_config_get_bool(const imagen_config_msg *m, const char *name);
bool imagen_config_has(const imagen_config_msg *m, const char *name);
/* Sub-message, or NULL when unset. */
const imagen_config_msg *imagen_config_get_msg(const imagen_config_msg *m, const char *name);
/* Sub-message, created (and marked set) when absent; NULL on OOM. Clears
 * other members of its oneof. */
imagen_config_msg *imagen_config_mutable_msg(imagen_config_msg *m, const char *name);
/* Repeated field access. */
size_t imagen_config_count(const imagen_config_msg *m, const char *name);
const imagen_config_value *imagen_config_at(const imagen_config_msg *m, const char *name, size_t i);
imagen_config_value *imagen_config_at_mut(imagen_config_msg *m, const char *name, size_t i);
/* Setters; false on allocation failure. */
bool imagen_config_set_str(imagen_config_msg *m, const char *name, const char *s);
void imagen_config_set_int(imagen_config_msg *m, const char *name, int64_t v);
void imagen_config_set_uint(imagen_config_msg *m, const char *name, uint64_t v);
void imagen_config_set_bool(imagen_config_msg *m, const char *name, bool v);
/* Appends a new (empty) message to repeated message field `name`; NULL on OOM. */
imagen_config_msg *imagen_config_add_msg(imagen_config_msg *m, const char *name);
bool imagen_config_add_int(imagen_config_msg *m, const char *name, int64_t v);

#endif
