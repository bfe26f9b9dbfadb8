/*
 * HTTP/REST transport of the client library (spec §1) on libcurl. Sync calls
 * share one easy handle — libcurl keeps its connection alive between
 * transfers — under a mutex, because an easy handle is single-threaded.
 * Async infers use an easy handle of their own for one transfer.
 *
 * Infer always uses the binary tensor extension (§1.10) both ways: inputs
 * as blobs after the JSON header, outputs requested with binary_data. JSON
 * "data" in a response (a server that ignores the request) is still read.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"
#include "common/buf.h"

typedef struct http_state {
    pthread_mutex_t mu; /* guards `easy`: one transfer at a time */
    CURL *easy;
} http_state;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

/* curl_global_init() is not thread-safe and must run once per process. */
static void
curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static imagen_error *
http_open(imagen_client *c)
{
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "libcurl init failed: %s", curl_easy_strerror(curl_init_rc));
    http_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    s->easy = curl_easy_init();
    if (s->easy == NULL) {
        free(s);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "curl_easy_init failed");
    }
    pthread_mutex_init(&s->mu, NULL);
    c->impl = s;
    return NULL;
}

static void
http_close(imagen_client *c)
{
    http_state *s = c->impl;
    curl_easy_cleanup(s->easy);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- one transfer ---------------------------------------------------------- */

typedef struct http_response {
    long status;
    imagen_buf body;
    size_t header_len; /* Inference-Header-Content-Length; SIZE_MAX when absent */
} http_response;

static size_t
on_body(char *data, size_t size, size_t n, void *arg)
{
    imagen_buf *b = arg;
    imagen_buf_append(b, data, size * n);
    return imagen_buf_failed(b) ? 0 : size * n;
}

static size_t
on_header(char *data, size_t size, size_t n, void *arg)
{
    static const char name[] = "inference-header-content-length:";
    http_response *r = arg;
    size_t len = size * n;
    if (len > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0) {
        char tmp[32];
        size_t vlen = len - (sizeof(name) - 1);
        if (vlen >= sizeof(tmp))
            vlen = sizeof(tmp) - 1;
        memcpy(tmp, data + sizeof(name) - 1, vlen);
        tmp[vlen] = '\0';
        char *end;
        unsigned long long v = strtoull(tmp, &end, 10);
        if (end != tmp)
            r->header_len = (size_t)v;
    }
    return len;
}

/* Runs one request on `easy`. body NULL = GET. header_len SIZE_MAX = send no
 * Inference-Header-Content-Length. On success r->body holds the response,
 * whatever its status; the caller frees it. */
static imagen_error *
http_transfer(imagen_client *c, CURL *easy, const char *path, const char *body, size_t body_len, size_t header_len,
              http_response *r)
{
    char url[1024];
    if ((size_t)snprintf(url, sizeof(url), "http://%s%s", c->target, path) >= sizeof(url))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "URL too long for path '%.64s...'", path);
    imagen_buf_init(&r->body);
    r->status = 0;
    r->header_len = SIZE_MAX;

    struct curl_slist *headers = NULL;
    /* Without this curl waits up to a second for "100 Continue" before
     * sending a large body; the server never asks for that round trip. */
    headers = curl_slist_append(headers, "Expect:");
    char hbuf[80];
    if (body != NULL)
        headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
    if (header_len != SIZE_MAX) {
        snprintf(hbuf, sizeof(hbuf), "Inference-Header-Content-Length: %zu", header_len);
        headers = curl_slist_append(headers, hbuf);
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_reset(easy);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    int64_t timeout = atomic_load(&c->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)timeout);
    if (body != NULL) {
        curl_easy_setopt(easy, CURLOPT_POST, 1L);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    CURLcode rc = curl_easy_perform(easy);
    curl_slist_free_all(headers);
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    imagen_error *err = NULL;
    switch (rc) {
    case CURLE_OK:
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
        if (imagen_buf_failed(&r->body))
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory reading the response");
        break;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, IMAGEN__CONNECT_PREFIX "%s: %s", c->url, why);
        break;
    case CURLE_OPERATION_TIMEDOUT:
        err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "request to %s timed out after %lld ms", c->url,
                               (long long)timeout);
        break;
    default:
        err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "request to %s failed: %s", c->url, why);
        break;
    }
    if (err != NULL)
        imagen_buf_free(&r->body);
    return err;
}

/* Runs a request on the shared handle. */
static imagen_error *
http_call(imagen_client *c, const char *path, const char *body, size_t body_len, http_response *r)
{
    http_state *s = c->impl;
    pthread_mutex_lock(&s->mu);
    imagen_error *err = http_transfer(c, s->easy, path, body, body_len, SIZE_MAX, r);
    pthread_mutex_unlock(&s->mu);
    return err;
}

/* The server's error for a non-200 response: {"error": "..."} (§1.1). */
static imagen_error *
status_error(const http_response *r)
{
    imagen_error_code code = imagen__code_from_http(r->status);
    json_t *doc = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    const char *msg = json_string_value(json_object_get(doc, "error"));
    imagen_error *err =
        msg != NULL ? imagen_error_new(code, "%s", msg)
                    : imagen_error_new(code, "HTTP status %ld%s%.*s", r->status, r->body.len ? ": " : "",
                                       (int)(r->body.len > 200 ? 200 : r->body.len), r->body.data ? r->body.data : "");
    json_decref(doc);
    return err;
}

/* "/v2/models/<m>[/versions/<v>]" with the name percent-encoded. */
static imagen_error *
model_path(const char *model, const char *version, const char *suffix, char *out, size_t cap)
{
    char *m = curl_easy_escape(NULL, model, 0);
    if (m == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    int n;
    if (version != NULL && version[0] != '\0')
        n = snprintf(out, cap, "/v2/models/%s/versions/%s%s", m, version, suffix);
    else
        n = snprintf(out, cap, "/v2/models/%s%s", m, suffix);
    curl_free(m);
    if (n < 0 || (size_t)n >= cap)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "model name too long");
    return NULL;
}

/* ---- admin calls ----------------------------------------------------------- */

static imagen_error *
http_health(imagen_client *c, imagen__health what, const char *model, const char *version, bool *ok)
{
    char path[600];
    if (what == IMAGEN__HEALTH_MODEL)
        IMAGEN_RETURN_IF_ERROR(model_path(model, version, "/ready", path, sizeof(path)));
    else
        snprintf(path, sizeof(path), "%s", what == IMAGEN__HEALTH_LIVE ? "/v2/health/live" : "/v2/health/ready");
    http_response r;
    IMAGEN_RETURN_IF_ERROR(http_call(c, path, NULL, 0, &r));
    imagen_error *err = NULL;
    if (r.status == 200 || r.status == 400)
        *ok = r.status == 200; /* §1.2: "not live/ready" is a 400, not an error */
    else
        err = status_error(&r);
    imagen_buf_free(&r.body);
    return err;
}

static imagen_error *
http_get_json(imagen_client *c, imagen__doc doc, const char *model, const char *version, char **json)
{
    char path[600];
    const char *body = NULL;
    switch (doc) {
    case IMAGEN__DOC_SERVER_METADATA:
        snprintf(path, sizeof(path), "/v2");
        break;
    case IMAGEN__DOC_MODEL_METADATA:
        IMAGEN_RETURN_IF_ERROR(model_path(model, version, "", path, sizeof(path)));
        break;
    case IMAGEN__DOC_MODEL_CONFIG:
        IMAGEN_RETURN_IF_ERROR(model_path(model, version, "/config", path, sizeof(path)));
        break;
    case IMAGEN__DOC_STATISTICS:
        if (model == NULL || model[0] == '\0')
            snprintf(path, sizeof(path), "/v2/models/stats");
        else
            IMAGEN_RETURN_IF_ERROR(model_path(model, version, "/stats", path, sizeof(path)));
        break;
    case IMAGEN__DOC_REPOSITORY_INDEX:
    case IMAGEN__DOC_REPOSITORY_INDEX_READY:
        snprintf(path, sizeof(path), "/v2/repository/index");
        body = doc == IMAGEN__DOC_REPOSITORY_INDEX_READY ? "{\"ready\":true}" : "{}";
        break;
    }
    http_response r;
    IMAGEN_RETURN_IF_ERROR(http_call(c, path, body, body ? strlen(body) : 0, &r));
    imagen_error *err = NULL;
    if (r.status != 200) {
        err = status_error(&r);
        imagen_buf_free(&r.body);
        return err;
    }
    size_t len;
    char *text = imagen_buf_detach(&r.body, &len);
    if (text == NULL)
        text = strdup("");
    if (text == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    *json = text;
    return NULL;
}

static imagen_error *
http_repository(imagen_client *c, bool load, const char *model)
{
    char *m = curl_easy_escape(NULL, model, 0);
    if (m == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    char path[600];
    int n = snprintf(path, sizeof(path), "/v2/repository/models/%s/%s", m, load ? "load" : "unload");
    curl_free(m);
    if (n < 0 || (size_t)n >= sizeof(path))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "model name too long");
    http_response r;
    IMAGEN_RETURN_IF_ERROR(http_call(c, path, "", 0, &r));
    imagen_error *err = r.status == 200 ? NULL : status_error(&r);
    imagen_buf_free(&r.body);
    return err;
}

/* ---- infer ----------------------------------------------------------------- */

/* The §1.13 tensor parameters of a tensor in shared memory. */
static json_t *
shm_params(const imagen_shm_ref *ref)
{
    return json_pack("{s:s, s:I, s:I}", "shared_memory_region", ref->region, "shared_memory_offset",
                     (json_int_t)ref->offset, "shared_memory_byte_size", (json_int_t)ref->byte_size);
}

static imagen_error *
http_encode(imagen_client *c, const imagen_infer_request *req, imagen__encoded **out)
{
    imagen__encoded *enc = calloc(1, sizeof(*enc));
    if (enc == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    char path[600];
    imagen_error *err = model_path(req->model, req->version, "/infer", path, sizeof(path));
    if (err != NULL) {
        free(enc);
        return err;
    }
    enc->path = strdup(path);

    json_t *doc = json_object();
    if (req->id != NULL)
        json_object_set_new(doc, "id", json_string(req->id));
    json_t *inputs = json_array();
    size_t blobs = 0;
    for (size_t i = 0; i < req->n_inputs; i++) {
        const imagen_tensor *t = &req->inputs[i];
        json_t *shape = json_array();
        for (size_t d = 0; d < t->rank; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        const imagen_shm_ref *ref = req->input_shm ? &req->input_shm[i] : NULL;
        json_t *params =
            ref && ref->region ? shm_params(ref) : json_pack("{s:I}", "binary_data_size", (json_int_t)t->byte_size);
        json_array_append_new(inputs, json_pack("{s:s, s:o, s:s, s:o}", "name", t->name, "shape", shape, "datatype",
                                                imagen_datatype_name(t->datatype), "parameters", params));
        if (ref == NULL || ref->region == NULL)
            blobs += t->byte_size;
    }
    json_object_set_new(doc, "inputs", inputs);
    if (req->n_outputs > 0) {
        json_t *outputs = json_array();
        for (size_t i = 0; i < req->n_outputs; i++) {
            const imagen_shm_ref *ref = req->output_shm ? &req->output_shm[i] : NULL;
            json_t *params = ref && ref->region ? shm_params(ref) : json_pack("{s:b}", "binary_data", 1);
            enc->shm_outputs |= ref && ref->region;
            json_array_append_new(outputs, json_pack("{s:s, s:o}", "name", req->outputs[i], "parameters", params));
        }
        json_object_set_new(doc, "outputs", outputs);
    } else {
        json_object_set_new(doc, "parameters", json_pack("{s:b}", "binary_data_output", 1));
    }
    char *header = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (header == NULL || enc->path == NULL) {
        free(header);
        imagen__encoded_free(enc);
        return imagen_error_new(IMAGEN_ERR_INTERNAL,
                                "cannot encode the request (out of memory or bad UTF-8 in a name)");
    }
    enc->header_len = strlen(header);
    enc->body_len = enc->header_len + blobs;
    enc->body = malloc(enc->body_len + 1);
    if (enc->body == NULL) {
        free(header);
        imagen__encoded_free(enc);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %zu-byte request", enc->body_len);
    }
    memcpy(enc->body, header, enc->header_len);
    free(header);
    size_t off = enc->header_len;
    for (size_t i = 0; i < req->n_inputs; i++) {
        if (req->input_shm != NULL && req->input_shm[i].region != NULL)
            continue;
        if (req->inputs[i].byte_size > 0)
            memcpy(enc->body + off, req->inputs[i].data, req->inputs[i].byte_size);
        off += req->inputs[i].byte_size;
    }
    *out = enc;
    return NULL;
}

/* What keeps an HTTP result's bytes alive: the response body (binary
 * outputs point into it) and the buffers of outputs that came as JSON. */
typedef struct http_owner {
    char *body;
    char **extra;
    size_t n_extra;
} http_owner;

static void
http_owner_free(void *arg)
{
    http_owner *o = arg;
    if (o == NULL)
        return;
    for (size_t i = 0; i < o->n_extra; i++)
        free(o->extra[i]);
    free(o->extra);
    free(o->body);
    free(o);
}

/* Converts a JSON "data" array (flat or nested) into binary tensor bytes. */
static bool
flatten_json(json_t *v, imagen_datatype dt, imagen_buf *out)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (!flatten_json(e, dt, out)) return false;
        return true;
    }
    union {
        uint8_t u8;
        uint16_t u16;
        uint32_t u32;
        uint64_t u64;
        float f32;
        double f64;
    } x;
    size_t size = imagen_datatype_size(dt);
    switch (dt) {
    case IMAGEN_TYPE_BOOL:
        x.u8 = json_is_true(v);
        break;
    case IMAGEN_TYPE_UINT8:
    case IMAGEN_TYPE_INT8:
        x.u8 = (uint8_t)json_integer_value(v);
        break;
    case IMAGEN_TYPE_UINT16:
    case IMAGEN_TYPE_INT16:
        x.u16 = (uint16_t)json_integer_value(v);
        break;
    case IMAGEN_TYPE_UINT32:
    case IMAGEN_TYPE_INT32:
        x.u32 = (uint32_t)json_integer_value(v);
        break;
    case IMAGEN_TYPE_UINT64:
    case IMAGEN_TYPE_INT64:
        x.u64 = (uint64_t)json_integer_value(v);
        break;
    case IMAGEN_TYPE_FP32:
        x.f32 = (float)json_number_value(v);
        break;
    case IMAGEN_TYPE_FP64:
        x.f64 = json_number_value(v);
        break;
    case IMAGEN_TYPE_BYTES: {
        if (!json_is_string(v))
            return false;
        uint32_t len = (uint32_t)json_string_length(v);
        imagen_buf_append(out, &len, 4);
        imagen_buf_append(out, json_string_value(v), len);
        return true;
    }
    default:
        return false;
    }
    imagen_buf_append(out, &x, size);
    return true;
}

static const char *
str_or_empty(const json_t *v)
{
    const char *s = json_string_value(v);
    return s != NULL ? s : "";
}

static imagen_error *
parse_infer_response(imagen_client *c, http_response *r, imagen_infer_result **out)
{
    size_t len = r->body.len;
    size_t hlen = r->header_len == SIZE_MAX ? len : r->header_len;
    if (hlen > len)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "response header length %zu exceeds the body (%zu bytes)", hlen,
                                len);
    json_error_t jerr;
    json_t *doc = json_loadb(r->body.data ? r->body.data : "", hlen, 0, &jerr);
    json_t *outputs = json_object_get(doc, "outputs");
    if (doc == NULL || !json_is_array(outputs)) {
        json_decref(doc);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "malformed infer response from %s: %s", c->url,
                                doc == NULL ? jerr.text : "no outputs array");
    }
    http_owner *owner = calloc(1, sizeof(*owner));
    size_t n = json_array_size(outputs);
    imagen_infer_result *res = owner ? imagen__result_new(n) : NULL;
    imagen_error *err = NULL;
    if (res == NULL || (owner->extra = calloc(n + 1, sizeof(char *))) == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        goto fail;
    }
    owner->body = imagen_buf_detach(&r->body, &len);
    res->owner = owner;
    res->owner_free = http_owner_free;
    res->model_name = strdup(str_or_empty(json_object_get(doc, "model_name")));
    res->model_version = strdup(str_or_empty(json_object_get(doc, "model_version")));
    res->id = strdup(str_or_empty(json_object_get(doc, "id")));

    size_t blob = hlen;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(outputs, i);
        const char *name = json_string_value(json_object_get(o, "name"));
        const char *dts = json_string_value(json_object_get(o, "datatype"));
        json_t *shape = json_object_get(o, "shape");
        imagen_datatype dt = dts ? imagen_datatype_from_name(dts, strlen(dts)) : IMAGEN_TYPE_INVALID;
        if (name == NULL || dt == IMAGEN_TYPE_INVALID || !json_is_array(shape) ||
            json_array_size(shape) > IMAGEN_MAX_RANK) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "malformed output %zu in the infer response", i);
            goto fail;
        }
        int64_t dims[IMAGEN_MAX_RANK];
        size_t rank = json_array_size(shape);
        for (size_t d = 0; d < rank; d++)
            dims[d] = json_integer_value(json_array_get(shape, d));
        json_t *size = json_object_get(json_object_get(o, "parameters"), "binary_data_size");
        const void *data;
        size_t nbytes;
        if (json_is_integer(size)) {
            nbytes = (size_t)json_integer_value(size);
            if (json_integer_value(size) < 0 || nbytes > len - blob) {
                err =
                    imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s': binary_data_size past the response end", name);
                goto fail;
            }
            data = owner->body + blob;
            blob += nbytes;
        } else if (json_object_get(o, "data") == NULL) {
            /* An output written into shared memory: no bytes here (§1.13). */
            data = NULL;
            nbytes = 0;
        } else {
            imagen_buf b = IMAGEN_BUF_INIT;
            if (!flatten_json(json_object_get(o, "data"), dt, &b) || imagen_buf_failed(&b)) {
                imagen_buf_free(&b);
                err = imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s': cannot read its JSON data", name);
                goto fail;
            }
            data = owner->extra[owner->n_extra++] = imagen_buf_detach(&b, &nbytes);
        }
        if (!imagen__result_set(res, i, name, strlen(name), dt, dims, rank, data, nbytes)) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
            goto fail;
        }
    }
    json_decref(doc);
    *out = res;
    return NULL;
fail:
    json_decref(doc);
    if (res != NULL && res->owner == NULL)
        http_owner_free(owner);
    else if (res == NULL)
        free(owner);
    imagen_infer_result_free(res);
    return err;
}

static imagen_error *
http_send(imagen_client *c, const imagen__encoded *enc, bool own_connection, imagen_infer_result **out)
{
    http_response r;
    imagen_error *err;
    if (own_connection) {
        CURL *easy = curl_easy_init();
        if (easy == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "curl_easy_init failed");
        err = http_transfer(c, easy, enc->path, enc->body, enc->body_len, enc->header_len, &r);
        curl_easy_cleanup(easy);
    } else {
        http_state *s = c->impl;
        pthread_mutex_lock(&s->mu);
        err = http_transfer(c, s->easy, enc->path, enc->body, enc->body_len, enc->header_len, &r);
        pthread_mutex_unlock(&s->mu);
    }
    if (err != NULL)
        return err;
    err = r.status == 200 ? parse_infer_response(c, &r, out) : status_error(&r);
    imagen_buf_free(&r.body);
    return err;
}

/* ---- system shared memory ------------------------------------------------- */

static imagen_error *
http_shm(imagen_client *c, imagen__shm_op op, const char *name, const char *key, size_t offset, size_t byte_size,
         char **json)
{
    char *n = curl_easy_escape(NULL, name, 0);
    if (n == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    static const char *const verbs[] = {"register", "unregister", "status"};
    char path[600];
    int len = name[0] ? snprintf(path, sizeof(path), "/v2/systemsharedmemory/region/%s/%s", n, verbs[op])
                      : snprintf(path, sizeof(path), "/v2/systemsharedmemory/%s", verbs[op]);
    curl_free(n);
    if (len < 0 || (size_t)len >= sizeof(path))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "region name too long");
    char *body = NULL;
    if (op == IMAGEN__SHM_REGISTER) {
        json_t *doc =
            json_pack("{s:s, s:I, s:I}", "key", key, "offset", (json_int_t)offset, "byte_size", (json_int_t)byte_size);
        body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        if (body == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot encode the register request");
    }
    http_response r;
    imagen_error *err = http_call(c, path,
                                  op == IMAGEN__SHM_STATUS ? NULL
                                  : body                   ? body
                                                           : "",
                                  body ? strlen(body) : 0, &r);
    free(body);
    if (err != NULL)
        return err;
    if (r.status != 200) {
        err = status_error(&r);
    } else if (json != NULL) {
        size_t n_bytes;
        char *text = imagen_buf_detach(&r.body, &n_bytes);
        *json = text ? text : strdup("[]");
        if (*json == NULL)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    imagen_buf_free(&r.body);
    return err;
}

const imagen__client_transport imagen__client_http = {
    "http", http_open, http_close, http_health, http_get_json, http_repository, http_encode, http_send, http_shm,
};
