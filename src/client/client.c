/*
 * Client library front: URL parsing, the calls that are the same for both
 * transports, asynchronous infers (one detached thread per call, counted so
 * destroy can wait for them) and the result object.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"

/* ---- errors ---------------------------------------------------------------- */

imagen_error_code
imagen__code_from_http(long status)
{
    switch (status) {
    case 404:
        return IMAGEN_ERR_NOT_FOUND;
    case 500:
        return IMAGEN_ERR_INTERNAL;
    case 501:
        return IMAGEN_ERR_UNSUPPORTED;
    case 503:
        return IMAGEN_ERR_UNAVAILABLE;
    default:
        /* 400 stands for five codes (§0); INVALID_ARG is by far the most
         * common, and nothing in the response tells them apart. */
        return status >= 500 ? IMAGEN_ERR_INTERNAL : IMAGEN_ERR_INVALID_ARG;
    }
}

imagen_error_code
imagen__code_from_grpc(int status)
{
#define IMAGEN_FROM_GRPC_(code, name, http, grpc) \
    if (status == (grpc))                         \
        return IMAGEN_ERR_##code;
    IMAGEN_ERROR_CODES(IMAGEN_FROM_GRPC_)
#undef IMAGEN_FROM_GRPC_
    /* DEADLINE_EXCEEDED (4) and RESOURCE_EXHAUSTED (8) come from gRPC itself
     * rather than the server's core: both mean "try again later". */
    if (status == 4 || status == 8)
        return IMAGEN_ERR_UNAVAILABLE;
    return IMAGEN_ERR_UNKNOWN;
}

bool
imagen_client_error_is_connect(const imagen_error *err)
{
    return err != NULL && imagen_error_code_of(err) == IMAGEN_ERR_UNAVAILABLE &&
           strncmp(imagen_error_message(err), IMAGEN__CONNECT_PREFIX, strlen(IMAGEN__CONNECT_PREFIX)) == 0;
}

/* ---- lifetime -------------------------------------------------------------- */

imagen_error *
imagen_client_create(const char *url, imagen_client **out)
{
    if (url == NULL || url[0] == '\0')
        url = IMAGEN_CLIENT_DEFAULT_URL;
    const imagen__client_transport *t = &imagen__client_grpc;
    const char *rest = url;
    if (strncmp(url, "http://", 7) == 0) {
        t = &imagen__client_http;
        rest = url + 7;
    } else if (strncmp(url, "grpc://", 7) == 0) {
        rest = url + 7;
    } else if (strstr(url, "://") != NULL) {
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unsupported URL scheme in '%s' (use http:// or grpc://)", url);
    }
    size_t len = strcspn(rest, "/");
    if (len == 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "URL '%s' has no host", url);

    imagen_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    c->t = t;
    c->url = strdup(url);
    c->target = strndup(rest, len);
    pthread_mutex_init(&c->async_mu, NULL);
    pthread_cond_init(&c->async_done, NULL);
    imagen_error *err = NULL;
    if (c->url == NULL || c->target == NULL)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    else
        err = t->open(c);
    if (err != NULL) {
        pthread_cond_destroy(&c->async_done);
        pthread_mutex_destroy(&c->async_mu);
        free(c->url);
        free(c->target);
        free(c);
        return err;
    }
    *out = c;
    return NULL;
}

void
imagen_client_destroy(imagen_client *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->async_mu);
    while (c->async_pending > 0)
        pthread_cond_wait(&c->async_done, &c->async_mu);
    pthread_mutex_unlock(&c->async_mu);
    c->t->close(c);
    pthread_cond_destroy(&c->async_done);
    pthread_mutex_destroy(&c->async_mu);
    free(c->url);
    free(c->target);
    free(c);
}

void
imagen_client_set_timeout_ms(imagen_client *c, int64_t timeout_ms)
{
    atomic_store(&c->timeout_ms, timeout_ms < 0 ? 0 : timeout_ms);
}

const char *
imagen_client_protocol(const imagen_client *c)
{
    return c->t->name;
}

/* ---- health and documents -------------------------------------------------- */

static imagen_error *
need_model(const char *model)
{
    if (model == NULL || model[0] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "a model name is required");
    return NULL;
}

imagen_error *
imagen_client_server_live(imagen_client *c, bool *live)
{
    return c->t->health(c, IMAGEN__HEALTH_LIVE, NULL, NULL, live);
}

imagen_error *
imagen_client_server_ready(imagen_client *c, bool *ready)
{
    return c->t->health(c, IMAGEN__HEALTH_READY, NULL, NULL, ready);
}

imagen_error *
imagen_client_model_ready(imagen_client *c, const char *model, const char *version, bool *ready)
{
    IMAGEN_RETURN_IF_ERROR(need_model(model));
    return c->t->health(c, IMAGEN__HEALTH_MODEL, model, version, ready);
}

imagen_error *
imagen_client_server_metadata(imagen_client *c, char **json)
{
    return c->t->get_json(c, IMAGEN__DOC_SERVER_METADATA, NULL, NULL, json);
}

imagen_error *
imagen_client_model_metadata(imagen_client *c, const char *model, const char *version, char **json)
{
    IMAGEN_RETURN_IF_ERROR(need_model(model));
    return c->t->get_json(c, IMAGEN__DOC_MODEL_METADATA, model, version, json);
}

imagen_error *
imagen_client_model_config(imagen_client *c, const char *model, const char *version, char **json)
{
    IMAGEN_RETURN_IF_ERROR(need_model(model));
    return c->t->get_json(c, IMAGEN__DOC_MODEL_CONFIG, model, version, json);
}

imagen_error *
imagen_client_model_statistics(imagen_client *c, const char *model, const char *version, char **json)
{
    return c->t->get_json(c, IMAGEN__DOC_STATISTICS, model, version, json);
}

imagen_error *
imagen_client_repository_index(imagen_client *c, bool ready_only, char **json)
{
    return c->t->get_json(c, ready_only ? IMAGEN__DOC_REPOSITORY_INDEX_READY : IMAGEN__DOC_REPOSITORY_INDEX, NULL, NULL,
                          json);
}

imagen_error *
imagen_client_load_model(imagen_client *c, const char *model)
{
    IMAGEN_RETURN_IF_ERROR(need_model(model));
    return c->t->repository(c, true, model);
}

imagen_error *
imagen_client_unload_model(imagen_client *c, const char *model)
{
    IMAGEN_RETURN_IF_ERROR(need_model(model));
    return c->t->repository(c, false, model);
}

/* ---- inference ------------------------------------------------------------- */

void
imagen__encoded_free(imagen__encoded *enc)
{
    if (enc == NULL)
        return;
    free(enc->path);
    free(enc->body);
    free(enc->pieces);
    free(enc);
}

bool
imagen__encoded_detach(imagen__encoded *enc)
{
    if (enc->pieces == NULL)
        return true;
    char *body = malloc(enc->wire_len ? enc->wire_len : 1);
    if (body == NULL)
        return false;
    size_t off = 0;
    for (size_t i = 0; i < enc->n_pieces; i++) {
        const imagen__piece *pc = &enc->pieces[i];
        if (pc->len > 0)
            memcpy(body + off, pc->data != NULL ? (const char *)pc->data : enc->body + pc->offset, pc->len);
        off += pc->len;
    }
    free(enc->body);
    free(enc->pieces);
    enc->body = body;
    enc->body_len = off;
    enc->pieces = NULL;
    enc->n_pieces = 0;
    return true;
}

void
imagen__inputs_done_fire(imagen__inputs_done *d)
{
    if (d == NULL || d->fn == NULL)
        return;
    imagen_inputs_done_cb fn = d->fn;
    d->fn = NULL;
    fn(d->arg);
}

static imagen_error *
check_request(const imagen_infer_request *req)
{
    IMAGEN_RETURN_IF_ERROR(need_model(req->model));
    if (req->output_shm != NULL && req->n_outputs == 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "outputs in shared memory must be requested by name");
    for (size_t i = 0; i < req->n_inputs; i++) {
        const imagen_tensor *t = &req->inputs[i];
        bool in_shm = req->input_shm != NULL && req->input_shm[i].region != NULL;
        if (t->name == NULL || t->rank > IMAGEN_MAX_RANK || (!in_shm && t->byte_size > 0 && t->data == NULL) ||
            (imagen_datatype_size(t->datatype) == 0 && t->datatype != IMAGEN_TYPE_BYTES))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input %zu: needs a name, a datatype, rank <= %d and data",
                                    i, IMAGEN_MAX_RANK);
    }
    return NULL;
}

imagen_error *
imagen_client_infer_with_inputs_done(imagen_client *c, const imagen_infer_request *req,
                                     imagen_inputs_done_cb inputs_done, void *user_data, imagen_infer_result **result)
{
    imagen__inputs_done done = {inputs_done, user_data};
    imagen__encoded *enc = NULL;
    imagen_error *err = check_request(req);
    if (err == NULL)
        err = c->t->encode(c, req, &enc);
    if (err == NULL) {
        /* A request that borrows nothing holds copies of the inputs
         * already; one that borrows tells once its pieces are sent. */
        if (enc->pieces == NULL)
            imagen__inputs_done_fire(&done);
        enc->inputs_done = &done;
        err = c->t->send(c, enc, false, result);
    }
    imagen__encoded_free(enc);
    /* Every path tells, once (fire does nothing the second time). */
    imagen__inputs_done_fire(&done);
    return err;
}

imagen_error *
imagen_client_infer(imagen_client *c, const imagen_infer_request *req, imagen_infer_result **result)
{
    return imagen_client_infer_with_inputs_done(c, req, NULL, NULL, result);
}

typedef struct async_call {
    imagen_client *client;
    imagen__encoded *enc;
    imagen_infer_cb cb;
    void *user_data;
} async_call;

static void *
async_main(void *arg)
{
    async_call *a = arg;
    imagen_client *c = a->client;
    imagen_infer_result *result = NULL;
    imagen_error *err = c->t->send(c, a->enc, true, &result);
    imagen__encoded_free(a->enc);
    a->cb(err == NULL ? result : NULL, err, a->user_data);
    free(a);
    /* Last touch of the client: destroy() may free it right after. */
    pthread_mutex_lock(&c->async_mu);
    if (--c->async_pending == 0)
        pthread_cond_broadcast(&c->async_done);
    pthread_mutex_unlock(&c->async_mu);
    return NULL;
}

imagen_error *
imagen_client_infer_async(imagen_client *c, const imagen_infer_request *req, imagen_infer_cb cb, void *user_data)
{
    if (cb == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "infer_async needs a callback");
    IMAGEN_RETURN_IF_ERROR(check_request(req));
    async_call *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    imagen_error *err = c->t->encode(c, req, &a->enc);
    /* The inputs may be freed once this returns: own every byte. */
    if (err == NULL && !imagen__encoded_detach(a->enc))
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %zu-byte request", a->enc->wire_len);
    if (err != NULL) {
        imagen__encoded_free(a->enc);
        free(a);
        return err;
    }
    a->client = c;
    a->cb = cb;
    a->user_data = user_data;

    pthread_mutex_lock(&c->async_mu);
    c->async_pending++;
    pthread_mutex_unlock(&c->async_mu);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t tid;
    int rc = pthread_create(&tid, &attr, async_main, a);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_lock(&c->async_mu);
        if (--c->async_pending == 0)
            pthread_cond_broadcast(&c->async_done);
        pthread_mutex_unlock(&c->async_mu);
        imagen__encoded_free(a->enc);
        free(a);
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "cannot start a thread for the request: %s", strerror(rc));
    }
    return NULL;
}

/* ---- results --------------------------------------------------------------- */

imagen_infer_result *
imagen__result_new(size_t n)
{
    imagen_infer_result *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    size_t m = n == 0 ? 1 : n;
    r->tensors = calloc(m, sizeof(*r->tensors));
    r->names = calloc(m, sizeof(*r->names));
    r->shapes = calloc(m * IMAGEN_MAX_RANK, sizeof(*r->shapes));
    r->n_tensors = n;
    if (r->tensors == NULL || r->names == NULL || r->shapes == NULL) {
        imagen_infer_result_free(r);
        return NULL;
    }
    return r;
}

bool
imagen__result_set(imagen_infer_result *r, size_t i, const char *name, size_t name_len, imagen_datatype dt,
                   const int64_t *shape, size_t rank, const void *data, size_t byte_size)
{
    if (rank > IMAGEN_MAX_RANK)
        return false;
    r->names[i] = strndup(name, name_len);
    if (r->names[i] == NULL)
        return false;
    int64_t *s = r->shapes + i * IMAGEN_MAX_RANK;
    if (rank > 0)
        memcpy(s, shape, rank * sizeof(*s));
    r->tensors[i] = (imagen_tensor){r->names[i], dt, s, rank, data, byte_size};
    return true;
}

size_t
imagen_infer_result_output_count(const imagen_infer_result *r)
{
    return r->n_tensors;
}

const imagen_tensor *
imagen_infer_result_output(const imagen_infer_result *r, size_t index)
{
    return index < r->n_tensors ? &r->tensors[index] : NULL;
}

const imagen_tensor *
imagen_infer_result_output_by_name(const imagen_infer_result *r, const char *name)
{
    for (size_t i = 0; i < r->n_tensors; i++)
        if (strcmp(r->tensors[i].name, name) == 0)
            return &r->tensors[i];
    return NULL;
}

const char *
imagen_infer_result_model_name(const imagen_infer_result *r)
{
    return r->model_name ? r->model_name : "";
}

const char *
imagen_infer_result_model_version(const imagen_infer_result *r)
{
    return r->model_version ? r->model_version : "";
}

const char *
imagen_infer_result_id(const imagen_infer_result *r)
{
    return r->id ? r->id : "";
}

void
imagen_infer_result_free(imagen_infer_result *r)
{
    if (r == NULL)
        return;
    if (r->names != NULL)
        for (size_t i = 0; i < r->n_tensors; i++)
            free(r->names[i]);
    if (r->owner_free != NULL)
        r->owner_free(r->owner);
    free(r->names);
    free(r->shapes);
    free(r->tensors);
    free(r->model_name);
    free(r->model_version);
    free(r->id);
    free(r);
}
