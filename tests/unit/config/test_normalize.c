/* Unit tests for src/config/normalize.c (spec §3.10): name, backend and
 * platform autofill from the first version directory, defaults for version
 * policy, preferred batch sizes, pinned memory and instance groups. */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/schema.h"
#include "imagen/model_config.h"
#include "test.h"

static char tmp_root[64];

/* Creates a version directory holding `entry` (a file, or a directory when
 * it ends in '/'); returns its path in a static buffer. */
static const char *
version_dir(const char *tag, const char *entry)
{
    static char dir[256];
    char path[512];
    snprintf(dir, sizeof(dir), "%s/%s", tmp_root, tag);
    mkdir(dir, 0755);
    if (entry != NULL) {
        size_t n = strlen(entry);
        snprintf(path, sizeof(path), "%s/%.*s", dir, (int)(entry[n - 1] == '/' ? n - 1 : n), entry);
        if (entry[n - 1] == '/') {
            mkdir(path, 0755);
        } else {
            FILE *f = fopen(path, "w");
            if (f != NULL)
                fclose(f);
        }
    }
    return dir;
}

static void
remove_tree(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp_root);
}

/* Parses, normalizes and renders; returns owned JSON or NULL (error printed
 * unless *err is given, where it is stored instead). */
static char *
normalized(const char *text, const char *model, const char *dir, bool gpu, imagen_error **err)
{
    imagen_config_msg *m = NULL;
    imagen_error *e = imagen_config_parse_text(text, strlen(text), "n.pbtxt", &m);
    if (e == NULL) {
        imagen_config_autofill ctx = {model, dir, gpu};
        e = imagen_config_normalize(m, &ctx);
    }
    char *j = NULL;
    if (e == NULL)
        j = imagen_config_msg_to_json(m);
    else if (err != NULL)
        *err = e;
    else {
        fprintf(stderr, "unexpected error: %s\n", imagen_error_message(e));
        imagen_error_free(e);
    }
    imagen_config_msg_free(m);
    return j;
}

#define CHECK_HAS(j, needle)                                            \
    do {                                                                \
        CHECK((j) != NULL && strstr((j), (needle)) != NULL);            \
        if ((j) != NULL && strstr((j), (needle)) == NULL)               \
            fprintf(stderr, "  json: %s\n  want: %s\n", (j), (needle)); \
    } while (0)

static void
test_onnx_model_matches_spec_example(void)
{
    const char *dir = version_dir("onnx1", "model.onnx");
    char *j = normalized("max_batch_size: 8\n"
                         "input { name: \"INPUT0\" data_type: TYPE_INT32 dims: [16] }\n"
                         "output { name: \"OUTPUT0\" data_type: TYPE_INT32 dims: [16] }\n"
                         "dynamic_batching { }\n",
                         "simple", dir, false, NULL);
    CHECK_STR_EQ(
        j,
        "{\"name\":\"simple\",\"platform\":\"onnxruntime_onnx\",\"backend\":\"onnxruntime\",\"runtime\":\"\","
        "\"version_policy\":{\"latest\":{\"num_versions\":1}},\"max_batch_size\":8,"
        "\"input\":[{\"name\":\"INPUT0\",\"data_type\":\"TYPE_INT32\",\"format\":\"FORMAT_NONE\",\"dims\":[16],"
        "\"is_shape_tensor\":false,\"allow_ragged_batch\":false,\"optional\":false,\"is_non_linear_format_io\":false}],"
        "\"output\":[{\"name\":\"OUTPUT0\",\"data_type\":\"TYPE_INT32\",\"dims\":[16],\"label_filename\":\"\","
        "\"is_shape_tensor\":false,\"is_non_linear_format_io\":false}],"
        "\"batch_input\":[],\"batch_output\":[],"
        "\"optimization\":{\"priority\":\"PRIORITY_DEFAULT\",\"input_pinned_memory\":{\"enable\":true},"
        "\"output_pinned_memory\":{\"enable\":true},\"gather_kernel_buffer_threshold\":0,\"eager_batching\":false},"
        "\"dynamic_batching\":{\"preferred_batch_size\":[8],\"max_queue_delay_microseconds\":0,\"preserve_ordering\":"
        "false,"
        "\"priority_levels\":0,\"default_priority_level\":0,\"priority_queue_policy\":{}},"
        "\"instance_group\":[{\"name\":\"simple\",\"kind\":\"KIND_CPU\",\"count\":2,\"gpus\":[],\"secondary_devices\":["
        "],"
        "\"profile\":[],\"passive\":false,\"host_policy\":\"\"}],"
        "\"default_model_filename\":\"model.onnx\",\"cc_model_filenames\":{},\"metric_tags\":{},\"parameters\":{},"
        "\"model_warmup\":[]}");
    free(j);
}

static void
test_name_filled_and_mismatch_rejected(void)
{
    char *j = normalized("backend: \"python\"", "mymodel", NULL, false, NULL);
    CHECK_HAS(j, "{\"name\":\"mymodel\"");
    free(j);
    imagen_error *e = NULL;
    j = normalized("name: \"other\" backend: \"python\"", "mymodel", NULL, false, &e);
    CHECK(j == NULL);
    CHECK_ERR(e, IMAGEN_ERR_INVALID_ARG,
              "model 'mymodel': configuration name 'other' does not match the model directory name (field 'name')");
}

static void
test_backend_detected_from_version_directory(void)
{
    const struct {
        const char *entry, *backend, *platform, *file;
    } cases[] = {
        {"model.plan", "tensorrt", "tensorrt_plan", "model.plan"},
        {"model.onnx/", "onnxruntime", "onnxruntime_onnx", "model.onnx"},
        {"model.pt", "pytorch", "pytorch_libtorch", "model.pt"},
        {"model.py", "python", "", "model.py"},
        {"model.savedmodel/", "tensorflow", "tensorflow_savedmodel", "model.savedmodel"},
        {"model.graphdef", "tensorflow", "tensorflow_graphdef", "model.graphdef"},
        {"model.xml", "openvino", "", "model.xml"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char tag[16], want[256];
        snprintf(tag, sizeof(tag), "v%zu", i);
        const char *dir = version_dir(tag, cases[i].entry);
        char *j = normalized("", "m", dir, false, NULL);
        snprintf(want, sizeof(want), "\"platform\":\"%s\",\"backend\":\"%s\"", cases[i].platform, cases[i].backend);
        CHECK_HAS(j, want);
        snprintf(want, sizeof(want), "\"default_model_filename\":\"%s\"", cases[i].file);
        CHECK_HAS(j, want);
        free(j);
    }
}

static void
test_backend_from_platform_and_platform_from_backend(void)
{
    char *j = normalized("platform: \"tensorrt_plan\"", "m", NULL, false, NULL);
    CHECK_HAS(j, "\"platform\":\"tensorrt_plan\",\"backend\":\"tensorrt\"");
    CHECK_HAS(j, "\"default_model_filename\":\"model.plan\"");
    free(j);
    j = normalized("backend: \"onnxruntime\"", "m", NULL, false, NULL);
    CHECK_HAS(j, "\"platform\":\"onnxruntime_onnx\",\"backend\":\"onnxruntime\"");
    free(j);
    /* An explicit default_model_filename is kept. */
    j = normalized("backend: \"python\" default_model_filename: \"main.py\"", "m", NULL, false, NULL);
    CHECK_HAS(j, "\"default_model_filename\":\"main.py\"");
    free(j);
}

static void
test_named_backend_without_files_is_fine(void)
{
    char *j = normalized("backend: \"imageops\"", "upscale", version_dir("empty", NULL), false, NULL);
    CHECK_HAS(j, "\"platform\":\"\",\"backend\":\"imageops\"");
    CHECK_HAS(j, "\"default_model_filename\":\"\"");
    free(j);
}

static void
test_backend_from_directory_suffix_or_error(void)
{
    char *j = normalized("", "resize.imageops", NULL, false, NULL);
    CHECK_HAS(j, "\"backend\":\"imageops\"");
    CHECK_HAS(j, "\"default_model_filename\":\"model.imageops\"");
    free(j);
    imagen_error *e = NULL;
    j = normalized("", "plain", version_dir("nothing", NULL), false, &e);
    CHECK(j == NULL);
    CHECK_ERR(e, IMAGEN_ERR_INVALID_ARG, "unable to autofill backend for model 'plain'");
}

static void
test_instance_groups_defaults(void)
{
    /* No group: one named after the model; GPU only when available. */
    char *j = normalized("backend: \"python\"", "m", NULL, true, NULL);
    CHECK_HAS(j, "\"instance_group\":[{\"name\":\"m\",\"kind\":\"KIND_GPU\",\"count\":1,");
    free(j);
    j = normalized("backend: \"python\"", "m", NULL, false, NULL);
    CHECK_HAS(j, "\"instance_group\":[{\"name\":\"m\",\"kind\":\"KIND_CPU\",\"count\":1,");
    free(j);
    /* Names <model>_<index>, AUTO resolved, CPU count 2 for onnxruntime. */
    j = normalized(
        "backend: \"onnxruntime\" instance_group [ { kind: KIND_AUTO }, { name: \"x\" count: 3 kind: KIND_CPU },"
        " { kind: KIND_CPU }, { kind: KIND_GPU } ]",
        "m", NULL, false, NULL);
    CHECK_HAS(j, "\"instance_group\":[{\"name\":\"m_0\",\"kind\":\"KIND_CPU\",\"count\":2,");
    CHECK_HAS(j, "{\"name\":\"x\",\"kind\":\"KIND_CPU\",\"count\":3,");
    CHECK_HAS(j, "{\"name\":\"m_2\",\"kind\":\"KIND_CPU\",\"count\":2,");
    CHECK_HAS(j, "{\"name\":\"m_3\",\"kind\":\"KIND_GPU\",\"count\":1,");
    free(j);
    j = normalized("backend: \"onnxruntime\" instance_group { }", "m", NULL, true, NULL);
    CHECK_HAS(j, "{\"name\":\"m_0\",\"kind\":\"KIND_GPU\",\"count\":1,");
    free(j);
}

static void
test_defaults_for_policy_batching_and_pinned_memory(void)
{
    char *j = normalized("backend: \"python\" max_batch_size: 0 dynamic_batching { }"
                         " version_policy { all { } } optimization { input_pinned_memory { enable: false } }",
                         "m", NULL, false, NULL);
    CHECK_HAS(j, "\"version_policy\":{\"all\":{}}");
    CHECK_HAS(j, "\"dynamic_batching\":{\"preferred_batch_size\":[],");
    CHECK_HAS(j, "\"input_pinned_memory\":{\"enable\":false},\"output_pinned_memory\":{\"enable\":true}");
    free(j);
    j = normalized("backend: \"python\" max_batch_size: 6 sequence_batching { oldest { } }", "m", NULL, false, NULL);
    CHECK_HAS(j, "\"oldest\":{\"max_candidate_sequences\":0,\"preferred_batch_size\":[6],");
    CHECK_HAS(j, "\"max_sequence_idle_microseconds\":1000000");
    free(j);
    j = normalized("backend: \"python\" max_batch_size: 6 dynamic_batching { preferred_batch_size: [2, 4] }", "m", NULL,
                   false, NULL);
    CHECK_HAS(j, "\"preferred_batch_size\":[2,4],");
    free(j);
}

static void
test_ensemble_gets_no_groups_or_pinned_memory(void)
{
    char *j = normalized("platform: \"ensemble\" ensemble_scheduling { step { model_name: \"a\" } }", "ens", NULL, true,
                         NULL);
    CHECK_HAS(j, "\"platform\":\"ensemble\",\"backend\":\"\"");
    CHECK_HAS(j, "\"instance_group\":[]");
    CHECK(j != NULL && strstr(j, "pinned") == NULL);
    free(j);
}

int
main(void)
{
    snprintf(tmp_root, sizeof(tmp_root), "/tmp/imagen-normalize-XXXXXX");
    if (mkdtemp(tmp_root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_onnx_model_matches_spec_example);
    RUN(test_name_filled_and_mismatch_rejected);
    RUN(test_backend_detected_from_version_directory);
    RUN(test_backend_from_platform_and_platform_from_backend);
    RUN(test_named_backend_without_files_is_fine);
    RUN(test_backend_from_directory_suffix_or_error);
    RUN(test_instance_groups_defaults);
    RUN(test_defaults_for_policy_batching_and_pinned_memory);
    RUN(test_ensemble_gets_no_groups_or_pinned_memory);
    remove_tree();
    TEST_MAIN_END();
}
