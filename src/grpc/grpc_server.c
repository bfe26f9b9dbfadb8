/*
 * The gRPC server glue: creates the gRPC core server, registers every
 * method of GRPCInferenceService and Health, and runs the completion-queue
 * threads (one queue each). Each queue keeps a few calls requested ahead per
 * method; when one arrives the thread requests its replacement, starts the
 * RECV_CLOSE_ON_SERVER batch (to learn about cancellation) and runs the
 * handler. Handlers never block: inference completes on instance threads
 * and load/unload on helper threads, both of which only start a send batch.
 * The one exception is a small request of a model whose executions take
 * microseconds, which the core may run right here while an instance is idle
 * (src/core/model.c, imagen__model_try_inline): cheaper than the hand-off.
 * gRPC statuses come from error.h's table in imagen__grpc_reply_error only.
 */
#include "grpc/grpc_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "common/log.h"

#define COMPONENT "grpc"

#define SVC "/inference.GRPCInferenceService/"

/* Calls requested ahead per queue: gRPC holds further arrivals until a slot
 * is requested again, so these bound only how many calls start at once. */
#define SLOTS_INFER 32
#define SLOTS_ADMIN 2
/* Per-stream HTTP/2 receive window: a 1024x1024x3 image request (3 MiB and
 * a few bytes) fits in one window; see imagen_grpc_start. */
#define GRPC_STREAM_WINDOW_BYTES (4 << 20)

static const imagen__grpc_method methods[] = {
    {SVC "ServerLive", imagen__grpc_server_live, false, SLOTS_ADMIN},
    {SVC "ServerReady", imagen__grpc_server_ready, false, SLOTS_ADMIN},
    {SVC "ModelReady", imagen__grpc_model_ready, false, SLOTS_ADMIN},
    {SVC "ServerMetadata", imagen__grpc_server_metadata, false, SLOTS_ADMIN},
    {SVC "ModelMetadata", imagen__grpc_model_metadata, false, SLOTS_ADMIN},
    {SVC "ModelInfer", imagen__grpc_model_infer, false, SLOTS_INFER},
    {SVC "ModelStreamInfer", imagen__grpc_model_stream_infer, true, SLOTS_INFER},
    {SVC "ModelConfig", imagen__grpc_model_config, false, SLOTS_ADMIN},
    {SVC "ModelStatistics", imagen__grpc_model_statistics, false, SLOTS_ADMIN},
    {SVC "RepositoryIndex", imagen__grpc_repository_index, false, SLOTS_ADMIN},
    {SVC "RepositoryModelLoad", imagen__grpc_repository_load, false, SLOTS_ADMIN},
    {SVC "RepositoryModelUnload", imagen__grpc_repository_unload, false, SLOTS_ADMIN},
    {SVC "SystemSharedMemoryStatus", imagen__grpc_shm_status, false, SLOTS_ADMIN},
    {SVC "SystemSharedMemoryRegister", imagen__grpc_shm_register, false, SLOTS_ADMIN},
    {SVC "SystemSharedMemoryUnregister", imagen__grpc_shm_unregister, false, SLOTS_ADMIN},
    {SVC "CudaSharedMemoryStatus", NULL, false, SLOTS_ADMIN},
    {SVC "CudaSharedMemoryRegister", NULL, false, SLOTS_ADMIN},
    {SVC "CudaSharedMemoryUnregister", NULL, false, SLOTS_ADMIN},
    {SVC "TraceSetting", NULL, false, SLOTS_ADMIN},
    {SVC "LogSettings", imagen__grpc_log_settings, false, SLOTS_ADMIN},
    {"/grpc.health.v1.Health/Check", imagen__grpc_health_check, false, SLOTS_ADMIN},
};
#define METHOD_COUNT (sizeof(methods) / sizeof(methods[0]))
#define UNREGISTERED SIZE_MAX

struct imagen_grpc {
    imagen_server *srv;
    imagen_shm *shm; /* borrowed; NULL = client shared memory disabled */
    grpc_server *server;
    void *method_handles[METHOD_COUNT];
    grpc_completion_queue **cqs;
    pthread_t *threads;
    int n_cqs;     /* queues created (one per thread) */
    int n_started; /* threads running cq_main */
    int port;
    imagen__grpc_tag shutdown_tag;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool shutting_down;         /* guarded by lock */
    bool shutdown_done;         /* guarded by lock; set by a CQ thread */
    atomic_size_t open_calls;   /* accepted and not yet freed */
    imagen__grpc_call *tracked; /* calls to tell about quiesce; guarded by lock */
};

imagen_server *
imagen__grpc_server(const imagen__grpc_call *c)
{
    return c->grpc->srv;
}

imagen_shm *
imagen__grpc_shm(const imagen__grpc_call *c)
{
    return c->grpc->shm;
}

void
imagen_grpc_options_init(imagen_grpc_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->address = "0.0.0.0";
    opts->port = IMAGEN_GRPC_DEFAULT_PORT;
    opts->cq_threads = IMAGEN_GRPC_DEFAULT_CQ_THREADS;
}

int
imagen_grpc_port(const imagen_grpc *grpc)
{
    return grpc->port;
}

/* ======================================================================
 * Call objects
 * ==================================================================== */

static imagen__grpc_call *
call_new(imagen_grpc *g, size_t method_index, grpc_completion_queue *cq)
{
    imagen__grpc_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->grpc = g;
    c->method_index = method_index;
    c->cq = cq;
    c->new_tag = (imagen__grpc_tag){IMAGEN_GRPC_TAG_NEW_CALL, c, NULL};
    c->send_tag = (imagen__grpc_tag){IMAGEN_GRPC_TAG_SEND, c, NULL};
    c->close_tag = (imagen__grpc_tag){IMAGEN_GRPC_TAG_CLOSE, c, NULL};
    grpc_metadata_array_init(&c->request_md);
    grpc_call_details_init(&c->details);
    c->status_details = grpc_empty_slice();
    atomic_init(&c->refs, 0);
    atomic_init(&c->replied, false);
    return c;
}

/* Frees a call object whose call never arrived or whose references are gone. */
static void
call_free(imagen__grpc_call *c)
{
    if (c->tracked) {
        imagen_grpc *g = c->grpc;
        pthread_mutex_lock(&g->lock);
        if (c->tracked_prev != NULL)
            c->tracked_prev->tracked_next = c->tracked_next;
        else
            g->tracked = c->tracked_next;
        if (c->tracked_next != NULL)
            c->tracked_next->tracked_prev = c->tracked_prev;
        pthread_mutex_unlock(&g->lock);
    }
    if (c->state_free != NULL && c->state != NULL)
        c->state_free(c->state);
    if (c->call != NULL) {
        grpc_call_unref(c->call);
        atomic_fetch_sub(&c->grpc->open_calls, 1);
    }
    grpc_metadata_array_destroy(&c->request_md);
    grpc_call_details_destroy(&c->details);
    if (c->payload != NULL)
        grpc_byte_buffer_destroy(c->payload);
    if (c->reply != NULL)
        grpc_byte_buffer_destroy(c->reply);
    grpc_slice_unref(c->status_details);
    free(c);
}

static void
call_unref(imagen__grpc_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        call_free(c);
}

void
imagen__grpc_call_ref(imagen__grpc_call *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void
imagen__grpc_call_unref(imagen__grpc_call *c)
{
    call_unref(c);
}

bool
imagen__grpc_track(imagen__grpc_call *c)
{
    imagen_grpc *g = c->grpc;
    pthread_mutex_lock(&g->lock);
    bool ok = !g->shutting_down;
    if (ok) {
        c->tracked = true;
        c->tracked_prev = NULL;
        c->tracked_next = g->tracked;
        if (g->tracked != NULL)
            g->tracked->tracked_prev = c;
        g->tracked = c;
    }
    pthread_mutex_unlock(&g->lock);
    return ok;
}

/* Takes a reference unless the call is already being freed (zero). */
static bool
call_try_ref(imagen__grpc_call *c)
{
    int n = atomic_load(&c->refs);
    while (n > 0)
        if (atomic_compare_exchange_weak(&c->refs, &n, n + 1))
            return true;
    return false;
}

/* Requests the next call of a method on `cq`. Fails quietly once the server
 * is shutting down (gRPC refuses the request then). */
static void
request_call(imagen_grpc *g, size_t method_index, grpc_completion_queue *cq)
{
    imagen__grpc_call *c = call_new(g, method_index, cq);
    if (c == NULL) {
        IMAGEN_LOG_ERROR_(COMPONENT, "out of memory requesting a call; one call slot is lost");
        return;
    }
    grpc_call_error e;
    if (method_index == UNREGISTERED)
        e = grpc_server_request_call(g->server, &c->call, &c->details, &c->request_md, cq, cq, &c->new_tag);
    else
        e = grpc_server_request_registered_call(g->server, g->method_handles[method_index], &c->call, &c->deadline,
                                                &c->request_md, methods[method_index].streaming ? NULL : &c->payload,
                                                cq, cq, &c->new_tag);
    if (e != GRPC_CALL_OK) {
        c->call = NULL;
        call_free(c);
    }
}

/* ======================================================================
 * Replies
 * ==================================================================== */

static void
start_send(imagen__grpc_call *c, grpc_status_code status, const char *message)
{
    if (atomic_exchange(&c->replied, true)) {
        IMAGEN_LOG_ERROR_(COMPONENT, "internal error: a second reply on one call was dropped");
        return;
    }
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!c->initial_md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = 0;
        n++;
    }
    if (c->reply != NULL) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->reply;
        n++;
    }
    if (message != NULL && message[0] != '\0')
        c->status_details = grpc_slice_from_copied_string(message);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    ops[n].data.send_status_from_server.status_details = &c->status_details;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    n++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL);
    if (e != GRPC_CALL_OK) {
        IMAGEN_LOG_ERROR_(COMPONENT, "grpc_call_start_batch failed (%d) on %s", (int)e,
                          c->method_index == UNREGISTERED ? "an unknown method" : methods[c->method_index].path);
        call_unref(c);
    }
}

void
imagen__grpc_reply_bytes(imagen__grpc_call *c, void *data, size_t len)
{
    if (len > INT32_MAX) {
        free(data);
        imagen__grpc_reply_error(
            c, imagen_error_new(IMAGEN_ERR_INTERNAL, "response of %zu bytes exceeds the maximum message size", len));
        return;
    }
    grpc_slice s = len ? grpc_slice_new(data, len, free) : grpc_empty_slice();
    if (len == 0)
        free(data);
    c->reply = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    start_send(c, GRPC_STATUS_OK, NULL);
}

void
imagen__grpc_reply_msg(imagen__grpc_call *c, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        imagen__grpc_reply_error(c, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory encoding the response"));
        return;
    }
    protobuf_c_message_pack(msg, buf);
    imagen__grpc_reply_bytes(c, buf, len);
}

/* The one place where core error codes become gRPC statuses (spec §0). */
void
imagen__grpc_reply_error(imagen__grpc_call *c, imagen_error *err)
{
    grpc_status_code status = (grpc_status_code)imagen_error_code_grpc_status(imagen_error_code_of(err));
    start_send(c, status, imagen_error_message(err));
    imagen_error_free(err);
}

void
imagen__grpc_reply_status(imagen__grpc_call *c, imagen_error *err)
{
    if (err != NULL)
        imagen__grpc_reply_error(c, err);
    else
        start_send(c, GRPC_STATUS_OK, NULL);
}

imagen_error *
imagen__grpc_unpack(imagen__grpc_call *c, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    *out = NULL;
    if (c->payload == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "the call carries no request message");
    return imagen__grpc_unpack_buffer(&c->payload, desc, out);
}

imagen_error *
imagen__grpc_unpack_buffer(grpc_byte_buffer **bb, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    *out = NULL;
    grpc_byte_buffer_reader reader;
    bool readable = grpc_byte_buffer_reader_init(&reader, *bb) != 0;
    grpc_slice all = grpc_empty_slice();
    if (readable) {
        all = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
    }
    grpc_byte_buffer_destroy(*bb);
    *bb = NULL;
    if (!readable)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "cannot read the request message (bad compression?)");
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (m == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "failed to parse the request message as %s", desc->name);
    *out = m;
    return NULL;
}

imagen_error *
imagen__grpc_parse_version(const char *text, int64_t *out)
{
    *out = -1;
    if (text == NULL || text[0] == '\0')
        return NULL;
    int64_t v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9' || v > (INT64_MAX - 9) / 10 || p - text > 18)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "failed to get model version from specified version string '%.64s' (details: "
                                    "stol), version should be an integral value > 0",
                                    text);
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return NULL;
}

/* ======================================================================
 * Completion-queue threads
 * ==================================================================== */

static void
on_new_call(imagen_grpc *g, imagen__grpc_call *c, bool ok)
{
    if (!ok) {
        /* The request was failed by shutdown: nothing arrived. */
        if (c->call != NULL) {
            grpc_call_unref(c->call);
            c->call = NULL;
        }
        call_free(c);
        return;
    }
    atomic_fetch_add(&g->open_calls, 1);
    request_call(g, c->method_index, c->cq);
    atomic_store(&c->refs, 2);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK)
        atomic_fetch_sub(&c->refs, 1);
    const imagen__grpc_method *m = c->method_index == UNREGISTERED ? NULL : &methods[c->method_index];
    if (m == NULL) {
        char *method = grpc_slice_to_c_string(c->details.method);
        imagen__grpc_reply_error(c, imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "unknown method '%s'", method));
        gpr_free(method);
    } else if (m->fn == NULL) {
        imagen__grpc_reply_error(
            c, imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "%s is not implemented by imagen-server yet", m->path));
    } else {
        m->fn(c);
    }
}

static void *
cq_main(void *arg)
{
    grpc_completion_queue *cq = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        imagen__grpc_tag *tag = ev.tag;
        imagen__grpc_call *c = tag->call;
        switch (tag->kind) {
        case IMAGEN_GRPC_TAG_NEW_CALL:
            on_new_call(c->grpc, c, ev.success != 0);
            break;
        case IMAGEN_GRPC_TAG_SEND:
            call_unref(c);
            break;
        case IMAGEN_GRPC_TAG_OP:
            tag->done(c, ev.success != 0);
            break;
        case IMAGEN_GRPC_TAG_CLOSE:
            if (c->cancelled && c->on_cancel != NULL)
                c->on_cancel(c);
            call_unref(c);
            break;
        case IMAGEN_GRPC_TAG_SHUTDOWN: {
            imagen_grpc *g = (imagen_grpc *)((char *)tag - offsetof(imagen_grpc, shutdown_tag));
            pthread_mutex_lock(&g->lock);
            g->shutdown_done = true;
            pthread_cond_broadcast(&g->cond);
            pthread_mutex_unlock(&g->lock);
            break;
        }
        }
    }
    return NULL;
}

/* ======================================================================
 * Start and stop
 * ==================================================================== */

/* Frees everything; the server, if any, must be unstarted or shut down and
 * destroyed (g->server NULL). Stops and joins the threads that started. */
static void
free_grpc(imagen_grpc *g)
{
    if (g->server != NULL)
        grpc_server_destroy(g->server);
    for (int i = 0; i < g->n_cqs; i++)
        grpc_completion_queue_shutdown(g->cqs[i]);
    for (int i = 0; i < g->n_started; i++)
        pthread_join(g->threads[i], NULL);
    for (int i = 0; i < g->n_cqs; i++)
        grpc_completion_queue_destroy(g->cqs[i]);
    free(g->cqs);
    free(g->threads);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
    free(g);
    grpc_shutdown();
}

imagen_error *
imagen_grpc_start(imagen_server *srv, const imagen_grpc_options *opts, imagen_grpc **out)
{
    *out = NULL;
    int n_threads = opts->cq_threads;
    if (n_threads < 1 || n_threads > IMAGEN_GRPC_MAX_CQ_THREADS)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "gRPC thread count %d is outside [1, %d]", n_threads,
                                IMAGEN_GRPC_MAX_CQ_THREADS);
    grpc_init();
    imagen_grpc *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        grpc_shutdown();
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    g->srv = srv;
    g->shm = opts->shm;
    g->shutdown_tag = (imagen__grpc_tag){IMAGEN_GRPC_TAG_SHUTDOWN, NULL, NULL};
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    atomic_init(&g->open_calls, 0);
    g->cqs = calloc((size_t)n_threads, sizeof(*g->cqs));
    g->threads = calloc((size_t)n_threads, sizeof(*g->threads));
    if (g->cqs == NULL || g->threads == NULL) {
        free_grpc(g);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }

    /* Triton allows messages up to INT32_MAX both ways (spec §2.1). Port
     * reuse is off so that a port another process holds fails here instead
     * of silently sharing its traffic. The receive window is fixed at
     * GRPC_STREAM_WINDOW_BYTES per stream instead of following gRPC's
     * bandwidth-delay probe: with the probe, 16 concurrent 3 MiB requests
     * left 70-125 MiB of 64 KiB transport read buffers alive at once (in
     * this server and in bench/grpc_echo.c alike), about twice the bytes
     * actually in flight; with a window that holds a whole image message the
     * peak drops by 30-50 MiB and the 1024^2 rate does not (BENCHMARKS.md
     * §6). A larger message still flows: the window is raised while a read
     * is pending. The cost is on long links: one stream moves at most
     * a window per round trip (80 MB/s at 50 ms). */
    grpc_arg args[5];
    memset(args, 0, sizeof(args));
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = INT32_MAX;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = INT32_MAX;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[2].value.integer = 0;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_HTTP2_BDP_PROBE;
    args[3].value.integer = 0;
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES;
    args[4].value.integer = GRPC_STREAM_WINDOW_BYTES;
    grpc_channel_args chargs = {.num_args = 5, .args = args};
    g->server = grpc_server_create(&chargs, NULL);
    for (size_t i = 0; i < METHOD_COUNT; i++) {
        g->method_handles[i] = grpc_server_register_method(
            g->server, methods[i].path, NULL,
            methods[i].streaming ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (g->method_handles[i] == NULL) {
            free_grpc(g);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot register gRPC method %s", methods[i].path);
        }
    }
    for (int i = 0; i < n_threads; i++) {
        g->cqs[i] = grpc_completion_queue_create_for_next(NULL);
        g->n_cqs++;
        grpc_server_register_completion_queue(g->server, g->cqs[i], NULL);
    }
    for (int i = 0; i < n_threads; i++) {
        if (pthread_create(&g->threads[i], NULL, cq_main, g->cqs[i]) != 0) {
            free_grpc(g);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot start gRPC thread %d", i);
        }
        g->n_started++;
    }
    char addr[300];
    const char *host = opts->address ? opts->address : "0.0.0.0";
    bool v6 = strchr(host, ':') != NULL && host[0] != '[';
    snprintf(addr, sizeof(addr), v6 ? "[%s]:%d" : "%s:%d", host, opts->port);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    g->port = grpc_server_add_http2_port(g->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (g->port == 0) {
        /* Not started yet, so the server may be destroyed at once. */
        free_grpc(g);
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "cannot bind the gRPC address %s", addr);
    }
    grpc_server_start(g->server);
    for (int i = 0; i < n_threads; i++) {
        for (size_t m = 0; m < METHOD_COUNT; m++)
            for (int k = 0; k < methods[m].slots; k++)
                request_call(g, m, g->cqs[i]);
        request_call(g, UNREGISTERED, g->cqs[i]);
    }
    *out = g;
    return NULL;
}

void
imagen_grpc_quiesce(imagen_grpc *g)
{
    pthread_mutex_lock(&g->lock);
    if (g->shutting_down) {
        pthread_mutex_unlock(&g->lock);
        return;
    }
    g->shutting_down = true;
    grpc_server_shutdown_and_notify(g->server, g->cqs[0], &g->shutdown_tag);
    /* Tell long-lived calls, outside the lock: their hooks may drop the
     * last reference, and call_free takes the lock. No call joins the list
     * from now on (imagen__grpc_track refuses), so the count is final. */
    size_t n = 0;
    for (imagen__grpc_call *c = g->tracked; c != NULL; c = c->tracked_next)
        n++;
    imagen__grpc_call **calls = n ? calloc(n, sizeof(*calls)) : NULL;
    size_t k = 0;
    for (imagen__grpc_call *c = g->tracked; c != NULL && calls != NULL; c = c->tracked_next)
        if (call_try_ref(c))
            calls[k++] = c;
    pthread_mutex_unlock(&g->lock);
    if (n > 0 && calls == NULL)
        IMAGEN_LOG_WARN_(COMPONENT, "out of memory telling %zu streams about shutdown; they end at the drain timeout",
                         n);
    for (size_t i = 0; i < k; i++) {
        calls[i]->on_quiesce(calls[i]);
        call_unref(calls[i]);
    }
    free(calls);
}

void
imagen_grpc_destroy(imagen_grpc *g)
{
    if (g == NULL)
        return;
    imagen_grpc_quiesce(g);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += IMAGEN_GRPC_DRAIN_TIMEOUT_MS / 1000;
    until.tv_nsec += (long)(IMAGEN_GRPC_DRAIN_TIMEOUT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g->lock);
    while (!g->shutdown_done) {
        if (pthread_cond_timedwait(&g->cond, &g->lock, &until) != 0 && !g->shutdown_done) {
            IMAGEN_LOG_WARN_(COMPONENT, "%zu gRPC calls still open after %d ms; cancelling them",
                             atomic_load(&g->open_calls), IMAGEN_GRPC_DRAIN_TIMEOUT_MS);
            grpc_server_cancel_all_calls(g->server);
            while (!g->shutdown_done)
                pthread_cond_wait(&g->cond, &g->lock);
        }
    }
    pthread_mutex_unlock(&g->lock);
    grpc_server_destroy(g->server);
    g->server = NULL;
    free_grpc(g);
}
