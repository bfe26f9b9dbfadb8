/*
 * System shared memory on the client side (spec §1.13): regions this
 * process creates (shm_open + ftruncate + mmap under a unique key) and the
 * register / unregister / status calls, which each transport carries.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "client/client_internal.h"

struct imagen_shm_region {
    char key[64];  /* "/imagen_<pid>_<n>_<random>" */
    void *data;    /* the mapping */
    size_t size;   /* bytes mapped (= object size) */
    bool unlinked; /* key already removed from /dev/shm */
};

/* Regions made by this process so far: part of the key, so two regions of
 * one process never collide even within one clock tick. */
static atomic_uint region_counter;

imagen_error *
imagen_shm_region_create(size_t byte_size, imagen_shm_region **out)
{
    if (byte_size == 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "a shared-memory region needs byte_size > 0");
    imagen_shm_region *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* pid + counter make the key unique in this process's lifetime; the
     * clock bits guard against a reused pid finding a stale object, and
     * O_EXCL turns any remaining collision into an error, not sharing. */
    snprintf(r->key, sizeof(r->key), "/imagen_%ld_%u_%08lx", (long)getpid(), atomic_fetch_add(&region_counter, 1),
             (unsigned long)(ts.tv_nsec ^ ts.tv_sec) & 0xffffffffUL);
    int fd = shm_open(r->key, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        imagen_error *err = imagen_error_new(IMAGEN_ERR_INTERNAL, "shm_open(%s): %s", r->key, strerror(errno));
        free(r);
        return err;
    }
    imagen_error *err = NULL;
    if (ftruncate(fd, (off_t)byte_size) != 0) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot size shared memory %s to %zu bytes: %s", r->key, byte_size,
                               strerror(errno));
    } else {
        r->data = mmap(NULL, byte_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (r->data == MAP_FAILED)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot map shared memory %s (%zu bytes): %s", r->key,
                                   byte_size, strerror(errno));
    }
    close(fd);
    if (err != NULL) {
        shm_unlink(r->key);
        free(r);
        return err;
    }
    r->size = byte_size;
    *out = r;
    return NULL;
}

void
imagen_shm_region_unlink(imagen_shm_region *r)
{
    if (r == NULL || r->unlinked)
        return;
    shm_unlink(r->key);
    r->unlinked = true;
}

void
imagen_shm_region_destroy(imagen_shm_region *r)
{
    if (r == NULL)
        return;
    munmap(r->data, r->size);
    imagen_shm_region_unlink(r);
    free(r);
}

bool
imagen_shm_region_release(imagen_shm_region *r, size_t offset, size_t byte_size)
{
    if (r == NULL || offset >= r->size)
        return true;
    if (byte_size > r->size - offset)
        byte_size = r->size - offset;
    /* Whole pages only: the page a range starts or ends in may hold the
     * neighbouring tensor's bytes. The mapping is page-aligned. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t start = (offset + page - 1) / page * page, end = (offset + byte_size) / page * page;
    if (end <= start)
        return true;
    /* MADV_REMOVE frees the shared object's pages themselves (a hole
     * punched in it), not just this mapping's view: the server's mapping
     * of them goes too, and later reads of either side see zeros. */
    return madvise((char *)r->data + start, end - start, MADV_REMOVE) == 0;
}

void *
imagen_shm_region_data(const imagen_shm_region *r)
{
    return r->data;
}

size_t
imagen_shm_region_size(const imagen_shm_region *r)
{
    return r->size;
}

const char *
imagen_shm_region_key(const imagen_shm_region *r)
{
    return r->key;
}

/* ---- server calls ---------------------------------------------------------- */

imagen_error *
imagen_client_shm_register(imagen_client *c, const char *name, const char *key, size_t offset, size_t byte_size)
{
    if (name == NULL || name[0] == '\0' || key == NULL || key[0] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "registering shared memory needs a region name and a key");
    return c->t->shm(c, IMAGEN__SHM_REGISTER, name, key, offset, byte_size, NULL);
}

imagen_error *
imagen_client_shm_unregister(imagen_client *c, const char *name)
{
    return c->t->shm(c, IMAGEN__SHM_UNREGISTER, name ? name : "", NULL, 0, 0, NULL);
}

imagen_error *
imagen_client_shm_status(imagen_client *c, const char *name, char **json)
{
    return c->t->shm(c, IMAGEN__SHM_STATUS, name ? name : "", NULL, 0, 0, json);
}
