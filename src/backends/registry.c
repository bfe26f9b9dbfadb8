/*
 * Built-in backend table. Each backend defines one `const imagen_backend`
 * in its own folder; this file is the only place that lists them, so the
 * core and the frontends stay ignorant of concrete backends. Read-only data,
 * shared by every thread; never add logic here.
 */
#include "backends/registry.h"

/* src/backends/imageops/imageops.c */
extern const imagen_backend imagen_imageops_backend;

const imagen_backend *const imagen_builtin_backends[] = {
    &imagen_imageops_backend,
};

const size_t imagen_builtin_backend_count = sizeof(imagen_builtin_backends) / sizeof(imagen_builtin_backends[0]);
