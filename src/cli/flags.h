/*
 * Command-line flags of imagen-server, parsed from one table (flags.c) whose
 * rows give each flag's name, type, offset into imagen_cli_options, default
 * and help text; --help is printed from the same rows. Names follow
 * Triton's tritonserver where Triton has the flag (spec §8).
 *
 * Not thread-safe: parse once in main() before any thread exists.
 */
#ifndef IMAGEN_CLI_FLAGS_H
#define IMAGEN_CLI_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* A repeatable string flag. Items are borrowed from argv; the array is owned
 * by the options and freed by imagen_cli_options_free(). */
typedef struct imagen_cli_list {
    const char **items;
    size_t n;
} imagen_cli_list;

/* Values of --model-control-mode, in table order. */
typedef enum {
    IMAGEN_CLI_CONTROL_NONE = 0,
    IMAGEN_CLI_CONTROL_POLL = 1,
    IMAGEN_CLI_CONTROL_EXPLICIT = 2
} imagen_cli_control_mode;

/* Values of --log-format, in table order (same numbers as imagen_log_format). */
typedef enum { IMAGEN_CLI_LOG_DEFAULT = 0, IMAGEN_CLI_LOG_ISO8601 = 1, IMAGEN_CLI_LOG_JSON = 2 } imagen_cli_log_format;

/* Everything the flags set. Strings are borrowed from argv or static
 * defaults; NULL means "not given" where the default is "none". */
typedef struct imagen_cli_options {
    /* model repository */
    imagen_cli_list model_repositories; /* --model-repository / --model-store, required */
    int model_control_mode;             /* imagen_cli_control_mode */
    int repository_poll_secs;           /* > 0; default 15 */
    imagen_cli_list load_models;        /* --load-model; "*" only alone */
    const char *model_config_name;      /* NULL = config.pbtxt */
    bool strict_model_config;           /* deprecated: true = disable auto-complete */
    bool disable_auto_complete_config;
    bool strict_readiness;       /* default true */
    bool exit_on_error;          /* default true */
    bool allow_client_shm;       /* --allow-client-shm, default false */
    int exit_timeout_secs;       /* default 30 */
    const char *id;              /* default "triton" */
    int model_load_thread_count; /* default 4 */
    /* HTTP */
    bool allow_http;
    int http_port; /* 0..65535; 0 = any free port */
    const char *http_address;
    int http_thread_count;
    size_t http_max_input_size; /* bytes */
    bool reuse_http_port;
    /* gRPC endpoint (src/grpc/) */
    bool allow_grpc;
    int grpc_port;
    const char *grpc_address;
    int grpc_infer_thread_count; /* 1..64: completion-queue threads */
    /* metrics */
    bool allow_metrics;
    int metrics_port;
    const char *metrics_address; /* NULL = the HTTP address */
    bool allow_cpu_metrics;
    bool allow_gpu_metrics;
    int metrics_interval_ms;
    imagen_cli_list metrics_config; /* k=v; validated by imagen_cli_parse() */
    bool counter_latencies;         /* from metrics_config; default true */
    bool histogram_latencies;       /* from metrics_config; default false */
    bool summary_latencies;         /* from metrics_config; default false */
    double summary_quantiles[8];    /* from metrics_config summary_quantiles; n = 0: the defaults */
    size_t n_summary_quantiles;
    /* logging */
    int log_verbose; /* 0 = off */
    bool log_info;
    bool log_warning;
    bool log_error;
    int log_format;       /* imagen_cli_log_format */
    const char *log_file; /* NULL = stderr */
    /* backends */
    const char *backend_directory;   /* NULL = built-in backends only */
    imagen_cli_list backend_configs; /* [<backend>,]<k>=<v>; stored */
    int cpu_threads;                 /* 0 until parsed: then the online core count */
    /* actions */
    bool help;
    bool version;
    bool check_config;
} imagen_cli_options;

/* Outcome of imagen_cli_parse(). */
typedef enum {
    IMAGEN_CLI_RUN = 0,     /* start the server */
    IMAGEN_CLI_HELP = 1,    /* --help was given: print imagen_cli_print_help() */
    IMAGEN_CLI_VERSION = 2, /* --version was given */
    IMAGEN_CLI_CHECKED = 3, /* --check-config: flags are valid, exit 0 */
    IMAGEN_CLI_ERROR = 4    /* bad flags: `err` holds one line; exit 2 */
} imagen_cli_result;

/* Exit status for bad flags. */
#define IMAGEN_CLI_EXIT_USAGE 2

/* Fills `opts` with every flag's default. */
void imagen_cli_options_init(imagen_cli_options *opts);

/* Parses argv[1..argc-1] into `opts` (which must have been initialised).
 * Accepts `--flag=value` and `--flag value`; a bool flag given alone means
 * true. On IMAGEN_CLI_ERROR, `err` (errlen bytes) holds a one-line message
 * naming the flag and the accepted values. argv must outlive `opts`. */
imagen_cli_result imagen_cli_parse(imagen_cli_options *opts, int argc, char **argv, char *err, size_t errlen);

/* Writes the usage text, generated from the flag table, to `out`. */
void imagen_cli_print_help(FILE *out, const char *prog);

/* Frees the arrays of the repeatable flags; accepts NULL. */
void imagen_cli_options_free(imagen_cli_options *opts);

#endif /* IMAGEN_CLI_FLAGS_H */
