/*
 * Path routing for the KServe v2 endpoints (spec §1.1, §1.2): splits a path
 * into segments and matches it against the endpoint table, capturing model,
 * version, repository and region segments. Pure functions; called from the
 * network threads. It never decodes or allocates: names stay raw slices of
 * the path, and the caller decodes them.
 */
#include "http/http_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct segment {
    const char *s;
    size_t len;
} segment;

static bool
seg_is(const segment *seg, const char *lit)
{
    size_t n = strlen(lit);
    return seg->len == n && memcmp(seg->s, lit, n) == 0;
}

/* Splits "/a/b/c" into {a, b, c}. Returns the count, or 0 when the path does
 * not start with '/' or has more than `max` segments. Empty segments
 * (double or trailing slashes) are kept, so they never match a literal. */
static size_t
split(const char *path, segment *segs, size_t max)
{
    if (path == NULL || path[0] != '/')
        return 0;
    size_t n = 0;
    const char *p = path + 1;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (n == max)
            return 0;
        segs[n].s = p;
        segs[n].len = len;
        n++;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    return n;
}

/* Parses a version segment. Returns 1 for a valid int64, 0 when it is not all
 * digits (the path does not match), -1 when the digits overflow int64. */
static int
parse_version(const segment *seg, int64_t *out)
{
    if (seg->len == 0)
        return 0;
    uint64_t v = 0;
    bool overflow = false;
    for (size_t i = 0; i < seg->len; i++) {
        char c = seg->s[i];
        if (c < '0' || c > '9')
            return 0;
        if (v > ((uint64_t)INT64_MAX - (uint64_t)(c - '0')) / 10)
            overflow = true;
        else
            v = v * 10 + (uint64_t)(c - '0');
    }
    if (overflow)
        return -1;
    *out = (int64_t)v;
    return 1;
}

static void
set_kind(imagen__http_route *out, imagen__http_route_kind kind, unsigned methods)
{
    out->kind = kind;
    out->methods = methods;
}

/* /v2/models/${M}[/versions/${V}][/<action>] with segs[0..1] = v2, models. */
static void
match_models(const segment *segs, size_t n, imagen__http_route *out)
{
    const unsigned GET = IMAGEN_HTTP_METHOD_GET, POST = IMAGEN_HTTP_METHOD_POST;
    if (n == 3 && seg_is(&segs[2], "stats")) {
        set_kind(out, IMAGEN_HTTP_ROUTE_MODEL_STATS, GET);
        return;
    }
    if (n < 3 || segs[2].len == 0)
        return;
    size_t i = 3;
    if (n >= 5 && seg_is(&segs[3], "versions")) {
        int r = parse_version(&segs[4], &out->version);
        if (r == 0)
            return;
        out->version_text = segs[4].s;
        out->version_len = segs[4].len;
        if (r < 0) {
            out->version = -1;
            set_kind(out, IMAGEN_HTTP_ROUTE_BAD_VERSION, GET | POST);
            out->model = segs[2].s;
            out->model_len = segs[2].len;
            /* Only a path that would otherwise match is a bad version. */
            if (n == 5 || (n == 6 && (seg_is(&segs[5], "ready") || seg_is(&segs[5], "config") ||
                                      seg_is(&segs[5], "stats") || seg_is(&segs[5], "infer"))))
                return;
            set_kind(out, IMAGEN_HTTP_ROUTE_NOT_FOUND, 0);
            return;
        }
        i = 5;
    }
    imagen__http_route_kind kind;
    unsigned methods;
    if (n == i) {
        kind = IMAGEN_HTTP_ROUTE_MODEL_METADATA;
        methods = GET;
    } else if (n == i + 1 && seg_is(&segs[i], "ready")) {
        kind = IMAGEN_HTTP_ROUTE_MODEL_READY;
        methods = GET;
    } else if (n == i + 1 && seg_is(&segs[i], "config")) {
        kind = IMAGEN_HTTP_ROUTE_MODEL_CONFIG;
        methods = GET;
    } else if (n == i + 1 && seg_is(&segs[i], "stats")) {
        kind = IMAGEN_HTTP_ROUTE_MODEL_STATS;
        methods = GET;
    } else if (n == i + 1 && seg_is(&segs[i], "infer")) {
        kind = IMAGEN_HTTP_ROUTE_INFER;
        methods = POST;
    } else {
        /* generate, generate_stream, trace/setting: not provided. */
        out->version = -1;
        out->version_text = NULL;
        out->version_len = 0;
        return;
    }
    out->model = segs[2].s;
    out->model_len = segs[2].len;
    set_kind(out, kind, methods);
}

/* /v2/repository[/${REPO}]/(index|models/${M}/(load|unload)). */
static void
match_repository(const segment *segs, size_t n, imagen__http_route *out)
{
    size_t i = 2;
    /* With a repository segment the rest is one of the two shapes below;
     * "models" is tried as the action first, as the regex would. */
    if (n == 3 && seg_is(&segs[2], "index")) {
        set_kind(out, IMAGEN_HTTP_ROUTE_REPO_INDEX, IMAGEN_HTTP_METHOD_POST);
        return;
    }
    if (n == 5 && seg_is(&segs[2], "models") && segs[3].len > 0 &&
        (seg_is(&segs[4], "load") || seg_is(&segs[4], "unload"))) {
        /* no repository segment */
    } else if (n >= 4 && segs[2].len > 0) {
        out->repo = segs[2].s;
        out->repo_len = segs[2].len;
        i = 3;
    } else {
        return;
    }
    if (n == i + 1 && seg_is(&segs[i], "index")) {
        set_kind(out, IMAGEN_HTTP_ROUTE_REPO_INDEX, IMAGEN_HTTP_METHOD_POST);
        return;
    }
    if (n == i + 3 && seg_is(&segs[i], "models") && segs[i + 1].len > 0) {
        out->model = segs[i + 1].s;
        out->model_len = segs[i + 1].len;
        if (seg_is(&segs[i + 2], "load")) {
            set_kind(out, IMAGEN_HTTP_ROUTE_REPO_LOAD, IMAGEN_HTTP_METHOD_POST);
            return;
        }
        if (seg_is(&segs[i + 2], "unload")) {
            set_kind(out, IMAGEN_HTTP_ROUTE_REPO_UNLOAD, IMAGEN_HTTP_METHOD_POST);
            return;
        }
        out->model = NULL;
        out->model_len = 0;
    }
    out->repo = NULL;
    out->repo_len = 0;
}

/* /v2/{system,cuda}sharedmemory[/region/${R}]/(status|register|unregister). */
static void
match_shm(const segment *segs, size_t n, imagen__http_route *out)
{
    out->cuda_shm = seg_is(&segs[1], "cudasharedmemory");
    size_t i = 2;
    if (n >= 5 && seg_is(&segs[2], "region") && segs[3].len > 0) {
        out->region = segs[3].s;
        out->region_len = segs[3].len;
        i = 4;
    }
    if (n != i + 1) {
        out->region = NULL;
        return;
    }
    if (seg_is(&segs[i], "status")) {
        set_kind(out, IMAGEN_HTTP_ROUTE_SHM_STATUS, IMAGEN_HTTP_METHOD_GET);
    } else if (seg_is(&segs[i], "unregister")) {
        set_kind(out, IMAGEN_HTTP_ROUTE_SHM_UNREGISTER, IMAGEN_HTTP_METHOD_POST);
    } else if (seg_is(&segs[i], "register") && out->region != NULL) {
        set_kind(out, IMAGEN_HTTP_ROUTE_SHM_REGISTER, IMAGEN_HTTP_METHOD_POST);
    } else {
        out->region = NULL;
    }
}

void
imagen__http_route_match(const char *path, imagen__http_route *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = IMAGEN_HTTP_ROUTE_NOT_FOUND;
    out->version = -1;
    segment segs[IMAGEN_HTTP_MAX_PATH_SEGMENTS];
    size_t n = split(path, segs, IMAGEN_HTTP_MAX_PATH_SEGMENTS);
    if (n == 0 || !seg_is(&segs[0], "v2"))
        return;
    if (n == 1) {
        set_kind(out, IMAGEN_HTTP_ROUTE_SERVER_METADATA, IMAGEN_HTTP_METHOD_GET);
    } else if (seg_is(&segs[1], "health")) {
        if (n == 3 && seg_is(&segs[2], "live"))
            set_kind(out, IMAGEN_HTTP_ROUTE_HEALTH_LIVE, IMAGEN_HTTP_METHOD_GET);
        else if (n == 3 && seg_is(&segs[2], "ready"))
            set_kind(out, IMAGEN_HTTP_ROUTE_HEALTH_READY, IMAGEN_HTTP_METHOD_GET);
    } else if (seg_is(&segs[1], "models")) {
        match_models(segs, n, out);
    } else if (seg_is(&segs[1], "repository")) {
        match_repository(segs, n, out);
    } else if (n == 2 && seg_is(&segs[1], "logging")) {
        set_kind(out, IMAGEN_HTTP_ROUTE_LOGGING, IMAGEN_HTTP_METHOD_GET | IMAGEN_HTTP_METHOD_POST);
    } else if (seg_is(&segs[1], "systemsharedmemory") || seg_is(&segs[1], "cudasharedmemory")) {
        match_shm(segs, n, out);
    }
}

unsigned
imagen__http_method_bit(const char *method)
{
    if (method == NULL)
        return 0;
    if (strcmp(method, "GET") == 0)
        return IMAGEN_HTTP_METHOD_GET;
    if (strcmp(method, "POST") == 0)
        return IMAGEN_HTTP_METHOD_POST;
    return 0;
}
