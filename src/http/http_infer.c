/*
 * Inference request decoding and response encoding for POST .../infer
 * (spec §1.9-§1.11): the JSON request header, the binary tensor extension
 * in both directions, raw binary requests and classification. Runs on
 * network threads; never blocks and never touches sockets. Binary input
 * tensors point straight into the received body (zero copy), so the body
 * must outlive the request; every size taken from the wire is checked
 * against the bytes actually present before it is used. Tensors in a
 * client's shared-memory region (spec §1.13) are read in place; outputs
 * bound to a region are copied into it when the response is encoded.
 */
#include "http/http_internal.h"

#include "common/classify.h"
#include "common/copy_stats.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INFER_MAX_OWNED_BUFFERS IMAGEN_REQUEST_MAX_INPUTS /* decoded JSON inputs per request */

/* What the client asked of one output. */
typedef struct out_spec {
    char *name;
    bool binary;             /* parameters.binary_data */
    uint64_t classification; /* parameters.classification; 0 = none */
    void *shm_addr;          /* region bytes the output goes to; NULL = not shm */
    uint64_t shm_size;       /* bytes available at shm_addr */
} out_spec;

struct imagen__http_infer {
    imagen_request *req; /* owned reference */
    void **owned;        /* buffers decoded from JSON; freed with the object */
    size_t n_owned, cap_owned;
    void *owned_inline[4]; /* `owned` for the usual few inputs */
    out_spec *outs;        /* requested outputs, in request order */
    size_t n_outs;
    bool binary_default;       /* binary_data_output: outputs not listed */
    bool raw;                  /* raw binary request: every output binary */
    char *id;                  /* "" when none */
    char *model;               /* the model name as requested */
    imagen_shm *shm;           /* borrowed registry; NULL = client shm disabled */
    imagen_shm_ref **shm_refs; /* mappings the request reads or writes; released at free */
    size_t n_shm_refs;
};

/* ======================================================================
 * Small helpers
 * ==================================================================== */

static imagen_error *
own(imagen__http_infer *inf, void *p)
{
    if (p == NULL)
        return NULL;
    if (inf->n_owned == INFER_MAX_OWNED_BUFFERS) {
        free(p);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "too many inputs (at most %d)", INFER_MAX_OWNED_BUFFERS);
    }
    if (inf->owned == NULL) {
        inf->owned = inf->owned_inline;
        inf->cap_owned = sizeof(inf->owned_inline) / sizeof(inf->owned_inline[0]);
    }
    if (inf->n_owned == inf->cap_owned) {
        size_t ncap = inf->cap_owned * 2;
        void **grown = malloc(ncap * sizeof(void *));
        if (grown == NULL) {
            free(p);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        }
        memcpy(grown, inf->owned, inf->n_owned * sizeof(void *));
        if (inf->owned != inf->owned_inline)
            free(inf->owned);
        inf->owned = grown;
        inf->cap_owned = ncap;
    }
    inf->owned[inf->n_owned++] = p;
    return NULL;
}

imagen_error *
imagen__http_parse_header_length(const char *value, size_t body_len, size_t *out)
{
    if (value == NULL || value[0] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Inference-Header-Content-Length header is empty");
    uint64_t v = 0;
    for (const char *p = value; *p; p++) {
        if (*p < '0' || *p > '9')
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "Inference-Header-Content-Length header value '%.64s' is not a "
                                    "non-negative integer",
                                    value);
        if (v > (UINT64_MAX - 9) / 10)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "Inference-Header-Content-Length header value '%.64s' is too large", value);
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v > body_len)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "Inference-Header-Content-Length header value %" PRIu64
                                " exceeds the request body size of %zu bytes",
                                v, body_len);
    *out = (size_t)v;
    return NULL;
}

/* ======================================================================
 * Request decoding
 * ==================================================================== */

static imagen_error *
parse_request_parameters(imagen__http_infer *inf, const imagen__jv *params)
{
    if (!imagen__jv_is(params, IMAGEN_JV_OBJECT))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'parameters': expected an object");
    for (size_t m = 0; m < params->n; m++) {
        const char *key = params->v.members[m].key;
        const imagen__jv *v = &params->v.members[m].value;
        if (strncmp(key, "triton_", 7) == 0)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "parameter keys starting with 'triton_' are reserved for Triton usage and "
                                    "should not be specified.");
        if (strcmp(key, "priority") == 0 || strcmp(key, "timeout") == 0) {
            uint64_t u;
            if (!imagen__jv_u64(v, &u))
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse '%s': expected an unsigned integer",
                                        key);
            if (key[0] == 'p')
                imagen_request_set_priority(inf->req, u);
            else
                imagen_request_set_timeout_us(inf->req, u);
            continue;
        }
        if (strcmp(key, "binary_data_output") == 0) {
            if (!imagen__jv_is_boolean(v))
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "Unable to parse 'binary_data_output': expected a boolean");
            inf->binary_default = imagen__jv_is(v, IMAGEN_JV_TRUE);
            continue;
        }
        if (strcmp(key, "sequence_id") == 0) {
            if (!imagen__jv_is(v, IMAGEN_JV_STRING) && !imagen__jv_is(v, IMAGEN_JV_INT))
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "Unable to parse 'sequence_id': expected an unsigned integer or a string");
            continue;
        }
        if (strcmp(key, "sequence_start") == 0 || strcmp(key, "sequence_end") == 0) {
            if (!imagen__jv_is_boolean(v))
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse '%s': expected a boolean", key);
            continue;
        }
        if (strcmp(key, "headers") == 0)
            continue;
        imagen_request_param p;
        memset(&p, 0, sizeof(p));
        p.key = (char *)key;
        if (v->type == IMAGEN_JV_UINT) {
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "parameter '%s' is an integer out of range", key);
        } else if (imagen__jv_is(v, IMAGEN_JV_STRING)) {
            p.type = IMAGEN_PARAM_STRING;
            p.string_value = (char *)(v)->v.s;
        } else if (imagen__jv_is(v, IMAGEN_JV_INT)) {
            p.type = IMAGEN_PARAM_INT;
            p.int_value = (int64_t)(v)->v.i;
        } else if (imagen__jv_is_boolean(v)) {
            p.type = IMAGEN_PARAM_BOOL;
            p.bool_value = imagen__jv_is(v, IMAGEN_JV_TRUE);
        } else if (imagen__jv_is(v, IMAGEN_JV_REAL)) {
            p.type = IMAGEN_PARAM_DOUBLE;
            p.double_value = (v)->v.d;
        } else {
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "parameter '%s' has invalid type. It should be either 'int', 'bool', "
                                    "'double' or 'string'.",
                                    key);
        }
        IMAGEN_RETURN_IF_ERROR(imagen_request_add_parameter(inf->req, &p));
    }
    return NULL;
}

static imagen_error *
shm_disabled(void)
{
    return imagen_error_new(IMAGEN_ERR_UNSUPPORTED,
                            "Client shared memory is disabled. Start the server with '--allow-client-shm=true' "
                            "to enable.");
}

/* Reads an unsigned shm parameter: a JSON integer >= 0, or one above
 * INT64_MAX, so that huge offsets reach
 * the bounds check instead of failing as "not a number". */
static imagen_error *
shm_u64(const imagen__jv *params, const char *key, bool required, const char *what, const char *name, uint64_t *out)
{
    const imagen__jv *v = imagen__jv_object_get(params, key);
    *out = 0;
    if (v == NULL && !required)
        return NULL;
    if (v != NULL && imagen__jv_u64(v, out))
        return NULL;
    return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s '%s': '%s' must be a non-negative integer", what, name, key);
}

/* Resolves the shared_memory_* parameters of input or output `name` to an
 * address inside a registered region; the infer object keeps the mapping
 * referenced until it is freed, so unregistering meanwhile is harmless. */
static imagen_error *
shm_resolve(imagen__http_infer *inf, const imagen__jv *params, const char *what, const char *name, void **addr,
            uint64_t *size)
{
    if (inf->shm == NULL)
        return shm_disabled();
    const imagen__jv *region = imagen__jv_object_get(params, "shared_memory_region");
    if (!imagen__jv_is(region, IMAGEN_JV_STRING))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s '%s': 'shared_memory_region' must be a string", what, name);
    uint64_t offset;
    IMAGEN_RETURN_IF_ERROR(shm_u64(params, "shared_memory_byte_size", true, what, name, size));
    IMAGEN_RETURN_IF_ERROR(shm_u64(params, "shared_memory_offset", false, what, name, &offset));
    if (inf->shm_refs == NULL) {
        inf->shm_refs = calloc(IMAGEN_REQUEST_MAX_INPUTS + IMAGEN_REQUEST_MAX_OUTPUTS, sizeof(imagen_shm_ref *));
        if (inf->shm_refs == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    if (inf->n_shm_refs == IMAGEN_REQUEST_MAX_INPUTS + IMAGEN_REQUEST_MAX_OUTPUTS)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "too many shared-memory tensors");
    IMAGEN_RETURN_IF_ERROR(
        imagen_shm_acquire(inf->shm, (region)->v.s, offset, *size, addr, &inf->shm_refs[inf->n_shm_refs]));
    inf->n_shm_refs++;
    return NULL;
}

/* Parses "shape" into shape[]; every dimension must be a non-negative int. */
static imagen_error *
parse_shape(const imagen__jv *js, const char *name, int64_t *shape, size_t *rank)
{
    if (!imagen__jv_is(js, IMAGEN_JV_ARRAY))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'shape' of input '%s': expected an array",
                                name);
    size_t n = (js)->n;
    if (n > IMAGEN_MAX_RANK)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input '%s' has %zu dimensions, more than the limit of %d",
                                name, n, IMAGEN_MAX_RANK);
    for (size_t i = 0; i < n; i++) {
        const imagen__jv *d = &(js)->v.items[i];
        if (!imagen__jv_is(d, IMAGEN_JV_INT) || (d)->v.i < 0)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "Unable to parse 'shape' of input '%s': dimension %zu must be a non-negative "
                                    "integer",
                                    name, i);
        shape[i] = (int64_t)(d)->v.i;
    }
    *rank = n;
    return NULL;
}

static imagen_error *
datatype_error(imagen__http_infer *inf, const char *name, const char *given)
{
    const imagen_model_config *cfg = imagen_model_get_config(imagen_request_model(inf->req));
    const imagen_tensor_config *tc = cfg ? imagen_model_config_input(cfg, name) : NULL;
    if (tc != NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "inference input '%s' data-type is '%s', but model '%s' expects '%s'", name, given,
                                inf->model, imagen_datatype_name(tc->datatype));
    return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "invalid datatype '%s' for input '%s'", given, name);
}

/* Parses one element of "inputs" and adds it to the request. Binary data is
 * taken from *blob / *blob_left, which advance past it. */
static imagen_error *
parse_input(imagen__http_infer *inf, const imagen__jv *in, size_t index, const char **blob, size_t *blob_left,
            size_t max_input)
{
    if (!imagen__jv_is(in, IMAGEN_JV_OBJECT))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'inputs': element %zu is not an object",
                                index);
    const imagen__jv *jname = imagen__jv_object_get(in, "name");
    if (!imagen__jv_is(jname, IMAGEN_JV_STRING))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'name' of input %zu", index);
    const char *name = (jname)->v.s;
    const imagen__jv *jdt = imagen__jv_object_get(in, "datatype");
    if (!imagen__jv_is(jdt, IMAGEN_JV_STRING))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'datatype' of input '%s'", name);
    const char *dts = (jdt)->v.s;
    imagen_datatype dt = imagen_datatype_from_name(dts, (jdt)->n);
    if (dt == IMAGEN_TYPE_INVALID)
        return datatype_error(inf, name, dts);
    int64_t shape[IMAGEN_MAX_RANK];
    size_t rank = 0;
    const imagen__jv *jshape = imagen__jv_object_get(in, "shape");
    if (jshape == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'shape' of input '%s'", name);
    IMAGEN_RETURN_IF_ERROR(parse_shape(jshape, name, shape, &rank));
    uint64_t elems = 0;
    if (!imagen_shape_element_count(shape, rank, IMAGEN_REQUEST_MAX_ELEMENTS, &elems))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "input '%s' has a shape whose element count exceeds the limit of %" PRIu64, name,
                                (uint64_t)IMAGEN_REQUEST_MAX_ELEMENTS);

    const imagen__jv *params = imagen__jv_object_get(in, "parameters");
    const imagen__jv *jsize = NULL, *jregion = NULL;
    if (params != NULL) {
        if (!imagen__jv_is(params, IMAGEN_JV_OBJECT))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "Unable to parse 'parameters' of input '%s': expected an object", name);
        jsize = imagen__jv_object_get(params, "binary_data_size");
        jregion = imagen__jv_object_get(params, "shared_memory_region");
        if (jregion != NULL && inf->shm == NULL)
            return shm_disabled();
    }
    const imagen__jv *data = imagen__jv_object_get(in, "data");
    if ((data != NULL) + (jsize != NULL) + (jregion != NULL) != 1)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "Input must set only one of the following fields: 'data', 'binary_data_size' in "
                                "'parameters', 'shared_memory_region' in 'parameters' (input '%s')",
                                name);
    if (jregion != NULL) {
        /* Zero copy: the request reads the client's region in place. */
        void *addr = NULL;
        uint64_t size = 0;
        IMAGEN_RETURN_IF_ERROR(shm_resolve(inf, params, "input", name, &addr, &size));
        return imagen_request_add_input(inf->req, name, dt, shape, rank, size ? addr : NULL, (size_t)size);
    }
    if (jsize != NULL) {
        uint64_t size;
        if (!imagen__jv_u64(jsize, &size))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "Unable to parse 'binary_data_size' of input '%s': expected an unsigned "
                                    "integer",
                                    name);
        if (size > *blob_left)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "unexpected size for input '%s', expecting %" PRIu64
                                    " additional bytes for model '%s' but only %zu remain",
                                    name, size, inf->model, *blob_left);
        const char *p = *blob;
        *blob += size;
        *blob_left -= (size_t)size;
        return imagen_request_add_input(inf->req, name, dt, shape, rank, size ? p : NULL, (size_t)size);
    }
    void *buf = NULL;
    size_t size = 0;
    IMAGEN_RETURN_IF_ERROR(imagen__http_json_decode_tensor(data, dt, elems, max_input, name, &buf, &size));
    IMAGEN_RETURN_IF_ERROR(own(inf, buf));
    return imagen_request_add_input(inf->req, name, dt, shape, rank, buf, size);
}

static imagen_error *
parse_outputs(imagen__http_infer *inf, const imagen__jv *outs)
{
    if (!imagen__jv_is(outs, IMAGEN_JV_ARRAY))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'outputs': expected an array");
    size_t n = (outs)->n;
    if (n > IMAGEN_REQUEST_MAX_OUTPUTS)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "too many requested outputs (at most %d)",
                                IMAGEN_REQUEST_MAX_OUTPUTS);
    if (n == 0)
        return NULL;
    inf->outs = calloc(n, sizeof(out_spec));
    if (inf->outs == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const imagen__jv *o = &(outs)->v.items[i];
        const imagen__jv *jname = imagen__jv_is(o, IMAGEN_JV_OBJECT) ? imagen__jv_object_get(o, "name") : NULL;
        if (!imagen__jv_is(jname, IMAGEN_JV_STRING))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'name' of requested output %zu", i);
        const char *name = (jname)->v.s;
        out_spec *s = &inf->outs[inf->n_outs];
        s->name = strdup(name);
        if (s->name == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        inf->n_outs++;
        const imagen__jv *params = imagen__jv_object_get(o, "parameters");
        if (params != NULL) {
            if (!imagen__jv_is(params, IMAGEN_JV_OBJECT))
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "Unable to parse 'parameters' of output '%s': expected an object", name);
            const imagen__jv *b = imagen__jv_object_get(params, "binary_data");
            if (b != NULL) {
                if (!imagen__jv_is_boolean(b))
                    return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                            "Unable to parse 'binary_data' of output '%s': expected a boolean", name);
                s->binary = imagen__jv_is(b, IMAGEN_JV_TRUE);
            }
            const imagen__jv *c = imagen__jv_object_get(params, "classification");
            if (c != NULL && !imagen__jv_u64(c, &s->classification))
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "Unable to parse 'classification' of output '%s': expected an unsigned "
                                        "integer",
                                        name);
            if (imagen__jv_object_get(params, "shared_memory_region") != NULL) {
                if (s->classification > 0)
                    return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                            "Output can't set both 'shared_memory_region' and 'classification' "
                                            "(output '%s')",
                                            name);
                if (s->binary)
                    return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                            "Output can't set both 'shared_memory_region' and 'binary_data' "
                                            "(output '%s')",
                                            name);
                IMAGEN_RETURN_IF_ERROR(shm_resolve(inf, params, "output", name, &s->shm_addr, &s->shm_size));
            }
        }
        IMAGEN_RETURN_IF_ERROR(imagen_request_add_requested_output(inf->req, name));
    }
    return NULL;
}

/* A parsed JSON value takes 24 bytes (and 24 more while its array is
 * open), so a 64 MiB body of small numbers becomes gigabytes while it is
 * parsed. Parsing therefore draws on
 * one budget of values for the whole server, which one body of the maximum
 * size fits: requests beyond it wait for none, they get 503 and may retry.
 * The count per body is an upper bound: its commas plus one. */
#define HTTP_JSON_VALUES_BUDGET_COUNT (UINT64_C(1) << 25)
static atomic_uint_fast64_t json_values_in_parse;

static uint64_t
count_json_values(const char *text, size_t len)
{
    uint64_t n = 1;
    for (const char *p = text, *end = text + len; (p = memchr(p, ',', (size_t)(end - p))) != NULL; p++)
        n++;
    return n;
}

static imagen_error *build_json_parsed(imagen__http_infer *inf, const char *json, size_t json_len, const char *binary,
                                       size_t binary_len, size_t max_input);

static imagen_error *
build_json(imagen__http_infer *inf, const char *json, size_t json_len, const char *binary, size_t binary_len,
           size_t max_input)
{
    uint64_t values = count_json_values(json, json_len);
    uint64_t before = atomic_fetch_add(&json_values_in_parse, values);
    imagen_error *err;
    if (before != 0 && before + values > HTTP_JSON_VALUES_BUDGET_COUNT)
        err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE,
                               "too much JSON tensor data is being parsed right now; retry, or send large tensors "
                               "with the binary tensor data extension");
    else
        err = build_json_parsed(inf, json, json_len, binary, binary_len, max_input);
    atomic_fetch_sub(&json_values_in_parse, values);
    return err;
}

static imagen_error *
build_json_parsed(imagen__http_infer *inf, const char *json, size_t json_len, const char *binary, size_t binary_len,
                  size_t max_input)
{
    /* The document dies in this function: it lives in this thread's
     * scratch memory (and chunks beyond it for a large body). */
    size_t scratch_cap = 0;
    void *scratch = imagen__http_scratch_acquire(&scratch_cap);
    imagen__jdoc doc;
    imagen__jdoc_init(&doc, scratch, scratch_cap);
    const imagen__jv *root = NULL;
    imagen__jdoc_error jerr;
    if (!imagen__jdoc_parse(&doc, json, json_len, &root, &jerr)) {
        imagen__jdoc_free(&doc);
        imagen__http_scratch_release(scratch);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "failed to parse the request JSON buffer: %s at line %d column %d (offset %zu)",
                                jerr.text, jerr.line, jerr.column, jerr.position);
    }
    imagen_error *err = NULL;
    if (!imagen__jv_is(root, IMAGEN_JV_OBJECT)) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "failed to parse the request JSON buffer: expected an object");
        goto done;
    }
    const imagen__jv *id = imagen__jv_object_get(root, "id");
    if (id != NULL) {
        if (!imagen__jv_is(id, IMAGEN_JV_STRING)) {
            err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'id': expected a string");
            goto done;
        }
        char *copy = strndup((id)->v.s, (id)->n);
        if (copy == NULL) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
            goto done;
        }
        free(inf->id);
        inf->id = copy;
        if (inf->id[0] != '\0' && (err = imagen_request_set_id(inf->req, inf->id)) != NULL)
            goto done;
    }
    const imagen__jv *params = imagen__jv_object_get(root, "parameters");
    if (params != NULL && (err = parse_request_parameters(inf, params)) != NULL)
        goto done;
    const imagen__jv *inputs = imagen__jv_object_get(root, "inputs");
    if (!imagen__jv_is(inputs, IMAGEN_JV_ARRAY)) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Unable to parse 'inputs': expected an array");
        goto done;
    }
    if ((inputs)->n > IMAGEN_REQUEST_MAX_INPUTS) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "too many inputs (at most %d)", IMAGEN_REQUEST_MAX_INPUTS);
        goto done;
    }
    const char *blob = binary;
    size_t blob_left = binary_len;
    for (size_t i = 0; i < (inputs)->n; i++) {
        if ((err = parse_input(inf, &(inputs)->v.items[i], i, &blob, &blob_left, max_input)) != NULL)
            goto done;
    }
    if (blob_left > 0) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                               "unexpected additional input data for model '%s': %zu bytes left after the last "
                               "binary input",
                               inf->model, blob_left);
        goto done;
    }
    const imagen__jv *outs = imagen__jv_object_get(root, "outputs");
    if (outs != NULL)
        err = parse_outputs(inf, outs);
done:
    imagen__jdoc_free(&doc);
    imagen__http_scratch_release(scratch);
    return err;
}

/* Raw binary request (Inference-Header-Content-Length: 0): the whole body is
 * the data of the model's single input. */
static imagen_error *
build_raw(imagen__http_infer *inf, const char *body, size_t body_len)
{
    inf->raw = true;
    const imagen_model_config *cfg = imagen_model_get_config(imagen_request_model(inf->req));
    if (cfg == NULL || cfg->n_inputs != 1)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "Raw request must only have 1 input (found 1) to be deduced but got %zu inputs in "
                                "'%s' model configuration",
                                cfg ? cfg->n_inputs : 0, inf->model);
    const imagen_tensor_config *tc = &cfg->inputs[0];
    int64_t shape[IMAGEN_MAX_RANK + 1];
    size_t rank = 0;
    if (cfg->max_batch_size > 0)
        shape[rank++] = 1;
    if (tc->datatype == IMAGEN_TYPE_BYTES) {
        if (!(tc->rank == 1 && (tc->dims[0] == 1 || tc->dims[0] == -1)))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "Raw request for BYTES input '%s' of model '%s' requires the input shape [1]",
                                    tc->name, inf->model);
        if (body_len > UINT32_MAX)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "raw BYTES input '%s' is longer than 4 GiB", tc->name);
        unsigned char *copy = malloc(body_len + 4);
        if (copy == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        uint32_t n = (uint32_t)body_len;
        copy[0] = (unsigned char)n;
        copy[1] = (unsigned char)(n >> 8);
        copy[2] = (unsigned char)(n >> 16);
        copy[3] = (unsigned char)(n >> 24);
        if (body_len)
            memcpy(copy + 4, body, body_len);
        imagen_copy_stats_add(IMAGEN_COPY_HTTP, IMAGEN_COPY_INPUT, body_len);
        IMAGEN_RETURN_IF_ERROR(own(inf, copy));
        shape[rank++] = 1;
        return imagen_request_add_input(inf->req, tc->name, tc->datatype, shape, rank, copy, body_len + 4);
    }
    size_t es = imagen_datatype_size(tc->datatype);
    uint64_t fixed = es;
    int variable = -1;
    for (size_t i = 0; i < tc->rank; i++) {
        if (tc->dims[i] < 0) {
            if (variable >= 0)
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                        "Raw request for input '%s' of model '%s' can have at most one variable-size "
                                        "dimension",
                                        tc->name, inf->model);
            variable = (int)i;
        } else {
            if (tc->dims[i] != 0 && fixed > UINT64_MAX / (uint64_t)tc->dims[i])
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input '%s' is too large", tc->name);
            fixed *= (uint64_t)tc->dims[i];
        }
    }
    for (size_t i = 0; i < tc->rank; i++)
        shape[rank + i] = tc->dims[i];
    if (variable >= 0) {
        if (fixed == 0 || body_len % fixed != 0)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "unexpected size for input '%s': %zu bytes is not a multiple of %" PRIu64
                                    " bytes for model '%s'",
                                    tc->name, body_len, fixed, inf->model);
        shape[rank + (size_t)variable] = (int64_t)(body_len / fixed);
    }
    rank += tc->rank;
    return imagen_request_add_input(inf->req, tc->name, tc->datatype, shape, rank, body_len ? body : NULL, body_len);
}

imagen_error *
imagen__http_infer_build(imagen_server *srv, imagen_shm *shm, const char *model, int64_t version, const char *json,
                         size_t json_len, const char *binary, size_t binary_len, size_t max_input_bytes,
                         imagen__http_infer **out)
{
    *out = NULL;
    imagen_copy_stats_request(IMAGEN_COPY_HTTP);
    imagen__http_infer *inf = calloc(1, sizeof(*inf));
    if (inf == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    inf->shm = shm;
    inf->model = strdup(model);
    if (inf->model == NULL) {
        free(inf);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    inf->id = strdup("");
    imagen_error *err = inf->id ? imagen_request_new(srv, model, version, &inf->req)
                                : imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    if (err == NULL) {
        if (json == NULL)
            err = build_raw(inf, binary ? binary : "", binary_len);
        else
            err = build_json(inf, json, json_len, binary ? binary : "", binary_len, max_input_bytes);
    }
    if (err != NULL) {
        imagen__http_infer_free(inf);
        return err;
    }
    *out = inf;
    return NULL;
}

imagen_request *
imagen__http_infer_request(imagen__http_infer *inf)
{
    return inf->req;
}

void
imagen__http_infer_free(imagen__http_infer *inf)
{
    if (inf == NULL)
        return;
    if (inf->req)
        imagen_request_release(inf->req);
    /* After the request: its inputs may point into these mappings. */
    for (size_t i = 0; i < inf->n_shm_refs; i++)
        imagen_shm_release(inf->shm_refs[i]);
    free(inf->shm_refs);
    for (size_t i = 0; i < inf->n_owned; i++)
        free(inf->owned[i]);
    if (inf->owned != inf->owned_inline)
        free(inf->owned);
    for (size_t i = 0; i < inf->n_outs; i++)
        free(inf->outs[i].name);
    free(inf->outs);
    free(inf->id);
    free(inf->model);
    free(inf);
}

/* ======================================================================
 * Classification: the logic lives in common/classify.c, shared with gRPC.
 * ==================================================================== */

imagen_error *
imagen__http_classify(const imagen_tensor *t, uint64_t k, bool batching, const char *const *labels, size_t n_labels,
                      imagen_buf *data, int64_t *shape, size_t *rank)
{
    return imagen_classify(t, k, batching, labels, n_labels, data, shape, rank);
}

/* ======================================================================
 * Response encoding
 * ==================================================================== */

static const out_spec *
find_spec(const imagen__http_infer *inf, const char *name)
{
    for (size_t i = 0; i < inf->n_outs; i++)
        if (strcmp(inf->outs[i].name, name) == 0)
            return &inf->outs[i];
    return NULL;
}

imagen_error *
imagen__http_infer_encode(imagen__http_infer *inf, const imagen_response *resp, imagen_buf *out, size_t *json_len,
                          bool *any_binary, imagen__http_blob **blobs_out, size_t *n_blobs_out)
{
    size_t n = imagen_response_output_count(resp);
    if (blobs_out != NULL) {
        *blobs_out = NULL;
        *n_blobs_out = 0;
    }
    imagen__http_blob *blobs = n ? calloc(n, sizeof(imagen__http_blob)) : NULL;
    imagen_buf *cls = n ? calloc(n, sizeof(imagen_buf)) : NULL;
    if (n && (blobs == NULL || cls == NULL)) {
        free(blobs);
        free(cls);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    imagen_error *err = NULL;
    const imagen_model *model = imagen_request_model(inf->req);
    const imagen_model_config *cfg = imagen_model_get_config(model);
    bool batching = cfg && cfg->max_batch_size > 0;
    size_t n_blobs = 0;
    bool by_reference = blobs_out != NULL;
    *any_binary = false;

    /* A small reply in one allocation instead of several growths, and one
     * within glibc's per-thread cache (requests up to 1032 bytes): the
     * buffer is freed on another thread than the one that sizes it. */
    imagen_buf_reserve(out, 500);
    imagen_buf_append_char(out, '{');
    if (inf->id && inf->id[0] != '\0') {
        imagen_buf_append_str(out, "\"id\":");
        imagen_buf_append_json_string(out, inf->id, strlen(inf->id));
        imagen_buf_append_char(out, ',');
    }
    const char *mname = imagen_response_model_name(resp);
    if (mname == NULL)
        mname = inf->model;
    imagen_buf_append_str(out, "\"model_name\":");
    imagen_buf_append_json_string(out, mname, strlen(mname));
    imagen_buf_append_str(out, ",\"model_version\":\"");
    imagen_buf_append_i64(out, imagen_response_model_version(resp));
    imagen_buf_append_str(out, "\",\"outputs\":[");
    for (size_t i = 0; i < n && err == NULL; i++) {
        const imagen_tensor *t = imagen_response_output(resp, i);
        const out_spec *spec = find_spec(inf, t->name);
        bool binary = inf->raw ? true : spec ? spec->binary : inf->binary_default;
        imagen_tensor view = *t;
        int64_t cshape[2];
        if (spec && spec->classification > 0) {
            size_t n_labels = 0;
            const char *const *labels = imagen_model_output_labels(model, t->name, &n_labels);
            size_t crank = 0;
            imagen_buf_init(&cls[i]);
            err = imagen__http_classify(t, spec->classification, batching, labels, n_labels, &cls[i], cshape, &crank);
            if (err != NULL)
                break;
            view.datatype = IMAGEN_TYPE_BYTES;
            view.shape = cshape;
            view.rank = crank;
            view.data = cls[i].data;
            view.byte_size = cls[i].len;
        }
        if (spec && spec->shm_addr != NULL) {
            if (view.byte_size > spec->shm_size) {
                err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                       "shared memory size specified with the request for output '%s' (%" PRIu64
                                       " bytes) should be at least %zu bytes to hold the results",
                                       view.name, spec->shm_size, view.byte_size);
                break;
            }
            if (view.byte_size)
                memcpy(spec->shm_addr, view.data, view.byte_size);
            imagen_copy_stats_add(IMAGEN_COPY_HTTP, IMAGEN_COPY_OUTPUT, view.byte_size);
        }
        if (i)
            imagen_buf_append_char(out, ',');
        imagen_buf_append_str(out, "{\"name\":");
        imagen_buf_append_json_string(out, view.name, strlen(view.name));
        imagen_buf_append_str(out, ",\"datatype\":\"");
        imagen_buf_append_str(out, imagen_datatype_name(view.datatype));
        imagen_buf_append_str(out, "\",\"shape\":");
        imagen__http_json_append_shape(out, view.shape, view.rank);
        if (spec && spec->shm_addr != NULL) {
            /* The data went into the region: name, datatype and shape only. */
            imagen_buf_append_char(out, '}');
        } else if (binary) {
            imagen_buf_append_str(out, ",\"parameters\":{\"binary_data_size\":");
            imagen_buf_append_u64(out, view.byte_size);
            imagen_buf_append_str(out, "}}");
            blobs[n_blobs].data = view.data;
            blobs[n_blobs].len = view.byte_size;
            n_blobs++;
            if (spec && spec->classification > 0)
                by_reference = false; /* its bytes are freed below */
            *any_binary = true;
        } else {
            imagen_buf_append_str(out, ",\"data\":");
            err = imagen__http_json_encode_tensor(out, &view);
            imagen_buf_append_char(out, '}');
        }
    }
    imagen_buf_append_str(out, "]}");
    *json_len = out->len;
    if (by_reference && err == NULL && n_blobs > 0) {
        *blobs_out = blobs; /* sent from the response: nothing copied */
        *n_blobs_out = n_blobs;
        blobs = NULL;
    } else {
        for (size_t i = 0; i < n_blobs && err == NULL; i++) {
            if (blobs[i].len)
                imagen_buf_append(out, blobs[i].data, blobs[i].len);
            imagen_copy_stats_add(IMAGEN_COPY_HTTP, IMAGEN_COPY_OUTPUT, blobs[i].len);
        }
    }
    for (size_t i = 0; i < n; i++)
        imagen_buf_free(&cls[i]);
    free(cls);
    free(blobs);
    if (err == NULL && imagen_buf_failed(out))
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory encoding the response");
    return err;
}
