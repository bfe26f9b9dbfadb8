/*
 * Logging: one line per event, "<level> <time> <component>: <message>", or a
 * JSON object per line with --log-format=json. The component is the folder
 * name of the caller ("core", "http", "config", "imageops"). Thread-safe:
 * each line is written with a single write(2).
 */
#ifndef IMAGEN_COMMON_LOG_H
#define IMAGEN_COMMON_LOG_H

#include <stdbool.h>

#include "imagen/error.h"

typedef enum {
    IMAGEN_LOG_ERROR = 0,
    IMAGEN_LOG_WARNING = 1,
    IMAGEN_LOG_INFO = 2,
    IMAGEN_LOG_VERBOSE = 3
} imagen_log_level;

typedef enum {
    IMAGEN_LOG_FORMAT_DEFAULT = 0,
    IMAGEN_LOG_FORMAT_ISO8601 = 1,
    IMAGEN_LOG_FORMAT_JSON = 2
} imagen_log_format;

/* Process-wide settings; set once at start-up before threads exist. */
void imagen_log_set_enabled(imagen_log_level level, bool enabled);
void imagen_log_set_verbose(int verbose_level); /* 0 = off */
void imagen_log_set_format(imagen_log_format format);
/* Opens `path` for appending (NULL = stderr). Returns false on failure. */
bool imagen_log_set_file(const char *path);
bool imagen_log_enabled(imagen_log_level level);

void imagen_log(imagen_log_level level, const char *component, const char *fmt, ...) IMAGEN_PRINTF(3, 4);

#define IMAGEN_LOG_ERROR_(comp, ...) imagen_log(IMAGEN_LOG_ERROR, comp, __VA_ARGS__)
#define IMAGEN_LOG_WARN_(comp, ...) imagen_log(IMAGEN_LOG_WARNING, comp, __VA_ARGS__)
#define IMAGEN_LOG_INFO_(comp, ...) imagen_log(IMAGEN_LOG_INFO, comp, __VA_ARGS__)
#define IMAGEN_LOG_VERBOSE_(comp, ...)                         \
    do {                                                       \
        if (imagen_log_enabled(IMAGEN_LOG_VERBOSE))            \
            imagen_log(IMAGEN_LOG_VERBOSE, comp, __VA_ARGS__); \
    } while (0)

#endif
