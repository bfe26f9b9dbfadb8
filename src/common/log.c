/*
 * Logging. Each event is formatted into a stack buffer and written with one
 * write(2) so lines from different threads never interleave.
 */
#include "common/log.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"

/* Changed at run time through POST /v2/logging while other threads log:
 * relaxed atomics, a setting change needs no ordering with log lines. */
static atomic_bool level_enabled[4] = {true, true, true, false};
static _Atomic imagen_log_format log_format = IMAGEN_LOG_FORMAT_DEFAULT;
static int log_fd = 2;

void
imagen_log_set_enabled(imagen_log_level level, bool enabled)
{
    if (level >= IMAGEN_LOG_ERROR && level <= IMAGEN_LOG_VERBOSE)
        level_enabled[level] = enabled;
}

void
imagen_log_set_verbose(int verbose_level)
{
    level_enabled[IMAGEN_LOG_VERBOSE] = verbose_level > 0;
}

void
imagen_log_set_format(imagen_log_format format)
{
    log_format = format;
}

bool
imagen_log_set_file(const char *path)
{
    if (path == NULL || path[0] == '\0') {
        log_fd = 2;
        return true;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return false;
    log_fd = fd;
    return true;
}

bool
imagen_log_enabled(imagen_log_level level)
{
    return level >= IMAGEN_LOG_ERROR && level <= IMAGEN_LOG_VERBOSE && level_enabled[level];
}

void
imagen_log(imagen_log_level level, const char *component, const char *fmt, ...)
{
    static const char *names[] = {"error", "warning", "info", "verbose"};
    if (!imagen_log_enabled(level))
        return;

    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[96];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (long)tv.tv_usec);

    imagen_buf line = IMAGEN_BUF_INIT;
    if (log_format == IMAGEN_LOG_FORMAT_JSON) {
        imagen_buf_append_str(&line, "{\"level\":\"");
        imagen_buf_append_str(&line, names[level]);
        imagen_buf_append_str(&line, "\",\"time\":\"");
        imagen_buf_append_str(&line, when);
        imagen_buf_append_str(&line, "\",\"component\":");
        imagen_buf_append_json_string(&line, component, strlen(component));
        imagen_buf_append_str(&line, ",\"message\":");
        imagen_buf_append_json_string(&line, msg, strlen(msg));
        imagen_buf_append_str(&line, "}\n");
    } else {
        imagen_buf_appendf(&line, "%s %s %s: %s\n", names[level], when, component, msg);
    }
    if (!imagen_buf_failed(&line)) {
        ssize_t off = 0;
        while ((size_t)off < line.len) {
            ssize_t w = write(log_fd, line.data + off, line.len - (size_t)off);
            if (w <= 0)
                break;
            off += w;
        }
    }
    imagen_buf_free(&line);
}
