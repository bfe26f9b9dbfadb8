/*
 * gRPC unary calls over HTTP/2 on nghttp2 (see h2_channel.h for the model).
 *
 * Why not gRPC's C core, which the server uses: the client library is linked
 * into imagen-worker, a process that must stay small while it waits for
 * jobs, and libgrpc with its forty-odd libraries (abseil, re2, upb, c-ares)
 * costs about 6 MiB resident before main() runs, most of it the static
 * initialisers spread over libgrpc's text. A unary call needs far less:
 * HTTP/2 framing, HPACK and flow control come from nghttp2, which libcurl
 * loads anyway; what is left here is the gRPC layer (spec §2: the
 * length-prefixed message, the grpc-* headers and trailers) and sockets.
 *
 * A call's life, all on the caller's thread:
 *   channel_take        an idle connection, checked alive (conn_usable), or conn_open
 *   call_submit         HEADERS + the request body through a data provider
 *   conn_drive          nghttp2 -> out buffer -> socket, socket -> nghttp2,
 *                       until the call's stream closes or the deadline
 *   call_result         grpc-status / :status / RST_STREAM to an error
 *   channel_put         back to the pool unless the connection is spent
 * A connection the server closed while it sat in the pool (a restart, an
 * idle timeout) is found out by the first call that takes it; that call
 * then runs again, once, on a fresh connection, as long as nothing of its
 * response had come and its request bytes have not been handed back to
 * the caller (`sent` not fired).
 */
#include "client/h2_channel.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/percent.h"
#include "common/time.h"

/* The gRPC port of spec §5, for a target without one. */
#define DEFAULT_PORT "8001"
/* A connection attempt gets this long even when the call has no deadline. */
#define CONNECT_TIMEOUT_MS 20000
/* Idle connections kept per channel; more are closed when put back. */
#define MAX_IDLE 64
/* A connection idle this long is closed rather than reused: a NAT or a
 * load balancer on the way may have forgotten it without a word (Linux's
 * IPVS forgets idle TCP after 900 s), and a new one costs a round trip. */
#define IDLE_REUSE_MS 60000
/* TCP keepalive, so that a call with no deadline notices a peer that
 * vanished: probes after 30 s of silence, every 10 s, 3 of them. */
#define KEEPALIVE_IDLE_S 30
#define KEEPALIVE_INTERVAL_S 10
#define KEEPALIVE_COUNT 3
/* Socket reads, and the writes that frames are gathered into. */
#define READ_BYTES (256u << 10)
#define WRITE_BYTES (256u << 10)
/* What the server may send before waiting for our WINDOW_UPDATE: large,
 * so that a response of tens of megabytes streams without stalls. */
#define STREAM_WINDOW (16 << 20)
#define CONNECTION_WINDOW (64 << 20)
#define MAX_FRAME (1 << 20)
/* A response message's first allocation; it grows as its bytes come. */
#define BODY_FIRST (1u << 20)

struct imagen__h2_channel {
    char *host;
    char *port;
    char *authority; /* :authority, the target as given */
    char *url;       /* for messages */
    pthread_mutex_t mu;
    struct h2_conn *idle; /* LIFO: the most recently used first */
    size_t n_idle;
};

/* One call in flight on a connection. */
typedef struct h2_call {
    int32_t stream_id;
    /* Request: the 5-byte gRPC prefix, then the chunks. */
    uint8_t prefix[5];
    const imagen__h2_chunk *msg;
    size_t n_msg;
    size_t req_total, req_given; /* bytes in all; handed to nghttp2 so far */
    size_t at_chunk, at_off;     /* where the next byte comes from (chunk SIZE_MAX = the prefix) */
    /* Response. */
    bool answered; /* any frame of our stream received */
    int http_status;
    int grpc_status; /* -1 until a grpc-status header */
    char *grpc_message;
    uint8_t head[5];
    size_t head_got;
    uint8_t *body;   /* the message, once its prefix is in */
    size_t body_len; /* as the prefix announced it */
    size_t body_got, body_cap;
    bool have_message;
    bool remote_ended; /* the server's END_STREAM came */
    bool closed;
    uint32_t close_error; /* RST_STREAM code, 0 for a normal close */
    const char *bad;      /* what the server sent wrong, or "out of memory" */
} h2_call;

typedef struct h2_conn {
    int fd;
    nghttp2_session *session;
    h2_call *call; /* the call driving it; NULL while idle */
    bool spent;    /* GOAWAY, an I/O or protocol error: never reused */
    char why[160]; /* nghttp2's account of a protocol error, "" if none */
    uint8_t *out;  /* frames gathered for one write */
    size_t out_len;
    uint8_t *in;        /* READ_BYTES */
    int64_t idle_since; /* now_ms() when last put back */
    struct h2_conn *next;
} h2_conn;

/* ---- time ------------------------------------------------------------------ */

static int64_t
now_ms(void)
{
    return (int64_t)(imagen_time_now_ns() / 1000000u);
}

/* poll()'s timeout until `deadline` (INT64_MAX: none); 0 once passed. */
static int
ms_left(int64_t deadline)
{
    if (deadline == INT64_MAX)
        return -1;
    int64_t left = deadline - now_ms();
    return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

/* ---- the request body: a data provider over prefix + chunks ----------------- */

static ssize_t
request_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
             nghttp2_data_source *source, void *user_data)
{
    (void)session;
    (void)stream_id;
    (void)user_data;
    h2_call *call = source->ptr;
    size_t n = 0;
    while (n < length && call->req_given < call->req_total) {
        const uint8_t *base = call->prefix;
        size_t size = sizeof(call->prefix);
        if (call->at_chunk != SIZE_MAX) {
            base = call->msg[call->at_chunk].data;
            size = call->msg[call->at_chunk].len;
        }
        size_t take = size - call->at_off < length - n ? size - call->at_off : length - n;
        memcpy(buf + n, base + call->at_off, take);
        n += take;
        call->req_given += take;
        call->at_off += take;
        if (call->at_off == size) { /* on to the next stretch */
            call->at_chunk = call->at_chunk == SIZE_MAX ? 0 : call->at_chunk + 1;
            call->at_off = 0;
        }
    }
    if (call->req_given == call->req_total)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* ---- the response: headers, the one message, the stream's end ------------- */

static bool
header_is(const uint8_t *name, size_t namelen, const char *want)
{
    return namelen == strlen(want) && memcmp(name, want, namelen) == 0;
}

static int
on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
          const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    (void)session;
    (void)flags;
    h2_conn *k = user_data;
    h2_call *call = k->call;
    if (call == NULL || frame->hd.stream_id != call->stream_id)
        return 0;
    call->answered = true;
    if (header_is(name, namelen, ":status")) {
        call->http_status = 0;
        for (size_t i = 0; i < valuelen && value[i] >= '0' && value[i] <= '9' && i < 3; i++)
            call->http_status = call->http_status * 10 + (value[i] - '0');
    } else if (header_is(name, namelen, "grpc-status")) {
        /* Not a number, or not one gRPC defines: UNKNOWN. */
        int st = valuelen == 0 || valuelen > 2 ? 2 : 0;
        for (size_t i = 0; i < valuelen && st != 2; i++)
            st = value[i] >= '0' && value[i] <= '9' ? st * 10 + (value[i] - '0') : 2;
        call->grpc_status = st;
    } else if (header_is(name, namelen, "grpc-message")) {
        /* Percent-encoded (gRPC over HTTP/2, "Responses"). */
        free(call->grpc_message);
        call->grpc_message = imagen_percent_decode((const char *)value, valuelen, NULL);
    } else if (header_is(name, namelen, "grpc-encoding")) {
        if (!(valuelen == 8 && memcmp(value, "identity", 8) == 0))
            call->bad = "a compressed response (this client asks for none)";
    }
    return 0;
}

static int
on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len, void *user_data)
{
    (void)session;
    (void)flags;
    h2_conn *k = user_data;
    h2_call *call = k->call;
    if (call == NULL || stream_id != call->stream_id)
        return 0;
    call->answered = true;
    while (len > 0 && call->bad == NULL) {
        if (call->head_got < sizeof(call->head)) {
            size_t take = sizeof(call->head) - call->head_got;
            take = take < len ? take : len;
            memcpy(call->head + call->head_got, data, take);
            call->head_got += take;
            data += take;
            len -= take;
            if (call->head_got < sizeof(call->head))
                break;
            if (call->have_message) {
                call->bad = "a second response message to a unary call";
            } else if (call->head[0] != 0) {
                call->bad = "a compressed response message (this client asks for none)";
            } else {
                call->body_len = (size_t)call->head[1] << 24 | (size_t)call->head[2] << 16 |
                                 (size_t)call->head[3] << 8 | (size_t)call->head[4];
                call->body_got = 0;
                call->body_cap = call->body_len < BODY_FIRST ? call->body_len : BODY_FIRST;
                call->body = malloc(call->body_cap ? call->body_cap : 1);
                if (call->body == NULL)
                    call->bad = "out of memory for the response";
            }
            if (call->bad != NULL)
                break;
        }
        size_t take = call->body_len - call->body_got;
        take = take < len ? take : len;
        if (take > call->body_cap - call->body_got) {
            /* Memory follows the bytes that came, not the length a peer
             * announced: a prefix is no reason to allocate 4 GiB. Large
             * blocks are mmap'd, so glibc grows them with mremap. */
            size_t cap = call->body_cap;
            while (cap - call->body_got < take)
                cap = cap > call->body_len / 2 ? call->body_len : 2 * cap;
            uint8_t *grown = realloc(call->body, cap);
            if (grown == NULL) {
                call->bad = "out of memory for the response";
                break;
            }
            call->body = grown;
            call->body_cap = cap;
        }
        memcpy(call->body + call->body_got, data, take);
        call->body_got += take;
        data += take;
        len -= take;
        if (call->body_got == call->body_len) {
            call->have_message = true;
            call->head_got = 0; /* anything more is a second message */
        }
    }
    /* A response this client cannot take: end the stream rather than read
     * the rest of it. */
    if (call->bad != NULL && !call->closed)
        nghttp2_submit_rst_stream(k->session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
    return 0;
}

static int
on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    (void)session;
    h2_conn *k = user_data;
    if (k->call != NULL && stream_id == k->call->stream_id) {
        k->call->closed = true;
        k->call->close_error = error_code;
    }
    return 0;
}

static int
on_frame(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    h2_conn *k = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY)
        k->spent = true; /* finish what it lets finish, then close */
    if (k->call != NULL && frame->hd.stream_id == k->call->stream_id && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA))
        k->call->remote_ended = true;
    return 0;
}

/* nghttp2 found the peer breaking HTTP/2 (a peer that is not HTTP/2 at all
 * lands here: its first bytes are not a SETTINGS frame). */
static int
on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len, void *user_data)
{
    (void)session;
    (void)lib_error_code;
    h2_conn *k = user_data;
    if (k->why[0] == '\0')
        snprintf(k->why, sizeof(k->why), "%.*s", (int)len, msg);
    k->spent = true;
    return 0;
}

/* ---- connections ------------------------------------------------------------ */

static void
conn_close(h2_conn *k)
{
    if (k == NULL)
        return;
    nghttp2_session_del(k->session);
    if (k->fd >= 0)
        close(k->fd);
    free(k->out);
    free(k->in);
    free(k);
}

/* Connects to one address, waiting until `deadline`. The socket, or -1
 * with errno set. */
static int
connect_one(const struct addrinfo *ai, int64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS)
        goto fail;
    struct pollfd p = {fd, POLLOUT, 0};
    int n;
    while ((n = poll(&p, 1, ms_left(deadline))) < 0 && errno == EINTR)
        ;
    if (n == 0) {
        errno = ETIMEDOUT;
        goto fail;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        goto fail;
    if (soerr != 0) {
        errno = soerr;
        goto fail;
    }
    int one = 1, idle = KEEPALIVE_IDLE_S, interval = KEEPALIVE_INTERVAL_S, count = KEEPALIVE_COUNT;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

static imagen_error *
conn_open(imagen__h2_channel *ch, int64_t call_deadline, h2_conn **out)
{
    int64_t deadline = now_ms() + CONNECT_TIMEOUT_MS;
    if (call_deadline < deadline)
        deadline = call_deadline;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(ch->host, ch->port, &hints, &res);
    if (gai != 0)
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, IMAGEN__CONNECT_PREFIX "%s: cannot resolve '%s': %s", ch->url,
                                ch->host, gai_strerror(gai));
    int fd = -1, why = ECONNREFUSED;
    for (const struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = connect_one(ai, deadline);
        if (fd < 0)
            why = errno;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, IMAGEN__CONNECT_PREFIX "%s: %s", ch->url, strerror(why));

    h2_conn *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        close(fd);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    k->fd = fd;
    nghttp2_session_callbacks *cbs = NULL;
    if ((k->out = malloc(WRITE_BYTES)) == NULL || (k->in = malloc(READ_BYTES)) == NULL ||
        nghttp2_session_callbacks_new(&cbs) != 0) {
        conn_close(k);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
    int rv = nghttp2_session_client_new(&k->session, cbs, k);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, MAX_FRAME},
    };
    if (rv == 0)
        rv = nghttp2_submit_settings(k->session, NGHTTP2_FLAG_NONE, settings, sizeof(settings) / sizeof(settings[0]));
    if (rv == 0)
        rv = nghttp2_session_set_local_window_size(k->session, NGHTTP2_FLAG_NONE, 0, CONNECTION_WINDOW);
    if (rv != 0) {
        conn_close(k);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot start an HTTP/2 session: %s", nghttp2_strerror(rv));
    }
    *out = k;
    return NULL;
}

/* What went wrong on a connection, for the error message. */
typedef enum { DRIVE_OK, DRIVE_LOST, DRIVE_TIMEOUT, DRIVE_PROTOCOL, DRIVE_NOMEM } drive_status;

/* Writes what is gathered in k->out. False on an error or the deadline
 * (*timed_out says which). */
static bool
conn_flush(h2_conn *k, int64_t deadline, bool *timed_out)
{
    size_t done = 0;
    while (done < k->out_len) {
        ssize_t n = send(k->fd, k->out + done, k->out_len - done, MSG_NOSIGNAL);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {k->fd, POLLOUT, 0};
            int r = poll(&p, 1, ms_left(deadline));
            if (r == 0) {
                *timed_out = true;
                return false;
            }
            if (r > 0 || errno == EINTR)
                continue;
        }
        return false;
    }
    k->out_len = 0;
    return true;
}

/* Hands nghttp2's pending frames to the socket. */
static drive_status
conn_send(h2_conn *k, int64_t deadline)
{
    bool timed_out = false;
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(k->session, &p);
        if (n < 0)
            return n == NGHTTP2_ERR_NOMEM ? DRIVE_NOMEM : DRIVE_PROTOCOL;
        if (n == 0)
            break;
        while (n > 0) {
            size_t take = WRITE_BYTES - k->out_len;
            take = take < (size_t)n ? take : (size_t)n;
            memcpy(k->out + k->out_len, p, take);
            k->out_len += take;
            p += take;
            n -= (ssize_t)take;
            if (k->out_len == WRITE_BYTES && !conn_flush(k, deadline, &timed_out))
                return timed_out ? DRIVE_TIMEOUT : DRIVE_LOST;
        }
    }
    if (k->out_len > 0 && !conn_flush(k, deadline, &timed_out))
        return timed_out ? DRIVE_TIMEOUT : DRIVE_LOST;
    return DRIVE_OK;
}

/* Moves bytes both ways until k->call's stream has closed, the deadline
 * passes or the connection fails. Fires `sent` once nghttp2 has taken the
 * whole request (it copies the bytes into its frames).
 *
 * Once the stream has closed the answer is complete, whatever happens to
 * the connection afterwards: a failure to send what nghttp2 still had
 * queued (a PING or SETTINGS acknowledgement) only spends the connection. */
static drive_status
conn_drive(h2_conn *k, int64_t deadline, imagen__inputs_done *sent)
{
    h2_call *call = k->call;
    for (;;) {
        /* A server may end its response before it has read the whole
         * request (an early error): the stream would then wait on flow
         * control for the rest of a body nobody reads. Reset it, and do
         * not reuse a connection whose window the server may never open. */
        if (call->remote_ended && !call->closed) {
            nghttp2_submit_rst_stream(k->session, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_NO_ERROR);
            k->spent = true;
            call->closed = true;
        }
        drive_status st = conn_send(k, deadline);
        if (call->req_given == call->req_total)
            imagen__inputs_done_fire(sent);
        if (call->closed) {
            if (st != DRIVE_OK)
                k->spent = true;
            return DRIVE_OK;
        }
        if (st != DRIVE_OK)
            return st;
        if (!nghttp2_session_want_read(k->session))
            return DRIVE_LOST;
        /* The deadline holds even against a peer that never lets the
         * socket go quiet. */
        int wait = ms_left(deadline);
        if (wait == 0)
            return DRIVE_TIMEOUT;
        struct pollfd p = {k->fd, POLLIN, 0};
        int r = poll(&p, 1, wait);
        if (r == 0)
            return DRIVE_TIMEOUT;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return DRIVE_LOST;
        }
        ssize_t got = recv(k->fd, k->in, READ_BYTES, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (got <= 0)
            return DRIVE_LOST;
        ssize_t used = nghttp2_session_mem_recv(k->session, k->in, (size_t)got);
        if (call->closed && (used < 0 || k->why[0] != '\0')) {
            k->spent = true;
            return DRIVE_OK;
        }
        if (used < 0)
            return used == NGHTTP2_ERR_NOMEM ? DRIVE_NOMEM : DRIVE_PROTOCOL;
        if (k->why[0] != '\0')
            return DRIVE_PROTOCOL;
    }
}

/* Whether a pooled connection can still carry a call: reads whatever the
 * server sent while it sat idle (a GOAWAY, a PING to answer, or the end of
 * the connection) without waiting. */
static bool
conn_usable(h2_conn *k)
{
    if (now_ms() - k->idle_since > IDLE_REUSE_MS)
        return false;
    for (;;) {
        ssize_t got = recv(k->fd, k->in, READ_BYTES, MSG_DONTWAIT);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (got <= 0 || nghttp2_session_mem_recv(k->session, k->in, (size_t)got) < 0)
            return false;
    }
    return !k->spent && nghttp2_session_want_read(k->session);
}

/* ---- the pool --------------------------------------------------------------- */

static h2_conn *
channel_take(imagen__h2_channel *ch)
{
    for (;;) {
        pthread_mutex_lock(&ch->mu);
        h2_conn *k = ch->idle;
        if (k != NULL) {
            ch->idle = k->next;
            ch->n_idle--;
        }
        pthread_mutex_unlock(&ch->mu);
        if (k == NULL || conn_usable(k))
            return k;
        conn_close(k);
    }
}

static void
channel_put(imagen__h2_channel *ch, h2_conn *k)
{
    k->call = NULL;
    if (!k->spent) {
        pthread_mutex_lock(&ch->mu);
        if (ch->n_idle < MAX_IDLE) {
            k->idle_since = now_ms();
            k->next = ch->idle;
            ch->idle = k;
            ch->n_idle++;
            k = NULL;
        }
        pthread_mutex_unlock(&ch->mu);
    }
    conn_close(k);
}

imagen_error *
imagen__h2_channel_new(const char *target, const char *url, imagen__h2_channel **out)
{
    const char *host = target, *port = NULL;
    size_t host_len;
    if (target[0] == '[') {
        const char *end = strchr(target, ']');
        if (end == NULL || (end[1] != '\0' && end[1] != ':'))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "'%s': malformed IPv6 address", target);
        host = target + 1;
        host_len = (size_t)(end - host);
        port = end[1] == ':' ? end + 2 : NULL;
    } else {
        const char *colon = strchr(target, ':');
        host_len = colon != NULL ? (size_t)(colon - target) : strlen(target);
        port = colon != NULL ? colon + 1 : NULL;
    }
    if (port != NULL && (port[0] == '\0' || strspn(port, "0123456789") != strlen(port)))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "'%s': the port must be a number", target);
    if (host_len == 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "'%s' has no host", target);
    imagen__h2_channel *ch = calloc(1, sizeof(*ch));
    if (ch == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    ch->host = strndup(host, host_len);
    ch->port = strdup(port != NULL ? port : DEFAULT_PORT);
    ch->authority = strdup(target);
    ch->url = strdup(url);
    pthread_mutex_init(&ch->mu, NULL);
    if (ch->host == NULL || ch->port == NULL || ch->authority == NULL || ch->url == NULL) {
        imagen__h2_channel_free(ch);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    *out = ch;
    return NULL;
}

void
imagen__h2_channel_free(imagen__h2_channel *ch)
{
    if (ch == NULL)
        return;
    while (ch->idle != NULL) {
        h2_conn *k = ch->idle;
        ch->idle = k->next;
        conn_close(k);
    }
    pthread_mutex_destroy(&ch->mu);
    free(ch->host);
    free(ch->port);
    free(ch->authority);
    free(ch->url);
    free(ch);
}

/* ---- a call ----------------------------------------------------------------- */

#define NV(n, v)                                                                       \
    {                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE \
    }

/* Opens the call's stream on k: HEADERS, and the body behind them. */
static bool
call_submit(imagen__h2_channel *ch, h2_conn *k, h2_call *call, const char *path, int64_t timeout_ms)
{
    /* grpc-timeout: at most 8 digits, so whole seconds beyond 99999999 ms. */
    char timeout[24] = "";
    if (timeout_ms > 0) {
        if (timeout_ms <= 99999999)
            snprintf(timeout, sizeof(timeout), "%lldm", (long long)timeout_ms);
        else
            snprintf(timeout, sizeof(timeout), "%lldS",
                     (long long)(timeout_ms / 1000 > 99999999 ? 99999999 : timeout_ms / 1000));
    }
    nghttp2_nv hdrs[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", path),
        NV(":authority", ch->authority),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "imagen-client"),
        NV("grpc-timeout", timeout),
    };
    size_t n_hdrs = sizeof(hdrs) / sizeof(hdrs[0]) - (timeout[0] == '\0' ? 1 : 0);
    nghttp2_data_provider body = {.source.ptr = call, .read_callback = request_read};
    k->call = call;
    call->stream_id = nghttp2_submit_request(k->session, NULL, hdrs, n_hdrs, &body, NULL);
    return call->stream_id > 0;
}

/* HTTP status of a response that is not gRPC, as gRPC's status (the table
 * of "HTTP to gRPC Status Code Mapping"). */
static int
grpc_status_from_http(int http)
{
    switch (http) {
    case 400:
        return 13; /* INTERNAL */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
        return 12; /* UNIMPLEMENTED */
    case 429:
    case 502:
    case 503:
    case 504:
        return 14; /* UNAVAILABLE */
    default:
        return 2; /* UNKNOWN */
    }
}

/* A stream reset without a grpc-status, as gRPC's status ("RST_STREAM error
 * code mapping"). */
static int
grpc_status_from_reset(uint32_t code)
{
    switch (code) {
    case NGHTTP2_REFUSED_STREAM:
        return 14; /* UNAVAILABLE */
    case NGHTTP2_CANCEL:
        return 1; /* CANCELLED */
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return 8; /* RESOURCE_EXHAUSTED */
    case NGHTTP2_INADEQUATE_SECURITY:
        return 7; /* PERMISSION_DENIED */
    default:
        return 13; /* INTERNAL */
    }
}

/* The call's outcome, once its stream has closed. */
static imagen_error *
call_result(imagen__h2_channel *ch, h2_call *call, const char *path, int64_t timeout_ms)
{
    const char *method = strrchr(path, '/') + 1;
    if (call->bad != NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC %s: the server sent %s", method, call->bad);
    if (call->grpc_status == 0) {
        if (!call->have_message)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC %s: the server sent no response message", method);
        return NULL;
    }
    if (call->grpc_status == 4) /* DEADLINE_EXCEEDED, at the server */
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "request to %s timed out after %lld ms", ch->url,
                                (long long)timeout_ms);
    if (call->grpc_status > 0)
        return imagen_error_new(imagen__code_from_grpc(call->grpc_status), "%s",
                                call->grpc_message != NULL ? call->grpc_message : "(no message)");
    if (call->http_status != 0 && call->http_status != 200)
        return imagen_error_new(imagen__code_from_grpc(grpc_status_from_http(call->http_status)),
                                "gRPC %s: HTTP status %d from %s, not a gRPC response", method, call->http_status,
                                ch->url);
    if (call->close_error == NGHTTP2_REFUSED_STREAM)
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "gRPC %s: %s refused the stream; try again", method, ch->url);
    if (call->close_error != NGHTTP2_NO_ERROR)
        return imagen_error_new(imagen__code_from_grpc(grpc_status_from_reset(call->close_error)),
                                "gRPC %s: the stream to %s was reset (%s)", method, ch->url,
                                nghttp2_http2_strerror(call->close_error));
    return imagen_error_new(IMAGEN_ERR_INTERNAL, "gRPC %s: the stream ended without a grpc-status", method);
}

imagen_error *
imagen__h2_channel_unary(imagen__h2_channel *ch, const char *path, const imagen__h2_chunk *msg, size_t n_msg,
                         bool idempotent, int64_t timeout_ms, imagen__inputs_done *sent, uint8_t **resp,
                         size_t *resp_len)
{
    size_t total = 0;
    for (size_t i = 0; i < n_msg; i++)
        total += msg[i].len;
    if (total > UINT32_MAX) {
        imagen__inputs_done_fire(sent);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "a %zu-byte request is beyond gRPC's 4 GiB message limit",
                                total);
    }
    /* A timeout too long to add to the clock is no deadline at all. */
    int64_t deadline = timeout_ms > 0 && timeout_ms < INT64_MAX / 2 ? now_ms() + timeout_ms : INT64_MAX;
    imagen_error *err = NULL;
    /* The chunks may be read again only while nobody has been told they
     * are no longer read: always when there is nobody to tell. */
    bool told_someone = sent != NULL && sent->fn != NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        h2_conn *k = channel_take(ch);
        bool reused = k != NULL;
        if (k == NULL && (err = conn_open(ch, deadline, &k)) != NULL)
            break;
        h2_call call = {.msg = msg, .n_msg = n_msg, .grpc_status = -1, .at_chunk = SIZE_MAX};
        call.req_total = sizeof(call.prefix) + total;
        call.prefix[1] = (uint8_t)(total >> 24);
        call.prefix[2] = (uint8_t)(total >> 16);
        call.prefix[3] = (uint8_t)(total >> 8);
        call.prefix[4] = (uint8_t)total;
        drive_status ds = call_submit(ch, k, &call, path, timeout_ms) ? conn_drive(k, deadline, sent) : DRIVE_PROTOCOL;
        /* A second attempt, on a fresh connection (see the top of the
         * file), when the server cannot have acted on the first: it refused
         * the stream, or a pooled connection turned out dead before any of
         * the answer came and the request had not all gone out (or asks
         * nothing that doing twice would change). */
        bool chunks_ours = !told_someone || sent->fn != NULL;
        bool retry = false;
        switch (ds) {
        case DRIVE_OK:
            err = call_result(ch, &call, path, timeout_ms);
            retry = chunks_ours && !call.answered && call.close_error == NGHTTP2_REFUSED_STREAM;
            break;
        case DRIVE_LOST:
            err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, IMAGEN__CONNECT_PREFIX "%s: the connection was closed",
                                   ch->url);
            retry = chunks_ours && reused && !call.answered && (idempotent || call.req_given < call.req_total);
            break;
        case DRIVE_TIMEOUT:
            err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "request to %s timed out after %lld ms", ch->url,
                                   (long long)timeout_ms);
            break;
        case DRIVE_PROTOCOL:
            /* As gRPC's own transport reports it: no usable server there
             * (a peer that is not HTTP/2 at all lands here). */
            err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, IMAGEN__CONNECT_PREFIX "%s: HTTP/2 protocol error%s%s",
                                   ch->url, k->why[0] != '\0' ? ": " : "", k->why);
            break;
        case DRIVE_NOMEM:
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
            break;
        }
        /* Never reused: a connection whose stream may still be open, or
         * whose server refuses streams (it is usually going away). */
        if (ds != DRIVE_OK || !call.closed || call.close_error == NGHTTP2_REFUSED_STREAM)
            k->spent = true;
        channel_put(ch, k);
        if (err == NULL) {
            *resp = call.body;
            *resp_len = call.body_len;
            call.body = NULL;
        }
        free(call.body);
        free(call.grpc_message);
        if (!retry || attempt == 1)
            break;
        imagen_error_free(err);
        err = NULL;
    }
    imagen__inputs_done_fire(sent);
    return err;
}
