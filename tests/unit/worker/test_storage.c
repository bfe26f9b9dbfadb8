/*
 * Unit tests of the worker's storage layer (src/worker/storage.c): atomic
 * durable file writes, input fetch from inline bytes, files and HTTP, PUT of
 * results, and the error classes the job loop relies on (permanent 4xx and
 * missing files, transient 5xx and refused connections). HTTP goes to a
 * small libmicrohttpd server run inside the test on a free port.
 */
#include <dirent.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "worker/storage.h"

/* ---- helpers -------------------------------------------------------------- */

static char tmpdir[256];

static void
make_tmpdir(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/imagen-test-storage-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
}

static void
remove_tree(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", path);
}

static char *
slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(1 << 20);
    *size = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

/* Entries in `dir` other than . and .. */
static int
count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* ---- the in-test HTTP server ----------------------------------------------- */

/* What the last PUT delivered. */
static pthread_mutex_t put_mu = PTHREAD_MUTEX_INITIALIZER;
static char put_body[4096];
static size_t put_len;
static char put_type[128];
static char put_path[128];

typedef struct upload {
    char data[4096];
    size_t len;
} upload;

static enum MHD_Result
reply(struct MHD_Connection *conn, unsigned status, const char *body)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method, const char *version,
           const char *upload_data, size_t *upload_data_size, void **req_cls)
{
    if (strcmp(method, "PUT") == 0) {
        upload *u = *req_cls;
        if (u == NULL) {
            *req_cls = calloc(1, sizeof(upload));
            return MHD_YES;
        }
        if (*upload_data_size > 0) {
            size_t n = *upload_data_size;
            if (n > sizeof(u->data) - u->len)
                n = sizeof(u->data) - u->len;
            memcpy(u->data + u->len, upload_data, n);
            u->len += n;
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (strcmp(url, "/deny") == 0)
            return reply(conn, 403, "forbidden");
        if (strcmp(url, "/flaky") == 0)
            return reply(conn, 503, "try later");
        const char *type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        pthread_mutex_lock(&put_mu);
        memcpy(put_body, u->data, u->len);
        put_len = u->len;
        snprintf(put_type, sizeof(put_type), "%s", type ? type : "");
        snprintf(put_path, sizeof(put_path), "%s", url);
        pthread_mutex_unlock(&put_mu);
        return reply(conn, 200, "");
    }
    if (*req_cls == NULL) {
        *req_cls = (void *)1;
        return MHD_YES;
    }
    if (strcmp(url, "/photo.jpg") == 0)
        return reply(conn, 200, "JPEGBYTES");
    if (strcmp(url, "/big") == 0)
        return reply(conn, 200, "0123456789abcdef0123456789abcdef");
    if (strcmp(url, "/boom") == 0)
        return reply(conn, 500, "internal");
    if (strcmp(url, "/secret") == 0)
        return reply(conn, 403, "no");
    return reply(conn, 404, "not here");
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode toe)
{
    if (*req_cls != NULL && *req_cls != (void *)1)
        free(*req_cls);
    *req_cls = NULL;
}

static struct MHD_Daemon *daemon_;
static int port_;

static void
start_server(void)
{
    daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC, 0, NULL, NULL, on_request, NULL,
                               MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (daemon_ == NULL) {
        fprintf(stderr, "cannot start the test HTTP server\n");
        exit(1);
    }
    port_ = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT)->port;
}

static char *
url(const char *path)
{
    static char buf[8][128];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof(buf[0]), "http://127.0.0.1:%d%s", port_, path);
    return b;
}

/* A port nothing listens on: bound, then closed (never listened). */
static int
closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &len);
    int port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* ---- files ------------------------------------------------------------------- */

static void
test_write_file_is_atomic_and_replaces(void)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/out/nested/result.png", tmpdir);
    CHECK_OK(imagen_storage_write_file(path, "first", 5));
    CHECK_OK(imagen_storage_write_file(path, "second!", 7));
    size_t size = 0;
    char *got = slurp(path, &size);
    CHECK(got != NULL);
    CHECK_INT_EQ(size, 7);
    CHECK(got != NULL && memcmp(got, "second!", 7) == 0);
    free(got);
    struct stat st;
    CHECK_INT_EQ(stat(path, &st), 0);
    CHECK_INT_EQ(st.st_mode & 0777, 0644);
    /* No temporary file is left next to the result. */
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/out/nested", tmpdir);
    CHECK_INT_EQ(count_entries(dir), 1);
}

static void
test_write_file_refuses_bad_paths(void)
{
    CHECK_ERR(imagen_storage_write_file("relative/out.png", "x", 1), IMAGEN_ERR_INVALID_ARG, "not absolute");
    char path[512];
    snprintf(path, sizeof(path), "%s/dironly/", tmpdir);
    CHECK_ERR(imagen_storage_write_file(path, "x", 1), IMAGEN_ERR_INVALID_ARG, "names a directory");
    /* A regular file where the directory should be. */
    char blocker[512];
    snprintf(blocker, sizeof(blocker), "%s/blocker", tmpdir);
    CHECK_OK(imagen_storage_write_file(blocker, "x", 1));
    snprintf(path, sizeof(path), "%s/blocker/out.png", tmpdir);
    CHECK_ERR(imagen_storage_write_file(path, "x", 1), IMAGEN_ERR_INVALID_ARG, "not a directory");
}

static void
test_read_file(void)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/in.jpg", tmpdir);
    CHECK_OK(imagen_storage_write_file(path, "abcdef", 6));
    unsigned char *data = NULL;
    size_t size = 0;
    CHECK_OK(imagen_storage_read_file(path, 100, &data, &size));
    CHECK_INT_EQ(size, 6);
    CHECK(data != NULL && memcmp(data, "abcdef", 6) == 0);
    free(data);
    CHECK_ERR(imagen_storage_read_file(path, 5, &data, &size), IMAGEN_ERR_UNSUPPORTED, "more than the limit");
    char missing[512];
    snprintf(missing, sizeof(missing), "%s/missing.jpg", tmpdir);
    CHECK_ERR(imagen_storage_read_file(missing, 100, &data, &size), IMAGEN_ERR_NOT_FOUND, "missing.jpg");
    CHECK_ERR(imagen_storage_read_file(tmpdir, 100, &data, &size), IMAGEN_ERR_INVALID_ARG, "not a regular file");
    CHECK_ERR(imagen_storage_read_file("in.jpg", 100, &data, &size), IMAGEN_ERR_INVALID_ARG, "not absolute");
}

static void
test_fetch_inline_borrows(void)
{
    imagen_job_spec spec;
    memset(&spec, 0, sizeof(spec));
    unsigned char bytes[] = {1, 2, 3, 4};
    spec.input_data = bytes;
    spec.input_size = sizeof(bytes);
    imagen_storage_blob blob;
    CHECK_OK(imagen_storage_fetch(&spec, &blob));
    CHECK(blob.data == bytes);
    CHECK_INT_EQ(blob.size, 4);
    CHECK(blob.owned == NULL);
    imagen_storage_blob_free(&blob);
}

static void
test_fetch_file(void)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/photo.png", tmpdir);
    CHECK_OK(imagen_storage_write_file(path, "PNGDATA", 7));
    imagen_job_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.input = path;
    imagen_storage_blob blob;
    CHECK_OK(imagen_storage_fetch(&spec, &blob));
    CHECK_INT_EQ(blob.size, 7);
    CHECK(blob.data != NULL && memcmp(blob.data, "PNGDATA", 7) == 0);
    CHECK(blob.owned != NULL);
    imagen_storage_blob_free(&blob);
    spec.input = NULL;
    CHECK_ERR(imagen_storage_fetch(&spec, &blob), IMAGEN_ERR_INVALID_ARG, "neither input nor input_data");
}

/* ---- HTTP ------------------------------------------------------------------------ */

static void
test_is_url(void)
{
    CHECK(imagen_job_location_is_url("http://x/y"));
    CHECK(imagen_job_location_is_url("HTTPS://x/y"));
    CHECK(!imagen_job_location_is_url("/tmp/x"));
    CHECK(!imagen_job_location_is_url("ftp://x/y"));
    CHECK(!imagen_job_location_is_url(NULL));
}

static void
test_http_get_and_errors(void)
{
    unsigned char *data = NULL;
    size_t size = 0;
    CHECK_OK(imagen_storage_http_get(url("/photo.jpg"), 1000, &data, &size));
    CHECK_INT_EQ(size, 9);
    CHECK(data != NULL && memcmp(data, "JPEGBYTES", 9) == 0);
    free(data);
    /* Through the job-level entry point too. */
    imagen_job_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.input = url("/photo.jpg");
    imagen_storage_blob blob;
    CHECK_OK(imagen_storage_fetch(&spec, &blob));
    CHECK_INT_EQ(blob.size, 9);
    imagen_storage_blob_free(&blob);

    CHECK_ERR(imagen_storage_http_get(url("/nothing"), 1000, &data, &size), IMAGEN_ERR_NOT_FOUND, "HTTP 404");
    CHECK_ERR(imagen_storage_http_get(url("/secret"), 1000, &data, &size), IMAGEN_ERR_INVALID_ARG, "HTTP 403");
    CHECK_ERR(imagen_storage_http_get(url("/boom"), 1000, &data, &size), IMAGEN_ERR_UNAVAILABLE, "HTTP 500");
    CHECK_ERR(imagen_storage_http_get(url("/big"), 10, &data, &size), IMAGEN_ERR_UNSUPPORTED, "larger than");
    char refused[128];
    snprintf(refused, sizeof(refused), "http://127.0.0.1:%d/x.jpg", closed_port());
    CHECK_ERR(imagen_storage_http_get(refused, 1000, &data, &size), IMAGEN_ERR_UNAVAILABLE, refused);
    CHECK_ERR(imagen_storage_http_get("http://no-such-host.invalid/x.jpg", 1000, &data, &size), IMAGEN_ERR_NOT_FOUND,
              "no-such-host.invalid");
}

static void
test_http_put(void)
{
    CHECK_OK(imagen_storage_write(url("/bucket/result.png?sig=abc"), "RESULT", 6, "image/png"));
    pthread_mutex_lock(&put_mu);
    CHECK_INT_EQ(put_len, 6);
    CHECK(memcmp(put_body, "RESULT", 6) == 0);
    CHECK_STR_EQ(put_type, "image/png");
    CHECK_STR_EQ(put_path, "/bucket/result.png");
    pthread_mutex_unlock(&put_mu);
    CHECK_ERR(imagen_storage_http_put(url("/deny"), "x", 1, "image/png"), IMAGEN_ERR_INVALID_ARG, "HTTP 403");
    CHECK_ERR(imagen_storage_http_put(url("/flaky"), "x", 1, "image/png"), IMAGEN_ERR_UNAVAILABLE, "HTTP 503");
    char refused[128];
    snprintf(refused, sizeof(refused), "http://127.0.0.1:%d/out.png", closed_port());
    CHECK_ERR(imagen_storage_http_put(refused, "x", 1, NULL), IMAGEN_ERR_UNAVAILABLE, refused);
}

int
main(void)
{
    imagen_storage_global_init();
    make_tmpdir();
    start_server();
    RUN(test_write_file_is_atomic_and_replaces);
    RUN(test_write_file_refuses_bad_paths);
    RUN(test_read_file);
    RUN(test_fetch_inline_borrows);
    RUN(test_fetch_file);
    RUN(test_is_url);
    RUN(test_http_get_and_errors);
    RUN(test_http_put);
    MHD_stop_daemon(daemon_);
    remove_tree(tmpdir);
    TEST_MAIN_END();
}
