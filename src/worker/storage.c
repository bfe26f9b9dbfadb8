/*
 * The worker's storage layer (storage.h): input fetch from inline bytes,
 * files and http(s) URLs; result writes as atomic, durable files or HTTP
 * PUTs. Every error says which path or URL it is about and is classified by
 * its code so the job loop can tell a bad job from a passing outage.
 */
#include "worker/storage.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- process-wide set-up ---------------------------------------------------- */

static pthread_once_t storage_once = PTHREAD_ONCE_INIT;

static void
storage_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void
imagen_storage_global_init(void)
{
    pthread_once(&storage_once, storage_init_once);
}

/* libcurl's global init is thread-safe from 7.84.0 wherever the compiler
 * has C11 atomics (CURL_VERSION_THREADSAFE). The version is checked where
 * we are built rather than asked of the library at run time, because
 * curl_version_info() itself sets up the TLS library's version strings:
 * half a MiB of the pages this is meant to spare an idle worker. */
bool
imagen_storage_lazy_init_ok(void)
{
#if LIBCURL_VERSION_NUM >= 0x075400
    return true;
#else
    return false;
#endif
}

void
imagen_storage_blob_free(imagen_storage_blob *blob)
{
    if (blob == NULL)
        return;
    free(blob->owned);
    blob->owned = NULL;
    blob->data = NULL;
    blob->size = 0;
}

/* ---- files ------------------------------------------------------------------- */

/* A missing file or one that is not a regular file can never become
 * readable by retrying the job; other errors (EIO, EMFILE) may pass. */
static imagen_error *
file_error(const char *what, const char *path, int err)
{
    imagen_error_code code = IMAGEN_ERR_INTERNAL;
    if (err == ENOENT || err == ENOTDIR || err == EISDIR || err == ELOOP || err == ENAMETOOLONG)
        code = IMAGEN_ERR_NOT_FOUND;
    else if (err == EACCES || err == EPERM)
        code = IMAGEN_ERR_INVALID_ARG;
    return imagen_error_new(code, "cannot %s '%s': %s", what, path, strerror(err));
}

imagen_error *
imagen_storage_read_file(const char *path, size_t max, unsigned char **data, size_t *size)
{
    if (path == NULL || path[0] != '/')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input path '%s' is not absolute", path ? path : "");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return file_error("open input", path, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return file_error("stat input", path, err);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "input '%s' is not a regular file", path);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "input '%s' is %lld bytes, more than the limit of %zu", path,
                                (long long)st.st_size, max);
    }
    size_t want = (size_t)st.st_size;
    unsigned char *buf = malloc(want > 0 ? want : 1);
    if (buf == NULL) {
        close(fd);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory reading '%s' (%zu bytes)", path, want);
    }
    size_t got = 0;
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int err = errno;
            free(buf);
            close(fd);
            return file_error("read input", path, err);
        }
        if (r == 0)
            break; /* truncated while we read: take what is there, decode judges it */
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *size = got;
    return NULL;
}

imagen_error *
imagen_storage_make_dirs(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0)
        return S_ISDIR(st.st_mode) ? NULL
                                   : imagen_error_new(IMAGEN_ERR_INVALID_ARG, "output '%s' is not a directory", dir);
    char *copy = strdup(dir);
    if (copy == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory creating '%s'", dir);
    for (char *p = copy + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        /* EEXIST: another worker made it first, which is what we wanted. */
        if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
            imagen_error *err = file_error("create output directory", copy, errno);
            free(copy);
            return err;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    free(copy);
    return NULL;
}

static imagen_error *
write_all(int fd, const char *path, const unsigned char *data, size_t size)
{
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return file_error("write", path, errno);
        done += (size_t)w;
    }
    return NULL;
}

/* Makes the rename itself durable: without this a crash after the ack
 * could bring back the directory without the new entry. */
static imagen_error *
fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return file_error("open directory", dir, errno);
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    /* Some file systems refuse fsync on directories; the data is synced. */
    if (rc != 0 && err != EINVAL && err != ENOTSUP)
        return file_error("sync directory", dir, err);
    return NULL;
}

imagen_error *
imagen_storage_write_file(const char *path, const void *data, size_t size)
{
    if (path == NULL || path[0] != '/')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "output path '%s' is not absolute", path ? path : "");
    const char *slash = strrchr(path, '/');
    if (slash[1] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "output path '%s' names a directory, not a file", path);
    size_t dir_len = slash == path ? 1 : (size_t)(slash - path);
    char *dir = strndup(path, dir_len);
    /* The temporary name is hidden (leading dot) and unique per process and
     * call, so concurrent deliveries of the same job never share one and a
     * crash leaves at most a dot-file behind, never a partial result. */
    static _Atomic unsigned long counter;
    char *tmp = NULL;
    if (dir == NULL ||
        asprintf(&tmp, "%s/.%s.tmp-%ld-%lu", dir_len == 1 ? "" : dir, slash + 1, (long)getpid(), ++counter) < 0) {
        free(dir);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory writing '%s'", path);
    }
    imagen_error *err = imagen_storage_make_dirs(dir);
    int fd = -1;
    if (err == NULL) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            err = file_error("create", tmp, errno);
    }
    if (err == NULL)
        err = write_all(fd, tmp, data, size);
    if (err == NULL && fsync(fd) != 0)
        err = file_error("sync", tmp, errno);
    if (fd >= 0 && close(fd) != 0 && err == NULL)
        err = file_error("close", tmp, errno);
    if (err == NULL && rename(tmp, path) != 0)
        err = file_error("rename onto", path, errno);
    if (err != NULL && fd >= 0)
        unlink(tmp);
    if (err == NULL)
        err = fsync_dir(dir);
    free(tmp);
    free(dir);
    return err;
}

/* ---- HTTP ---------------------------------------------------------------------- */

typedef struct http_body {
    unsigned char *data;
    size_t len, cap, max;
    bool too_large;
} http_body;

static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    http_body *b = userdata;
    size_t n = size * nmemb;
    if (n > b->max - b->len) {
        b->too_large = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 1024;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *grown = realloc(b->data, cap);
        if (grown == NULL)
            return 0;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    return n;
}

/* Drops whatever a PUT's response body holds. */
static size_t
discard_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    return size * nmemb;
}

/* Options every transfer shares: no signals (threads), bounded time,
 * http(s) only even across redirects. */
static void
setup_common(CURL *curl, const char *url, char *errbuf)
{
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)IMAGEN_STORAGE_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)IMAGEN_STORAGE_TRANSFER_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "imagen-worker");
}

/* Maps a finished transfer to the storage error classes (see storage.h). */
static imagen_error *
transfer_error(const char *what, const char *url, CURLcode rc, const char *errbuf, long status)
{
    if (rc != CURLE_OK) {
        const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
        switch (rc) {
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s %s: %s", what, url, detail);
        case CURLE_COULDNT_RESOLVE_HOST:
            /* A host name that does not resolve is a wrong URL in the job far
             * more often than a resolver hiccup; retrying it only delays the
             * clear failure. */
            return imagen_error_new(IMAGEN_ERR_NOT_FOUND, "%s %s: %s", what, url, detail);
        default:
            return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "%s %s: %s", what, url, detail);
        }
    }
    if (status >= 200 && status < 300)
        return NULL;
    if (status == 404 || status == 410)
        return imagen_error_new(IMAGEN_ERR_NOT_FOUND, "%s %s: HTTP %ld", what, url, status);
    /* 408 and 429 ask the client to come back later. */
    if (status >= 400 && status < 500 && status != 408 && status != 429)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s %s: HTTP %ld", what, url, status);
    return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "%s %s: HTTP %ld", what, url, status);
}

imagen_error *
imagen_storage_http_get(const char *url, size_t max, unsigned char **data, size_t *size)
{
    imagen_storage_global_init();
    CURL *curl = curl_easy_init();
    if (curl == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot start a transfer for %s", url);
    char errbuf[CURL_ERROR_SIZE] = "";
    http_body body = {NULL, 0, 0, max, false};
    setup_common(curl, url, errbuf);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    imagen_error *err = NULL;
    if (body.too_large)
        err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "input %s is larger than the limit of %zu bytes", url, max);
    else
        err = transfer_error("fetching", url, rc, errbuf, status);
    if (err != NULL) {
        free(body.data);
        return err;
    }
    if (body.data == NULL && (body.data = malloc(1)) == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory fetching %s", url);
    *data = body.data;
    *size = body.len;
    return NULL;
}

typedef struct put_source {
    const unsigned char *data;
    size_t size, sent;
} put_source;

static size_t
on_read(char *buffer, size_t size, size_t nitems, void *userdata)
{
    put_source *src = userdata;
    size_t n = size * nitems;
    if (n > src->size - src->sent)
        n = src->size - src->sent;
    memcpy(buffer, src->data + src->sent, n);
    src->sent += n;
    return n;
}

/* Lets libcurl resend the body after a redirect or an auth round trip. */
static int
on_seek(void *userdata, curl_off_t offset, int origin)
{
    put_source *src = userdata;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > src->size)
        return CURL_SEEKFUNC_CANTSEEK;
    src->sent = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

imagen_error *
imagen_storage_http_put(const char *url, const void *data, size_t size, const char *content_type)
{
    imagen_storage_global_init();
    CURL *curl = curl_easy_init();
    if (curl == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot start a transfer for %s", url);
    char errbuf[CURL_ERROR_SIZE] = "";
    char header[256];
    snprintf(header, sizeof(header), "Content-Type: %s", content_type ? content_type : "application/octet-stream");
    struct curl_slist *headers = curl_slist_append(NULL, header);
    /* No "Expect: 100-continue" round trip: results are small and object
     * stores answer errors after the body just as well. */
    struct curl_slist *more = headers ? curl_slist_append(headers, "Expect:") : NULL;
    if (more == NULL) {
        curl_slist_free_all(headers);
        curl_easy_cleanup(curl);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory writing %s", url);
    }
    headers = more;
    put_source src = {data, size, 0};
    setup_common(curl, url, errbuf);
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)size);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(curl, CURLOPT_READDATA, &src);
    curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(curl, CURLOPT_SEEKDATA, &src);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    return transfer_error("writing", url, rc, errbuf, status);
}

/* ---- the job-level entry points ------------------------------------------------- */

imagen_error *
imagen_storage_fetch(const imagen_job_spec *spec, imagen_storage_blob *out)
{
    memset(out, 0, sizeof(*out));
    if (spec->input_data != NULL) {
        out->data = spec->input_data;
        out->size = spec->input_size;
        return NULL;
    }
    if (spec->input == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "the job has neither input nor input_data");
    unsigned char *data = NULL;
    size_t size = 0;
    imagen_error *err = imagen_job_location_is_url(spec->input)
                            ? imagen_storage_http_get(spec->input, IMAGEN_STORAGE_INPUT_MAX, &data, &size)
                            : imagen_storage_read_file(spec->input, IMAGEN_STORAGE_INPUT_MAX, &data, &size);
    if (err != NULL)
        return err;
    out->owned = data;
    out->data = data;
    out->size = size;
    return NULL;
}

imagen_error *
imagen_storage_write(const char *location, const void *data, size_t size, const char *content_type)
{
    if (imagen_job_location_is_url(location))
        return imagen_storage_http_put(location, data, size, content_type);
    return imagen_storage_write_file(location, data, size);
}
