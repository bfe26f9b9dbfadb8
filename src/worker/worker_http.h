/*
 * The worker's own small HTTP endpoint (libmicrohttpd, one internal polling
 * thread): GET /healthz for Kubernetes probes and GET /metrics for
 * Prometheus. It knows nothing about jobs: the job loop hands it two
 * callbacks, one that says whether the worker is still taking jobs and one
 * that renders the metrics text.
 */
#ifndef IMAGEN_WORKER_WORKER_HTTP_H
#define IMAGEN_WORKER_WORKER_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "imagen/error.h"

typedef struct imagen_worker_http imagen_worker_http;

typedef struct imagen_worker_http_callbacks {
    /* True while the worker takes jobs: /healthz answers 200 "ok", else 503
     * "draining". Called on the HTTP thread. */
    bool (*running)(void *ctx);
    /* Prometheus text (format 0.0.4), owned by the caller (free()); NULL on
     * failure (the scrape gets a 500). Called on the HTTP thread. */
    char *(*render_metrics)(void *ctx, size_t *len);
    void *ctx;
} imagen_worker_http_callbacks;

/* Listens on address:port (port 0 = any free port; address an IPv4 or IPv6
 * literal). UNAVAILABLE naming the address when it cannot bind. On success
 * *out is owned (imagen_worker_http_stop). */
imagen_error *imagen_worker_http_start(const char *address, int port, const imagen_worker_http_callbacks *callbacks,
                                       imagen_worker_http **out);
/* The port actually bound (useful with port 0). */
int imagen_worker_http_port(const imagen_worker_http *http);
/* Stops listening, waits for requests in progress, frees. Accepts NULL. */
void imagen_worker_http_stop(imagen_worker_http *http);

#endif /* IMAGEN_WORKER_WORKER_HTTP_H */
