/*
 * The server object: options, liveness and readiness, graceful stop, the
 * backend registry (built-in table plus shared objects from
 * --backend-directory) and the reaper thread that tears down model versions
 * whose last reference was dropped.
 *
 * Threads: any thread may call the public functions; the reaper thread is
 * the only one that destroys models, because the last reference is often
 * dropped on an instance thread, which cannot join itself. The core never
 * names a backend: it finds them through the table the program passes in.
 */
#include "core/core.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/sync.h"
#include "common/time.h"

typedef struct loaded_backend {
    char *name;
    void *handle;
    const imagen_backend *vtable;
} loaded_backend;

struct imagen_server {
    imagen_server_options opts; /* strings below are owned copies */
    char **repositories;
    char **startup_models;
    char *model_config_name;
    char *backend_directory;
    char *id;
    size_t cpu_threads;
    atomic_bool live;
    atomic_bool exiting;
    atomic_long inflight;
    pthread_mutex_t drain_lock;
    pthread_cond_t drain_cond;
    imagen_repository *repo;

    pthread_mutex_t backends_lock; /* guards ext_backends */
    loaded_backend *ext_backends;
    size_t n_ext_backends;

    pthread_t reaper;
    bool reaper_started;
    pthread_mutex_t reap_lock;
    pthread_cond_t reap_cond;
    imagen_model *reap_head; /* models waiting for teardown */
    bool reap_stop;
    size_t reap_busy;   /* models being destroyed right now */
    size_t live_models; /* loaded versions not yet destroyed */
};

void
imagen_server_options_init(imagen_server_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->control_mode = IMAGEN_MODEL_CONTROL_NONE;
    opts->repository_poll_secs = 15;
    opts->strict_readiness = true;
    opts->exit_on_error = true;
    opts->server_id = "triton";
    opts->model_load_thread_count = 4;
    opts->exit_timeout_secs = 30;
    static const double quantiles[] = {0.5, 0.9, 0.95, 0.99, 0.999}; /* Triton's defaults */
    opts->n_summary_quantiles = sizeof(quantiles) / sizeof(quantiles[0]);
    memcpy(opts->summary_quantiles, quantiles, sizeof(quantiles));
}

/* ---- reaper ---------------------------------------------------------------- */

static void *
reaper_main(void *arg)
{
    imagen_server *srv = arg;
    pthread_mutex_lock(&srv->reap_lock);
    for (;;) {
        while (srv->reap_head == NULL && !srv->reap_stop)
            pthread_cond_wait(&srv->reap_cond, &srv->reap_lock);
        if (srv->reap_head == NULL && srv->reap_stop)
            break;
        imagen_model *m = srv->reap_head;
        srv->reap_head = m->reap_next;
        srv->reap_busy++;
        pthread_mutex_unlock(&srv->reap_lock);
        imagen__model_destroy(m);
        pthread_mutex_lock(&srv->reap_lock);
        srv->reap_busy--;
        srv->live_models--;
        pthread_cond_broadcast(&srv->reap_cond);
    }
    pthread_mutex_unlock(&srv->reap_lock);
    return NULL;
}

void
imagen__server_model_born(imagen_server *srv)
{
    pthread_mutex_lock(&srv->reap_lock);
    srv->live_models++;
    pthread_mutex_unlock(&srv->reap_lock);
}

void
imagen__server_reap(imagen_server *srv, imagen_model *m)
{
    pthread_mutex_lock(&srv->reap_lock);
    m->reap_next = srv->reap_head;
    srv->reap_head = m;
    pthread_cond_broadcast(&srv->reap_cond);
    pthread_mutex_unlock(&srv->reap_lock);
}

/* ---- backends -------------------------------------------------------------- */

static imagen_error *
check_vtable(const imagen_backend *vt, const char *name, const char *where)
{
    if (vt == NULL || vt->abi_version < 1 || vt->abi_version > IMAGEN_BACKEND_ABI_VERSION)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "backend '%s' at %s has ABI version %u; this server "
                                "supports 1..%d",
                                name, where, vt ? vt->abi_version : 0, IMAGEN_BACKEND_ABI_VERSION);
    if (vt->name == NULL || strcmp(vt->name, name) != 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "backend library %s calls itself '%s', expected '%s'", where,
                                vt->name ? vt->name : "", name);
    if (vt->model_init == NULL || vt->execute == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "backend '%s' at %s lacks model_init or execute", name, where);
    return NULL;
}

static bool
valid_backend_name(const char *name)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > 128)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-'))
            return false;
    return true;
}

imagen_error *
imagen__server_find_backend(imagen_server *srv, const char *name, const imagen_backend **out)
{
    for (size_t i = 0; i < srv->opts.n_builtin_backends; i++) {
        const imagen_backend *b = srv->opts.builtin_backends[i];
        if (b && b->name && strcmp(b->name, name) == 0) {
            *out = b;
            return NULL;
        }
    }
    if (!valid_backend_name(name))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unknown backend '%s'", name);

    pthread_mutex_lock(&srv->backends_lock);
    for (size_t i = 0; i < srv->n_ext_backends; i++) {
        if (strcmp(srv->ext_backends[i].name, name) == 0) {
            *out = srv->ext_backends[i].vtable;
            pthread_mutex_unlock(&srv->backends_lock);
            return NULL;
        }
    }
    imagen_error *err = NULL;
    if (srv->backend_directory == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                               "unknown backend '%s': not built in, and no --backend-directory is set", name);
        goto out;
    }
    char paths[2][4096];
    snprintf(paths[0], sizeof(paths[0]), "%s/%s/libimagen_%s.so", srv->backend_directory, name, name);
    snprintf(paths[1], sizeof(paths[1]), "%s/libimagen_%s.so", srv->backend_directory, name);
    void *handle = NULL;
    const char *where = NULL;
    char dlerr[512] = "";
    for (int i = 0; i < 2 && handle == NULL; i++) {
        if (access(paths[i], F_OK) != 0)
            continue;
        handle = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
        if (handle)
            where = paths[i];
        else
            snprintf(dlerr, sizeof(dlerr), "%s", dlerror());
    }
    if (handle == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unknown backend '%s': not built in, and %s%s%s", name,
                               dlerr[0] ? "loading it failed: " : "no library at ", dlerr[0] ? dlerr : paths[0],
                               dlerr[0] ? "" : " or the backend directory root");
        goto out;
    }
    imagen_backend_entry_fn entry;
    *(void **)&entry = dlsym(handle, IMAGEN_BACKEND_ENTRY_SYMBOL);
    if (entry == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s does not export %s", where, IMAGEN_BACKEND_ENTRY_SYMBOL);
        dlclose(handle);
        goto out;
    }
    const imagen_backend *vt = entry();
    if ((err = check_vtable(vt, name, where)) != NULL) {
        dlclose(handle);
        goto out;
    }
    loaded_backend *grown = realloc(srv->ext_backends, (srv->n_ext_backends + 1) * sizeof(*grown));
    char *name_copy = strdup(name);
    if (grown == NULL || name_copy == NULL) {
        if (grown)
            srv->ext_backends = grown;
        free(name_copy);
        dlclose(handle);
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        goto out;
    }
    srv->ext_backends = grown;
    srv->ext_backends[srv->n_ext_backends++] = (loaded_backend){name_copy, handle, vt};
    imagen_log(IMAGEN_LOG_INFO, "core", "loaded backend '%s' from %s", name, where);
    *out = vt;
out:
    pthread_mutex_unlock(&srv->backends_lock);
    return err;
}

/* ---- options, create, destroy --------------------------------------------- */

static char **
copy_strings(const char *const *src, size_t n)
{
    char **dst = calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; dst && i < n; i++) {
        if ((dst[i] = strdup(src[i])) == NULL) {
            for (size_t k = 0; k < i; k++)
                free(dst[k]);
            free(dst);
            return NULL;
        }
    }
    return dst;
}

static void
free_strings(char **s, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        free(s[i]);
    free(s);
}

const imagen_server_options *
imagen__server_options(const imagen_server *srv)
{
    return &srv->opts;
}

size_t
imagen__server_cpu_threads(const imagen_server *srv)
{
    return srv->cpu_threads;
}

imagen_repository *
imagen__server_repository(imagen_server *srv)
{
    return srv->repo;
}

bool
imagen__server_accepting(imagen_server *srv)
{
    return !atomic_load(&srv->exiting);
}

void
imagen__server_inflight_add(imagen_server *srv, long delta)
{
    long now = atomic_fetch_add(&srv->inflight, delta) + delta;
    if (now == 0 && atomic_load(&srv->exiting)) {
        pthread_mutex_lock(&srv->drain_lock);
        pthread_cond_broadcast(&srv->drain_cond);
        pthread_mutex_unlock(&srv->drain_lock);
    }
}

imagen_error *
imagen_server_create(const imagen_server_options *opts, imagen_server **out)
{
    if (opts->n_model_repositories == 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "at least one model repository is required");
    if (opts->control_mode == IMAGEN_MODEL_CONTROL_POLL && opts->repository_poll_secs <= 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "repository poll interval must be > 0 seconds");
    imagen_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    srv->opts = *opts;
    srv->repositories = copy_strings(opts->model_repositories, opts->n_model_repositories);
    srv->startup_models = copy_strings(opts->startup_models, opts->n_startup_models);
    srv->id = strdup(opts->server_id ? opts->server_id : "triton");
    srv->model_config_name = opts->model_config_name ? strdup(opts->model_config_name) : NULL;
    srv->backend_directory = opts->backend_directory ? strdup(opts->backend_directory) : NULL;
    srv->opts.model_repositories = (const char *const *)srv->repositories;
    srv->opts.startup_models = (const char *const *)srv->startup_models;
    srv->opts.model_config_name = srv->model_config_name;
    srv->opts.backend_directory = srv->backend_directory;
    srv->opts.server_id = srv->id;
    if (srv->opts.model_load_thread_count <= 0)
        srv->opts.model_load_thread_count = 1;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    srv->cpu_threads = opts->cpu_threads > 0 ? (size_t)opts->cpu_threads : (size_t)(cores > 0 ? cores : 1);
    pthread_mutex_init(&srv->drain_lock, NULL);
    imagen_cond_init_monotonic(&srv->drain_cond);
    pthread_mutex_init(&srv->backends_lock, NULL);
    pthread_mutex_init(&srv->reap_lock, NULL);
    pthread_cond_init(&srv->reap_cond, NULL);
    atomic_init(&srv->live, false);
    atomic_init(&srv->exiting, false);
    atomic_init(&srv->inflight, 0);

    imagen_error *err = NULL;
    if (!srv->repositories || !srv->startup_models || !srv->id ||
        (opts->model_config_name && !srv->model_config_name) || (opts->backend_directory && !srv->backend_directory))
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    else if (pthread_create(&srv->reaper, NULL, reaper_main, srv) != 0)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot start the reaper thread");
    else
        srv->reaper_started = true;
    if (!err)
        err = imagen__repository_create(srv, &srv->repo);
    if (!err) {
        /* Live as soon as initialisation is under way, as Triton: a client
         * can watch models load through the repository index. */
        atomic_store(&srv->live, true);
        err = imagen__repository_start(srv->repo);
    }
    if (err) {
        imagen_server_destroy(srv);
        return err;
    }
    *out = srv;
    return NULL;
}

size_t
imagen_server_stop(imagen_server *srv)
{
    atomic_store(&srv->exiting, true);
    uint64_t deadline = imagen_time_now_ns() +
                        (uint64_t)(srv->opts.exit_timeout_secs > 0 ? srv->opts.exit_timeout_secs : 0) * 1000000000u;
    pthread_mutex_lock(&srv->drain_lock);
    while (atomic_load(&srv->inflight) > 0) {
        if (imagen_cond_wait_until(&srv->drain_cond, &srv->drain_lock, deadline) != 0 &&
            imagen_time_now_ns() >= deadline)
            break;
    }
    pthread_mutex_unlock(&srv->drain_lock);
    long left = atomic_load(&srv->inflight);
    if (left > 0)
        imagen_log(IMAGEN_LOG_WARNING, "core", "exit timeout: %ld inference request(s) still in flight", left);
    return left > 0 ? (size_t)left : 0;
}

void
imagen_server_destroy(imagen_server *srv)
{
    if (srv == NULL)
        return;
    atomic_store(&srv->exiting, true);
    if (srv->repo) {
        imagen__repository_shutdown(srv->repo);
    }
    if (srv->reaper_started) {
        pthread_mutex_lock(&srv->reap_lock);
        /* Every model must be torn down before the reaper stops: a request
         * or model reference still held elsewhere (an instance thread just
         * finishing a response) drops the last reference moments later. */
        while (srv->live_models > 0)
            pthread_cond_wait(&srv->reap_cond, &srv->reap_lock);
        srv->reap_stop = true;
        pthread_cond_broadcast(&srv->reap_cond);
        pthread_mutex_unlock(&srv->reap_lock);
        pthread_join(srv->reaper, NULL);
    }
    imagen__repository_destroy(srv->repo);
    for (size_t i = 0; i < srv->n_ext_backends; i++) {
        /* Leave the library mapped under sanitizers so leak reports can
         * still symbolize its frames. */
        if (getenv("IMAGEN_KEEP_BACKENDS_MAPPED") == NULL)
            dlclose(srv->ext_backends[i].handle);
        free(srv->ext_backends[i].name);
    }
    free(srv->ext_backends);
    pthread_mutex_destroy(&srv->drain_lock);
    pthread_cond_destroy(&srv->drain_cond);
    pthread_mutex_destroy(&srv->backends_lock);
    pthread_mutex_destroy(&srv->reap_lock);
    pthread_cond_destroy(&srv->reap_cond);
    free_strings(srv->repositories, srv->opts.n_model_repositories);
    free_strings(srv->startup_models, srv->opts.n_startup_models);
    free(srv->model_config_name);
    free(srv->backend_directory);
    free(srv->id);
    free(srv);
}

bool
imagen_server_is_live(imagen_server *srv)
{
    return atomic_load(&srv->live) && !atomic_load(&srv->exiting);
}

bool
imagen_server_is_exiting(imagen_server *srv)
{
    return atomic_load(&srv->exiting);
}

bool
imagen_server_is_ready(imagen_server *srv)
{
    if (!imagen_server_is_live(srv))
        return false;
    if (!srv->opts.strict_readiness)
        return true;
    return imagen__repository_all_ready(srv->repo);
}

const char *
imagen_server_id(const imagen_server *srv)
{
    return srv->id;
}

size_t
imagen_server_inflight_count(imagen_server *srv)
{
    long n = atomic_load(&srv->inflight);
    return n > 0 ? (size_t)n : 0;
}
