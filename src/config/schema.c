/*
 * The schema of model_config.proto as constant tables: every message of
 * spec §3 with its fields (name, number, type, repeated, oneof) in proto
 * declaration order, which is also the order the JSON renderer prints. The
 * same tables drive the text and JSON parsers and the protobuf encoder, so a
 * field is added in exactly one place. Read-only data; safe from any thread.
 */
#include "config/schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Field row builders. */
#define SCALAR(n, num, t)                                         \
    {                                                             \
        n, num, IMAGEN_CONFIG_T_##t, false, false, -1, NULL, NULL \
    }
#define REPEATED(n, num, t)                                      \
    {                                                            \
        n, num, IMAGEN_CONFIG_T_##t, true, false, -1, NULL, NULL \
    }
#define ONEOF_SCALAR(n, num, t, o)                               \
    {                                                            \
        n, num, IMAGEN_CONFIG_T_##t, false, false, o, NULL, NULL \
    }
#define ENUM(n, num, e)                                          \
    {                                                            \
        n, num, IMAGEN_CONFIG_T_ENUM, false, false, -1, NULL, &e \
    }
#define MESSAGE(n, num, m)                                          \
    {                                                               \
        n, num, IMAGEN_CONFIG_T_MESSAGE, false, false, -1, &m, NULL \
    }
#define ONEOF_MESSAGE(n, num, m, o)                                \
    {                                                              \
        n, num, IMAGEN_CONFIG_T_MESSAGE, false, false, o, &m, NULL \
    }
#define REPEATED_MESSAGE(n, num, m)                                \
    {                                                              \
        n, num, IMAGEN_CONFIG_T_MESSAGE, true, false, -1, &m, NULL \
    }
#define MAP(n, num, entry)                                            \
    {                                                                 \
        n, num, IMAGEN_CONFIG_T_MESSAGE, true, true, -1, &entry, NULL \
    }

#define DESC(var, pname, fields) \
    static const imagen_config_msg_desc var = {pname, fields, COUNT(fields), NULL, 0, false}
#define DESC_ONEOF(var, pname, fields, oneofs) \
    static const imagen_config_msg_desc var = {pname, fields, COUNT(fields), oneofs, COUNT(oneofs), false}
#define ENTRY(var, keyrow, valrow)                                           \
    static const imagen_config_field_desc var##_fields[] = {keyrow, valrow}; \
    static const imagen_config_msg_desc var = {"MapEntry", var##_fields, 2, NULL, 0, true}
#define ENUM_DESC(var, pname, values) static const imagen_config_enum_desc var = {pname, values, COUNT(values)}

/* ---- enums ---- */

static const imagen_config_enum_value datatype_values[] = {
    {"TYPE_INVALID", 0}, {"TYPE_BOOL", 1},  {"TYPE_UINT8", 2}, {"TYPE_UINT16", 3},  {"TYPE_UINT32", 4},
    {"TYPE_UINT64", 5},  {"TYPE_INT8", 6},  {"TYPE_INT16", 7}, {"TYPE_INT32", 8},   {"TYPE_INT64", 9},
    {"TYPE_FP16", 10},   {"TYPE_FP32", 11}, {"TYPE_FP64", 12}, {"TYPE_STRING", 13}, {"TYPE_BF16", 14},
};
const imagen_config_enum_desc imagen_config_datatype_enum = {"DataType", datatype_values, COUNT(datatype_values)};
#define datatype_enum imagen_config_datatype_enum

static const imagen_config_enum_value format_values[] = {{"FORMAT_NONE", 0}, {"FORMAT_NHWC", 1}, {"FORMAT_NCHW", 2}};
ENUM_DESC(format_enum, "ModelInput.Format", format_values);

static const imagen_config_enum_value kind_values[] = {
    {"KIND_AUTO", 0}, {"KIND_GPU", 1}, {"KIND_CPU", 2}, {"KIND_MODEL", 3}};
ENUM_DESC(kind_enum, "ModelInstanceGroup.Kind", kind_values);

static const imagen_config_enum_value secondary_kind_values[] = {{"KIND_NVDLA", 0}};
ENUM_DESC(secondary_kind_enum, "SecondaryDeviceKind", secondary_kind_values);

static const imagen_config_enum_value timeout_action_values[] = {{"REJECT", 0}, {"DELAY", 1}};
ENUM_DESC(timeout_action_enum, "ModelQueuePolicy.TimeoutAction", timeout_action_values);

static const imagen_config_enum_value control_kind_values[] = {{"CONTROL_SEQUENCE_START", 0},
                                                               {"CONTROL_SEQUENCE_READY", 1},
                                                               {"CONTROL_SEQUENCE_END", 2},
                                                               {"CONTROL_SEQUENCE_CORRID", 3}};
ENUM_DESC(control_kind_enum, "Control.Kind", control_kind_values);

static const imagen_config_enum_value priority_values[] = {
    {"PRIORITY_DEFAULT", 0}, {"PRIORITY_MAX", 1}, {"PRIORITY_MIN", 2}};
ENUM_DESC(priority_enum, "ModelPriority", priority_values);

static const imagen_config_enum_value batch_input_kind_values[] = {{"BATCH_ELEMENT_COUNT", 0},
                                                                   {"BATCH_ACCUMULATED_ELEMENT_COUNT", 1},
                                                                   {"BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", 2},
                                                                   {"BATCH_MAX_ELEMENT_COUNT_AS_SHAPE", 3},
                                                                   {"BATCH_ITEM_SHAPE", 4},
                                                                   {"BATCH_ITEM_SHAPE_FLATTEN", 5}};
ENUM_DESC(batch_input_kind_enum, "BatchInput.Kind", batch_input_kind_values);

static const imagen_config_enum_value batch_output_kind_values[] = {{"BATCH_SCATTER_WITH_INPUT_SHAPE", 0}};
ENUM_DESC(batch_output_kind_enum, "BatchOutput.Kind", batch_output_kind_values);

/* ---- shared map entries ---- */

ENTRY(string_string_entry, SCALAR("key", 1, STRING), SCALAR("value", 2, STRING));

/* ---- inputs / outputs (§3.3) ---- */

static const imagen_config_field_desc reshape_fields[] = {REPEATED("shape", 1, INT64)};
DESC(reshape_desc, "ModelTensorReshape", reshape_fields);

static const imagen_config_field_desc input_fields[] = {
    SCALAR("name", 1, STRING),
    ENUM("data_type", 2, datatype_enum),
    ENUM("format", 3, format_enum),
    REPEATED("dims", 4, INT64),
    MESSAGE("reshape", 5, reshape_desc),
    SCALAR("is_shape_tensor", 6, BOOL),
    SCALAR("allow_ragged_batch", 7, BOOL),
    SCALAR("optional", 8, BOOL),
    SCALAR("is_non_linear_format_io", 9, BOOL),
};
DESC(input_desc, "ModelInput", input_fields);

static const imagen_config_field_desc output_fields[] = {
    SCALAR("name", 1, STRING),
    ENUM("data_type", 2, datatype_enum),
    REPEATED("dims", 3, INT64),
    MESSAGE("reshape", 5, reshape_desc),
    SCALAR("label_filename", 4, STRING),
    SCALAR("is_shape_tensor", 6, BOOL),
    SCALAR("is_non_linear_format_io", 7, BOOL),
};
DESC(output_desc, "ModelOutput", output_fields);

static const imagen_config_field_desc batch_input_fields[] = {
    ENUM("kind", 1, batch_input_kind_enum),
    REPEATED("target_name", 2, STRING),
    ENUM("data_type", 3, datatype_enum),
    REPEATED("source_input", 4, STRING),
};
DESC(batch_input_desc, "BatchInput", batch_input_fields);

static const imagen_config_field_desc batch_output_fields[] = {
    REPEATED("target_name", 1, STRING),
    ENUM("kind", 2, batch_output_kind_enum),
    REPEATED("source_input", 3, STRING),
};
DESC(batch_output_desc, "BatchOutput", batch_output_fields);

/* ---- instance groups (§3.4) ---- */

static const imagen_config_field_desc resource_fields[] = {
    SCALAR("name", 1, STRING),
    SCALAR("global", 2, BOOL),
    SCALAR("count", 3, UINT32),
};
DESC(resource_desc, "ModelRateLimiter.Resource", resource_fields);

static const imagen_config_field_desc rate_limiter_fields[] = {
    REPEATED_MESSAGE("resources", 1, resource_desc),
    SCALAR("priority", 2, UINT32),
};
DESC(rate_limiter_desc, "ModelRateLimiter", rate_limiter_fields);

static const imagen_config_field_desc secondary_device_fields[] = {
    ENUM("kind", 1, secondary_kind_enum),
    SCALAR("device_id", 2, INT64),
};
DESC(secondary_device_desc, "ModelInstanceGroup.SecondaryDevice", secondary_device_fields);

static const imagen_config_field_desc instance_group_fields[] = {
    SCALAR("name", 1, STRING),        ENUM("kind", 4, kind_enum),
    SCALAR("count", 2, INT32),        MESSAGE("rate_limiter", 6, rate_limiter_desc),
    REPEATED("gpus", 3, INT32),       REPEATED_MESSAGE("secondary_devices", 8, secondary_device_desc),
    REPEATED("profile", 5, STRING),   SCALAR("passive", 7, BOOL),
    SCALAR("host_policy", 9, STRING),
};
DESC(instance_group_desc, "ModelInstanceGroup", instance_group_fields);

/* ---- version policy (§3.5) ---- */

static const imagen_config_field_desc latest_fields[] = {SCALAR("num_versions", 1, UINT32)};
DESC(latest_desc, "ModelVersionPolicy.Latest", latest_fields);
/* All {} has no fields; C has no empty arrays, so the table holds one
 * placeholder row that n_fields = 0 hides. */
static const imagen_config_field_desc all_fields[] = {{NULL, 0, IMAGEN_CONFIG_T_BOOL, false, false, -1, NULL, NULL}};
static const imagen_config_msg_desc all_desc = {"ModelVersionPolicy.All", all_fields, 0, NULL, 0, false};
static const imagen_config_field_desc specific_fields[] = {REPEATED("versions", 1, INT64)};
DESC(specific_desc, "ModelVersionPolicy.Specific", specific_fields);

static const char *const version_policy_oneofs[] = {"policy_choice"};
static const imagen_config_field_desc version_policy_fields[] = {
    ONEOF_MESSAGE("latest", 1, latest_desc, 0),
    ONEOF_MESSAGE("all", 2, all_desc, 0),
    ONEOF_MESSAGE("specific", 3, specific_desc, 0),
};
DESC_ONEOF(version_policy_desc, "ModelVersionPolicy", version_policy_fields, version_policy_oneofs);

/* ---- dynamic batching (§3.6) ---- */

static const imagen_config_field_desc queue_policy_fields[] = {
    ENUM("timeout_action", 1, timeout_action_enum),
    SCALAR("default_timeout_microseconds", 2, UINT64),
    SCALAR("allow_timeout_override", 3, BOOL),
    SCALAR("max_queue_size", 4, UINT32),
};
DESC(queue_policy_desc, "ModelQueuePolicy", queue_policy_fields);

ENTRY(priority_policy_entry, SCALAR("key", 1, UINT64), MESSAGE("value", 2, queue_policy_desc));

static const imagen_config_field_desc dynamic_batching_fields[] = {
    REPEATED("preferred_batch_size", 1, INT32),
    SCALAR("max_queue_delay_microseconds", 2, UINT64),
    SCALAR("preserve_ordering", 3, BOOL),
    SCALAR("priority_levels", 4, UINT64),
    SCALAR("default_priority_level", 5, UINT64),
    MESSAGE("default_queue_policy", 6, queue_policy_desc),
    MAP("priority_queue_policy", 7, priority_policy_entry),
};
DESC(dynamic_batching_desc, "ModelDynamicBatching", dynamic_batching_fields);

/* ---- sequence batching (§3.7) ---- */

static const imagen_config_field_desc control_fields[] = {
    ENUM("kind", 1, control_kind_enum),   REPEATED("int32_false_true", 2, INT32), REPEATED("fp32_false_true", 3, FLOAT),
    REPEATED("bool_false_true", 5, BOOL), ENUM("data_type", 4, datatype_enum),
};
DESC(control_desc, "ModelSequenceBatching.Control", control_fields);

static const imagen_config_field_desc control_input_fields[] = {
    SCALAR("name", 1, STRING),
    REPEATED_MESSAGE("control", 2, control_desc),
};
DESC(control_input_desc, "ModelSequenceBatching.ControlInput", control_input_fields);

static const char *const initial_state_oneofs[] = {"state_data"};
static const imagen_config_field_desc initial_state_fields[] = {
    ENUM("data_type", 1, datatype_enum),     REPEATED("dims", 2, INT64), ONEOF_SCALAR("zero_data", 3, BOOL, 0),
    ONEOF_SCALAR("data_file", 4, STRING, 0), SCALAR("name", 5, STRING),
};
DESC_ONEOF(initial_state_desc, "ModelSequenceBatching.InitialState", initial_state_fields, initial_state_oneofs);

static const imagen_config_field_desc state_fields[] = {
    SCALAR("input_name", 1, STRING),
    SCALAR("output_name", 2, STRING),
    ENUM("data_type", 3, datatype_enum),
    REPEATED("dims", 4, INT64),
    REPEATED_MESSAGE("initial_state", 5, initial_state_desc),
    SCALAR("use_same_buffer_for_input_output", 6, BOOL),
    SCALAR("use_growable_memory", 7, BOOL),
};
DESC(state_desc, "ModelSequenceBatching.State", state_fields);

static const imagen_config_field_desc strategy_direct_fields[] = {
    SCALAR("max_queue_delay_microseconds", 1, UINT64),
    SCALAR("minimum_slot_utilization", 2, FLOAT),
};
DESC(strategy_direct_desc, "ModelSequenceBatching.StrategyDirect", strategy_direct_fields);

static const imagen_config_field_desc strategy_oldest_fields[] = {
    SCALAR("max_candidate_sequences", 1, INT32),
    REPEATED("preferred_batch_size", 2, INT32),
    SCALAR("max_queue_delay_microseconds", 3, UINT64),
    SCALAR("preserve_ordering", 4, BOOL),
};
DESC(strategy_oldest_desc, "ModelSequenceBatching.StrategyOldest", strategy_oldest_fields);

static const char *const sequence_batching_oneofs[] = {"strategy_choice"};
static const imagen_config_field_desc sequence_batching_fields[] = {
    ONEOF_MESSAGE("direct", 3, strategy_direct_desc, 0),
    ONEOF_MESSAGE("oldest", 4, strategy_oldest_desc, 0),
    SCALAR("max_sequence_idle_microseconds", 1, UINT64),
    REPEATED_MESSAGE("control_input", 2, control_input_desc),
    REPEATED_MESSAGE("state", 5, state_desc),
    SCALAR("iterative_sequence", 6, BOOL),
};
DESC_ONEOF(sequence_batching_desc, "ModelSequenceBatching", sequence_batching_fields, sequence_batching_oneofs);

/* ---- ensembles (§3.8) ---- */

static const imagen_config_field_desc step_fields[] = {
    SCALAR("model_name", 1, STRING),          SCALAR("model_version", 2, INT64),
    MAP("input_map", 3, string_string_entry), MAP("output_map", 4, string_string_entry),
    SCALAR("model_namespace", 5, STRING),
};
DESC(step_desc, "ModelEnsembling.Step", step_fields);

static const imagen_config_field_desc ensembling_fields[] = {
    REPEATED_MESSAGE("step", 1, step_desc),
    SCALAR("max_inflight_requests", 2, UINT32),
};
DESC(ensembling_desc, "ModelEnsembling", ensembling_fields);

/* ---- warmup (§3.9) ---- */

static const char *const warmup_input_oneofs[] = {"input_data_type"};
static const imagen_config_field_desc warmup_input_fields[] = {
    ENUM("data_type", 1, datatype_enum),           REPEATED("dims", 2, INT64),
    ONEOF_SCALAR("zero_data", 3, BOOL, 0),         ONEOF_SCALAR("random_data", 4, BOOL, 0),
    ONEOF_SCALAR("input_data_file", 5, STRING, 0),
};
DESC_ONEOF(warmup_input_desc, "ModelWarmup.Input", warmup_input_fields, warmup_input_oneofs);

ENTRY(warmup_input_entry, SCALAR("key", 1, STRING), MESSAGE("value", 2, warmup_input_desc));

static const imagen_config_field_desc warmup_fields[] = {
    SCALAR("name", 1, STRING),
    SCALAR("batch_size", 2, UINT32),
    MAP("inputs", 3, warmup_input_entry),
    SCALAR("count", 4, UINT32),
};
DESC(warmup_desc, "ModelWarmup", warmup_fields);

/* ---- optimization (§3.9) ---- */

static const imagen_config_field_desc graph_fields[] = {SCALAR("level", 1, INT32)};
DESC(graph_desc, "ModelOptimizationPolicy.Graph", graph_fields);

static const imagen_config_field_desc shape_fields[] = {REPEATED("dim", 1, INT64)};
DESC(shape_desc, "GraphSpec.Shape", shape_fields);
ENTRY(shape_entry, SCALAR("key", 1, STRING), MESSAGE("value", 2, shape_desc));

static const imagen_config_field_desc lower_bound_fields[] = {
    SCALAR("batch_size", 1, INT32),
    MAP("input", 2, shape_entry),
};
DESC(lower_bound_desc, "GraphSpec.LowerBound", lower_bound_fields);

static const imagen_config_field_desc graph_spec_fields[] = {
    SCALAR("batch_size", 1, INT32),
    MAP("input", 2, shape_entry),
    MESSAGE("lower_bound", 3, lower_bound_desc),
};
DESC(graph_spec_desc, "ModelOptimizationPolicy.Cuda.GraphSpec", graph_spec_fields);

static const imagen_config_field_desc cuda_fields[] = {
    SCALAR("graphs", 1, BOOL),
    SCALAR("busy_wait_events", 2, BOOL),
    REPEATED_MESSAGE("graph_spec", 3, graph_spec_desc),
    SCALAR("output_copy_stream", 4, BOOL),
};
DESC(cuda_desc, "ModelOptimizationPolicy.Cuda", cuda_fields);

static const imagen_config_field_desc accelerator_fields[] = {
    SCALAR("name", 1, STRING),
    MAP("parameters", 2, string_string_entry),
};
DESC(accelerator_desc, "ExecutionAccelerators.Accelerator", accelerator_fields);

static const imagen_config_field_desc accelerators_fields[] = {
    REPEATED_MESSAGE("gpu_execution_accelerator", 1, accelerator_desc),
    REPEATED_MESSAGE("cpu_execution_accelerator", 2, accelerator_desc),
};
DESC(accelerators_desc, "ModelOptimizationPolicy.ExecutionAccelerators", accelerators_fields);

static const imagen_config_field_desc pinned_fields[] = {SCALAR("enable", 1, BOOL)};
DESC(pinned_desc, "ModelOptimizationPolicy.PinnedMemoryBuffer", pinned_fields);

static const imagen_config_field_desc optimization_fields[] = {
    MESSAGE("graph", 1, graph_desc),
    ENUM("priority", 2, priority_enum),
    MESSAGE("cuda", 3, cuda_desc),
    MESSAGE("execution_accelerators", 4, accelerators_desc),
    MESSAGE("input_pinned_memory", 5, pinned_desc),
    MESSAGE("output_pinned_memory", 6, pinned_desc),
    SCALAR("gather_kernel_buffer_threshold", 7, UINT32),
    SCALAR("eager_batching", 8, BOOL),
};
DESC(optimization_desc, "ModelOptimizationPolicy", optimization_fields);

/* ---- small messages (§3.2, §3.9) ---- */

static const imagen_config_field_desc parameter_fields[] = {SCALAR("string_value", 1, STRING)};
DESC(parameter_desc, "ModelParameter", parameter_fields);
ENTRY(parameter_entry, SCALAR("key", 1, STRING), MESSAGE("value", 2, parameter_desc));

static const imagen_config_field_desc operations_fields[] = {REPEATED("op_library_filename", 1, STRING)};
DESC(operations_desc, "ModelOperations", operations_fields);

static const imagen_config_field_desc transaction_fields[] = {SCALAR("decoupled", 1, BOOL)};
DESC(transaction_desc, "ModelTransactionPolicy", transaction_fields);

static const imagen_config_field_desc agent_fields[] = {
    SCALAR("name", 1, STRING),
    MAP("parameters", 2, string_string_entry),
};
DESC(agent_desc, "ModelRepositoryAgents.Agent", agent_fields);
static const imagen_config_field_desc agents_fields[] = {REPEATED_MESSAGE("agents", 1, agent_desc)};
DESC(agents_desc, "ModelRepositoryAgents", agents_fields);

static const imagen_config_field_desc cache_fields[] = {SCALAR("enable", 1, BOOL)};
DESC(cache_desc, "ModelResponseCache", cache_fields);

static const imagen_config_field_desc metric_identifier_fields[] = {SCALAR("family", 1, STRING)};
DESC(metric_identifier_desc, "ModelMetrics.MetricControl.MetricIdentifier", metric_identifier_fields);
static const imagen_config_field_desc histogram_fields[] = {REPEATED("buckets", 1, DOUBLE)};
DESC(histogram_desc, "ModelMetrics.MetricControl.HistogramOptions", histogram_fields);
static const char *const metric_control_oneofs[] = {"metric_options"};
static const imagen_config_field_desc metric_control_fields[] = {
    MESSAGE("metric_identifier", 1, metric_identifier_desc),
    ONEOF_MESSAGE("histogram_options", 2, histogram_desc, 0),
};
DESC_ONEOF(metric_control_desc, "ModelMetrics.MetricControl", metric_control_fields, metric_control_oneofs);
static const imagen_config_field_desc metrics_fields[] = {REPEATED_MESSAGE("metric_control", 1, metric_control_desc)};
DESC(metrics_desc, "ModelMetrics", metrics_fields);

/* ---- ModelConfig (§3.2) ---- */

static const char *const model_config_oneofs[] = {"scheduling_choice"};
static const imagen_config_field_desc model_config_fields[] = {
    SCALAR("name", 1, STRING),
    SCALAR("platform", 2, STRING),
    SCALAR("backend", 17, STRING),
    SCALAR("runtime", 25, STRING),
    MESSAGE("version_policy", 3, version_policy_desc),
    SCALAR("max_batch_size", 4, INT32),
    REPEATED_MESSAGE("input", 5, input_desc),
    REPEATED_MESSAGE("output", 6, output_desc),
    REPEATED_MESSAGE("batch_input", 20, batch_input_desc),
    REPEATED_MESSAGE("batch_output", 21, batch_output_desc),
    MESSAGE("optimization", 12, optimization_desc),
    ONEOF_MESSAGE("dynamic_batching", 11, dynamic_batching_desc, 0),
    ONEOF_MESSAGE("sequence_batching", 13, sequence_batching_desc, 0),
    ONEOF_MESSAGE("ensemble_scheduling", 15, ensembling_desc, 0),
    REPEATED_MESSAGE("instance_group", 7, instance_group_desc),
    SCALAR("default_model_filename", 8, STRING),
    MAP("cc_model_filenames", 9, string_string_entry),
    MAP("metric_tags", 10, string_string_entry),
    MAP("parameters", 14, parameter_entry),
    REPEATED_MESSAGE("model_warmup", 16, warmup_desc),
    MESSAGE("model_operations", 18, operations_desc),
    MESSAGE("model_transaction_policy", 19, transaction_desc),
    MESSAGE("model_repository_agents", 23, agents_desc),
    MESSAGE("response_cache", 24, cache_desc),
    MESSAGE("model_metrics", 26, metrics_desc),
};
const imagen_config_msg_desc imagen_config_model_config_desc = {
    "ModelConfig",       model_config_fields,        COUNT(model_config_fields),
    model_config_oneofs, COUNT(model_config_oneofs), false};

/* ---- lookups ---- */

int
imagen_config_field_index(const imagen_config_msg_desc *d, const char *name, size_t len)
{
    for (size_t i = 0; i < d->n_fields; i++) {
        const char *fn = d->fields[i].name;
        if (strlen(fn) == len && memcmp(fn, name, len) == 0)
            return (int)i;
    }
    return -1;
}

/* True if `name` (len bytes) is the lowerCamelCase form of proto name `fn`:
 * underscores dropped, the letter after each one upper-cased. */
static bool
camel_equal(const char *fn, const char *name, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; fn[i] != '\0'; i++) {
        char c = fn[i];
        if (c == '_' && fn[i + 1] >= 'a' && fn[i + 1] <= 'z') {
            c = (char)(fn[++i] - 'a' + 'A');
        }
        if (j >= len || name[j] != c)
            return false;
        j++;
    }
    return j == len;
}

int
imagen_config_field_index_json(const imagen_config_msg_desc *d, const char *name, size_t len)
{
    int i = imagen_config_field_index(d, name, len);
    if (i >= 0)
        return i;
    for (size_t k = 0; k < d->n_fields; k++) {
        if (camel_equal(d->fields[k].name, name, len))
            return (int)k;
    }
    return -1;
}

int
imagen_config_field_must(const imagen_config_msg_desc *d, const char *name)
{
    int i = imagen_config_field_index(d, name, strlen(name));
    if (i < 0) {
        fprintf(stderr, "config: no field '%s' in %s\n", name, d->name);
        abort();
    }
    return i;
}

static int
ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

bool
imagen_config_enum_by_name(const imagen_config_enum_desc *e, const char *name, size_t len, bool nocase, int32_t *out)
{
    for (size_t i = 0; i < e->n_values; i++) {
        const char *vn = e->values[i].name;
        if (strlen(vn) != len)
            continue;
        size_t k = 0;
        while (k < len &&
               (nocase ? ascii_lower((unsigned char)vn[k]) == ascii_lower((unsigned char)name[k]) : vn[k] == name[k]))
            k++;
        if (k == len) {
            *out = e->values[i].number;
            return true;
        }
    }
    return false;
}

const char *
imagen_config_enum_name(const imagen_config_enum_desc *e, int64_t number)
{
    for (size_t i = 0; i < e->n_values; i++) {
        if (e->values[i].number == number)
            return e->values[i].name;
    }
    return NULL;
}

bool
imagen_config_enum_known(const imagen_config_enum_desc *e, int64_t number)
{
    return imagen_config_enum_name(e, number) != NULL;
}

bool
imagen_config_int_in_range(int type, bool neg, uint64_t mag)
{
    switch (type) {
    case IMAGEN_CONFIG_T_INT32:
        return neg ? mag <= (uint64_t)INT32_MAX + 1 : mag <= INT32_MAX;
    case IMAGEN_CONFIG_T_INT64:
        return neg ? mag <= (uint64_t)INT64_MAX + 1 : mag <= INT64_MAX;
    case IMAGEN_CONFIG_T_UINT32:
        return (!neg || mag == 0) && mag <= UINT32_MAX;
    default:
        return !neg || mag == 0;
    }
}

/* The JSON parser tracks seen fields in a 64-bit mask and the encoder sorts
 * at most 64 indices; ModelConfig is the largest message. */
_Static_assert(COUNT(model_config_fields) <= 64, "message with more than 64 fields");
