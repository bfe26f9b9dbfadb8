/*
 * Flag parsing for imagen-server. Every flag is one row of `flag_table`:
 * name, type, offsetof into imagen_cli_options, default (as text, applied by
 * the same setter that parses the command line), range or choices, and help
 * text. Parsing, defaults and --help all come from those rows, so a new flag
 * is one more row. Runs on the main thread before any other thread exists;
 * it never prints (main decides what to do with the result) and never
 * copies argv strings.
 */
#include "cli/flags.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/sync.h"
#include "imagen/server.h"

typedef enum {
    FLAG_SECTION, /* a heading in --help; not a flag */
    FLAG_BOOL,    /* true|false|on|off|1|0; a value is optional */
    FLAG_INT,     /* int within [min, max] */
    FLAG_SIZE,    /* size_t byte count within [min, max], k/m/g suffixes */
    FLAG_STRING,  /* const char *, non-empty */
    FLAG_LIST,    /* imagen_cli_list, repeatable */
    FLAG_ENUM,    /* int index into `choices` (case-insensitive) */
    FLAG_ACTION   /* bool set to true; never takes a value (--help) */
} flag_type;

#define FLAG_F_REQUIRED 0x1u /* FLAG_LIST only: must be given at least once */

typedef struct flag_row {
    const char *name;  /* without the leading "--" */
    const char *alias; /* a second name, or NULL */
    flag_type type;
    size_t offset;              /* into imagen_cli_options */
    const char *def;            /* default as command-line text; NULL = none */
    long long min, max;         /* FLAG_INT / FLAG_SIZE range, inclusive */
    const char *const *choices; /* FLAG_ENUM names, NULL-terminated */
    const char *metavar;        /* shown in --help: --name=<metavar> */
    unsigned flags;             /* FLAG_F_* */
    const char *help;
} flag_row;

#define OPT(field) offsetof(imagen_cli_options, field)

static const char *const control_modes[] = {"none", "poll", "explicit", NULL};
static const char *const log_formats[] = {"default", "ISO8601", "json", NULL};

/* Port numbers: 0 asks the kernel for a free port. */
#define PORT_MAX 65535
/* Upper bounds that keep arithmetic on these values far from overflow. */
#define SECS_MAX 86400LL /* one day */
#define THREADS_MAX 1024LL
#define INTERVAL_MS_MAX 3600000LL  /* one hour */
#define INPUT_SIZE_MAX (1LL << 40) /* 1 TiB */

static const flag_row flag_table[] = {
    {.name = "Model repository", .type = FLAG_SECTION},
    {"model-repository", "model-store", FLAG_LIST, OPT(model_repositories), NULL, 0, 0, NULL, "path", FLAG_F_REQUIRED,
     "Root of a model repository; repeat the flag to serve several. Required."},
    {"model-control-mode", NULL, FLAG_ENUM, OPT(model_control_mode), "none", 0, 0, control_modes, NULL, 0,
     "none: load every model at start-up; poll: also follow repository changes; explicit: load only "
     "--load-model models and accept load/unload requests."},
    {"repository-poll-secs", NULL, FLAG_INT, OPT(repository_poll_secs), "15", 1, SECS_MAX, NULL, "secs", 0,
     "Interval between repository scans in poll mode."},
    {"load-model", NULL, FLAG_LIST, OPT(load_models), NULL, 0, 0, NULL, "name", 0,
     "Model to load at start-up in explicit mode; repeatable. '*' loads every model and must be alone."},
    {"model-config-name", NULL, FLAG_STRING, OPT(model_config_name), NULL, 0, 0, NULL, "name", 0,
     "Use <model>/configs/<name>.pbtxt instead of config.pbtxt where it exists."},
    {"disable-auto-complete-config", NULL, FLAG_BOOL, OPT(disable_auto_complete_config), "false", 0, 0, NULL, NULL, 0,
     "Do not let backends complete model configurations; each config.pbtxt must be complete."},
    {"strict-model-config", NULL, FLAG_BOOL, OPT(strict_model_config), "false", 0, 0, NULL, NULL, 0,
     "Deprecated: true is the same as --disable-auto-complete-config."},
    {"model-load-thread-count", NULL, FLAG_INT, OPT(model_load_thread_count), "4", 1, THREADS_MAX, NULL, "n", 0,
     "Threads loading models in parallel."},

    {.name = "Server", .type = FLAG_SECTION},
    {"id", NULL, FLAG_STRING, OPT(id), "triton", 0, 0, NULL, "name", 0,
     "Server name reported by server metadata (GET /v2)."},
    {"strict-readiness", NULL, FLAG_BOOL, OPT(strict_readiness), "true", 0, 0, NULL, NULL, 0,
     "Report ready only while every model is ready; false: ready as soon as the server is live."},
    {"exit-on-error", NULL, FLAG_BOOL, OPT(exit_on_error), "true", 0, 0, NULL, NULL, 0,
     "Exit when start-up fails, including when a model fails to load."},
    {"exit-timeout-secs", NULL, FLAG_INT, OPT(exit_timeout_secs), "30", 0, SECS_MAX, NULL, "secs", 0,
     "On SIGINT/SIGTERM, wait at most this long for in-flight requests before exiting with status 1."},
    {"allow-client-shm", NULL, FLAG_BOOL, OPT(allow_client_shm), "false", 0, 0, NULL, NULL, 0,
     "Let clients register system shared-memory regions and pass tensors through them (both protocols)."},
    {"cpu-threads", NULL, FLAG_INT, OPT(cpu_threads), NULL, 0, THREADS_MAX, NULL, "n", 0,
     "Threads backends may use in total (default: the number of online CPU cores; 0 means the same)."},

    {.name = "HTTP/REST endpoint", .type = FLAG_SECTION},
    {"allow-http", NULL, FLAG_BOOL, OPT(allow_http), "true", 0, 0, NULL, NULL, 0,
     "Serve the KServe v2 HTTP/REST protocol."},
    {"http-port", NULL, FLAG_INT, OPT(http_port), "8000", 0, PORT_MAX, NULL, "port", 0,
     "HTTP port (0 picks a free port)."},
    {"http-address", NULL, FLAG_STRING, OPT(http_address), "0.0.0.0", 0, 0, NULL, "address", 0,
     "Address the HTTP endpoint binds."},
    {"http-thread-count", NULL, FLAG_INT, OPT(http_thread_count), "8", 1, THREADS_MAX, NULL, "n", 0,
     "HTTP event loops (one per core is enough)."},
    {"http-max-input-size", NULL, FLAG_SIZE, OPT(http_max_input_size), "67108864", 1, INPUT_SIZE_MAX, NULL, "bytes", 0,
     "Largest HTTP request body accepted (k, m, g suffixes allowed)."},
    {"reuse-http-port", NULL, FLAG_BOOL, OPT(reuse_http_port), "false", 0, 0, NULL, NULL, 0,
     "Bind the HTTP port with SO_REUSEPORT so several servers can share it."},

    {.name = "gRPC endpoint", .type = FLAG_SECTION},
    {"allow-grpc", NULL, FLAG_BOOL, OPT(allow_grpc), "true", 0, 0, NULL, NULL, 0,
     "Serve GRPCInferenceService and grpc.health.v1.Health."},
    {"grpc-port", NULL, FLAG_INT, OPT(grpc_port), "8001", 0, PORT_MAX, NULL, "port", 0, "gRPC port."},
    {"grpc-address", NULL, FLAG_STRING, OPT(grpc_address), "0.0.0.0", 0, 0, NULL, "address", 0,
     "Address the gRPC endpoint binds."},
    {"grpc-infer-thread-count", NULL, FLAG_INT, OPT(grpc_infer_thread_count), "2", 1, 64, NULL, "n", 0,
     "gRPC completion-queue threads (they run a model only when its executions take microseconds and an instance is "
     "idle)."},

    {.name = "Metrics endpoint", .type = FLAG_SECTION},
    {"allow-metrics", NULL, FLAG_BOOL, OPT(allow_metrics), "true", 0, 0, NULL, NULL, 0,
     "Serve Prometheus metrics at /metrics on the metrics port."},
    {"metrics-port", NULL, FLAG_INT, OPT(metrics_port), "8002", 0, PORT_MAX, NULL, "port", 0, "Metrics port."},
    {"metrics-address", NULL, FLAG_STRING, OPT(metrics_address), NULL, 0, 0, NULL, "address", 0,
     "Address the metrics endpoint binds (default: the HTTP address)."},
    {"allow-cpu-metrics", NULL, FLAG_BOOL, OPT(allow_cpu_metrics), "true", 0, 0, NULL, NULL, 0,
     "Report CPU utilization and memory metrics."},
    {"allow-gpu-metrics", NULL, FLAG_BOOL, OPT(allow_gpu_metrics), "true", 0, 0, NULL, NULL, 0,
     "Report GPU metrics (accepted; this release has none to report)."},
    {"metrics-interval-ms", NULL, FLAG_INT, OPT(metrics_interval_ms), "2000", 1, INTERVAL_MS_MAX, NULL, "ms", 0,
     "Refresh interval of the per-interval metrics."},
    {"metrics-config", NULL, FLAG_LIST, OPT(metrics_config), NULL, 0, 0, NULL, "key=value", 0,
     "Repeatable. counter_latencies=<bool> (default true), histogram_latencies=<bool> (default false), "
     "summary_latencies=<bool> (default false: the nv_inference_*_summary_us quantiles over the last minute) "
     "and summary_quantiles=<q>:<error>,... (default 0.5:0.05,0.9:0.01,0.95:0.001,0.99:0.001,0.999:0.001; "
     "at most 8; values are within about 3 %, whatever error is asked)."},

    {.name = "Logging", .type = FLAG_SECTION},
    {"log-verbose", NULL, FLAG_INT, OPT(log_verbose), "0", 0, INT_MAX, NULL, "level", 0,
     "Verbose logging level; 0 turns it off."},
    {"log-info", NULL, FLAG_BOOL, OPT(log_info), "true", 0, 0, NULL, NULL, 0, "Log info messages."},
    {"log-warning", NULL, FLAG_BOOL, OPT(log_warning), "true", 0, 0, NULL, NULL, 0, "Log warnings."},
    {"log-error", NULL, FLAG_BOOL, OPT(log_error), "true", 0, 0, NULL, NULL, 0, "Log errors."},
    {"log-format", NULL, FLAG_ENUM, OPT(log_format), "default", 0, 0, log_formats, NULL, 0,
     "Log line format: default and ISO8601 print '<level> <time> <component>: <message>', json one "
     "object per line."},
    {"log-file", NULL, FLAG_STRING, OPT(log_file), NULL, 0, 0, NULL, "path", 0,
     "Append log lines to this file instead of stderr."},

    {.name = "Backends", .type = FLAG_SECTION},
    {"backend-directory", NULL, FLAG_STRING, OPT(backend_directory), NULL, 0, 0, NULL, "path", 0,
     "Directory of external backends: <dir>/<name>/libimagen_<name>.so or <dir>/libimagen_<name>.so "
     "(default: built-in backends only)."},
    {"backend-config", NULL, FLAG_LIST, OPT(backend_configs), NULL, 0, 0, NULL, "[backend,]key=value", 0,
     "Backend setting; repeatable (accepted and stored)."},

    {.name = "Other", .type = FLAG_SECTION},
    {"check-config", NULL, FLAG_ACTION, OPT(check_config), NULL, 0, 0, NULL, NULL, 0,
     "Validate the flags, print nothing and exit 0 (or 2 on a bad flag)."},
    {"version", NULL, FLAG_ACTION, OPT(version), NULL, 0, 0, NULL, NULL, 0, "Print the version and exit."},
    {"help", NULL, FLAG_ACTION, OPT(help), NULL, 0, 0, NULL, NULL, 0, "Print this help and exit."},
};

#define FLAG_COUNT (sizeof(flag_table) / sizeof(flag_table[0]))

/* ---------------------------------------------------------------------
 * Setters: one per type. Each returns NULL on success or a description of
 * the accepted values for the error message.
 * ------------------------------------------------------------------- */

/* Describes the values `row` accepts into buf; returns buf. */
static const char *
describe(const flag_row *row, char *buf, size_t len)
{
    switch (row->type) {
    case FLAG_BOOL:
        snprintf(buf, len, "true|false|on|off|1|0");
        break;
    case FLAG_INT:
        if (row->max == INT_MAX)
            snprintf(buf, len, "an integer >= %lld", row->min);
        else
            snprintf(buf, len, "an integer from %lld to %lld", row->min, row->max);
        break;
    case FLAG_SIZE:
        snprintf(buf, len, "a byte count from %lld to %lld (suffix k, m or g allowed)", row->min, row->max);
        break;
    case FLAG_ENUM: {
        size_t off = 0;
        buf[0] = '\0';
        for (size_t i = 0; row->choices[i] != NULL && off < len; i++)
            off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "|" : "", row->choices[i]);
        break;
    }
    case FLAG_ACTION:
        snprintf(buf, len, "no value");
        break;
    default:
        snprintf(buf, len, "a non-empty %s", row->metavar ? row->metavar : "value");
        break;
    }
    return buf;
}

static bool
parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "on", "1"};
    static const char *const no[] = {"false", "off", "0"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Parses a whole decimal integer (optional sign); false on junk or overflow. */
static bool
parse_ll(const char *v, long long *out, char **end_out)
{
    if (*v == '\0' || isspace((unsigned char)*v))
        return false;
    errno = 0;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (errno != 0 || end == v)
        return false;
    *out = x;
    *end_out = end;
    return true;
}

static bool
set_bool(void *opts, const flag_row *row, const char *v)
{
    return parse_bool(v, (bool *)((char *)opts + row->offset));
}

static bool
set_int(void *opts, const flag_row *row, const char *v)
{
    long long x;
    char *end;
    if (!parse_ll(v, &x, &end) || *end != '\0' || x < row->min || x > row->max)
        return false;
    *(int *)((char *)opts + row->offset) = (int)x;
    return true;
}

static bool
set_size(void *opts, const flag_row *row, const char *v)
{
    long long x;
    char *end;
    if (!parse_ll(v, &x, &end) || x < 0)
        return false;
    long long mult = 1;
    if (*end != '\0') {
        switch (tolower((unsigned char)*end)) {
        case 'k':
            mult = 1LL << 10;
            break;
        case 'm':
            mult = 1LL << 20;
            break;
        case 'g':
            mult = 1LL << 30;
            break;
        default:
            return false;
        }
        if (end[1] != '\0')
            return false;
    }
    if (x > row->max / mult)
        return false;
    x *= mult;
    if (x < row->min)
        return false;
    *(size_t *)((char *)opts + row->offset) = (size_t)x;
    return true;
}

static bool
set_string(void *opts, const flag_row *row, const char *v)
{
    if (*v == '\0')
        return false;
    *(const char **)((char *)opts + row->offset) = v;
    return true;
}

static bool
set_list(void *opts, const flag_row *row, const char *v)
{
    if (*v == '\0')
        return false;
    imagen_cli_list *list = (imagen_cli_list *)((char *)opts + row->offset);
    const char **items = realloc(list->items, (list->n + 1) * sizeof(*items));
    if (items == NULL)
        return false;
    items[list->n++] = v;
    list->items = items;
    return true;
}

static bool
set_enum(void *opts, const flag_row *row, const char *v)
{
    for (int i = 0; row->choices[i] != NULL; i++) {
        if (strcasecmp(v, row->choices[i]) == 0) {
            *(int *)((char *)opts + row->offset) = i;
            return true;
        }
    }
    return false;
}

static bool
set_value(void *opts, const flag_row *row, const char *v)
{
    switch (row->type) {
    case FLAG_BOOL:
        return set_bool(opts, row, v);
    case FLAG_INT:
        return set_int(opts, row, v);
    case FLAG_SIZE:
        return set_size(opts, row, v);
    case FLAG_STRING:
        return set_string(opts, row, v);
    case FLAG_LIST:
        return set_list(opts, row, v);
    case FLAG_ENUM:
        return set_enum(opts, row, v);
    case FLAG_ACTION:
        *(bool *)((char *)opts + row->offset) = true;
        return true;
    case FLAG_SECTION:
        break;
    }
    return false;
}

/* ---------------------------------------------------------------------
 * Parsing
 * ------------------------------------------------------------------- */

void
imagen_cli_options_init(imagen_cli_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    for (size_t i = 0; i < FLAG_COUNT; i++) {
        const flag_row *row = &flag_table[i];
        if (row->def != NULL && !set_value(opts, row, row->def))
            abort(); /* a default that its own setter rejects is a table bug */
    }
    opts->counter_latencies = true;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) IMAGEN_PRINTF(3, 4);

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const flag_row *
find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < FLAG_COUNT; i++) {
        const flag_row *row = &flag_table[i];
        if (row->type == FLAG_SECTION)
            continue;
        if ((strlen(row->name) == len && memcmp(row->name, name, len) == 0) ||
            (row->alias != NULL && strlen(row->alias) == len && memcmp(row->alias, name, len) == 0))
            return row;
    }
    return NULL;
}

/* Checks one --metrics-config item and applies the settings we use. */

/* summary_quantiles=<q>:<error>[,<q>:<error>...]: 0 < q <= 1. The error is
 * parsed and checked but not used: the sketches' resolution is fixed. */
static bool
parse_quantiles(const char *v, imagen_cli_options *opts)
{
    size_t n = 0;
    const char *p = v;
    while (*p != '\0') {
        char *end;
        double q = strtod(p, &end);
        if (end == p || *end != ':' || !(q > 0.0 && q <= 1.0))
            return false;
        p = end + 1;
        double e = strtod(p, &end);
        if (end == p || !(e >= 0.0 && e < 1.0) || (*end != ',' && *end != '\0'))
            return false;
        if (n == sizeof(opts->summary_quantiles) / sizeof(opts->summary_quantiles[0]))
            return false;
        opts->summary_quantiles[n++] = q;
        if (*end == ',' && end[1] == '\0')
            return false; /* a trailing comma */
        p = *end == ',' ? end + 1 : end;
    }
    if (n == 0)
        return false;
    opts->n_summary_quantiles = n;
    return true;
}
static bool
apply_metrics_config(imagen_cli_options *opts, const char *item)
{
    const char *eq = strchr(item, '=');
    if (eq == NULL || eq == item || eq[1] == '\0')
        return false;
    size_t klen = (size_t)(eq - item);
    const char *v = eq + 1;
    if (klen == strlen("counter_latencies") && memcmp(item, "counter_latencies", klen) == 0)
        return parse_bool(v, &opts->counter_latencies);
    if (klen == strlen("histogram_latencies") && memcmp(item, "histogram_latencies", klen) == 0)
        return parse_bool(v, &opts->histogram_latencies);
    if (klen == strlen("summary_latencies") && memcmp(item, "summary_latencies", klen) == 0)
        return parse_bool(v, &opts->summary_latencies);
    if (klen == strlen("summary_quantiles") && memcmp(item, "summary_quantiles", klen) == 0)
        return parse_quantiles(v, opts);
    return false;
}

/* Checks that a --backend-config item has the form [<backend>,]<key>=<value>. */
static bool
valid_backend_config(const char *item)
{
    const char *comma = strchr(item, ',');
    const char *key = comma ? comma + 1 : item;
    const char *eq = strchr(key, '=');
    if (comma == item)
        return false;
    return eq != NULL && eq != key;
}

/* Cross-flag checks once every flag has been read. */
static imagen_cli_result
validate(imagen_cli_options *opts, char *err, size_t errlen)
{
    for (size_t i = 0; i < FLAG_COUNT; i++) {
        const flag_row *row = &flag_table[i];
        if (!(row->flags & FLAG_F_REQUIRED))
            continue;
        const imagen_cli_list *list = (const imagen_cli_list *)((const char *)opts + row->offset);
        if (IMAGEN_ALWAYS(row->type == FLAG_LIST) && list->n == 0) {
            set_err(err, errlen, "missing required flag --%s=<%s>", row->name, row->metavar);
            return IMAGEN_CLI_ERROR;
        }
    }
    for (size_t i = 0; i < opts->load_models.n; i++) {
        if (strcmp(opts->load_models.items[i], "*") == 0 && opts->load_models.n > 1) {
            set_err(err, errlen,
                    "invalid value '*' for --load-model: '*' (load every model) must be the only --load-model");
            return IMAGEN_CLI_ERROR;
        }
    }
    for (size_t i = 0; i < opts->metrics_config.n; i++) {
        if (!apply_metrics_config(opts, opts->metrics_config.items[i])) {
            set_err(err, errlen,
                    "invalid value '%s' for --metrics-config: expected counter_latencies=<bool>, "
                    "histogram_latencies=<bool>, summary_latencies=<bool> or summary_quantiles=<list>",
                    opts->metrics_config.items[i]);
            return IMAGEN_CLI_ERROR;
        }
    }
    for (size_t i = 0; i < opts->backend_configs.n; i++) {
        if (!valid_backend_config(opts->backend_configs.items[i])) {
            set_err(err, errlen, "invalid value '%s' for --backend-config: expected [<backend>,]<key>=<value>",
                    opts->backend_configs.items[i]);
            return IMAGEN_CLI_ERROR;
        }
    }
    if (opts->strict_model_config)
        opts->disable_auto_complete_config = true;
    if (opts->cpu_threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        opts->cpu_threads = cores > 0 ? (int)(cores < THREADS_MAX ? cores : THREADS_MAX) : 1;
    }
    return IMAGEN_CLI_RUN;
}

imagen_cli_result
imagen_cli_parse(imagen_cli_options *opts, int argc, char **argv, char *err, size_t errlen)
{
    char accepted[256];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            set_err(err, errlen, "unexpected argument '%s': flags have the form --name=value (see --help)", arg);
            return IMAGEN_CLI_ERROR;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const flag_row *row = find_flag(name, name_len);
        if (row == NULL) {
            set_err(err, errlen, "unknown flag '--%.*s' (see --help for the list of flags)", (int)name_len, name);
            return IMAGEN_CLI_ERROR;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (row->type == FLAG_ACTION) {
            if (value != NULL) {
                set_err(err, errlen, "flag --%s takes no value (got '%s')", row->name, value);
                return IMAGEN_CLI_ERROR;
            }
        } else if (value == NULL && row->type == FLAG_BOOL) {
            /* A bool takes the next argument only if it is not a flag. */
            value = (i + 1 < argc && argv[i + 1][0] != '-') ? argv[++i] : "true";
        } else if (value == NULL) {
            if (i + 1 >= argc) {
                set_err(err, errlen, "missing value for --%s: expected %s", row->name,
                        describe(row, accepted, sizeof(accepted)));
                return IMAGEN_CLI_ERROR;
            }
            value = argv[++i];
        }
        if (!set_value(opts, row, value ? value : "")) {
            set_err(err, errlen, "invalid value '%s' for --%s: expected %s", value, row->name,
                    describe(row, accepted, sizeof(accepted)));
            return IMAGEN_CLI_ERROR;
        }
        if (opts->help)
            return IMAGEN_CLI_HELP;
        if (opts->version)
            return IMAGEN_CLI_VERSION;
    }
    imagen_cli_result r = validate(opts, err, errlen);
    if (r != IMAGEN_CLI_RUN)
        return r;
    return opts->check_config ? IMAGEN_CLI_CHECKED : IMAGEN_CLI_RUN;
}

void
imagen_cli_options_free(imagen_cli_options *opts)
{
    if (opts == NULL)
        return;
    for (size_t i = 0; i < FLAG_COUNT; i++) {
        if (flag_table[i].type != FLAG_LIST)
            continue;
        imagen_cli_list *list = (imagen_cli_list *)((char *)opts + flag_table[i].offset);
        free(list->items);
        list->items = NULL;
        list->n = 0;
    }
}

/* ---------------------------------------------------------------------
 * --help
 * ------------------------------------------------------------------- */

#define HELP_INDENT 8
#define HELP_WIDTH 100

/* Prints `text` word-wrapped at HELP_WIDTH, indented by HELP_INDENT. */
static void
print_wrapped(FILE *out, const char *text)
{
    const char *p = text;
    while (*p != '\0') {
        size_t avail = HELP_WIDTH - HELP_INDENT;
        size_t len = strlen(p);
        size_t cut = len;
        if (len > avail) {
            cut = avail;
            while (cut > 0 && p[cut] != ' ')
                cut--;
            if (cut == 0)
                cut = avail;
        }
        fprintf(out, "%*s%.*s\n", HELP_INDENT, "", (int)cut, p);
        p += cut;
        while (*p == ' ')
            p++;
    }
}

/* Prints "--name=<metavar>" for one name of a row. */
static void
print_flag_name(FILE *out, const flag_row *row, const char *name)
{
    char accepted[256];
    switch (row->type) {
    case FLAG_BOOL:
        fprintf(out, "--%s[=<bool>]", name);
        break;
    case FLAG_ENUM:
        fprintf(out, "--%s=%s", name, describe(row, accepted, sizeof(accepted)));
        break;
    case FLAG_ACTION:
        fprintf(out, "--%s", name);
        break;
    default:
        fprintf(out, "--%s=<%s>", name, row->metavar);
        break;
    }
}

void
imagen_cli_print_help(FILE *out, const char *prog)
{
    fprintf(out,
            "Usage: %s --model-repository=<path> [flags]\n"
            "\n"
            "imagen-server %s serves the models of Triton-style model repositories over the KServe v2\n"
            "HTTP/REST protocol (Triton %s compatible) and exports Prometheus metrics.\n"
            "Flags take --name=value or --name value; a bool flag alone means true and accepts\n"
            "true|false|on|off|1|0. Exit status: 0 after a clean shutdown, 1 on a start-up or drain failure,\n"
            "2 on a bad flag.\n",
            prog, IMAGEN_VERSION_STRING, IMAGEN_TRITON_COMPAT_VERSION);
    for (size_t i = 0; i < FLAG_COUNT; i++) {
        const flag_row *row = &flag_table[i];
        if (row->type == FLAG_SECTION) {
            fprintf(out, "\n%s:\n", row->name);
            continue;
        }
        fprintf(out, "  ");
        print_flag_name(out, row, row->name);
        if (row->alias != NULL) {
            fprintf(out, ", ");
            print_flag_name(out, row, row->alias);
        }
        if (row->def != NULL)
            fprintf(out, "  (default: %s)", row->def);
        fputc('\n', out);
        print_wrapped(out, row->help);
    }
}
