/*
 * A per-thread scratch buffer for the JSON of inference requests.
 *
 * jansson allocates every value it parses separately: a 16-element JSON
 * tensor costs about forty malloc/free pairs, more than everything else a
 * request allocates together, and with the server's single malloc arena
 * (see server_main.c) those calls contend for one lock across the HTTP and
 * instance threads. The request's JSON lives only while
 * imagen__http_infer_build() copies what it needs out of it, so its values
 * can come from a bump buffer owned by the parsing thread and be dropped
 * wholesale when the parse is over.
 *
 * jansson's allocator hooks are process-wide, so the hooks behave exactly
 * like malloc() and free() except on a thread inside a scratch section:
 * there, allocations come from the thread's buffer while it has room (then
 * from malloc), and freeing a pointer inside the thread's buffer does
 * nothing. That keeps every other jansson user (configs, admin endpoints,
 * metrics) unaffected. The one rule: no JSON value created inside a section
 * may outlive it or reach another thread.
 */
#include "http/http_internal.h"

#include <pthread.h>
#include <stdlib.h>

#define SCRATCH_BYTES (64u << 10) /* per HTTP thread; larger documents spill to malloc */
#define SCRATCH_ALIGN 16u

typedef struct scratch {
    char *base;
    size_t used;
    bool active;
} scratch;

static _Thread_local scratch tls_scratch;
static bool installed;
static pthread_key_t buffer_key; /* frees a thread's buffer when the thread exits */

static void
free_buffer(void *base)
{
    free(base);
}

static void *
scratch_malloc(size_t n)
{
    scratch *s = &tls_scratch;
    if (s->active) {
        size_t need = (n + SCRATCH_ALIGN - 1) & ~(size_t)(SCRATCH_ALIGN - 1);
        if (need >= n && need <= SCRATCH_BYTES - s->used) {
            void *p = s->base + s->used;
            s->used += need;
            return p;
        }
    }
    return malloc(n);
}

static void
scratch_free(void *p)
{
    scratch *s = &tls_scratch;
    if (s->base != NULL && (char *)p >= s->base && (char *)p < s->base + SCRATCH_BYTES)
        return; /* reclaimed when the section ends */
    free(p);
}

void
imagen_http_global_init(void)
{
    if (pthread_key_create(&buffer_key, free_buffer) != 0)
        return; /* without the key a buffer would leak per thread: stay on malloc */
    json_set_alloc_funcs(scratch_malloc, scratch_free);
    installed = true;
}

bool
imagen__http_scratch_begin(void)
{
    scratch *s = &tls_scratch;
    if (!installed || s->active)
        return false;
    if (s->base == NULL) {
        char *base = malloc(SCRATCH_BYTES);
        if (base == NULL)
            return false;
        if (pthread_setspecific(buffer_key, base) != 0) {
            free(base);
            return false;
        }
        s->base = base;
    }
    s->used = 0;
    s->active = true;
    return true;
}

void
imagen__http_scratch_end(bool begun)
{
    if (begun)
        tls_scratch.active = false;
}
