/*
 * Job specs: building them for `imagen submit`, parsing them in the worker,
 * and the output location both sides agree on (see job_spec.h).
 *
 * Everything a job can get wrong is checked here, when the job is made,
 * against the operation's table entry, so a bad parameter is an error at the
 * submitter's terminal instead of a failed job in a worker's log later. The
 * worker parses with the same checks: a spec written by some other producer
 * gets the same clear messages.
 */
#include "worker/job_spec.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/base64.h"

static const char *const formats[] = {"png", "jpeg", "webp"};

void
imagen_job_spec_init(imagen_job_spec *spec, const imagen_operation *op)
{
    memset(spec, 0, sizeof *spec);
    spec->op = op;
}

void
imagen_job_spec_clear(imagen_job_spec *spec)
{
    free(spec->input);
    free(spec->input_data);
    free(spec->input_name);
    free(spec->output);
    free(spec->format);
    const imagen_operation *op = spec->op;
    imagen_job_spec_init(spec, op);
}

bool
imagen_job_location_is_url(const char *location)
{
    /* Schemes are case-insensitive (RFC 3986). */
    return location != NULL && (strncasecmp(location, "http://", 7) == 0 || strncasecmp(location, "https://", 8) == 0);
}

/* Parses a whole decimal number; false on trailing junk, overflow or NaN. */
static bool
parse_number(const char *text, double *out)
{
    if (text == NULL || text[0] == '\0')
        return false;
    errno = 0;
    char *end;
    double v = strtod(text, &end);
    if (*end != '\0' || errno == ERANGE || isnan(v) || isinf(v))
        return false;
    *out = v;
    return true;
}

static imagen_error *
set_format(imagen_job_spec *spec, const char *value)
{
    const char *canonical = NULL;
    if (strcmp(value, "jpg") == 0)
        canonical = "jpeg";
    for (size_t i = 0; i < sizeof formats / sizeof formats[0] && canonical == NULL; i++) {
        if (strcmp(value, formats[i]) == 0)
            canonical = formats[i];
    }
    if (canonical == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "format '%s' is not supported: use png, jpeg or webp", value);
    if (spec->op->output_rgba && strcmp(canonical, "jpeg") == 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "format jpeg cannot hold the alpha channel %s makes: use png or webp", spec->op->name);
    char *copy = strdup(canonical);
    if (copy == NULL)
        return &imagen__error_out_of_memory;
    free(spec->format);
    spec->format = copy;
    return NULL;
}

imagen_error *
imagen_job_spec_set(imagen_job_spec *spec, const char *name, const char *value)
{
    if (name == NULL || name[0] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "parameter without a name");
    if (value == NULL)
        value = "";
    if (strcmp(name, "format") == 0)
        return set_format(spec, value);
    double v;
    if (strcmp(name, "quality") == 0) {
        if (!parse_number(value, &v) || v != floor(v) || v < 1 || v > 100)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "quality '%s' is not an integer from 1 to 100", value);
        spec->quality = (int)v;
        return NULL;
    }
    const imagen_operation_param *param = imagen_operation_param_find(spec->op, name);
    if (param == NULL) {
        char known[256] = "format, quality";
        for (size_t i = 0; i < spec->op->n_params; i++) {
            size_t len = strlen(known);
            snprintf(known + len, sizeof known - len, ", %s", spec->op->params[i].name);
        }
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s has no parameter '%s' (it has: %s)", spec->op->name, name,
                                known);
    }
    bool integral = param->datatype != IMAGEN_TYPE_FP32 && param->datatype != IMAGEN_TYPE_FP64;
    if (!parse_number(value, &v) || (integral && v != floor(v)))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s parameter %s='%s' is not %s", spec->op->name, name, value,
                                integral ? "an integer" : "a number");
    if (v < param->min || v > param->max)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s parameter %s=%s is out of range [%g, %g]", spec->op->name,
                                name, value, param->min, param->max);
    for (size_t i = 0; i < spec->n_params; i++) {
        if (spec->params[i].param == param) {
            spec->params[i].value = v;
            return NULL;
        }
    }
    if (spec->n_params == IMAGEN_JOB_PARAMS_MAX)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "more than %d parameters", IMAGEN_JOB_PARAMS_MAX);
    spec->params[spec->n_params].param = param;
    spec->params[spec->n_params].value = v;
    spec->n_params++;
    return NULL;
}

double
imagen_job_spec_param(const imagen_job_spec *spec, const imagen_operation_param *param)
{
    for (size_t i = 0; i < spec->n_params; i++) {
        if (spec->params[i].param == param)
            return spec->params[i].value;
    }
    return param->fallback;
}

static imagen_error *
check_places(const imagen_job_spec *spec)
{
    if ((spec->input == NULL) == (spec->input_data == NULL))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "a job needs exactly one of an input path/URL and inline data");
    if (spec->input != NULL && spec->input[0] != '/' && !imagen_job_location_is_url(spec->input))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input '%s' is neither an absolute path nor an http(s) URL",
                                spec->input);
    if (spec->input_data != NULL && spec->input_size > IMAGEN_JOB_INLINE_MAX)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "inline input is %zu bytes, more than the %u a job may carry: pass a path or URL",
                                spec->input_size, IMAGEN_JOB_INLINE_MAX);
    if (spec->output == NULL || spec->output[0] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "a job needs an output directory or URL");
    if (spec->output[0] != '/' && !imagen_job_location_is_url(spec->output))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "output '%s' is neither an absolute directory nor an http(s) URL", spec->output);
    return NULL;
}

imagen_error *
imagen_job_spec_to_json(const imagen_job_spec *spec, char **json)
{
    IMAGEN_RETURN_IF_ERROR(check_places(spec));
    json_t *root = json_object();
    json_t *params = json_object();
    char *b64 = NULL;
    if (spec->input != NULL) {
        json_object_set_new(root, "input", json_string(spec->input));
    } else {
        b64 = imagen_base64_encode(spec->input_data, spec->input_size);
        if (b64 == NULL) {
            json_decref(root);
            json_decref(params);
            return &imagen__error_out_of_memory;
        }
        json_object_set_new(root, "input_data", json_string(b64));
        free(b64);
    }
    if (spec->input_name != NULL)
        json_object_set_new(root, "input_name", json_string(spec->input_name));
    json_object_set_new(root, "output", json_string(spec->output));
    if (spec->format != NULL)
        json_object_set_new(root, "format", json_string(spec->format));
    if (spec->quality > 0)
        json_object_set_new(root, "quality", json_integer(spec->quality));
    for (size_t i = 0; i < spec->n_params; i++) {
        const imagen_operation_param *p = spec->params[i].param;
        bool integral = p->datatype != IMAGEN_TYPE_FP32 && p->datatype != IMAGEN_TYPE_FP64;
        json_object_set_new(params, p->name,
                            integral ? json_integer((json_int_t)spec->params[i].value)
                                     : json_real(spec->params[i].value));
    }
    json_object_set_new(root, "params", params);
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (text == NULL)
        return &imagen__error_out_of_memory;
    *json = text;
    return NULL;
}

/* Copies a string member; INVALID_ARG naming it when it is not a string. */
static imagen_error *
take_string(json_t *root, const char *key, char **out)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL)
        return NULL;
    if (!json_is_string(v))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job spec member '%s' must be a string", key);
    *out = strdup(json_string_value(v));
    return *out == NULL ? &imagen__error_out_of_memory : NULL;
}

static imagen_error *
parse_members(json_t *root, imagen_job_spec *spec)
{
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        static const char *const known[] = {"input",  "input_data", "input_name", "output",
                                            "format", "quality",    "params"};
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok = ok || strcmp(key, known[i]) == 0;
        if (!ok)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job spec has an unknown member '%s'", key);
    }
    IMAGEN_RETURN_IF_ERROR(take_string(root, "input", &spec->input));
    IMAGEN_RETURN_IF_ERROR(take_string(root, "input_name", &spec->input_name));
    IMAGEN_RETURN_IF_ERROR(take_string(root, "output", &spec->output));
    json_t *data = json_object_get(root, "input_data");
    if (data != NULL) {
        if (!json_is_string(data))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job spec member 'input_data' must be a base64 string");
        if (!imagen_base64_decode(json_string_value(data), json_string_length(data), &spec->input_data,
                                  &spec->input_size))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job spec member 'input_data' is not valid base64");
    }
    json_t *format = json_object_get(root, "format");
    if (format != NULL) {
        if (!json_is_string(format))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job spec member 'format' must be a string");
        IMAGEN_RETURN_IF_ERROR(imagen_job_spec_set(spec, "format", json_string_value(format)));
    }
    json_t *quality = json_object_get(root, "quality");
    if (quality != NULL) {
        if (!json_is_integer(quality) || json_integer_value(quality) < 1 || json_integer_value(quality) > 100)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "job spec member 'quality' must be an integer from 1 to 100");
        spec->quality = (int)json_integer_value(quality);
    }
    json_t *params = json_object_get(root, "params");
    if (params != NULL) {
        if (!json_is_object(params))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job spec member 'params' must be an object");
        json_object_foreach(params, key, v)
        {
            if (!json_is_number(v))
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job parameter '%s' must be a number", key);
            char text[64];
            if (json_is_integer(v))
                snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            else
                snprintf(text, sizeof text, "%.17g", json_real_value(v));
            IMAGEN_RETURN_IF_ERROR(imagen_job_spec_set(spec, key, text));
        }
    }
    return check_places(spec);
}

imagen_error *
imagen_job_spec_parse(const char *op, const char *json, imagen_job_spec *out)
{
    const imagen_operation *operation = imagen_operation_find(op);
    if (operation == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unknown operation '%s'", op != NULL ? op : "(null)");
    json_error_t jerr;
    json_t *root = json_loads(json != NULL ? json : "", JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job spec is not valid JSON: %s at column %d", jerr.text,
                                jerr.column);
    imagen_job_spec spec;
    imagen_job_spec_init(&spec, operation);
    imagen_error *err = json_is_object(root)
                            ? parse_members(root, &spec)
                            : imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job spec is not a JSON object");
    json_decref(root);
    if (err != NULL) {
        imagen_job_spec_clear(&spec);
        return err;
    }
    *out = spec;
    return NULL;
}

/* The file name an output is named after: the last path segment of the
 * input (URL query and fragment dropped), without its extension, reduced
 * to characters that are safe in any file system and shell. */
static void
output_stem(const imagen_job_spec *spec, char *stem, size_t size)
{
    const char *src = spec->input_name != NULL ? spec->input_name : spec->input;
    if (src == NULL)
        src = "";
    size_t end = strcspn(src, "?#");
    size_t start = end;
    while (start > 0 && src[start - 1] != '/')
        start--;
    size_t dot = end;
    for (size_t i = end; i > start; i--) {
        if (src[i - 1] == '.') {
            dot = i - 1;
            break;
        }
    }
    if (dot == start) /* ".hidden" keeps its name */
        dot = end;
    size_t n = 0;
    for (size_t i = start; i < dot && n + 1 < size && n < 100; i++) {
        char c = src[i];
        bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
        stem[n++] = safe ? c : '_';
    }
    stem[n] = '\0';
    if (n == 0 || stem[0] == '.')
        snprintf(stem, size, "image");
}

char *
imagen_job_output_location(const imagen_job_spec *spec, const char *id, const char *ext)
{
    if (spec->output == NULL)
        return NULL;
    if (imagen_job_location_is_url(spec->output))
        return strdup(spec->output);
    char stem[128];
    output_stem(spec, stem, sizeof stem);
    size_t dir_len = strlen(spec->output);
    while (dir_len > 1 && spec->output[dir_len - 1] == '/')
        dir_len--;
    char *out = NULL;
    if (asprintf(&out, "%.*s/%s.%s.%s", (int)dir_len, spec->output, stem, id, ext) < 0)
        return NULL;
    return out;
}
