/*
 * A per-thread scratch block for parsing request JSON (http_jsondoc.c).
 *
 * An inference request's JSON document lives only while
 * imagen__http_infer_build() copies what it needs out of it, so its values
 * can sit in memory the parsing thread owns and reuses: a small request then
 * parses without calling malloc at all, and nothing it allocated crosses to
 * another thread to be freed. Larger documents spill into chunks the
 * document frees itself.
 */
#include "http/http_internal.h"

#include <pthread.h>
#include <stdlib.h>

#define SCRATCH_BYTES (64u << 10)

typedef struct scratch {
    void *base;
    bool busy;
} scratch;

static _Thread_local scratch tls_scratch;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t buffer_key; /* frees a thread's block when the thread exits */
static bool key_ok;

static void
free_block(void *base)
{
    free(base);
}

static void
make_key(void)
{
    key_ok = pthread_key_create(&buffer_key, free_block) == 0;
}

void *
imagen__http_scratch_acquire(size_t *cap)
{
    scratch *s = &tls_scratch;
    *cap = 0;
    if (s->busy)
        return NULL;
    if (s->base == NULL) {
        pthread_once(&key_once, make_key);
        if (!key_ok)
            return NULL;
        void *base = malloc(SCRATCH_BYTES);
        if (base == NULL)
            return NULL;
        if (pthread_setspecific(buffer_key, base) != 0) {
            free(base);
            return NULL;
        }
        s->base = base;
    }
    s->busy = true;
    *cap = SCRATCH_BYTES;
    return s->base;
}

void
imagen__http_scratch_release(void *block)
{
    if (block != NULL && block == tls_scratch.base)
        tls_scratch.busy = false;
}
