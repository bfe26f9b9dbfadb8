/*
 * A loaded model version: backend model state, the batcher, and one thread
 * per instance. This file holds the whole life of a version — load (backend
 * init, instance threads, warmup), the instance loop that executes batches,
 * and teardown — plus the accessors backends and frontends use on it.
 *
 * Threads: load runs on a repository loader thread; each instance runs on
 * its own thread (instance_init, warmup, the execute loop, instance_fini all
 * happen there, as the backend contract promises); teardown runs on the
 * server's reaper thread. The instance loop never blocks on anything but
 * the batcher and the backend. One exception, for backends that allow it:
 * a request of a model whose executions take microseconds may run on the
 * thread that submitted it while an instance is idle
 * (imagen__model_try_inline), because waking the instance's thread would
 * cost more than the execution.
 */
#include "core/core.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/sync.h"
#include "common/time.h"

#define WARMUP_FILE_MAX_BYTES (256u << 20)
#define LABEL_FILE_MAX_BYTES (64u << 20)

struct imagen_instance {
    imagen_model *model;
    pthread_t thread;
    bool started;
    char *name;
    imagen_backend_instance_info info;
    bool passive;
    void *state; /* backend instance state */
    /* start-up handshake with the loader thread */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int init_result; /* 0 pending, 1 ready, -1 failed */
    imagen_error *init_error;
    /* Who executes for this instance (see instance_claim): its own thread
     * sets `executing` around each batch, a thread running a request inline
     * sets `borrowed` for the one request. */
    atomic_bool executing;
    atomic_bool borrowed;
};

static atomic_bool gpu_warning_logged;

/* ---- small file helpers ----------------------------------------------- */

static imagen_error *
read_file(const char *path, size_t limit, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "cannot open '%s': %s", path, strerror(errno));
    char *data = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= limit) {
                free(data);
                fclose(f);
                return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "'%s' is larger than %zu bytes", path, limit);
            }
            cap = cap ? cap * 2 : 4096;
            char *p = realloc(data, cap + 1);
            if (p == NULL) {
                free(data);
                fclose(f);
                return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory reading '%s'", path);
            }
            data = p;
        }
        size_t r = fread(data + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(data);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "error reading '%s'", path);
    }
    if (data == NULL && (data = malloc(1)) == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    data[n] = '\0';
    *out = data;
    *len = n;
    return NULL;
}

static char *
path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* ---- labels ------------------------------------------------------------- */

static imagen_error *
load_labels(imagen_model *m)
{
    const imagen_model_config *mc = m->config;
    for (size_t i = 0; i < mc->n_outputs; i++) {
        const char *file = mc->outputs[i].label_filename;
        if (file == NULL || file[0] == '\0')
            continue;
        if (strstr(file, "..") != NULL || file[0] == '/')
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "label_filename '%s' of output '%s' must be a "
                                    "relative path inside the model directory",
                                    file, mc->outputs[i].name);
        char *path = path_join(m->model_dir, file);
        char *text = NULL;
        size_t len = 0;
        imagen_error *err = path ? read_file(path, LABEL_FILE_MAX_BYTES, &text, &len)
                                 : imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        free(path);
        if (err)
            return imagen_error_wrap(err, "labels of output '%s'", mc->outputs[i].name);
        output_labels *grown = realloc(m->labels, (m->n_labels + 1) * sizeof(*grown));
        if (grown == NULL) {
            free(text);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        }
        m->labels = grown;
        output_labels *ol = &m->labels[m->n_labels++];
        memset(ol, 0, sizeof(*ol));
        ol->output = strdup(mc->outputs[i].name);
        size_t lines = 1;
        for (size_t k = 0; k < len; k++)
            lines += text[k] == '\n';
        ol->labels = calloc(lines, sizeof(char *));
        if (ol->output == NULL || ol->labels == NULL) {
            free(text);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        }
        char *save = NULL, *line = text;
        size_t start = 0;
        for (size_t k = 0; k <= len; k++) {
            if (k == len || text[k] == '\n') {
                size_t end = k;
                if (end > start && text[end - 1] == '\r')
                    end--;
                if (k == len && end == start)
                    break; /* no trailing empty label after the final newline */
                ol->labels[ol->n] = strndup(text + start, end - start);
                if (ol->labels[ol->n] == NULL) {
                    free(text);
                    return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
                }
                ol->n++;
                start = k + 1;
            }
        }
        (void)save;
        (void)line;
        free(text);
    }
    return NULL;
}

const char *const *
imagen_model_output_labels(const imagen_model *model, const char *output, size_t *n)
{
    for (size_t i = 0; i < model->n_labels; i++) {
        if (strcmp(model->labels[i].output, output) == 0) {
            *n = model->labels[i].n;
            return (const char *const *)model->labels[i].labels;
        }
    }
    *n = 0;
    return NULL;
}

/* ---- warmup --------------------------------------------------------------- */

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Builds the data of one warmup input. */
static imagen_error *
warmup_input_data(imagen_model *m, const imagen_warmup_input *in, const int64_t *shape, size_t rank, void **data,
                  size_t *size)
{
    uint64_t count = 0;
    if (!imagen_shape_element_count(shape, rank, IMAGEN_REQUEST_MAX_ELEMENTS, &count))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "warmup input '%s' has an invalid shape", in->name);
    if (in->source == IMAGEN_WARMUP_FILE) {
        char *dir = path_join(m->model_dir, "warmup");
        char *path = dir ? path_join(dir, in->input_data_file) : NULL;
        free(dir);
        if (path == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        char *text = NULL;
        size_t len = 0;
        imagen_error *err = read_file(path, WARMUP_FILE_MAX_BYTES, &text, &len);
        free(path);
        if (err)
            return imagen_error_wrap(err, "warmup input '%s'", in->name);
        *data = text;
        *size = len;
        return NULL;
    }
    if (in->datatype == IMAGEN_TYPE_BYTES) {
        /* Each element: a 4-byte length; zero data = empty strings, random
         * data = one random byte. */
        size_t each = in->source == IMAGEN_WARMUP_RANDOM ? 5 : 4;
        unsigned char *p = calloc(count ? count : 1, each);
        if (p == NULL)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        uint64_t seed = 0x9e3779b97f4a7c15u;
        for (uint64_t i = 0; i < count && each == 5; i++) {
            p[i * 5] = 1;
            p[i * 5 + 4] = (unsigned char)(xorshift(&seed) % 26 + 'a');
        }
        *data = p;
        *size = count * each;
        return NULL;
    }
    size_t bytes = count * imagen_datatype_size(in->datatype);
    unsigned char *p = calloc(bytes ? bytes : 1, 1);
    if (p == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    if (in->source == IMAGEN_WARMUP_RANDOM) {
        uint64_t seed = 0x2545f4914f6cdd1du;
        if (in->datatype == IMAGEN_TYPE_FP32) {
            for (uint64_t i = 0; i < count; i++) {
                float v = (float)(xorshift(&seed) % 1000) / 1000.0f;
                memcpy(p + i * 4, &v, 4);
            }
        } else if (in->datatype == IMAGEN_TYPE_FP64) {
            for (uint64_t i = 0; i < count; i++) {
                double v = (double)(xorshift(&seed) % 1000) / 1000.0;
                memcpy(p + i * 8, &v, 8);
            }
        } else if (in->datatype == IMAGEN_TYPE_BOOL) {
            for (uint64_t i = 0; i < count; i++)
                p[i] = xorshift(&seed) & 1;
        } else {
            for (size_t i = 0; i < bytes; i++)
                p[i] = (unsigned char)(xorshift(&seed) & 0x7f);
        }
    }
    *data = p;
    *size = bytes;
    return NULL;
}

/* Runs every warmup sample on one instance, on the instance's thread. */
static imagen_error *
run_warmup(imagen_instance *inst)
{
    imagen_model *m = inst->model;
    const imagen_model_config *mc = m->config;
    for (size_t w = 0; w < mc->n_warmups; w++) {
        const imagen_warmup *wu = &mc->warmups[w];
        uint32_t runs = wu->count ? wu->count : 1;
        for (uint32_t r = 0; r < runs; r++) {
            imagen_request *req = NULL;
            IMAGEN_RETURN_IF_ERROR(imagen__request_new_internal(m, &req));
            imagen_error *err = NULL;
            for (size_t i = 0; i < wu->n_inputs && !err; i++) {
                const imagen_warmup_input *in = &wu->inputs[i];
                int64_t shape[IMAGEN_MAX_RANK + 1];
                size_t rank = 0;
                if (mc->max_batch_size > 0)
                    shape[rank++] = wu->batch_size ? wu->batch_size : 1;
                for (size_t d = 0; d < in->rank && rank < IMAGEN_MAX_RANK; d++)
                    shape[rank++] = in->dims[d];
                void *data = NULL;
                size_t size = 0;
                err = warmup_input_data(m, in, shape, rank, &data, &size);
                if (!err)
                    err = imagen__request_add_owned_input(req, in->name, in->datatype, shape, rank, data, size);
            }
            if (!err)
                err = imagen__request_prepare_internal(req);
            if (!err) {
                imagen__request_begin_execution(req, imagen_time_now_ns());
                m->backend->execute(m->backend_model_state, inst->state, &req, 1);
                if (!imagen__request_end_execution(req)) {
                    const imagen_error *e = imagen__request_error(req);
                    err = imagen_error_new(IMAGEN_ERR_INTERNAL, "%s", e ? imagen_error_message(e) : "failed");
                }
            }
            imagen_request_release(req);
            if (err)
                return imagen_error_wrap(err, "warmup sample '%s' of model '%s' failed", wu->name ? wu->name : "",
                                         m->name);
        }
    }
    return NULL;
}

/* ---- instance threads ------------------------------------------------------ */

/* Inline execution (imagen__model_try_inline) needs the model's executions
 * to be this short, by a moving average over at least this many batches,
 * and the request's inputs this small: the receiving thread (an event loop)
 * is blocked meanwhile, so only executions that cost less than waking the
 * instance thread qualify, and a large request of a model warmed by small
 * ones still goes to the instance thread. */
#define INLINE_MAX_EXEC_NS 20000u
#define INLINE_MIN_EXECUTIONS 16u
#define INLINE_MAX_INPUT_BYTES (16u << 10)

/* The instance's own thread takes the instance before a batch. Each side
 * stores its own flag and then reads the other's (sequentially consistent),
 * so an inline borrower and this thread never both go ahead. This thread
 * keeps its flag while it waits out a borrower already running (a few
 * microseconds), so no further borrower gets in ahead of it. */
static void
instance_claim(imagen_instance *inst)
{
    atomic_store(&inst->executing, true);
    while (atomic_load(&inst->borrowed))
        sched_yield();
}

static bool
instance_borrow(imagen_instance *inst)
{
    if (inst->passive || atomic_exchange(&inst->borrowed, true))
        return false;
    if (atomic_load(&inst->executing)) {
        atomic_store(&inst->borrowed, false);
        return false;
    }
    return true;
}

/* Executes one batch: the request path's middle from batcher to delivery. */
static void
execute_batch(imagen_instance *inst, imagen_batch_item **items, imagen_request **reqs, size_t n)
{
    imagen_model *m = inst->model;
    uint64_t t0 = imagen_time_now_ns();
    uint64_t total_batch = 0;
    for (size_t i = 0; i < n; i++) {
        reqs[i] = imagen__request_from_item(items[i]);
        imagen__request_begin_execution(reqs[i], t0);
        total_batch += items[i]->batch_size;
    }
    uint64_t t1 = imagen_time_now_ns();
    m->backend->execute(m->backend_model_state, inst->state, reqs, n);
    uint64_t t2 = imagen_time_now_ns();
    for (size_t i = 0; i < n; i++)
        imagen__request_end_execution(reqs[i]);
    uint64_t t3 = imagen_time_now_ns();
    imagen_stats_record_execution(m->stats, total_batch, t1 - t0, t2 - t1, t3 - t2);
    /* A moving average of 1/8 weight, from the first execution's time;
     * racing updates only blur it. */
    uint64_t avg = atomic_load_explicit(&m->exec_avg_ns, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&m->executions, 1, memory_order_relaxed) == 0)
        avg = t3 - t0;
    atomic_store_explicit(&m->exec_avg_ns, avg - avg / 8 + (t3 - t0) / 8, memory_order_relaxed);
    for (size_t i = 0; i < n; i++) {
        imagen__request_set_phase_times(reqs[i], t1 - t0, t2 - t1, t3 - t2);
        imagen_batcher_complete(m->batcher, items[i], imagen__request_deliver, NULL);
    }
}

static void
signal_init(imagen_instance *inst, int result, imagen_error *err)
{
    pthread_mutex_lock(&inst->lock);
    inst->init_result = result;
    inst->init_error = err;
    pthread_cond_broadcast(&inst->cond);
    pthread_mutex_unlock(&inst->lock);
}

static void *
instance_main(void *arg)
{
    imagen_instance *inst = arg;
    imagen_model *m = inst->model;
    imagen_error *err = NULL;
    if (m->backend->instance_init)
        err = m->backend->instance_init(&m->backend_view, m->backend_model_state, &inst->info, &inst->state);
    bool initialised = err == NULL; /* fini pairs only with a successful init */
    if (err == NULL)
        err = run_warmup(inst);
    if (err != NULL) {
        if (initialised && m->backend->instance_fini)
            m->backend->instance_fini(inst->state);
        signal_init(inst, -1, imagen_error_wrap(err, "instance '%s'", inst->name));
        return NULL;
    }
    signal_init(inst, 1, NULL);

    if (inst->passive) {
        /* Loaded but never given requests (instance_group passive: true). */
        pthread_mutex_lock(&m->passive_lock);
        while (!atomic_load(&m->stopping))
            pthread_cond_wait(&m->passive_cond, &m->passive_lock);
        pthread_mutex_unlock(&m->passive_lock);
    } else {
        size_t cap = m->config->max_batch_size > 0 ? (size_t)m->config->max_batch_size : 1;
        imagen_batch_item **items = calloc(cap, sizeof(*items));
        imagen_request **reqs = calloc(cap, sizeof(*reqs));
        if (items && reqs) {
            size_t n;
            while ((n = imagen_batcher_next_batch(m->batcher, items, cap)) > 0) {
                instance_claim(inst);
                imagen_batcher_batch_started(m->batcher);
                execute_batch(inst, items, reqs, n);
                atomic_store(&inst->executing, false);
            }
        } else {
            imagen_log(IMAGEN_LOG_ERROR, "core", "instance '%s' of model '%s': out of memory", inst->name, m->name);
        }
        free(items);
        free(reqs);
    }
    /* Taken for good: no request runs inline on a finished instance. */
    instance_claim(inst);
    if (m->backend->instance_fini)
        m->backend->instance_fini(inst->state);
    return NULL;
}

bool
imagen__model_try_inline(imagen_model *m, imagen_request *req)
{
    if (!m->inline_ok || atomic_load_explicit(&m->executions, memory_order_relaxed) < INLINE_MIN_EXECUTIONS ||
        atomic_load_explicit(&m->exec_avg_ns, memory_order_relaxed) > INLINE_MAX_EXEC_NS ||
        imagen__request_input_bytes(req) > INLINE_MAX_INPUT_BYTES || !imagen_batcher_bypass_ok(m->batcher))
        return false;
    for (size_t i = 0; i < m->n_instances; i++) {
        imagen_instance *inst = &m->instances[i];
        if (!instance_borrow(inst))
            continue;
        /* Checked again with the instance held: a batch taken by an
         * instance thread meanwhile goes first, and a cancel that came in
         * meanwhile is left to the queued path, which honours it. */
        if (!imagen_batcher_bypass_ok(m->batcher) || imagen__request_cancelled(req)) {
            atomic_store(&inst->borrowed, false);
            return false;
        }
        imagen_batch_item *item = imagen__request_item(req);
        item->enqueue_ns = imagen_time_now_ns();
        imagen_request *reqs[1];
        execute_batch(inst, &item, reqs, 1);
        atomic_store(&inst->borrowed, false);
        return true;
    }
    return false;
}

/* ---- load and teardown ------------------------------------------------------ */

static bool
needs_shape_check(const imagen_model_config *mc)
{
    for (size_t i = 0; i < mc->n_inputs; i++) {
        const imagen_tensor_config *in = &mc->inputs[i];
        if (in->optional || in->is_shape_tensor)
            return true;
        if (in->allow_ragged_batch)
            continue;
        for (size_t d = 0; d < in->rank; d++)
            if (in->dims[d] == -1)
                return true;
    }
    return false;
}

static void
stop_instances(imagen_model *m)
{
    atomic_store(&m->stopping, true);
    if (m->batcher)
        imagen_batcher_shutdown(m->batcher);
    pthread_mutex_lock(&m->passive_lock);
    pthread_cond_broadcast(&m->passive_cond);
    pthread_mutex_unlock(&m->passive_lock);
    for (size_t i = 0; i < m->n_instances; i++) {
        imagen_instance *inst = &m->instances[i];
        if (inst->started)
            pthread_join(inst->thread, NULL);
        inst->started = false;
    }
}

static void
free_model(imagen_model *m)
{
    for (size_t i = 0; i < m->n_instances; i++) {
        imagen_instance *inst = &m->instances[i];
        free(inst->name);
        imagen_error_free(inst->init_error);
        pthread_mutex_destroy(&inst->lock);
        pthread_cond_destroy(&inst->cond);
    }
    free(m->instances);
    imagen_batcher_destroy(m->batcher);
    for (size_t i = 0; i < m->n_labels; i++) {
        for (size_t k = 0; k < m->labels[i].n; k++)
            free(m->labels[i].labels[k]);
        free(m->labels[i].labels);
        free(m->labels[i].output);
    }
    free(m->labels);
    imagen_stats_unref(m->stats);
    imagen_model_config_free(m->config);
    pthread_mutex_destroy(&m->passive_lock);
    pthread_cond_destroy(&m->passive_cond);
    free(m->name);
    free(m->model_dir);
    free(m->version_dir);
    free(m);
}

void
imagen__model_destroy(imagen_model *m)
{
    stop_instances(m);
    if (m->backend->model_fini)
        m->backend->model_fini(m->backend_model_state);
    imagen_log(IMAGEN_LOG_INFO, "core", "unloaded model '%s' version %" PRId64, m->name, m->version);
    free_model(m);
}

static size_t
delay_until_from_env(void)
{
    const char *v = getenv(IMAGEN_BATCHER_DELAY_ENV);
    if (v == NULL || *v == '\0')
        return 0;
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 10);
    return (end && *end == '\0') ? (size_t)n : 0;
}

imagen_error *
imagen__model_load(imagen_server *srv, const char *name, int64_t version, const char *model_dir,
                   imagen_model_config *config, const imagen_backend *backend, imagen_stats *stats, imagen_model **out)
{
    uint64_t t_start = imagen_time_now_ns();
    imagen_model *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        imagen_model_config_free(config);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory loading model '%s'", name);
    }
    atomic_init(&m->refs, 1);
    atomic_init(&m->stopping, false);
    pthread_mutex_init(&m->passive_lock, NULL);
    pthread_cond_init(&m->passive_cond, NULL);
    m->server = srv;
    m->version = version;
    m->config = config;
    m->backend = backend;
    m->inline_ok = backend->abi_version >= 2 && (backend->flags & IMAGEN_BACKEND_EXECUTE_ANY_THREAD) != 0;
    m->stats = imagen_stats_ref(stats);
    m->name = strdup(name);
    m->model_dir = strdup(model_dir);
    char vbuf[32];
    snprintf(vbuf, sizeof(vbuf), "%" PRId64, version);
    m->version_dir = path_join(model_dir, vbuf);
    if (!m->name || !m->model_dir || !m->version_dir) {
        free_model(m);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory loading model '%s'", name);
    }
    m->shape_check = needs_shape_check(config);
    m->backend_view.name = m->name;
    m->backend_view.version = version;
    m->backend_view.model_dir = m->model_dir;
    m->backend_view.version_dir = m->version_dir;
    m->backend_view.config = config;

    imagen_error *err = load_labels(m);
    if (err) {
        free_model(m);
        return err;
    }
    size_t max_batch = config->max_batch_size > 0 ? (size_t)config->max_batch_size : 1;
    imagen_stats_ensure_batch_rows(stats, max_batch);
    imagen_stats_set_metric_tags(stats, config->metric_tags, config->n_metric_tags);

    err = backend->model_init(&m->backend_view, &m->backend_model_state);
    if (err) {
        free_model(m);
        return err;
    }

    /* Instances: one thread each, in group order. */
    size_t total = 0, active = 0;
    for (size_t g = 0; g < config->n_instance_groups; g++)
        total += (size_t)config->instance_groups[g].count;
    if (total == 0)
        total = 1;
    m->instances = calloc(total, sizeof(imagen_instance));
    if (m->instances == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        goto fail_backend;
    }
    size_t cpu_threads = imagen__server_cpu_threads(srv);
    size_t per_instance = cpu_threads / total ? cpu_threads / total : 1;
    size_t idx = 0;
    for (size_t g = 0; g < config->n_instance_groups || (g == 0 && config->n_instance_groups == 0); g++) {
        const imagen_instance_group *grp = config->n_instance_groups ? &config->instance_groups[g] : NULL;
        int32_t count = grp ? grp->count : 1;
        if (grp && grp->kind == IMAGEN_KIND_GPU && !atomic_exchange(&gpu_warning_logged, true))
            imagen_log(IMAGEN_LOG_WARNING, "core",
                       "model '%s' instance group '%s' asks for KIND_GPU but no GPU backend is built; "
                       "running its instances on CPU",
                       name, grp->name ? grp->name : "");
        for (int32_t k = 0; k < count && idx < total; k++, idx++) {
            imagen_instance *inst = &m->instances[idx];
            inst->model = m;
            pthread_mutex_init(&inst->lock, NULL);
            pthread_cond_init(&inst->cond, NULL);
            char nbuf[512];
            snprintf(nbuf, sizeof(nbuf), "%s_%d", grp && grp->name ? grp->name : name, (int)k);
            inst->name = strdup(nbuf);
            inst->passive = grp ? grp->passive : false;
            inst->info.name = inst->name;
            inst->info.index = idx;
            inst->info.kind = IMAGEN_KIND_CPU;
            inst->info.device_id = 0;
            inst->info.cpu_threads = (int)per_instance;
            if (!inst->passive)
                active++;
        }
    }
    m->n_instances = idx;

    imagen_batcher_options bo = {
        .config = config,
        .n_instances = active ? active : 1,
        .on_reject = imagen__request_rejected,
        .ctx = m,
        .delay_until_count = delay_until_from_env(),
    };
    err = imagen_batcher_create(&bo, &m->batcher);
    if (err)
        goto fail_backend;

    for (size_t i = 0; i < m->n_instances; i++) {
        imagen_instance *inst = &m->instances[i];
        if (pthread_create(&inst->thread, NULL, instance_main, inst) != 0) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot start a thread for instance '%s'", inst->name);
            goto fail_instances;
        }
        inst->started = true;
    }
    /* Wait for every instance to be initialised and warmed up. */
    for (size_t i = 0; i < m->n_instances; i++) {
        imagen_instance *inst = &m->instances[i];
        pthread_mutex_lock(&inst->lock);
        while (inst->init_result == 0)
            pthread_cond_wait(&inst->cond, &inst->lock);
        pthread_mutex_unlock(&inst->lock);
        if (inst->init_result < 0 && err == NULL) {
            err = inst->init_error;
            inst->init_error = NULL;
        }
    }
    if (err)
        goto fail_instances;

    imagen_stats_set_load_duration(stats, (double)(imagen_time_now_ns() - t_start) / 1e9);
    imagen__server_model_born(srv);
    *out = m;
    return NULL;

fail_instances:
    stop_instances(m);
fail_backend:
    if (backend->model_fini)
        backend->model_fini(m->backend_model_state);
    free_model(m);
    return err;
}

imagen_model *
imagen__model_ref(imagen_model *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void
imagen__model_unref(imagen_model *m)
{
    if (m != NULL && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        imagen__server_reap(m->server, m);
}

void
imagen_model_release(imagen_model *model)
{
    imagen__model_unref(model);
}

const char *
imagen_model_name(const imagen_model *model)
{
    return model->name;
}

int64_t
imagen_model_version(const imagen_model *model)
{
    return model->version;
}

const imagen_model_config *
imagen_model_get_config(const imagen_model *model)
{
    return model->config;
}

/* ---- backend accessors (model_init / instance_init) ---------------------- */

const char *
imagen_backend_model_name(const imagen_backend_model *model)
{
    return model->name;
}

int64_t
imagen_backend_model_version(const imagen_backend_model *model)
{
    return model->version;
}

const char *
imagen_backend_model_directory(const imagen_backend_model *model)
{
    return model->model_dir;
}

const char *
imagen_backend_model_version_directory(const imagen_backend_model *model)
{
    return model->version_dir;
}

const imagen_model_config *
imagen_backend_model_config(const imagen_backend_model *model)
{
    return model->config;
}

const char *
imagen_backend_model_parameter(const imagen_backend_model *model, const char *key)
{
    return model->config ? imagen_model_config_parameter(model->config, key) : NULL;
}
