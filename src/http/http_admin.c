/*
 * The non-inference KServe v2 endpoints (spec §1.3-§1.8, §1.13, §1.15):
 * health, server and model metadata, model readiness, model configuration,
 * statistics, the model repository extension, logging settings and the
 * system shared-memory API (registry in src/shm/; 501 unless enabled). Replies are rendered by hand into
 * imagen_buf; request bodies are parsed with jansson. Called on network
 * threads, except load/unload, which block until the model is loaded and
 * therefore run on a helper thread of the server glue.
 */
#include "http/http_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "common/base64.h"
#include "common/log.h"

/* The extensions we implement, as GET /v2 lists them (spec §1.4). */
static const char *const extensions[] = {
    "classification",  "model_repository",    "model_repository(unload_dependents)",
    "schedule_policy", "model_configuration", "binary_tensor_data",
    "parameters",      "statistics",          "logging",
};

void
imagen__http_reply_error(imagen__http_reply *reply, imagen_error *err)
{
    reply->status = imagen_error_code_http_status(imagen_error_code_of(err));
    imagen_buf_reset(&reply->body);
    imagen__http_json_error_body(&reply->body, imagen_error_message(err));
    reply->json = true;
    imagen_error_free(err);
}

static void
append_key(imagen_buf *b, const char *key)
{
    imagen_buf_append_json_string(b, key, strlen(key));
    imagen_buf_append_char(b, ':');
}

static void
append_str(imagen_buf *b, const char *s)
{
    imagen_buf_append_json_string(b, s ? s : "", s ? strlen(s) : 0);
}

/* Parses an optional JSON object body; an empty body yields NULL. */
static imagen_error *
parse_body(const char *body, size_t len, json_t **out)
{
    *out = NULL;
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    if (i == len)
        return NULL;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (root == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "failed to parse the request JSON buffer: %s at line %d column %d (offset %d)",
                                jerr.text, jerr.line, jerr.column, jerr.position);
    if (!json_is_object(root)) {
        json_decref(root);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "failed to parse the request JSON buffer: expected an object");
    }
    *out = root;
    return NULL;
}

/* ======================================================================
 * Health and metadata
 * ==================================================================== */

static void
health(imagen_server *srv, bool ready, imagen__http_reply *reply)
{
    if (imagen_server_is_exiting(srv)) {
        imagen__http_reply_error(reply, imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "Server exiting"));
        return;
    }
    bool ok = ready ? imagen_server_is_ready(srv) : imagen_server_is_live(srv);
    reply->status = ok ? 200 : 400;
}

static void
server_metadata(imagen_server *srv, bool shm_enabled, imagen__http_reply *reply)
{
    imagen_buf *b = &reply->body;
    imagen_buf_append_char(b, '{');
    append_key(b, "name");
    append_str(b, imagen_server_id(srv));
    imagen_buf_append_char(b, ',');
    append_key(b, "version");
    append_str(b, IMAGEN_TRITON_COMPAT_VERSION);
    imagen_buf_append_str(b, ",\"extensions\":[");
    for (size_t i = 0; i < sizeof(extensions) / sizeof(extensions[0]); i++) {
        if (i)
            imagen_buf_append_char(b, ',');
        append_str(b, extensions[i]);
    }
    /* Listed only while clients may use it: a client probing for the
     * extension then knows whether registering will work. */
    if (shm_enabled)
        imagen_buf_append_str(b, ",\"system_shared_memory\"");
    imagen_buf_append_str(b, "]}");
    reply->json = true;
}

static void
append_tensor_metadata(imagen_buf *b, const imagen_tensor_config *tc, size_t n, bool batching)
{
    imagen_buf_append_char(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            imagen_buf_append_char(b, ',');
        imagen_buf_append_str(b, "{\"name\":");
        append_str(b, tc[i].name);
        imagen_buf_append_str(b, ",\"datatype\":");
        append_str(b, imagen_datatype_name(tc[i].datatype));
        imagen_buf_append_str(b, ",\"shape\":[");
        if (batching)
            imagen_buf_append_str(b, tc[i].rank ? "-1," : "-1");
        for (size_t d = 0; d < tc[i].rank; d++) {
            if (d)
                imagen_buf_append_char(b, ',');
            imagen_buf_append_i64(b, tc[i].dims[d]);
        }
        imagen_buf_append_str(b, "]}");
    }
    imagen_buf_append_char(b, ']');
}

static imagen_error *
model_metadata(imagen_server *srv, const char *name, int64_t version, imagen__http_reply *reply)
{
    imagen_model *model = NULL;
    IMAGEN_RETURN_IF_ERROR(imagen_server_model_acquire(srv, name, version, &model));
    int64_t *versions = NULL;
    size_t n_versions = 0;
    imagen_error *err = NULL;
    if (version < 0) {
        err = imagen_server_model_ready_versions(srv, name, &versions, &n_versions);
        if (err != NULL) {
            imagen_model_release(model);
            return err;
        }
    }
    const imagen_model_config *cfg = imagen_model_get_config(model);
    imagen_buf *b = &reply->body;
    imagen_buf_append_str(b, "{\"name\":");
    append_str(b, name);
    imagen_buf_append_str(b, ",\"versions\":[");
    if (version >= 0) {
        imagen_buf_appendf(b, "\"%" PRId64 "\"", version);
    } else {
        for (size_t i = 0; i < n_versions; i++)
            imagen_buf_appendf(b, "%s\"%" PRId64 "\"", i ? "," : "", versions[i]);
    }
    imagen_buf_append_str(b, "],\"platform\":");
    append_str(b, cfg->platform && cfg->platform[0] ? cfg->platform : cfg->backend);
    imagen_buf_append_str(b, ",\"inputs\":");
    append_tensor_metadata(b, cfg->inputs, cfg->n_inputs, cfg->max_batch_size > 0);
    imagen_buf_append_str(b, ",\"outputs\":");
    append_tensor_metadata(b, cfg->outputs, cfg->n_outputs, cfg->max_batch_size > 0);
    imagen_buf_append_char(b, '}');
    reply->json = true;
    free(versions);
    imagen_model_release(model);
    return NULL;
}

static imagen_error *
model_config(imagen_server *srv, const char *name, int64_t version, imagen__http_reply *reply)
{
    imagen_model *model = NULL;
    IMAGEN_RETURN_IF_ERROR(imagen_server_model_acquire(srv, name, version, &model));
    const imagen_model_config *cfg = imagen_model_get_config(model);
    char *json = cfg && cfg->msg ? imagen_config_msg_to_json(cfg->msg) : NULL;
    imagen_model_release(model);
    if (json == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "failed to render the configuration of model '%s'", name);
    imagen_buf_append_str(&reply->body, json);
    free(json);
    reply->json = true;
    return NULL;
}

/* ======================================================================
 * Statistics (spec §1.7)
 * ==================================================================== */

static void
append_duration(imagen_buf *b, const char *key, const imagen_stat_duration *d)
{
    append_key(b, key);
    imagen_buf_append_str(b, "{\"count\":");
    imagen_buf_append_u64(b, d->count);
    imagen_buf_append_str(b, ",\"ns\":");
    imagen_buf_append_u64(b, d->ns);
    imagen_buf_append_char(b, '}');
}

static imagen_error *
statistics(imagen_server *srv, const char *name, int64_t version, imagen__http_reply *reply)
{
    imagen_model_stats *stats = NULL;
    size_t n = 0;
    IMAGEN_RETURN_IF_ERROR(imagen_server_model_statistics(srv, name, version, &stats, &n));
    imagen_buf *b = &reply->body;
    imagen_buf_append_str(b, "{\"model_stats\":[");
    for (size_t i = 0; i < n; i++) {
        const imagen_model_stats *s = &stats[i];
        if (i)
            imagen_buf_append_char(b, ',');
        imagen_buf_append_str(b, "{\"name\":");
        append_str(b, s->name);
        imagen_buf_appendf(b, ",\"version\":\"%" PRId64 "\"", s->version);
        imagen_buf_append_str(b, ",\"last_inference\":");
        imagen_buf_append_u64(b, s->last_inference_ms);
        imagen_buf_append_str(b, ",\"inference_count\":");
        imagen_buf_append_u64(b, s->inference_count);
        imagen_buf_append_str(b, ",\"execution_count\":");
        imagen_buf_append_u64(b, s->execution_count);
        imagen_buf_append_str(b, ",\"inference_stats\":{");
        append_duration(b, "success", &s->success);
        imagen_buf_append_char(b, ',');
        append_duration(b, "fail", &s->fail);
        imagen_buf_append_char(b, ',');
        append_duration(b, "queue", &s->queue);
        imagen_buf_append_char(b, ',');
        append_duration(b, "compute_input", &s->compute_input);
        imagen_buf_append_char(b, ',');
        append_duration(b, "compute_infer", &s->compute_infer);
        imagen_buf_append_char(b, ',');
        append_duration(b, "compute_output", &s->compute_output);
        imagen_buf_append_char(b, ',');
        append_duration(b, "cache_hit", &s->cache_hit);
        imagen_buf_append_char(b, ',');
        append_duration(b, "cache_miss", &s->cache_miss);
        imagen_buf_append_str(b, "},\"response_stats\":{},\"batch_stats\":[");
        for (size_t j = 0; j < s->n_batch_stats; j++) {
            const imagen_batch_stat *bs = &s->batch_stats[j];
            if (j)
                imagen_buf_append_char(b, ',');
            imagen_buf_append_str(b, "{\"batch_size\":");
            imagen_buf_append_u64(b, bs->batch_size);
            imagen_buf_append_char(b, ',');
            append_duration(b, "compute_input", &bs->compute_input);
            imagen_buf_append_char(b, ',');
            append_duration(b, "compute_infer", &bs->compute_infer);
            imagen_buf_append_char(b, ',');
            append_duration(b, "compute_output", &bs->compute_output);
            imagen_buf_append_char(b, '}');
        }
        imagen_buf_append_str(b, "],\"memory_usage\":[]}");
    }
    imagen_buf_append_str(b, "]}");
    imagen_model_stats_free(stats, n);
    reply->json = true;
    return NULL;
}

/* ======================================================================
 * Model repository extension (spec §1.8)
 * ==================================================================== */

static imagen_error *
repository_index(imagen_server *srv, const char *body, size_t len, imagen__http_reply *reply)
{
    json_t *root = NULL;
    IMAGEN_RETURN_IF_ERROR(parse_body(body, len, &root));
    bool ready = false;
    if (root != NULL) {
        const json_t *r = json_object_get(root, "ready");
        if (r != NULL && !json_is_boolean(r)) {
            json_decref(root);
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "Unable to parse 'ready': attempt to access JSON non-boolean as boolean");
        }
        ready = r != NULL && json_is_true(r);
        json_decref(root);
    }
    imagen_repository_entry *entries = NULL;
    size_t n = 0;
    IMAGEN_RETURN_IF_ERROR(imagen_server_repository_index(srv, ready, &entries, &n));
    imagen_buf *b = &reply->body;
    imagen_buf_append_char(b, '[');
    for (size_t i = 0; i < n; i++) {
        const imagen_repository_entry *e = &entries[i];
        if (i)
            imagen_buf_append_char(b, ',');
        imagen_buf_append_str(b, "{\"name\":");
        append_str(b, e->name);
        /* A model that failed before any version existed has a state and
         * a reason but no version; one never loaded has a name only. */
        if (e->version >= 0)
            imagen_buf_appendf(b, ",\"version\":\"%" PRId64 "\"", e->version);
        if (e->version >= 0 || e->state != NULL) {
            imagen_buf_append_str(b, ",\"state\":");
            append_str(b, e->state ? e->state : "UNKNOWN");
            if (e->reason && e->reason[0]) {
                imagen_buf_append_str(b, ",\"reason\":");
                append_str(b, e->reason);
            }
        }
        imagen_buf_append_char(b, '}');
    }
    imagen_buf_append_char(b, ']');
    imagen_repository_index_free(entries, n);
    reply->json = true;
    return NULL;
}

static imagen_error *
repository_load(imagen_server *srv, const char *name, const char *body, size_t len)
{
    json_t *root = NULL;
    IMAGEN_RETURN_IF_ERROR(parse_body(body, len, &root));
    const char *config = NULL;
    imagen_model_file *files = NULL;
    size_t n_files = 0;
    imagen_error *err = NULL;
    const json_t *params = root ? json_object_get(root, "parameters") : NULL;
    if (params != NULL && !json_is_object(params)) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'parameters': expected an object");
        goto done;
    }
    if (params != NULL) {
        files = calloc(json_object_size(params) + 1, sizeof(imagen_model_file));
        if (files == NULL) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
            goto done;
        }
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)params, key, v)
        {
            if (strcmp(key, "config") == 0) {
                if (!json_is_string(v)) {
                    err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                           "Unable to parse 'config': expected a JSON string holding the model "
                                           "configuration");
                    goto done;
                }
                config = json_string_value(v);
            } else if (strncmp(key, "file:", 5) == 0) {
                if (!json_is_string(v)) {
                    err =
                        imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse '%s': expected a base64 string", key);
                    goto done;
                }
                unsigned char *data = NULL;
                size_t size = 0;
                if (!imagen_base64_decode(json_string_value(v), json_string_length(v), &data, &size)) {
                    err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                           "failed to decode base64 content of load parameter '%s'", key);
                    goto done;
                }
                files[n_files].path = key + 5;
                files[n_files].data = data;
                files[n_files].size = size;
                n_files++;
            } else if (!json_is_string(v) && !json_is_integer(v) && !json_is_boolean(v)) {
                err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unexpected type for load parameter '%s'", key);
                goto done;
            }
        }
    }
    if (n_files > 0 && config == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                               "load parameter 'config' must be specified together with 'file:' parameters for "
                               "model '%s'",
                               name);
        goto done;
    }
    err = imagen_server_model_load(srv, name, config, files, n_files);
done:
    for (size_t i = 0; i < n_files; i++)
        free((void *)files[i].data);
    free(files);
    json_decref(root);
    return err;
}

static imagen_error *
repository_unload(imagen_server *srv, const char *name, const char *body, size_t len)
{
    json_t *root = NULL;
    IMAGEN_RETURN_IF_ERROR(parse_body(body, len, &root));
    bool dependents = false;
    const json_t *params = root ? json_object_get(root, "parameters") : NULL;
    if (params != NULL) {
        const json_t *d = json_is_object(params) ? json_object_get(params, "unload_dependents") : NULL;
        if (!json_is_object(params) || (d != NULL && !json_is_boolean(d))) {
            json_decref(root);
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'unload_dependents': expected a boolean");
        }
        dependents = d != NULL && json_is_true(d);
    }
    json_decref(root);
    return imagen_server_model_unload(srv, name, dependents);
}

/* ======================================================================
 * Logging settings (spec §1.15)
 * ==================================================================== */

/* Last values set through this API; any pool thread may write them. */
static atomic_int logging_verbose_level;
static _Atomic(const char *) logging_format = "default";

static imagen_error *
logging(bool post, const char *body, size_t len, imagen__http_reply *reply)
{
    if (post) {
        json_t *root = NULL;
        IMAGEN_RETURN_IF_ERROR(parse_body(body, len, &root));
        const char *key;
        json_t *v;
        imagen_error *err = NULL;
        json_object_foreach(root, key, v)
        {
            if (strcmp(key, "log_file") == 0) {
                err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED,
                                       "log file location can not be updated through network protocol");
            } else if (strcmp(key, "log_info") == 0 || strcmp(key, "log_warning") == 0 ||
                       strcmp(key, "log_error") == 0) {
                if (!json_is_boolean(v)) {
                    err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse '%s': expected a boolean", key);
                } else {
                    imagen_log_level lv = key[4] == 'i'   ? IMAGEN_LOG_INFO
                                          : key[4] == 'w' ? IMAGEN_LOG_WARNING
                                                          : IMAGEN_LOG_ERROR;
                    imagen_log_set_enabled(lv, json_is_true(v));
                }
            } else if (strcmp(key, "log_verbose_level") == 0) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000) {
                    err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                           "Unable to parse 'log_verbose_level': expected a non-negative integer");
                } else {
                    logging_verbose_level = (int)json_integer_value(v);
                    imagen_log_set_verbose(logging_verbose_level);
                }
            } else if (strcmp(key, "log_format") == 0) {
                const char *f = json_is_string(v) ? json_string_value(v) : "";
                if (strcmp(f, "default") == 0) {
                    logging_format = "default";
                    imagen_log_set_format(IMAGEN_LOG_FORMAT_DEFAULT);
                } else if (strcmp(f, "ISO8601") == 0) {
                    logging_format = "ISO8601";
                    imagen_log_set_format(IMAGEN_LOG_FORMAT_ISO8601);
                } else {
                    err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "invalid argument for log_format, got: '%s'", f);
                }
            } else {
                err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unknown logging setting '%s'", key);
            }
            if (err != NULL)
                break;
        }
        json_decref(root);
        if (err != NULL)
            return err;
    }
    int verbose = imagen_log_enabled(IMAGEN_LOG_VERBOSE) ? (logging_verbose_level ? logging_verbose_level : 1) : 0;
    imagen_buf_appendf(&reply->body,
                       "{\"log_file\":\"\",\"log_info\":%s,\"log_warning\":%s,\"log_error\":%s,"
                       "\"log_verbose_level\":%d,\"log_format\":\"%s\"}",
                       imagen_log_enabled(IMAGEN_LOG_INFO) ? "true" : "false",
                       imagen_log_enabled(IMAGEN_LOG_WARNING) ? "true" : "false",
                       imagen_log_enabled(IMAGEN_LOG_ERROR) ? "true" : "false", verbose, logging_format);
    reply->json = true;
    return NULL;
}

/* ======================================================================
 * Shared memory (spec §1.13)
 * ==================================================================== */

/* Reads a register body's unsigned field; a missing optional one is 0. */
static imagen_error *
register_u64(const json_t *root, const char *key, bool required, uint64_t *out)
{
    const json_t *v = json_object_get(root, key);
    *out = 0;
    if (v == NULL && !required)
        return NULL;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "Shared memory register request requires '%s' as a non-negative integer", key);
    *out = (uint64_t)json_integer_value(v);
    return NULL;
}

static imagen_error *
shm_register(imagen_shm *shm, const char *name, const char *body, size_t body_len)
{
    json_t *root = NULL;
    IMAGEN_RETURN_IF_ERROR(parse_body(body, body_len, &root));
    imagen_error *err = NULL;
    const json_t *key = root ? json_object_get(root, "key") : NULL;
    uint64_t offset = 0, byte_size = 0;
    if (!json_is_string(key))
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Shared memory register request requires 'key' as a string");
    if (err == NULL)
        err = register_u64(root, "offset", false, &offset);
    if (err == NULL)
        err = register_u64(root, "byte_size", true, &byte_size);
    if (err == NULL)
        err = imagen_shm_register(shm, name, json_string_value(key), offset, byte_size);
    json_decref(root);
    return err;
}

static void
shm_status(const imagen_shm_region_status *st, size_t n, imagen__http_reply *reply)
{
    imagen_buf *b = &reply->body;
    imagen_buf_append_char(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            imagen_buf_append_char(b, ',');
        imagen_buf_append_char(b, '{');
        append_key(b, "name");
        append_str(b, st[i].name);
        imagen_buf_append_str(b, ",\"key\":");
        append_str(b, st[i].key);
        imagen_buf_append_str(b, ",\"offset\":");
        imagen_buf_append_u64(b, st[i].offset);
        imagen_buf_append_str(b, ",\"byte_size\":");
        imagen_buf_append_u64(b, st[i].byte_size);
        imagen_buf_append_char(b, '}');
    }
    imagen_buf_append_char(b, ']');
    reply->json = true;
}

/* The system and CUDA shm endpoints. Without a registry (client shm
 * disabled) status still answers, with no regions, and the rest is 501.
 * CUDA regions are never supported: status is empty, register is 501. */
static imagen_error *
shared_memory(imagen_shm *shm, const imagen__http_route *route, const char *body, size_t body_len,
              imagen__http_reply *reply)
{
    char *name = NULL;
    if (route->region != NULL && (name = strndup(route->region, route->region_len)) == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    imagen_error *err = NULL;
    if (route->kind == IMAGEN_HTTP_ROUTE_SHM_STATUS) {
        if (shm == NULL || route->cuda_shm) {
            if (name != NULL)
                err = imagen_error_new(IMAGEN_ERR_NOT_FOUND, "Unable to find %s shared memory region: '%s'",
                                       route->cuda_shm ? "cuda" : "system", name);
            else
                shm_status(NULL, 0, reply);
        } else {
            imagen_shm_region_status *st = NULL;
            size_t n = 0;
            err = imagen_shm_status(shm, name, &st, &n);
            if (err == NULL)
                shm_status(st, n, reply);
            imagen_shm_status_free(st, n);
        }
    } else if (shm == NULL) {
        err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED,
                               "Client shared memory is disabled. Start the server with '--allow-client-shm=true' "
                               "to enable.");
    } else if (route->cuda_shm) {
        /* Nothing is ever registered, so unregistering succeeds. */
        if (route->kind == IMAGEN_HTTP_ROUTE_SHM_REGISTER)
            err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "CUDA shared memory is not supported by this server");
    } else if (route->kind == IMAGEN_HTTP_ROUTE_SHM_REGISTER) {
        err = shm_register(shm, name, body, body_len);
    } else {
        err = imagen_shm_unregister(shm, name);
    }
    free(name);
    return err;
}

/* ======================================================================
 * Dispatch
 * ==================================================================== */

void
imagen__http_admin_handle(imagen_server *srv, imagen_shm *shm, const imagen__http_route *route, const char *model,
                          const char *body, size_t body_len, imagen__http_reply *reply)
{
    imagen_error *err = NULL;
    reply->status = 200;
    reply->json = false;
    switch (route->kind) {
    case IMAGEN_HTTP_ROUTE_HEALTH_LIVE:
        health(srv, false, reply);
        return;
    case IMAGEN_HTTP_ROUTE_HEALTH_READY:
        health(srv, true, reply);
        return;
    case IMAGEN_HTTP_ROUTE_SERVER_METADATA:
        server_metadata(srv, shm != NULL, reply);
        return;
    case IMAGEN_HTTP_ROUTE_MODEL_METADATA:
        err = model_metadata(srv, model, route->version, reply);
        break;
    case IMAGEN_HTTP_ROUTE_MODEL_READY:
        if (!imagen_server_model_is_ready(srv, model, route->version))
            err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Model version not ready");
        break;
    case IMAGEN_HTTP_ROUTE_MODEL_CONFIG:
        err = model_config(srv, model, route->version, reply);
        break;
    case IMAGEN_HTTP_ROUTE_MODEL_STATS:
        err = statistics(srv, model, route->version, reply);
        break;
    case IMAGEN_HTTP_ROUTE_REPO_INDEX:
        err = repository_index(srv, body, body_len, reply);
        break;
    case IMAGEN_HTTP_ROUTE_REPO_LOAD:
    case IMAGEN_HTTP_ROUTE_REPO_UNLOAD:
        if (route->repo_len > 0)
            err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "'repository_name' specification is not supported");
        else if (route->kind == IMAGEN_HTTP_ROUTE_REPO_LOAD)
            err = repository_load(srv, model, body, body_len);
        else
            err = repository_unload(srv, model, body, body_len);
        break;
    case IMAGEN_HTTP_ROUTE_LOGGING:
        err = logging(body != NULL, body, body_len, reply);
        break;
    case IMAGEN_HTTP_ROUTE_SHM_STATUS:
    case IMAGEN_HTTP_ROUTE_SHM_REGISTER:
    case IMAGEN_HTTP_ROUTE_SHM_UNREGISTER:
        err = shared_memory(shm, route, body, body_len, reply);
        break;
    case IMAGEN_HTTP_ROUTE_BAD_VERSION:
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                               "failed to get model version from specified version string '%.*s' (details: "
                               "stol), version should be an integral value > 0",
                               (int)route->version_len, route->version_text ? route->version_text : "");
        break;
    default:
        imagen_buf_append_str(&reply->body, "{\"error\":\"Not Found\"}");
        reply->status = 404;
        reply->json = true;
        return;
    }
    if (err != NULL)
        imagen__http_reply_error(reply, err);
}
