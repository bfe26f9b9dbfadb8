/*
 * The KServe v2 HTTP server on libmicrohttpd: daemon set-up, request body
 * collection (with the --http-max-input-size limit and request
 * decompression), routing, and the suspend/resume dance of inference.
 * libmicrohttpd's pool threads run every handler; an inference request is
 * submitted with imagen_server_infer_async() and its connection suspended,
 * and the completion callback (an instance thread) only stores the response
 * and resumes the connection, so encoding and socket I/O stay on the pool
 * threads. Nothing here ever blocks a pool thread on a model: load and
 * unload run on a short-lived helper thread in the same way.
 */
#include "http/http_internal.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/copy_stats.h"
#include "common/log.h"
#include "common/time.h"

/* Per-connection pool for the read buffer and headers. libmicrohttpd clears
 * the used part of it for every request on a keep-alive connection, so a
 * large pool costs CPU on every small request (a 256 KiB pool spent a quarter
 * of the server's CPU in memset); bodies go to our own buffer anyway. */
#define HTTP_CONNECTION_MEMORY_BYTES (32u << 10)
/* A connection with no traffic for this long is closed, so clients that
 * open connections and go quiet cannot exhaust the descriptors. Suspended
 * connections (a request in the core) are not subject to it. */
#define HTTP_IDLE_TIMEOUT_SECS 300
#define HTTP_DRAIN_POLL_US 10000 /* destroy: poll interval while requests finish */
#define HTTP_DRAIN_MAX_MS 60000  /* destroy: longest wait for in-flight requests */
#define HTTP_DEFAULT_THREAD_COUNT 8
#define HTTP_BODY_PREALLOC_MAX_BYTES (4u << 20) /* trust Content-Length only this far before data arrives */

struct imagen_http {
    imagen_server *srv; /* borrowed */
    imagen_shm *shm;    /* borrowed; NULL = client shared memory disabled */
    struct MHD_Daemon *daemon;
    imagen__http_watch *watch;
    size_t max_input; /* bytes */
    int port;
    atomic_bool quiesced;   /* set by quiesce: new connections are refused */
    atomic_size_t inflight; /* infer/admin requests whose reply is not yet sent
                               (counted at suspend, uncounted when MHD reports
                               the request completed) */
};

typedef enum {
    PHASE_RECEIVING = 0, /* collecting the body */
    PHASE_WAITING = 1,   /* suspended; a completion will resume */
    PHASE_READY = 2      /* completion stored; reply on the next call */
} req_phase;

/* Per-request state; lives from the first handler call to the
 * request-completed notification. */
typedef struct http_req {
    imagen_http *http;
    struct MHD_Connection *conn;
    imagen__http_route route;
    unsigned method; /* IMAGEN_HTTP_METHOD_* or 0 */
    char *body;      /* received bytes; owned */
    size_t len, cap;
    size_t expected;    /* Content-Length when given and within the limit, else 0 */
    bool too_large;     /* body over the limit: discard the rest, answer 400 */
    bool counted;       /* counted in http->inflight until completed */
    size_t received;    /* total bytes offered, counted even while discarding */
    char *inflated;     /* decompressed body; owned */
    char *model;        /* decoded ${M}; owned */
    pthread_mutex_t mu; /* guards phase, resp, watch_id, completing against the completion */
    req_phase phase;
    imagen__http_infer *inf;      /* infer requests; owned */
    imagen_response *resp;        /* written by the completion callback; owned */
    imagen__http_reply reply;     /* load/unload helper thread result */
    bool has_reply;               /* the answer is in `reply` (load/unload, submit errors) */
    uint64_t watch_id;            /* disconnect-watcher entry, 0 = none (guarded by mu) */
    bool completing;              /* the completion callback has begun (guarded by mu) */
    imagen__http_encoding accept; /* response coding for infer */
} http_req;

/* ======================================================================
 * Replies
 * ==================================================================== */

static enum MHD_Result
queue_bytes(struct MHD_Connection *conn, int status, char *data, size_t len, const char *ctype)
{
    struct MHD_Response *resp;
    if (len == 0) {
        free(data);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer_with_free_callback(len, data, free);
    }
    if (resp == NULL) {
        if (len)
            free(data);
        return MHD_NO;
    }
    if (ctype && len)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result r = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result
queue_static_json(struct MHD_Connection *conn, int status, const char *json)
{
    char *copy = strdup(json);
    return queue_bytes(conn, status, copy, copy ? strlen(copy) : 0, "application/json");
}

static enum MHD_Result
queue_reply(struct MHD_Connection *conn, imagen__http_reply *reply)
{
    size_t len = 0;
    char *data = NULL;
    bool failed = imagen_buf_failed(&reply->body);
    if (!failed && reply->body.len > 0)
        data = imagen_buf_detach(&reply->body, &len);
    imagen_buf_free(&reply->body);
    if (failed)
        return queue_static_json(conn, 500, "{\"error\":\"out of memory\"}");
    return queue_bytes(conn, reply->status, data, len, reply->json ? "application/json" : NULL);
}

static enum MHD_Result
queue_error(struct MHD_Connection *conn, imagen_error *err)
{
    imagen__http_reply reply;
    imagen_buf_init(&reply.body);
    imagen__http_reply_error(&reply, err);
    return queue_reply(conn, &reply);
}

/* ======================================================================
 * Inference
 * ==================================================================== */

/* Completion callback: runs on an instance thread (or, for a cancelled
 * request, on whichever thread cancelled it). Stores the response and
 * resumes the connection; never touches the socket. */
static void
on_infer_done(imagen_response *response, void *user_data)
{
    http_req *r = user_data;
    imagen_http *http = r->http;
    pthread_mutex_lock(&r->mu);
    uint64_t watch_id = r->watch_id;
    r->watch_id = 0;
    /* From here on start_infer must not register the request with the
     * watcher: an entry added after this point would never be removed and
     * the watcher would later cancel a freed request. */
    r->completing = true;
    pthread_mutex_unlock(&r->mu);
    /* Outside r->mu: the watcher may be calling us with its lock held. */
    imagen__http_watch_remove(http->watch, watch_id);
    pthread_mutex_lock(&r->mu);
    r->resp = response;
    r->phase = PHASE_READY;
    MHD_resume_connection(r->conn);
    /* r may be freed as soon as the lock is released. */
    pthread_mutex_unlock(&r->mu);
}

static enum MHD_Result
start_infer(http_req *r, const char *body, size_t len)
{
    imagen_http *http = r->http;
    struct MHD_Connection *conn = r->conn;
    const char *hlen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Inference-Header-Content-Length");
    size_t header_len = 0;
    if (hlen != NULL) {
        imagen_error *err = imagen__http_parse_header_length(hlen, len, &header_len);
        if (err != NULL)
            return queue_error(conn, err);
    }
    imagen_error *err = imagen__http_infer_build(http->srv, http->shm, r->model, r->route.version, body ? body : "",
                                                 len, hlen != NULL, header_len, http->max_input, &r->inf);
    if (err != NULL)
        return queue_error(conn, err);
    r->accept = imagen__http_select_accept_encoding(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING));

    /* Suspend before submitting: the completion may arrive before
     * imagen_server_infer_async() even returns, and resuming a connection
     * that is not suspended is undefined. */
    r->phase = PHASE_WAITING;
    r->counted = true;
    atomic_fetch_add(&http->inflight, 1);
    MHD_suspend_connection(conn);
    imagen_request *req = imagen__http_infer_request(r->inf);
    err = imagen_server_infer_async(http->srv, req, on_infer_done, r);
    if (err != NULL) {
        pthread_mutex_lock(&r->mu);
        imagen_buf_init(&r->reply.body);
        imagen__http_reply_error(&r->reply, err);
        r->has_reply = true;
        r->phase = PHASE_READY;
        MHD_resume_connection(conn);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    /* Register outside r->mu (the watcher takes its own lock, then, when it
     * cancels, the completion takes r->mu) and keep the entry only if the
     * completion has not begun. The request stays alive meanwhile: its
     * state is freed on this thread, after this handler returns. */
    uint64_t id = ci != NULL ? imagen__http_watch_add(http->watch, ci->connect_fd, req) : 0;
    pthread_mutex_lock(&r->mu);
    if (r->phase == PHASE_WAITING && !r->completing) {
        r->watch_id = id;
        id = 0;
    }
    pthread_mutex_unlock(&r->mu);
    imagen__http_watch_remove(http->watch, id); /* no-op for 0 */
    return MHD_YES;
}

/* Frees an executed request's input and output bytes (the body the inputs
 * point into, the response's tensors) once the reply holds what it needs:
 * otherwise both stay beside the encoded reply until MHD has sent it. */
static void
release_request(http_req *r)
{
    imagen_response_free(r->resp);
    r->resp = NULL;
    imagen__http_infer_free(r->inf);
    r->inf = NULL;
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    free(r->inflated);
    r->inflated = NULL;
}

static enum MHD_Result
finish_infer(http_req *r)
{
    struct MHD_Connection *conn = r->conn;
    const imagen_error *rerr = imagen_response_error(r->resp);
    if (rerr != NULL)
        return queue_error(conn, imagen_error_new(imagen_error_code_of(rerr), "%s", imagen_error_message(rerr)));
    imagen_buf out = IMAGEN_BUF_INIT;
    size_t json_len = 0;
    bool binary = false;
    imagen_error *err = imagen__http_infer_encode(r->inf, r->resp, &out, &json_len, &binary);
    release_request(r);
    if (err != NULL) {
        imagen_buf_free(&out);
        return queue_error(conn, err);
    }
    size_t len = 0;
    char *data = imagen_buf_detach(&out, &len);
    if (data == NULL)
        return queue_error(conn, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory encoding the response"));
    const char *enc_name = imagen__http_encoding_name(r->accept);
    if (enc_name != NULL) {
        char *z = NULL;
        size_t zlen = 0;
        if (imagen__http_deflate(r->accept, data, len, &z, &zlen)) {
            free(data);
            data = z;
            len = zlen;
        } else {
            enc_name = NULL;
        }
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, data, free);
    if (resp == NULL) {
        free(data);
        return MHD_NO;
    }
    if (binary) {
        char num[24];
        snprintf(num, sizeof(num), "%zu", json_len);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
        MHD_add_response_header(resp, "Inference-Header-Content-Length", num);
    } else {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    }
    if (enc_name != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, enc_name);
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ======================================================================
 * Load / unload off the pool threads
 * ==================================================================== */

static void *
admin_thread(void *arg)
{
    http_req *r = arg;
    imagen_http *http = r->http;
    const char *body = r->inflated ? r->inflated : r->body;
    imagen__http_reply reply;
    imagen_buf_init(&reply.body);
    imagen__http_admin_handle(http->srv, http->shm, &r->route, r->model, body ? body : "", body ? r->len : 0, &reply);
    pthread_mutex_lock(&r->mu);
    r->reply = reply;
    r->phase = PHASE_READY;
    MHD_resume_connection(r->conn);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static enum MHD_Result
start_admin_async(http_req *r)
{
    imagen_http *http = r->http;
    r->has_reply = true;
    r->phase = PHASE_WAITING;
    r->counted = true;
    atomic_fetch_add(&http->inflight, 1);
    MHD_suspend_connection(r->conn);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, admin_thread, r);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        admin_thread(r); /* run inline; still resumes correctly */
    return MHD_YES;
}

/* ======================================================================
 * The access handler
 * ==================================================================== */

static bool
append_body(http_req *r, const char *data, size_t n)
{
    size_t max = r->http->max_input;
    r->received += n;
    if (r->too_large)
        return true;
    if (n > max - r->len) {
        r->too_large = true;
        free(r->body);
        r->body = NULL;
        r->len = r->cap = 0;
        return true;
    }
    if (r->len + n > r->cap) {
        /* Data has arrived, so the announced length is now believed: one
         * buffer of exactly that size instead of doublings (a 5 MiB body
         * would otherwise sit in 8 MiB after copies through 4 and 8). */
        size_t ncap = r->expected >= r->len + n ? r->expected : r->cap ? r->cap : 4096;
        while (ncap < r->len + n)
            ncap = ncap > max / 2 ? max : ncap * 2;
        char *nb = realloc(r->body, ncap + 1);
        if (nb == NULL)
            return false;
        r->body = nb;
        r->cap = ncap;
    }
    memcpy(r->body + r->len, data, n);
    imagen_copy_stats_add(IMAGEN_COPY_HTTP, IMAGEN_COPY_INPUT, n); /* the body, JSON header included */
    r->len += n;
    r->body[r->len] = '\0';
    return true;
}

static http_req *
new_req(imagen_http *http, struct MHD_Connection *conn, const char *url, const char *method)
{
    http_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->http = http;
    r->conn = conn;
    pthread_mutex_init(&r->mu, NULL);
    imagen_buf_init(&r->reply.body);
    imagen__http_route_match(url, &r->route);
    r->method = imagen__http_method_bit(method);
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        if (errno == 0 && *end == '\0' && v > 0) {
            size_t pre = v < HTTP_BODY_PREALLOC_MAX_BYTES ? (size_t)v : HTTP_BODY_PREALLOC_MAX_BYTES;
            if (v > http->max_input) {
                r->too_large = true;
            } else {
                r->expected = (size_t)v;
                if ((r->body = malloc(pre + 1)) != NULL)
                    r->cap = pre;
            }
        }
    }
    return r;
}

/* Handles a fully received request (first final call). */
static enum MHD_Result
dispatch(http_req *r)
{
    imagen_http *http = r->http;
    struct MHD_Connection *conn = r->conn;
    const imagen__http_route *route = &r->route;
    if (route->kind == IMAGEN_HTTP_ROUTE_NOT_FOUND)
        return queue_static_json(conn, 404, "{\"error\":\"Not Found\"}");
    if ((route->methods & r->method) == 0)
        return queue_static_json(conn, 405, "{\"error\":\"Method Not Allowed\"}");
    if (r->too_large)
        return queue_error(conn, imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                                  "request body of %zu bytes exceeds the maximum input size of "
                                                  "%zu bytes (--http-max-input-size)",
                                                  r->received, http->max_input));
    const char *ce = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    imagen__http_encoding enc = imagen__http_parse_content_encoding(ce);
    if (enc == IMAGEN_HTTP_ENC_UNKNOWN)
        return queue_error(conn, imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unsupported Content-Encoding '%.64s'", ce));
    const char *body = r->body;
    size_t len = r->len;
    if (enc != IMAGEN_HTTP_ENC_IDENTITY && len > 0) {
        size_t out_len = 0;
        imagen_error *err = imagen__http_inflate(enc, r->body, r->len, http->max_input, &r->inflated, &out_len);
        if (err != NULL)
            return queue_error(conn, err);
        free(r->body);
        r->body = NULL;
        body = r->inflated;
        len = r->len = out_len;
    }
    if (route->model != NULL) {
        bool has_nul = false;
        r->model = imagen__http_percent_decode(route->model, route->model_len, &has_nul);
        if (r->model == NULL)
            return queue_error(conn, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory"));
        if (has_nul)
            return queue_error(conn, imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                                      "Request for unknown model: '%.*s' is not found",
                                                      (int)route->model_len, route->model));
    }
    switch (route->kind) {
    case IMAGEN_HTTP_ROUTE_INFER:
        return start_infer(r, body, len);
    case IMAGEN_HTTP_ROUTE_REPO_LOAD:
    case IMAGEN_HTTP_ROUTE_REPO_UNLOAD:
        if (route->repo_len == 0)
            return start_admin_async(r);
        break;
    default:
        break;
    }
    imagen__http_reply reply;
    imagen_buf_init(&reply.body);
    const char *admin_body = r->method == IMAGEN_HTTP_METHOD_POST ? (body ? body : "") : NULL;
    imagen__http_admin_handle(http->srv, http->shm, route, r->model, admin_body, admin_body ? len : 0, &reply);
    return queue_reply(conn, &reply);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method, const char *version,
           const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    imagen_http *http = cls;
    http_req *r = *con_cls;
    if (r == NULL) {
        r = new_req(http, conn, url, method);
        if (r == NULL)
            return MHD_NO;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (r->phase != PHASE_RECEIVING || !append_body(r, upload_data, *upload_data_size))
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    switch (r->phase) {
    case PHASE_RECEIVING:
        return dispatch(r);
    case PHASE_WAITING:
        /* Not expected while suspended; stay suspended until the completion. */
        pthread_mutex_lock(&r->mu);
        if (r->phase == PHASE_WAITING) {
            pthread_mutex_unlock(&r->mu);
            return MHD_YES;
        }
        pthread_mutex_unlock(&r->mu);
        break;
    case PHASE_READY:
        break;
    }
    pthread_mutex_lock(&r->mu); /* pairs with the completion's unlock */
    pthread_mutex_unlock(&r->mu);
    if (r->has_reply)
        return queue_reply(conn, &r->reply);
    return finish_infer(r);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    http_req *r = *con_cls;
    if (r == NULL)
        return;
    *con_cls = NULL;
    /* Wait out a completion callback that is still inside its locked
     * section (it resumed us and has not unlocked yet). */
    pthread_mutex_lock(&r->mu);
    bool pending = r->phase == PHASE_WAITING;
    pthread_mutex_unlock(&r->mu);
    if (pending) {
        /* The connection died while its request was still in the core; a
         * suspended connection cannot normally end, so this is defensive.
         * Cancel and leak the state rather than free it under the callback. */
        if (r->inf)
            imagen_request_cancel(imagen__http_infer_request(r->inf));
        IMAGEN_LOG_WARN_("http", "connection closed with a request in flight (termination code %d)", (int)toe);
        return;
    }
    /* The reply has been sent (or the client left): only now may shutdown
     * stop the daemon without cutting this response short. */
    if (r->counted)
        atomic_fetch_sub(&r->http->inflight, 1);
    if (r->resp)
        imagen_response_free(r->resp);
    imagen__http_infer_free(r->inf);
    imagen_buf_free(&r->reply.body);
    free(r->body);
    free(r->inflated);
    free(r->model);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Refuses new connections once the server is shutting down. This stands in
 * for MHD_quiesce_daemon(), which with a thread pool on epoll races the
 * pool threads over the listen socket's epoll registration and can abort
 * the process (libmicrohttpd 0.9.75: "Failed to remove listen FD from epoll
 * set"). Connections already open keep being served until the drain ends. */
static enum MHD_Result
accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    imagen_http *http = cls;
    return atomic_load(&http->quiesced) ? MHD_NO : MHD_YES;
}

/* The URL is routed undecoded; names are percent-decoded per segment, so an
 * encoded '/' cannot change which route matches. */
static size_t
no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    return strlen(s);
}

/* ======================================================================
 * Public API
 * ==================================================================== */

void
imagen_http_options_init(imagen_http_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->address = "0.0.0.0";
    opts->port = IMAGEN_HTTP_DEFAULT_PORT;
    opts->thread_count = HTTP_DEFAULT_THREAD_COUNT;
    opts->max_input_size = IMAGEN_HTTP_DEFAULT_MAX_INPUT_BYTES;
    opts->reuse_port = false;
}

imagen_error *
imagen__http_resolve(const char *address, int port, struct sockaddr_storage *ss, unsigned *ss_len, bool *ipv6)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(address && address[0] ? address : NULL, portstr, &hints, &res);
    if (rc != 0 || res == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "cannot resolve address '%s': %s", address ? address : "",
                                gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *ss_len = (unsigned)res->ai_addrlen;
    *ipv6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return NULL;
}

imagen_error *
imagen_http_start(imagen_server *srv, const imagen_http_options *opts, imagen_http **out)
{
    *out = NULL;
    imagen_http_options defaults;
    imagen_http_options_init(&defaults);
    if (opts == NULL)
        opts = &defaults;
    if (opts->port < 0 || opts->port > 65535)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "invalid HTTP port %d", opts->port);
    imagen_http *http = calloc(1, sizeof(*http));
    if (http == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    http->srv = srv;
    http->shm = opts->shm;
    http->max_input = opts->max_input_size ? opts->max_input_size : IMAGEN_HTTP_DEFAULT_MAX_INPUT_BYTES;
    atomic_init(&http->quiesced, false);
    atomic_init(&http->inflight, 0);

    struct sockaddr_storage ss;
    unsigned ss_len = 0;
    bool ipv6 = false;
    imagen_error *err = imagen__http_resolve(opts->address, opts->port, &ss, &ss_len, &ipv6);
    if (err == NULL)
        err = imagen__http_watch_start(&http->watch);
    if (err != NULL) {
        free(http);
        return err;
    }
    unsigned threads = opts->thread_count > 0 ? (unsigned)opts->thread_count : HTTP_DEFAULT_THREAD_COUNT;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    /* Address reuse is passed only when asked for: passing it as 0 makes
     * libmicrohttpd skip its default SO_REUSEADDR, and a restarted server
     * then cannot bind while old connections sit in TIME_WAIT. */
    struct MHD_OptionItem extra[] = {
        {opts->reuse_port ? MHD_OPTION_LISTENING_ADDRESS_REUSE : MHD_OPTION_END, 1, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    http->daemon = MHD_start_daemon(flags, (uint16_t)opts->port, accept_policy, http, on_request, http,
                                    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE,
                                    threads > 1 ? threads : 0u, MHD_OPTION_NOTIFY_COMPLETED, on_completed, http,
                                    MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                    (size_t)HTTP_CONNECTION_MEMORY_BYTES, MHD_OPTION_CONNECTION_TIMEOUT,
                                    (unsigned)HTTP_IDLE_TIMEOUT_SECS, MHD_OPTION_ARRAY, extra, MHD_OPTION_END);
    if (http->daemon == NULL) {
        imagen__http_watch_stop(http->watch);
        free(http);
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "cannot start the HTTP server on %s:%d",
                                opts->address ? opts->address : "0.0.0.0", opts->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    http->port = info ? (int)info->port : opts->port;
    IMAGEN_LOG_VERBOSE_("http", "HTTP daemon listening at %s:%d", opts->address ? opts->address : "0.0.0.0",
                        http->port);
    *out = http;
    return NULL;
}

int
imagen_http_port(const imagen_http *http)
{
    return http ? http->port : -1;
}

void
imagen_http_quiesce(imagen_http *http)
{
    if (http != NULL)
        atomic_store(&http->quiesced, true);
}

void
imagen_http_destroy(imagen_http *http)
{
    if (http == NULL)
        return;
    /* MHD must not be stopped with suspended connections: wait for every
     * completion (the core finishes or fails each request on stop). */
    uint64_t deadline = imagen_time_now_ns() + (uint64_t)HTTP_DRAIN_MAX_MS * 1000000u;
    while (atomic_load(&http->inflight) > 0 && imagen_time_now_ns() < deadline)
        usleep(HTTP_DRAIN_POLL_US);
    if (atomic_load(&http->inflight) > 0) {
        IMAGEN_LOG_ERROR_("http", "%zu requests still in flight at shutdown; leaving the HTTP daemon running",
                          (size_t)atomic_load(&http->inflight));
        return;
    }
    MHD_stop_daemon(http->daemon);
    imagen__http_watch_stop(http->watch);
    free(http);
}
