/*
 * imagen-bench-imageops: times one image operation in-process, through the
 * same core request path the frontends use (imagen_server_infer_async on a
 * server built from a model repository), without sockets, so the figure is
 * the operation's own speed.
 *
 *   imagen-bench-imageops --repository models --model upscale --image in.ppm
 *                         [--input SCALE=4] [--runs 5] [--memory] [--out out.ppm]
 *
 * Prints one line of key=value pairs: the median seconds of `runs` timed
 * executions (after one warm-up), megapixels of output per second, and with
 * --memory the peak working memory of one cold execution: the rise of the
 * process's peak resident size (VmHWM, reset through /proc/self/clear_refs)
 * over its resident size just before the request, minus the output bytes
 * the response holds. --memory runs exactly one request in this process, so
 * no allocator cache from earlier runs hides the cost; big allocations are
 * forced onto mmap so every byte the operation touches shows up as resident.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/registry.h"
#include "imagen/server.h"

#define MAX_CONTROLS 4

typedef struct control {
    char name[32];
    char value[64];
} control;

typedef struct done_signal {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    imagen_response *resp;
} done_signal;

static void
on_response(imagen_response *resp, void *user)
{
    done_signal *d = user;
    pthread_mutex_lock(&d->mu);
    d->resp = resp;
    d->done = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Binary PPM (P6, maxval 255) → RGB bytes. */
static uint8_t *
read_ppm(const char *path, size_t *w, size_t *h)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "imagen-bench-imageops: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    unsigned long width, height, maxval;
    uint8_t *px = NULL;
    if (fscanf(f, "P6 %lu %lu %lu", &width, &height, &maxval) == 3 && maxval == 255 && fgetc(f) != EOF && width > 0 &&
        height > 0 && width < 65536 && height < 65536) {
        px = malloc(width * height * 3);
        if (px != NULL && fread(px, 1, width * height * 3, f) != width * height * 3) {
            free(px);
            px = NULL;
        }
    }
    fclose(f);
    if (px == NULL)
        fprintf(stderr, "imagen-bench-imageops: %s: not a binary PPM (P6, maxval 255)\n", path);
    *w = width;
    *h = height;
    return px;
}

static long
status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = strtol(line + n + 1, NULL, 10);
    if (f != NULL)
        fclose(f);
    return v;
}

static bool
reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f == NULL)
        return false;
    bool ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

/* One request; returns the response (caller frees) or NULL after printing. */
static imagen_response *
infer_once(imagen_server *srv, const char *model, const uint8_t *px, size_t w, size_t h, const control *controls,
           size_t n_controls, const void *control_data)
{
    imagen_request *req = NULL;
    imagen_error *err = imagen_request_new(srv, model, -1, &req);
    int64_t shape[4] = {1, (int64_t)h, (int64_t)w, 3};
    if (err == NULL)
        err = imagen_request_add_input(req, "IMAGE", IMAGEN_TYPE_UINT8, shape, 4, px, w * h * 3);
    const uint8_t *cd = control_data;
    for (size_t i = 0; err == NULL && i < n_controls; i++) {
        const char *v = controls[i].value;
        int64_t cshape[2] = {1, 1};
        bool is_float = strpbrk(v, ".eE") != NULL;
        bool is_64 = strcmp(controls[i].name, "SEED") == 0;
        err = imagen_request_add_input(req, controls[i].name,
                                       is_float ? IMAGEN_TYPE_FP32 : (is_64 ? IMAGEN_TYPE_INT64 : IMAGEN_TYPE_INT32),
                                       cshape, 2, cd + 8 * i, is_64 ? 8 : 4);
    }
    done_signal d = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    if (err == NULL)
        err = imagen_server_infer_async(srv, req, on_response, &d);
    if (err != NULL) {
        fprintf(stderr, "imagen-bench-imageops: %s\n", imagen_error_message(err));
        imagen_error_free(err);
        imagen_request_release(req);
        return NULL;
    }
    pthread_mutex_lock(&d.mu);
    while (!d.done)
        pthread_cond_wait(&d.cv, &d.mu);
    pthread_mutex_unlock(&d.mu);
    imagen_request_release(req);
    const imagen_error *rerr = imagen_response_error(d.resp);
    if (rerr != NULL) {
        fprintf(stderr, "imagen-bench-imageops: %s\n", imagen_error_message(rerr));
        imagen_response_free(d.resp);
        return NULL;
    }
    return d.resp;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void
usage(void)
{
    fprintf(stderr, "usage: imagen-bench-imageops --repository DIR --model NAME --image IN.ppm\n"
                    "       [--input NAME=VALUE]... [--runs N] [--memory] [--out OUT.ppm]\n");
}

int
main(int argc, char **argv)
{
    const char *repo = "models", *model = NULL, *image = NULL, *out_path = NULL;
    control controls[MAX_CONTROLS];
    size_t n_controls = 0;
    int runs = 5;
    bool memory = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--memory") == 0) {
            memory = true;
            continue;
        }
        if (v == NULL) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(a, "--repository") == 0)
            repo = v;
        else if (strcmp(a, "--model") == 0)
            model = v;
        else if (strcmp(a, "--image") == 0)
            image = v;
        else if (strcmp(a, "--out") == 0)
            out_path = v;
        else if (strcmp(a, "--runs") == 0)
            runs = atoi(v);
        else if (strcmp(a, "--input") == 0 && n_controls < MAX_CONTROLS && strchr(v, '=') != NULL &&
                 strchr(v, '=') - v < 32) {
            size_t n = (size_t)(strchr(v, '=') - v);
            memcpy(controls[n_controls].name, v, n);
            controls[n_controls].name[n] = '\0';
            snprintf(controls[n_controls].value, sizeof(controls[n_controls].value), "%s", v + n + 1);
            n_controls++;
        } else {
            usage();
            return 2;
        }
    }
    if (model == NULL || image == NULL || runs < 1) {
        usage();
        return 2;
    }
    /* Fixed mmap threshold: buffers of 128 KiB and more come from mmap and
     * go back to the kernel on free, so resident size tracks live memory. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);

    size_t w, h;
    uint8_t *px = read_ppm(image, &w, &h);
    if (px == NULL)
        return 1;
    uint8_t control_data[8 * MAX_CONTROLS];
    for (size_t i = 0; i < n_controls; i++) {
        const char *v = controls[i].value;
        if (strpbrk(v, ".eE") != NULL) {
            float f = strtof(v, NULL);
            memcpy(control_data + 8 * i, &f, 4);
        } else if (strcmp(controls[i].name, "SEED") == 0) {
            int64_t x = strtoll(v, NULL, 10);
            memcpy(control_data + 8 * i, &x, 8);
        } else {
            int32_t x = (int32_t)strtol(v, NULL, 10);
            memcpy(control_data + 8 * i, &x, 4);
        }
    }

    imagen_server_options opts;
    imagen_server_options_init(&opts);
    const char *repos[1] = {repo};
    const char *load[1] = {model};
    opts.model_repositories = repos;
    opts.n_model_repositories = 1;
    opts.control_mode = IMAGEN_MODEL_CONTROL_EXPLICIT;
    opts.startup_models = load;
    opts.n_startup_models = 1;
    opts.builtin_backends = imagen_builtin_backends;
    opts.n_builtin_backends = imagen_builtin_backend_count;
    imagen_server *srv = NULL;
    imagen_error *err = imagen_server_create(&opts, &srv);
    if (err != NULL) {
        fprintf(stderr, "imagen-bench-imageops: %s\n", imagen_error_message(err));
        imagen_error_free(err);
        free(px);
        return 1;
    }

    int rc = 0;
    size_t out_w = 0, out_h = 0, out_bytes = 0;
    if (memory) {
        long before = status_kib("VmRSS");
        if (!reset_peak_rss()) {
            fprintf(stderr, "imagen-bench-imageops: cannot reset the peak RSS (/proc/self/clear_refs)\n");
            rc = 1;
        }
        imagen_response *resp = rc == 0 ? infer_once(srv, model, px, w, h, controls, n_controls, control_data) : NULL;
        long peak = status_kib("VmHWM");
        if (resp == NULL) {
            rc = 1;
        } else {
            const imagen_tensor *t = imagen_response_output(resp, 0);
            for (size_t i = 0; i < imagen_response_output_count(resp); i++)
                out_bytes += imagen_response_output(resp, i)->byte_size;
            out_h = (size_t)t->shape[1];
            out_w = (size_t)t->shape[2];
            double working = (double)(peak - before) * 1024.0 - (double)out_bytes;
            double budget = 3.0 * (double)(w * h * 3 + out_bytes);
            printf("model=%s in=%zux%zu out=%zux%zu working_mib=%.1f io_mib=%.1f working_over_io=%.2f "
                   "budget_ratio=%.2f\n",
                   model, w, h, out_w, out_h, working / 1048576.0, (double)(w * h * 3 + out_bytes) / 1048576.0,
                   working / (double)(w * h * 3 + out_bytes), working / budget);
            imagen_response_free(resp);
        }
    } else {
        double *times = calloc((size_t)runs, sizeof(double));
        for (int r = -1; r < runs && rc == 0; r++) {
            double t0 = now_s();
            imagen_response *resp = infer_once(srv, model, px, w, h, controls, n_controls, control_data);
            double t1 = now_s();
            if (resp == NULL) {
                rc = 1;
                break;
            }
            const imagen_tensor *t = imagen_response_output(resp, 0);
            out_h = (size_t)t->shape[1];
            out_w = (size_t)t->shape[2];
            if (r >= 0)
                times[r] = t1 - t0;
            if (r == runs - 1 && out_path != NULL && t->shape[3] >= 3) {
                FILE *f = fopen(out_path, "wb");
                size_t c = (size_t)t->shape[3];
                if (f != NULL) {
                    fprintf(f, "P6\n%zu %zu\n255\n", out_w, out_h);
                    const uint8_t *o = t->data;
                    for (size_t i = 0; i < out_w * out_h; i++)
                        fwrite(o + i * c, 1, 3, f);
                    fclose(f);
                }
            }
            imagen_response_free(resp);
        }
        if (rc == 0) {
            qsort(times, (size_t)runs, sizeof(double), cmp_double);
            double median = times[runs / 2];
            printf("model=%s in=%zux%zu out=%zux%zu runs=%d median_s=%.4f min_s=%.4f out_mp_per_s=%.2f\n", model, w, h,
                   out_w, out_h, runs, median, times[0], (double)(out_w * out_h) / 1e6 / median);
        }
        free(times);
    }
    imagen_server_destroy(srv);
    free(px);
    return rc;
}
