/*
 * /healthz and /metrics of imagen-worker (worker_http.h) on libmicrohttpd.
 * Responses are tiny and rendered on demand; nothing here is cached.
 */
#include "worker/worker_http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct imagen_worker_http {
    struct MHD_Daemon *daemon;
    imagen_worker_http_callbacks callbacks;
    int port;
};

static enum MHD_Result
respond(struct MHD_Connection *conn, unsigned status, const char *content_type, char *body, size_t len, bool owned)
{
    struct MHD_Response *r = owned ? MHD_create_response_from_buffer_with_free_callback(len, body, free)
                                   : MHD_create_response_from_buffer(len, body, MHD_RESPMEM_PERSISTENT);
    if (r == NULL) {
        if (owned)
            free(body);
        return MHD_NO;
    }
    if (content_type != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method, const char *version,
           const char *upload_data, size_t *upload_data_size, void **req_cls)
{
    imagen_worker_http *http = cls;
    if (*req_cls == NULL) {
        *req_cls = (void *)1; /* first call: headers only */
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* bodies are ignored */
        return MHD_YES;
    }
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (strcmp(url, "/healthz") == 0) {
        if (!get)
            return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, NULL, (char *)"", 0, false);
        if (http->callbacks.running(http->callbacks.ctx))
            return respond(conn, MHD_HTTP_OK, "text/plain", (char *)"ok\n", 3, false);
        return respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", (char *)"draining\n", 9, false);
    }
    if (strcmp(url, "/metrics") == 0) {
        if (!get)
            return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, NULL, (char *)"", 0, false);
        size_t len = 0;
        char *text = http->callbacks.render_metrics(http->callbacks.ctx, &len);
        if (text == NULL)
            return respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, (char *)"", 0, false);
        return respond(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len, true);
    }
    return respond(conn, MHD_HTTP_NOT_FOUND, NULL, (char *)"", 0, false);
}

imagen_error *
imagen_worker_http_start(const char *address, int port, const imagen_worker_http_callbacks *callbacks,
                         imagen_worker_http **out)
{
    *out = NULL;
    if (port < 0 || port > 65535)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "metrics port %d is out of range 0..65535", port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
    if (getaddrinfo(address, NULL, &hints, &ai) != 0 || ai == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "metrics address '%s' is not an IP address", address);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    bool ipv6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    if (ipv6)
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);

    imagen_worker_http *http = calloc(1, sizeof(*http));
    if (http == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory starting the metrics endpoint");
    http->callbacks = *callbacks;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    http->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, http, MHD_OPTION_SOCK_ADDR,
                                    (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (http->daemon == NULL) {
        free(http);
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "cannot listen for /healthz and /metrics on %s:%d", address,
                                port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    http->port = info ? (int)info->port : port;
    *out = http;
    return NULL;
}

int
imagen_worker_http_port(const imagen_worker_http *http)
{
    return http->port;
}

void
imagen_worker_http_stop(imagen_worker_http *http)
{
    if (http == NULL)
        return;
    MHD_stop_daemon(http->daemon);
    free(http);
}
