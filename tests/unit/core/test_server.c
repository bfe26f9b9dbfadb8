/*
 * In-process tests of the core through include/imagen/server.h only: a
 * repository written by the test, a backend defined here (registered as a
 * built-in), requests submitted with imagen_server_infer_async.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imagen/backend.h"
#include "imagen/server.h"
#include "test.h"

/* ---- a backend that doubles INT32 inputs and records batch sizes ---------- */

static atomic_int executions;
static atomic_int max_batch_seen;

static imagen_error *
double_model_init(imagen_backend_model *model, void **state)
{
    *state = NULL;
    const char *fail = imagen_backend_model_parameter(model, "fail_init");
    if (fail && strcmp(fail, "true") == 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "model '%s' asked to fail", imagen_backend_model_name(model));
    return NULL;
}

static void
double_execute(void *model_state, void *instance_state, imagen_request **reqs, size_t n)
{
    atomic_fetch_add(&executions, 1);
    int seen = atomic_load(&max_batch_seen);
    if ((int)n > seen)
        atomic_store(&max_batch_seen, (int)n);
    for (size_t i = 0; i < n; i++) {
        const imagen_tensor *in = imagen_backend_request_input_by_name(reqs[i], "INPUT0");
        void *out = NULL;
        imagen_error *err =
            imagen_backend_output_alloc(reqs[i], "OUTPUT0", in->datatype, in->shape, in->rank, in->byte_size, &out);
        if (err) {
            imagen_backend_request_fail(reqs[i], err);
            continue;
        }
        const int32_t *src = in->data;
        int32_t *dst = out;
        for (size_t k = 0; k < in->byte_size / 4; k++)
            dst[k] = src[k] * 2;
    }
}

static const imagen_backend double_backend = {
    .abi_version = IMAGEN_BACKEND_ABI_VERSION,
    .name = "double",
    .model_init = double_model_init,
    .execute = double_execute,
};

/* The same work from a backend that lets execute run on any thread; it
 * counts the executions that ran on the thread that submitted (inline), and
 * sleeps `sleep_us` (model parameter) per execution when asked. */
static pthread_t submitter;
static atomic_int inline_runs;

static imagen_error *
any_model_init(imagen_backend_model *model, void **state)
{
    const char *us = imagen_backend_model_parameter(model, "sleep_us");
    *state = (void *)(intptr_t)(us != NULL ? atoi(us) : 0);
    return NULL;
}

static void
any_execute(void *model_state, void *instance_state, imagen_request **reqs, size_t n)
{
    if (pthread_equal(pthread_self(), submitter))
        atomic_fetch_add(&inline_runs, 1);
    int sleep_us = (int)(intptr_t)model_state;
    if (sleep_us > 0)
        usleep((useconds_t)sleep_us);
    double_execute(NULL, instance_state, reqs, n);
}

static const imagen_backend any_thread_backend = {
    .abi_version = IMAGEN_BACKEND_ABI_VERSION,
    .name = "double_any_thread",
    .model_init = any_model_init,
    .execute = any_execute,
    .flags = IMAGEN_BACKEND_EXECUTE_ANY_THREAD,
};
static const imagen_backend *const backends[] = {&double_backend, &any_thread_backend};

/* ---- helpers ---------------------------------------------------------------- */

static char repo_dir[256];

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void
write_model_of(const char *name, const char *backend, const char *extra_config)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", repo_dir, name);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/%s/1", repo_dir, name);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/%s/config.pbtxt", repo_dir, name);
    char text[2048];
    snprintf(text, sizeof(text),
             "backend: \"%s\"\nmax_batch_size: 8\n"
             "input [ { name: \"INPUT0\" data_type: TYPE_INT32 dims: [ 4 ] } ]\n"
             "output [ { name: \"OUTPUT0\" data_type: TYPE_INT32 dims: [ 4 ] } ]\n%s\n",
             backend, extra_config);
    write_file(path, text);
}

static void
write_model(const char *name, const char *extra_config)
{
    write_model_of(name, "double", extra_config);
}

static imagen_server *
start_server(imagen_model_control_mode mode, bool exit_on_error)
{
    const char *repos[] = {repo_dir};
    imagen_server_options o;
    imagen_server_options_init(&o);
    o.model_repositories = repos;
    o.n_model_repositories = 1;
    o.control_mode = mode;
    o.exit_on_error = exit_on_error;
    o.builtin_backends = backends;
    o.n_builtin_backends = sizeof(backends) / sizeof(backends[0]);
    imagen_server *srv = NULL;
    imagen_error *err = imagen_server_create(&o, &srv);
    if (err) {
        fprintf(stderr, "server create: %s\n", imagen_error_message(err));
        imagen_error_free(err);
        return NULL;
    }
    return srv;
}

typedef struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pending;
    int ok;
    int failed;
    int32_t last_value;
} waiter;

static void
on_response(imagen_response *resp, void *user_data)
{
    waiter *w = user_data;
    pthread_mutex_lock(&w->lock);
    if (imagen_response_error(resp) == NULL) {
        w->ok++;
        const imagen_tensor *t = imagen_response_output(resp, 0);
        if (t && t->byte_size >= 4)
            memcpy(&w->last_value, t->data, 4);
    } else {
        w->failed++;
    }
    w->pending--;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    imagen_response_free(resp);
}

static imagen_error *
submit(imagen_server *srv, const char *model, const int32_t *data, waiter *w, imagen_request **out)
{
    imagen_request *req = NULL;
    IMAGEN_RETURN_IF_ERROR(imagen_request_new(srv, model, -1, &req));
    int64_t shape[] = {1, 4};
    imagen_error *err = imagen_request_add_input(req, "INPUT0", IMAGEN_TYPE_INT32, shape, 2, data, 16);
    if (!err) {
        pthread_mutex_lock(&w->lock);
        w->pending++;
        pthread_mutex_unlock(&w->lock);
        err = imagen_server_infer_async(srv, req, on_response, w);
        if (err) {
            pthread_mutex_lock(&w->lock);
            w->pending--;
            pthread_mutex_unlock(&w->lock);
        }
    }
    if (out && !err)
        *out = req;
    else
        imagen_request_release(req);
    return err;
}

static void
wait_all(waiter *w)
{
    pthread_mutex_lock(&w->lock);
    while (w->pending > 0)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

static void
make_repo(void)
{
    snprintf(repo_dir, sizeof(repo_dir), "/tmp/imagen-core-test-XXXXXX");
    if (mkdtemp(repo_dir) == NULL)
        abort();
}

static void
remove_repo(void)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", repo_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", repo_dir);
}

/* ---- tests ------------------------------------------------------------------ */

static void
test_infer_round_trip_and_statistics(void)
{
    make_repo();
    write_model("double", "");
    imagen_server *srv = start_server(IMAGEN_MODEL_CONTROL_NONE, true);
    CHECK(srv != NULL);
    if (!srv)
        return;
    CHECK(imagen_server_is_ready(srv));
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0};
    int32_t data[4] = {21, 1, 2, 3};
    for (int i = 0; i < 5; i++)
        CHECK_OK(submit(srv, "double", data, &w, NULL));
    wait_all(&w);
    CHECK_INT_EQ(w.ok, 5);
    CHECK_INT_EQ(w.last_value, 42);

    imagen_model_stats *st = NULL;
    size_t n = 0;
    CHECK_OK(imagen_server_model_statistics(srv, "double", -1, &st, &n));
    CHECK_INT_EQ(n, 1);
    if (n == 1) {
        CHECK_INT_EQ(st[0].success.count, 5);
        CHECK_INT_EQ(st[0].queue.count, 5);
        CHECK_INT_EQ(st[0].inference_count, 5);
        CHECK(st[0].execution_count >= 1 && st[0].execution_count <= 5);
        CHECK(st[0].success.ns > 0);
        CHECK_INT_EQ(st[0].pending_requests, 0);
    }
    imagen_model_stats_free(st, n);
    imagen_server_destroy(srv);
    remove_repo();
}

static void
test_unknown_model_and_bad_input_errors(void)
{
    make_repo();
    write_model("double", "");
    imagen_server *srv = start_server(IMAGEN_MODEL_CONTROL_NONE, true);
    CHECK(srv != NULL);
    if (!srv)
        return;
    imagen_request *req = NULL;
    CHECK_ERR(imagen_request_new(srv, "nope", -1, &req), IMAGEN_ERR_INVALID_ARG,
              "Request for unknown model: 'nope' is not found");
    CHECK_ERR(imagen_request_new(srv, "double", 7, &req), IMAGEN_ERR_NOT_FOUND, "version 7 is not found");
    CHECK_OK(imagen_request_new(srv, "double", -1, &req));
    int32_t data[5] = {0};
    int64_t bad_shape[] = {1, 5};
    CHECK_ERR(imagen_request_add_input(req, "INPUT0", IMAGEN_TYPE_INT32, bad_shape, 2, data, 20),
              IMAGEN_ERR_INVALID_ARG, "unexpected shape for input 'INPUT0'");
    int64_t shape[] = {1, 4};
    CHECK_ERR(imagen_request_add_input(req, "INPUT0", IMAGEN_TYPE_FP32, shape, 2, data, 16), IMAGEN_ERR_INVALID_ARG,
              "data-type is 'FP32', but model 'double' expects 'INT32'");
    CHECK_ERR(imagen_request_add_input(req, "INPUT0", IMAGEN_TYPE_INT32, shape, 2, data, 12), IMAGEN_ERR_INVALID_ARG,
              "unexpected total byte size 12");
    int64_t big_batch[] = {9, 4};
    CHECK_ERR(imagen_request_add_input(req, "INPUT0", IMAGEN_TYPE_INT32, big_batch, 2, data, 144),
              IMAGEN_ERR_INVALID_ARG, "batch-size must be <= 8");
    CHECK_ERR(imagen_request_add_input(req, "NOPE", IMAGEN_TYPE_INT32, shape, 2, data, 16), IMAGEN_ERR_INVALID_ARG,
              "unexpected inference input 'NOPE'");
    CHECK_ERR(imagen_server_infer_async(srv, req, on_response, NULL), IMAGEN_ERR_INVALID_ARG,
              "Missing required input(s) 'INPUT0'");
    imagen_request_release(req);
    imagen_server_destroy(srv);
    remove_repo();
}

static void
test_failed_model_is_listed_with_reason(void)
{
    make_repo();
    write_model("good", "");
    write_model("bad", "parameters { key: \"fail_init\" value: { string_value: \"true\" } }");
    imagen_server *srv = start_server(IMAGEN_MODEL_CONTROL_NONE, false);
    CHECK(srv != NULL);
    if (!srv)
        return;
    CHECK(!imagen_server_is_ready(srv)); /* strict readiness */
    CHECK(imagen_server_model_is_ready(srv, "good", -1));
    imagen_repository_entry *rows = NULL;
    size_t n = 0;
    CHECK_OK(imagen_server_repository_index(srv, false, &rows, &n));
    CHECK_INT_EQ(n, 2);
    if (n == 2) {
        CHECK_STR_EQ(rows[0].name, "bad");
        CHECK_STR_EQ(rows[0].state, "UNAVAILABLE");
        CHECK(strstr(rows[0].reason, "asked to fail") != NULL);
        CHECK_STR_EQ(rows[1].name, "good");
        CHECK_STR_EQ(rows[1].state, "READY");
    }
    imagen_repository_index_free(rows, n);
    imagen_server_destroy(srv);
    remove_repo();
}

static void
test_exit_on_error_fails_creation(void)
{
    make_repo();
    write_model("bad", "parameters { key: \"fail_init\" value: { string_value: \"true\" } }");
    imagen_server *srv = start_server(IMAGEN_MODEL_CONTROL_NONE, true);
    CHECK(srv == NULL);
    imagen_server_destroy(srv);
    remove_repo();
}

static void
test_explicit_load_unload_and_mode_rules(void)
{
    make_repo();
    write_model("double", "");
    imagen_server *srv = start_server(IMAGEN_MODEL_CONTROL_EXPLICIT, true);
    CHECK(srv != NULL);
    if (!srv)
        return;
    CHECK(!imagen_server_model_is_ready(srv, "double", -1));
    CHECK_OK(imagen_server_model_load(srv, "double", NULL, NULL, 0));
    CHECK(imagen_server_model_is_ready(srv, "double", 1));
    CHECK_OK(imagen_server_model_unload(srv, "double", false));
    CHECK(!imagen_server_model_is_ready(srv, "double", -1));
    imagen_repository_entry *rows = NULL;
    size_t n = 0;
    CHECK_OK(imagen_server_repository_index(srv, false, &rows, &n));
    CHECK_INT_EQ(n, 1);
    if (n == 1) {
        CHECK_STR_EQ(rows[0].state, "UNAVAILABLE");
        CHECK_STR_EQ(rows[0].reason, "unloaded");
    }
    imagen_repository_index_free(rows, n);
    CHECK_ERR(imagen_server_model_load(srv, "../etc", NULL, NULL, 0), IMAGEN_ERR_INVALID_ARG, "invalid model name");
    imagen_server_destroy(srv);

    srv = start_server(IMAGEN_MODEL_CONTROL_NONE, true);
    CHECK(srv != NULL);
    if (srv)
        CHECK_ERR(imagen_server_model_load(srv, "double", NULL, NULL, 0), IMAGEN_ERR_UNAVAILABLE,
                  "not allowed if polling is enabled");
    imagen_server_destroy(srv);
    remove_repo();
}

static void
test_reload_keeps_in_flight_requests(void)
{
    make_repo();
    write_model("double", "");
    imagen_server *srv = start_server(IMAGEN_MODEL_CONTROL_EXPLICIT, true);
    CHECK(srv != NULL);
    if (!srv)
        return;
    CHECK_OK(imagen_server_model_load(srv, "double", NULL, NULL, 0));
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0};
    int32_t data[4] = {1, 2, 3, 4};
    for (int i = 0; i < 50; i++) {
        CHECK_OK(submit(srv, "double", data, &w, NULL));
        if (i == 25)
            CHECK_OK(imagen_server_model_load(srv, "double", NULL, NULL, 0)); /* reload */
    }
    wait_all(&w);
    CHECK_INT_EQ(w.ok, 50);
    CHECK_INT_EQ(w.failed, 0);
    imagen_server_destroy(srv);
    remove_repo();
}

static void
test_delay_scheduler_forms_exact_batch(void)
{
    make_repo();
    write_model("double", "dynamic_batching { }");
    setenv("IMAGEN_DELAY_SCHEDULER", "6", 1);
    imagen_server *srv = start_server(IMAGEN_MODEL_CONTROL_NONE, true);
    unsetenv("IMAGEN_DELAY_SCHEDULER");
    CHECK(srv != NULL);
    if (!srv)
        return;
    atomic_store(&executions, 0);
    atomic_store(&max_batch_seen, 0);
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0};
    int32_t data[4] = {1, 2, 3, 4};
    for (int i = 0; i < 6; i++)
        CHECK_OK(submit(srv, "double", data, &w, NULL));
    wait_all(&w);
    CHECK_INT_EQ(w.ok, 6);
    CHECK_INT_EQ(atomic_load(&executions), 1);
    CHECK_INT_EQ(atomic_load(&max_batch_seen), 6);
    imagen_model_stats *st = NULL;
    size_t n = 0;
    CHECK_OK(imagen_server_model_statistics(srv, "double", 1, &st, &n));
    if (n == 1) {
        CHECK_INT_EQ(st[0].execution_count, 1);
        CHECK_INT_EQ(st[0].n_batch_stats, 1);
        if (st[0].n_batch_stats == 1)
            CHECK_INT_EQ(st[0].batch_stats[0].batch_size, 6);
    }
    imagen_model_stats_free(st, n);
    imagen_server_destroy(srv);
    remove_repo();
}

static int
submit_with_shape_tensor(imagen_server *srv, int32_t shape_value, waiter *w)
{
    imagen_request *req = NULL;
    imagen_error *err = imagen_request_new(srv, "shaped", -1, &req);
    static const int32_t data[4] = {1, 2, 3, 4};
    int32_t value = shape_value;
    int64_t shape[] = {1, 4}, sshape[] = {1, 1};
    if (!err)
        err = imagen_request_add_input(req, "INPUT0", IMAGEN_TYPE_INT32, shape, 2, data, 16);
    if (!err)
        err = imagen_request_add_input(req, "SHAPE", IMAGEN_TYPE_INT32, sshape, 2, &value, 4);
    if (!err) {
        pthread_mutex_lock(&w->lock);
        w->pending++;
        pthread_mutex_unlock(&w->lock);
        err = imagen_server_infer_async(srv, req, on_response, w);
    }
    int ok = err == NULL;
    if (err) {
        fprintf(stderr, "submit: %s\n", imagen_error_message(err));
        imagen_error_free(err);
    }
    imagen_request_release(req);
    return ok;
}

static void
test_shape_tensor_values_split_batches(void)
{
    /* The shape tensor's values, not only its dims, decide who may share a
     * batch: 1,1,2,2 queued together execute as two batches of two. The
     * value is copied into the request's signature at submission, so the
     * caller's variable may change afterwards. */
    make_repo();
    write_model("shaped", "input [ { name: \"SHAPE\" data_type: TYPE_INT32 dims: [ 1 ] is_shape_tensor: true } ]\n"
                          "dynamic_batching { }");
    setenv("IMAGEN_DELAY_SCHEDULER", "4", 1);
    imagen_server *srv = start_server(IMAGEN_MODEL_CONTROL_NONE, true);
    unsetenv("IMAGEN_DELAY_SCHEDULER");
    CHECK(srv != NULL);
    if (!srv)
        return;
    atomic_store(&executions, 0);
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0};
    int32_t values[4] = {1, 1, 2, 2};
    for (int i = 0; i < 4; i++)
        CHECK(submit_with_shape_tensor(srv, values[i], &w));
    wait_all(&w);
    CHECK_INT_EQ(w.ok, 4);
    CHECK_INT_EQ(atomic_load(&executions), 2);
    imagen_server_destroy(srv);
    remove_repo();
}

static void
test_stop_rejects_new_requests(void)
{
    make_repo();
    write_model("double", "");
    imagen_server *srv = start_server(IMAGEN_MODEL_CONTROL_NONE, true);
    CHECK(srv != NULL);
    if (!srv)
        return;
    CHECK_INT_EQ(imagen_server_stop(srv), 0);
    CHECK(!imagen_server_is_live(srv));
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0};
    int32_t data[4] = {0};
    CHECK_ERR(submit(srv, "double", data, &w, NULL), IMAGEN_ERR_UNAVAILABLE, "Server exiting");
    imagen_server_destroy(srv);
    remove_repo();
}

/* Requests of a short model whose backend allows it run on the submitting
 * thread once the model has shown it is short (16 executions), with the
 * same results and statistics; never when the batcher would have done
 * something else with them (a queue delay, ordering to keep), for a model
 * that takes long, or for a backend that did not allow it. */
static int
inline_runs_after(imagen_server *srv, const char *model, int n_requests)
{
    atomic_store(&inline_runs, 0);
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0};
    for (int i = 0; i < n_requests; i++) {
        int32_t data[4] = {i, 1, 2, 3};
        CHECK_OK(submit(srv, model, data, &w, NULL));
        wait_all(&w);
        CHECK_INT_EQ(w.last_value, 2 * i);
    }
    CHECK_INT_EQ(w.ok, n_requests);
    return atomic_load(&inline_runs);
}

static void
test_short_models_run_inline_when_nothing_changes(void)
{
    make_repo();
    const char *any = "double_any_thread";
    write_model("plain", "");
    write_model_of("fast", any, "");
    write_model_of("fast_greedy", any, "dynamic_batching { }");
    write_model_of("fast_delayed", any, "dynamic_batching { max_queue_delay_microseconds: 100 }");
    write_model_of("fast_ordered", any, "dynamic_batching { preserve_ordering: true }");
    write_model_of("slow", any, "parameters { key: \"sleep_us\" value: { string_value: \"200\" } }");
    char path[512];
    snprintf(path, sizeof path, "%s/fast_wide", repo_dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/fast_wide/1", repo_dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/fast_wide/config.pbtxt", repo_dir);
    write_file(path, "backend: \"double_any_thread\"\nmax_batch_size: 8\n"
                     "input [ { name: \"INPUT0\" data_type: TYPE_INT32 dims: [ -1 ] } ]\n"
                     "output [ { name: \"OUTPUT0\" data_type: TYPE_INT32 dims: [ -1 ] } ]\n");
    submitter = pthread_self();
    imagen_server *srv = start_server(IMAGEN_MODEL_CONTROL_NONE, true);
    CHECK(srv != NULL);
    if (!srv)
        return;
    /* At least one: a loaded machine may stretch an execution past the
     * limit now and then, and the model is then left to its thread. */
    CHECK(inline_runs_after(srv, "fast", 40) >= 1);
    CHECK(inline_runs_after(srv, "fast_greedy", 40) >= 1);
    CHECK_INT_EQ(inline_runs_after(srv, "fast_delayed", 40), 0);
    CHECK_INT_EQ(inline_runs_after(srv, "fast_ordered", 40), 0);
    CHECK_INT_EQ(inline_runs_after(srv, "slow", 40), 0);
    /* A large request of a model warmed by small ones goes to the instance
     * thread all the same: 8192 INT32s are 32 KiB, over the 16 KiB limit. */
    CHECK(inline_runs_after(srv, "fast_wide", 40) >= 1);
    atomic_store(&inline_runs, 0);
    {
        enum { BIG = 8192 };
        int32_t *big = calloc(BIG, sizeof *big);
        imagen_request *req = NULL;
        CHECK_OK(imagen_request_new(srv, "fast_wide", -1, &req));
        int64_t shape[] = {1, BIG};
        waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 1, 0, 0, 0};
        if (big != NULL && req != NULL) {
            CHECK_OK(imagen_request_add_input(req, "INPUT0", IMAGEN_TYPE_INT32, shape, 2, big, BIG * sizeof *big));
            CHECK_OK(imagen_server_infer_async(srv, req, on_response, &w));
            wait_all(&w);
            CHECK_INT_EQ(w.ok, 1);
        }
        imagen_request_release(req);
        free(big);
    }
    CHECK_INT_EQ(atomic_load(&inline_runs), 0);
    /* The plain backend's executions never count: it has no flag. */
    int before = atomic_load(&executions);
    inline_runs_after(srv, "plain", 40);
    CHECK_INT_EQ(atomic_load(&executions) - before, 40);
    /* Statistics count inline executions like the others. */
    imagen_model_stats *st = NULL;
    size_t n = 0;
    CHECK_OK(imagen_server_model_statistics(srv, "fast", -1, &st, &n));
    CHECK_INT_EQ(n, 1);
    if (n == 1) {
        CHECK_INT_EQ(st[0].execution_count, 40);
        CHECK_INT_EQ(st[0].inference_count, 40);
        CHECK_INT_EQ(st[0].success.count, 40);
        CHECK_INT_EQ(st[0].pending_requests, 0);
    }
    imagen_model_stats_free(st, n);
    imagen_server_destroy(srv);
    remove_repo();
}

int
main(void)
{
    RUN(test_infer_round_trip_and_statistics);
    RUN(test_unknown_model_and_bad_input_errors);
    RUN(test_failed_model_is_listed_with_reason);
    RUN(test_exit_on_error_fails_creation);
    RUN(test_explicit_load_unload_and_mode_rules);
    RUN(test_reload_keeps_in_flight_requests);
    RUN(test_delay_scheduler_forms_exact_batch);
    RUN(test_shape_tensor_values_split_batches);
    RUN(test_stop_rejects_new_requests);
    RUN(test_short_models_run_inline_when_nothing_changes);
    TEST_MAIN_END();
}
