/*
 * imagen — model configuration (Triton's ModelConfig, spec §3).
 *
 * Two views of one configuration:
 *   - imagen_config_msg: the whole ModelConfig message as parsed from
 *     config.pbtxt (protobuf text format) or from protobuf-JSON (the load API's
 *     "config" override). It keeps every field of spec §3, knows the schema
 *     (names, numbers, types), renders the JSON form of §1.6 and can be edited
 *     by normalization and by backends that auto-complete a config.
 *   - imagen_model_config: the typed, validated, normalized subset the server
 *     core and the backends use at run time. It is built from a msg and keeps a
 *     pointer to it (for rendering).
 *
 * Implemented in src/config/. Nothing here is thread-safe for writing; a built
 * imagen_model_config is immutable and may be read from any thread.
 */
#ifndef IMAGEN_MODEL_CONFIG_H
#define IMAGEN_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"
#include "imagen/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits for configs read from disk or the network. */
#define IMAGEN_CONFIG_MAX_BYTES (4u << 20) /* config.pbtxt / JSON size */
#define IMAGEN_CONFIG_MAX_DEPTH 32         /* message nesting */
#define IMAGEN_CONFIG_MAX_TENSORS 1024     /* inputs or outputs per model */
#define IMAGEN_CONFIG_MAX_INSTANCES 256    /* instances per model (all groups) */
#define IMAGEN_CONFIG_MAX_BATCH_SIZE (1 << 20)

typedef struct imagen_config_msg imagen_config_msg;

/* ---- enums (numbers as in model_config.proto) ---- */
typedef enum { IMAGEN_FORMAT_NONE = 0, IMAGEN_FORMAT_NHWC = 1, IMAGEN_FORMAT_NCHW = 2 } imagen_tensor_format;
typedef enum {
    IMAGEN_KIND_AUTO = 0,
    IMAGEN_KIND_GPU = 1,
    IMAGEN_KIND_CPU = 2,
    IMAGEN_KIND_MODEL = 3
} imagen_instance_kind;
typedef enum { IMAGEN_TIMEOUT_REJECT = 0, IMAGEN_TIMEOUT_DELAY = 1 } imagen_timeout_action;
typedef enum {
    IMAGEN_VERSION_POLICY_LATEST = 0,
    IMAGEN_VERSION_POLICY_ALL = 1,
    IMAGEN_VERSION_POLICY_SPECIFIC = 2
} imagen_version_policy_kind;

typedef struct imagen_tensor_config {
    char *name;
    imagen_datatype datatype;
    int64_t dims[IMAGEN_MAX_RANK]; /* without the batch dim; -1 = variable */
    size_t rank;
    bool has_reshape;
    int64_t reshape[IMAGEN_MAX_RANK];
    size_t reshape_rank;
    imagen_tensor_format format; /* inputs only */
    bool optional;               /* inputs only */
    bool allow_ragged_batch;     /* inputs only */
    bool is_shape_tensor;
    char *label_filename; /* outputs only; NULL when unset */
} imagen_tensor_config;

typedef struct imagen_queue_policy {
    imagen_timeout_action timeout_action;
    uint64_t default_timeout_us; /* 0 = no timeout */
    bool allow_timeout_override;
    uint32_t max_queue_size; /* 0 = unbounded */
} imagen_queue_policy;

typedef struct imagen_dynamic_batching {
    int32_t *preferred_batch_sizes; /* after normalization: [max_batch_size] when none given */
    size_t n_preferred_batch_sizes;
    uint64_t max_queue_delay_us;
    bool preserve_ordering;
    uint64_t priority_levels; /* 0 = one queue */
    uint64_t default_priority_level;
    imagen_queue_policy default_queue_policy;
    /* Policy of each level, indexed 1..priority_levels (index 0 unused);
     * levels without an entry in priority_queue_policy hold a copy of the
     * default policy. NULL when priority_levels == 0. */
    imagen_queue_policy *level_policies;
} imagen_dynamic_batching;

typedef struct imagen_instance_group {
    char *name;
    imagen_instance_kind kind; /* after normalization never AUTO */
    int32_t count;
    int32_t *gpus;
    size_t n_gpus;
    bool passive;
} imagen_instance_group;

typedef struct imagen_config_param {
    char *key;
    char *value; /* ModelParameter.string_value */
} imagen_config_param;

typedef enum { IMAGEN_WARMUP_ZERO = 0, IMAGEN_WARMUP_RANDOM = 1, IMAGEN_WARMUP_FILE = 2 } imagen_warmup_data;

typedef struct imagen_warmup_input {
    char *name;
    imagen_datatype datatype;
    int64_t dims[IMAGEN_MAX_RANK];
    size_t rank;
    imagen_warmup_data source;
    char *input_data_file; /* relative to <model>/warmup/ when source == FILE */
} imagen_warmup_input;

typedef struct imagen_warmup {
    char *name;
    uint32_t batch_size;
    uint32_t count; /* 0 = once */
    imagen_warmup_input *inputs;
    size_t n_inputs;
} imagen_warmup;

typedef struct imagen_model_config {
    char *name;
    char *platform;               /* "" when unset */
    char *backend;                /* "" when unset */
    char *default_model_filename; /* "" when unset */
    imagen_version_policy_kind version_policy;
    uint32_t latest_num_versions;
    int64_t *specific_versions;
    size_t n_specific_versions;
    int32_t max_batch_size;
    imagen_tensor_config *inputs;
    size_t n_inputs;
    imagen_tensor_config *outputs;
    size_t n_outputs;
    bool has_dynamic_batching;
    imagen_dynamic_batching dynamic_batching;
    bool has_sequence_batching;
    bool has_ensemble_scheduling;
    imagen_instance_group *instance_groups;
    size_t n_instance_groups;
    imagen_config_param *parameters;
    size_t n_parameters;
    imagen_config_param *metric_tags;
    size_t n_metric_tags;
    imagen_warmup *warmups;
    size_t n_warmups;
    bool decoupled;
    bool response_cache;
    imagen_config_msg *msg; /* owned; the full message this was built from */
} imagen_model_config;

/* ---- imagen_config_msg: parse, render, edit ---- */

/* Parses protobuf text format (config.pbtxt, spec §3.11) into a ModelConfig
 * message. `filename` is used in error messages, which have the form
 * "<filename>:<line>:<col>: <what> (field '<name>')". `text` need not be
 * NUL-terminated. On success *out is owned by the caller. Thread-safe. */
imagen_error *imagen_config_parse_text(const char *text, size_t len, const char *filename, imagen_config_msg **out);

/* Parses protobuf-JSON (proto field names or lowerCamelCase; enum names
 * case-insensitive; unknown fields rejected) as the load API's "config"
 * parameter carries it. On success *out is owned by the caller. */
imagen_error *imagen_config_parse_json(const char *json, size_t len, imagen_config_msg **out);

/* Frees a message; accepts NULL. */
void imagen_config_msg_free(imagen_config_msg *msg);

/* Deep copy; returns owned or NULL on allocation failure. */
imagen_config_msg *imagen_config_msg_clone(const imagen_config_msg *msg);

/* Renders the message as Triton's model-config JSON (spec §1.6): snake_case
 * names, every primitive/repeated/map field printed even when default, unset
 * sub-messages omitted, enums by name, 64-bit integers as JSON numbers.
 * Returns an owned NUL-terminated string (free()), NULL on allocation failure. */
char *imagen_config_msg_to_json(const imagen_config_msg *msg);

/* Encodes the message in protobuf binary wire format (for the gRPC
 * ModelConfigResponse). *out is owned (free()). */
imagen_error *imagen_config_msg_to_protobuf(const imagen_config_msg *msg, uint8_t **out, size_t *out_len);

/* What normalization needs to know about the model directory. */
typedef struct imagen_config_autofill {
    const char *model_name;        /* directory name */
    const char *first_version_dir; /* path of the lexicographically first version
                                      directory, or NULL if there is none */
    bool gpu_available;            /* KIND_AUTO resolves to KIND_GPU only if true */
} imagen_config_autofill;

/* Applies Triton's load-time normalization to `msg` in place (spec §3.10):
 * name, backend/platform/default filename autofill, version_policy default,
 * preferred_batch_size default, pinned-memory defaults, instance groups
 * (names, count, kind). Errors name the field at fault. */
imagen_error *imagen_config_normalize(imagen_config_msg *msg, const imagen_config_autofill *ctx);

/* Validates `msg` (spec §3.3, §3.6 and the checks Triton makes at load:
 * non-empty unique tensor names, known data types, rank >= 1, dims >= -1,
 * preferred sizes in (0, max_batch_size], priority levels, preserve_ordering
 * rules, warmup inputs, ...) and builds the typed view. On success *out is
 * owned (free with imagen_model_config_free) and owns a clone of `msg`. */
imagen_error *imagen_model_config_build(const imagen_config_msg *msg, imagen_model_config **out);

/* Frees a typed config and its message; accepts NULL. */
void imagen_model_config_free(imagen_model_config *cfg);

/* Lookups on a built config; return borrowed pointers or NULL. */
const imagen_tensor_config *imagen_model_config_input(const imagen_model_config *cfg, const char *name);
const imagen_tensor_config *imagen_model_config_output(const imagen_model_config *cfg, const char *name);
const char *imagen_model_config_parameter(const imagen_model_config *cfg, const char *key);

/* ---- edits used by backends that auto-complete a config (spec §3.10.3) ---- */

/* Reads/writes max_batch_size. */
int32_t imagen_config_msg_max_batch_size(const imagen_config_msg *msg);
void imagen_config_msg_set_max_batch_size(imagen_config_msg *msg, int32_t value);
/* Number of `input` (is_output false) or `output` entries. */
size_t imagen_config_msg_tensor_count(const imagen_config_msg *msg, bool is_output);
/* Appends an input or output with name, data type and dims. */
imagen_error *imagen_config_msg_add_tensor(imagen_config_msg *msg, bool is_output, const char *name,
                                           imagen_datatype datatype, const int64_t *dims, size_t rank);
/* True if the message sets dynamic_batching, sequence_batching or ensemble_scheduling. */
bool imagen_config_msg_has_scheduler(const imagen_config_msg *msg);
/* Sets an empty `dynamic_batching {}`. */
void imagen_config_msg_enable_dynamic_batching(imagen_config_msg *msg);

#ifdef __cplusplus
}
#endif
#endif /* IMAGEN_MODEL_CONFIG_H */
