/*
 * The non-inference rpcs of GRPCInferenceService (spec §2.2-§2.3) and
 * grpc.health.v1.Health/Check: health, server and model metadata, model
 * configuration, statistics, the model repository and log settings. They
 * carry the same data as the HTTP endpoints of src/http/http_admin.c. Every
 * handler runs on a completion-queue thread and returns without waiting,
 * except load/unload, which block on the model and therefore run on a
 * detached helper thread of their own.
 */
#include "grpc/grpc_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "grpc_service.pb-c.h"
#include "health.pb-c.h"

#define COMPONENT "grpc"

/* The extensions we implement, as ServerMetadata lists them (spec §1.4). */
static const char *const extensions[] = {
    "model_repository",   "model_repository(unload_dependents)",
    "schedule_policy",    "model_configuration",
    "binary_tensor_data", "parameters",
    "statistics",         "logging",
};

/* Unpacks the request of `c` into `var` (a pointer to the generated type)
 * or replies with the error and returns from the handler. */
#define UNPACK_OR_REPLY(c, desc, type, var)                          \
    type *var = NULL;                                                \
    do {                                                             \
        ProtobufCMessage *m__ = NULL;                                \
        imagen_error *e__ = imagen__grpc_unpack((c), &(desc), &m__); \
        if (e__ != NULL) {                                           \
            imagen__grpc_reply_error((c), e__);                      \
            return;                                                  \
        }                                                            \
        var = (type *)m__;                                           \
    } while (0)

static void
free_msg(void *m)
{
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ======================================================================
 * Health and metadata
 * ==================================================================== */

void
imagen__grpc_server_live(imagen__grpc_call *c)
{
    Inference__ServerLiveResponse r = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    r.live = imagen_server_is_live(imagen__grpc_server(c));
    imagen__grpc_reply_msg(c, &r.base);
}

void
imagen__grpc_server_ready(imagen__grpc_call *c)
{
    Inference__ServerReadyResponse r = INFERENCE__SERVER_READY_RESPONSE__INIT;
    r.ready = imagen_server_is_ready(imagen__grpc_server(c));
    imagen__grpc_reply_msg(c, &r.base);
}

/* SERVING iff the server is ready; the service name is ignored (spec §2.1). */
void
imagen__grpc_health_check(imagen__grpc_call *c)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = imagen_server_is_ready(imagen__grpc_server(c))
                   ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                   : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    imagen__grpc_reply_msg(c, &r.base);
}

void
imagen__grpc_server_metadata(imagen__grpc_call *c)
{
    Inference__ServerMetadataResponse r = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    r.name = (char *)imagen_server_id(imagen__grpc_server(c));
    r.version = (char *)IMAGEN_TRITON_COMPAT_VERSION;
    /* system_shared_memory is listed only while clients may use it. */
    const char *list[sizeof(extensions) / sizeof(extensions[0]) + 1];
    size_t n = 0;
    for (; n < sizeof(extensions) / sizeof(extensions[0]); n++)
        list[n] = extensions[n];
    if (imagen__grpc_shm(c) != NULL)
        list[n++] = "system_shared_memory";
    r.n_extensions = n;
    r.extensions = (char **)list;
    imagen__grpc_reply_msg(c, &r.base);
}

void
imagen__grpc_model_ready(imagen__grpc_call *c)
{
    UNPACK_OR_REPLY(c, inference__model_ready_request__descriptor, Inference__ModelReadyRequest, req);
    int64_t version = -1;
    imagen_error *err = imagen__grpc_parse_version(req->version, &version);
    int64_t *versions = NULL;
    size_t n = 0;
    /* An unknown model is an error; a known one that is not ready is "false". */
    if (err == NULL)
        err = imagen_server_model_ready_versions(imagen__grpc_server(c), req->name, &versions, &n);
    free(versions);
    if (err != NULL) {
        free_msg(req);
        imagen__grpc_reply_error(c, err);
        return;
    }
    Inference__ModelReadyResponse r = INFERENCE__MODEL_READY_RESPONSE__INIT;
    r.ready = imagen_server_model_is_ready(imagen__grpc_server(c), req->name, version);
    free_msg(req);
    imagen__grpc_reply_msg(c, &r.base);
}

/* Fills n tensor metadata entries (and their shape arrays) in `out`, which
 * has room for n; the shapes are owned by `shapes` (free each). */
static bool
fill_tensor_metadata(const imagen_tensor_config *tc, size_t n, bool batching,
                     Inference__ModelMetadataResponse__TensorMetadata *out,
                     Inference__ModelMetadataResponse__TensorMetadata **ptrs, int64_t **shapes)
{
    for (size_t i = 0; i < n; i++) {
        inference__model_metadata_response__tensor_metadata__init(&out[i]);
        out[i].name = (char *)tc[i].name;
        out[i].datatype = (char *)imagen_datatype_name(tc[i].datatype);
        size_t rank = tc[i].rank + (batching ? 1 : 0);
        shapes[i] = malloc((rank ? rank : 1) * sizeof(int64_t));
        if (shapes[i] == NULL)
            return false;
        size_t k = 0;
        if (batching)
            shapes[i][k++] = -1;
        for (size_t d = 0; d < tc[i].rank; d++)
            shapes[i][k++] = tc[i].dims[d];
        out[i].n_shape = rank;
        out[i].shape = shapes[i];
        ptrs[i] = &out[i];
    }
    return true;
}

void
imagen__grpc_model_metadata(imagen__grpc_call *c)
{
    UNPACK_OR_REPLY(c, inference__model_metadata_request__descriptor, Inference__ModelMetadataRequest, req);
    imagen_server *srv = imagen__grpc_server(c);
    int64_t version = -1;
    imagen_model *model = NULL;
    int64_t *versions = NULL;
    size_t n_versions = 0;
    imagen_error *err = imagen__grpc_parse_version(req->version, &version);
    if (err == NULL)
        err = imagen_server_model_acquire(srv, req->name, version, &model);
    if (err == NULL && version < 0)
        err = imagen_server_model_ready_versions(srv, req->name, &versions, &n_versions);
    if (err != NULL) {
        if (model != NULL)
            imagen_model_release(model);
        free_msg(req);
        imagen__grpc_reply_error(c, err);
        return;
    }
    const imagen_model_config *cfg = imagen_model_get_config(model);
    bool batching = cfg->max_batch_size > 0;
    size_t nv = version >= 0 ? 1 : n_versions;
    size_t nt = cfg->n_inputs + cfg->n_outputs;
    char **vstr = calloc(nv + 1, sizeof(char *));
    Inference__ModelMetadataResponse__TensorMetadata *tm = calloc(nt + 1, sizeof(*tm));
    Inference__ModelMetadataResponse__TensorMetadata **tp = calloc(nt + 1, sizeof(*tp));
    int64_t **shapes = calloc(nt + 1, sizeof(int64_t *));
    bool ok = vstr && tm && tp && shapes;
    for (size_t i = 0; ok && i < nv; i++) {
        vstr[i] = malloc(24);
        ok = vstr[i] != NULL;
        if (ok)
            snprintf(vstr[i], 24, "%" PRId64, version >= 0 ? version : versions[i]);
    }
    ok = ok && fill_tensor_metadata(cfg->inputs, cfg->n_inputs, batching, tm, tp, shapes) &&
         fill_tensor_metadata(cfg->outputs, cfg->n_outputs, batching, tm + cfg->n_inputs, tp + cfg->n_inputs,
                              shapes + cfg->n_inputs);
    if (ok) {
        Inference__ModelMetadataResponse r = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
        r.name = req->name;
        r.n_versions = nv;
        r.versions = vstr;
        r.platform = (char *)(cfg->platform && cfg->platform[0] ? cfg->platform : cfg->backend ? cfg->backend : "");
        r.n_inputs = cfg->n_inputs;
        r.inputs = tp;
        r.n_outputs = cfg->n_outputs;
        r.outputs = tp + cfg->n_inputs;
        imagen__grpc_reply_msg(c, &r.base);
    } else {
        imagen__grpc_reply_error(c, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory"));
    }
    for (size_t i = 0; vstr && i < nv; i++)
        free(vstr[i]);
    for (size_t i = 0; shapes && i < nt; i++)
        free(shapes[i]);
    free(vstr);
    free(tm);
    free(tp);
    free(shapes);
    free(versions);
    imagen_model_release(model);
    free_msg(req);
}

/* ModelConfigResponse { ModelConfig config = 1 }: the config module encodes
 * the ModelConfig itself; this adds the one length-delimited field around it. */
void
imagen__grpc_model_config(imagen__grpc_call *c)
{
    UNPACK_OR_REPLY(c, inference__model_config_request__descriptor, Inference__ModelConfigRequest, req);
    int64_t version = -1;
    imagen_model *model = NULL;
    imagen_error *err = imagen__grpc_parse_version(req->version, &version);
    if (err == NULL)
        err = imagen_server_model_acquire(imagen__grpc_server(c), req->name, version, &model);
    uint8_t *cfg_bytes = NULL;
    size_t cfg_len = 0;
    if (err == NULL) {
        const imagen_model_config *cfg = imagen_model_get_config(model);
        err = cfg && cfg->msg ? imagen_config_msg_to_protobuf(cfg->msg, &cfg_bytes, &cfg_len)
                              : imagen_error_new(IMAGEN_ERR_INTERNAL, "model '%s' has no configuration", req->name);
        imagen_model_release(model);
    }
    free_msg(req);
    if (err != NULL) {
        imagen__grpc_reply_error(c, err);
        return;
    }
    uint8_t *out = malloc(cfg_len + 11);
    if (out == NULL) {
        free(cfg_bytes);
        imagen__grpc_reply_error(c, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory"));
        return;
    }
    size_t n = 0;
    out[n++] = (1 << 3) | 2; /* field 1, length-delimited */
    for (uint64_t v = cfg_len;; v >>= 7) {
        out[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f)
            break;
    }
    if (cfg_len)
        memcpy(out + n, cfg_bytes, cfg_len);
    free(cfg_bytes);
    imagen__grpc_reply_bytes(c, out, n + cfg_len);
}

/* ======================================================================
 * Statistics
 * ==================================================================== */

static void
set_duration(Inference__StatisticDuration *d, const imagen_stat_duration *s)
{
    inference__statistic_duration__init(d);
    d->count = s->count;
    d->ns = s->ns;
}

/* Everything one ModelStatistics entry points to, allocated together. */
typedef struct stat_block {
    Inference__ModelStatistics ms;
    Inference__InferStatistics is;
    Inference__StatisticDuration d[8];
    char version[24];
    Inference__InferBatchStatistics *bs;
    Inference__InferBatchStatistics **bsp;
    Inference__StatisticDuration *bd;
} stat_block;

void
imagen__grpc_model_statistics(imagen__grpc_call *c)
{
    UNPACK_OR_REPLY(c, inference__model_statistics_request__descriptor, Inference__ModelStatisticsRequest, req);
    int64_t version = -1;
    imagen_model_stats *stats = NULL;
    size_t n = 0;
    imagen_error *err = imagen__grpc_parse_version(req->version, &version);
    if (err == NULL)
        err = imagen_server_model_statistics(imagen__grpc_server(c), req->name[0] ? req->name : NULL, version, &stats,
                                             &n);
    free_msg(req);
    if (err != NULL) {
        imagen__grpc_reply_error(c, err);
        return;
    }
    stat_block *blocks = calloc(n + 1, sizeof(stat_block));
    Inference__ModelStatistics **list = calloc(n + 1, sizeof(*list));
    bool ok = blocks && list;
    for (size_t i = 0; ok && i < n; i++) {
        const imagen_model_stats *s = &stats[i];
        stat_block *b = &blocks[i];
        inference__model_statistics__init(&b->ms);
        inference__infer_statistics__init(&b->is);
        snprintf(b->version, sizeof(b->version), "%" PRId64, s->version);
        b->ms.name = s->name;
        b->ms.version = b->version;
        b->ms.last_inference = s->last_inference_ms;
        b->ms.inference_count = s->inference_count;
        b->ms.execution_count = s->execution_count;
        const imagen_stat_duration *src[8] = {&s->success,       &s->fail,           &s->queue,     &s->compute_input,
                                              &s->compute_infer, &s->compute_output, &s->cache_hit, &s->cache_miss};
        for (int k = 0; k < 8; k++)
            set_duration(&b->d[k], src[k]);
        b->is.success = &b->d[0];
        b->is.fail = &b->d[1];
        b->is.queue = &b->d[2];
        b->is.compute_input = &b->d[3];
        b->is.compute_infer = &b->d[4];
        b->is.compute_output = &b->d[5];
        b->is.cache_hit = &b->d[6];
        b->is.cache_miss = &b->d[7];
        b->ms.inference_stats = &b->is;
        size_t nb = s->n_batch_stats;
        b->bs = calloc(nb + 1, sizeof(*b->bs));
        b->bsp = calloc(nb + 1, sizeof(*b->bsp));
        b->bd = calloc(3 * nb + 1, sizeof(*b->bd));
        ok = b->bs && b->bsp && b->bd;
        for (size_t j = 0; ok && j < nb; j++) {
            Inference__InferBatchStatistics *x = &b->bs[j];
            inference__infer_batch_statistics__init(x);
            x->batch_size = s->batch_stats[j].batch_size;
            set_duration(&b->bd[3 * j], &s->batch_stats[j].compute_input);
            set_duration(&b->bd[3 * j + 1], &s->batch_stats[j].compute_infer);
            set_duration(&b->bd[3 * j + 2], &s->batch_stats[j].compute_output);
            x->compute_input = &b->bd[3 * j];
            x->compute_infer = &b->bd[3 * j + 1];
            x->compute_output = &b->bd[3 * j + 2];
            b->bsp[j] = x;
        }
        b->ms.n_batch_stats = nb;
        b->ms.batch_stats = b->bsp;
        list[i] = &b->ms;
    }
    if (ok) {
        Inference__ModelStatisticsResponse r = INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
        r.n_model_stats = n;
        r.model_stats = list;
        imagen__grpc_reply_msg(c, &r.base);
    } else {
        imagen__grpc_reply_error(c, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory"));
    }
    for (size_t i = 0; blocks && i < n; i++) {
        free(blocks[i].bs);
        free(blocks[i].bsp);
        free(blocks[i].bd);
    }
    free(blocks);
    free(list);
    imagen_model_stats_free(stats, n);
}

/* ======================================================================
 * Model repository
 * ==================================================================== */

void
imagen__grpc_repository_index(imagen__grpc_call *c)
{
    UNPACK_OR_REPLY(c, inference__repository_index_request__descriptor, Inference__RepositoryIndexRequest, req);
    bool ready = req->ready;
    free_msg(req);
    imagen_repository_entry *entries = NULL;
    size_t n = 0;
    imagen_error *err = imagen_server_repository_index(imagen__grpc_server(c), ready, &entries, &n);
    if (err != NULL) {
        imagen__grpc_reply_error(c, err);
        return;
    }
    Inference__RepositoryIndexResponse__ModelIndex *mi = calloc(n + 1, sizeof(*mi));
    Inference__RepositoryIndexResponse__ModelIndex **mp = calloc(n + 1, sizeof(*mp));
    char(*vers)[24] = calloc(n + 1, sizeof(*vers));
    if (mi == NULL || mp == NULL || vers == NULL) {
        imagen__grpc_reply_error(c, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory"));
    } else {
        for (size_t i = 0; i < n; i++) {
            const imagen_repository_entry *e = &entries[i];
            inference__repository_index_response__model_index__init(&mi[i]);
            mi[i].name = e->name;
            if (e->version >= 0) {
                snprintf(vers[i], sizeof(vers[i]), "%" PRId64, e->version);
                mi[i].version = vers[i];
            }
            if (e->version >= 0 || e->state != NULL) {
                mi[i].state = (char *)(e->state ? e->state : "UNKNOWN");
                mi[i].reason = e->reason ? e->reason : (char *)"";
            }
            mp[i] = &mi[i];
        }
        Inference__RepositoryIndexResponse r = INFERENCE__REPOSITORY_INDEX_RESPONSE__INIT;
        r.n_models = n;
        r.models = mp;
        imagen__grpc_reply_msg(c, &r.base);
    }
    free(mi);
    free(mp);
    free(vers);
    imagen_repository_index_free(entries, n);
}

/* Load and unload block until the model is loaded or gone, so they run
 * on a detached thread; the call object keeps the reply path alive. */
static void
run_detached(imagen__grpc_call *c, void *(*fn)(void *))
{
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&tid, &attr, fn, c) != 0) {
        IMAGEN_LOG_WARN_(COMPONENT, "cannot start a repository thread; running on the completion-queue thread");
        fn(c);
    }
    pthread_attr_destroy(&attr);
}

static void *
load_main(void *arg)
{
    imagen__grpc_call *c = arg;
    ProtobufCMessage *m = NULL;
    imagen_error *err = imagen__grpc_unpack(c, &inference__repository_model_load_request__descriptor, &m);
    if (err != NULL) {
        imagen__grpc_reply_error(c, err);
        return NULL;
    }
    Inference__RepositoryModelLoadRequest *req = (Inference__RepositoryModelLoadRequest *)m;
    const char *config = NULL;
    imagen_model_file *files = calloc(req->n_parameters + 1, sizeof(*files));
    size_t n_files = 0;
    if (files == NULL)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    else if (req->repository_name[0] != '\0')
        err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "'repository_name' specification is not supported");
    for (size_t i = 0; err == NULL && i < req->n_parameters; i++) {
        const char *key = req->parameters[i]->key;
        const Inference__ModelRepositoryParameter *v = req->parameters[i]->value;
        int which = v ? (int)v->parameter_choice_case : 0;
        if (strcmp(key, "config") == 0) {
            if (which != INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_STRING_PARAM)
                err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                       "Unable to parse 'config': expected a string_param holding the model "
                                       "configuration as JSON");
            else
                config = v->string_param;
        } else if (strncmp(key, "file:", 5) == 0) {
            if (which != INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_BYTES_PARAM)
                err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse '%s': expected a bytes_param", key);
            else
                files[n_files++] = (imagen_model_file){key + 5, v->bytes_param.data, v->bytes_param.len};
        } else if (which == 0) {
            err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "load parameter '%s' has no value", key);
        }
    }
    if (err == NULL && n_files > 0 && config == NULL)
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                               "load parameter 'config' must be specified together with 'file:' parameters for "
                               "model '%s'",
                               req->model_name);
    if (err == NULL)
        err = imagen_server_model_load(imagen__grpc_server(c), req->model_name, config, files, n_files);
    free(files);
    free_msg(req);
    if (err != NULL) {
        imagen__grpc_reply_error(c, err);
    } else {
        Inference__RepositoryModelLoadResponse r = INFERENCE__REPOSITORY_MODEL_LOAD_RESPONSE__INIT;
        imagen__grpc_reply_msg(c, &r.base);
    }
    return NULL;
}

static void *
unload_main(void *arg)
{
    imagen__grpc_call *c = arg;
    ProtobufCMessage *m = NULL;
    imagen_error *err = imagen__grpc_unpack(c, &inference__repository_model_unload_request__descriptor, &m);
    if (err != NULL) {
        imagen__grpc_reply_error(c, err);
        return NULL;
    }
    Inference__RepositoryModelUnloadRequest *req = (Inference__RepositoryModelUnloadRequest *)m;
    bool dependents = false;
    if (req->repository_name[0] != '\0')
        err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "'repository_name' specification is not supported");
    for (size_t i = 0; err == NULL && i < req->n_parameters; i++) {
        const Inference__ModelRepositoryParameter *v = req->parameters[i]->value;
        if (strcmp(req->parameters[i]->key, "unload_dependents") != 0)
            continue;
        if (v == NULL || v->parameter_choice_case != INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM)
            err =
                imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'unload_dependents': expected a bool_param");
        else
            dependents = v->bool_param;
    }
    if (err == NULL)
        err = imagen_server_model_unload(imagen__grpc_server(c), req->model_name, dependents);
    free_msg(req);
    if (err != NULL) {
        imagen__grpc_reply_error(c, err);
    } else {
        Inference__RepositoryModelUnloadResponse r = INFERENCE__REPOSITORY_MODEL_UNLOAD_RESPONSE__INIT;
        imagen__grpc_reply_msg(c, &r.base);
    }
    return NULL;
}

void
imagen__grpc_repository_load(imagen__grpc_call *c)
{
    run_detached(c, load_main);
}

void
imagen__grpc_repository_unload(imagen__grpc_call *c)
{
    run_detached(c, unload_main);
}

/* ======================================================================
 * Log settings
 * ==================================================================== */

/* Last values set through this rpc (the HTTP frontend keeps its own). */
static atomic_uint log_verbose_level;
static _Atomic(const char *) log_format_name = "default";

static imagen_error *
apply_log_setting(const char *key, const Inference__LogSettingsRequest__SettingValue *v)
{
    int which = v ? (int)v->parameter_choice_case : 0;
    if (strcmp(key, "log_file") == 0)
        return imagen_error_new(IMAGEN_ERR_UNSUPPORTED,
                                "log file location can not be updated through network protocol");
    if (strcmp(key, "log_info") == 0 || strcmp(key, "log_warning") == 0 || strcmp(key, "log_error") == 0) {
        if (which != INFERENCE__LOG_SETTINGS_REQUEST__SETTING_VALUE__PARAMETER_CHOICE_BOOL_PARAM)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "expect boolean for '%s'", key);
        imagen_log_level lv = key[4] == 'i' ? IMAGEN_LOG_INFO : key[4] == 'w' ? IMAGEN_LOG_WARNING : IMAGEN_LOG_ERROR;
        imagen_log_set_enabled(lv, v->bool_param);
        return NULL;
    }
    if (strcmp(key, "log_verbose_level") == 0) {
        if (which != INFERENCE__LOG_SETTINGS_REQUEST__SETTING_VALUE__PARAMETER_CHOICE_UINT32_PARAM)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "expect unsigned integer for '%s'", key);
        log_verbose_level = v->uint32_param;
        imagen_log_set_verbose((int)(v->uint32_param > 1000 ? 1000 : v->uint32_param));
        return NULL;
    }
    if (strcmp(key, "log_format") == 0) {
        if (which != INFERENCE__LOG_SETTINGS_REQUEST__SETTING_VALUE__PARAMETER_CHOICE_STRING_PARAM)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "expect string for '%s'", key);
        if (strcmp(v->string_param, "default") == 0) {
            log_format_name = "default";
            imagen_log_set_format(IMAGEN_LOG_FORMAT_DEFAULT);
        } else if (strcmp(v->string_param, "ISO8601") == 0) {
            log_format_name = "ISO8601";
            imagen_log_set_format(IMAGEN_LOG_FORMAT_ISO8601);
        } else {
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "invalid argument for log_format, got: '%.64s'",
                                    v->string_param);
        }
        return NULL;
    }
    return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unknown logging setting '%.128s'", key);
}

void
imagen__grpc_log_settings(imagen__grpc_call *c)
{
    UNPACK_OR_REPLY(c, inference__log_settings_request__descriptor, Inference__LogSettingsRequest, req);
    imagen_error *err = NULL;
    for (size_t i = 0; err == NULL && i < req->n_settings; i++)
        err = apply_log_setting(req->settings[i]->key, req->settings[i]->value);
    free_msg(req);
    if (err != NULL) {
        imagen__grpc_reply_error(c, err);
        return;
    }
    enum { N = 6 };
    static const char *const keys[N] = {"log_file",  "log_info",          "log_warning",
                                        "log_error", "log_verbose_level", "log_format"};
    Inference__LogSettingsResponse__SettingsEntry entries[N];
    Inference__LogSettingsResponse__SettingsEntry *ptrs[N];
    Inference__LogSettingsResponse__SettingValue values[N];
    for (int i = 0; i < N; i++) {
        inference__log_settings_response__settings_entry__init(&entries[i]);
        inference__log_settings_response__setting_value__init(&values[i]);
        entries[i].key = (char *)keys[i];
        entries[i].value = &values[i];
        ptrs[i] = &entries[i];
    }
    values[0].parameter_choice_case = INFERENCE__LOG_SETTINGS_RESPONSE__SETTING_VALUE__PARAMETER_CHOICE_STRING_PARAM;
    values[0].string_param = (char *)"";
    imagen_log_level levels[3] = {IMAGEN_LOG_INFO, IMAGEN_LOG_WARNING, IMAGEN_LOG_ERROR};
    for (int i = 0; i < 3; i++) {
        values[1 + i].parameter_choice_case =
            INFERENCE__LOG_SETTINGS_RESPONSE__SETTING_VALUE__PARAMETER_CHOICE_BOOL_PARAM;
        values[1 + i].bool_param = imagen_log_enabled(levels[i]);
    }
    unsigned verbose = imagen_log_enabled(IMAGEN_LOG_VERBOSE) ? (log_verbose_level ? log_verbose_level : 1) : 0;
    values[4].parameter_choice_case = INFERENCE__LOG_SETTINGS_RESPONSE__SETTING_VALUE__PARAMETER_CHOICE_UINT32_PARAM;
    values[4].uint32_param = verbose;
    values[5].parameter_choice_case = INFERENCE__LOG_SETTINGS_RESPONSE__SETTING_VALUE__PARAMETER_CHOICE_STRING_PARAM;
    values[5].string_param = (char *)log_format_name;
    Inference__LogSettingsResponse r = INFERENCE__LOG_SETTINGS_RESPONSE__INIT;
    r.n_settings = N;
    r.settings = ptrs;
    imagen__grpc_reply_msg(c, &r.base);
}

/* ======================================================================
 * System shared memory (spec §2.2; registry in src/shm/)
 * ==================================================================== */

static imagen_error *
shm_disabled(void)
{
    return imagen_error_new(IMAGEN_ERR_UNSUPPORTED,
                            "Client shared memory is disabled. Start the server with '--allow-client-shm=true' "
                            "to enable.");
}

/* Status still answers while client shm is disabled: with no regions. */
void
imagen__grpc_shm_status(imagen__grpc_call *c)
{
    UNPACK_OR_REPLY(c, inference__system_shared_memory_status_request__descriptor,
                    Inference__SystemSharedMemoryStatusRequest, req);
    imagen_shm *shm = imagen__grpc_shm(c);
    const char *name = req->name[0] ? req->name : NULL;
    imagen_shm_region_status *st = NULL;
    size_t n = 0;
    imagen_error *err = NULL;
    if (shm != NULL)
        err = imagen_shm_status(shm, name, &st, &n);
    else if (name != NULL)
        err = imagen_error_new(IMAGEN_ERR_NOT_FOUND, "Unable to find system shared memory region: '%s'", name);
    Inference__SystemSharedMemoryStatusResponse__RegionStatus *regions = n ? calloc(n, sizeof(*regions)) : NULL;
    Inference__SystemSharedMemoryStatusResponse__RegionsEntry *entries = n ? calloc(n, sizeof(*entries)) : NULL;
    Inference__SystemSharedMemoryStatusResponse__RegionsEntry **ptrs = n ? calloc(n, sizeof(*ptrs)) : NULL;
    if (err == NULL && n && (regions == NULL || entries == NULL || ptrs == NULL))
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    if (err == NULL) {
        for (size_t i = 0; i < n; i++) {
            inference__system_shared_memory_status_response__region_status__init(&regions[i]);
            regions[i].name = st[i].name;
            regions[i].key = st[i].key;
            regions[i].offset = st[i].offset;
            regions[i].byte_size = st[i].byte_size;
            inference__system_shared_memory_status_response__regions_entry__init(&entries[i]);
            entries[i].key = st[i].name;
            entries[i].value = &regions[i];
            ptrs[i] = &entries[i];
        }
        Inference__SystemSharedMemoryStatusResponse r = INFERENCE__SYSTEM_SHARED_MEMORY_STATUS_RESPONSE__INIT;
        r.n_regions = n;
        r.regions = ptrs;
        imagen__grpc_reply_msg(c, &r.base);
    } else {
        imagen__grpc_reply_error(c, err);
    }
    free(ptrs);
    free(entries);
    free(regions);
    imagen_shm_status_free(st, n);
    free_msg(req);
}

void
imagen__grpc_shm_register(imagen__grpc_call *c)
{
    UNPACK_OR_REPLY(c, inference__system_shared_memory_register_request__descriptor,
                    Inference__SystemSharedMemoryRegisterRequest, req);
    imagen_shm *shm = imagen__grpc_shm(c);
    imagen_error *err =
        shm == NULL ? shm_disabled() : imagen_shm_register(shm, req->name, req->key, req->offset, req->byte_size);
    if (err == NULL) {
        Inference__SystemSharedMemoryRegisterResponse r = INFERENCE__SYSTEM_SHARED_MEMORY_REGISTER_RESPONSE__INIT;
        imagen__grpc_reply_msg(c, &r.base);
    } else {
        imagen__grpc_reply_error(c, err);
    }
    free_msg(req);
}

void
imagen__grpc_shm_unregister(imagen__grpc_call *c)
{
    UNPACK_OR_REPLY(c, inference__system_shared_memory_unregister_request__descriptor,
                    Inference__SystemSharedMemoryUnregisterRequest, req);
    imagen_shm *shm = imagen__grpc_shm(c);
    imagen_error *err = shm == NULL ? shm_disabled() : imagen_shm_unregister(shm, req->name[0] ? req->name : NULL);
    if (err == NULL) {
        Inference__SystemSharedMemoryUnregisterResponse r = INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_RESPONSE__INIT;
        imagen__grpc_reply_msg(c, &r.base);
    } else {
        imagen__grpc_reply_error(c, err);
    }
    free_msg(req);
}
