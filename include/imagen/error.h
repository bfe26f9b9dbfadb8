/*
 * imagen — error objects shared by every module.
 *
 * A function that can fail returns an `imagen_error *`: NULL means success,
 * anything else is an owned error that the caller must either return further
 * up or free with imagen_error_free(). The error carries one of the core codes
 * of the Triton error model (spec §0) and a message that names the thing at
 * fault (model, tensor, field, file:line:col).
 *
 * The one table IMAGEN_ERROR_CODES maps each code to its name, its HTTP status
 * and its gRPC status, so frontends translate errors in exactly one place.
 */
#ifndef IMAGEN_ERROR_H
#define IMAGEN_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define IMAGEN_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define IMAGEN_PRINTF(fmt_index, first_arg)
#endif

/* X(code, name, http status, grpc status) — spec §0. */
#define IMAGEN_ERROR_CODES(X)                   \
    X(UNKNOWN, "UNKNOWN", 400, 2)               \
    X(INTERNAL, "INTERNAL", 500, 13)            \
    X(NOT_FOUND, "NOT_FOUND", 404, 5)           \
    X(INVALID_ARG, "INVALID_ARG", 400, 3)       \
    X(UNAVAILABLE, "UNAVAILABLE", 503, 14)      \
    X(UNSUPPORTED, "UNSUPPORTED", 501, 12)      \
    X(ALREADY_EXISTS, "ALREADY_EXISTS", 400, 6) \
    X(CANCELLED, "CANCELLED", 400, 1)

typedef enum imagen_error_code {
#define IMAGEN_ERROR_ENUM_(code, name, http, grpc) IMAGEN_ERR_##code,
    IMAGEN_ERROR_CODES(IMAGEN_ERROR_ENUM_)
#undef IMAGEN_ERROR_ENUM_
        IMAGEN_ERR_CODE_COUNT_
} imagen_error_code;

typedef struct imagen_error imagen_error;

/* Creates an error with a printf-formatted message. Returns owned (never NULL:
 * on allocation failure a static out-of-memory error is returned, which
 * imagen_error_free() recognises). Thread-safe. */
imagen_error *imagen_error_new(imagen_error_code code, const char *fmt, ...) IMAGEN_PRINTF(2, 3);
imagen_error *imagen_error_newv(imagen_error_code code, const char *fmt, va_list ap) IMAGEN_PRINTF(2, 0);

/* Returns a new error with the same code and "<prefix>: <old message>";
 * consumes `err`. Used to add context such as the model name. */
imagen_error *imagen_error_wrap(imagen_error *err, const char *fmt, ...) IMAGEN_PRINTF(2, 3);

/* Accessors; the message is borrowed and lives as long as the error. */
imagen_error_code imagen_error_code_of(const imagen_error *err);
const char *imagen_error_message(const imagen_error *err);

/* The error every allocation failure falls back to; static, so freeing it
 * is a no-op. Internal: for code that must report an error without
 * allocating. */
extern struct imagen_error imagen__error_out_of_memory;

/* Frees an error; accepts NULL. */
void imagen_error_free(imagen_error *err);

/* The code's name ("INVALID_ARG"), HTTP status and gRPC status code (spec §0). */
const char *imagen_error_code_name(imagen_error_code code);
int imagen_error_code_http_status(imagen_error_code code);
int imagen_error_code_grpc_status(imagen_error_code code);

/* Propagates a non-NULL error to the caller in one line. */
#define IMAGEN_RETURN_IF_ERROR(expr)         \
    do {                                     \
        imagen_error *imagen_err__ = (expr); \
        if (imagen_err__ != NULL)            \
            return imagen_err__;             \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif /* IMAGEN_ERROR_H */
