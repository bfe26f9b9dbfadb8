/*
 * The system shared-memory registry: a mutex-guarded array of regions, each
 * a reference-counted mapping of a client's POSIX shm object. Frontends call
 * in from their network and completion-queue threads; releases may also come
 * from instance threads. The lock guards only the array: mapping happens
 * before it is taken and unmapping after the last reference is dropped, so
 * no system call that can be slow runs under it except the final munmap of
 * an unregister, which happens after the lock is released.
 *
 * What this module cannot prevent: a client that shrinks its shm object
 * (ftruncate) after registering makes later accesses fault (SIGBUS), as in
 * Triton. Only clients trusted with --allow-client-shm can do that.
 */
#include "shm/shm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A mapped region. Doubles as the reference handed out by acquire. */
struct imagen_shm_ref {
    atomic_size_t refs; /* one for the registry while registered, one per acquire */
    char *name;         /* owned */
    char *key;          /* owned */
    uint64_t offset;    /* into the shm object */
    uint64_t byte_size; /* bytes usable from base */
    void *map;          /* what mmap returned (page-aligned, before base) */
    size_t map_len;     /* length given to mmap */
    char *base;         /* address of `offset` inside the object */
};

struct imagen_shm {
    pthread_mutex_t mu;
    imagen_shm_ref **regions; /* registration order; guarded by mu */
    size_t n_regions;         /* guarded by mu */
    size_t cap_regions;       /* guarded by mu */
};

/* ======================================================================
 * Regions
 * ==================================================================== */

static void
region_free(imagen_shm_ref *r)
{
    if (r->map != NULL && r->map != MAP_FAILED)
        munmap(r->map, r->map_len);
    free(r->name);
    free(r->key);
    free(r);
}

void
imagen_shm_release(imagen_shm_ref *ref)
{
    if (ref != NULL && atomic_fetch_sub(&ref->refs, 1) == 1)
        region_free(ref);
}

/* Opens and maps [offset, offset + byte_size) of `key`. mmap needs a
 * page-aligned file offset, so the mapping starts at the page holding
 * `offset` and base points `offset % page` bytes into it. */
static imagen_error *
region_map(const char *name, const char *key, uint64_t offset, uint64_t byte_size, imagen_shm_ref *r)
{
    int fd = shm_open(key, O_RDWR, 0);
    if (fd < 0)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "Unable to open shared memory region: '%s' (key '%s'): %s", name,
                                key, strerror(errno));
    imagen_error *err = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err =
            imagen_error_new(IMAGEN_ERR_INTERNAL, "Unable to get the size of shared memory region '%s' (key '%s'): %s",
                             name, key, strerror(errno));
        goto done;
    }
    /* offset + byte_size cannot overflow: the caller checked it. */
    uint64_t end = offset + byte_size;
    if (st.st_size < 0 || (uint64_t)st.st_size < end) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                               "failed to register shared memory region '%s': offset %" PRIu64 " + byte_size %" PRIu64
                               " exceeds the size of shared memory object '%s' (%lld bytes)",
                               name, offset, byte_size, key, (long long)st.st_size);
        goto done;
    }
    long page = sysconf(_SC_PAGESIZE);
    uint64_t page_size = page > 0 ? (uint64_t)page : 4096;
    uint64_t map_offset = offset - offset % page_size;
    uint64_t map_len = end - map_offset;
    if (map_len > SIZE_MAX) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "shared memory region '%s' is too large to map", name);
        goto done;
    }
    void *map = mmap(NULL, (size_t)map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)map_offset);
    if (map == MAP_FAILED) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "Unable to map shared memory region '%s' (key '%s'): %s", name, key,
                               strerror(errno));
        goto done;
    }
    r->map = map;
    r->map_len = (size_t)map_len;
    r->base = (char *)map + (offset - map_offset);
done:
    close(fd);
    return err;
}

/* Index of `name` in the registry, or n_regions. Caller holds mu. */
static size_t
find_locked(const imagen_shm *shm, const char *name)
{
    size_t i = 0;
    while (i < shm->n_regions && strcmp(shm->regions[i]->name, name) != 0)
        i++;
    return i;
}

static imagen_error *
check_string(const char *what, const char *s)
{
    if (s == NULL || s[0] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "shared memory region %s must not be empty", what);
    if (strlen(s) >= IMAGEN_SHM_MAX_NAME_BYTES)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "shared memory region %s is longer than %d bytes", what,
                                IMAGEN_SHM_MAX_NAME_BYTES - 1);
    return NULL;
}

/* ======================================================================
 * Registry
 * ==================================================================== */

imagen_error *
imagen_shm_create(imagen_shm **out)
{
    *out = NULL;
    imagen_shm *shm = calloc(1, sizeof(*shm));
    if (shm == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    pthread_mutex_init(&shm->mu, NULL);
    *out = shm;
    return NULL;
}

void
imagen_shm_destroy(imagen_shm *shm)
{
    if (shm == NULL)
        return;
    imagen_error *err = imagen_shm_unregister(shm, NULL);
    imagen_error_free(err);
    free(shm->regions);
    pthread_mutex_destroy(&shm->mu);
    free(shm);
}

imagen_error *
imagen_shm_register(imagen_shm *shm, const char *name, const char *key, uint64_t offset, uint64_t byte_size)
{
    IMAGEN_RETURN_IF_ERROR(check_string("name", name));
    IMAGEN_RETURN_IF_ERROR(check_string("key", key));
    if (byte_size == 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "shared memory region '%s' must have a byte_size above 0",
                                name);
    if (offset > UINT64_MAX - byte_size || offset + byte_size > (uint64_t)INT64_MAX)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "failed to register shared memory region '%s': offset %" PRIu64 " + byte_size %" PRIu64
                                " is out of range",
                                name, offset, byte_size);
    /* Fail fast on a taken name before the (slower) open and map; checked
     * again under the lock below, since another register may race. */
    pthread_mutex_lock(&shm->mu);
    bool taken = find_locked(shm, name) < shm->n_regions;
    pthread_mutex_unlock(&shm->mu);
    if (taken)
        return imagen_error_new(IMAGEN_ERR_ALREADY_EXISTS, "shared memory region '%s' already in manager", name);

    imagen_shm_ref *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    atomic_init(&r->refs, 1);
    r->name = strdup(name);
    r->key = strdup(key);
    r->offset = offset;
    r->byte_size = byte_size;
    imagen_error *err = NULL;
    if (r->name == NULL || r->key == NULL)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    else
        err = region_map(name, key, offset, byte_size, r);
    if (err != NULL) {
        region_free(r);
        return err;
    }

    pthread_mutex_lock(&shm->mu);
    if (find_locked(shm, name) < shm->n_regions) {
        err = imagen_error_new(IMAGEN_ERR_ALREADY_EXISTS, "shared memory region '%s' already in manager", name);
    } else if (shm->n_regions == IMAGEN_SHM_MAX_REGIONS_COUNT) {
        err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "too many shared memory regions registered (at most %d)",
                               IMAGEN_SHM_MAX_REGIONS_COUNT);
    } else if (shm->n_regions == shm->cap_regions) {
        size_t cap = shm->cap_regions ? shm->cap_regions * 2 : 8;
        imagen_shm_ref **grown = realloc(shm->regions, cap * sizeof(*grown));
        if (grown == NULL) {
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        } else {
            shm->regions = grown;
            shm->cap_regions = cap;
        }
    }
    if (err == NULL)
        shm->regions[shm->n_regions++] = r;
    pthread_mutex_unlock(&shm->mu);
    if (err != NULL)
        region_free(r);
    return err;
}

imagen_error *
imagen_shm_unregister(imagen_shm *shm, const char *name)
{
    imagen_shm_ref **removed = NULL;
    size_t n_removed = 0;
    pthread_mutex_lock(&shm->mu);
    if (name == NULL) {
        /* Hand the whole array over; the registry starts empty again. */
        removed = shm->regions;
        n_removed = shm->n_regions;
        shm->regions = NULL;
        shm->n_regions = shm->cap_regions = 0;
    } else {
        size_t i = find_locked(shm, name);
        if (i < shm->n_regions) {
            imagen_shm_ref *r = shm->regions[i];
            memmove(&shm->regions[i], &shm->regions[i + 1], (shm->n_regions - i - 1) * sizeof(*shm->regions));
            shm->n_regions--;
            pthread_mutex_unlock(&shm->mu);
            /* The registry's reference; unmaps unless a request holds one. */
            imagen_shm_release(r);
            return NULL;
        }
    }
    pthread_mutex_unlock(&shm->mu);
    for (size_t i = 0; i < n_removed; i++)
        imagen_shm_release(removed[i]);
    free(removed);
    return NULL;
}

imagen_error *
imagen_shm_status(imagen_shm *shm, const char *name, imagen_shm_region_status **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    imagen_error *err = NULL;
    pthread_mutex_lock(&shm->mu);
    size_t first = 0, count = shm->n_regions;
    if (name != NULL) {
        first = find_locked(shm, name);
        count = first < shm->n_regions ? 1 : 0;
        if (count == 0)
            err = imagen_error_new(IMAGEN_ERR_NOT_FOUND, "Unable to find system shared memory region: '%s'", name);
    }
    imagen_shm_region_status *s = count ? calloc(count, sizeof(*s)) : NULL;
    if (count && s == NULL)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; err == NULL && i < count; i++) {
        const imagen_shm_ref *r = shm->regions[first + i];
        s[i].name = strdup(r->name);
        s[i].key = strdup(r->key);
        s[i].offset = r->offset;
        s[i].byte_size = r->byte_size;
        if (s[i].name == NULL || s[i].key == NULL)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    pthread_mutex_unlock(&shm->mu);
    if (err != NULL) {
        imagen_shm_status_free(s, count);
        return err;
    }
    *out = s;
    *n = count;
    return NULL;
}

void
imagen_shm_status_free(imagen_shm_region_status *regions, size_t n)
{
    if (regions == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(regions[i].name);
        free(regions[i].key);
    }
    free(regions);
}

imagen_error *
imagen_shm_acquire(imagen_shm *shm, const char *name, uint64_t offset, uint64_t byte_size, void **addr,
                   imagen_shm_ref **ref)
{
    *addr = NULL;
    *ref = NULL;
    pthread_mutex_lock(&shm->mu);
    size_t i = find_locked(shm, name);
    if (i == shm->n_regions) {
        pthread_mutex_unlock(&shm->mu);
        return imagen_error_new(IMAGEN_ERR_NOT_FOUND, "Unable to find shared memory region: '%s'", name);
    }
    imagen_shm_ref *r = shm->regions[i];
    /* Written so that nothing can wrap: offset <= size first, then the
     * remaining room. */
    if (offset > r->byte_size || byte_size > r->byte_size - offset) {
        uint64_t size = r->byte_size;
        pthread_mutex_unlock(&shm->mu);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "Invalid offset + byte size for shared memory region: '%s' (offset %" PRIu64
                                ", byte_size %" PRIu64 ", region size %" PRIu64 ")",
                                name, offset, byte_size, size);
    }
    atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&shm->mu);
    *addr = r->base + offset;
    *ref = r;
    return NULL;
}
