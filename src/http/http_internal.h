/*
 * Internal interfaces between the files of the HTTP frontend. Nothing here
 * is public: names carry the imagen__http_ prefix. The pure parts (routing,
 * JSON tensor coding, binary framing, content coding, classification,
 * Prometheus escaping) take no locks and touch no sockets, so unit tests
 * call them directly.
 */
#ifndef IMAGEN_HTTP_INTERNAL_H
#define IMAGEN_HTTP_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "http/http.h"
#include "imagen/error.h"
#include "imagen/server.h"
#include "imagen/types.h"

/* ---- limits (http) ---- */
#define IMAGEN_HTTP_MAX_PATH_SEGMENTS 8         /* longest route has 7 segments */
#define IMAGEN_HTTP_MAX_HEADER_VALUE_BYTES 4096 /* numeric headers longer than this are rejected */

/* ======================================================================
 * Routing (http_route.c)
 * ==================================================================== */

typedef enum {
    IMAGEN_HTTP_ROUTE_NOT_FOUND = 0, /* 404 {"error":"Not Found"} */
    IMAGEN_HTTP_ROUTE_HEALTH_LIVE,
    IMAGEN_HTTP_ROUTE_HEALTH_READY,
    IMAGEN_HTTP_ROUTE_SERVER_METADATA,
    IMAGEN_HTTP_ROUTE_MODEL_METADATA,
    IMAGEN_HTTP_ROUTE_MODEL_READY,
    IMAGEN_HTTP_ROUTE_MODEL_CONFIG,
    IMAGEN_HTTP_ROUTE_MODEL_STATS, /* model may be empty: all models */
    IMAGEN_HTTP_ROUTE_INFER,
    IMAGEN_HTTP_ROUTE_REPO_INDEX,
    IMAGEN_HTTP_ROUTE_REPO_LOAD,
    IMAGEN_HTTP_ROUTE_REPO_UNLOAD,
    IMAGEN_HTTP_ROUTE_LOGGING,
    IMAGEN_HTTP_ROUTE_SHM_STATUS,     /* system / CUDA shm status */
    IMAGEN_HTTP_ROUTE_SHM_REGISTER,   /* 501 unless --allow-client-shm */
    IMAGEN_HTTP_ROUTE_SHM_UNREGISTER, /* 501 unless --allow-client-shm */
    IMAGEN_HTTP_ROUTE_BAD_VERSION     /* digits that overflow int64: 400 */
} imagen__http_route_kind;

#define IMAGEN_HTTP_METHOD_GET 1u
#define IMAGEN_HTTP_METHOD_POST 2u

/* The result of matching a path. Strings point into the matched path and are
 * NOT NUL-terminated and NOT percent-decoded. */
typedef struct imagen__http_route {
    imagen__http_route_kind kind;
    unsigned methods;  /* IMAGEN_HTTP_METHOD_* allowed on this path */
    const char *model; /* ${M}; NULL when the path has none */
    size_t model_len;
    const char *repo; /* ${REPO} of /v2/repository/${REPO}/...; NULL if absent */
    size_t repo_len;
    const char *region; /* shm region name; NULL if absent */
    size_t region_len;
    bool cuda_shm;            /* SHM routes: CUDA rather than system */
    int64_t version;          /* -1 when the path has no version segment */
    const char *version_text; /* the version segment as given; NULL if absent */
    size_t version_len;
} imagen__http_route;

/* Matches `path` (no query string) against the endpoint table of spec §1.2.
 * Always fills *out; kind NOT_FOUND means no row matched. Pure; thread-safe. */
void imagen__http_route_match(const char *path, imagen__http_route *out);

/* Maps an HTTP method name to IMAGEN_HTTP_METHOD_*; 0 for anything else. */
unsigned imagen__http_method_bit(const char *method);

/* Resolves a numeric or named listen address and port into `ss` (http_server.c,
 * shared with the metrics daemon). *ipv6 tells the family. */
struct sockaddr_storage;
imagen_error *imagen__http_resolve(const char *address, int port, struct sockaddr_storage *ss, unsigned *ss_len,
                                   bool *ipv6);

/* ======================================================================
 * Content coding (http_codec.c)
 * ==================================================================== */

typedef enum {
    IMAGEN_HTTP_ENC_IDENTITY = 0,
    IMAGEN_HTTP_ENC_GZIP = 1,
    IMAGEN_HTTP_ENC_DEFLATE = 2,
    IMAGEN_HTTP_ENC_UNKNOWN = 3
} imagen__http_encoding;

/* Parses a Content-Encoding value (NULL/""/"identity" = identity). */
imagen__http_encoding imagen__http_parse_content_encoding(const char *value);
/* Picks the response coding from an Accept-Encoding value: the highest q among
 * identity, gzip and deflate; ties go to the one listed first; NULL/"" or
 * nothing acceptable = identity. Pure. */
imagen__http_encoding imagen__http_select_accept_encoding(const char *value);
/* Content-Encoding token of a coding ("gzip", "deflate"); NULL for identity. */
const char *imagen__http_encoding_name(imagen__http_encoding enc);

/* Decompresses `in` (gzip or zlib-wrapped deflate; raw deflate accepted as a
 * fallback) into a new buffer of at most `max_bytes` (owned, free()). Errors:
 * INVALID_ARG for corrupt data and for output over the limit. */
imagen_error *imagen__http_inflate(imagen__http_encoding enc, const void *in, size_t len, size_t max_bytes, char **out,
                                   size_t *out_len);
/* Compresses into a new buffer (owned, free()). Returns false on failure. */
bool imagen__http_deflate(imagen__http_encoding enc, const void *in, size_t len, char **out, size_t *out_len);

/* ======================================================================
 * JSON tensors (http_json.c)
 * ==================================================================== */

/* Decodes the JSON `data` of input `name` (nested or flat arrays, depth at
 * most IMAGEN_HTTP_JSON_MAX_DEPTH) into a new contiguous little-endian buffer
 * holding exactly `expected` elements of `dt` (BYTES as [u32 len][bytes]);
 * the buffer may hold at most `max_bytes`. Unsigned types also accept the
 * tagged strings of IMAGEN_HTTP_BIG_UINT_TAG (integers above INT64_MAX).
 * *out is owned (free()); it may be NULL when *out_size is 0. Errors are
 * INVALID_ARG naming the input. */
typedef struct imagen__jv imagen__jv; /* http_jsondoc.c, below */
imagen_error *imagen__http_json_decode_tensor(const imagen__jv *data, imagen_datatype dt, uint64_t expected,
                                              size_t max_bytes, const char *name, void **out, size_t *out_size);

/* Appends the flat JSON array of tensor `t`'s elements to `b`. Fails with
 * INVALID_ARG for FP16/BF16 and INTERNAL for malformed BYTES data. */
imagen_error *imagen__http_json_encode_tensor(imagen_buf *b, const imagen_tensor *t);

/* Appends a shape as a JSON array of integers. */
void imagen__http_json_append_shape(imagen_buf *b, const int64_t *shape, size_t rank);

/* Renders {"error":"<msg>"}. */
void imagen__http_json_error_body(imagen_buf *b, const char *msg);

/* ======================================================================
 * Scratch memory for request parsing (http_scratch.c)
 * ==================================================================== */

/* The calling thread's scratch block (*cap bytes), or NULL when it is
 * already in use or cannot be allocated. Give it back with
 * imagen__http_scratch_release() on the same thread. */
void *imagen__http_scratch_acquire(size_t *cap);
void imagen__http_scratch_release(void *block);

/* ======================================================================
 * JSON documents of inference requests (http_jsondoc.c)
 * ==================================================================== */

typedef enum {
    IMAGEN_JV_NULL = 0,
    IMAGEN_JV_FALSE,
    IMAGEN_JV_TRUE,
    IMAGEN_JV_INT,  /* v.i */
    IMAGEN_JV_UINT, /* v.u, only for integers above INT64_MAX */
    IMAGEN_JV_REAL, /* v.d */
    IMAGEN_JV_STRING,
    IMAGEN_JV_ARRAY,
    IMAGEN_JV_OBJECT
} imagen__jv_type;

typedef struct imagen__jv imagen__jv;
typedef struct imagen__jv_member imagen__jv_member;

/* A parsed value; everything lives in its document's arena. */
struct imagen__jv {
    imagen__jv_type type;
    size_t n; /* string bytes (NUL excluded), array items, object members */
    union {
        int64_t i;
        uint64_t u;
        double d;
        const char *s; /* NUL-terminated; may hold escaped NULs (see n) */
        imagen__jv *items;
        imagen__jv_member *members;
    } v;
};

struct imagen__jv_member {
    const char *key; /* NUL-terminated */
    size_t key_len;
    imagen__jv value;
};

/* The arena of one parsed document: a caller-provided first block (may be
 * NULL) and malloc'd chunks beyond it. */
typedef struct imagen__jdoc {
    char *block;
    size_t block_cap, block_used;
    struct jchunk *chunks;
} imagen__jdoc;

typedef struct imagen__jdoc_error {
    char text[96];
    int line, column; /* 1-based */
    size_t position;  /* byte offset */
} imagen__jdoc_error;

void imagen__jdoc_init(imagen__jdoc *doc, void *block, size_t block_cap);
/* Parses `len` bytes of JSON text (any value at the top). On success *root
 * points into the document; on failure *err says what and where. */
bool imagen__jdoc_parse(imagen__jdoc *doc, const char *text, size_t len, const imagen__jv **root,
                        imagen__jdoc_error *err);
/* Frees the chunks; the document's values are gone. */
void imagen__jdoc_free(imagen__jdoc *doc);

/* Member `key` of an object (the last one if repeated); NULL if `o` is not
 * an object or has no such member. */
const imagen__jv *imagen__jv_object_get(const imagen__jv *o, const char *key);

static inline bool
imagen__jv_is(const imagen__jv *v, imagen__jv_type t)
{
    return v != NULL && v->type == t;
}
static inline bool
imagen__jv_is_boolean(const imagen__jv *v)
{
    return v != NULL && (v->type == IMAGEN_JV_TRUE || v->type == IMAGEN_JV_FALSE);
}
/* Any number, the integers above INT64_MAX included. */
static inline bool
imagen__jv_is_number(const imagen__jv *v)
{
    return v != NULL && (v->type == IMAGEN_JV_INT || v->type == IMAGEN_JV_UINT || v->type == IMAGEN_JV_REAL);
}
static inline double
imagen__jv_number_value(const imagen__jv *v)
{
    return v->type == IMAGEN_JV_INT ? (double)v->v.i : v->type == IMAGEN_JV_UINT ? (double)v->v.u : v->v.d;
}
/* Reads a non-negative integer of any size. */
static inline bool
imagen__jv_u64(const imagen__jv *v, uint64_t *out)
{
    if (v != NULL && v->type == IMAGEN_JV_INT && v->v.i >= 0) {
        *out = (uint64_t)v->v.i;
        return true;
    }
    if (v != NULL && v->type == IMAGEN_JV_UINT) {
        *out = v->v.u;
        return true;
    }
    return false;
}

/* ======================================================================
 * Inference (http_infer.c)
 * ==================================================================== */

typedef struct imagen__http_infer imagen__http_infer;

/* Parses the Inference-Header-Content-Length value against a body of
 * `body_len` bytes. Errors (INVALID_ARG) for empty, non-digit, negative or
 * over-long values. Pure. */
imagen_error *imagen__http_parse_header_length(const char *value, size_t body_len, size_t *out);

/* Builds an inference request for model `model` / `version` from an HTTP body
 * (already decompressed) in two parts: the JSON header (`json`, NULL for a
 * raw binary request, Inference-Header-Content-Length: 0) and the binary
 * tensor data that followed it (`binary`, may be NULL when binary_len is 0;
 * for a raw request the data of the model's single input). The parts need
 * not be contiguous. Binary input tensors point into `binary`, which must
 * outlive the request. Inputs and outputs naming a shared-memory region are
 * resolved in `shm` (NULL: client shm disabled, such requests fail with
 * UNSUPPORTED); the infer object keeps those mappings alive until it is freed.
 * On success *out is owned; free with imagen__http_infer_free(). */
imagen_error *imagen__http_infer_build(imagen_server *srv, imagen_shm *shm, const char *model, int64_t version,
                                       const char *json, size_t json_len, const char *binary, size_t binary_len,
                                       size_t max_input_bytes, imagen__http_infer **out);

/* The request to submit (borrowed; owned by the infer object). */
imagen_request *imagen__http_infer_request(imagen__http_infer *inf);

/* A binary output the caller sends straight from the response's memory. */
typedef struct imagen__http_blob {
    const void *data; /* borrowed from the response */
    size_t len;
} imagen__http_blob;

/* Encodes a successful response: the JSON header into `out`, followed by the
 * binary outputs; *json_len is the JSON part's length, *any_binary tells
 * whether any output went binary. With `blobs` NULL the binary outputs are
 * copied into `out` after the JSON. Otherwise `out` gets the JSON only and
 * *blobs (owned, free(); NULL when *n_blobs is 0) the outputs in order, to be
 * sent from the response's memory while `resp` lives: no copy. */
imagen_error *imagen__http_infer_encode(imagen__http_infer *inf, const imagen_response *resp, imagen_buf *out,
                                        size_t *json_len, bool *any_binary, imagen__http_blob **blobs, size_t *n_blobs);

/* Releases the request and everything the infer object owns. Accepts NULL. */
void imagen__http_infer_free(imagen__http_infer *inf);

/* Top-K classification of one output (spec §1.11); forwards to
 * imagen_classify() (common/classify.h), which the gRPC frontend shares. */
imagen_error *imagen__http_classify(const imagen_tensor *t, uint64_t k, bool batching, const char *const *labels,
                                    size_t n_labels, imagen_buf *data, int64_t *shape, size_t *rank);

/* ======================================================================
 * Administrative endpoints (http_admin.c)
 * ==================================================================== */

/* A finished, non-inference reply. */
typedef struct imagen__http_reply {
    int status;      /* HTTP status */
    imagen_buf body; /* owned */
    bool json;       /* Content-Type: application/json when body is non-empty */
} imagen__http_reply;

/* Fills `reply` for a non-inference route. `model` is the decoded model name
 * (NULL when the route has none). May block (load/unload): the caller runs
 * those off the network threads. */
void imagen__http_admin_handle(imagen_server *srv, imagen_shm *shm, const imagen__http_route *route, const char *model,
                               const char *body, size_t body_len, imagen__http_reply *reply);

/* Fills `reply` with the error's JSON body and its HTTP status (the one place
 * that maps error codes to statuses); consumes `err`. */
void imagen__http_reply_error(imagen__http_reply *reply, imagen_error *err);

/* ======================================================================
 * HTTP/1.1 framing (http_parse.c)
 * ==================================================================== */

/* The longest request head (request line and header fields) accepted;
 * longer ones are answered 431 (414 for a request line alone). */
#define IMAGEN_HTTP_MAX_HEAD_BYTES (32u << 10)

/* A parsed request head. Pointers point into the parsed bytes and are not
 * NUL-terminated; a header that was absent has a NULL pointer. */
typedef struct imagen__http_head {
    size_t head_len; /* bytes of the head, final empty line included */
    const char *method;
    size_t method_len;
    const char *path; /* the target's path: no query string, not decoded ("/" for "http://host") */
    size_t path_len;
    int minor_version; /* HTTP/1.<minor_version> */
    bool keep_alive;   /* the connection may carry another request after this one */
    bool chunked;      /* Transfer-Encoding: chunked */
    bool has_content_length;
    uint64_t content_length;
    bool expect_continue; /* Expect: 100-continue */
    const char *content_encoding;
    size_t content_encoding_len;
    const char *accept_encoding;
    size_t accept_encoding_len;
    const char *infer_header_length; /* Inference-Header-Content-Length */
    size_t infer_header_length_len;
} imagen__http_head;

typedef enum {
    IMAGEN_HTTP_PARSE_OK = 0,
    IMAGEN_HTTP_PARSE_INCOMPLETE = 1, /* need more bytes */
    IMAGEN_HTTP_PARSE_ERROR = 2       /* *status and *message tell why */
} imagen__http_parse_result;

/* Parses the request head at the start of buf[0..len). On ERROR, *status is
 * the HTTP status to answer with before closing (400, 414, 417, 431, 501,
 * 505) and *message a static description. Pure; thread-safe. */
imagen__http_parse_result imagen__http_parse_head(const char *buf, size_t len, imagen__http_head *head, int *status,
                                                  const char **message);

/* Incremental decoder of the chunked transfer coding. */
typedef struct imagen__http_chunked {
    int state;
    uint64_t remaining; /* chunk size being read, then data bytes left */
    unsigned digits;
    size_t line_len;
} imagen__http_chunked;

/* Receives decoded body bytes; false = out of memory. */
typedef bool (*imagen__http_body_sink)(void *ctx, const char *data, size_t n);

void imagen__http_chunked_init(imagen__http_chunked *c);
/* Feeds bytes; data goes to `sink`. Returns the bytes consumed (fewer than
 * `len` only once the body has ended: the rest belongs to the next request),
 * or (size_t)-1 with *message set for malformed framing. */
size_t imagen__http_chunked_feed(imagen__http_chunked *c, const char *in, size_t len, imagen__http_body_sink sink,
                                 void *ctx, const char **message);
/* True once the last chunk and the trailer section have been consumed. */
bool imagen__http_chunked_done(const imagen__http_chunked *c);

/* ======================================================================
 * Metrics text helpers (metrics.c)
 * ==================================================================== */

/* Appends a Prometheus label value with \\, \" and \n escaped. */
void imagen__metrics_append_label_value(imagen_buf *b, const char *s);
/* Appends "_<key>" with characters outside [A-Za-z0-9_] replaced by '_'. */
void imagen__metrics_append_tag_name(imagen_buf *b, const char *key);

#endif /* IMAGEN_HTTP_INTERNAL_H */
