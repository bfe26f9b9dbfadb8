/* Unit tests for src/config/render.c and src/config/json.c: protobuf binary
 * encoding against hand-computed bytes, JSON rendering details, the JSON
 * parser, and the text -> JSON -> JSON round trip. */
#include "config/schema.h"
#include "imagen/model_config.h"
#include "test.h"

static imagen_config_msg *
parse(const char *text)
{
    imagen_config_msg *m = NULL;
    imagen_error *e = imagen_config_parse_text(text, strlen(text), "r.pbtxt", &m);
    if (e != NULL) {
        fprintf(stderr, "unexpected parse error: %s\n", imagen_error_message(e));
        imagen_error_free(e);
    }
    return m;
}

static imagen_config_msg *
parse_json(const char *json)
{
    imagen_config_msg *m = NULL;
    imagen_error *e = imagen_config_parse_json(json, strlen(json), &m);
    if (e != NULL) {
        fprintf(stderr, "unexpected JSON error: %s\n", imagen_error_message(e));
        imagen_error_free(e);
    }
    return m;
}

static imagen_error *
json_err(const char *json)
{
    imagen_config_msg *m = NULL;
    imagen_error *e = imagen_config_parse_json(json, strlen(json), &m);
    imagen_config_msg_free(m);
    return e;
}

static bool
bytes_equal(const uint8_t *got, size_t n, const uint8_t *want, size_t wn)
{
    if (n == wn && memcmp(got, want, n) == 0)
        return true;
    fprintf(stderr, "  got  (%zu):", n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %02x", got[i]);
    fprintf(stderr, "\n  want (%zu):", wn);
    for (size_t i = 0; i < wn; i++)
        fprintf(stderr, " %02x", want[i]);
    fprintf(stderr, "\n");
    return false;
}

static void
test_protobuf_matches_hand_computed_bytes(void)
{
    imagen_config_msg *m = parse("max_batch_size: 8\n"
                                 "name: \"m\"\n"
                                 "input { name: \"x\" data_type: TYPE_FP32 dims: [ -1, 3 ] }\n"
                                 "dynamic_batching { }\n"
                                 "version_policy { latest { } }\n"
                                 "parameters { key: \"k\" value { string_value: \"v\" } }\n"
                                 "backend: \"\" runtime: \"\"\n");
    static const uint8_t want[] = {
        0x0a, 0x01, 'm',                                            /* name = 1 */
        0x1a, 0x02, 0x0a, 0x00,                                     /* version_policy = 3 { latest = 1 {} } */
        0x20, 0x08,                                                 /* max_batch_size = 4 */
        0x2a, 0x12,                                                 /* input = 5, 18 bytes */
        0x0a, 0x01, 'x',                                            /*   name */
        0x10, 0x0b,                                                 /*   data_type = TYPE_FP32 (11) */
        0x22, 0x0b,                                                 /*   dims, packed, 11 bytes */
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, /* -1 */
        0x03,                                                       /*   3 */
        0x5a, 0x00,                                                 /* dynamic_batching = 11 {} */
        0x72, 0x08,                                                 /* parameters = 14 entry, 8 bytes */
        0x0a, 0x01, 'k',                                            /*   key */
        0x12, 0x03, 0x0a, 0x01, 'v',                                /*   value { string_value } */
    };
    uint8_t *pb = NULL;
    size_t n = 0;
    CHECK(m != NULL);
    if (m != NULL)
        CHECK_OK(imagen_config_msg_to_protobuf(m, &pb, &n));
    CHECK(pb != NULL && bytes_equal(pb, n, want, sizeof(want)));
    free(pb);
    imagen_config_msg_free(m);
}

static void
test_protobuf_scalars_floats_and_oneof_defaults(void)
{
    imagen_config_msg *m = parse("sequence_batching { direct { minimum_slot_utilization: 1.5 } }\n"
                                 "model_warmup { inputs { key: \"a\" value { zero_data: false } } }\n"
                                 "model_metrics { metric_control { histogram_options { buckets: [ 2 ] } } }");
    static const uint8_t want[] = {
        0x6a, 0x07,                               /* sequence_batching = 13 */
        0x1a, 0x05, 0x15, 0x00, 0x00, 0xc0, 0x3f, /*   direct { minimum_slot_utilization = 2, fixed32 1.5f } */
        0x82, 0x01, 0x09,                         /* model_warmup = 16 (two-byte tag) */
        0x1a, 0x07,                               /*   inputs entry */
        0x0a, 0x01, 'a',                          /*     key */
        0x12, 0x02, 0x18, 0x00,                   /*     value { zero_data = 3: false, emitted: set in a oneof } */
        0xd2, 0x01, 0x0e,                         /* model_metrics = 26 */
        0x0a, 0x0c, 0x12, 0x0a, 0x0a, 0x08,       /*   metric_control { histogram_options { buckets packed } } */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, /* 2.0 as fixed64 */
    };
    uint8_t *pb = NULL;
    size_t n = 0;
    if (m != NULL)
        CHECK_OK(imagen_config_msg_to_protobuf(m, &pb, &n));
    CHECK(pb != NULL && bytes_equal(pb, n, want, sizeof(want)));
    free(pb);
    imagen_config_msg_free(m);
}

static void
test_protobuf_empty_message_is_empty(void)
{
    imagen_config_msg *m = parse("max_batch_size: 0 name: \"\"");
    uint8_t *pb = (uint8_t *)"x";
    size_t n = 99;
    if (m != NULL)
        CHECK_OK(imagen_config_msg_to_protobuf(m, &pb, &n));
    CHECK_INT_EQ(n, 0);
    free(pb);
    imagen_config_msg_free(m);
}

static const char rich_config[] =
    "platform: \"onnxruntime_onnx\"\n"
    "max_batch_size: 16\n"
    "version_policy: { specific: { versions: [1, 3] } }\n"
    "input { name: \"x\" data_type: TYPE_UINT8 format: FORMAT_NHWC dims: [ -1, -1, 3 ] allow_ragged_batch: true }\n"
    "output < name: 'y' data_type: TYPE_FP16 dims: 3 dims: 0x10 label_filename: \"labels.txt\" reshape { shape: [48] } "
    ">\n"
    "dynamic_batching { priority_levels: 2; default_priority_level: 1\n"
    "  max_queue_delay_microseconds: 18446744073709551615\n"
    "  priority_queue_policy { key: 1 value: { timeout_action: DELAY default_timeout_microseconds: 100 } }\n"
    "  priority_queue_policy [ { key: 2 value { max_queue_size: 4 } } ] }\n"
    "instance_group { name: \"g\" kind: KIND_GPU count: 1 gpus: [0, 1] host_policy: \"numa0\"\n"
    "  rate_limiter { resources [ { name: \"R\" global: t count: 2 } ] priority: 3 }\n"
    "  secondary_devices { kind: KIND_NVDLA device_id: 7 } profile: [\"a\", \"b\"] }\n"
    "model_warmup [ { name: \"w\" batch_size: 1 count: 2 inputs { key: \"x\" value: { data_type: TYPE_UINT8 dims: [1, "
    "1, 3] random_data: true } } } ]\n"
    "optimization { graph { level: -1 } priority: PRIORITY_MAX cuda { graphs: true\n"
    "  graph_spec { batch_size: 4 input { key: \"x\" value { dim: [1, 2] } } lower_bound { batch_size: 1 input { key: "
    "\"x\" value { dim: 1 } } } } }\n"
    "  execution_accelerators { gpu_execution_accelerator [ { name: \"tensorrt\" parameters { key: \"precision_mode\" "
    "value: \"FP16\" } } ] }\n"
    "  input_pinned_memory { enable: false } gather_kernel_buffer_threshold: 2 eager_batching: 1 }\n"
    "cc_model_filenames { key: \"8.0\" value: \"m80.onnx\" }\n"
    "metric_tags { key: \"team\" value: \"img \\\"q\\\" \\u00e9\\n\" }\n"
    "model_transaction_policy { decoupled: true }\n"
    "response_cache { enable: true }\n"
    "model_repository_agents { agents [ { name: \"checksum\" parameters { key: \"MD5\" value: \"abc\" } } ] }\n"
    "model_operations { op_library_filename: \"libops.so\" }\n"
    "model_metrics { metric_control [ { metric_identifier { family: \"f\" } histogram_options { buckets: [0.1, 1e300, "
    "inf, -2.5, nan, -0.0] } } ] }\n"
    "batch_input [ { kind: BATCH_ITEM_SHAPE target_name: \"t\" data_type: TYPE_INT32 source_input: \"x\" } ]\n"
    "batch_output { target_name: [\"y\"] kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: \"x\" }\n";

static void
test_json_round_trip_is_identical(void)
{
    const char *texts[] = {
        rich_config,
        "name: \"s\" sequence_batching { oldest { preferred_batch_size: [2] } control_input [ { name: \"C\"\n"
        "  control { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 fp32_false_true: [0, 1.25] bool_false_true: "
        "[f, t] } } ]\n"
        "  state { input_name: \"i\" output_name: \"o\" data_type: TYPE_FP32 dims: [-1] initial_state { dims: [1] "
        "data_file: \"f\" } } }\n",
        "ensemble_scheduling { step [ { model_name: \"a\" model_version: -1 input_map { key: \"i\" value: \"x\" } "
        "output_map { key: \"o\" value: \"y\" } } ] }",
        "",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        imagen_config_msg *m = parse(texts[i]);
        char *j1 = m ? imagen_config_msg_to_json(m) : NULL;
        imagen_config_msg *m2 = j1 ? parse_json(j1) : NULL;
        char *j2 = m2 ? imagen_config_msg_to_json(m2) : NULL;
        CHECK(j1 != NULL);
        CHECK_STR_EQ(j1, j2);
        /* The protobuf bytes agree as well. */
        uint8_t *p1 = NULL, *p2 = NULL;
        size_t n1 = 0, n2 = 0;
        if (m != NULL && m2 != NULL) {
            CHECK_OK(imagen_config_msg_to_protobuf(m, &p1, &n1));
            CHECK_OK(imagen_config_msg_to_protobuf(m2, &p2, &n2));
            CHECK(n1 == n2 && (n1 == 0 || memcmp(p1, p2, n1) == 0));
        }
        free(p1);
        free(p2);
        free(j1);
        free(j2);
        imagen_config_msg_free(m);
        imagen_config_msg_free(m2);
    }
}

static void
test_json_rendering_details(void)
{
    imagen_config_msg *m = parse(rich_config);
    char *j = m ? imagen_config_msg_to_json(m) : NULL;
    CHECK(j != NULL);
    if (j != NULL) {
        CHECK(strstr(j, "\"max_queue_delay_microseconds\":18446744073709551615") != NULL);
        CHECK(strstr(j, "\"buckets\":[0.1,1e+300,\"Infinity\",-2.5,\"NaN\",-0.0]") != NULL);
        CHECK(strstr(j, "\"metric_tags\":{\"team\":\"img \\\"q\\\" \xc3\xa9\\n\"}") != NULL);
        CHECK(strstr(j, "\"priority_queue_policy\":{\"1\":{\"timeout_action\":\"DELAY\"") != NULL);
        CHECK(strstr(j, "\"dims\":[3,16],\"reshape\":{\"shape\":[48]},\"label_filename\":\"labels.txt\"") != NULL);
        CHECK(strstr(j, "\"graph\":{\"level\":-1}") != NULL);
        CHECK(strstr(j, "\"secondary_devices\":[{\"kind\":\"KIND_NVDLA\",\"device_id\":7}]") != NULL);
        /* oneof members only when set; unset sub-messages omitted. */
        CHECK(strstr(j, "\"version_policy\":{\"specific\":{\"versions\":[1,3]}}") != NULL);
        CHECK(strstr(j, "\"inputs\":{\"x\":{\"data_type\":\"TYPE_UINT8\",\"dims\":[1,1,3],\"random_data\":true}}") !=
              NULL);
        CHECK(strstr(j, "output_pinned_memory") == NULL);
        CHECK(strstr(j, "sequence_batching") == NULL);
    }
    free(j);
    imagen_config_msg_free(m);
}

static void
test_json_accepts_camel_case_enums_and_string_ints(void)
{
    imagen_config_msg *m = parse_json(
        "{\"name\":\"j\",\"maxBatchSize\":\"4\",\"input\":[{\"name\":\"a\",\"dataType\":\"type_fp32\",\"dims\":[\"-1\","
        "2.0]}],"
        "\"dynamicBatching\":{\"preferredBatchSize\":[2],\"maxQueueDelayMicroseconds\":\"18446744073709551615\","
        "\"priority_queue_policy\":{\"3\":{\"timeoutAction\":1}}},"
        "\"instance_group\":[{\"kind\":\"kind_cpu\",\"count\":2}],"
        "\"parameters\":{\"k\":{\"stringValue\":\"v\"}},\"metric_tags\":null,"
        "\"model_metrics\":{\"metric_control\":[{\"histogram_options\":{\"buckets\":[\"Infinity\",\"1.5\",3]}}]}}");
    CHECK(m != NULL);
    if (m == NULL)
        return;
    char *j = imagen_config_msg_to_json(m);
    CHECK(strstr(j, "\"max_batch_size\":4") != NULL);
    CHECK(strstr(j, "\"data_type\":\"TYPE_FP32\",\"format\":\"FORMAT_NONE\",\"dims\":[-1,2]") != NULL);
    CHECK(strstr(j, "\"max_queue_delay_microseconds\":18446744073709551615") != NULL);
    CHECK(strstr(j, "\"priority_queue_policy\":{\"3\":{\"timeout_action\":\"DELAY\"") != NULL);
    CHECK(strstr(j, "\"kind\":\"KIND_CPU\",\"count\":2") != NULL);
    CHECK(strstr(j, "\"parameters\":{\"k\":{\"string_value\":\"v\"}}") != NULL);
    CHECK(strstr(j, "\"buckets\":[\"Infinity\",1.5,3]") != NULL);
    free(j);
    imagen_config_msg_free(m);

    /* A uint64 above INT64_MAX given as a bare number. */
    m = parse_json("{\"dynamic_batching\":{\"priority_levels\":18446744073709551615}}");
    CHECK(m != NULL &&
          imagen_config_get_uint(imagen_config_get_msg(m, "dynamic_batching"), "priority_levels") == UINT64_MAX);
    imagen_config_msg_free(m);
}

static void
test_json_errors_name_the_field(void)
{
    CHECK_ERR(json_err("{\"name\":\"a\",\"bogus\":1}"), IMAGEN_ERR_INVALID_ARG,
              "config JSON: unknown field in message ModelConfig (field 'bogus')");
    CHECK_ERR(json_err("{\"input\":[{\"dimz\":[1]}]}"), IMAGEN_ERR_INVALID_ARG,
              "unknown field in message ModelInput (field 'dimz')");
    CHECK_ERR(json_err("{\"max_batch_size\":\"x\"}"), IMAGEN_ERR_INVALID_ARG,
              "expected an integer string (field 'max_batch_size')");
    CHECK_ERR(json_err("{\"max_batch_size\":2147483648}"), IMAGEN_ERR_INVALID_ARG,
              "value out of range (field 'max_batch_size')");
    CHECK_ERR(json_err("{\"max_batch_size\":1.5}"), IMAGEN_ERR_INVALID_ARG, "expected an integer, got 1.5");
    CHECK_ERR(json_err("{\"input\":[{\"data_type\":\"TYPE_NOPE\"}]}"), IMAGEN_ERR_INVALID_ARG,
              "unknown value 'TYPE_NOPE' for enum DataType (field 'data_type')");
    CHECK_ERR(json_err("{\"input\":[{\"data_type\":42}]}"), IMAGEN_ERR_INVALID_ARG, "unknown value 42");
    CHECK_ERR(json_err("{\"input\":{}}"), IMAGEN_ERR_INVALID_ARG, "expected an array, got object (field 'input')");
    CHECK_ERR(json_err("{\"dynamic_batching\":{},\"sequence_batching\":{}}"), IMAGEN_ERR_INVALID_ARG,
              "of oneof 'scheduling_choice' is already set");
    CHECK_ERR(json_err("{\"max_batch_size\":1,\"maxBatchSize\":2}"), IMAGEN_ERR_INVALID_ARG,
              "field specified multiple times (field 'max_batch_size')");
    CHECK_ERR(json_err("{\"dynamic_batching\":{\"priority_queue_policy\":{\"x\":{}}}}"), IMAGEN_ERR_INVALID_ARG,
              "map key must be an unsigned integer (field 'priority_queue_policy')");
    CHECK_ERR(json_err("{\"response_cache\":{\"enable\":1}}"), IMAGEN_ERR_INVALID_ARG, "expected a boolean");
    CHECK_ERR(json_err("[1]"), IMAGEN_ERR_INVALID_ARG, "expected an object");
    CHECK_ERR(json_err("{\"name\":"), IMAGEN_ERR_INVALID_ARG, "config JSON:1:");
}

int
main(void)
{
    RUN(test_protobuf_matches_hand_computed_bytes);
    RUN(test_protobuf_scalars_floats_and_oneof_defaults);
    RUN(test_protobuf_empty_message_is_empty);
    RUN(test_json_round_trip_is_identical);
    RUN(test_json_rendering_details);
    RUN(test_json_accepts_camel_case_enums_and_string_ints);
    RUN(test_json_errors_name_the_field);
    TEST_MAIN_END();
}
