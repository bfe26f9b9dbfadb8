/*
 * The shared-memory registry: register/status/unregister, bounds checks
 * that cannot overflow, and mappings that outlive an unregister while a
 * reference is held.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm/shm.h"
#include "test.h"

#define OBJ_BYTES 8192

static char key[64];

/* Creates the POSIX object the tests register, filled with i % 251. */
static void
make_object(void)
{
    snprintf(key, sizeof(key), "/imagen_unit_shm_%d", (int)getpid());
    int fd = shm_open(key, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, OBJ_BYTES) == 0);
    unsigned char *p = mmap(NULL, OBJ_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED);
    for (int i = 0; i < OBJ_BYTES; i++)
        p[i] = (unsigned char)(i % 251);
    munmap(p, OBJ_BYTES);
    close(fd);
}

static void
test_register_status_unregister(void)
{
    imagen_shm *shm;
    CHECK_OK(imagen_shm_create(&shm));
    CHECK_OK(imagen_shm_register(shm, "a", key, 0, 4096));
    CHECK_OK(imagen_shm_register(shm, "b", key, 5000, 100)); /* not page-aligned */
    imagen_error *e = imagen_shm_register(shm, "a", key, 0, 16);
    CHECK_INT_EQ(imagen_error_code_of(e), IMAGEN_ERR_ALREADY_EXISTS);
    CHECK_STR_EQ(imagen_error_message(e), "shared memory region 'a' already in manager");
    imagen_error_free(e);
    imagen_shm_region_status *st;
    size_t n;
    CHECK_OK(imagen_shm_status(shm, NULL, &st, &n));
    CHECK_INT_EQ(n, 2);
    CHECK_STR_EQ(st[1].name, "b");
    CHECK_STR_EQ(st[1].key, key);
    CHECK_INT_EQ(st[1].offset, 5000);
    CHECK_INT_EQ(st[1].byte_size, 100);
    imagen_shm_status_free(st, n);
    e = imagen_shm_status(shm, "zz", &st, &n);
    CHECK_INT_EQ(imagen_error_code_of(e), IMAGEN_ERR_NOT_FOUND);
    imagen_error_free(e);
    CHECK_OK(imagen_shm_unregister(shm, "a"));
    CHECK_OK(imagen_shm_unregister(shm, "a")); /* unknown: not an error */
    CHECK_OK(imagen_shm_status(shm, NULL, &st, &n));
    CHECK_INT_EQ(n, 1);
    imagen_shm_status_free(st, n);
    CHECK_OK(imagen_shm_unregister(shm, NULL));
    CHECK_OK(imagen_shm_status(shm, NULL, &st, &n));
    CHECK_INT_EQ(n, 0);
    imagen_shm_destroy(shm);
}

static void
test_register_rejects_bad_ranges(void)
{
    imagen_shm *shm;
    CHECK_OK(imagen_shm_create(&shm));
    const uint64_t bad[][2] = {{0, OBJ_BYTES + 1}, {OBJ_BYTES, 1}, {UINT64_MAX, 1}, {1, UINT64_MAX}, {0, 0}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        imagen_error *e = imagen_shm_register(shm, "r", key, bad[i][0], bad[i][1]);
        CHECK_INT_EQ(imagen_error_code_of(e), IMAGEN_ERR_INVALID_ARG);
        imagen_error_free(e);
    }
    imagen_error *e = imagen_shm_register(shm, "r", "/imagen_unit_shm_does_not_exist", 0, 1);
    CHECK_INT_EQ(imagen_error_code_of(e), IMAGEN_ERR_INTERNAL);
    imagen_error_free(e);
    imagen_shm_destroy(shm);
}

static void
test_acquire_bounds(void)
{
    imagen_shm *shm;
    CHECK_OK(imagen_shm_create(&shm));
    CHECK_OK(imagen_shm_register(shm, "r", key, 5000, 1000));
    void *addr;
    imagen_shm_ref *ref;
    CHECK_OK(imagen_shm_acquire(shm, "r", 10, 990, &addr, &ref));
    CHECK_INT_EQ(((unsigned char *)addr)[0], 5010 % 251);
    imagen_shm_release(ref);
    const uint64_t bad[][2] = {{0, 1001}, {1001, 0}, {UINT64_MAX, 2}, {2, UINT64_MAX}, {1000, 1}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        imagen_error *e = imagen_shm_acquire(shm, "r", bad[i][0], bad[i][1], &addr, &ref);
        CHECK_INT_EQ(imagen_error_code_of(e), IMAGEN_ERR_INVALID_ARG);
        CHECK(ref == NULL);
        imagen_error_free(e);
    }
    imagen_error *e = imagen_shm_acquire(shm, "nope", 0, 1, &addr, &ref);
    CHECK_INT_EQ(imagen_error_code_of(e), IMAGEN_ERR_NOT_FOUND);
    imagen_error_free(e);
    imagen_shm_destroy(shm);
}

static void
test_mapping_outlives_unregister(void)
{
    imagen_shm *shm;
    CHECK_OK(imagen_shm_create(&shm));
    CHECK_OK(imagen_shm_register(shm, "r", key, 0, 4096));
    void *addr;
    imagen_shm_ref *ref;
    CHECK_OK(imagen_shm_acquire(shm, "r", 100, 8, &addr, &ref));
    CHECK_OK(imagen_shm_unregister(shm, "r"));
    void *addr2;
    imagen_shm_ref *ref2;
    imagen_error *e = imagen_shm_acquire(shm, "r", 0, 1, &addr2, &ref2);
    CHECK_INT_EQ(imagen_error_code_of(e), IMAGEN_ERR_NOT_FOUND);
    imagen_error_free(e);
    imagen_shm_destroy(shm);
    /* Still mapped: the reference outlives both the name and the registry. */
    CHECK_INT_EQ(((unsigned char *)addr)[0], 100 % 251);
    imagen_shm_release(ref);
}

int
main(void)
{
    make_object();
    RUN(test_register_status_unregister);
    RUN(test_register_rejects_bad_ranges);
    RUN(test_acquire_bounds);
    RUN(test_mapping_outlives_unregister);
    shm_unlink(key);
    TEST_MAIN_END();
}
