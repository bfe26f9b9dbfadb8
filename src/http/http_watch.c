/*
 * Disconnect watcher. libmicrohttpd does not poll a suspended connection, so
 * it cannot notice a client that gives up while its inference request waits
 * in a queue. This one thread polls the sockets of suspended connections for
 * hang-up (POLLRDHUP) and cancels their requests so the core drops them.
 * It only polls; it never reads, writes or closes a socket, and it holds its
 * lock while cancelling so that remove() guarantees it is done with a request.
 */
#include "http/http_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"

#define WATCH_INITIAL_CAPACITY 64
#define WATCH_RETRY_US 10000 /* back-off after an allocation failure */

typedef struct watch_entry {
    uint64_t id;
    int fd;
    imagen_request *req; /* borrowed: the owner removes the entry before releasing */
    bool cancelled;
} watch_entry;

struct imagen__http_watch {
    pthread_mutex_t mu; /* guards everything below */
    watch_entry *entries;
    size_t n, cap;
    uint64_t next_id;
    bool stopping;
    int wake_fd; /* eventfd: list changed or stop requested */
    pthread_t thread;
};

static void
wake(imagen__http_watch *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r; /* a full counter already means "wake up" */
}

static void *
watch_main(void *arg)
{
    imagen__http_watch *w = arg;
    struct pollfd *pfds = NULL;
    uint64_t *ids = NULL;
    size_t pcap = 0;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        if (w->stopping) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        size_t n = 0;
        if (w->n + 1 > pcap) {
            size_t ncap = w->cap + 1;
            struct pollfd *np = realloc(pfds, ncap * sizeof(*np));
            uint64_t *ni = np ? realloc(ids, ncap * sizeof(*ni)) : NULL;
            if (np)
                pfds = np;
            if (ni)
                ids = ni;
            if (np && ni)
                pcap = ncap;
        }
        if (pcap == 0) { /* out of memory: retry later */
            pthread_mutex_unlock(&w->mu);
            usleep(WATCH_RETRY_US);
            continue;
        }
        pfds[n].fd = w->wake_fd;
        pfds[n].events = POLLIN;
        n++;
        for (size_t i = 0; i < w->n && n < pcap; i++) {
            if (w->entries[i].cancelled)
                continue;
            pfds[n].fd = w->entries[i].fd;
            pfds[n].events = POLLRDHUP;
            ids[n] = w->entries[i].id;
            n++;
        }
        pthread_mutex_unlock(&w->mu);

        int r = poll(pfds, n, -1);
        if (r < 0 && errno != EINTR) {
            IMAGEN_LOG_ERROR_("http", "disconnect watcher: poll failed: %s", strerror(errno));
            break;
        }
        if (r <= 0)
            continue;
        if (pfds[0].revents & POLLIN) {
            uint64_t v;
            ssize_t rr = read(w->wake_fd, &v, sizeof(v));
            (void)rr;
        }
        pthread_mutex_lock(&w->mu);
        for (size_t k = 1; k < n; k++) {
            if (!(pfds[k].revents & (POLLRDHUP | POLLHUP | POLLERR)))
                continue;
            /* Match by id: the entry may have been removed meanwhile. */
            for (size_t i = 0; i < w->n; i++) {
                if (w->entries[i].id == ids[k] && !w->entries[i].cancelled) {
                    w->entries[i].cancelled = true;
                    /* May remove entries (see the mutex comment): stop
                     * scanning this list right after. */
                    imagen_request_cancel(w->entries[i].req);
                    break;
                }
            }
        }
        pthread_mutex_unlock(&w->mu);
    }
    free(pfds);
    free(ids);
    return NULL;
}

imagen_error *
imagen__http_watch_start(imagen__http_watch **out)
{
    imagen__http_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->wake_fd < 0) {
        free(w);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "eventfd failed: %s", strerror(errno));
    }
    /* Recursive: imagen_request_cancel() may complete the request at once,
     * and its completion callback calls imagen__http_watch_remove() on this
     * thread while the scan below holds the lock. */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&w->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    w->next_id = 1;
    if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
        close(w->wake_fd);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot start the disconnect watcher thread");
    }
    *out = w;
    return NULL;
}

uint64_t
imagen__http_watch_add(imagen__http_watch *w, int fd, imagen_request *req)
{
    if (w == NULL || fd < 0)
        return 0;
    pthread_mutex_lock(&w->mu);
    if (w->n == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : WATCH_INITIAL_CAPACITY;
        watch_entry *ne = realloc(w->entries, ncap * sizeof(*ne));
        if (ne == NULL) {
            pthread_mutex_unlock(&w->mu);
            return 0;
        }
        w->entries = ne;
        w->cap = ncap;
    }
    uint64_t id = w->next_id++;
    w->entries[w->n++] = (watch_entry){id, fd, req, false};
    pthread_mutex_unlock(&w->mu);
    wake(w);
    return id;
}

void
imagen__http_watch_remove(imagen__http_watch *w, uint64_t id)
{
    if (w == NULL || id == 0)
        return;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n; i++) {
        if (w->entries[i].id == id) {
            w->entries[i] = w->entries[w->n - 1];
            w->n--;
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    /* No wake: a stale fd in the poll set is harmless (results match by id)
     * and the next add or hang-up refreshes the set. */
}

void
imagen__http_watch_stop(imagen__http_watch *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_mutex_unlock(&w->mu);
    wake(w);
    pthread_join(w->thread, NULL);
    close(w->wake_fd);
    pthread_mutex_destroy(&w->mu);
    free(w->entries);
    free(w);
}
