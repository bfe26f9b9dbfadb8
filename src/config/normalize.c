/*
 * Load-time normalization of a ModelConfig message (spec §3.10): model name,
 * backend/platform/default-filename autofill from the first version
 * directory, version policy and preferred batch size defaults, pinned-memory
 * defaults and instance groups. Runs on a model-load thread on a message it
 * owns; it only stats the version directory and never writes to disk.
 */
#include "config/schema.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static imagen_error *
oom(void)
{
    return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory normalizing model config");
}

/* True if `<dir>/<name>` exists (file or directory). */
static bool
exists_in(const char *dir, const char *name)
{
    if (dir == NULL)
        return false;
    char path[4096];
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path))
        return false;
    struct stat st;
    return stat(path, &st) == 0;
}

/* True if `dir` is a readable directory (opened and closed). */
static bool
dir_readable(const char *dir)
{
    if (dir == NULL)
        return false;
    DIR *d = opendir(dir);
    if (d == NULL)
        return false;
    closedir(d);
    return true;
}

static bool
starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Sets string field `name` to `value` only if it is empty. */
static bool
fill(imagen_config_msg *m, const char *name, const char *value)
{
    if (value == NULL || imagen_config_get_str(m, name)[0] != '\0')
        return true;
    return imagen_config_set_str(m, name, value);
}

/* One known backend: its platform and default model file. */
typedef struct {
    const char *backend;
    const char *platform; /* NULL: leave empty */
    const char *filename;
} backend_row;

static const backend_row backend_table[] = {
    {"onnxruntime", "onnxruntime_onnx", "model.onnx"},
    {"tensorrt", "tensorrt_plan", "model.plan"},
    {"pytorch", "pytorch_libtorch", "model.pt"},
    {"python", NULL, "model.py"},
    {"openvino", NULL, "model.xml"},
};

static const backend_row *
backend_lookup(const char *backend)
{
    for (size_t i = 0; i < sizeof(backend_table) / sizeof(backend_table[0]); i++) {
        if (strcmp(backend_table[i].backend, backend) == 0)
            return &backend_table[i];
    }
    return NULL;
}

/* Step 2: backend, platform and default_model_filename. */
static imagen_error *
autofill_backend(imagen_config_msg *m, const imagen_config_autofill *ctx)
{
    const char *platform = imagen_config_get_str(m, "platform");
    const char *backend = imagen_config_get_str(m, "backend");
    const char *dir = ctx->first_version_dir;
    if (strcmp(platform, "ensemble") == 0)
        return NULL;

    /* A platform names its backend. */
    if (backend[0] == '\0' && platform[0] != '\0') {
        const char *b = NULL;
        if (starts_with(platform, "tensorflow_"))
            b = "tensorflow";
        else if (strcmp(platform, "tensorrt_plan") == 0)
            b = "tensorrt";
        else if (strcmp(platform, "onnxruntime_onnx") == 0)
            b = "onnxruntime";
        else if (strcmp(platform, "pytorch_libtorch") == 0 || strcmp(platform, "libtorch") == 0 ||
                 strcmp(platform, "torch_aoti") == 0)
            b = "pytorch";
        if (b != NULL && !imagen_config_set_str(m, "backend", b))
            return oom();
        if (strcmp(platform, "libtorch") == 0 && !imagen_config_set_str(m, "platform", "pytorch_libtorch"))
            return oom();
    }

    /* Neither: look at the first version directory. */
    if (imagen_config_get_str(m, "backend")[0] == '\0' && imagen_config_get_str(m, "platform")[0] == '\0' &&
        dir_readable(dir)) {
        static const struct {
            const char *file, *backend, *platform;
        } probes[] = {
            {"model.plan", "tensorrt", "tensorrt_plan"},
            {"model.onnx", "onnxruntime", "onnxruntime_onnx"},
            {"model.pt", "pytorch", "pytorch_libtorch"},
            {"model.pt2", "pytorch", "torch_aoti"},
            {"model.savedmodel", "tensorflow", "tensorflow_savedmodel"},
            {"model.graphdef", "tensorflow", "tensorflow_graphdef"},
            {"model.py", "python", NULL},
            {"model.xml", "openvino", NULL},
        };
        for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
            if (!exists_in(dir, probes[i].file))
                continue;
            if (!imagen_config_set_str(m, "backend", probes[i].backend) ||
                (probes[i].platform && !imagen_config_set_str(m, "platform", probes[i].platform)) ||
                !fill(m, "default_model_filename", probes[i].file))
                return oom();
            break;
        }
    }

    /* Still nothing: "<name>.<backend>" directory names the backend. */
    if (imagen_config_get_str(m, "backend")[0] == '\0' && imagen_config_get_str(m, "platform")[0] == '\0') {
        const char *dot = strrchr(ctx->model_name, '.');
        if (dot == NULL || dot[1] == '\0' || dot == ctx->model_name)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "unable to autofill backend for model '%s' (field 'backend')", ctx->model_name);
        char file[256];
        snprintf(file, sizeof(file), "model.%s", dot + 1);
        if (!imagen_config_set_str(m, "backend", dot + 1) || !fill(m, "default_model_filename", file))
            return oom();
    }

    /* Known backends fill their platform and default file. */
    backend = imagen_config_get_str(m, "backend");
    platform = imagen_config_get_str(m, "platform");
    const backend_row *row = backend_lookup(backend);
    if (row != NULL) {
        if (row->platform != NULL && platform[0] == '\0' && !imagen_config_set_str(m, "platform", row->platform))
            return oom();
        const char *file = row->filename;
        if (strcmp(imagen_config_get_str(m, "platform"), "torch_aoti") == 0)
            file = "model.pt2";
        if (!fill(m, "default_model_filename", file))
            return oom();
    } else if (strcmp(backend, "tensorflow") == 0) {
        platform = imagen_config_get_str(m, "platform");
        if (platform[0] == '\0') {
            bool graphdef = exists_in(dir, "model.graphdef") && !exists_in(dir, "model.savedmodel");
            if (!imagen_config_set_str(m, "platform", graphdef ? "tensorflow_graphdef" : "tensorflow_savedmodel"))
                return oom();
            platform = imagen_config_get_str(m, "platform");
        }
        if (!fill(m, "default_model_filename",
                  strcmp(platform, "tensorflow_graphdef") == 0 ? "model.graphdef" : "model.savedmodel"))
            return oom();
    }
    return NULL;
}

/* Step 5 for one message holding `preferred_batch_size`. */
static imagen_error *
default_preferred(imagen_config_msg *sched, int64_t max_batch_size)
{
    if (imagen_config_count(sched, "preferred_batch_size") == 0 && max_batch_size > 0 &&
        !imagen_config_add_int(sched, "preferred_batch_size", max_batch_size))
        return oom();
    return NULL;
}

static imagen_error *
default_pinned(imagen_config_msg *m)
{
    const char *names[] = {"input_pinned_memory", "output_pinned_memory"};
    for (int i = 0; i < 2; i++) {
        const imagen_config_msg *opt = imagen_config_get_msg(m, "optimization");
        if (opt != NULL && imagen_config_get_msg(opt, names[i]) != NULL)
            continue;
        imagen_config_msg *o = imagen_config_mutable_msg(m, "optimization");
        imagen_config_msg *pin = o ? imagen_config_mutable_msg(o, names[i]) : NULL;
        if (pin == NULL)
            return oom();
        imagen_config_set_bool(pin, "enable", true);
    }
    return NULL;
}

/* Step 7: instance groups (spec §3.4). */
static imagen_error *
instance_groups(imagen_config_msg *m, const imagen_config_autofill *ctx)
{
    const char *backend = imagen_config_get_str(m, "backend");
    bool two_cpu = strcmp(backend, "onnxruntime") == 0 || strcmp(backend, "tensorflow") == 0;
    const char *model = imagen_config_get_str(m, "name");
    if (imagen_config_count(m, "instance_group") == 0) {
        imagen_config_msg *g = imagen_config_add_msg(m, "instance_group");
        if (g == NULL || !imagen_config_set_str(g, "name", model))
            return oom();
    }
    size_t n = imagen_config_count(m, "instance_group");
    for (size_t i = 0; i < n; i++) {
        imagen_config_msg *g = imagen_config_at_mut(m, "instance_group", i)->m;
        if (imagen_config_get_str(g, "name")[0] == '\0') {
            char name[512];
            snprintf(name, sizeof(name), "%s_%zu", model, i);
            if (!imagen_config_set_str(g, "name", name))
                return oom();
        }
        if (imagen_config_get_int(g, "kind") == IMAGEN_KIND_AUTO)
            imagen_config_set_int(g, "kind", ctx->gpu_available ? IMAGEN_KIND_GPU : IMAGEN_KIND_CPU);
        if (imagen_config_get_int(g, "count") == 0)
            imagen_config_set_int(g, "count", imagen_config_get_int(g, "kind") == IMAGEN_KIND_CPU && two_cpu ? 2 : 1);
    }
    return NULL;
}

imagen_error *
imagen_config_normalize(imagen_config_msg *msg, const imagen_config_autofill *ctx)
{
    if (msg == NULL || ctx == NULL || ctx->model_name == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "normalize: missing message or model name");
    if (msg->desc != &imagen_config_model_config_desc)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "normalize: not a ModelConfig message");

    /* 1. name */
    const char *name = imagen_config_get_str(msg, "name");
    if (name[0] == '\0') {
        if (!imagen_config_set_str(msg, "name", ctx->model_name))
            return oom();
    } else if (strcmp(name, ctx->model_name) != 0) {
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "model '%s': configuration name '%s' does not match the model directory "
                                "name (field 'name')",
                                ctx->model_name, name);
    }

    /* 2. backend / platform / default_model_filename */
    IMAGEN_RETURN_IF_ERROR(autofill_backend(msg, ctx));

    /* 4. version policy */
    if (imagen_config_get_msg(msg, "version_policy") == NULL) {
        imagen_config_msg *vp = imagen_config_mutable_msg(msg, "version_policy");
        imagen_config_msg *latest = vp ? imagen_config_mutable_msg(vp, "latest") : NULL;
        if (latest == NULL)
            return oom();
        imagen_config_set_uint(latest, "num_versions", 1);
    }

    /* 5. preferred batch sizes (and the sequence idle default of §3.7) */
    int64_t max_batch = imagen_config_get_int(msg, "max_batch_size");
    if (imagen_config_has(msg, "dynamic_batching"))
        IMAGEN_RETURN_IF_ERROR(default_preferred(imagen_config_mutable_msg(msg, "dynamic_batching"), max_batch));
    if (imagen_config_has(msg, "sequence_batching")) {
        imagen_config_msg *seq = imagen_config_mutable_msg(msg, "sequence_batching");
        if (imagen_config_has(seq, "oldest"))
            IMAGEN_RETURN_IF_ERROR(default_preferred(imagen_config_mutable_msg(seq, "oldest"), max_batch));
        if (imagen_config_get_uint(seq, "max_sequence_idle_microseconds") == 0)
            imagen_config_set_uint(seq, "max_sequence_idle_microseconds", 1000000);
    }

    bool ensemble = strcmp(imagen_config_get_str(msg, "platform"), "ensemble") == 0;
    if (!ensemble) {
        /* 6. pinned memory */
        IMAGEN_RETURN_IF_ERROR(default_pinned(msg));
        /* 7. instance groups */
        IMAGEN_RETURN_IF_ERROR(instance_groups(msg, ctx));
    }
    return NULL;
}
