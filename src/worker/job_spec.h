/*
 * What a job asks for, as the worker and `imagen submit` agree on it. The
 * queue stores it as a JSON object and never looks inside:
 *
 *   {"input": "/abs/photo.jpg" | "https://host/photo.jpg",
 *    "input_data": "<base64>", "input_name": "photo.jpg",   (inline instead of input)
 *    "output": "/abs/out/dir" | "https://bucket/signed-put-url",
 *    "format": "png" | "jpeg" | "webp",                      (optional)
 *    "quality": 1..100,                                      (optional)
 *    "params": {"scale": 2, "strength": 0.8, ...}}           (optional)
 *
 * Parameters are checked against the operation's table entry when the spec
 * is built, so a bad job is refused at submit time rather than failing in a
 * worker later.
 */
#ifndef IMAGEN_WORKER_JOB_SPEC_H
#define IMAGEN_WORKER_JOB_SPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "imagen/error.h"
#include "worker/operation.h"

/* Inline input bytes are limited so that a job stays small in the queue;
 * larger inputs go by path or URL. */
#define IMAGEN_JOB_INLINE_MAX (8u << 20)
#define IMAGEN_JOB_PARAMS_MAX 8

typedef struct imagen_job_param_value {
    const imagen_operation_param *param;
    double value;
} imagen_job_param_value;

typedef struct imagen_job_spec {
    const imagen_operation *op;
    char *input;               /* absolute path or http(s) URL; NULL when inline */
    unsigned char *input_data; /* inline bytes; NULL when input is set */
    size_t input_size;
    char *input_name; /* file name the output is named after; NULL = derive from input */
    char *output;     /* absolute directory or http(s) URL */
    char *format;     /* "png", "jpeg", "webp"; NULL = input's format (PNG when RGBA) */
    int quality;      /* 1..100; 0 = the encoder's default (90) */
    imagen_job_param_value params[IMAGEN_JOB_PARAMS_MAX];
    size_t n_params;
} imagen_job_spec;

/* Zeroes a spec for `op`. */
void imagen_job_spec_init(imagen_job_spec *spec, const imagen_operation *op);
/* Frees the members; the spec may be reused after imagen_job_spec_init(). */
void imagen_job_spec_clear(imagen_job_spec *spec);

/* Applies "name=value": an operation parameter (range-checked), "format"
 * or "quality". INVALID_ARG naming the parameter and what is accepted. */
imagen_error *imagen_job_spec_set(imagen_job_spec *spec, const char *name, const char *value);

/* The value a job uses for a parameter: its own or the table's fallback. */
double imagen_job_spec_param(const imagen_job_spec *spec, const imagen_operation_param *param);

/* JSON text of the spec (owned, free()). Checks that exactly one of input
 * and input_data is set and that output is set. */
imagen_error *imagen_job_spec_to_json(const imagen_job_spec *spec, char **json);
/* Parses what to_json wrote, for operation `op` (the queue's op for the
 * job). INVALID_ARG naming the member at fault. */
imagen_error *imagen_job_spec_parse(const char *op, const char *json, imagen_job_spec *out);

/* True for an http:// or https:// location (input or output; the scheme in
 * any case), false for a path. The one test the worker and the CLI use. */
bool imagen_job_location_is_url(const char *location);

/* Where the job's result goes: for a directory
 * "<dir>/<stem>.<job id>.<ext>" (stem = input name without directory and
 * extension, reduced to [A-Za-z0-9._-]), for a URL the URL itself. A pure
 * function of the spec and the id, so a job delivered twice writes the same
 * place. ext is "png", "jpg" or "webp". Owned string. */
char *imagen_job_output_location(const imagen_job_spec *spec, const char *id, const char *ext);

#endif /* IMAGEN_WORKER_JOB_SPEC_H */
