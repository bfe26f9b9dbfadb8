/* Unit tests for src/config/build.c: the typed view built from a message,
 * every load-time validation error, lookups and the edit API. */
#include "config/schema.h"
#include "imagen/model_config.h"
#include "test.h"

/* Parses `text` and builds; returns the config or NULL (error stored in
 * *err when given, printed otherwise). */
static imagen_model_config *
build(const char *text, imagen_error **err)
{
    imagen_config_msg *m = NULL;
    imagen_model_config *cfg = NULL;
    imagen_error *e = imagen_config_parse_text(text, strlen(text), "b.pbtxt", &m);
    if (e == NULL)
        e = imagen_model_config_build(m, &cfg);
    imagen_config_msg_free(m);
    if (e != NULL) {
        if (err != NULL) {
            *err = e;
        } else {
            fprintf(stderr, "unexpected error: %s\n", imagen_error_message(e));
            imagen_error_free(e);
        }
    }
    return cfg;
}

static imagen_error *
build_err(const char *text)
{
    imagen_error *e = NULL;
    imagen_model_config *cfg = build(text, &e);
    imagen_model_config_free(cfg);
    return e;
}

#define IO                                                                                 \
    "name: \"m\" max_batch_size: 8 input { name: \"in\" data_type: TYPE_FP32 dims: [4] } " \
    "output { name: \"out\" data_type: TYPE_FP32 dims: [4] } "

static void
test_typed_view_of_a_full_config(void)
{
    imagen_model_config *cfg =
        build("name: \"m\" platform: \"p\" backend: \"b\" default_model_filename: \"f\" max_batch_size: 8\n"
              "version_policy { specific { versions: [3, 1] } }\n"
              "input { name: \"img\" data_type: TYPE_UINT8 format: FORMAT_NHWC dims: [-1, -1, 3] optional: true "
              "allow_ragged_batch: true }\n"
              "input { name: \"s\" data_type: TYPE_STRING dims: [1] reshape: { shape: [] } is_shape_tensor: true }\n"
              "output { name: \"o\" data_type: TYPE_FP16 dims: [2] label_filename: \"l.txt\" }\n"
              "dynamic_batching { preferred_batch_size: [2, 4] max_queue_delay_microseconds: 7 priority_levels: 3\n"
              "  default_priority_level: 2 default_queue_policy { max_queue_size: 5 timeout_action: DELAY "
              "default_timeout_microseconds: 9 }\n"
              "  priority_queue_policy { key: 3 value { allow_timeout_override: true max_queue_size: 1 } } }\n"
              "instance_group [ { name: \"g\" kind: KIND_GPU count: 2 gpus: [0, 1] }, { name: \"c\" kind: KIND_CPU "
              "count: 1 passive: true } ]\n"
              "parameters { key: \"k\" value { string_value: \"v\" } } parameters { key: \"e\" value { } }\n"
              "metric_tags { key: \"team\" value: \"x\" }\n"
              "model_warmup { name: \"w\" batch_size: 2 count: 3 inputs { key: \"img\" value { data_type: TYPE_UINT8 "
              "dims: [4, 4, 3] random_data: true } }\n"
              "  inputs { key: \"s\" value { data_type: TYPE_STRING dims: [1] input_data_file: \"s.bin\" } } }\n"
              "model_transaction_policy { decoupled: true } response_cache { enable: true }\n",
              NULL);
    CHECK(cfg != NULL);
    if (cfg == NULL)
        return;
    CHECK_STR_EQ(cfg->name, "m");
    CHECK_STR_EQ(cfg->platform, "p");
    CHECK_STR_EQ(cfg->backend, "b");
    CHECK_STR_EQ(cfg->default_model_filename, "f");
    CHECK_INT_EQ(cfg->version_policy, IMAGEN_VERSION_POLICY_SPECIFIC);
    CHECK_INT_EQ(cfg->n_specific_versions, 2);
    CHECK_INT_EQ(cfg->specific_versions[0], 3);
    CHECK_INT_EQ(cfg->max_batch_size, 8);
    CHECK_INT_EQ(cfg->n_inputs, 2);
    const imagen_tensor_config *img = imagen_model_config_input(cfg, "img");
    CHECK(img != NULL && img->datatype == IMAGEN_TYPE_UINT8 && img->rank == 3 && img->dims[0] == -1 &&
          img->dims[2] == 3 && img->format == IMAGEN_FORMAT_NHWC && img->optional && img->allow_ragged_batch &&
          !img->has_reshape);
    const imagen_tensor_config *s = imagen_model_config_input(cfg, "s");
    CHECK(s != NULL && s->datatype == IMAGEN_TYPE_BYTES && s->has_reshape && s->reshape_rank == 0 &&
          s->is_shape_tensor);
    const imagen_tensor_config *o = imagen_model_config_output(cfg, "o");
    CHECK(o != NULL && o->label_filename != NULL && strcmp(o->label_filename, "l.txt") == 0);
    CHECK(imagen_model_config_output(cfg, "img") == NULL);
    CHECK(img != NULL && img->label_filename == NULL);

    CHECK(cfg->has_dynamic_batching && !cfg->has_sequence_batching && !cfg->has_ensemble_scheduling);
    const imagen_dynamic_batching *db = &cfg->dynamic_batching;
    CHECK_INT_EQ(db->n_preferred_batch_sizes, 2);
    CHECK_INT_EQ(db->preferred_batch_sizes[1], 4);
    CHECK_INT_EQ(db->max_queue_delay_us, 7);
    CHECK_INT_EQ(db->priority_levels, 3);
    CHECK_INT_EQ(db->default_priority_level, 2);
    CHECK_INT_EQ(db->default_queue_policy.max_queue_size, 5);
    CHECK(db->level_policies != NULL);
    if (db->level_policies != NULL) {
        /* Levels 1 and 2 copy the default; level 3 has its own policy. */
        CHECK_INT_EQ(db->level_policies[1].max_queue_size, 5);
        CHECK_INT_EQ(db->level_policies[2].timeout_action, IMAGEN_TIMEOUT_DELAY);
        CHECK_INT_EQ(db->level_policies[2].default_timeout_us, 9);
        CHECK_INT_EQ(db->level_policies[3].max_queue_size, 1);
        CHECK(db->level_policies[3].allow_timeout_override);
        CHECK_INT_EQ(db->level_policies[3].timeout_action, IMAGEN_TIMEOUT_REJECT);
    }
    CHECK_INT_EQ(cfg->n_instance_groups, 2);
    CHECK(cfg->instance_groups[0].kind == IMAGEN_KIND_GPU && cfg->instance_groups[0].count == 2 &&
          cfg->instance_groups[0].n_gpus == 2 && cfg->instance_groups[0].gpus[1] == 1);
    CHECK(cfg->instance_groups[1].passive && strcmp(cfg->instance_groups[1].name, "c") == 0);
    CHECK_INT_EQ(cfg->n_parameters, 2);
    CHECK_STR_EQ(imagen_model_config_parameter(cfg, "k"), "v");
    CHECK_STR_EQ(imagen_model_config_parameter(cfg, "e"), "");
    CHECK(imagen_model_config_parameter(cfg, "missing") == NULL);
    CHECK_INT_EQ(cfg->n_metric_tags, 1);
    CHECK_STR_EQ(cfg->metric_tags[0].value, "x");
    CHECK_INT_EQ(cfg->n_warmups, 1);
    CHECK(cfg->warmups[0].batch_size == 2 && cfg->warmups[0].count == 3 && cfg->warmups[0].n_inputs == 2);
    CHECK(cfg->warmups[0].inputs[0].source == IMAGEN_WARMUP_RANDOM && cfg->warmups[0].inputs[0].rank == 3);
    CHECK(cfg->warmups[0].inputs[1].source == IMAGEN_WARMUP_FILE);
    CHECK_STR_EQ(cfg->warmups[0].inputs[1].input_data_file, "s.bin");
    CHECK(cfg->decoupled && cfg->response_cache);
    CHECK(cfg->msg != NULL && imagen_config_msg_max_batch_size(cfg->msg) == 8);
    imagen_model_config_free(cfg);
}

static void
test_defaults_in_the_typed_view(void)
{
    imagen_model_config *cfg = build(IO "dynamic_batching { }", NULL);
    CHECK(cfg != NULL);
    if (cfg == NULL)
        return;
    CHECK_INT_EQ(cfg->version_policy, IMAGEN_VERSION_POLICY_LATEST);
    CHECK_INT_EQ(cfg->latest_num_versions, 1);
    CHECK_INT_EQ(cfg->dynamic_batching.n_preferred_batch_sizes, 1);
    CHECK_INT_EQ(cfg->dynamic_batching.preferred_batch_sizes[0], 8);
    CHECK(cfg->dynamic_batching.level_policies == NULL);
    CHECK_STR_EQ(cfg->platform, "");
    CHECK(!cfg->decoupled && !cfg->response_cache);
    imagen_model_config_free(cfg);

    cfg = build("input { name: \"a\" data_type: TYPE_BOOL dims: 1 } dynamic_batching { } version_policy { all {} }",
                NULL);
    CHECK(cfg != NULL && cfg->dynamic_batching.n_preferred_batch_sizes == 0 &&
          cfg->version_policy == IMAGEN_VERSION_POLICY_ALL);
    imagen_model_config_free(cfg);
}

static void
test_tensor_validation_errors(void)
{
    CHECK_ERR(
        build_err("name: \"m\" input { name: \"a\" data_type: TYPE_FP32 }"), IMAGEN_ERR_INVALID_ARG,
        "model 'm': input 'a' must have at least one dimension (rank >= 1) unless reshape is given (field 'dims')");
    CHECK_ERR(build_err("name: \"m\" input { name: \"a\" data_type: TYPE_FP32 dims: [2, -2] }"), IMAGEN_ERR_INVALID_ARG,
              "model 'm': input 'a' has dimension -2, must be >= -1 (field 'dims')");
    CHECK_ERR(build_err("name: \"m\" output { data_type: TYPE_FP32 dims: 1 }"), IMAGEN_ERR_INVALID_ARG,
              "model 'm': output has an empty name (field 'name')");
    CHECK_ERR(build_err("name: \"m\" input { name: \"a\" dims: 1 }"), IMAGEN_ERR_INVALID_ARG,
              "model 'm': input 'a' must specify a data type other than TYPE_INVALID (field 'data_type')");
    CHECK_ERR(build_err(IO "input { name: \"in\" data_type: TYPE_FP32 dims: [4] }"), IMAGEN_ERR_INVALID_ARG,
              "model 'm': input 'in' is declared more than once (field 'name')");
    CHECK_ERR(build_err(IO "output { name: \"out\" data_type: TYPE_INT8 dims: [4] }"), IMAGEN_ERR_INVALID_ARG,
              "model 'm': output 'out' is declared more than once (field 'name')");
    CHECK_ERR(
        build_err("name: \"m\" input { name: \"a\" data_type: TYPE_FP32 dims: [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1] }"),
        IMAGEN_ERR_INVALID_ARG, "input 'a' has rank 17, more than 16 (field 'dims')");
    CHECK_ERR(build_err("name: \"m\" input { name: \"a\" data_type: TYPE_FP32 dims: 1 reshape { shape: [-3] } }"),
              IMAGEN_ERR_INVALID_ARG, "input 'a' has dimension -3, must be >= -1 (field 'shape')");
    /* The same name may be both an input and an output. */
    imagen_model_config *cfg = build(IO "output { name: \"in\" data_type: TYPE_FP32 dims: [4] }", NULL);
    CHECK(cfg != NULL);
    imagen_model_config_free(cfg);
}

static void
test_batch_size_validation_errors(void)
{
    CHECK_ERR(build_err("name: \"m\" max_batch_size: -1"), IMAGEN_ERR_INVALID_ARG,
              "model 'm': max_batch_size -1 must be >= 0 (field 'max_batch_size')");
    CHECK_ERR(build_err("name: \"m\" max_batch_size: 1048577"), IMAGEN_ERR_INVALID_ARG,
              "max_batch_size 1048577 is more than the limit of 1048576 (field 'max_batch_size')");
    CHECK_ERR(build_err(IO "dynamic_batching { preferred_batch_size: [4, 0] }"), IMAGEN_ERR_INVALID_ARG,
              "model 'm': preferred batch size 0 must be positive (field 'dynamic_batching.preferred_batch_size')");
    CHECK_ERR(build_err(IO "dynamic_batching { preferred_batch_size: [9] }"), IMAGEN_ERR_INVALID_ARG,
              "preferred batch size 9 must be <= max_batch_size 8 (field 'dynamic_batching.preferred_batch_size')");
}

static void
test_priority_validation_errors(void)
{
    CHECK_ERR(build_err(IO "dynamic_batching { priority_levels: 2 }"), IMAGEN_ERR_INVALID_ARG,
              "default priority level 0 must be in range [1, 2] (field 'dynamic_batching.default_priority_level')");
    CHECK_ERR(build_err(IO "dynamic_batching { priority_levels: 2 default_priority_level: 3 }"), IMAGEN_ERR_INVALID_ARG,
              "default priority level 3 must be in range [1, 2]");
    CHECK_ERR(build_err(IO "dynamic_batching { priority_levels: 2 default_priority_level: 1 "
                           "priority_queue_policy { key: 3 value { } } }"),
              IMAGEN_ERR_INVALID_ARG,
              "priority queue policy level 3 must be in range [1, 2] (field 'dynamic_batching.priority_queue_policy')");
    CHECK_ERR(build_err(IO "dynamic_batching { priority_levels: 1 default_priority_level: 1 "
                           "priority_queue_policy { key: 0 value { } } }"),
              IMAGEN_ERR_INVALID_ARG, "priority queue policy level 0 must be in range [1, 1]");
    CHECK_ERR(build_err(IO "dynamic_batching { priority_levels: 100000 default_priority_level: 1 }"),
              IMAGEN_ERR_INVALID_ARG, "priority_levels 100000 is more than the limit of 65536");
}

static void
test_preserve_ordering_rules(void)
{
    CHECK_ERR(build_err(IO "dynamic_batching { preserve_ordering: true priority_levels: 2 default_priority_level: 1 }"),
              IMAGEN_ERR_INVALID_ARG,
              "preserve_ordering requires priority_levels <= 1, got 2 (field 'dynamic_batching.preserve_ordering')");
    CHECK_ERR(build_err(IO "dynamic_batching { preserve_ordering: true "
                           "default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 10 } }"),
              IMAGEN_ERR_INVALID_ARG, "preserve_ordering cannot be used with a DELAY queue policy that has a timeout");
    CHECK_ERR(
        build_err(IO
                  "dynamic_batching { preserve_ordering: true priority_levels: 1 default_priority_level: 1 "
                  "priority_queue_policy { key: 1 value { timeout_action: DELAY default_timeout_microseconds: 1 } } }"),
        IMAGEN_ERR_INVALID_ARG, "DELAY queue policy that has a timeout");
    /* DELAY without a timeout, or a timeout with REJECT, are fine. */
    imagen_model_config *cfg =
        build(IO "dynamic_batching { preserve_ordering: true priority_levels: 1 default_priority_level: 1 "
                 "default_queue_policy { timeout_action: DELAY } "
                 "priority_queue_policy { key: 1 value { default_timeout_microseconds: 5 } } }",
              NULL);
    CHECK(cfg != NULL && cfg->dynamic_batching.preserve_ordering);
    imagen_model_config_free(cfg);
}

static void
test_instance_group_validation_errors(void)
{
    CHECK_ERR(build_err(IO "instance_group { name: \"g\" kind: KIND_CPU count: 0 }"), IMAGEN_ERR_INVALID_ARG,
              "model 'm': instance group 'g' has count 0, must be >= 1 (field 'instance_group.count')");
    CHECK_ERR(build_err(IO "instance_group { name: \"g\" kind: KIND_CPU count: -4 }"), IMAGEN_ERR_INVALID_ARG,
              "has count -4, must be >= 1");
    CHECK_ERR(
        build_err(
            IO
            "instance_group [ { name: \"a\" kind: KIND_CPU count: 200 }, { name: \"b\" kind: KIND_CPU count: 57 } ]"),
        IMAGEN_ERR_INVALID_ARG, "model has more than 256 instances in total (field 'instance_group.count')");
    CHECK_ERR(build_err(IO "instance_group { name: \"a\" kind: KIND_GPU count: 129 gpus: [0, 1] }"),
              IMAGEN_ERR_INVALID_ARG, "more than 256 instances in total");
    imagen_model_config *cfg = build(
        IO "instance_group [ { name: \"a\" kind: KIND_CPU count: 200 }, { name: \"b\" kind: KIND_CPU count: 56 } ]",
        NULL);
    CHECK(cfg != NULL);
    imagen_model_config_free(cfg);
    CHECK_ERR(build_err("name: \"e\" platform: \"ensemble\" instance_group { count: 1 }"), IMAGEN_ERR_INVALID_ARG,
              "an ensemble cannot have instance groups (field 'instance_group')");
}

static void
test_warmup_validation_errors(void)
{
    CHECK_ERR(build_err(IO "model_warmup { name: \"w\" batch_size: 1 inputs { key: \"nope\" value { data_type: "
                           "TYPE_FP32 dims: 4 zero_data: true } } }"),
              IMAGEN_ERR_INVALID_ARG,
              "model 'm': warmup 'w' names 'nope', which is not an input of the model (field 'model_warmup.inputs')");
    CHECK_ERR(
        build_err(
            IO
            "model_warmup { name: \"w\" batch_size: 1 inputs { key: \"in\" value { data_type: TYPE_INT8 dims: 4 } } }"),
        IMAGEN_ERR_INVALID_ARG,
        "warmup 'w' input 'in' has data type TYPE_INT8, the model input has TYPE_FP32 (field "
        "'model_warmup.inputs.data_type')");
    CHECK_ERR(build_err(IO "model_warmup { name: \"w\" batch_size: 9 }"), IMAGEN_ERR_INVALID_ARG,
              "warmup 'w' batch_size 9 must be <= max_batch_size 8 (field 'model_warmup.batch_size')");
    CHECK_ERR(build_err(IO "model_warmup { batch_size: 1 }"), IMAGEN_ERR_INVALID_ARG,
              "warmup setting 0 has an empty name (field 'model_warmup.name')");
    CHECK_ERR(build_err(IO "model_warmup { name: \"w\" batch_size: 1 inputs { key: \"in\" value { data_type: TYPE_FP32 "
                           "dims: [-1] } } }"),
              IMAGEN_ERR_INVALID_ARG, "has dimension -1, must be >= 0");
}

static void
test_edit_api(void)
{
    imagen_config_msg *m = NULL;
    const char *text = "name: \"auto\" backend: \"onnxruntime\"";
    CHECK_OK(imagen_config_parse_text(text, strlen(text), "e.pbtxt", &m));
    if (m == NULL)
        return;
    CHECK(!imagen_config_msg_has_scheduler(m));
    CHECK_INT_EQ(imagen_config_msg_tensor_count(m, false), 0);
    int64_t dims[] = {3, -1, -1};
    CHECK_OK(imagen_config_msg_add_tensor(m, false, "image", IMAGEN_TYPE_FP32, dims, 3));
    CHECK_OK(imagen_config_msg_add_tensor(m, true, "out", IMAGEN_TYPE_BYTES, dims, 1));
    CHECK_ERR(imagen_config_msg_add_tensor(m, true, "x", IMAGEN_TYPE_FP32, dims, IMAGEN_MAX_RANK + 1),
              IMAGEN_ERR_INVALID_ARG, "bad name or rank");
    CHECK_INT_EQ(imagen_config_msg_tensor_count(m, false), 1);
    CHECK_INT_EQ(imagen_config_msg_tensor_count(m, true), 1);
    imagen_config_msg_set_max_batch_size(m, 4);
    CHECK_INT_EQ(imagen_config_msg_max_batch_size(m), 4);
    imagen_config_msg_enable_dynamic_batching(m);
    CHECK(imagen_config_msg_has_scheduler(m));
    char *j = imagen_config_msg_to_json(m);
    CHECK(j != NULL && strstr(j, "\"max_batch_size\":4,\"input\":[{\"name\":\"image\",\"data_type\":\"TYPE_FP32\","
                                 "\"format\":\"FORMAT_NONE\",\"dims\":[3,-1,-1]") != NULL);
    CHECK(j != NULL && strstr(j, "\"output\":[{\"name\":\"out\",\"data_type\":\"TYPE_STRING\",\"dims\":[3]") != NULL);
    CHECK(j != NULL && strstr(j, "\"dynamic_batching\":{\"preferred_batch_size\":[]") != NULL);
    free(j);
    imagen_model_config *cfg = NULL;
    CHECK_OK(imagen_model_config_build(m, &cfg));
    CHECK(cfg != NULL && cfg->has_dynamic_batching && cfg->dynamic_batching.preferred_batch_sizes[0] == 4);
    /* The built config owns a clone: later edits to m do not show. */
    imagen_config_msg_set_max_batch_size(m, 2);
    CHECK(cfg != NULL && imagen_config_msg_max_batch_size(cfg->msg) == 4);
    imagen_model_config_free(cfg);
    imagen_config_msg_free(m);

    /* enable_dynamic_batching keeps a scheduler the config already chose. */
    m = NULL;
    CHECK_OK(imagen_config_parse_text("sequence_batching { }", 21, "e.pbtxt", &m));
    imagen_config_msg_enable_dynamic_batching(m);
    CHECK(m != NULL && imagen_config_get_msg(m, "dynamic_batching") == NULL &&
          imagen_config_get_msg(m, "sequence_batching") != NULL);
    imagen_config_msg_free(m);
    imagen_model_config_free(NULL);
    imagen_config_msg_free(NULL);
}

static void
test_clone_is_deep_and_equal(void)
{
    const char *text =
        IO "parameters { key: \"a\" value { string_value: \"b\" } } dynamic_batching { preferred_batch_size: 2 }";
    imagen_config_msg *m = NULL;
    CHECK_OK(imagen_config_parse_text(text, strlen(text), "c.pbtxt", &m));
    imagen_config_msg *c = imagen_config_msg_clone(m);
    char *a = imagen_config_msg_to_json(m);
    imagen_config_msg_free(m);
    char *b = imagen_config_msg_to_json(c);
    CHECK(a != NULL && strstr(a, "\"preferred_batch_size\":[2]") != NULL);
    CHECK_STR_EQ(a, b);
    free(a);
    free(b);
    imagen_config_msg_free(c);
    CHECK(imagen_config_msg_clone(NULL) == NULL);
}

int
main(void)
{
    RUN(test_typed_view_of_a_full_config);
    RUN(test_defaults_in_the_typed_view);
    RUN(test_tensor_validation_errors);
    RUN(test_batch_size_validation_errors);
    RUN(test_priority_validation_errors);
    RUN(test_preserve_ordering_rules);
    RUN(test_instance_group_validation_errors);
    RUN(test_warmup_validation_errors);
    RUN(test_edit_api);
    RUN(test_clone_is_deep_and_equal);
    TEST_MAIN_END();
}
