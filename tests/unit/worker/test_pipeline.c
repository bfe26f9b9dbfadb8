/*
 * The pipeline against a real imagen-server (IMAGEN_SERVER_BIN, models from
 * $IMAGEN_SOURCE_DIR/models) on free ports: tiled upscale against untiled,
 * seams, every operation's output shape and format, alpha, shared memory
 * and its fallback, and the errors the job loop classifies. Skipped, with a
 * message, when IMAGEN_SERVER_BIN is not set.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vips/vips.h>

#include "imagen/client.h"
#include "test.h"
#include "worker/image_codec.h"
#include "worker/pipeline.h"
#include "worker/tiling.h"

typedef struct server {
    pid_t pid;
    imagen_client *client;
    int http_port;
} server;

static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Starts the server and waits until it is ready (or 60 s have passed). */
static bool
server_start(server *s, bool allow_shm)
{
    const char *bin = getenv("IMAGEN_SERVER_BIN"), *src = getenv("IMAGEN_SOURCE_DIR");
    char repo[1024], http[64], grpc[64], url[64];
    int grpc_port = free_port();
    snprintf(repo, sizeof(repo), "--model-repository=%s/models", src != NULL ? src : ".");
    s->http_port = free_port();
    snprintf(http, sizeof(http), "--http-port=%d", s->http_port);
    snprintf(grpc, sizeof(grpc), "--grpc-port=%d", grpc_port);
    s->pid = fork();
    if (s->pid == 0) {
        /* A test that crashes must not leave its server running. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(bin, bin, repo, http, grpc, "--allow-metrics=false", "--cpu-threads=2",
              allow_shm ? "--allow-client-shm=true" : "--allow-client-shm=false", (char *)NULL);
        _exit(127);
    }
    snprintf(url, sizeof(url), "grpc://127.0.0.1:%d", grpc_port);
    if (imagen_client_create(url, &s->client) != NULL)
        return false;
    imagen_client_set_timeout_ms(s->client, 60000);
    for (double start = now_ms(); now_ms() - start < 60000;) {
        bool ready = false;
        imagen_error *err = imagen_client_server_ready(s->client, &ready);
        imagen_error_free(err);
        if (err == NULL && ready)
            return true;
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid)
            return false;
        usleep(50 * 1000);
    }
    return false;
}

static void
server_stop(server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* A photo-like RGB image: smooth gradients, a few hard-edged discs and
 * fine texture, so that a seam or a wrong tile offset would show. */
static uint8_t *
make_photo(int w, int h)
{
    uint8_t *img = malloc((size_t)w * h * 3);
    uint32_t rng = 12345;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double fx = (double)x / w, fy = (double)y / h;
            double v[3] = {40 + 150 * fx + 30 * sin(fy * 9), 60 + 120 * fy + 25 * cos(fx * 7), 90 + 80 * fx * fy};
            for (int d = 0; d < 3; d++) {
                double cx = w * (0.2 + 0.3 * d), cy = h * (0.3 + 0.2 * d), r = h * 0.15;
                if ((x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r)
                    v[d] = 230 - 60 * d;
            }
            for (int c = 0; c < 3; c++) {
                rng = rng * 1664525u + 1013904223u;
                double n = v[c] + 8 * sin(x * 0.9 + c) * cos(y * 0.7) + (double)(rng >> 28) - 8;
                img[((size_t)y * w + x) * 3 + c] = (uint8_t)(n < 0 ? 0 : n > 255 ? 255 : n);
            }
        }
    return img;
}

static unsigned char *
encode(const uint8_t *px, int w, int h, int channels, const char *fmt, size_t *size)
{
    unsigned char *data = NULL;
    CHECK_OK(imagen_image_encode(px, w, h, channels, fmt, 95, &data, size));
    return data;
}

static double
psnr(const uint8_t *a, const uint8_t *b, size_t n)
{
    double se = 0;
    for (size_t i = 0; i < n; i++)
        se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return se == 0 ? 99.0 : 10 * log10(255.0 * 255.0 * (double)n / se);
}

static server srv;

static imagen_pipeline *
pipeline_new(imagen_client *client, int tile, int use_shm)
{
    imagen_pipeline_options o = {.client = client, .tile_size = tile, .tile_overlap = 0, .use_shm = use_shm};
    imagen_pipeline *p = NULL;
    CHECK_OK(imagen_pipeline_create(&o, &p));
    return p;
}

static imagen_job_spec
spec_for(const char *op)
{
    imagen_job_spec spec;
    imagen_job_spec_init(&spec, imagen_operation_find(op));
    return spec;
}

/* Runs a job and decodes its result (the caller clears *out). */
static bool
run_job(imagen_pipeline *p, const imagen_job_spec *spec, const unsigned char *in, size_t in_size,
        imagen_job_result *res, imagen_image *out)
{
    imagen_error *err = imagen_pipeline_process(p, spec, in, in_size, res, NULL);
    if (err != NULL) {
        fprintf(stderr, "job failed: %s\n", imagen_error_message(err));
        imagen_error_free(err);
        test_failures_++;
        return false;
    }
    if (out != NULL)
        CHECK_OK(imagen_image_decode(res->data, res->size, out));
    return true;
}

static void
test_upscale_tiled_matches_untiled(void)
{
    int w = 700, h = 500;
    uint8_t *photo = make_photo(w, h);
    size_t png_size;
    unsigned char *png = encode(photo, w, h, 3, "png", &png_size);
    imagen_pipeline *tiled = pipeline_new(srv.client, 256, 0), *whole = pipeline_new(srv.client, 4096, 0);
    imagen_job_spec spec = spec_for("upscale");
    imagen_job_result rt = {0}, rw = {0};
    imagen_image it = {0}, iw = {0};
    if (run_job(tiled, &spec, png, png_size, &rt, &it) && run_job(whole, &spec, png, png_size, &rw, &iw)) {
        CHECK_STR_EQ(rt.ext, "png");
        CHECK_INT_EQ(it.width, 2 * w);
        CHECK_INT_EQ(it.height, 2 * h);
        CHECK_INT_EQ(iw.width, 2 * w);
        CHECK(it.alpha == NULL);
        double all = psnr(it.rgb, iw.rgb, (size_t)4 * w * h * 3);
        fprintf(stderr, "  tiled vs untiled: %.1f dB\n", all);
        CHECK(all >= 40.0);
        /* The seams alone: columns and rows within 16 output pixels of a
         * tile boundary. */
        imagen_tile_grid g;
        imagen_tile_grid_plan(w, h, 256, 16, &g);
        double se = 0;
        size_t n = 0;
        for (int y = 0; y < 2 * h; y++)
            for (int x = 0; x < 2 * w; x++) {
                int dx = (x % (2 * g.x.core)), dy = (y % (2 * g.y.core));
                bool near = (x >= 2 * g.x.core && (dx < 16 || dx >= 2 * g.x.core - 16)) ||
                            (y >= 2 * g.y.core && (dy < 16 || dy >= 2 * g.y.core - 16));
                for (int c = 0; near && c < 3; c++, n++) {
                    double d =
                        (double)it.rgb[((size_t)y * 2 * w + x) * 3 + c] - iw.rgb[((size_t)y * 2 * w + x) * 3 + c];
                    se += d * d;
                }
            }
        double seam = se == 0 ? 99.0 : 10 * log10(255.0 * 255.0 * (double)n / se);
        fprintf(stderr, "  seams (%zu values): %.1f dB\n", n, seam);
        CHECK(n > 0 && seam >= 40.0);
    }
    imagen_image_clear(&it);
    imagen_image_clear(&iw);
    free(rt.data);
    free(rw.data);
    imagen_pipeline_destroy(tiled);
    imagen_pipeline_destroy(whole);
    free(png);
    free(photo);
}

static void
test_upscale_scale_and_jpeg(void)
{
    int w = 512, h = 512;
    uint8_t *photo = make_photo(w, h);
    size_t size;
    unsigned char *jpg = encode(photo, w, h, 3, "jpg", &size);
    imagen_pipeline *p = pipeline_new(srv.client, 0, 0);
    imagen_job_spec spec = spec_for("upscale");
    CHECK_OK(imagen_job_spec_set(&spec, "scale", "3"));
    imagen_job_result r = {0};
    imagen_image out = {0};
    if (run_job(p, &spec, jpg, size, &r, &out)) {
        CHECK_STR_EQ(r.ext, "jpg");
        CHECK_STR_EQ(r.content_type, "image/jpeg");
        CHECK_INT_EQ(out.width, 3 * w);
        CHECK_INT_EQ(out.height, 3 * h);
    }
    imagen_image_clear(&out);
    free(r.data);
    imagen_pipeline_destroy(p);
    /* The figure: ms per 512×512 ×2 job, server on this machine, with and
     * without shared memory. */
    imagen_job_spec spec2 = spec_for("upscale");
    for (int use_shm = 0; use_shm <= 1; use_shm++) {
        p = pipeline_new(srv.client, 0, use_shm);
        imagen_stage_times t = {0}, sum = {0};
        int jobs = 10;
        double start = now_ms();
        for (int i = 0; i < jobs; i++) {
            imagen_job_result r2 = {0};
            CHECK_OK(imagen_pipeline_process(p, &spec2, jpg, size, &r2, &t));
            free(r2.data);
            sum.decode_ms += t.decode_ms;
            sum.pre_ms += t.pre_ms;
            sum.infer_ms += t.infer_ms;
            sum.post_ms += t.post_ms;
            sum.encode_ms += t.encode_ms;
        }
        fprintf(stderr,
                "  512x512 jpeg upscale x2%s: %.1f ms/job (decode %.1f pre %.1f infer %.1f post %.1f encode %.1f)\n",
                use_shm ? " (shm)" : "", (now_ms() - start) / jobs, sum.decode_ms / jobs, sum.pre_ms / jobs,
                sum.infer_ms / jobs, sum.post_ms / jobs, sum.encode_ms / jobs);
        CHECK(sum.decode_ms > 0 && sum.infer_ms > 0 && sum.encode_ms > 0);
        CHECK(imagen_pipeline_used_shm(p) == (use_shm == 1));
        imagen_pipeline_destroy(p);
    }
    free(jpg);
    free(photo);
}

static void
test_same_size_operations(void)
{
    int w = 320, h = 240;
    uint8_t *photo = make_photo(w, h);
    size_t size;
    unsigned char *jpg = encode(photo, w, h, 3, "jpg", &size);
    imagen_pipeline *p = pipeline_new(srv.client, 0, -1);
    const char *ops[] = {"enhance", "style_comic", "style_aged"};
    for (size_t i = 0; i < 3; i++) {
        imagen_job_spec spec = spec_for(ops[i]);
        CHECK_OK(imagen_job_spec_set(&spec, "strength", "0.5"));
        if (i == 2)
            CHECK_OK(imagen_job_spec_set(&spec, "format", "webp"));
        imagen_job_result r = {0};
        imagen_image out = {0};
        imagen_stage_times t = {0};
        CHECK_OK(imagen_pipeline_process(p, &spec, jpg, size, &r, &t));
        fprintf(stderr, "  %s 320x240: infer %.1f ms\n", ops[i], t.infer_ms);
        free(r.data);
        r.data = NULL;
        if (run_job(p, &spec, jpg, size, &r, &out)) {
            CHECK_STR_EQ(r.ext, i == 2 ? "webp" : "jpg");
            CHECK_INT_EQ(out.width, w);
            CHECK_INT_EQ(out.height, h);
            CHECK_INT_EQ(r.channels, 3);
        }
        imagen_image_clear(&out);
        free(r.data);
        imagen_job_spec_clear(&spec);
    }
    imagen_pipeline_destroy(p);
    free(jpg);
    free(photo);
}

/* A photo with an alpha channel that is 0 in the left quarter. */
static unsigned char *
photo_with_alpha(int w, int h, size_t *size)
{
    uint8_t *photo = make_photo(w, h), *rgba = malloc((size_t)w * h * 4);
    for (size_t i = 0; i < (size_t)w * h; i++) {
        memcpy(rgba + 4 * i, photo + 3 * i, 3);
        rgba[4 * i + 3] = (int)(i % w) < w / 4 ? 0 : 255;
    }
    unsigned char *png = encode(rgba, w, h, 4, "png", size);
    free(photo);
    free(rgba);
    return png;
}

static void
test_alpha(void)
{
    int w = 300, h = 200;
    size_t size;
    unsigned char *png = photo_with_alpha(w, h, &size);
    imagen_pipeline *p = pipeline_new(srv.client, 128, 1);
    /* upscale (tiled): the alpha is resized alongside. */
    imagen_job_spec spec = spec_for("upscale");
    imagen_job_result r = {0};
    imagen_image out = {0};
    if (run_job(p, &spec, png, size, &r, &out)) {
        CHECK_STR_EQ(r.ext, "png");
        CHECK_INT_EQ(r.channels, 4);
        CHECK_INT_EQ(out.width, 2 * w);
        CHECK(out.alpha != NULL);
        if (out.alpha != NULL) {
            CHECK_INT_EQ(out.alpha[10 * 2 * w + 10], 0);
            CHECK_INT_EQ(out.alpha[10 * 2 * w + 2 * w - 10], 255);
        }
    }
    imagen_image_clear(&out);
    free(r.data);
    /* background_remove: RGBA out, the input's transparent part stays so. */
    imagen_job_spec bg = spec_for("background_remove");
    if (run_job(p, &bg, png, size, &r, &out)) {
        CHECK_STR_EQ(r.ext, "png");
        CHECK_INT_EQ(r.channels, 4);
        CHECK_INT_EQ(out.width, w);
        CHECK(out.alpha != NULL);
        bool clear = true;
        for (int y = 0; out.alpha != NULL && y < h; y++)
            for (int x = 0; x < w / 4; x++)
                clear = clear && out.alpha[y * w + x] == 0;
        CHECK(clear);
    }
    imagen_image_clear(&out);
    free(r.data);
    /* JPEG cannot hold the alpha: refused, not flattened. */
    CHECK_OK(imagen_job_spec_set(&spec, "format", "jpeg"));
    CHECK_ERR(imagen_pipeline_process(p, &spec, png, size, &r, NULL), IMAGEN_ERR_INVALID_ARG, "alpha");
    imagen_job_spec_clear(&spec);
    imagen_pipeline_destroy(p);
    free(png);
}

static void
test_shared_memory(void)
{
    int w = 600, h = 400;
    uint8_t *photo = make_photo(w, h);
    size_t size;
    unsigned char *png = encode(photo, w, h, 3, "png", &size);
    imagen_pipeline *with = pipeline_new(srv.client, 0, 1), *without = pipeline_new(srv.client, 0, 0);
    const char *ops[] = {"upscale", "enhance"};
    for (size_t i = 0; i < 2; i++) {
        imagen_job_spec spec = spec_for(ops[i]);
        imagen_job_result a = {0}, b = {0};
        if (run_job(with, &spec, png, size, &a, NULL) && run_job(without, &spec, png, size, &b, NULL)) {
            CHECK(imagen_pipeline_used_shm(with));
            CHECK(!imagen_pipeline_used_shm(without));
            CHECK(a.size == b.size && memcmp(a.data, b.data, a.size) == 0);
        }
        free(a.data);
        free(b.data);
    }
    imagen_pipeline_destroy(with);
    imagen_pipeline_destroy(without);
    char *status = NULL;
    CHECK_OK(imagen_client_shm_status(srv.client, NULL, &status));
    CHECK(status != NULL && strstr(status, "imagen_worker_") == NULL); /* destroy unregistered it */
    free(status);
    free(png);
    free(photo);
}

static uint32_t
crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static void
put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* A PNG claiming w × h pixels, with next to no pixel data: only a
 * size check made before decoding can answer it correctly. */
static size_t
png_header(unsigned char *buf, uint32_t w, uint32_t h)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(buf, sig, 8);
    put32(buf + 8, 13);
    memcpy(buf + 12, "IHDR", 4);
    put32(buf + 16, w);
    put32(buf + 20, h);
    buf[24] = 8; /* bit depth */
    buf[25] = 2; /* RGB */
    buf[26] = buf[27] = buf[28] = 0;
    put32(buf + 29, crc32_of(buf + 12, 17));
    /* An IDAT with the start of a zlib stream: readers look for it before
     * they call the header read. */
    put32(buf + 33, 2);
    memcpy(buf + 37, "IDAT\x78\x9c", 6);
    put32(buf + 43, crc32_of(buf + 37, 6));
    put32(buf + 47, 0);
    memcpy(buf + 51, "IEND", 4);
    put32(buf + 55, crc32_of(buf + 51, 4));
    return 59;
}

static void
test_errors(void)
{
    imagen_pipeline *p = pipeline_new(srv.client, 0, 0);
    imagen_job_spec spec = spec_for("upscale");
    imagen_job_result r = {0};
    unsigned char hdr[64];
    size_t n = png_header(hdr, 12000, 9000);
    CHECK_ERR(imagen_pipeline_process(p, &spec, hdr, n, &r, NULL), IMAGEN_ERR_INVALID_ARG,
              "image is 12000×9000 (108.0 megapixels), more than the 100 megapixels upscale accepts");
    n = png_header(hdr, 6000, 5000);
    CHECK_ERR(imagen_pipeline_process(p, &spec, hdr, n, &r, NULL), IMAGEN_ERR_INVALID_ARG, "(120.0 megapixels)");
    n = png_header(hdr, 20000, 100);
    imagen_job_spec en = spec_for("enhance");
    CHECK_ERR(imagen_pipeline_process(p, &en, hdr, n, &r, NULL), IMAGEN_ERR_INVALID_ARG, "16384 pixels per side");

    int w = 200, h = 150;
    uint8_t *photo = make_photo(w, h);
    size_t size;
    unsigned char *png = encode(photo, w, h, 3, "png", &size);
    CHECK_ERR(imagen_pipeline_process(p, &spec, png, size / 2, &r, NULL), IMAGEN_ERR_INVALID_ARG,
              "cannot decode input");
    unsigned char *jpg = encode(photo, w, h, 3, "jpg", &size);
    CHECK_ERR(imagen_pipeline_process(p, &spec, jpg, size * 2 / 3, &r, NULL), IMAGEN_ERR_INVALID_ARG,
              "cannot decode input");
    CHECK_ERR(imagen_pipeline_process(p, &spec, (const unsigned char *)"not an image at all", 19, &r, NULL),
              IMAGEN_ERR_INVALID_ARG, "cannot decode input");
    imagen_pipeline_destroy(p);
    free(png);
    free(jpg);
    free(photo);
}

static void
test_shm_refused_and_server_gone(void)
{
    server plain = {0};
    if (!server_start(&plain, false)) {
        CHECK(!"second server did not start");
        server_stop(&plain);
        imagen_client_destroy(plain.client);
        return;
    }
    int w = 300, h = 200;
    uint8_t *photo = make_photo(w, h);
    size_t size;
    unsigned char *png = encode(photo, w, h, 3, "png", &size);
    imagen_job_spec spec = spec_for("enhance");
    imagen_job_result r = {0};
    /* Auto: falls back to tensors in the messages. */
    imagen_pipeline *p = pipeline_new(plain.client, 0, -1);
    if (run_job(p, &spec, png, size, &r, NULL))
        CHECK(!imagen_pipeline_used_shm(p));
    free(r.data);
    imagen_pipeline_destroy(p);
    /* Always: the refusal is the job's error. */
    p = pipeline_new(plain.client, 0, 1);
    CHECK_ERR(imagen_pipeline_process(p, &spec, png, size, &r, NULL), IMAGEN_ERR_UNSUPPORTED, "shared memory");
    imagen_pipeline_destroy(p);
    /* No server: UNAVAILABLE, for the job loop to hold the job. */
    p = pipeline_new(plain.client, 0, 0);
    server_stop(&plain);
    CHECK_ERR(imagen_pipeline_process(p, &spec, png, size, &r, NULL), IMAGEN_ERR_UNAVAILABLE, "");
    imagen_pipeline_destroy(p);
    imagen_client_destroy(plain.client);
    free(png);
    free(photo);
}

/* ---- large tensors: sent in place, released early, parsed from slices ---- */

/* A w × h RGB image of noise (JPEG or zlib would not shrink it), as the
 * enhance model's STRENGTH 0 returns it exactly: an echo to check that
 * every byte went there and came back. */
static uint8_t *
make_noise(int w, int h, uint32_t seed)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        seed = seed * 1664525u + 1013904223u;
        px[i] = (uint8_t)(seed >> 24);
    }
    return px;
}

/* What an inputs_done callback saw. */
typedef struct inputs_seen {
    int calls;
    uint8_t *input; /* scribbled over when told: the library must not read it any more */
    size_t size;
} inputs_seen;

static void
on_inputs_done(void *arg)
{
    inputs_seen *seen = arg;
    seen->calls++;
    memset(seen->input, 0, seen->size);
}

/* Runs enhance at STRENGTH 0 on `px` (w × h) with `client`; true when the
 * output is `want`. inputs_done as in imagen_client_infer_with_inputs_done. */
static bool
echo(imagen_client *client, const uint8_t *px, int w, int h, const uint8_t *want, imagen_inputs_done_cb inputs_done,
     void *arg)
{
    int64_t shape[4] = {1, h, w, 3}, sshape[2] = {1, 1};
    float strength = 0;
    imagen_tensor inputs[2] = {
        {.name = "IMAGE",
         .datatype = IMAGEN_TYPE_UINT8,
         .shape = shape,
         .rank = 4,
         .data = px,
         .byte_size = (size_t)w * h * 3},
        {.name = "STRENGTH",
         .datatype = IMAGEN_TYPE_FP32,
         .shape = sshape,
         .rank = 2,
         .data = &strength,
         .byte_size = 4},
    };
    const char *outputs[] = {"IMAGE"};
    imagen_infer_request req = {
        .model = "enhance", .inputs = inputs, .n_inputs = 2, .outputs = outputs, .n_outputs = 1};
    imagen_infer_result *res = NULL;
    imagen_error *err = imagen_client_infer_with_inputs_done(client, &req, inputs_done, arg, &res);
    if (err != NULL) {
        fprintf(stderr, "infer failed: %s\n", imagen_error_message(err));
        imagen_error_free(err);
        return false;
    }
    const imagen_tensor *t = imagen_infer_result_output_by_name(res, "IMAGE");
    bool ok = t != NULL && t->byte_size == (size_t)w * h * 3 && memcmp(t->data, want, t->byte_size) == 0;
    imagen_infer_result_free(res);
    return ok;
}

typedef struct async_echo {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    imagen_infer_result *result;
    imagen_error *err;
} async_echo;

static void
on_async_done(imagen_infer_result *result, imagen_error *err, void *arg)
{
    async_echo *a = arg;
    pthread_mutex_lock(&a->mu);
    a->result = result;
    a->err = err;
    a->done = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* Over gRPC a large input is sent from the caller's memory: inputs_done
 * fires once, before the call returns, and from then on the bytes may be
 * overwritten without the server seeing it; the response, far larger than
 * one read from the socket, is put back together from its slices. An
 * asynchronous infer owns its copy, so the caller may free the input as
 * soon as it returns. Over HTTP inputs_done fires too. */
static void
test_large_tensors_in_place(void)
{
    int w = 1000, h = 700; /* 2.1 MB each way */
    uint8_t *want = make_noise(w, h, 7);
    size_t size = (size_t)w * h * 3;
    uint8_t *px = malloc(size);

    memcpy(px, want, size);
    inputs_seen seen = {0, px, size};
    CHECK(echo(srv.client, px, w, h, want, on_inputs_done, &seen));
    CHECK_INT_EQ(seen.calls, 1);
    CHECK_INT_EQ(px[size - 1], 0); /* scribbled over by the callback */

    memcpy(px, want, size);
    CHECK(echo(srv.client, px, w, h, want, NULL, NULL));

    /* Small enough to be copied into the request: told right away. */
    uint8_t small_want[16 * 16 * 3], small[16 * 16 * 3];
    memcpy(small_want, want, sizeof(small_want));
    memcpy(small, want, sizeof(small));
    inputs_seen small_seen = {0, small, sizeof(small)};
    CHECK(echo(srv.client, small, 16, 16, small_want, on_inputs_done, &small_seen));
    CHECK_INT_EQ(small_seen.calls, 1);

    /* Refused before anything is sent: told all the same. */
    imagen_infer_request bad = {.model = ""};
    imagen_infer_result *res = NULL;
    seen.calls = 0;
    CHECK_ERR(imagen_client_infer_with_inputs_done(srv.client, &bad, on_inputs_done, &seen, &res),
              IMAGEN_ERR_INVALID_ARG, "model");
    CHECK_INT_EQ(seen.calls, 1);

    async_echo a = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    uint8_t *tmp = malloc(size);
    memcpy(tmp, want, size);
    int64_t shape[4] = {1, h, w, 3};
    imagen_tensor in = {
        .name = "IMAGE", .datatype = IMAGEN_TYPE_UINT8, .shape = shape, .rank = 4, .data = tmp, .byte_size = size};
    imagen_infer_request req = {.model = "enhance", .inputs = &in, .n_inputs = 1};
    imagen_error *err = imagen_client_infer_async(srv.client, &req, on_async_done, &a);
    CHECK(err == NULL);
    memset(tmp, 0, size);
    free(tmp);
    if (err == NULL) {
        pthread_mutex_lock(&a.mu);
        while (!a.done)
            pthread_cond_wait(&a.cv, &a.mu);
        pthread_mutex_unlock(&a.mu);
        CHECK(a.err == NULL);
        /* No STRENGTH: the default enhancement, not an echo; what matters
         * is that the server got the image whole (the shape came back). */
        const imagen_tensor *t = a.result != NULL ? imagen_infer_result_output_by_name(a.result, "IMAGE") : NULL;
        CHECK(t != NULL && t->byte_size == size);
        imagen_infer_result_free(a.result);
        imagen_error_free(a.err);
    } else {
        imagen_error_free(err);
    }

    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", srv.http_port);
    imagen_client *http = NULL;
    CHECK_OK(imagen_client_create(url, &http));
    if (http != NULL) {
        memcpy(px, want, size);
        seen = (inputs_seen){0, px, size};
        CHECK(echo(http, px, w, h, want, on_inputs_done, &seen));
        CHECK_INT_EQ(seen.calls, 1);
        imagen_client_destroy(http);
    }
    free(px);
    free(want);
}

/* A region's pages can be handed back: whole pages inside the range read
 * zero afterwards, the pages it only touches keep their bytes. */
static void
test_shm_region_release(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    imagen_shm_region *r = NULL;
    CHECK_OK(imagen_shm_region_create(4 * page, &r));
    if (r == NULL)
        return;
    uint8_t *d = imagen_shm_region_data(r);
    memset(d, 0xab, 4 * page);
    CHECK(imagen_shm_region_release(r, 100, 2 * page + 200)); /* whole page: [page, 2 page) */
    CHECK_INT_EQ(d[page - 1], 0xab);
    CHECK_INT_EQ(d[page], 0);
    CHECK_INT_EQ(d[2 * page - 1], 0);
    CHECK_INT_EQ(d[2 * page], 0xab);
    CHECK(imagen_shm_region_release(r, 3 * page, 10 * page)); /* clipped to the region */
    CHECK_INT_EQ(d[3 * page], 0);
    CHECK_INT_EQ(d[4 * page - 1], 0);
    CHECK(imagen_shm_region_release(r, 5 * page, page)); /* outside: nothing */
    /* Released pages are memory again when written. */
    d[page] = 1;
    CHECK_INT_EQ(d[page], 1);
    imagen_shm_region_destroy(r);
}

/* An image large enough for the region to hand its pages back after each
 * job (SHM_RELEASE_MIN_BYTES): the next job in the same region, and the
 * same job through the messages, give the same result. */
static void
test_large_image_region_reused(void)
{
    int w = 1800, h = 1600;
    uint8_t *photo = make_photo(w, h);
    size_t size;
    unsigned char *jpg = encode(photo, w, h, 3, "jpg", &size);
    imagen_pipeline *with = pipeline_new(srv.client, 0, 1), *without = pipeline_new(srv.client, 0, 0);
    imagen_job_spec spec = spec_for("enhance");
    imagen_job_result a = {0}, b = {0}, c = {0};
    if (run_job(with, &spec, jpg, size, &a, NULL) && run_job(with, &spec, jpg, size, &b, NULL) &&
        run_job(without, &spec, jpg, size, &c, NULL)) {
        CHECK(imagen_pipeline_used_shm(with));
        CHECK(a.size == b.size && memcmp(a.data, b.data, a.size) == 0);
        CHECK(a.size == c.size && memcmp(a.data, c.data, a.size) == 0);
    }
    free(a.data);
    free(b.data);
    free(c.data);
    imagen_pipeline_destroy(with);
    imagen_pipeline_destroy(without);
    free(jpg);
    free(photo);
}

int
main(void)
{
    if (getenv("IMAGEN_SERVER_BIN") == NULL) {
        fprintf(stderr, "skipped: set IMAGEN_SERVER_BIN to an imagen-server binary to run the pipeline tests\n");
        return 0;
    }
    CHECK_OK(imagen_codec_init());
    if (!server_start(&srv, true)) {
        fprintf(stderr, "imagen-server did not start\n");
        server_stop(&srv);
        return 1;
    }
    RUN(test_upscale_tiled_matches_untiled);
    RUN(test_upscale_scale_and_jpeg);
    RUN(test_same_size_operations);
    RUN(test_alpha);
    RUN(test_shared_memory);
    RUN(test_errors);
    RUN(test_shm_refused_and_server_gone);
    RUN(test_large_tensors_in_place);
    RUN(test_shm_region_release);
    RUN(test_large_image_region_reused);
    server_stop(&srv);
    imagen_client_destroy(srv.client);
    vips_shutdown();
    TEST_MAIN_END();
}
