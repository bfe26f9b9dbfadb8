/*
 * `imagen`: the command line for people (and scripts) to call an imagen or
 * Triton server over HTTP or gRPC through the client library. Subcommands
 * and their flags are rows of `commands` below; exit codes are the
 * IMAGEN_EXIT_* values of imagen_cli.h.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/imagen_cli.h"
#include "imagen/client.h"

/* Prints an error and returns its exit code; consumes err. */
static int
fail(imagen_error *err)
{
    int code = imagen_client_error_is_connect(err) ? IMAGEN_EXIT_CONNECT : IMAGEN_EXIT_SERVER;
    fprintf(stderr, "imagen: error: %s: %s\n", imagen_error_code_name(imagen_error_code_of(err)),
            imagen_error_message(err));
    imagen_error_free(err);
    return code;
}

static int
fail_file(imagen_error *err)
{
    fprintf(stderr, "imagen: error: %s\n", imagen_error_message(err));
    imagen_error_free(err);
    return IMAGEN_EXIT_FILE;
}

static imagen_client *
connect_client(const imagen_cmd_args *a, int *rc)
{
    imagen_client *c = NULL;
    imagen_error *err = imagen_client_create(a->url, &c);
    if (err != NULL) {
        fprintf(stderr, "imagen: --url: %s\n", imagen_error_message(err));
        imagen_error_free(err);
        *rc = IMAGEN_EXIT_USAGE;
        return NULL;
    }
    imagen_client_set_timeout_ms(c, a->timeout_ms);
    return c;
}

/* Prints a JSON document indented (or as given when it does not parse). */
static void
print_json(const char *text)
{
    json_t *doc = json_loads(text, JSON_DECODE_ANY, NULL);
    char *pretty = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_ENCODE_ANY) : NULL;
    printf("%s\n", pretty ? pretty : text);
    free(pretty);
    json_decref(doc);
}

/* ---- health, models, metadata, config, stats, load, unload ------------------ */

static int
cmd_health(const imagen_cmd_args *a)
{
    int rc = 0;
    imagen_client *c = connect_client(a, &rc);
    if (c == NULL)
        return rc;
    bool live = false, ready = false;
    imagen_error *err = imagen_client_server_live(c, &live);
    if (err == NULL)
        err = imagen_client_server_ready(c, &ready);
    if (err != NULL) {
        imagen_client_destroy(c);
        return fail(err);
    }
    printf("live: %s\nready: %s\n", live ? "true" : "false", ready ? "true" : "false");
    imagen_client_destroy(c);
    return live && ready ? IMAGEN_EXIT_OK : IMAGEN_EXIT_SERVER;
}

static int
cmd_models(const imagen_cmd_args *a)
{
    int rc = 0;
    imagen_client *c = connect_client(a, &rc);
    if (c == NULL)
        return rc;
    char *json = NULL;
    imagen_error *err = imagen_client_repository_index(c, imagen_cmd_get(a, "ready") != NULL, &json);
    imagen_client_destroy(c);
    if (err != NULL)
        return fail(err);
    if (imagen_cmd_get(a, "json") != NULL) {
        print_json(json);
    } else {
        json_t *arr = json_loads(json, JSON_DECODE_ANY, NULL);
        printf("%-32s %-8s %-12s %s\n", "MODEL", "VERSION", "STATE", "REASON");
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e)
        {
            const char *v = json_string_value(json_object_get(e, "version"));
            const char *s = json_string_value(json_object_get(e, "state"));
            const char *r = json_string_value(json_object_get(e, "reason"));
            printf("%-32s %-8s %-12s %s\n", json_string_value(json_object_get(e, "name")), v ? v : "-", s ? s : "-",
                   r ? r : "");
        }
        json_decref(arr);
    }
    free(json);
    return IMAGEN_EXIT_OK;
}

typedef imagen_error *(*doc_fn)(imagen_client *, const char *, const char *, char **);

static int
print_doc(const imagen_cmd_args *a, doc_fn fn)
{
    int rc = 0;
    imagen_client *c = connect_client(a, &rc);
    if (c == NULL)
        return rc;
    char *json = NULL;
    imagen_error *err = fn(c, a->n_positional ? a->positional[0] : NULL, imagen_cmd_get(a, "version"), &json);
    imagen_client_destroy(c);
    if (err != NULL)
        return fail(err);
    print_json(json);
    free(json);
    return IMAGEN_EXIT_OK;
}

static int
cmd_metadata(const imagen_cmd_args *a)
{
    return print_doc(a, imagen_client_model_metadata);
}

static int
cmd_config(const imagen_cmd_args *a)
{
    return print_doc(a, imagen_client_model_config);
}

static int
cmd_stats(const imagen_cmd_args *a)
{
    return print_doc(a, imagen_client_model_statistics);
}

static int
repository(const imagen_cmd_args *a, bool load)
{
    int rc = 0;
    imagen_client *c = connect_client(a, &rc);
    if (c == NULL)
        return rc;
    const char *model = a->positional[0];
    imagen_error *err = load ? imagen_client_load_model(c, model) : imagen_client_unload_model(c, model);
    imagen_client_destroy(c);
    if (err != NULL)
        return fail(err);
    printf("%s: %s\n", model, load ? "loaded" : "unloaded");
    return IMAGEN_EXIT_OK;
}

static int
cmd_load(const imagen_cmd_args *a)
{
    return repository(a, true);
}

static int
cmd_unload(const imagen_cmd_args *a)
{
    return repository(a, false);
}

/* ---- infer ----------------------------------------------------------------- */

/* The model's declared rank and channel count of input `name`, from its
 * metadata: an image is [H,W,C], the model may want [N,H,W,C]. */
static imagen_error *
input_shape_hint(imagen_client *c, const char *model, const char *version, const char *name, size_t *rank,
                 int *channels)
{
    char *json = NULL;
    IMAGEN_RETURN_IF_ERROR(imagen_client_model_metadata(c, model, version, &json));
    json_t *doc = json_loads(json, 0, NULL);
    free(json);
    size_t i;
    json_t *in;
    *rank = 0;
    *channels = 0;
    json_array_foreach(json_object_get(doc, "inputs"), i, in)
    {
        const char *n = json_string_value(json_object_get(in, "name"));
        json_t *shape = json_object_get(in, "shape");
        if (n != NULL && strcmp(n, name) == 0 && json_array_size(shape) > 0) {
            *rank = json_array_size(shape);
            json_int_t last = json_integer_value(json_array_get(shape, *rank - 1));
            *channels = last == 1 || last == 3 || last == 4 ? (int)last : 0;
        }
    }
    json_decref(doc);
    return NULL;
}

typedef struct repeat_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t in_flight, done, failed;
    imagen_infer_result *last; /* kept to write the outputs of one request */
    imagen_error *first_err;
} repeat_state;

static void
on_repeat_done(imagen_infer_result *result, imagen_error *err, void *user_data)
{
    repeat_state *s = user_data;
    pthread_mutex_lock(&s->mu);
    if (err != NULL) {
        s->failed++;
        if (s->first_err == NULL)
            s->first_err = err;
        else
            imagen_error_free(err);
    } else {
        imagen_infer_result_free(s->last);
        s->last = result;
    }
    s->in_flight--;
    s->done++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Runs `repeat` requests with at most `concurrency` in flight through the
 * library's async API; the result of the last completed one is returned. */
static imagen_error *
infer_repeated(imagen_client *c, const imagen_infer_request *req, long repeat, long concurrency,
               imagen_infer_result **out)
{
    repeat_state s = {.in_flight = 0};
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    imagen_error *err = NULL;
    for (long i = 0; i < repeat && err == NULL; i++) {
        pthread_mutex_lock(&s.mu);
        while (s.in_flight >= (size_t)concurrency)
            pthread_cond_wait(&s.cv, &s.mu);
        s.in_flight++;
        pthread_mutex_unlock(&s.mu);
        err = imagen_client_infer_async(c, req, on_repeat_done, &s);
        if (err != NULL) {
            pthread_mutex_lock(&s.mu);
            s.in_flight--;
            pthread_mutex_unlock(&s.mu);
        }
    }
    pthread_mutex_lock(&s.mu);
    while (s.in_flight > 0)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "%zu requests, %zu failed, concurrency %ld, %.3f s, %.1f req/s\n", s.done, s.failed, concurrency,
            secs, secs > 0 ? (double)s.done / secs : 0.0);
    if (err == NULL && s.first_err != NULL) {
        err = s.first_err;
        s.first_err = NULL;
    }
    imagen_error_free(s.first_err);
    if (err != NULL)
        imagen_infer_result_free(s.last);
    else
        *out = s.last;
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    return err;
}

static bool
parse_count(const char *flag, const char *v, long def, long *out)
{
    if (v == NULL) {
        *out = def;
        return true;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (end == v || *end != '\0' || errno != 0 || n < 1 || n > 1000000) {
        fprintf(stderr, "imagen infer: --%s wants a count from 1 to 1000000, got '%s'\n", flag, v);
        return false;
    }
    *out = n;
    return true;
}

static int
write_outputs(const imagen_tensor *tensors, size_t n, const char *dir, bool force_npy)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "imagen: error: %s: %s\n", dir, strerror(errno));
        return IMAGEN_EXIT_FILE;
    }
    for (size_t i = 0; i < n; i++) {
        const imagen_tensor *t = &tensors[i];
        bool png = !force_npy && imagen_io_is_png_shaped(t);
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s.%s", dir, t->name, png ? "png" : "npy");
        imagen_error *err = png ? imagen_io_write_png(path, t) : imagen_io_write_npy(path, t);
        if (err != NULL)
            return fail_file(err);
        printf("%s %s [", t->name, imagen_datatype_name(t->datatype));
        for (size_t d = 0; d < t->rank; d++)
            printf("%s%lld", d ? "," : "", (long long)t->shape[d]);
        printf("] %s\n", path);
    }
    return IMAGEN_EXIT_OK;
}

/* ---- infer --shm ------------------------------------------------------------ */

/* Tensors of one request laid out in one client-made region: inputs first,
 * then room for each output, every slot 64-byte aligned. */
#define SHM_ALIGN 64

typedef struct shm_plan {
    imagen_shm_region *region;
    char name[64]; /* registration name (the key without its '/') */
    bool registered;
    imagen_shm_ref in[IMAGEN_CMD_MAX_VALUES];
    imagen_shm_ref out[IMAGEN_CMD_MAX_VALUES];
    json_t *meta; /* model metadata: output names are borrowed from it */
} shm_plan;

static size_t
align_up(size_t n)
{
    return (n + SHM_ALIGN - 1) / SHM_ALIGN * SHM_ALIGN;
}

/* Room to leave for an output declared with `shape` (metadata) and `dt`.
 * Variable dimensions are taken from the first input when it has the same
 * rank (identity-like and image models keep their input's shape), and the
 * guess is then given 4x headroom; the server refuses an output that does
 * not fit, so a bad guess is an error, never an overrun. */
static size_t
output_room(json_t *shape, imagen_datatype dt, const imagen_tensor *first_in, size_t total_in)
{
    size_t esize = imagen_datatype_size(dt);
    size_t rank = json_array_size(shape);
    if (esize == 0 || rank == 0)
        return 4 * total_in + (1u << 20);
    uint64_t n = 1;
    bool guessed = false;
    for (size_t d = 0; d < rank; d++) {
        json_int_t v = json_integer_value(json_array_get(shape, d));
        if (v < 0) {
            if (first_in->rank != rank)
                return 4 * total_in + (1u << 20);
            v = first_in->shape[d];
            guessed = true;
        }
        if (v > 0 && n > UINT64_MAX / 4 / (uint64_t)v / esize)
            return 4 * total_in + (1u << 20);
        n *= (uint64_t)v;
    }
    size_t bytes = (size_t)n * esize;
    return guessed ? 4 * bytes : bytes;
}

/* Creates the region, copies the inputs in, registers it and fills
 * req->input_shm / output_shm (naming every output when none was asked). */
static imagen_error *
shm_prepare(imagen_client *c, shm_plan *p, imagen_infer_request *req, const char **outputs)
{
    char *json = NULL;
    IMAGEN_RETURN_IF_ERROR(imagen_client_model_metadata(c, req->model, req->version, &json));
    p->meta = json_loads(json, 0, NULL);
    free(json);
    json_t *meta_out = json_object_get(p->meta, "outputs");
    if (req->n_outputs == 0) {
        size_t i;
        json_t *o;
        json_array_foreach(meta_out, i, o)
        {
            const char *name = json_string_value(json_object_get(o, "name"));
            if (name != NULL && req->n_outputs < IMAGEN_CMD_MAX_VALUES)
                outputs[req->n_outputs++] = name;
        }
        if (req->n_outputs == 0)
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "model '%s' lists no outputs to place in shared memory",
                                    req->model);
    }
    size_t total_in = 0, size = 0;
    for (size_t i = 0; i < req->n_inputs; i++)
        total_in += req->inputs[i].byte_size;
    for (size_t i = 0; i < req->n_inputs; i++) {
        p->in[i] = (imagen_shm_ref){p->name, size, req->inputs[i].byte_size};
        size += align_up(req->inputs[i].byte_size);
    }
    for (size_t i = 0; i < req->n_outputs; i++) {
        json_t *shape = NULL;
        imagen_datatype dt = IMAGEN_TYPE_INVALID;
        size_t k;
        json_t *o;
        json_array_foreach(meta_out, k, o)
        {
            const char *name = json_string_value(json_object_get(o, "name"));
            const char *dts = json_string_value(json_object_get(o, "datatype"));
            if (name != NULL && strcmp(name, outputs[i]) == 0 && dts != NULL) {
                shape = json_object_get(o, "shape");
                dt = imagen_datatype_from_name(dts, strlen(dts));
            }
        }
        size_t room = output_room(shape, dt, &req->inputs[0], total_in);
        p->out[i] = (imagen_shm_ref){p->name, size, room};
        size += align_up(room);
    }
    IMAGEN_RETURN_IF_ERROR(imagen_shm_region_create(size ? size : SHM_ALIGN, &p->region));
    const char *key = imagen_shm_region_key(p->region);
    snprintf(p->name, sizeof(p->name), "%s", key + 1);
    char *base = imagen_shm_region_data(p->region);
    for (size_t i = 0; i < req->n_inputs; i++)
        if (req->inputs[i].byte_size > 0)
            memcpy(base + p->in[i].offset, req->inputs[i].data, req->inputs[i].byte_size);
    IMAGEN_RETURN_IF_ERROR(imagen_client_shm_register(c, p->name, key, 0, imagen_shm_region_size(p->region)));
    p->registered = true;
    /* The server has mapped the object: its name is no longer needed, and
     * unlinking now leaves nothing in /dev/shm whatever happens next. */
    imagen_shm_region_unlink(p->region);
    req->input_shm = p->in;
    req->output_shm = p->out;
    return NULL;
}

/* Byte size of an output the server wrote into the region, from its shape
 * (BYTES: by walking its length prefixes); false if it overruns the slot. */
static bool
shm_output_size(const imagen_tensor *t, const char *slot, size_t room, size_t *out)
{
    uint64_t n;
    if (!imagen_shape_element_count(t->shape, t->rank, UINT64_MAX, &n))
        return false;
    if (t->datatype != IMAGEN_TYPE_BYTES) {
        size_t esize = imagen_datatype_size(t->datatype);
        if (esize == 0 || n > room / esize)
            return false;
        *out = (size_t)n * esize;
        return true;
    }
    size_t off = 0;
    for (uint64_t e = 0; e < n; e++) {
        uint32_t len;
        if (room - off < 4)
            return false;
        memcpy(&len, slot + off, 4);
        if (room - off - 4 < len)
            return false;
        off += 4 + len;
    }
    *out = off;
    return true;
}

/* Unregisters (when registered) and destroys the region; keeps going on
 * errors, which it only reports. */
static void
shm_release(imagen_client *c, shm_plan *p)
{
    if (p->registered) {
        imagen_error *err = imagen_client_shm_unregister(c, p->name);
        if (err != NULL) {
            fprintf(stderr, "imagen: warning: cannot unregister shared memory '%s': %s\n", p->name,
                    imagen_error_message(err));
            imagen_error_free(err);
        }
    }
    imagen_shm_region_destroy(p->region);
    json_decref(p->meta);
}

static int
cmd_infer(const imagen_cmd_args *a)
{
    const char *model = a->positional[0];
    const char *version = imagen_cmd_get(a, "version");
    long repeat, concurrency;
    if (!parse_count("repeat", imagen_cmd_get(a, "repeat"), 1, &repeat) ||
        !parse_count("concurrency", imagen_cmd_get(a, "concurrency"), 1, &concurrency))
        return IMAGEN_EXIT_USAGE;
    size_t n_inputs = 0;
    while (imagen_cmd_get_nth(a, "input", n_inputs) != NULL)
        n_inputs++;
    if (n_inputs == 0) {
        fprintf(stderr, "imagen infer: at least one --input NAME=FILE is required\n");
        return IMAGEN_EXIT_USAGE;
    }
    bool use_shm = imagen_cmd_get(a, "shm") != NULL;
    int rc = 0;
    imagen_client *c = connect_client(a, &rc);
    if (c == NULL)
        return rc;
    shm_plan shm;
    memset(&shm, 0, sizeof(shm));
    imagen_io_tensor files[IMAGEN_CMD_MAX_VALUES];
    imagen_tensor inputs[IMAGEN_CMD_MAX_VALUES];
    char names[IMAGEN_CMD_MAX_VALUES][256];
    const char *outputs[IMAGEN_CMD_MAX_VALUES];
    size_t n_outputs = 0, loaded = 0;
    imagen_infer_result *res = NULL;
    memset(files, 0, sizeof(files));
    for (size_t i = 0; i < n_inputs; i++, loaded++) {
        const char *spec = imagen_cmd_get_nth(a, "input", i);
        const char *eq = strchr(spec, '=');
        if (eq == NULL || eq == spec || eq[1] == '\0' || (size_t)(eq - spec) >= sizeof(names[i])) {
            fprintf(stderr, "imagen infer: --input wants NAME=FILE, got '%s'\n", spec);
            rc = IMAGEN_EXIT_USAGE;
            goto done;
        }
        snprintf(names[i], sizeof(names[i]), "%.*s", (int)(eq - spec), spec);
        const char *path = eq + 1;
        imagen_error *err;
        if (imagen_io_is_image(path)) {
            size_t want_rank = 0;
            int channels = 0;
            err = input_shape_hint(c, model, version, names[i], &want_rank, &channels);
            if (err != NULL) {
                rc = fail(err);
                goto done;
            }
            err = imagen_io_read_image(path, channels, &files[i]);
            /* A batching model declares [-1, H, W, C]: send a batch of one. */
            if (err == NULL && want_rank == 4) {
                memmove(files[i].shape + 1, files[i].shape, 3 * sizeof(int64_t));
                files[i].shape[0] = 1;
                files[i].rank = 4;
            }
        } else {
            err = imagen_io_read_npy(path, &files[i]);
        }
        if (err != NULL) {
            rc = fail_file(err);
            goto done;
        }
        inputs[i] = (imagen_tensor){names[i],      files[i].datatype, files[i].shape,
                                    files[i].rank, files[i].data,     files[i].byte_size};
    }
    while ((outputs[n_outputs] = imagen_cmd_get_nth(a, "output", n_outputs)) != NULL)
        n_outputs++;
    imagen_infer_request req = {model, version, NULL, inputs, n_inputs, outputs, n_outputs, NULL, NULL};
    imagen_error *err = NULL;
    if (use_shm) {
        err = shm_prepare(c, &shm, &req, outputs);
        if (err != NULL) {
            if (imagen_error_code_of(err) == IMAGEN_ERR_UNSUPPORTED)
                fprintf(stderr, "imagen infer: --shm needs a server on this machine started with "
                                "--allow-client-shm=true\n");
            rc = fail(err);
            goto done;
        }
    }
    err = repeat == 1 && concurrency == 1 ? imagen_client_infer(c, &req, &res)
                                          : infer_repeated(c, &req, repeat, concurrency, &res);
    if (err != NULL) {
        rc = fail(err);
        goto done;
    }
    size_t n_res = imagen_infer_result_output_count(res);
    imagen_tensor results[IMAGEN_CMD_MAX_VALUES];
    if (n_res > IMAGEN_CMD_MAX_VALUES) {
        rc = fail(imagen_error_new(IMAGEN_ERR_INTERNAL, "the server returned %zu outputs", n_res));
        goto done;
    }
    for (size_t i = 0; i < n_res; i++) {
        results[i] = *imagen_infer_result_output(res, i);
        if (!use_shm)
            continue;
        /* The bytes are in the output's slot of the region. */
        size_t k = 0;
        while (k < req.n_outputs && strcmp(outputs[k], results[i].name) != 0)
            k++;
        const char *slot = k < req.n_outputs ? (char *)imagen_shm_region_data(shm.region) + shm.out[k].offset : NULL;
        if (slot == NULL || !shm_output_size(&results[i], slot, shm.out[k].byte_size, &results[i].byte_size)) {
            rc = fail(imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s' does not fit its shared-memory slot",
                                       results[i].name));
            goto done;
        }
        results[i].data = slot;
    }
    const char *dir = imagen_cmd_get(a, "output-dir");
    rc = write_outputs(results, n_res, dir ? dir : ".", imagen_cmd_get(a, "npy") != NULL);
done:
    imagen_infer_result_free(res);
    if (use_shm)
        shm_release(c, &shm);
    for (size_t i = 0; i < loaded; i++)
        imagen_io_tensor_free(&files[i]);
    imagen_client_destroy(c);
    return rc;
}

/* ---- the table ------------------------------------------------------------- */

#define VERSION_FLAG                                                           \
    {                                                                          \
        "version", "N", false, "Model version (default: the server's choice)." \
    }

#define QUEUE_FLAG                                                                       \
    {                                                                                    \
        "queue", "URL", false,                                                           \
            "sqlite:///path/queue.db or redis://host:port[/db] (default $IMAGEN_QUEUE, " \
            "else a sqlite file in ~/.local/share/imagen)"                               \
    }

static const imagen_cmd commands[] = {
    {"health", "", 0, 0, "Show whether the server is live and ready (exit 1 when not).", NULL, {{0}}, cmd_health},
    {"models",
     "",
     0,
     0,
     "List the model repository: every model with its version, state and reason.",
     NULL,
     {{"ready", NULL, false, "Only READY versions."}, {"json", NULL, false, "Print the index as JSON."}},
     cmd_models},
    {"metadata",
     "MODEL",
     1,
     1,
     "Print a model's metadata (inputs, outputs, versions) as JSON.",
     NULL,
     {VERSION_FLAG},
     cmd_metadata},
    {"config", "MODEL", 1, 1, "Print a model's configuration as JSON.", NULL, {VERSION_FLAG}, cmd_config},
    {"infer",
     "MODEL",
     1,
     1,
     "Run an inference with inputs from files and write the outputs to files.",
     "FILE is a .npy array (any numeric or bool dtype, C order) or an image\n"
     "(.png .jpg .jpeg .webp .tif), decoded to UINT8 [H, W, C]; a model whose\n"
     "input is [-1, H, W, C] gets a batch of one. Each output is written to\n"
     "DIR/NAME.png when it is UINT8 [H, W, 3|4] (or [1, H, W, 3|4]), otherwise\n"
     "to DIR/NAME.npy, and printed as: NAME DATATYPE [SHAPE] PATH.\n"
     "--repeat/--concurrency send the same request many times through the\n"
     "asynchronous API and print the rate on stderr.\n"
     "--shm passes tensors through system shared memory instead of the socket:\n"
     "inputs are copied once into a region this command creates, the region is\n"
     "registered, outputs are written into it by the server, and it is\n"
     "unregistered and removed at the end. Only for a server on this machine\n"
     "started with --allow-client-shm=true. Room for an output whose shape\n"
     "depends on the request is guessed from the first input (4x headroom).",
     {{"input", "NAME=FILE", true, "An input tensor and the file it comes from."},
      {"output", "NAME", true, "Request only this output (default: all)."},
      {"output-dir", "DIR", false, "Where outputs are written (default: .)."},
      {"npy", NULL, false, "Write every output as .npy, images included."},
      VERSION_FLAG,
      {"repeat", "N", false, "Send the request N times (default 1)."},
      {"concurrency", "C", false, "At most C requests in flight (default 1)."},
      {"shm", NULL, false, "Pass inputs and outputs through system shared memory."}},
     cmd_infer},
    {"load", "MODEL", 1, 1, "Load or reload a model (server in --model-control-mode=explicit).", NULL, {{0}}, cmd_load},
    {"unload", "MODEL", 1, 1, "Unload a model (server in --model-control-mode=explicit).", NULL, {{0}}, cmd_unload},
    {"stats",
     "[MODEL]",
     0,
     1,
     "Print inference statistics of one model or all as JSON.",
     NULL,
     {VERSION_FLAG},
     cmd_stats},
    {"submit",
     "FILE|URL|DIR...",
     1,
     SIZE_MAX,
     "Queue a job per image for an operation's workers (--wait to follow them).",
     "Each FILE, http(s) URL, or image file directly inside DIR becomes one job\n"
     "on the queue of --op. Workers fetch the input themselves, so files are\n"
     "passed as absolute paths (the workers must see the same file system) unless\n"
     "--inline puts the bytes in the job. Results go to --out: a directory (made\n"
     "if missing; default .) where each job writes STEM.JOBID.EXT, or an http(s)\n"
     "URL the worker PUTs the result to (a signed S3/GCS URL; one input only).\n"
     "Parameters (--param NAME=VALUE): format=png|jpeg|webp, quality=1..100, and\n"
     "the operation's own:\n"
     "  upscale            scale=2..4 (2)\n"
     "  enhance            strength=0..2 (1)\n"
     "  background_remove  (none; the result is RGBA, PNG or WebP)\n"
     "  style_comic        strength=0..1 (1), colors=2..64 (8)\n"
     "  style_aged         strength=0..1 (1), seed=0..2^53 (0), dust=0..1 (0), sepia=0..1 (1)\n"
     "Prints one line per job (ID OP INPUT), or with --wait follows them to the\n"
     "end (a progress bar on a terminal; --timeout bounds the wait) and prints\n"
     "ID OP STATE MS OUTPUT|ERROR per job; exit 1 when any failed.",
     {{"op", "OP", false, "The operation: upscale, enhance, background_remove, style_comic, style_aged."},
      {"param", "NAME=VALUE", true, "A job parameter, checked against the operation."},
      {"out", "DIR|URL", false, "Where results go (default: the current directory)."},
      {"wait", NULL, false, "Wait for every job to finish and print the results."},
      {"inline", NULL, false, "Put the input bytes in the job (at most 8 MiB each)."},
      QUEUE_FLAG},
     imagen_cmd_submit},
    {"status",
     "ID",
     1,
     1,
     "Show one job: state, attempts, times, output or error (exit 1 if it failed).",
     NULL,
     {{"json", NULL, false, "Print the job as JSON, with its spec and stage timings."}, QUEUE_FLAG},
     imagen_cmd_status},
    {"jobs",
     "",
     0,
     0,
     "List jobs, newest first.",
     NULL,
     {{"state", "STATE", false, "Only jobs in STATE: queued, running, done, failed, dead."},
      {"op", "OP", false, "Only jobs of one operation."},
      {"limit", "N", false, "At most N jobs (default 100)."},
      {"json", NULL, false, "Print the jobs as JSON."},
      QUEUE_FLAG},
     imagen_cmd_jobs},
    {"requeue",
     "[ID]",
     0,
     1,
     "Queue a failed or dead job again, or every dead job with --dead.",
     NULL,
     {{"dead", NULL, false, "Requeue every dead-lettered job."},
      {"op", "OP", false, "With --dead: only this operation's."},
      QUEUE_FLAG},
     imagen_cmd_requeue},
    {"queues",
     "",
     0,
     0,
     "Show each operation's queue: queued, in flight, done, failed, dead.",
     NULL,
     {{"json", NULL, false, "Print the counts as JSON."}, QUEUE_FLAG},
     imagen_cmd_queues},
};

int
main(int argc, char **argv)
{
    imagen_cmd_args args;
    int rc = imagen_cmd_parse(commands, sizeof(commands) / sizeof(commands[0]), argc, argv, &args);
    if (rc >= 0) {
        imagen_cmd_args_free(&args);
        return rc;
    }
    rc = args.cmd->run(&args);
    imagen_cmd_args_free(&args);
    return rc;
}
