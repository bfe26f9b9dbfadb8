/*
 * ModelStreamInfer (spec §2.3): a bidirectional stream of ModelInferRequest
 * in, ModelStreamInferResponse out, any model per request.
 *
 * One RECV_MESSAGE batch is always pending while the client may still send.
 * Each request is decoded and submitted as ModelInfer does (grpc_infer.c);
 * its completion (an instance thread) encodes the response and queues it.
 * gRPC core allows one SEND_MESSAGE in flight per call, so queued responses
 * go out one by one, each send's completion starting the next. Responses
 * follow completion order, which across models or instances may differ
 * from request order; Triton behaves the same for non-decoupled models and
 * clients match them by id.
 *
 * Errors go in-band (error_message, stream stays open) unless the client
 * opened the stream with metadata `triton_grpc_error: true`: then the first
 * error ends the stream with its gRPC status once the responses already
 * queued are sent.
 *
 * When the server shuts down, a stream still open reads no more requests
 * and ends with UNAVAILABLE ("Server exiting") once the requests it read
 * have completed, so shutdown does not wait on idle clients.
 *
 * The stream ends with status OK once the client half-closed, every
 * request completed and every response was sent. On cancellation (client
 * gone, deadline) the requests still queued are cancelled and the rest is
 * dropped as it completes.
 *
 * Lifetime: the call holds its usual two references (the reply path and
 * RECV_CLOSE_ON_SERVER) plus one per pending batch (the receive, the send)
 * and one per submitted request (dropped with the request's item), so the
 * stream state, freed with the call, outlives every callback. s->lock is
 * never held across a call into the core or a blocking gRPC call.
 */
#include "grpc/grpc_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <grpc/byte_buffer.h>
#include <grpc/slice.h>

#include "common/log.h"

#define COMPONENT "grpc"

/* A response waiting for its turn to be sent. */
typedef struct out_msg {
    struct out_msg *next;
    grpc_byte_buffer *bb; /* owned */
} out_msg;

typedef struct stream stream;

/* One submitted request. Two references: the submitting thread's and the
 * completion's; on_cancel takes a third while it cancels. */
typedef struct stream_item {
    struct stream_item *prev, *next; /* in s->live while not completed */
    stream *s;
    imagen__grpc_infer *inf; /* owned */
    atomic_int refs;
    bool submitted; /* guarded by s->lock; only submitted requests are cancelled */
} stream_item;

struct stream {
    imagen__grpc_call *c;
    pthread_mutex_t lock;
    imagen__grpc_tag recv_tag, write_tag;
    grpc_byte_buffer *recv_buf; /* filled by the pending RECV_MESSAGE */
    bool errors_end_stream;     /* triton_grpc_error: true */
    /* Guarded by lock: */
    grpc_byte_buffer *writing; /* the SEND_MESSAGE in flight; NULL = none */
    out_msg *head, *tail;      /* responses waiting to be sent */
    stream_item *live;         /* submitted, not completed */
    bool read_done;            /* half-closed, failed or no longer wanted */
    bool handling;             /* a received request is being decoded/submitted */
    bool cancelled;            /* client gone or deadline expired */
    bool failed;               /* triton_grpc_error mode saw an error */
    imagen_error *fail_err;    /* its error, until the status takes it */
    bool quiesced;             /* the server is shutting down: read no more */
    bool finished;             /* the status batch was started */
};

static void
stream_free(void *p)
{
    stream *s = p;
    while (s->head != NULL) {
        out_msg *m = s->head;
        s->head = m->next;
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    if (s->recv_buf != NULL)
        grpc_byte_buffer_destroy(s->recv_buf);
    if (s->writing != NULL)
        grpc_byte_buffer_destroy(s->writing);
    imagen_error_free(s->fail_err);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void
item_unref(stream_item *it)
{
    if (atomic_fetch_sub(&it->refs, 1) != 1)
        return;
    imagen__grpc_call *c = it->s->c;
    imagen__grpc_infer_free(it->inf);
    free(it);
    imagen__grpc_call_unref(c);
}

static void on_write(imagen__grpc_call *c, bool ok);
static void on_recv(imagen__grpc_call *c, bool ok);

/* Starts sending the next queued response if none is in flight. Lock held. */
static void
start_write_locked(stream *s)
{
    if (s->writing != NULL || s->head == NULL || s->finished || s->cancelled)
        return;
    out_msg *m = s->head;
    s->head = m->next;
    if (s->head == NULL)
        s->tail = NULL;
    s->writing = m->bb;
    free(m);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->writing;
    imagen__grpc_call_ref(s->c);
    if (grpc_call_start_batch(s->c->call, &op, 1, &s->write_tag, NULL) != GRPC_CALL_OK) {
        IMAGEN_LOG_ERROR_(COMPONENT, "cannot send a ModelStreamInfer response; ending the stream");
        grpc_byte_buffer_destroy(s->writing);
        s->writing = NULL;
        s->cancelled = true;
        /* Not the last reference: the caller's path holds one. */
        atomic_fetch_sub(&s->c->refs, 1);
    }
}

/* Decides whether the stream can end now; if so marks it finished and
 * returns true with *err the status to send (NULL = OK). Lock held; the
 * caller sends the status after unlocking. */
static bool
finish_locked(stream *s, imagen_error **err)
{
    *err = NULL;
    if (s->finished || s->writing != NULL)
        return false;
    bool done = s->cancelled || (s->failed && s->head == NULL) ||
                (s->read_done && !s->handling && s->live == NULL && s->head == NULL);
    if (!done)
        return false;
    s->finished = true;
    *err = s->fail_err;
    s->fail_err = NULL;
    if (*err == NULL && s->quiesced && !s->cancelled)
        *err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "Server exiting");
    return true;
}

/* Runs the end-of-stream decision after a change; lock held on entry,
 * released on return. */
static void
settle_and_unlock(stream *s)
{
    start_write_locked(s);
    imagen_error *err = NULL;
    bool fin = finish_locked(s, &err);
    pthread_mutex_unlock(&s->lock);
    if (fin)
        imagen__grpc_reply_status(s->c, err);
}

/* Queues an encoded response (taken) unless the stream no longer sends. */
static void
enqueue(stream *s, uint8_t *buf, size_t len)
{
    grpc_slice sl = len ? grpc_slice_new(buf, len, free) : grpc_empty_slice();
    if (len == 0)
        free(buf);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    out_msg *m = malloc(sizeof(*m));
    pthread_mutex_lock(&s->lock);
    if (m == NULL || s->finished || s->cancelled || s->failed) {
        if (m == NULL)
            IMAGEN_LOG_ERROR_(COMPONENT, "out of memory queueing a ModelStreamInfer response; it is dropped");
        free(m);
        grpc_byte_buffer_destroy(bb);
    } else {
        m->next = NULL;
        m->bb = bb;
        if (s->tail != NULL)
            s->tail->next = m;
        else
            s->head = m;
        s->tail = m;
    }
    settle_and_unlock(s);
}

/* Reports an error for one request: in-band, or (triton_grpc_error) as the
 * stream's final status. err is consumed; resp may be NULL (see
 * imagen__grpc_infer_encode_error). */
static void
report_error(stream *s, const imagen__grpc_infer *inf, imagen_error *err, const imagen_response *resp)
{
    if (s->errors_end_stream) {
        pthread_mutex_lock(&s->lock);
        if (!s->failed && !s->finished) {
            s->failed = true;
            s->fail_err = err;
            err = NULL;
        }
        settle_and_unlock(s);
        imagen_error_free(err);
        return;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    imagen_error *e = imagen__grpc_infer_encode_error(inf, err, resp, &buf, &len);
    imagen_error_free(err);
    if (e != NULL) {
        IMAGEN_LOG_ERROR_(COMPONENT, "cannot encode a ModelStreamInfer error: %s", imagen_error_message(e));
        imagen_error_free(e);
        return;
    }
    enqueue(s, buf, len);
}

/* ======================================================================
 * Completion (instance thread)
 * ==================================================================== */

static void
on_complete(imagen_response *resp, void *user_data)
{
    stream_item *it = user_data;
    stream *s = it->s;
    const imagen_error *e = imagen_response_error(resp);
    if (e != NULL) {
        report_error(s, it->inf, imagen_error_new(imagen_error_code_of(e), "%s", imagen_error_message(e)), resp);
    } else {
        uint8_t *buf = NULL;
        size_t len = 0;
        imagen_error *err = imagen__grpc_infer_encode(it->inf, resp, true, &buf, &len);
        if (err != NULL)
            report_error(s, it->inf, err, resp);
        else
            enqueue(s, buf, len);
    }
    imagen_response_free(resp);
    pthread_mutex_lock(&s->lock);
    if (it->prev != NULL)
        it->prev->next = it->next;
    else
        s->live = it->next;
    if (it->next != NULL)
        it->next->prev = it->prev;
    it->prev = it->next = NULL;
    settle_and_unlock(s);
    item_unref(it);
}

/* ======================================================================
 * Receiving (completion-queue thread)
 * ==================================================================== */

/* Starts the next RECV_MESSAGE, with the initial metadata on the first.
 * Lock held. */
static void
start_recv_locked(stream *s, bool first)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (first) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = 0;
        n++;
        s->c->initial_md_sent = true;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &s->recv_buf;
    n++;
    imagen__grpc_call_ref(s->c);
    if (grpc_call_start_batch(s->c->call, ops, n, &s->recv_tag, NULL) != GRPC_CALL_OK) {
        IMAGEN_LOG_ERROR_(COMPONENT, "cannot receive on a ModelStreamInfer stream; ending it");
        s->read_done = true;
        if (first)
            s->c->initial_md_sent = false;
        atomic_fetch_sub(&s->c->refs, 1); /* the caller's path holds another */
    }
}

/* Decodes and submits one request; any error is reported for it. */
static void
handle_request(stream *s, grpc_byte_buffer *bb)
{
    imagen_server *srv = imagen__grpc_server(s->c);
    stream_item *it = calloc(1, sizeof(*it));
    imagen__grpc_infer *inf = imagen__grpc_infer_new(imagen__grpc_shm(s->c));
    if (it == NULL || inf == NULL) {
        grpc_byte_buffer_destroy(bb);
        free(it);
        imagen__grpc_infer_free(inf);
        report_error(s, NULL, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory"), NULL);
        return;
    }
    imagen_error *err = imagen__grpc_infer_decode(inf, srv, &bb);
    if (err != NULL) {
        report_error(s, inf, err, NULL);
        imagen__grpc_infer_free(inf);
        free(it);
        return;
    }
    it->s = s;
    it->inf = inf;
    atomic_init(&it->refs, 2);
    imagen__grpc_call_ref(s->c); /* dropped when the item is freed */
    pthread_mutex_lock(&s->lock);
    it->next = s->live;
    if (s->live != NULL)
        s->live->prev = it;
    s->live = it;
    pthread_mutex_unlock(&s->lock);
    err = imagen_server_infer_async(srv, imagen__grpc_infer_request(inf), on_complete, it);
    pthread_mutex_lock(&s->lock);
    if (err != NULL) {
        /* The callback will never run: undo its part. */
        if (it->prev != NULL)
            it->prev->next = it->next;
        else
            s->live = it->next;
        if (it->next != NULL)
            it->next->prev = it->prev;
        pthread_mutex_unlock(&s->lock);
        report_error(s, inf, err, NULL);
        atomic_fetch_sub(&it->refs, 1);
        item_unref(it);
        return;
    }
    it->submitted = true;
    bool cancel_now = s->cancelled || s->failed;
    pthread_mutex_unlock(&s->lock);
    if (cancel_now)
        imagen_request_cancel(imagen__grpc_infer_request(inf));
    item_unref(it);
}

static void
on_recv(imagen__grpc_call *c, bool ok)
{
    stream *s = c->state;
    pthread_mutex_lock(&s->lock);
    grpc_byte_buffer *bb = s->recv_buf;
    s->recv_buf = NULL;
    bool take = ok && bb != NULL && !s->finished && !s->cancelled && !s->failed && !s->quiesced;
    if (!take)
        s->read_done = true; /* half-close (no message), failure or no longer wanted */
    s->handling = take;
    pthread_mutex_unlock(&s->lock);
    if (take) {
        handle_request(s, bb);
        pthread_mutex_lock(&s->lock);
        s->handling = false;
        if (!s->finished && !s->cancelled && !s->failed && !s->quiesced)
            start_recv_locked(s, false);
        else
            s->read_done = true;
    } else {
        if (bb != NULL)
            grpc_byte_buffer_destroy(bb);
        pthread_mutex_lock(&s->lock);
    }
    settle_and_unlock(s);
    imagen__grpc_call_unref(c);
}

static void
on_write(imagen__grpc_call *c, bool ok)
{
    stream *s = c->state;
    pthread_mutex_lock(&s->lock);
    grpc_byte_buffer_destroy(s->writing);
    s->writing = NULL;
    if (!ok)
        s->cancelled = true; /* the client is gone: nothing more can be sent */
    settle_and_unlock(s);
    imagen__grpc_call_unref(c);
}

/* Client gone or deadline expired (completion-queue thread): cancels every
 * submitted request; their completions then find nothing to send. */
static void
on_cancel(imagen__grpc_call *c)
{
    stream *s = c->state;
    pthread_mutex_lock(&s->lock);
    s->cancelled = true;
    size_t n = 0;
    for (stream_item *it = s->live; it != NULL; it = it->next)
        n += it->submitted;
    stream_item **todo = n ? calloc(n, sizeof(*todo)) : NULL;
    size_t k = 0;
    if (todo != NULL) {
        for (stream_item *it = s->live; it != NULL; it = it->next)
            if (it->submitted) {
                atomic_fetch_add(&it->refs, 1);
                todo[k++] = it;
            }
    }
    while (s->head != NULL) {
        out_msg *m = s->head;
        s->head = m->next;
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    s->tail = NULL;
    settle_and_unlock(s);
    for (size_t i = 0; i < k; i++) {
        imagen_request_cancel(imagen__grpc_infer_request(todo[i]->inf));
        item_unref(todo[i]);
    }
    free(todo);
}

/* The server is shutting down (quiescing thread): read no more requests;
 * the stream ends with UNAVAILABLE once those already read have completed
 * and been sent (the core drains them), unless the client half-closed
 * first, in which case it ends normally. */
static void
on_quiesce(imagen__grpc_call *c)
{
    stream *s = c->state;
    pthread_mutex_lock(&s->lock);
    if (!s->read_done) {
        s->quiesced = true;
        s->read_done = true;
    }
    settle_and_unlock(s);
}

/* ======================================================================
 * Handler
 * ==================================================================== */

/* Whether the stream was opened with `triton_grpc_error: true`. */
static bool
wants_grpc_errors(const grpc_metadata_array *md)
{
    for (size_t i = 0; i < md->count; i++) {
        const grpc_metadata *m = &md->metadata[i];
        if (grpc_slice_str_cmp(m->key, "triton_grpc_error") == 0)
            return GRPC_SLICE_LENGTH(m->value) == 4 &&
                   strncasecmp((const char *)GRPC_SLICE_START_PTR(m->value), "true", 4) == 0;
    }
    return false;
}

void
imagen__grpc_model_stream_infer(imagen__grpc_call *c)
{
    stream *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        imagen__grpc_reply_error(c, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory"));
        return;
    }
    s->c = c;
    pthread_mutex_init(&s->lock, NULL);
    s->recv_tag = (imagen__grpc_tag){IMAGEN_GRPC_TAG_OP, c, on_recv};
    s->write_tag = (imagen__grpc_tag){IMAGEN_GRPC_TAG_OP, c, on_write};
    s->errors_end_stream = wants_grpc_errors(&c->request_md);
    c->state = s;
    c->state_free = stream_free;
    c->on_cancel = on_cancel;
    c->on_quiesce = on_quiesce;
    bool tracked = imagen__grpc_track(c);
    pthread_mutex_lock(&s->lock);
    start_recv_locked(s, true);
    if (!tracked)
        s->quiesced = s->read_done = true;
    settle_and_unlock(s);
}
