/*
 * The job commands of `imagen`: submit, status, jobs, requeue, queues.
 *
 * They talk to the queue, never to the server: a job is published to the
 * queue of its operation and a worker does the rest. Every command takes
 * --queue URL, defaulting to $IMAGEN_QUEUE and then to a sqlite file in the
 * user's data directory, which is also the worker's default, so one machine
 * needs no flag at all.
 *
 * Exit codes follow the rest of the command (imagen_cli.h): 1 when a job
 * failed or the queue refused something, 2 for usage errors (a bad
 * parameter included), 3 when the queue cannot be reached, 4 when an input
 * file cannot be read.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/imagen_cli.h"
#include "common/time.h"
#include "queue/queue.h"
#include "worker/job_spec.h"
#include "worker/operation.h"
#include "worker/storage.h"

/* Prints an error as the commands do and maps it to an exit code. */
static int
report(const char *cmd, imagen_error *err)
{
    imagen_error_code code = imagen_error_code_of(err);
    fprintf(stderr, "imagen %s: %s\n", cmd, imagen_error_message(err));
    imagen_error_free(err);
    if (code == IMAGEN_ERR_UNAVAILABLE)
        return IMAGEN_EXIT_CONNECT;
    return IMAGEN_EXIT_SERVER;
}

static int
open_queue(const imagen_cmd_args *a, imagen_queue **q)
{
    const char *flag = imagen_cmd_get(a, "queue");
    char *url = flag != NULL ? strdup(flag) : imagen_queue_default_url();
    if (url == NULL) {
        fprintf(stderr, "imagen %s: out of memory\n", a->cmd->name);
        return IMAGEN_EXIT_SERVER;
    }
    imagen_error *err = imagen_queue_open(url, NULL, q);
    free(url);
    if (err != NULL) {
        imagen_error_code code = imagen_error_code_of(err);
        int rc = report(a->cmd->name, err);
        return code == IMAGEN_ERR_INVALID_ARG ? IMAGEN_EXIT_USAGE : rc;
    }
    return IMAGEN_EXIT_OK;
}

static bool
has_image_extension(const char *name)
{
    static const char *const exts[] = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".heic", ".avif"};
    const char *dot = strrchr(name, '.');
    if (dot == NULL)
        return false;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (strcasecmp(dot, exts[i]) == 0)
            return true;
    return false;
}

/* ---- submit ------------------------------------------------------------------- */

/* Jobs published per queue command, and the spec bytes after which a batch
 * goes early (inline inputs make specs large). */
#define SUBMIT_BATCH_JOBS 256
#define SUBMIT_BATCH_BYTES (8u << 20)

/* The inputs named on the command line, directories expanded to the image
 * files directly inside them (sorted, so jobs go in a predictable order). */
typedef struct input_list {
    char **items; /* absolute paths or URLs, owned */
    size_t n, cap;
} input_list;

static bool
input_list_add(input_list *l, char *item)
{
    if (item == NULL)
        return false;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **items = realloc(l->items, cap * sizeof *items);
        if (items == NULL) {
            free(item);
            return false;
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = item;
    return true;
}

static void
input_list_free(input_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
}

static int
compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds one argument: a URL as is, a file made absolute, a directory's
 * image files. Returns an exit code (0 = added). */
static int
expand_input(input_list *l, const char *arg)
{
    if (imagen_job_location_is_url(arg))
        return input_list_add(l, strdup(arg)) ? 0 : IMAGEN_EXIT_SERVER;
    char abs[PATH_MAX];
    if (realpath(arg, abs) == NULL) {
        fprintf(stderr, "imagen submit: cannot read input '%s': %s\n", arg, strerror(errno));
        return IMAGEN_EXIT_FILE;
    }
    struct stat st;
    if (stat(abs, &st) != 0) {
        fprintf(stderr, "imagen submit: cannot read input '%s': %s\n", arg, strerror(errno));
        return IMAGEN_EXIT_FILE;
    }
    if (!S_ISDIR(st.st_mode))
        return input_list_add(l, strdup(abs)) ? 0 : IMAGEN_EXIT_SERVER;
    DIR *dir = opendir(abs);
    if (dir == NULL) {
        fprintf(stderr, "imagen submit: cannot list directory '%s': %s\n", arg, strerror(errno));
        return IMAGEN_EXIT_FILE;
    }
    size_t first = l->n;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.' || !has_image_extension(e->d_name))
            continue;
        char *path = NULL;
        if (asprintf(&path, "%s/%s", abs, e->d_name) < 0 || !input_list_add(l, path)) {
            closedir(dir);
            return IMAGEN_EXIT_SERVER;
        }
    }
    closedir(dir);
    if (l->n == first) {
        fprintf(stderr, "imagen submit: directory '%s' has no image files (.jpg .png .webp ...)\n", arg);
        return IMAGEN_EXIT_FILE;
    }
    qsort(l->items + first, l->n - first, sizeof(char *), compare_strings);
    return 0;
}

/* The progress line of --wait on a terminal: a bar, counts and the rate. */
static void
draw_progress(size_t finished, size_t failed, size_t total, uint64_t start_ns)
{
    const int width = 30;
    int filled = total ? (int)(finished * (size_t)width / total) : width;
    double secs = (double)(imagen_time_now_ns() - start_ns) / 1e9;
    fprintf(stderr, "\r[%.*s%*s] %zu/%zu done", filled, "##############################", width - filled, "", finished,
            total);
    if (failed)
        fprintf(stderr, ", %zu failed", failed);
    if (secs > 0.5)
        fprintf(stderr, "  %.1f jobs/s", (double)finished / secs);
    fflush(stderr);
}

static bool
state_is_final(imagen_job_state s)
{
    return s == IMAGEN_JOB_DONE || s == IMAGEN_JOB_FAILED || s == IMAGEN_JOB_DEAD;
}

/* Follows the jobs until each is done, failed or dead (or the timeout),
 * then prints a line per job. Returns the exit code. */
static int
wait_for_jobs(imagen_queue *q, char (*ids)[IMAGEN_JOB_ID_SIZE], size_t n, int64_t timeout_ms)
{
    imagen_job **jobs = calloc(n, sizeof *jobs);
    if (jobs == NULL)
        return IMAGEN_EXIT_SERVER;
    bool progress = n > 1 && isatty(STDERR_FILENO);
    uint64_t start = imagen_time_now_ns();
    size_t finished = 0, failed = 0;
    int rc = IMAGEN_EXIT_OK;
    useconds_t pause_us = 20000;
    while (finished < n) {
        for (size_t i = 0; i < n; i++) {
            if (jobs[i] != NULL && state_is_final(jobs[i]->state))
                continue;
            imagen_job *job = NULL;
            imagen_error *err = imagen_queue_get(q, ids[i], &job);
            if (err != NULL) {
                if (imagen_error_code_of(err) == IMAGEN_ERR_UNAVAILABLE) { /* e.g. redis restarting: keep waiting */
                    imagen_error_free(err);
                    break;
                }
                rc = report("submit", err);
                goto done;
            }
            imagen_job_free(jobs[i]);
            jobs[i] = job;
            if (state_is_final(job->state)) {
                finished++;
                failed += job->state != IMAGEN_JOB_DONE;
            }
        }
        if (progress)
            draw_progress(finished, failed, n, start);
        if (finished == n)
            break;
        if (timeout_ms > 0 && (int64_t)((imagen_time_now_ns() - start) / 1000000) >= timeout_ms) {
            if (progress)
                fputc('\n', stderr);
            fprintf(stderr, "imagen submit: %zu of %zu jobs not finished after %.1f s (they stay queued)\n",
                    n - finished, n, (double)timeout_ms / 1000.0);
            rc = IMAGEN_EXIT_SERVER;
            goto done;
        }
        usleep(pause_us);
        if (pause_us < 200000)
            pause_us += pause_us / 2;
    }
    if (progress)
        fputc('\n', stderr);
    for (size_t i = 0; i < n; i++) {
        const imagen_job *j = jobs[i];
        double ms = j->finished_ms > j->created_ms ? (double)(j->finished_ms - j->created_ms) : 0.0;
        printf("%s %-17s %-6s %8.0f ms  %s\n", j->id, j->op, imagen_job_state_name(j->state), ms,
               j->state == IMAGEN_JOB_DONE ? (j->output ? j->output : "") : (j->error ? j->error : ""));
    }
    if (failed)
        rc = IMAGEN_EXIT_SERVER;
done:
    for (size_t i = 0; i < n; i++)
        imagen_job_free(jobs[i]);
    free(jobs);
    return rc;
}

int
imagen_cmd_submit(const imagen_cmd_args *a)
{
    const char *op_name = imagen_cmd_get(a, "op");
    const imagen_operation *op = op_name != NULL ? imagen_operation_find(op_name) : NULL;
    if (op == NULL) {
        fprintf(stderr, "imagen submit: %s%s%s; operations:", op_name ? "unknown operation '" : "--op is required",
                op_name ? op_name : "", op_name ? "'" : "");
        for (size_t i = 0; i < imagen_operation_count; i++)
            fprintf(stderr, " %s", imagen_operations[i].name);
        fputc('\n', stderr);
        return IMAGEN_EXIT_USAGE;
    }

    /* Parameters first: a typo is reported before anything is published. */
    imagen_job_spec spec;
    imagen_job_spec_init(&spec, op);
    for (size_t i = 0;; i++) {
        const char *kv = imagen_cmd_get_nth(a, "param", i);
        if (kv == NULL)
            break;
        const char *eq = strchr(kv, '=');
        if (eq == NULL) {
            fprintf(stderr, "imagen submit: --param wants NAME=VALUE, got '%s'\n", kv);
            imagen_job_spec_clear(&spec);
            return IMAGEN_EXIT_USAGE;
        }
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(eq - kv), kv);
        imagen_error *err = imagen_job_spec_set(&spec, name, eq + 1);
        if (err != NULL) {
            report("submit", err);
            imagen_job_spec_clear(&spec);
            return IMAGEN_EXIT_USAGE;
        }
    }

    const char *out = imagen_cmd_get(a, "out");
    char out_abs[PATH_MAX];
    if (out == NULL)
        out = ".";
    if (!imagen_job_location_is_url(out)) {
        /* The worker may run elsewhere in the file system's view (another
         * working directory), so directories travel as absolute paths. */
        imagen_error *err = imagen_storage_make_dirs(out);
        if (err != NULL) {
            report("submit", err);
            imagen_job_spec_clear(&spec);
            return IMAGEN_EXIT_FILE;
        }
        if (realpath(out, out_abs) == NULL) {
            fprintf(stderr, "imagen submit: output directory '%s': %s\n", out, strerror(errno));
            imagen_job_spec_clear(&spec);
            return IMAGEN_EXIT_FILE;
        }
        out = out_abs;
    }

    input_list inputs = {0};
    int rc = IMAGEN_EXIT_OK;
    for (size_t i = 0; i < a->n_positional && rc == IMAGEN_EXIT_OK; i++)
        rc = expand_input(&inputs, a->positional[i]);
    if (rc == IMAGEN_EXIT_OK && imagen_job_location_is_url(out) && inputs.n > 1) {
        fprintf(stderr,
                "imagen submit: an output URL takes one input (got %zu): each job would PUT to the same "
                "object\n",
                inputs.n);
        rc = IMAGEN_EXIT_USAGE;
    }
    bool inline_input = imagen_cmd_get(a, "inline") != NULL;
    imagen_queue *q = NULL;
    if (rc == IMAGEN_EXIT_OK)
        rc = open_queue(a, &q);
    char(*ids)[IMAGEN_JOB_ID_SIZE] = rc == IMAGEN_EXIT_OK ? calloc(inputs.n, IMAGEN_JOB_ID_SIZE) : NULL;
    if (rc == IMAGEN_EXIT_OK && ids == NULL)
        rc = IMAGEN_EXIT_SERVER;

    /* Jobs go in batches (one transaction or script call each), so a
     * directory of thousands of images is queued in moments; a batch stays
     * small enough to be one reasonable queue command. */
    size_t published = 0;
    char **batch = rc == IMAGEN_EXIT_OK ? calloc(SUBMIT_BATCH_JOBS, sizeof *batch) : NULL;
    if (rc == IMAGEN_EXIT_OK && batch == NULL)
        rc = IMAGEN_EXIT_SERVER;
    size_t n_batch = 0, batch_bytes = 0;
    for (size_t i = 0; i <= inputs.n && rc == IMAGEN_EXIT_OK; i++) {
        if (i < inputs.n) {
            imagen_job_spec one = spec; /* parameters shared; places per job */
            one.input = NULL;
            one.input_data = NULL;
            one.input_name = NULL;
            one.output = (char *)out;
            if (inline_input && !imagen_job_location_is_url(inputs.items[i])) {
                imagen_error *err =
                    imagen_storage_read_file(inputs.items[i], IMAGEN_JOB_INLINE_MAX, &one.input_data, &one.input_size);
                if (err != NULL) {
                    report("submit", err);
                    rc = IMAGEN_EXIT_FILE;
                }
                one.input_name = inputs.items[i];
            } else {
                one.input = inputs.items[i];
            }
            imagen_error *err = NULL;
            if (rc == IMAGEN_EXIT_OK && (err = imagen_job_spec_to_json(&one, &batch[n_batch])) == NULL)
                batch_bytes += strlen(batch[n_batch++]);
            free(one.input_data);
            if (err != NULL)
                rc = report("submit", err);
        }
        bool last = i + 1 >= inputs.n;
        if (rc == IMAGEN_EXIT_OK && n_batch > 0 &&
            (last || n_batch == SUBMIT_BATCH_JOBS || batch_bytes >= SUBMIT_BATCH_BYTES)) {
            imagen_error *err =
                imagen_queue_publish_batch(q, op->name, (const char *const *)batch, n_batch, ids + published);
            if (err != NULL) {
                rc = report("submit", err);
            } else if (imagen_cmd_get(a, "wait") == NULL) {
                for (size_t k = 0; k < n_batch; k++)
                    printf("%s %s %s\n", ids[published + k], op->name, inputs.items[published + k]);
            }
            if (err == NULL)
                published += n_batch;
            for (size_t k = 0; k < n_batch; k++)
                free(batch[k]);
            n_batch = 0;
            batch_bytes = 0;
        }
    }
    for (size_t k = 0; k < n_batch; k++)
        free(batch[k]);
    free(batch);
    if (rc == IMAGEN_EXIT_OK && imagen_cmd_get(a, "wait") != NULL)
        rc = wait_for_jobs(q, ids, published, a->timeout_ms);
    else if (rc != IMAGEN_EXIT_OK && published > 0)
        fprintf(stderr, "imagen submit: %zu of %zu jobs were published before the error\n", published, inputs.n);

    free(ids);
    imagen_queue_close(q);
    input_list_free(&inputs);
    imagen_job_spec_clear(&spec);
    return rc;
}

/* ---- status, jobs ------------------------------------------------------------ */

static void
format_time(int64_t ms, char *buf, size_t size)
{
    if (ms <= 0) {
        snprintf(buf, size, "-");
        return;
    }
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03dZ", (int)(ms % 1000));
}

static json_t *
job_to_json(const imagen_job *j)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "op", json_string(j->op));
    json_object_set_new(o, "state", json_string(imagen_job_state_name(j->state)));
    json_object_set_new(o, "attempts", json_integer(j->attempts));
    json_object_set_new(o, "created_ms", json_integer(j->created_ms));
    json_object_set_new(o, "started_ms", json_integer(j->started_ms));
    json_object_set_new(o, "finished_ms", json_integer(j->finished_ms));
    json_object_set_new(o, "updated_ms", json_integer(j->updated_ms));
    if (j->consumer)
        json_object_set_new(o, "worker", json_string(j->consumer));
    if (j->error)
        json_object_set_new(o, "error", json_string(j->error));
    if (j->output)
        json_object_set_new(o, "output", json_string(j->output));
    json_t *spec = json_loads(j->spec, 0, NULL);
    if (spec != NULL) {
        /* Inline bytes would drown the listing; say how much there is. */
        json_t *data = json_object_get(spec, "input_data");
        if (json_is_string(data)) {
            json_object_set_new(spec, "input_data_bytes", json_integer((json_int_t)json_string_length(data) / 4 * 3));
            json_object_del(spec, "input_data");
        }
        json_object_set_new(o, "spec", spec);
    }
    json_t *timings = j->timings ? json_loads(j->timings, 0, NULL) : NULL;
    if (timings != NULL)
        json_object_set_new(o, "timings", timings);
    return o;
}

static void
print_json(json_t *v)
{
    char *text = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text != NULL)
        puts(text);
    free(text);
    json_decref(v);
}

int
imagen_cmd_status(const imagen_cmd_args *a)
{
    imagen_queue *q;
    int rc = open_queue(a, &q);
    if (rc != IMAGEN_EXIT_OK)
        return rc;
    imagen_job *j = NULL;
    imagen_error *err = imagen_queue_get(q, a->positional[0], &j);
    imagen_queue_close(q);
    if (err != NULL)
        return report("status", err);
    if (imagen_cmd_get(a, "json") != NULL) {
        print_json(job_to_json(j));
    } else {
        char created[40], started[40], finished[40];
        format_time(j->created_ms, created, sizeof created);
        format_time(j->started_ms, started, sizeof started);
        format_time(j->finished_ms, finished, sizeof finished);
        printf("id:        %s\nop:        %s\nstate:     %s\nattempts:  %d\n", j->id, j->op,
               imagen_job_state_name(j->state), j->attempts);
        printf("created:   %s\nstarted:   %s\nfinished:  %s\n", created, started, finished);
        if (j->consumer)
            printf("worker:    %s\n", j->consumer);
        if (j->output)
            printf("output:    %s\n", j->output);
        if (j->error)
            printf("error:     %s\n", j->error);
        if (j->timings)
            printf("timings:   %s\n", j->timings);
    }
    rc = j->state == IMAGEN_JOB_FAILED || j->state == IMAGEN_JOB_DEAD ? IMAGEN_EXIT_SERVER : IMAGEN_EXIT_OK;
    imagen_job_free(j);
    return rc;
}

int
imagen_cmd_jobs(const imagen_cmd_args *a)
{
    int state = -1;
    const char *s = imagen_cmd_get(a, "state");
    if (s != NULL) {
        imagen_job_state st;
        if (!imagen_job_state_parse(s, &st)) {
            fprintf(stderr, "imagen jobs: unknown state '%s' (queued, running, done, failed, dead)\n", s);
            return IMAGEN_EXIT_USAGE;
        }
        state = (int)st;
    }
    size_t limit = 100;
    const char *l = imagen_cmd_get(a, "limit");
    if (l != NULL) {
        char *end;
        long v = strtol(l, &end, 10);
        if (*end != '\0' || v < 1 || v > 1000000) {
            fprintf(stderr, "imagen jobs: --limit wants a number from 1 to 1000000, got '%s'\n", l);
            return IMAGEN_EXIT_USAGE;
        }
        limit = (size_t)v;
    }
    imagen_queue *q;
    int rc = open_queue(a, &q);
    if (rc != IMAGEN_EXIT_OK)
        return rc;
    imagen_job **jobs = NULL;
    size_t n = 0;
    imagen_error *err = imagen_queue_list(q, imagen_cmd_get(a, "op"), state, limit, &jobs, &n);
    imagen_queue_close(q);
    if (err != NULL)
        return report("jobs", err);
    if (imagen_cmd_get(a, "json") != NULL) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, job_to_json(jobs[i]));
        print_json(arr);
    } else {
        printf("%-24s  %-17s  %-7s  %8s  %-24s  %s\n", "ID", "OP", "STATE", "ATTEMPTS", "CREATED", "OUTPUT / ERROR");
        for (size_t i = 0; i < n; i++) {
            const imagen_job *j = jobs[i];
            char created[40];
            format_time(j->created_ms, created, sizeof created);
            printf("%-24s  %-17s  %-7s  %8d  %-24s  %s\n", j->id, j->op, imagen_job_state_name(j->state), j->attempts,
                   created,
                   j->output  ? j->output
                   : j->error ? j->error
                              : "");
        }
    }
    imagen_job_list_free(jobs, n);
    return IMAGEN_EXIT_OK;
}

/* ---- requeue, queues ----------------------------------------------------------- */

int
imagen_cmd_requeue(const imagen_cmd_args *a)
{
    bool dead = imagen_cmd_get(a, "dead") != NULL;
    if (dead == (a->n_positional == 1)) {
        fprintf(stderr, "imagen requeue: give either a job ID or --dead\n");
        return IMAGEN_EXIT_USAGE;
    }
    imagen_queue *q;
    int rc = open_queue(a, &q);
    if (rc != IMAGEN_EXIT_OK)
        return rc;
    imagen_error *err;
    if (dead) {
        size_t n = 0;
        err = imagen_queue_requeue_dead(q, imagen_cmd_get(a, "op"), &n);
        if (err == NULL)
            printf("requeued %zu dead job%s\n", n, n == 1 ? "" : "s");
    } else {
        err = imagen_queue_requeue(q, a->positional[0]);
        if (err == NULL)
            printf("requeued %s\n", a->positional[0]);
    }
    imagen_queue_close(q);
    return err != NULL ? report("requeue", err) : IMAGEN_EXIT_OK;
}

int
imagen_cmd_queues(const imagen_cmd_args *a)
{
    imagen_queue *q;
    int rc = open_queue(a, &q);
    if (rc != IMAGEN_EXIT_OK)
        return rc;
    imagen_queue_counts *c = NULL;
    size_t n = 0;
    imagen_error *err = imagen_queue_counts_get(q, &c, &n);
    const char *driver = imagen_queue_driver_name(q);
    imagen_queue_close(q);
    if (err != NULL)
        return report("queues", err);
    if (imagen_cmd_get(a, "json") != NULL) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "op", c[i].op, "queued",
                                                 (json_int_t)c[i].queued, "running", (json_int_t)c[i].running, "done",
                                                 (json_int_t)c[i].done, "failed", (json_int_t)c[i].failed, "dead",
                                                 (json_int_t)c[i].dead));
        print_json(arr);
    } else {
        printf("%-17s  %8s  %9s  %8s  %8s  %6s   (%s)\n", "OPERATION", "QUEUED", "IN FLIGHT", "DONE", "FAILED", "DEAD",
               driver);
        for (size_t i = 0; i < n; i++)
            printf("%-17s  %8llu  %9llu  %8llu  %8llu  %6llu\n", c[i].op, (unsigned long long)c[i].queued,
                   (unsigned long long)c[i].running, (unsigned long long)c[i].done, (unsigned long long)c[i].failed,
                   (unsigned long long)c[i].dead);
    }
    free(c);
    return IMAGEN_EXIT_OK;
}
