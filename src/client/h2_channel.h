/*
 * gRPC unary calls over HTTP/2, on nghttp2: the wire under the client
 * library's gRPC transport (client_grpc.c). Not a public header.
 *
 * A channel is a pool of connections to one target. A call takes an idle
 * connection (or opens one), drives it from the calling thread alone, and
 * puts it back when its stream has closed. Concurrent callers therefore use
 * connections of their own, each carrying one stream at a time; nothing is
 * handed between threads and no lock is held during I/O.
 */
#ifndef IMAGEN_CLIENT_H2_CHANNEL_H
#define IMAGEN_CLIENT_H2_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/client_internal.h"

typedef struct imagen__h2_channel imagen__h2_channel;

/* A stretch of a request message, borrowed for the length of a call. */
typedef struct imagen__h2_chunk {
    const uint8_t *data;
    size_t len;
} imagen__h2_chunk;

/* A channel to `target` ("host", "host:port", "[v6]:port"; the port
 * defaults to 8001, the gRPC port of spec §5). `url` is the client's URL,
 * for error messages. Connects nothing yet: the first call does. */
imagen_error *imagen__h2_channel_new(const char *target, const char *url, imagen__h2_channel **out);

/* Closes every idle connection. No call may be running. Accepts NULL. */
void imagen__h2_channel_free(imagen__h2_channel *ch);

/* One unary call: sends the message made of the n_msg chunks, in order, to
 * `path` ("/package.Service/Method") and returns the response message in
 * *resp (malloc'd, *resp_len bytes; free() it). timeout_ms <= 0: no
 * deadline. `sent` (NULL, or fn NULL: nobody) fires once the chunks are
 * read no more, which is before the response arrives on success and at
 * the latest when this returns. `idempotent`: running the call twice
 * changes nothing, so a request lost with a dead pooled connection may be
 * sent again even if the server might have received it.
 *
 * Errors: a status other than OK from the server becomes its imagen code
 * (imagen__code_from_grpc) with the server's message; a server that cannot
 * be reached, that does not speak HTTP/2, or a connection lost before the
 * answer, is IMAGEN_ERR_UNAVAILABLE with a message that starts
 * IMAGEN__CONNECT_PREFIX;
 * a deadline passed is IMAGEN_ERR_UNAVAILABLE "timed out". */
imagen_error *imagen__h2_channel_unary(imagen__h2_channel *ch, const char *path, const imagen__h2_chunk *msg,
                                       size_t n_msg, bool idempotent, int64_t timeout_ms, imagen__inputs_done *sent,
                                       uint8_t **resp, size_t *resp_len);

#endif
