/*
 * The table of backends compiled into imagen-server. The core never names a
 * backend: main() hands this table to imagen_server_create() through
 * imagen_server_options.builtin_backends, and the core looks rows up by the
 * config's `backend` value. Adding a built-in backend is one row in
 * registry.c.
 */
#ifndef IMAGEN_BACKENDS_REGISTRY_H
#define IMAGEN_BACKENDS_REGISTRY_H

#include <stddef.h>

#include "imagen/backend.h"

/* Every built-in backend's vtable, imagen_builtin_backend_count rows. Static
 * data; read-only, safe from any thread. */
extern const imagen_backend *const imagen_builtin_backends[];
extern const size_t imagen_builtin_backend_count;

#endif /* IMAGEN_BACKENDS_REGISTRY_H */
