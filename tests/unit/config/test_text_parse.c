/* Unit tests for src/config/text.c: config.pbtxt syntax (spec §3.11),
 * values, ranges, escapes, maps and every error with its line:col. */
#include <math.h>

#include "config/schema.h"
#include "imagen/model_config.h"
#include "test.h"

/* Parses `text`; returns the message or NULL (printing the error). */
static imagen_config_msg *
parse(const char *text)
{
    imagen_config_msg *m = NULL;
    imagen_error *e = imagen_config_parse_text(text, strlen(text), "t.pbtxt", &m);
    if (e != NULL) {
        fprintf(stderr, "unexpected parse error: %s\n", imagen_error_message(e));
        imagen_error_free(e);
    }
    return m;
}

/* Parses and renders; returns owned JSON or NULL. */
static char *
json_of(const char *text)
{
    imagen_config_msg *m = parse(text);
    char *j = m ? imagen_config_msg_to_json(m) : NULL;
    imagen_config_msg_free(m);
    return j;
}

static imagen_error *
parse_err(const char *text)
{
    imagen_config_msg *m = NULL;
    imagen_error *e = imagen_config_parse_text(text, strlen(text), "t.pbtxt", &m);
    if (e == NULL)
        imagen_config_msg_free(m);
    else if (m != NULL)
        fprintf(stderr, "error with a message set\n");
    return e;
}

/* Checks that a substring of the rendered JSON is present. */
#define CHECK_JSON_HAS(text, needle)                                 \
    do {                                                             \
        char *j_ = json_of(text);                                    \
        CHECK(j_ != NULL && strstr(j_, needle) != NULL);             \
        if (j_ != NULL && strstr(j_, needle) == NULL)                \
            fprintf(stderr, "  json: %s\n  want: %s\n", j_, needle); \
        free(j_);                                                    \
    } while (0)

static const char spec_example[] =
    "name: \"add_sub\"          # optional\n"
    "backend: \"python\"\n"
    "max_batch_size: 8\n"
    "input [ { name: \"INPUT0\", data_type: TYPE_FP32, dims: [ 4 ] },\n"
    "        { name: \"INPUT1\", data_type: TYPE_FP32, dims: [ 4 ], optional: true } ]\n"
    "output { name: \"OUTPUT0\" data_type: TYPE_FP32 dims: [ 4 ] }\n"
    "instance_group [ { count: 2, kind: KIND_CPU } ]\n"
    "dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100\n"
    "  default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 50000 max_queue_size: 64 } }\n"
    "parameters: { key: \"foo\" value: { string_value: \"bar\" } }\n";

static void
test_spec_example_renders_exactly(void)
{
    char *j = json_of(spec_example);
    CHECK_STR_EQ(
        j,
        "{\"name\":\"add_sub\",\"platform\":\"\",\"backend\":\"python\",\"runtime\":\"\",\"max_batch_size\":8,"
        "\"input\":[{\"name\":\"INPUT0\",\"data_type\":\"TYPE_FP32\",\"format\":\"FORMAT_NONE\",\"dims\":[4],"
        "\"is_shape_tensor\":false,\"allow_ragged_batch\":false,\"optional\":false,\"is_non_linear_format_io\":false},"
        "{\"name\":\"INPUT1\",\"data_type\":\"TYPE_FP32\",\"format\":\"FORMAT_NONE\",\"dims\":[4],"
        "\"is_shape_tensor\":false,\"allow_ragged_batch\":false,\"optional\":true,\"is_non_linear_format_io\":false}],"
        "\"output\":[{\"name\":\"OUTPUT0\",\"data_type\":\"TYPE_FP32\",\"dims\":[4],\"label_filename\":\"\","
        "\"is_shape_tensor\":false,\"is_non_linear_format_io\":false}],\"batch_input\":[],\"batch_output\":[],"
        "\"dynamic_batching\":{\"preferred_batch_size\":[4,8],\"max_queue_delay_microseconds\":100,"
        "\"preserve_ordering\":false,\"priority_levels\":0,\"default_priority_level\":0,"
        "\"default_queue_policy\":{\"timeout_action\":\"REJECT\",\"default_timeout_microseconds\":50000,"
        "\"allow_timeout_override\":false,\"max_queue_size\":64},\"priority_queue_policy\":{}},"
        "\"instance_group\":[{\"name\":\"\",\"kind\":\"KIND_CPU\",\"count\":2,\"gpus\":[],\"secondary_devices\":[],"
        "\"profile\":[],\"passive\":false,\"host_policy\":\"\"}],\"default_model_filename\":\"\","
        "\"cc_model_filenames\":{},\"metric_tags\":{},\"parameters\":{\"foo\":{\"string_value\":\"bar\"}},"
        "\"model_warmup\":[]}");
    free(j);
}

static void
test_spec_example_values(void)
{
    imagen_config_msg *m = parse(spec_example);
    CHECK(m != NULL);
    if (m == NULL)
        return;
    CHECK_STR_EQ(imagen_config_get_str(m, "name"), "add_sub");
    CHECK_INT_EQ(imagen_config_get_int(m, "max_batch_size"), 8);
    CHECK_INT_EQ(imagen_config_count(m, "input"), 2);
    const imagen_config_msg *in1 = imagen_config_at(m, "input", 1)->m;
    CHECK(imagen_config_get_bool(in1, "optional"));
    CHECK_INT_EQ(imagen_config_get_int(in1, "data_type"), IMAGEN_TYPE_FP32);
    const imagen_config_msg *db = imagen_config_get_msg(m, "dynamic_batching");
    CHECK(db != NULL);
    CHECK_INT_EQ(imagen_config_at(db, "preferred_batch_size", 1)->i, 8);
    CHECK_INT_EQ(imagen_config_get_uint(imagen_config_get_msg(db, "default_queue_policy"), "max_queue_size"), 64);
    imagen_config_msg_free(m);
}

static void
test_comments_whitespace_and_separators(void)
{
    CHECK_JSON_HAS("# leading comment\n\tname : \"a\" ;# trailing\r\n max_batch_size:4,", "\"name\":\"a\"");
    CHECK_JSON_HAS("name: \"a\"; max_batch_size: 4, backend: \"b\"",
                   "\"backend\":\"b\",\"runtime\":\"\",\"max_batch_size\":4");
    CHECK_JSON_HAS("", "{\"name\":\"\",\"platform\":\"\"");
}

static void
test_colon_required_for_scalars(void)
{
    imagen_error *e = parse_err("name \"a\"");
    CHECK(e != NULL);
    if (e != NULL)
        CHECK_STR_EQ(imagen_error_message(e), "t.pbtxt:1:6: expected ':' after field name, got '\"a\"' (field 'name')");
    imagen_error_free(e);
    CHECK_ERR(parse_err("input { name: \"a\"\n  dims [1] }"), IMAGEN_ERR_INVALID_ARG, "t.pbtxt:2:8: expected ':'");
}

static void
test_colon_optional_for_messages_and_angle_brackets(void)
{
    char *a = json_of("dynamic_batching { max_queue_delay_microseconds: 5 }");
    char *b = json_of("dynamic_batching: { max_queue_delay_microseconds: 5 }");
    char *c = json_of("dynamic_batching < max_queue_delay_microseconds: 5 >");
    char *d = json_of("dynamic_batching: < max_queue_delay_microseconds: 5 >");
    CHECK(a != NULL && strstr(a, "\"max_queue_delay_microseconds\":5") != NULL);
    CHECK_STR_EQ(a, b);
    CHECK_STR_EQ(a, c);
    CHECK_STR_EQ(a, d);
    free(a);
    free(b);
    free(c);
    free(d);
    CHECK_ERR(parse_err("dynamic_batching { max_queue_delay_microseconds: 5 >"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:52: expected field name, got '>' (field 'dynamic_batching')");
}

static void
test_list_and_repeated_forms_are_equivalent(void)
{
    char *a = json_of("input [ { name: \"a\" dims: [ 4, 8 ] }, { name: \"b\" dims: [] } ]");
    char *b = json_of("input { name: \"a\" dims: 4 dims: 8 } input: { name: \"b\" }");
    char *c = json_of("input: [ { name: \"a\" dims: 4, dims: [8] } ] input [ < name: \"b\" > ]");
    CHECK(a != NULL && strstr(a, "\"dims\":[4,8]") != NULL);
    CHECK_STR_EQ(a, b);
    CHECK_STR_EQ(a, c);
    free(a);
    free(b);
    free(c);
}

static void
test_list_errors(void)
{
    CHECK_ERR(parse_err("name: [\"a\"]"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:7: list value for a non-repeated field (field 'name')");
    CHECK_ERR(parse_err("input { dims: [1 2] }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:18: expected ',' or ']' in list, got '2' (field 'dims')");
    CHECK_ERR(parse_err("input { dims: [1,] }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:18: expected integer, got ']' (field 'dims')");
    CHECK_ERR(parse_err("input [ { name: \"a\" } { name: \"b\" } ]"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:23: expected ',' or ']' in list");
}

static void
test_enums_by_name_and_number(void)
{
    CHECK_JSON_HAS("input { data_type: TYPE_STRING format: 2 }",
                   "\"data_type\":\"TYPE_STRING\",\"format\":\"FORMAT_NCHW\"");
    CHECK_JSON_HAS("instance_group { kind: 3 }", "\"kind\":\"KIND_MODEL\"");
    CHECK_ERR(parse_err("input { data_type: TYPE_FP33 }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:20: unknown value 'TYPE_FP33' for enum DataType (field 'data_type')");
    CHECK_ERR(parse_err("input { data_type: 99 }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:20: unknown value 99 for enum DataType (field 'data_type')");
    CHECK_ERR(parse_err("input { data_type: \"TYPE_FP32\" }"), IMAGEN_ERR_INVALID_ARG,
              "expected enum value, got '\"TYPE_FP32\"' (field 'data_type')");
    /* Enum names are exact-case. */
    CHECK_ERR(parse_err("input { data_type: type_fp32 }"), IMAGEN_ERR_INVALID_ARG, "unknown value 'type_fp32'");
}

static void
test_bool_spellings(void)
{
    const char *yes[] = {"true", "True", "t", "1"};
    const char *no[] = {"false", "False", "f", "0"};
    char text[96];
    for (int i = 0; i < 4; i++) {
        snprintf(text, sizeof(text), "model_transaction_policy { decoupled: %s }", yes[i]);
        CHECK_JSON_HAS(text, "\"decoupled\":true");
        snprintf(text, sizeof(text), "model_transaction_policy { decoupled: %s }", no[i]);
        CHECK_JSON_HAS(text, "\"decoupled\":false");
    }
    CHECK_ERR(parse_err("response_cache { enable: 2 }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:26: integer out of range for bool (field 'enable')");
    CHECK_ERR(parse_err("response_cache { enable: TRUE }"), IMAGEN_ERR_INVALID_ARG, "expected boolean, got 'TRUE'");
}

static void
test_integer_forms(void)
{
    CHECK_JSON_HAS("max_batch_size: 0x10", "\"max_batch_size\":16");
    CHECK_JSON_HAS("max_batch_size: 010", "\"max_batch_size\":8");
    CHECK_JSON_HAS("max_batch_size: -5", "\"max_batch_size\":-5");
    CHECK_JSON_HAS("max_batch_size: 0", "\"max_batch_size\":0");
    CHECK_JSON_HAS("input { dims: -0x1 }", "\"dims\":[-1]");
    CHECK_ERR(parse_err("max_batch_size: 09"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:17: invalid digit in octal number (field 'max_batch_size')");
    CHECK_ERR(parse_err("max_batch_size: 1.5"), IMAGEN_ERR_INVALID_ARG, "expected integer, got '1.5'");
    CHECK_ERR(parse_err("max_batch_size: 4f"), IMAGEN_ERR_INVALID_ARG, "expected integer, got '4f'");
    CHECK_ERR(parse_err("max_batch_size: 12ab"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:19: need space between number and identifier");
    CHECK_ERR(parse_err("max_batch_size: 0x"), IMAGEN_ERR_INVALID_ARG, "\"0x\" must be followed by hex digits");
}

static void
test_integer_ranges_per_type(void)
{
    /* int32 */
    CHECK_JSON_HAS("max_batch_size: 2147483647", "\"max_batch_size\":2147483647");
    CHECK_JSON_HAS("max_batch_size: -2147483648", "\"max_batch_size\":-2147483648");
    CHECK_ERR(parse_err("max_batch_size: 2147483648"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:17: value out of range for int32 (field 'max_batch_size')");
    CHECK_ERR(parse_err("max_batch_size: -2147483649"), IMAGEN_ERR_INVALID_ARG, "value out of range for int32");
    /* uint32 */
    CHECK_JSON_HAS("version_policy { latest { num_versions: 4294967295 } }", "\"num_versions\":4294967295");
    CHECK_ERR(parse_err("version_policy { latest { num_versions: 4294967296 } }"), IMAGEN_ERR_INVALID_ARG,
              "value out of range for uint32 (field 'num_versions')");
    CHECK_ERR(parse_err("version_policy { latest { num_versions: -1 } }"), IMAGEN_ERR_INVALID_ARG,
              "value out of range for uint32");
    /* int64 */
    CHECK_JSON_HAS("input { dims: [9223372036854775807, -9223372036854775808] }",
                   "\"dims\":[9223372036854775807,-9223372036854775808]");
    CHECK_ERR(parse_err("input { dims: 9223372036854775808 }"), IMAGEN_ERR_INVALID_ARG, "value out of range for int64");
    /* uint64 */
    CHECK_JSON_HAS("dynamic_batching { max_queue_delay_microseconds: 18446744073709551615 }",
                   "\"max_queue_delay_microseconds\":18446744073709551615");
    CHECK_ERR(parse_err("dynamic_batching { max_queue_delay_microseconds: 18446744073709551616 }"),
              IMAGEN_ERR_INVALID_ARG, "integer out of range (field 'max_queue_delay_microseconds')");
    CHECK_ERR(parse_err("dynamic_batching { max_queue_delay_microseconds: -1 }"), IMAGEN_ERR_INVALID_ARG,
              "value out of range for uint64");
}

static void
test_float_forms(void)
{
    const char *pre = "model_metrics { metric_control { histogram_options { buckets: ";
    const struct {
        const char *in, *out;
    } cases[] = {
        {"[0.5, 1e3, 2.5f, -1, .25, 7F]", "\"buckets\":[0.5,1000,2.5,-1,0.25,7]"},
        {"[inf, -inf, Infinity, nan]", "\"buckets\":[\"Infinity\",\"-Infinity\",\"Infinity\",\"NaN\"]"},
        {"1E-2", "\"buckets\":[0.01]"},
        {"0x10", "\"buckets\":[16]"},
    };
    char text[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "%s%s } } }", pre, cases[i].in);
        CHECK_JSON_HAS(text, cases[i].out);
    }
    /* float (32-bit) fields are rounded to float precision. */
    CHECK_JSON_HAS("sequence_batching { direct { minimum_slot_utilization: 0.1 } }",
                   "\"minimum_slot_utilization\":0.1}");
    CHECK_JSON_HAS("sequence_batching { direct { minimum_slot_utilization: 1e39 } }",
                   "\"minimum_slot_utilization\":\"Infinity\"");
    imagen_config_msg *m = parse("sequence_batching { direct { minimum_slot_utilization: 0.1 } }");
    if (m != NULL) {
        const imagen_config_msg *d = imagen_config_get_msg(imagen_config_get_msg(m, "sequence_batching"), "direct");
        CHECK(imagen_config_at(d, "minimum_slot_utilization", 0) == NULL); /* singular */
        CHECK(d->slots[1].v.f == (double)0.1f);
    }
    imagen_config_msg_free(m);
    CHECK_ERR(parse_err("model_metrics { metric_control { histogram_options { buckets: 1e } } }"),
              IMAGEN_ERR_INVALID_ARG, "\"e\" must be followed by an exponent");
    CHECK_ERR(parse_err("model_metrics { metric_control { histogram_options { buckets: x } } }"),
              IMAGEN_ERR_INVALID_ARG, "expected number, got 'x' (field 'buckets')");
}

static void
test_string_escapes(void)
{
    CHECK_JSON_HAS("name: \"a\\n\\t\\r\\\\\\\"\\'\\?b\"", "\"name\":\"a\\n\\t\\r\\\\\\\"'?b\"");
    CHECK_JSON_HAS("name: \"\\a\\b\\f\\v\"", "\"name\":\"\\u0007\\b\\f\\u000b\"");
    CHECK_JSON_HAS("name: \"\\101\\x42\\x4a\\u00e9\\U0001F600\"", "\"name\":\"ABJ\xc3\xa9\xf0\x9f\x98\x80\"");
    CHECK_JSON_HAS("name: 'single \"quoted\"'", "\"name\":\"single \\\"quoted\\\"\"");
    CHECK_ERR(parse_err("name: \"\\q\""), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:7: invalid escape sequence in string literal (field 'name')");
    CHECK_ERR(parse_err("name: \"\\xZZ\""), IMAGEN_ERR_INVALID_ARG, "\\x must be followed by hex digits");
    CHECK_ERR(parse_err("name: \"\\u12\""), IMAGEN_ERR_INVALID_ARG, "\\u must be followed by 4 hex digits");
    CHECK_ERR(parse_err("name: \"\\ud800\""), IMAGEN_ERR_INVALID_ARG, "invalid Unicode code point");
    CHECK_ERR(parse_err("name: \"\\xff\""), IMAGEN_ERR_INVALID_ARG, "string is not valid UTF-8 (field 'name')");
    CHECK_ERR(parse_err("name: \"a\\0b\""), IMAGEN_ERR_INVALID_ARG, "string contains a NUL character");
    CHECK_ERR(parse_err("name: \"abc\nmax_batch_size: 1"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:7: unterminated string literal");
    CHECK_ERR(parse_err("name: 'abc\""), IMAGEN_ERR_INVALID_ARG, "unterminated string literal");
}

static void
test_adjacent_strings_concatenate(void)
{
    CHECK_JSON_HAS("name: \"ab\" 'cd'\n  \"ef\" backend: \"x\"",
                   "\"name\":\"abcdef\",\"platform\":\"\",\"backend\":\"x\"");
    CHECK_JSON_HAS("name: \"\" \"\"", "\"name\":\"\"");
}

static void
test_maps_last_duplicate_wins_and_sorted(void)
{
    const char *text = "parameters { key: \"b\" value { string_value: \"1\" } }\n"
                       "parameters [ { key: \"a\" value: { string_value: \"2\" } },\n"
                       "             { key: \"b\" value: { string_value: \"3\" } } ]\n"
                       "metric_tags { key: \"k\" value: \"v\" } metric_tags { value: \"novalue-key\" }\n"
                       "cc_model_filenames { key: \"8.0\" }";
    CHECK_JSON_HAS(text, "\"parameters\":{\"a\":{\"string_value\":\"2\"},\"b\":{\"string_value\":\"3\"}}");
    CHECK_JSON_HAS(text, "\"metric_tags\":{\"\":\"novalue-key\",\"k\":\"v\"}");
    CHECK_JSON_HAS(text, "\"cc_model_filenames\":{\"8.0\":\"\"}");
    CHECK_JSON_HAS("dynamic_batching { priority_queue_policy { key: 10 value { max_queue_size: 1 } }"
                   " priority_queue_policy { key: 2 value { max_queue_size: 2 } }"
                   " priority_queue_policy { key: 10 value { max_queue_size: 3 } } }",
                   "\"priority_queue_policy\":{\"2\":{\"timeout_action\":\"REJECT\",\"default_timeout_microseconds\":0,"
                   "\"allow_timeout_override\":false,\"max_queue_size\":2},\"10\":{\"timeout_action\":\"REJECT\","
                   "\"default_timeout_microseconds\":0,\"allow_timeout_override\":false,\"max_queue_size\":3}}");
    CHECK_JSON_HAS("ensemble_scheduling { step { input_map { key: \"in\" value: \"raw\" } } }",
                   "\"input_map\":{\"in\":\"raw\"}");
    CHECK_ERR(parse_err("parameters { key: \"a\" value: \"x\" }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:30: expected '{' or '<', got '\"x\"' (field 'value')");
    CHECK_ERR(parse_err("parameters { key: \"a\" other: \"x\" }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:23: unknown field in message MapEntry (field 'other')");
}

static void
test_unknown_field_is_an_error(void)
{
    imagen_error *e = parse_err("name: \"a\"\ninput {\n  name: \"x\"\n  dimz: [1]\n}");
    CHECK(e != NULL);
    if (e != NULL)
        CHECK_STR_EQ(imagen_error_message(e), "t.pbtxt:4:3: unknown field in message ModelInput (field 'dimz')");
    imagen_error_free(e);
    /* Names are exact-case; no camelCase in text format. */
    CHECK_ERR(parse_err("maxBatchSize: 4"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:1: unknown field in message ModelConfig (field 'maxBatchSize')");
}

static void
test_non_repeated_field_twice_is_an_error(void)
{
    CHECK_ERR(parse_err("max_batch_size: 0\nmax_batch_size: 4"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:2:1: non-repeated field specified multiple times (field 'max_batch_size')");
    CHECK_ERR(parse_err("optimization { }\n  optimization { }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:2:3: non-repeated field specified multiple times (field 'optimization')");
    CHECK_ERR(parse_err("input { name: \"a\" name: \"a\" }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:19: non-repeated field specified multiple times (field 'name')");
}

static void
test_oneof_members_conflict(void)
{
    CHECK_ERR(parse_err("dynamic_batching { }\nsequence_batching { }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:2:1: field 'dynamic_batching' of oneof 'scheduling_choice' is already set (field "
              "'sequence_batching')");
    CHECK_ERR(parse_err("version_policy { latest { } all { } }"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:29: field 'latest' of oneof 'policy_choice' is already set (field 'all')");
    CHECK_ERR(parse_err("model_warmup { inputs { key: \"x\" value { zero_data: true random_data: true } } }"),
              IMAGEN_ERR_INVALID_ARG,
              "field 'zero_data' of oneof 'input_data_type' is already set (field 'random_data')");
}

static void
test_empty_message_sets_the_field(void)
{
    imagen_config_msg *m = parse("dynamic_batching { }");
    CHECK(m != NULL && imagen_config_msg_has_scheduler(m));
    imagen_config_msg_free(m);
    CHECK_JSON_HAS("dynamic_batching { }", "\"dynamic_batching\":{\"preferred_batch_size\":[],");
    CHECK_JSON_HAS("version_policy: { all { } }", "\"version_policy\":{\"all\":{}}");
    char *j = json_of("max_batch_size: 1");
    CHECK(j != NULL && strstr(j, "dynamic_batching") == NULL && strstr(j, "version_policy") == NULL);
    free(j);
}

static void
test_syntax_error_positions(void)
{
    CHECK_ERR(parse_err("input {\n  name: \"a\"\n"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:3:1: unexpected end of input, expected '}' (field 'input')");
    CHECK_ERR(parse_err("name: \"a\" }"), IMAGEN_ERR_INVALID_ARG, "t.pbtxt:1:11: expected field name, got '}'");
    CHECK_ERR(parse_err("  @"), IMAGEN_ERR_INVALID_ARG, "t.pbtxt:1:3: unexpected character '@'");
    CHECK_ERR(parse_err("input { name: \"a\" }\n\x01"), IMAGEN_ERR_INVALID_ARG, "t.pbtxt:2:1: unexpected byte 0x01");
    CHECK_ERR(parse_err("input 5"), IMAGEN_ERR_INVALID_ARG,
              "t.pbtxt:1:7: expected '{' or '<', got '5' (field 'input')");
}

static void
test_input_need_not_be_nul_terminated(void)
{
    const char text[] = "max_batch_size: 12345";
    imagen_config_msg *m = NULL;
    /* Only "max_batch_size: 12" is given. */
    CHECK_OK(imagen_config_parse_text(text, 18, "t.pbtxt", &m));
    CHECK(m != NULL && imagen_config_get_int(m, "max_batch_size") == 12);
    imagen_config_msg_free(m);
}

static void
test_depth_and_size_limits(void)
{
    size_t n = IMAGEN_CONFIG_MAX_BYTES + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    imagen_config_msg *m = NULL;
    CHECK_ERR(imagen_config_parse_text(big, n, "t.pbtxt", &m), IMAGEN_ERR_INVALID_ARG, "more than the limit");
    free(big);

    /* Many messages: bounded by IMAGEN_CONFIG_MAX_MESSAGES_COUNT, no blow-up. */
    size_t count = IMAGEN_CONFIG_MAX_MESSAGES_COUNT + 1;
    char *many = malloc(count * 3 + 16);
    char *p = many;
    p += sprintf(p, "input [");
    for (size_t i = 0; i < count; i++)
        p += sprintf(p, "{},");
    p[-1] = ']';
    CHECK_ERR(imagen_config_parse_text(many, (size_t)(p - many), "t.pbtxt", &m), IMAGEN_ERR_INVALID_ARG,
              "more than 65536 messages (field 'input')");
    free(many);
    /* The schema nests only a few levels, so deep input fails on the
     * first field that does not exist rather than by recursion. */
    CHECK_ERR(parse_err("optimization { optimization { } }"), IMAGEN_ERR_INVALID_ARG, "unknown field");
}

int
main(void)
{
    RUN(test_spec_example_renders_exactly);
    RUN(test_spec_example_values);
    RUN(test_comments_whitespace_and_separators);
    RUN(test_colon_required_for_scalars);
    RUN(test_colon_optional_for_messages_and_angle_brackets);
    RUN(test_list_and_repeated_forms_are_equivalent);
    RUN(test_list_errors);
    RUN(test_enums_by_name_and_number);
    RUN(test_bool_spellings);
    RUN(test_integer_forms);
    RUN(test_integer_ranges_per_type);
    RUN(test_float_forms);
    RUN(test_string_escapes);
    RUN(test_adjacent_strings_concatenate);
    RUN(test_maps_last_duplicate_wins_and_sorted);
    RUN(test_unknown_field_is_an_error);
    RUN(test_non_repeated_field_twice_is_an_error);
    RUN(test_oneof_members_conflict);
    RUN(test_empty_message_sets_the_field);
    RUN(test_syntax_error_positions);
    RUN(test_input_need_not_be_nul_terminated);
    RUN(test_depth_and_size_limits);
    TEST_MAIN_END();
}
