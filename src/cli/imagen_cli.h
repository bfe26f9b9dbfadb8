/*
 * Pieces of the `imagen` command shared by its files: the subcommand/flag
 * table types and parser (imagen_flags.c) and tensor file I/O (imagen_io.c:
 * .npy and images). Not thread-safe: the command is single-threaded except
 * for the library's async callbacks, which never call into these.
 */
#ifndef IMAGEN_CLI_IMAGEN_CLI_H
#define IMAGEN_CLI_IMAGEN_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "imagen/error.h"
#include "imagen/types.h"

/* Exit codes scripts can rely on (also printed by `imagen --help`). */
enum {
    IMAGEN_EXIT_OK = 0,
    IMAGEN_EXIT_SERVER = 1,  /* the server answered with an error, or "not ready" */
    IMAGEN_EXIT_USAGE = 2,   /* bad command line */
    IMAGEN_EXIT_CONNECT = 3, /* the server could not be reached */
    IMAGEN_EXIT_FILE = 4     /* a local file could not be read or written */
};

#define IMAGEN_CMD_MAX_FLAGS 8
#define IMAGEN_CMD_MAX_VALUES 64

/* One flag of a subcommand. value_name NULL = a boolean switch. */
typedef struct imagen_cmd_flag {
    const char *name;       /* without "--" */
    const char *value_name; /* shown in help: --input NAME=FILE */
    bool repeatable;
    const char *help;
} imagen_cmd_flag;

struct imagen_cmd_args;

/* One subcommand: its positional arguments, flags and handler. */
typedef struct imagen_cmd {
    const char *name;
    const char *positional; /* usage text: "MODEL", "[MODEL]", "" */
    size_t min_positional, max_positional;
    const char *summary;
    const char *details; /* extra help paragraph, or NULL */
    imagen_cmd_flag flags[IMAGEN_CMD_MAX_FLAGS];
    int (*run)(const struct imagen_cmd_args *args);
} imagen_cmd;

/* The parsed command line; strings are borrowed from argv. */
typedef struct imagen_cmd_args {
    const imagen_cmd *cmd;
    const char *url;         /* --url; default IMAGEN_CLIENT_DEFAULT_URL or $IMAGEN_URL */
    int64_t timeout_ms;      /* --timeout SECONDS; 0 = none */
    const char **positional; /* n_positional arguments (owned array, freed by imagen_cmd_args_free) */
    size_t n_positional;
    struct {
        size_t flag; /* index in cmd->flags */
        const char *value;
    } values[IMAGEN_CMD_MAX_VALUES];
    size_t n_values;
} imagen_cmd_args;

/* Parses argv against the table. Returns -1 when parsed (run args->cmd),
 * else the exit code to exit with (help printed: 0; usage error: 2). */
int imagen_cmd_parse(const imagen_cmd *cmds, size_t n_cmds, int argc, char **argv, imagen_cmd_args *args);

/* Frees what imagen_cmd_parse allocated. */
void imagen_cmd_args_free(imagen_cmd_args *args);

/* The value of a flag (last one given), NULL if absent; "" for a switch. */
const char *imagen_cmd_get(const imagen_cmd_args *args, const char *flag);
/* The i-th value of a repeatable flag, NULL past the end. */
const char *imagen_cmd_get_nth(const imagen_cmd_args *args, const char *flag, size_t i);

/* ---- job commands (imagen_jobs.c) ----------------------------------------- */

int imagen_cmd_submit(const imagen_cmd_args *args);
int imagen_cmd_status(const imagen_cmd_args *args);
int imagen_cmd_jobs(const imagen_cmd_args *args);
int imagen_cmd_requeue(const imagen_cmd_args *args);
int imagen_cmd_queues(const imagen_cmd_args *args);

/* ---- tensor files (imagen_io.c) ------------------------------------------ */

/* A tensor read from a file; owns its data (free with imagen_io_tensor_free). */
typedef struct imagen_io_tensor {
    imagen_datatype datatype;
    int64_t shape[IMAGEN_MAX_RANK];
    size_t rank;
    void *data;
    size_t byte_size;
} imagen_io_tensor;

void imagen_io_tensor_free(imagen_io_tensor *t);

/* True when the path names an image by its extension (.png .jpg .jpeg ...). */
bool imagen_io_is_image(const char *path);
/* Reads a .npy file (format v1-v3, little-endian, C order). */
imagen_error *imagen_io_read_npy(const char *path, imagen_io_tensor *out);
/* Decodes an image to UINT8 [H, W, C]. want_channels 3 flattens alpha or
 * expands grey; 0 keeps the image's own bands. */
imagen_error *imagen_io_read_image(const char *path, int want_channels, imagen_io_tensor *out);
/* Writes a tensor as .npy v1 (BYTES is not supported). */
imagen_error *imagen_io_write_npy(const char *path, const imagen_tensor *t);
/* True when the tensor can be a PNG: UINT8 [H,W,3|4] or [1,H,W,3|4]. */
bool imagen_io_is_png_shaped(const imagen_tensor *t);
imagen_error *imagen_io_write_png(const char *path, const imagen_tensor *t);

#endif
