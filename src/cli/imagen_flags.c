/*
 * Command-line parsing of `imagen`: global flags, one subcommand, its flags
 * and positional arguments, all from the table in imagen_main.c; the help
 * texts are printed from the same table so they cannot drift.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/imagen_cli.h"
#include "imagen/client.h"

static void
print_cmd_help(FILE *f, const imagen_cmd *cmd)
{
    fprintf(f, "Usage: imagen [--url URL] [--timeout SECONDS] %s%s%s [flags]\n\n%s\n", cmd->name,
            cmd->positional[0] ? " " : "", cmd->positional, cmd->summary);
    if (cmd->details != NULL)
        fprintf(f, "\n%s\n", cmd->details);
    fprintf(f, "\nFlags:\n");
    for (size_t i = 0; i < IMAGEN_CMD_MAX_FLAGS && cmd->flags[i].name != NULL; i++) {
        const imagen_cmd_flag *fl = &cmd->flags[i];
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", fl->name, fl->value_name ? " " : "",
                 fl->value_name ? fl->value_name : "");
        fprintf(f, "  %-26s %s%s\n", left, fl->help, fl->repeatable ? " (repeatable)" : "");
    }
    fprintf(f, "  %-26s %s\n", "--help", "Show this help.");
}

static void
print_main_help(FILE *f, const imagen_cmd *cmds, size_t n)
{
    fprintf(f, "Usage: imagen [--url URL] [--timeout SECONDS] COMMAND [ARGS] [--help]\n\n"
               "Talks to an imagen (or Triton) server over HTTP or gRPC, and submits and follows\n"
               "image jobs on the queue the workers read (--queue URL, default $IMAGEN_QUEUE).\n\nCommands:\n");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\nGlobal flags (anywhere on the line):\n"
               "  --url URL           http://HOST:PORT or grpc://HOST:PORT (default $IMAGEN_URL, "
               "else " IMAGEN_CLIENT_DEFAULT_URL ")\n"
               "  --timeout SECONDS   per-request timeout (default: none)\n"
               "  --help              this help; `imagen COMMAND --help` for a command\n"
               "\nExit codes:\n"
               "  0  success\n"
               "  1  the server returned an error (or is not live/ready)\n"
               "  2  usage error\n"
               "  3  cannot connect to the server\n"
               "  4  a local file could not be read or written\n");
}

/* Splits "--name=value"; returns the name length. */
static size_t
flag_name_len(const char *arg)
{
    const char *eq = strchr(arg, '=');
    return eq ? (size_t)(eq - arg) : strlen(arg);
}

int
imagen_cmd_parse(const imagen_cmd *cmds, size_t n_cmds, int argc, char **argv, imagen_cmd_args *a)
{
    memset(a, 0, sizeof(*a));
    a->url = getenv("IMAGEN_URL");
    if (a->url == NULL || a->url[0] == '\0')
        a->url = IMAGEN_CLIENT_DEFAULT_URL;
    bool help = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || strcmp(arg, "--") == 0) {
            if (a->cmd == NULL) {
                for (size_t c = 0; c < n_cmds; c++)
                    if (strcmp(cmds[c].name, arg) == 0)
                        a->cmd = &cmds[c];
                if (a->cmd == NULL) {
                    fprintf(stderr, "imagen: unknown command '%s' (see imagen --help)\n", arg);
                    return IMAGEN_EXIT_USAGE;
                }
            } else {
                if (a->positional == NULL && (a->positional = calloc((size_t)argc, sizeof(char *))) == NULL) {
                    fprintf(stderr, "imagen: out of memory\n");
                    return IMAGEN_EXIT_USAGE;
                }
                a->positional[a->n_positional++] = arg;
            }
            continue;
        }
        const char *name = arg + 2;
        size_t nlen = flag_name_len(name);
        const char *inline_value = name[nlen] == '=' ? name + nlen + 1 : NULL;
        if (nlen == 4 && strncmp(name, "help", 4) == 0) {
            help = true;
            continue;
        }
        bool is_url = nlen == 3 && strncmp(name, "url", 3) == 0;
        bool is_timeout = nlen == 7 && strncmp(name, "timeout", 7) == 0;
        const imagen_cmd_flag *fl = NULL;
        size_t fi = 0;
        if (!is_url && !is_timeout && a->cmd != NULL)
            for (fi = 0; fi < IMAGEN_CMD_MAX_FLAGS && a->cmd->flags[fi].name != NULL; fi++)
                if (strlen(a->cmd->flags[fi].name) == nlen && strncmp(a->cmd->flags[fi].name, name, nlen) == 0) {
                    fl = &a->cmd->flags[fi];
                    break;
                }
        if (!is_url && !is_timeout && fl == NULL) {
            fprintf(stderr, "imagen%s%s: unknown flag '--%.*s' (see --help)\n", a->cmd ? " " : "",
                    a->cmd ? a->cmd->name : "", (int)nlen, name);
            return IMAGEN_EXIT_USAGE;
        }
        const char *value = inline_value;
        if ((is_url || is_timeout || fl->value_name != NULL) && value == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "imagen: flag '--%.*s' needs a value\n", (int)nlen, name);
                return IMAGEN_EXIT_USAGE;
            }
            value = argv[++i];
        }
        if (is_url) {
            a->url = value;
        } else if (is_timeout) {
            char *end;
            double secs = strtod(value, &end);
            if (end == value || *end != '\0' || secs < 0 || secs > 1e9) {
                fprintf(stderr, "imagen: --timeout wants seconds >= 0, got '%s'\n", value);
                return IMAGEN_EXIT_USAGE;
            }
            a->timeout_ms = (int64_t)(secs * 1000.0 + 0.5);
        } else {
            if (fl->value_name == NULL && value != NULL) {
                fprintf(stderr, "imagen %s: --%s takes no value\n", a->cmd->name, fl->name);
                return IMAGEN_EXIT_USAGE;
            }
            if (a->n_values == IMAGEN_CMD_MAX_VALUES) {
                fprintf(stderr, "imagen %s: too many flags\n", a->cmd->name);
                return IMAGEN_EXIT_USAGE;
            }
            a->values[a->n_values].flag = fi;
            a->values[a->n_values++].value = value ? value : "";
        }
    }
    if (help) {
        if (a->cmd != NULL)
            print_cmd_help(stdout, a->cmd);
        else
            print_main_help(stdout, cmds, n_cmds);
        return IMAGEN_EXIT_OK;
    }
    if (a->cmd == NULL) {
        print_main_help(stderr, cmds, n_cmds);
        return IMAGEN_EXIT_USAGE;
    }
    if (a->n_positional < a->cmd->min_positional || a->n_positional > a->cmd->max_positional) {
        fprintf(stderr, "imagen %s: expected %s (see imagen %s --help)\n", a->cmd->name,
                a->cmd->positional[0] ? a->cmd->positional : "no arguments", a->cmd->name);
        return IMAGEN_EXIT_USAGE;
    }
    for (size_t i = 0; i < IMAGEN_CMD_MAX_FLAGS && a->cmd->flags[i].name != NULL; i++) {
        if (a->cmd->flags[i].repeatable)
            continue;
        size_t seen = 0;
        for (size_t v = 0; v < a->n_values; v++)
            seen += a->values[v].flag == i;
        if (seen > 1) {
            fprintf(stderr, "imagen %s: --%s given more than once\n", a->cmd->name, a->cmd->flags[i].name);
            return IMAGEN_EXIT_USAGE;
        }
    }
    return -1;
}

void
imagen_cmd_args_free(imagen_cmd_args *a)
{
    free(a->positional);
    a->positional = NULL;
    a->n_positional = 0;
}

const char *
imagen_cmd_get_nth(const imagen_cmd_args *a, const char *flag, size_t n)
{
    for (size_t v = 0; v < a->n_values; v++)
        if (strcmp(a->cmd->flags[a->values[v].flag].name, flag) == 0 && n-- == 0)
            return a->values[v].value;
    return NULL;
}

const char *
imagen_cmd_get(const imagen_cmd_args *a, const char *flag)
{
    return imagen_cmd_get_nth(a, flag, 0);
}
