/*
 * The KServe v2 HTTP/1.1 server: event loops, connections, and the path of
 * a request from the socket to the core and back.
 *
 * Threads. --http-thread-count event loops, each an epoll set that owns the
 * connections it accepted (all loops wait on the one listening socket with
 * EPOLLEXCLUSIVE, so a new connection wakes one of them). A loop reads a
 * request, parses its head (http_parse.c), collects its body, routes it and
 * either answers at once (metadata, health, errors) or submits an inference
 * request to the core and leaves the connection WAITING.
 *
 * Completion. The core calls on_infer_done() on the instance thread that
 * executed the request. For a small response (the common case: a few
 * tensors of a few KiB) that thread encodes the reply and writes it to the
 * non-blocking socket itself, and the connection goes straight back to its
 * loop's reading state: no other thread is woken, which is what makes small
 * requests cheap. Anything else (a large or compressed response, a client
 * that sent more requests meanwhile or hung up, a socket that would block)
 * is handed back to the owning loop through its hand-back list and eventfd,
 * and the loop encodes and writes it, so an instance thread never spends
 * long on a client.
 *
 * Ownership. A connection belongs to its loop except while WAITING, when it
 * belongs to whoever completes the request; `mu` guards the hand-over and
 * the flags both sides look at. A WAITING connection stays registered for
 * hang-up: a client that goes away while its request is still queued has
 * the request cancelled (the core drops it and counts it), which is what
 * Triton does for a closed connection.
 */
#include "http/http_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/copy_stats.h"
#include "common/log.h"
#include "common/percent.h"
#include "common/time.h"

/* A connection with no traffic for this long is closed, so clients that
 * open connections and go quiet cannot exhaust the descriptors. Connections
 * with a request in the core are not subject to it. */
#define HTTP_IDLE_TIMEOUT_NS (300ull * 1000000000ull)
/* After an answer that ends the connection, unread input is drained for at
 * most this long before closing (closing with unread input sends a reset,
 * which can destroy the answer before the client reads it). */
#define HTTP_LINGER_NS (2ull * 1000000000ull)
#define HTTP_SWEEP_INTERVAL_NS 1000000000ull
#define HTTP_DRAIN_POLL_US 10000 /* destroy: poll interval while requests finish */
#define HTTP_DRAIN_MAX_MS 60000  /* destroy: longest wait for in-flight requests */
#define HTTP_DEFAULT_THREAD_COUNT 8
#define HTTP_READ_BUFFER_BYTES 8192u
#define HTTP_READ_BUFFER_MAX (IMAGEN_HTTP_MAX_HEAD_BYTES + HTTP_READ_BUFFER_BYTES)
#define HTTP_BODY_PREALLOC_MAX_BYTES (4u << 20) /* trust Content-Length only this far before data arrives */
#define HTTP_DIRECT_REPLY_MAX_BYTES (64u << 10) /* completions encode and send replies up to this size */
#define HTTP_EVENTS_PER_WAIT 64
#define HTTP_ACCEPTS_PER_WAKE 16
#define HTTP_PATH_INLINE 256
#define HTTP_REPLY_HEAD_MAX 320
#define HTTP_EV_READ (EPOLLIN | EPOLLRDHUP)

typedef struct http_loop http_loop;
typedef struct http_conn http_conn;

struct imagen_http {
    imagen_server *srv; /* borrowed */
    imagen_shm *shm;    /* borrowed; NULL = client shared memory disabled */
    int listen_fd;
    int port;
    size_t max_input; /* bytes */
    http_loop *loops;
    unsigned n_loops;
    atomic_bool quiesced;   /* new connections are closed at once */
    atomic_size_t inflight; /* requests in the core or whose reply is not yet written */
};

struct http_loop {
    imagen_http *http;
    int epfd;
    int wake_fd; /* eventfd: hand-backs queued, or stop */
    pthread_t thread;
    bool started;
    atomic_bool stop;
    pthread_mutex_t mu;                       /* guards the hand-back list */
    http_conn *handback_head, *handback_tail; /* connections returned by completions */
    http_conn *conns;                         /* every open connection (loop thread only) */
    uint64_t now_ns;                          /* at the last wake-up */
    uint64_t next_sweep_ns;
};

typedef enum {
    CONN_READ_HEAD = 0, /* waiting for (the rest of) a request head */
    CONN_READ_BODY,     /* collecting the body */
    CONN_WAITING,       /* the request is in the core (or an admin thread) */
    CONN_WRITING,       /* a reply is being written */
    CONN_LINGER         /* answered and half-closed; draining input until EOF */
} conn_state;

/* One request on a connection; reset between requests. */
typedef struct http_req {
    imagen__http_route route; /* points into path */
    unsigned method;          /* IMAGEN_HTTP_METHOD_* or 0 */
    char path_inline[HTTP_PATH_INLINE];
    char *path; /* path_inline or owned */
    bool keep_alive;
    int minor_version;
    bool chunked;
    imagen__http_chunked chunk;
    uint64_t content_length; /* body bytes still to come when not chunked */
    uint64_t announced;      /* the Content-Length header's value, 0 if none */
    char *body;              /* received bytes (the JSON header only, when split); owned */
    size_t len, cap;
    size_t expected; /* bytes `body` will hold, when announced and within the limit, else 0 */
    /* A binary inference request (Inference-Header-Content-Length) is split
     * as it arrives: the JSON header into `body`, the tensor bytes into
     * `blob`, a buffer of exactly their size. Input tensors then start
     * aligned, and a tensor's buffer has the size of the output the model
     * returns for it, so the allocator reuses one for the other. */
    bool split;
    char *blob; /* owned */
    size_t blob_len, blob_cap, blob_expected;
    bool too_large;    /* body over the limit: discard the rest, answer 400 */
    uint64_t received; /* body bytes offered, counted even while discarding */
    char *inflated;    /* decompressed body; owned */
    char *model;       /* decoded ${M}; owned */
    imagen__http_encoding content_encoding;
    char content_encoding_text[72]; /* for the error message */
    imagen__http_encoding accept;
    char *header_length;      /* Inference-Header-Content-Length value; owned */
    imagen__http_infer *inf;  /* owned */
    imagen_response *resp;    /* from the completion; owned */
    imagen__http_reply reply; /* admin helper thread result */
    bool has_reply;
    bool counted; /* counted in http->inflight */
} http_req;

struct http_conn {
    http_loop *loop;
    int fd;
    conn_state state;
    http_conn *prev, *next; /* loop->conns */
    http_conn *handback_next;
    uint64_t last_active_ns;
    uint32_t interest; /* events registered; 0 after a disarm */
    /* input: unparsed bytes are rbuf[rpos, rlen) */
    char *rbuf;
    size_t rpos, rlen, rcap;
    http_req req;
    /* output: head, body, then blobs; out_off bytes of them sent */
    char head[HTTP_REPLY_HEAD_MAX];
    size_t head_len;
    char *body; /* owned unless body_static */
    size_t body_len;
    bool body_static;
    imagen__http_blob *blobs; /* owned array; the bytes are the response's (req.resp) */
    size_t n_blobs, blob_bytes;
    size_t out_off;
    bool close_after; /* end the connection once the reply is out */
    bool write_failed;
    /* hand-over between the loop and a completion (guarded by mu) */
    pthread_mutex_t mu;
    bool completing; /* the completion has begun: the loop must not cancel */
    bool cancelling; /* the loop is inside imagen_request_cancel() */
    bool deferred;   /* a completion that arrived during cancel left the rest to the loop */
    bool disarmed;   /* the loop changed the registration while WAITING */
    bool req_parked; /* a completion left the finished request for the loop to free */
    bool hangup;     /* the client closed its side */
};

static char listen_tag, wake_tag; /* epoll data for the non-connection fds */

/* ======================================================================
 * Replies
 * ==================================================================== */

static const char *
reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 500 ? "Bad Request" : "Internal Server Error";
    }
}

typedef struct head_writer {
    char *buf;
    size_t len, cap;
    bool ok;
} head_writer;

static void
head_put_n(head_writer *w, const char *s, size_t n)
{
    if (!w->ok || n > w->cap - w->len) {
        w->ok = false;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void
head_put(head_writer *w, const char *s)
{
    head_put_n(w, s, strlen(s));
}

static void
head_put_u64(head_writer *w, uint64_t v)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    head_put_n(w, digits + sizeof(digits) - n, n);
}

/* Sets the reply to write: `body` (owned unless is_static) of `len` bytes.
 * `extra` holds further header lines, each ending in CRLF. The state is
 * left alone: whoever owns the connection moves it to CONN_WRITING (a
 * completion must not, or the loop would take the connection over while the
 * completion still writes). */
static void
conn_set_reply(http_conn *c, int status, const char *ctype, char *body, size_t len, bool is_static, const char *extra)
{
    http_req *r = &c->req;
    if (!r->keep_alive)
        c->close_after = true;
    size_t total = len + c->blob_bytes;
    /* Built by hand: this runs for every reply, and snprintf's format
     * interpretation cost more than the rest of the head together. */
    head_writer w = {c->head, 0, sizeof(c->head), true};
    head_put(&w, "HTTP/1.1 ");
    head_put_u64(&w, (uint64_t)status);
    head_put(&w, " ");
    head_put(&w, reason_phrase(status));
    head_put(&w, "\r\n");
    if (ctype != NULL && total > 0) {
        head_put(&w, "Content-Type: ");
        head_put(&w, ctype);
        head_put(&w, "\r\n");
    }
    head_put(&w, "Content-Length: ");
    head_put_u64(&w, total);
    head_put(&w, "\r\n");
    if (extra != NULL)
        head_put(&w, extra);
    if (c->close_after)
        head_put(&w, "Connection: close\r\n");
    else if (r->minor_version == 0 && r->keep_alive)
        head_put(&w, "Connection: keep-alive\r\n");
    head_put(&w, "\r\n");
    c->head_len = w.ok ? w.len : 0;
    c->body = body;
    c->body_len = len;
    c->body_static = is_static || len == 0;
    c->out_off = 0;
}

static void
conn_reply_json(http_conn *c, int status, const char *json)
{
    conn_set_reply(c, status, "application/json", (char *)json, strlen(json), true, NULL);
}

static void
conn_reply(http_conn *c, imagen__http_reply *reply)
{
    size_t len = 0;
    char *data = NULL;
    bool failed = imagen_buf_failed(&reply->body);
    if (!failed && reply->body.len > 0)
        data = imagen_buf_detach(&reply->body, &len);
    imagen_buf_free(&reply->body);
    if (failed) {
        conn_reply_json(c, 500, "{\"error\":\"out of memory\"}");
        return;
    }
    conn_set_reply(c, reply->status, reply->json ? "application/json" : NULL, data, len, false, NULL);
}

static void
conn_reply_error(http_conn *c, imagen_error *err)
{
    imagen__http_reply reply;
    imagen_buf_init(&reply.body);
    imagen__http_reply_error(&reply, err);
    conn_reply(c, &reply);
}

/* A framing error: answer and end the connection (what follows on the
 * stream cannot be trusted to start a request). */
static void
conn_reply_protocol_error(http_conn *c, int status, const char *message)
{
    c->close_after = true;
    imagen__http_reply reply;
    imagen_buf_init(&reply.body);
    reply.status = status;
    reply.json = true;
    imagen__http_json_error_body(&reply.body, message);
    conn_reply(c, &reply);
}

/* ======================================================================
 * Connections: registration, writing, closing
 * ==================================================================== */

static void
conn_set_interest(http_conn *c, uint32_t events)
{
    if (c->interest == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->interest = events;
    else
        IMAGEN_LOG_WARN_("http", "epoll_ctl on a connection failed: %s", strerror(errno));
}

/* Frees what the current request owns and readies the next. */
/* Frees the bytes the request arrived with (body, split-off binary part,
 * inflated body), once nothing reads them any more. */
static void
req_free_received(http_req *r)
{
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    free(r->blob);
    r->blob = NULL;
    r->blob_len = r->blob_cap = 0;
    free(r->inflated);
    r->inflated = NULL;
}

static void
req_reset(imagen_http *http, http_req *r)
{
    if (r->counted)
        atomic_fetch_sub(&http->inflight, 1);
    imagen_response_free(r->resp);
    imagen__http_infer_free(r->inf);
    imagen_buf_free(&r->reply.body);
    free(r->body);
    free(r->blob);
    free(r->inflated);
    free(r->model);
    free(r->header_length);
    if (r->path != r->path_inline)
        free(r->path);
    memset(r, 0, sizeof(*r));
    r->path = r->path_inline;
    imagen_buf_init(&r->reply.body);
}

static void
out_release(http_conn *c)
{
    if (!c->body_static)
        free(c->body);
    c->body = NULL;
    c->body_len = c->head_len = c->out_off = 0;
    c->body_static = false;
    free(c->blobs);
    c->blobs = NULL;
    c->n_blobs = c->blob_bytes = 0;
}

static void
conn_close(http_conn *c)
{
    http_loop *loop = c->loop;
    imagen_http *http = loop->http;
    close(c->fd); /* also leaves the epoll set */
    if (c->prev)
        c->prev->next = c->next;
    else
        loop->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    out_release(c);
    req_reset(http, &c->req);
    free(c->rbuf);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

typedef enum { WRITE_DONE, WRITE_BLOCKED, WRITE_ERROR } write_result;

/* Writes as much of the reply as the socket takes. Called by whoever owns
 * the connection: its loop, or a completion while WAITING. */
#define HTTP_WRITE_IOVECS 64

/* Fills iov with what remains to send after `off` bytes: the head, the
 * body, then the blobs. Returns the number of entries. */
static int
out_iovecs(http_conn *c, size_t off, struct iovec *iov)
{
    int n = 0;
    const char *seg_data[2] = {c->head, c->body};
    size_t seg_len[2] = {c->head_len, c->body_len};
    for (int s = 0; s < 2; s++) {
        if (off >= seg_len[s]) {
            off -= seg_len[s];
            continue;
        }
        iov[n].iov_base = (void *)(seg_data[s] + off);
        iov[n++].iov_len = seg_len[s] - off;
        off = 0;
    }
    for (size_t i = 0; i < c->n_blobs && n < HTTP_WRITE_IOVECS; i++) {
        if (off >= c->blobs[i].len) {
            off -= c->blobs[i].len;
            continue;
        }
        iov[n].iov_base = (void *)((const char *)c->blobs[i].data + off);
        iov[n++].iov_len = c->blobs[i].len - off;
        off = 0;
    }
    return n;
}

static write_result
conn_write_some(http_conn *c)
{
    size_t total = c->head_len + c->body_len + c->blob_bytes;
    while (c->out_off < total) {
        struct iovec iov[HTTP_WRITE_IOVECS];
        int n = out_iovecs(c, c->out_off, iov);
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (w > 0) {
            c->out_off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return WRITE_BLOCKED;
        c->write_failed = true;
        return WRITE_ERROR;
    }
    return WRITE_DONE;
}

/* ======================================================================
 * Request body
 * ==================================================================== */

/* Appends n bytes to one part of the body, growing it to `expected` (the
 * announced size, believed now that data arrives) or by doubling. */
static bool
part_append(char **data, size_t *len, size_t *cap, size_t expected, size_t max, const char *src, size_t n)
{
    if (*len + n > *cap) {
        size_t ncap = expected >= *len + n ? expected : *cap ? *cap : 4096;
        while (ncap < *len + n)
            ncap = ncap > max / 2 ? max : ncap * 2;
        char *nb = realloc(*data, ncap + 1);
        if (nb == NULL)
            return false;
        *data = nb;
        *cap = ncap;
    }
    memcpy(*data + *len, src, n);
    *len += n;
    (*data)[*len] = '\0';
    return true;
}

/* Body bytes that arrived in the read buffer (or from the chunked decoder):
 * copied into the body, or into its two parts when split. */
static bool
append_body(void *ctx, const char *data, size_t n)
{
    http_conn *c = ctx;
    http_req *r = &c->req;
    size_t max = c->loop->http->max_input;
    r->received += n;
    if (r->too_large)
        return true;
    if (n > max - r->len - r->blob_len) {
        r->too_large = true;
        free(r->body);
        free(r->blob);
        r->body = r->blob = NULL;
        r->len = r->cap = r->blob_len = r->blob_cap = 0;
        return true;
    }
    imagen_copy_stats_add(IMAGEN_COPY_HTTP, IMAGEN_COPY_INPUT, n);
    if (r->split && r->len < r->expected) {
        size_t head = n < r->expected - r->len ? n : r->expected - r->len;
        if (!part_append(&r->body, &r->len, &r->cap, r->expected, max, data, head))
            return false;
        data += head;
        n -= head;
    }
    if (n == 0)
        return true;
    if (r->split)
        return part_append(&r->blob, &r->blob_len, &r->blob_cap, r->blob_expected, max, data, n);
    return part_append(&r->body, &r->len, &r->cap, r->expected, max, data, n);
}

/* Makes room for up to `want` bytes at the end of a part; returns where. */
static char *
part_room(char **data, size_t *len, size_t *cap, size_t expected, size_t want, size_t *room)
{
    if (*cap == *len) {
        /* The preallocation is full, so data does arrive: believe the
         * announced length now (one buffer of exactly that size). */
        size_t ncap = expected > *cap ? expected : *cap + want;
        char *nb = realloc(*data, ncap + 1);
        if (nb == NULL)
            return NULL;
        *data = nb;
        *cap = ncap;
    }
    *room = *cap - *len < want ? *cap - *len : want;
    return *data + *len;
}

/* Where to receive up to `want` more body bytes straight from the socket
 * (no copy): the body, or the part of a split body the next bytes belong
 * to; NULL when the body is being discarded (or out of memory). *blob tells
 * which part. */
static char *
body_room(http_req *r, size_t want, size_t *room, bool *blob)
{
    *blob = false;
    if (r->too_large)
        return NULL;
    if (r->split && r->len < r->expected) {
        size_t head = want < r->expected - r->len ? want : r->expected - r->len;
        return part_room(&r->body, &r->len, &r->cap, r->expected, head, room);
    }
    if (r->split) {
        *blob = true;
        return part_room(&r->blob, &r->blob_len, &r->blob_cap, r->blob_expected, want, room);
    }
    return part_room(&r->body, &r->len, &r->cap, r->expected, want, room);
}

/* ======================================================================
 * Inference
 * ==================================================================== */

/* The reply to a finished inference request, encoded into the connection's
 * output. Frees the request's output bytes, and unless `keep_request` its
 * input bytes, as soon as the reply holds what it needs. Runs on the
 * completing thread or on the loop. */
static void
prepare_infer_reply(http_conn *c, bool keep_request)
{
    http_req *r = &c->req;
    const imagen_error *rerr = imagen_response_error(r->resp);
    if (rerr != NULL) {
        conn_reply_error(c, imagen_error_new(imagen_error_code_of(rerr), "%s", imagen_error_message(rerr)));
        return;
    }
    imagen_buf out = IMAGEN_BUF_INIT;
    size_t json_len = 0;
    bool binary = false;
    /* Binary outputs go out from the response's own memory (no copy) unless
     * the reply is compressed. */
    bool by_reference = r->accept == IMAGEN_HTTP_ENC_IDENTITY;
    imagen__http_blob *blobs = NULL;
    size_t n_blobs = 0;
    imagen_error *err =
        imagen__http_infer_encode(r->inf, r->resp, &out, &json_len, &binary, by_reference ? &blobs : NULL, &n_blobs);
    if (n_blobs == 0) {
        imagen_response_free(r->resp);
        r->resp = NULL;
    } else {
        c->blobs = blobs; /* r->resp lives until the reply is written */
        c->n_blobs = n_blobs;
        for (size_t i = 0; i < n_blobs; i++)
            c->blob_bytes += blobs[i].len;
    }
    if (!keep_request) {
        imagen__http_infer_free(r->inf);
        r->inf = NULL;
        req_free_received(r);
    }
    if (err != NULL) {
        imagen_buf_free(&out);
        conn_reply_error(c, err);
        return;
    }
    size_t len = 0;
    char *data = imagen_buf_detach(&out, &len);
    if (data == NULL && len == 0 && imagen_buf_failed(&out)) {
        conn_reply_error(c, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory encoding the response"));
        return;
    }
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
    char extra[128];
    int n = 0;
    if (binary)
        n = snprintf(extra, sizeof(extra), "Inference-Header-Content-Length: %zu\r\n", json_len);
    if (enc_name != NULL)
        snprintf(extra + n, sizeof(extra) - (size_t)n, "Content-Encoding: %s\r\n", enc_name);
    else
        extra[n] = '\0';
    conn_set_reply(c, 200, binary ? "application/octet-stream" : "application/json", data, len, false, extra);
}

/* True when a completion may encode and send the reply itself. */
static bool
reply_is_small(const http_req *r)
{
    if (r->accept != IMAGEN_HTTP_ENC_IDENTITY || r->has_reply)
        return false;
    size_t bytes = 0, n = imagen_response_output_count(r->resp);
    for (size_t i = 0; i < n; i++) {
        bytes += imagen_response_output(r->resp, i)->byte_size;
        if (bytes > HTTP_DIRECT_REPLY_MAX_BYTES / 4) /* JSON text is up to ~4x the binary size */
            return false;
    }
    return true;
}

static void
handback(http_conn *c)
{
    http_loop *loop = c->loop;
    pthread_mutex_lock(&loop->mu);
    bool was_empty = loop->handback_head == NULL;
    c->handback_next = NULL;
    if (loop->handback_tail)
        loop->handback_tail->handback_next = c;
    else
        loop->handback_head = c;
    loop->handback_tail = c;
    pthread_mutex_unlock(&loop->mu);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(loop->wake_fd, &one, sizeof(one));
        (void)w; /* a full counter already means "wake up" */
    }
}

/* Completion callback: runs on an instance thread (or on the loop, for a
 * request cancelled there). See the comment at the top of the file. */
static void
on_infer_done(imagen_response *response, void *user_data)
{
    http_conn *c = user_data;
    pthread_mutex_lock(&c->mu);
    c->completing = true;
    c->req.resp = response;
    if (c->cancelling) {
        /* The loop is inside imagen_request_cancel() (perhaps this very
         * call); it finishes the request when that returns. */
        c->deferred = true;
        pthread_mutex_unlock(&c->mu);
        return;
    }
    bool disarmed = c->disarmed;
    pthread_mutex_unlock(&c->mu);

    bool reading_next = false;
    if (!disarmed && reply_is_small(&c->req)) {
        /* The request's own memory was allocated by the loop thread: the
         * loop frees it too (req_parked), so that glibc's per-thread caches
         * recycle it instead of every block crossing threads through the
         * shared arena's lock. */
        prepare_infer_reply(c, true);
        if (conn_write_some(c) == WRITE_DONE && !c->close_after && c->rpos == c->rlen)
            reading_next = true;
    }
    pthread_mutex_lock(&c->mu);
    if (reading_next && c->disarmed && !c->hangup) {
        /* The client sent its next request before this thread got here
         * (it already had the reply) and the loop narrowed the
         * registration: restore it, and the loop sees the input as usual
         * (level-triggered) without a hand-back round. */
        struct epoll_event ev = {.events = HTTP_EV_READ, .data.ptr = c};
        if (epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
            c->interest = HTTP_EV_READ;
            c->disarmed = false;
        }
    }
    if (reading_next && !c->disarmed) {
        imagen_http *http = c->loop->http;
        bool counted = c->req.counted;
        c->req.counted = false;
        out_release(c);
        c->req_parked = true; /* req_reset() on the loop, before the next request */
        c->completing = false;
        c->last_active_ns = imagen_time_now_ns();
        c->state = CONN_READ_HEAD; /* the loop owns it again from here */
        pthread_mutex_unlock(&c->mu);
        /* Last, and not through c: once the count can reach zero, shutdown
         * may free the connection. */
        if (counted)
            atomic_fetch_sub(&http->inflight, 1);
        return;
    }
    pthread_mutex_unlock(&c->mu);
    /* The request has executed: nothing reads its input bytes any more
     * (encoding needs only the response and the output specifications, which
     * the infer object copied). Free them before the hand-back, so that a
     * large request waiting for its loop holds its output, not both. */
    http_req *r = &c->req;
    if (!reading_next && !r->has_reply)
        req_free_received(r);
    handback(c);
}

typedef enum { DISPATCH_REPLY, DISPATCH_WAITING } dispatch_result;

static dispatch_result
start_infer(http_conn *c, const char *body, size_t len)
{
    imagen_http *http = c->loop->http;
    http_req *r = &c->req;
    /* The JSON header and the binary data that follows it. */
    const char *json = body ? body : "", *binary = NULL;
    size_t json_len = len, binary_len = 0;
    if (r->split) {
        binary = r->blob;
        binary_len = r->blob_len;
    } else if (r->header_length != NULL) {
        imagen_error *err = imagen__http_parse_header_length(r->header_length, len, &json_len);
        if (err != NULL) {
            conn_reply_error(c, err);
            return DISPATCH_REPLY;
        }
        binary = json + json_len;
        binary_len = len - json_len;
    }
    if (r->header_length != NULL && json_len == 0)
        json = NULL; /* a raw binary request */
    imagen_error *err = imagen__http_infer_build(http->srv, http->shm, r->model, r->route.version, json, json_len,
                                                 binary, binary_len, http->max_input, &r->inf);
    if (err != NULL) {
        conn_reply_error(c, err);
        return DISPATCH_REPLY;
    }
    /* A completion may return the connection to reading without touching
     * the registration, so it must be the reading one now. */
    conn_set_interest(c, HTTP_EV_READ);
    r->counted = true;
    atomic_fetch_add(&http->inflight, 1);
    c->state = CONN_WAITING;
    err = imagen_server_infer_async(http->srv, imagen__http_infer_request(r->inf), on_infer_done, c);
    if (err != NULL) {
        c->state = CONN_READ_HEAD;
        conn_reply_error(c, err);
        return DISPATCH_REPLY;
    }
    /* From here the connection may already be back in reading state or in
     * the hand-back list: the caller must not touch it. */
    return DISPATCH_WAITING;
}

/* ======================================================================
 * Load / unload off the loops
 * ==================================================================== */

static void *
admin_thread(void *arg)
{
    http_conn *c = arg;
    http_req *r = &c->req;
    imagen_http *http = c->loop->http;
    const char *body = r->inflated ? r->inflated : r->body;
    imagen__http_reply reply;
    imagen_buf_init(&reply.body);
    imagen__http_admin_handle(http->srv, http->shm, &r->route, r->model, body ? body : "", body ? r->len : 0, &reply);
    pthread_mutex_lock(&c->mu);
    r->reply = reply;
    r->has_reply = true;
    c->completing = true;
    pthread_mutex_unlock(&c->mu);
    handback(c);
    return NULL;
}

static dispatch_result
start_admin_async(http_conn *c)
{
    imagen_http *http = c->loop->http;
    conn_set_interest(c, HTTP_EV_READ);
    c->req.counted = true;
    atomic_fetch_add(&http->inflight, 1);
    c->state = CONN_WAITING;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, admin_thread, c);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        admin_thread(c); /* run inline; the hand-back still resumes it */
    return DISPATCH_WAITING;
}

/* ======================================================================
 * Routing a complete request
 * ==================================================================== */

static dispatch_result
route_request(http_conn *c)
{
    imagen_http *http = c->loop->http;
    http_req *r = &c->req;
    const imagen__http_route *route = &r->route;
    if (route->kind == IMAGEN_HTTP_ROUTE_NOT_FOUND) {
        conn_reply_json(c, 404, "{\"error\":\"Not Found\"}");
        return DISPATCH_REPLY;
    }
    if ((route->methods & r->method) == 0) {
        conn_reply_json(c, 405, "{\"error\":\"Method Not Allowed\"}");
        return DISPATCH_REPLY;
    }
    if (r->too_large) {
        conn_reply_error(c, imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                             "request body of %llu bytes exceeds the maximum input size of "
                                             "%zu bytes (--http-max-input-size)",
                                             (unsigned long long)(r->announced ? r->announced : r->received),
                                             http->max_input));
        return DISPATCH_REPLY;
    }
    if (r->content_encoding == IMAGEN_HTTP_ENC_UNKNOWN) {
        conn_reply_error(c, imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unsupported Content-Encoding '%.64s'",
                                             r->content_encoding_text));
        return DISPATCH_REPLY;
    }
    const char *body = r->body;
    size_t len = r->len;
    if (r->content_encoding != IMAGEN_HTTP_ENC_IDENTITY && len > 0) {
        size_t out_len = 0;
        imagen_error *err =
            imagen__http_inflate(r->content_encoding, r->body, r->len, http->max_input, &r->inflated, &out_len);
        if (err != NULL) {
            conn_reply_error(c, err);
            return DISPATCH_REPLY;
        }
        free(r->body);
        r->body = NULL;
        r->cap = 0;
        body = r->inflated;
        len = r->len = out_len;
    }
    if (route->model != NULL) {
        bool has_nul = false;
        r->model = imagen_percent_decode(route->model, route->model_len, &has_nul);
        if (r->model == NULL) {
            conn_reply_error(c, imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory"));
            return DISPATCH_REPLY;
        }
        if (has_nul) {
            conn_reply_error(c,
                             imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Request for unknown model: '%.*s' is not found",
                                              (int)route->model_len, route->model));
            return DISPATCH_REPLY;
        }
    }
    switch (route->kind) {
    case IMAGEN_HTTP_ROUTE_INFER:
        return start_infer(c, body, len);
    case IMAGEN_HTTP_ROUTE_REPO_LOAD:
    case IMAGEN_HTTP_ROUTE_REPO_UNLOAD:
        if (route->repo_len == 0)
            return start_admin_async(c);
        break;
    default:
        break;
    }
    imagen__http_reply reply;
    imagen_buf_init(&reply.body);
    const char *admin_body = r->method == IMAGEN_HTTP_METHOD_POST ? (body ? body : "") : NULL;
    imagen__http_admin_handle(http->srv, http->shm, route, r->model, admin_body, admin_body ? len : 0, &reply);
    conn_reply(c, &reply);
    return DISPATCH_REPLY;
}

/* Routes a complete request. A request answered at once leaves the
 * connection WRITING; one in the core (or an admin thread) leaves it
 * WAITING, and then the caller must not touch the connection. */
static dispatch_result
dispatch(http_conn *c)
{
    dispatch_result d = route_request(c);
    if (d == DISPATCH_REPLY)
        c->state = CONN_WRITING;
    return d;
}

/* A framing error: answer and end the connection. */
static void
conn_fail(http_conn *c, int status, const char *message)
{
    conn_reply_protocol_error(c, status, message);
    c->state = CONN_WRITING;
}

/* ======================================================================
 * Reading a request
 * ==================================================================== */

/* The JSON header's length from an Inference-Header-Content-Length value,
 * when it is a plain number below the body's length; otherwise (absent,
 * malformed, too large: start_infer() reports those) the body stays whole. */
static bool
split_point(const char *value, size_t total, size_t *json_len)
{
    if (value == NULL)
        return false;
    imagen_error *err = imagen__http_parse_header_length(value, total, json_len);
    if (err != NULL) {
        imagen_error_free(err);
        return false;
    }
    return *json_len < total;
}

/* Takes in a parsed head: copies what outlives the read buffer and decides
 * how the body is framed. Returns false when the connection must close
 * (out of memory). */
static bool
start_request(http_conn *c, const imagen__http_head *h)
{
    imagen_http *http = c->loop->http;
    http_req *r = &c->req;
    r->keep_alive = h->keep_alive;
    r->minor_version = h->minor_version;
    char method[16];
    size_t ml = h->method_len < sizeof(method) ? h->method_len : 0;
    memcpy(method, h->method, ml);
    method[ml] = '\0';
    r->method = imagen__http_method_bit(method);
    if (h->path_len >= HTTP_PATH_INLINE && (r->path = malloc(h->path_len + 1)) == NULL) {
        r->path = r->path_inline;
        return false;
    }
    memcpy(r->path, h->path, h->path_len);
    r->path[h->path_len] = '\0';
    imagen__http_route_match(r->path, &r->route);

    r->content_encoding = IMAGEN_HTTP_ENC_IDENTITY;
    if (h->content_encoding != NULL) {
        size_t n = h->content_encoding_len < sizeof(r->content_encoding_text) - 1
                       ? h->content_encoding_len
                       : sizeof(r->content_encoding_text) - 1;
        memcpy(r->content_encoding_text, h->content_encoding, n);
        r->content_encoding_text[n] = '\0';
        r->content_encoding = n == h->content_encoding_len
                                  ? imagen__http_parse_content_encoding(r->content_encoding_text)
                                  : IMAGEN_HTTP_ENC_UNKNOWN;
    }
    if (h->accept_encoding != NULL) {
        char *ae = strndup(h->accept_encoding, h->accept_encoding_len);
        if (ae == NULL)
            return false;
        r->accept = imagen__http_select_accept_encoding(ae);
        free(ae);
    }
    if (h->infer_header_length != NULL &&
        (r->header_length = strndup(h->infer_header_length, h->infer_header_length_len)) == NULL)
        return false;

    r->chunked = h->chunked;
    if (r->chunked) {
        imagen__http_chunked_init(&r->chunk);
    } else if (h->content_length > 0) {
        r->content_length = r->announced = h->content_length;
        if (h->content_length > http->max_input) {
            r->too_large = true;
        } else {
            size_t total = (size_t)h->content_length, json_len = 0;
            r->split = r->route.kind == IMAGEN_HTTP_ROUTE_INFER && r->content_encoding == IMAGEN_HTTP_ENC_IDENTITY &&
                       split_point(r->header_length, total, &json_len);
            r->expected = r->split ? json_len : total;
            r->blob_expected = r->split ? total - json_len : 0;
            /* Before data arrives, trust the announced sizes only this far. */
            size_t pre = r->expected < HTTP_BODY_PREALLOC_MAX_BYTES ? r->expected : HTTP_BODY_PREALLOC_MAX_BYTES;
            if ((r->body = malloc(pre + 1)) != NULL) {
                r->cap = pre;
                r->body[0] = '\0';
            }
            if (r->split) {
                size_t bpre =
                    r->blob_expected < HTTP_BODY_PREALLOC_MAX_BYTES ? r->blob_expected : HTTP_BODY_PREALLOC_MAX_BYTES;
                if ((r->blob = malloc(bpre + 1)) != NULL) {
                    r->blob_cap = bpre;
                    r->blob[0] = '\0';
                }
            }
        }
    }
    return true;
}

typedef enum { READ_MORE, READ_BLOCKED, READ_CLOSED } read_result;

/* Reads more input into rbuf. On READ_CLOSED the connection is gone. */
static read_result
conn_fill(http_conn *c)
{
    if (c->rpos > 0 && c->rpos == c->rlen) {
        c->rpos = c->rlen = 0;
    } else if (c->rpos > 0 && c->rlen == c->rcap) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    if (c->rlen == c->rcap) {
        size_t ncap = c->rcap ? c->rcap * 2 : HTTP_READ_BUFFER_BYTES;
        if (ncap > HTTP_READ_BUFFER_MAX)
            ncap = HTTP_READ_BUFFER_MAX;
        if (ncap == c->rcap)
            return READ_BLOCKED; /* full: the parser reports the head as too large */
        char *nb = realloc(c->rbuf, ncap);
        if (nb == NULL) {
            conn_close(c);
            return READ_CLOSED;
        }
        c->rbuf = nb;
        c->rcap = ncap;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (n > 0) {
            c->rlen += (size_t)n;
            c->last_active_ns = c->loop->now_ns;
            return READ_MORE;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return READ_BLOCKED;
        conn_close(c); /* EOF (a request cut short, or just the end) or an error */
        return READ_CLOSED;
    }
}

/* Sends "100 Continue" when the client waits for it before the body. */
static bool
send_continue(http_conn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    ssize_t w;
    do
        w = send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    /* 25 bytes into an empty send buffer: anything short means a dead peer. */
    return w == (ssize_t)(sizeof(cont) - 1);
}

/* Runs the connection's state machine until it must wait for the socket or
 * the core. The connection may be closed (freed) on return. */
static void
conn_drive(http_conn *c)
{
    imagen_http *http = c->loop->http;
    for (;;) {
        switch (c->state) {
        case CONN_WRITING: {
            write_result w = c->write_failed ? WRITE_ERROR : conn_write_some(c);
            if (w == WRITE_BLOCKED) {
                conn_set_interest(c, EPOLLOUT);
                return;
            }
            if (w == WRITE_ERROR) {
                conn_close(c);
                return;
            }
            c->last_active_ns = c->loop->now_ns;
            out_release(c);
            req_reset(http, &c->req);
            if (c->close_after) {
                shutdown(c->fd, SHUT_WR);
                c->state = CONN_LINGER;
                c->rpos = c->rlen = 0;
                conn_set_interest(c, EPOLLIN | EPOLLRDHUP);
                continue;
            }
            c->state = CONN_READ_HEAD;
            continue;
        }
        case CONN_READ_HEAD: {
            if (c->rpos < c->rlen) {
                imagen__http_head h;
                int status = 400;
                const char *msg = NULL;
                imagen__http_parse_result pr =
                    imagen__http_parse_head(c->rbuf + c->rpos, c->rlen - c->rpos, &h, &status, &msg);
                if (pr == IMAGEN_HTTP_PARSE_ERROR) {
                    conn_fail(c, status, msg);
                    continue;
                }
                if (pr == IMAGEN_HTTP_PARSE_OK) {
                    c->rpos += h.head_len;
                    if (!start_request(c, &h)) {
                        conn_close(c);
                        return;
                    }
                    http_req *r = &c->req;
                    bool has_body = r->chunked || r->content_length > 0;
                    if (has_body && h.expect_continue) {
                        if (r->too_large) {
                            /* Refuse before the client sends the body. */
                            c->close_after = true;
                            if (dispatch(c) == DISPATCH_WAITING)
                                return;
                            continue;
                        }
                        if (c->rpos == c->rlen && !send_continue(c)) {
                            conn_close(c);
                            return;
                        }
                    }
                    if (has_body) {
                        c->state = CONN_READ_BODY;
                        continue;
                    }
                    if (dispatch(c) == DISPATCH_WAITING)
                        return;
                    continue;
                }
            }
            read_result rr = conn_fill(c);
            if (rr == READ_CLOSED)
                return;
            if (rr == READ_BLOCKED) {
                if (c->rlen - c->rpos >= HTTP_READ_BUFFER_MAX - HTTP_READ_BUFFER_BYTES) {
                    conn_fail(c, 431, "request header fields too large");
                    continue;
                }
                conn_set_interest(c, HTTP_EV_READ);
                return;
            }
            continue;
        }
        case CONN_READ_BODY: {
            http_req *r = &c->req;
            bool done;
            if (r->chunked) {
                const char *msg = NULL;
                size_t used = c->rlen > c->rpos ? imagen__http_chunked_feed(&r->chunk, c->rbuf + c->rpos,
                                                                            c->rlen - c->rpos, append_body, c, &msg)
                                                : 0;
                if (used == (size_t)-1) {
                    conn_fail(c, 400, msg);
                    continue;
                }
                c->rpos += used;
                done = imagen__http_chunked_done(&r->chunk);
            } else {
                size_t avail = c->rlen - c->rpos;
                size_t take = (uint64_t)avail < r->content_length ? avail : (size_t)r->content_length;
                if (take > 0) {
                    if (!append_body(c, c->rbuf + c->rpos, take)) {
                        conn_close(c);
                        return;
                    }
                    c->rpos += take;
                    r->content_length -= take;
                }
                done = r->content_length == 0;
                if (!done) {
                    /* The rest straight from the socket into the body. */
                    char scratch[16384];
                    size_t want = r->content_length > (1u << 30) ? (1u << 30) : (size_t)r->content_length;
                    size_t room = 0;
                    bool to_blob = false;
                    char *dst = body_room(r, want, &room, &to_blob);
                    if (dst == NULL && !r->too_large) {
                        conn_close(c);
                        return;
                    }
                    if (dst == NULL) {
                        dst = scratch;
                        room = want < sizeof(scratch) ? want : sizeof(scratch);
                    }
                    ssize_t n = recv(c->fd, dst, room, 0);
                    if (n > 0) {
                        c->last_active_ns = c->loop->now_ns;
                        r->content_length -= (size_t)n;
                        r->received += (size_t)n;
                        if (!r->too_large && to_blob) {
                            r->blob_len += (size_t)n;
                            r->blob[r->blob_len] = '\0';
                        } else if (!r->too_large) {
                            r->len += (size_t)n;
                            r->body[r->len] = '\0';
                        }
                        continue;
                    }
                    if (n < 0 && errno == EINTR)
                        continue;
                    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                        conn_set_interest(c, HTTP_EV_READ);
                        return;
                    }
                    conn_close(c);
                    return;
                }
            }
            if (done) {
                if (dispatch(c) == DISPATCH_WAITING)
                    return;
                continue;
            }
            read_result rr = conn_fill(c);
            if (rr == READ_CLOSED)
                return;
            if (rr == READ_BLOCKED) {
                conn_set_interest(c, HTTP_EV_READ);
                return;
            }
            continue;
        }
        case CONN_LINGER: {
            char sink[4096];
            for (;;) {
                ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
                if (n > 0)
                    continue;
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    return;
                conn_close(c);
                return;
            }
        }
        case CONN_WAITING:
            return;
        }
    }
}

/* The loop takes a connection back from a completion (hand-back list, or
 * right after a cancel that completed the request on the loop). */
static void
conn_resume(http_conn *c)
{
    pthread_mutex_lock(&c->mu);
    bool hangup = c->hangup;
    c->completing = c->cancelling = c->deferred = c->disarmed = c->hangup = false;
    pthread_mutex_unlock(&c->mu);
    http_req *r = &c->req;
    if (c->head_len == 0) { /* not encoded by the completion */
        if (r->has_reply) {
            imagen__http_reply reply = r->reply;
            imagen_buf_init(&r->reply.body);
            r->has_reply = false;
            conn_reply(c, &reply);
        } else {
            prepare_infer_reply(c, false);
        }
    }
    c->state = CONN_WRITING;
    if (hangup)
        c->close_after = true;
    /* The registration may have been narrowed while waiting. */
    c->interest = 0;
    struct epoll_event ev = {.events = HTTP_EV_READ, .data.ptr = c};
    if (epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->interest = HTTP_EV_READ;
    conn_drive(c);
}

/* An event on a WAITING connection: the client sent more (pipelining) or
 * went away. Narrows the registration so level-triggered readiness does not
 * spin, and cancels the request on hang-up. Called with c->mu held;
 * returns with it released. */
static void
conn_event_while_waiting(http_conn *c, uint32_t events)
{
    bool hang = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    if (hang)
        c->hangup = true;
    c->disarmed = true;
    struct epoll_event ev = {.events = (c->hangup ? 0u : (uint32_t)EPOLLRDHUP) | EPOLLONESHOT, .data.ptr = c};
    epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->interest = 0;
    imagen_request *cancel = NULL;
    if (hang && !c->completing && c->req.inf != NULL) {
        cancel = imagen__http_infer_request(c->req.inf);
        c->cancelling = true;
    }
    pthread_mutex_unlock(&c->mu);
    if (cancel == NULL)
        return;
    imagen_request_cancel(cancel);
    pthread_mutex_lock(&c->mu);
    c->cancelling = false;
    bool deferred = c->deferred;
    pthread_mutex_unlock(&c->mu);
    if (deferred)
        conn_resume(c);
}

static void
conn_event(http_conn *c, uint32_t events)
{
    pthread_mutex_lock(&c->mu);
    if (c->state == CONN_WAITING) {
        conn_event_while_waiting(c, events);
        return;
    }
    pthread_mutex_unlock(&c->mu);
    if (c->req_parked) {
        req_reset(c->loop->http, &c->req);
        c->req_parked = false;
    }
    if (c->state == CONN_WRITING && (events & (EPOLLHUP | EPOLLERR)) && !(events & EPOLLOUT)) {
        conn_close(c);
        return;
    }
    conn_drive(c);
}

/* ======================================================================
 * The loops
 * ==================================================================== */

static void
loop_accept(http_loop *loop)
{
    imagen_http *http = loop->http;
    for (int i = 0; i < HTTP_ACCEPTS_PER_WAKE; i++) {
        int fd = accept4(http->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                IMAGEN_LOG_WARN_("http", "accept failed: %s", strerror(errno));
            return;
        }
        if (atomic_load(&http->quiesced)) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        http_conn *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->loop = loop;
        c->fd = fd;
        c->state = CONN_READ_HEAD;
        c->req.path = c->req.path_inline;
        imagen_buf_init(&c->req.reply.body);
        c->last_active_ns = loop->now_ns;
        pthread_mutex_init(&c->mu, NULL);
        struct epoll_event ev = {.events = HTTP_EV_READ, .data.ptr = c};
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            pthread_mutex_destroy(&c->mu);
            free(c);
            close(fd);
            continue;
        }
        c->interest = HTTP_EV_READ;
        c->next = loop->conns;
        if (loop->conns)
            loop->conns->prev = c;
        loop->conns = c;
    }
}

static void
loop_drain_handbacks(http_loop *loop)
{
    pthread_mutex_lock(&loop->mu);
    http_conn *c = loop->handback_head;
    loop->handback_head = loop->handback_tail = NULL;
    pthread_mutex_unlock(&loop->mu);
    while (c != NULL) {
        http_conn *next = c->handback_next;
        conn_resume(c);
        c = next;
    }
}

/* Closes connections idle past the timeout and lingering ones past theirs. */
static void
loop_sweep(http_loop *loop)
{
    http_conn *c = loop->conns;
    while (c != NULL) {
        http_conn *next = c->next;
        pthread_mutex_lock(&c->mu);
        conn_state st = c->state;
        pthread_mutex_unlock(&c->mu);
        /* A completion stamps the clock itself, so last_active_ns may be
         * later than the loop's cached now. */
        uint64_t idle = loop->now_ns > c->last_active_ns ? loop->now_ns - c->last_active_ns : 0;
        if (st != CONN_WAITING && (idle > HTTP_IDLE_TIMEOUT_NS || (st == CONN_LINGER && idle > HTTP_LINGER_NS)))
            conn_close(c);
        c = next;
    }
}

static void *
loop_main(void *arg)
{
    http_loop *loop = arg;
    struct epoll_event events[HTTP_EVENTS_PER_WAIT];
    while (!atomic_load(&loop->stop)) {
        int n = epoll_wait(loop->epfd, events, HTTP_EVENTS_PER_WAIT, (int)(HTTP_SWEEP_INTERVAL_NS / 1000000u));
        if (n < 0 && errno != EINTR) {
            IMAGEN_LOG_ERROR_("http", "epoll_wait failed: %s", strerror(errno));
            break;
        }
        loop->now_ns = imagen_time_now_ns();
        bool woken = false;
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            if (p == &listen_tag) {
                loop_accept(loop);
            } else if (p == &wake_tag) {
                uint64_t v;
                ssize_t r = read(loop->wake_fd, &v, sizeof(v));
                (void)r;
                woken = true;
            } else {
                conn_event(p, events[i].events);
            }
        }
        /* Hand-backs last: resuming may close a connection that still had
         * an event in this batch. */
        if (woken)
            loop_drain_handbacks(loop);
        if (loop->now_ns >= loop->next_sweep_ns) {
            loop_sweep(loop);
            loop->next_sweep_ns = loop->now_ns + HTTP_SWEEP_INTERVAL_NS;
        }
    }
    return NULL;
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

static imagen_error *
open_listener(const imagen_http_options *opts, int *fd_out, int *port_out)
{
    struct sockaddr_storage ss;
    unsigned ss_len = 0;
    bool ipv6 = false;
    IMAGEN_RETURN_IF_ERROR(imagen__http_resolve(opts->address, opts->port, &ss, &ss_len, &ipv6));
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "cannot create the HTTP socket: %s", strerror(errno));
    int one = 1;
    /* SO_REUSEADDR: a restarted server can bind while old connections sit
     * in TIME_WAIT. SO_REUSEPORT only when asked (--reuse-http-port): it
     * lets another process share the port silently. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (opts->reuse_port)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, ss_len) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "cannot start the HTTP server on %s:%d: %s",
                                opts->address ? opts->address : "0.0.0.0", opts->port, strerror(e));
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    int port = opts->port;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                 : ((struct sockaddr_in *)&bound)->sin_port);
    *fd_out = fd;
    *port_out = port;
    return NULL;
}

static void
loops_stop(imagen_http *http)
{
    for (unsigned i = 0; i < http->n_loops; i++) {
        http_loop *loop = &http->loops[i];
        if (!loop->started)
            continue;
        atomic_store(&loop->stop, true);
        uint64_t one = 1;
        ssize_t w = write(loop->wake_fd, &one, sizeof(one));
        (void)w;
        pthread_join(loop->thread, NULL);
        loop->started = false;
    }
    for (unsigned i = 0; i < http->n_loops; i++) {
        http_loop *loop = &http->loops[i];
        while (loop->conns != NULL)
            conn_close(loop->conns);
        if (loop->epfd >= 0)
            close(loop->epfd);
        if (loop->wake_fd >= 0)
            close(loop->wake_fd);
        pthread_mutex_destroy(&loop->mu);
    }
    free(http->loops);
    http->loops = NULL;
    http->n_loops = 0;
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
    imagen_error *err = open_listener(opts, &http->listen_fd, &http->port);
    if (err != NULL) {
        free(http);
        return err;
    }
    unsigned n = opts->thread_count > 0 ? (unsigned)opts->thread_count : HTTP_DEFAULT_THREAD_COUNT;
    http->loops = calloc(n, sizeof(http_loop));
    if (http->loops == NULL) {
        close(http->listen_fd);
        free(http);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    http->n_loops = n;
    for (unsigned i = 0; i < n; i++) {
        http_loop *loop = &http->loops[i];
        loop->http = http;
        loop->epfd = loop->wake_fd = -1;
        pthread_mutex_init(&loop->mu, NULL);
        atomic_init(&loop->stop, false);
    }
    for (unsigned i = 0; i < n && err == NULL; i++) {
        http_loop *loop = &http->loops[i];
        loop->epfd = epoll_create1(EPOLL_CLOEXEC);
        loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event lev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &listen_tag};
        struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &wake_tag};
        if (loop->epfd < 0 || loop->wake_fd < 0 || epoll_ctl(loop->epfd, EPOLL_CTL_ADD, http->listen_fd, &lev) != 0 ||
            epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wake_fd, &wev) != 0) {
            err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "cannot set up the HTTP event loop: %s", strerror(errno));
            break;
        }
        if (pthread_create(&loop->thread, NULL, loop_main, loop) != 0) {
            err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "cannot start an HTTP thread");
            break;
        }
        loop->started = true;
    }
    if (err != NULL) {
        loops_stop(http);
        close(http->listen_fd);
        free(http);
        return err;
    }
    IMAGEN_LOG_VERBOSE_("http", "HTTP server listening at %s:%d with %u threads",
                        opts->address ? opts->address : "0.0.0.0", http->port, n);
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
    /* Every request in the core completes (the core finishes or fails each
     * on stop) and its reply is written before the loops stop. */
    uint64_t deadline = imagen_time_now_ns() + (uint64_t)HTTP_DRAIN_MAX_MS * 1000000u;
    while (atomic_load(&http->inflight) > 0 && imagen_time_now_ns() < deadline)
        usleep(HTTP_DRAIN_POLL_US);
    if (atomic_load(&http->inflight) > 0) {
        IMAGEN_LOG_ERROR_("http", "%zu requests still in flight at shutdown; leaving the HTTP server running",
                          (size_t)atomic_load(&http->inflight));
        return;
    }
    loops_stop(http);
    close(http->listen_fd);
    free(http);
}
