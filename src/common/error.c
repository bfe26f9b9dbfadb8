/*
 * imagen_error implementation. Errors are heap objects holding a code and a
 * formatted message. When allocation fails we return a static error so that
 * callers always get something to report; imagen_error_free() knows not to
 * free it.
 */
#include "imagen/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct imagen_error {
    imagen_error_code code;
    char *message;
};

imagen_error imagen__error_out_of_memory = {IMAGEN_ERR_INTERNAL, (char *)"out of memory"};

static const struct {
    const char *name;
    int http;
    int grpc;
} code_table[] = {
#define IMAGEN_ERROR_ROW_(code, name, http, grpc) {name, http, grpc},
    IMAGEN_ERROR_CODES(IMAGEN_ERROR_ROW_)
#undef IMAGEN_ERROR_ROW_
};

imagen_error *
imagen_error_newv(imagen_error_code code, const char *fmt, va_list ap)
{
    imagen_error *err = malloc(sizeof(*err));
    if (err == NULL)
        return &imagen__error_out_of_memory;
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0)
        n = 0;
    err->message = malloc((size_t)n + 1);
    if (err->message == NULL) {
        free(err);
        return &imagen__error_out_of_memory;
    }
    vsnprintf(err->message, (size_t)n + 1, fmt, ap);
    err->code = (code >= 0 && code < IMAGEN_ERR_CODE_COUNT_) ? code : IMAGEN_ERR_UNKNOWN;
    return err;
}

imagen_error *
imagen_error_new(imagen_error_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    imagen_error *err = imagen_error_newv(code, fmt, ap);
    va_end(ap);
    return err;
}

imagen_error *
imagen_error_wrap(imagen_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return NULL;
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    imagen_error *wrapped = imagen_error_new(err->code, "%s: %s", prefix, err->message);
    imagen_error_free(err);
    return wrapped;
}

imagen_error_code
imagen_error_code_of(const imagen_error *err)
{
    return err ? err->code : IMAGEN_ERR_UNKNOWN;
}

const char *
imagen_error_message(const imagen_error *err)
{
    return err ? err->message : "";
}

void
imagen_error_free(imagen_error *err)
{
    if (err == NULL || err == &imagen__error_out_of_memory)
        return;
    free(err->message);
    free(err);
}

const char *
imagen_error_code_name(imagen_error_code code)
{
    if (code < 0 || code >= IMAGEN_ERR_CODE_COUNT_)
        return "UNKNOWN";
    return code_table[code].name;
}

int
imagen_error_code_http_status(imagen_error_code code)
{
    if (code < 0 || code >= IMAGEN_ERR_CODE_COUNT_)
        return 500;
    return code_table[code].http;
}

int
imagen_error_code_grpc_status(imagen_error_code code)
{
    if (code < 0 || code >= IMAGEN_ERR_CODE_COUNT_)
        return 2;
    return code_table[code].grpc;
}
