/*
 * The KServe v2 HTTP/REST frontend (spec §1) and the Prometheus metrics
 * endpoint (spec §6). They use only the in-process API of imagen/server.h.
 *
 * Threads: the inference frontend runs its own HTTP/1.1 event loops
 * (http_server.c, one epoll set per --http-thread-count); the instance
 * thread that completes a request writes a small reply itself and hands
 * anything larger back to the connection's loop. The metrics endpoint,
 * scraped a few times a minute, runs on libmicrohttpd.
 */
#ifndef IMAGEN_HTTP_H
#define IMAGEN_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "imagen/error.h"
#include "imagen/server.h"
#include "shm/shm.h"

#define IMAGEN_HTTP_DEFAULT_PORT 8000
#define IMAGEN_METRICS_DEFAULT_PORT 8002
#define IMAGEN_HTTP_DEFAULT_MAX_INPUT_BYTES (64u << 20) /* --http-max-input-size */
#define IMAGEN_HTTP_JSON_MAX_DEPTH 100                  /* nesting of "data" arrays */

typedef struct imagen_http_options {
    const char *address;   /* default "0.0.0.0" */
    int port;              /* default 8000; 0 = pick a free port */
    int thread_count;      /* --http-thread-count, default 8 */
    size_t max_input_size; /* --http-max-input-size */
    bool reuse_port;       /* --reuse-http-port */
    imagen_shm *shm;       /* borrowed, must outlive the frontend; NULL = --allow-client-shm=false */
} imagen_http_options;

typedef struct imagen_metrics_options {
    const char *address;      /* default: the HTTP address */
    int port;                 /* default 8002 */
    bool counter_latencies;   /* --metrics-config counter_latencies (default true) */
    bool histogram_latencies; /* --metrics-config histogram_latencies (default false) */
    bool summary_latencies;   /* --metrics-config summary_latencies (default false) */
    bool allow_cpu_metrics;   /* --allow-cpu-metrics (default true) */
    unsigned interval_ms;     /* --metrics-interval-ms (default 2000) */
} imagen_metrics_options;

typedef struct imagen_http imagen_http;
typedef struct imagen_metrics imagen_metrics;

void imagen_http_options_init(imagen_http_options *opts);
void imagen_metrics_options_init(imagen_metrics_options *opts);

/* Starts serving `srv` (borrowed; must outlive the frontend). *out is owned;
 * free with imagen_http_destroy(). Fails if the port cannot be bound. */
imagen_error *imagen_http_start(imagen_server *srv, const imagen_http_options *opts, imagen_http **out);
/* The port actually bound (useful with port 0). */
int imagen_http_port(const imagen_http *http);
/* Stops accepting new connections (they are closed at once); requests on
 * open connections complete. Thread-safe, idempotent. */
void imagen_http_quiesce(imagen_http *http);
/* Stops the daemon and frees. Accepts NULL. */
void imagen_http_destroy(imagen_http *http);

imagen_error *imagen_metrics_start(imagen_server *srv, const imagen_metrics_options *opts, imagen_metrics **out);
int imagen_metrics_port(const imagen_metrics *metrics);
void imagen_metrics_destroy(imagen_metrics *metrics);

/* Renders the Prometheus text of spec §6 for `srv` into a new string (owned,
 * free()). Exposed for unit tests and for other frontends. */
char *imagen_metrics_render(imagen_server *srv, const imagen_metrics_options *opts, size_t *len);

#endif /* IMAGEN_HTTP_H */
