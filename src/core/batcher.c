/*
 * The scheduler of one model version: the dynamic batcher of spec §5, and the
 * default scheduler as the same object with batching off (B_max = 1).
 * Frontend threads enqueue and cancel, instance threads pull batches with
 * imagen_batcher_next_batch(), and, when some queue policy has a timeout, one
 * timer thread rejects or delays requests whose deadline passes. All of them
 * meet on one mutex, b->mu, which guards the level queues, the deadline heap,
 * the ordering list and every batcher-owned field of a queued item. Waits are
 * condition variables on CLOCK_MONOTONIC that always end on an event (enqueue,
 * deadline, shutdown); nothing polls. This file never calls on_reject or
 * deliver with b->mu held, and never allocates per request.
 */
#include "core/batcher.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/sync.h"
#include "common/time.h"

/* First size of the deadline heap; it doubles when full (amortized, never
 * once per request). */
#define IMAGEN_BATCHER_HEAP_INITIAL_COUNT 64
#define HEAP_NONE SIZE_MAX

typedef struct item_list {
    imagen_batch_item *head, *tail;
} item_list;

/* One priority level: a FIFO of unexpired items and, behind it, a FIFO of
 * items that timed out under DELAY (spec §5.7); scan order is live, delayed. */
typedef struct level_queue {
    item_list live;
    item_list delayed;
    size_t count;               /* live + delayed, for max_queue_size */
    imagen_queue_policy policy; /* copy of the level's policy */
    uint64_t timeout_ns;        /* policy.default_timeout_us in ns; 0 = none */
} level_queue;

struct imagen_batcher {
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* instance threads wait here */
    pthread_cond_t timer_cv; /* the timer thread waits here */

    /* ---- immutable after create ---- */
    void (*on_reject)(void *ctx, imagen_batch_item *item, imagen_error *err, imagen_fail_reason reason);
    void *ctx;
    uint64_t max_batch;  /* B_max = max(1, max_batch_size); 1 with batching off */
    uint64_t *preferred; /* P, sorted ascending, no duplicates, never empty */
    size_t n_preferred;
    uint64_t max_preferred; /* P_max */
    uint64_t delay_ns;      /* D in ns; 0 = greedy */
    bool preserve_ordering;
    bool levels_on;           /* priority_levels > 0 */
    size_t n_levels;          /* >= 1 */
    uint64_t default_level;   /* 1-based; meaningful when levels_on */
    level_queue *levels;      /* [n_levels]; index = level - 1 (0 when levels off) */
    size_t delay_until_count; /* 0 = no hold */
    bool has_timer;
    pthread_t timer;

    /* ---- guarded by mu ---- */
    imagen_batch_item **heap; /* min-heap on deadline_ns of queued, undelayed items */
    size_t heap_len, heap_cap;
    bool shutdown;      /* no more enqueues; drain and return 0 */
    bool stop_timer;    /* destroy: the timer thread exits */
    bool hold_released; /* delay_until_count reached (for good) */
    uint64_t total_enqueued;
    uint64_t next_sequence; /* next dequeue sequence number */
    item_list held;         /* preserve_ordering: finished, sorted by sequence */
    uint64_t next_deliver;  /* sequence the ordering list releases next */
    bool delivering;        /* one thread is running deliver callbacks */
    atomic_size_t pending;  /* queued items; written under mu, read lock-free */
    atomic_size_t in_hand;  /* batches taken but not yet started (bypass_ok) */
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static uint64_t
sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t
us_to_ns(uint64_t us)
{
    return us > UINT64_MAX / 1000u ? UINT64_MAX : us * 1000u;
}

static uint64_t
item_size(const imagen_batch_item *it)
{
    return it->batch_size ? it->batch_size : 1;
}

static void
list_append(item_list *l, imagen_batch_item *it)
{
    it->next = NULL;
    it->prev = l->tail;
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
}

static void
list_unlink(item_list *l, imagen_batch_item *it)
{
    if (it->prev)
        it->prev->next = it->next;
    else
        l->head = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        l->tail = it->prev;
    it->prev = it->next = NULL;
}

static level_queue *
level_of(imagen_batcher *b, const imagen_batch_item *it)
{
    return &b->levels[it->level ? it->level - 1 : 0];
}

static bool
holding(const imagen_batcher *b)
{
    return b->delay_until_count > 0 && !b->hold_released;
}

static bool
is_preferred(const imagen_batcher *b, uint64_t size)
{
    size_t lo = 0, hi = b->n_preferred;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->preferred[mid] == size)
            return true;
        if (b->preferred[mid] < size)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static bool
same_shape(const imagen_batch_item *a, const imagen_batch_item *c)
{
    if (a->shape_sig_len != c->shape_sig_len)
        return false;
    if (a->shape_sig_len == 0)
        return true;
    if (a->shape_sig == NULL || c->shape_sig == NULL)
        return a->shape_sig == c->shape_sig;
    return memcmp(a->shape_sig, c->shape_sig, a->shape_sig_len * sizeof(int64_t)) == 0;
}

/* ------------------------------------------------------------------------ */
/* Deadline heap: binary min-heap of item pointers, each item knowing its    */
/* slot, so push, pop and removal of any item are O(log n).                  */
/* ------------------------------------------------------------------------ */

static void
heap_set(imagen_batcher *b, size_t i, imagen_batch_item *it)
{
    b->heap[i] = it;
    it->heap_index = i;
}

static void
heap_sift_up(imagen_batcher *b, size_t i)
{
    imagen_batch_item *it = b->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (b->heap[parent]->deadline_ns <= it->deadline_ns)
            break;
        heap_set(b, i, b->heap[parent]);
        i = parent;
    }
    heap_set(b, i, it);
}

static void
heap_sift_down(imagen_batcher *b, size_t i)
{
    imagen_batch_item *it = b->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= b->heap_len)
            break;
        if (child + 1 < b->heap_len && b->heap[child + 1]->deadline_ns < b->heap[child]->deadline_ns)
            child++;
        if (it->deadline_ns <= b->heap[child]->deadline_ns)
            break;
        heap_set(b, i, b->heap[child]);
        i = child;
    }
    heap_set(b, i, it);
}

/* Returns false when the heap cannot grow (the item is then not queued). */
static bool
heap_push(imagen_batcher *b, imagen_batch_item *it)
{
    if (b->heap_len == b->heap_cap) {
        size_t cap = b->heap_cap ? b->heap_cap * 2 : IMAGEN_BATCHER_HEAP_INITIAL_COUNT;
        if (cap > SIZE_MAX / sizeof(*b->heap))
            return false;
        imagen_batch_item **h = realloc(b->heap, cap * sizeof(*h));
        if (h == NULL)
            return false;
        b->heap = h;
        b->heap_cap = cap;
    }
    heap_set(b, b->heap_len++, it);
    heap_sift_up(b, it->heap_index);
    return true;
}

static void
heap_remove(imagen_batcher *b, imagen_batch_item *it)
{
    size_t i = it->heap_index;
    if (i == HEAP_NONE)
        return;
    it->heap_index = HEAP_NONE;
    imagen_batch_item *last = b->heap[--b->heap_len];
    if (last == it)
        return;
    heap_set(b, i, last);
    /* The moved item may belong above or below slot i; one of these is a no-op. */
    heap_sift_up(b, i);
    heap_sift_down(b, last->heap_index);
}

/* ------------------------------------------------------------------------ */
/* Queue operations (all with b->mu held)                                    */
/* ------------------------------------------------------------------------ */

/* Takes a queued item out of its level and the heap. O(log n). */
static void
remove_item(imagen_batcher *b, imagen_batch_item *it)
{
    level_queue *lq = level_of(b, it);
    list_unlink(it->delayed ? &lq->delayed : &lq->live, it);
    heap_remove(b, it);
    lq->count--;
    it->queued = false;
    atomic_fetch_sub_explicit(&b->pending, 1, memory_order_relaxed);
}

/* Applies the level's timeout action to an expired item (spec §5.7): REJECT
 * moves it to `rejects` (completed after unlocking), DELAY moves it behind
 * every unexpired item of its level, where it waits to be executed. */
static void
expire_item(imagen_batcher *b, imagen_batch_item *it, item_list *rejects)
{
    level_queue *lq = level_of(b, it);
    if (lq->policy.timeout_action == IMAGEN_TIMEOUT_DELAY) {
        heap_remove(b, it);
        list_unlink(&lq->live, it);
        it->delayed = true;
        list_append(&lq->delayed, it);
    } else {
        remove_item(b, it);
        list_append(rejects, it);
    }
}

static bool
expired_at(const imagen_batch_item *it, uint64_t now)
{
    return !it->delayed && it->deadline_ns != 0 && it->deadline_ns <= now;
}

/* Completes dropped items through on_reject. Called WITHOUT b->mu: the
 * callback may free the item, so its link is read first. */
static void
flush_rejects(imagen_batcher *b, item_list *l, imagen_error_code code, const char *msg, imagen_fail_reason reason)
{
    imagen_batch_item *it = l->head;
    l->head = l->tail = NULL;
    while (it) {
        imagen_batch_item *next = it->next;
        it->prev = it->next = NULL;
        b->on_reject(b->ctx, it, imagen_error_new(code, "%s", msg), reason);
        it = next;
    }
}

static void
flush_timeouts(imagen_batcher *b, item_list *l)
{
    flush_rejects(b, l, IMAGEN_ERR_UNAVAILABLE, "Request timeout expired", IMAGEN_FAIL_REJECTED);
}

/* ------------------------------------------------------------------------ */
/* Batch formation (spec §5.3)                                               */
/* ------------------------------------------------------------------------ */

typedef struct formed {
    size_t n;      /* items in the pending set (out[0..n)) */
    uint64_t size; /* pending batch size */
    size_t cut_n;  /* items up to the recorded cut point; 0 = none */
    bool send_now;
    uint64_t oldest_ns; /* enqueue time of the oldest pending item */
} formed;

/* Scans the queues in priority order (level 1 first; live, then delayed)
 * from the head, applying §5.3 step 3 to each item and storing the pending
 * set in out[]. Expired items met on the way are rejected or delayed.
 * Work bound: at most min(cap, B_max) items are added plus one that stops
 * the scan, plus the expired items handled (each item expires once, so that
 * part is amortized O(1) per request), plus one step per empty level. */
static void
scan(imagen_batcher *b, uint64_t now, imagen_batch_item **out, size_t cap, formed *f, item_list *rejects)
{
    const imagen_batch_item *first = NULL;
    memset(f, 0, sizeof(*f));
    f->oldest_ns = UINT64_MAX;
    for (size_t l = 0; l < b->n_levels; l++) {
        level_queue *lq = &b->levels[l];
        item_list *lists[2] = {&lq->live, &lq->delayed};
        for (int k = 0; k < 2; k++) {
            imagen_batch_item *next;
            for (imagen_batch_item *it = lists[k]->head; it; it = next) {
                next = it->next;
                if (expired_at(it, now)) {
                    /* A DELAY item reappears at the delayed tail, which this
                     * loop visits after the live list. */
                    expire_item(b, it, rejects);
                    continue;
                }
                uint64_t s = item_size(it);
                if (first == NULL) {
                    first = it;
                } else {
                    /* Past every preferred size: remember the longest prefix
                     * that is not, even if it is not preferred itself. */
                    if (f->size + s > b->max_preferred && f->cut_n == 0)
                        f->cut_n = f->n;
                    if (f->size + s > b->max_batch || !same_shape(first, it) || f->n == cap) {
                        f->send_now = true;
                        return;
                    }
                }
                out[f->n++] = it;
                f->size += s;
                if (it->enqueue_ns < f->oldest_ns)
                    f->oldest_ns = it->enqueue_ns;
                /* Overwrites an earlier one: the largest reachable wins. */
                if (is_preferred(b, f->size))
                    f->cut_n = f->n;
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Timer thread                                                              */
/* ------------------------------------------------------------------------ */

/* Sleeps until the nearest deadline in the heap (or until an enqueue brings
 * a nearer one), then handles every item whose deadline has passed. Work per
 * wake-up: O(e log n) for e expired items. */
static void *
timer_main(void *arg)
{
    imagen_batcher *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stop_timer) {
        uint64_t now = imagen_time_now_ns();
        item_list rejects = {NULL, NULL};
        bool changed = false;
        while (b->heap_len > 0 && b->heap[0]->deadline_ns <= now) {
            expire_item(b, b->heap[0], &rejects);
            changed = true;
        }
        if (changed) {
            /* The pending set changed under a waiting instance: let one of
             * them rescan rather than sleep to a stale deadline. */
            pthread_cond_signal(&b->work_cv);
        }
        if (rejects.head) {
            pthread_mutex_unlock(&b->mu);
            flush_timeouts(b, &rejects);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        if (b->heap_len == 0)
            pthread_cond_wait(&b->timer_cv, &b->mu);
        else
            imagen_cond_wait_until(&b->timer_cv, &b->mu, b->heap[0]->deadline_ns);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */
/* ------------------------------------------------------------------------ */

static int
cmp_u64(const void *a, const void *c)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)c;
    return x < y ? -1 : x > y;
}

static void
free_batcher(imagen_batcher *b)
{
    free(b->preferred);
    free(b->levels);
    free(b->heap);
    free(b);
}

imagen_error *
imagen_batcher_create(const imagen_batcher_options *opts, imagen_batcher **out)
{
    if (opts == NULL || opts->config == NULL || opts->on_reject == NULL || out == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "batcher: missing config or on_reject callback");
    const imagen_model_config *cfg = opts->config;
    const imagen_dynamic_batching *db = &cfg->dynamic_batching;
    bool dyn = cfg->has_dynamic_batching;
    bool batching = dyn && cfg->max_batch_size > 0;

    imagen_batcher *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "batcher for model '%s': out of memory", cfg->name);
    b->on_reject = opts->on_reject;
    b->ctx = opts->ctx;
    b->delay_until_count = opts->delay_until_count;
    b->max_batch = batching ? (uint64_t)cfg->max_batch_size : 1;
    b->delay_ns = batching ? us_to_ns(db->max_queue_delay_us) : 0;
    b->preserve_ordering = dyn && db->preserve_ordering;
    atomic_init(&b->pending, 0);

    /* P: the configured sizes, or {B_max} when none (what normalization
     * fills in; an empty P would make every batch a single request). */
    size_t np = batching ? db->n_preferred_batch_sizes : 0;
    b->preferred = calloc(np ? np : 1, sizeof(*b->preferred));
    if (b->preferred == NULL)
        goto oom;
    for (size_t i = 0; i < np; i++) {
        if (db->preferred_batch_sizes[i] > 0)
            b->preferred[b->n_preferred++] = (uint64_t)db->preferred_batch_sizes[i];
    }
    if (b->n_preferred == 0)
        b->preferred[b->n_preferred++] = b->max_batch;
    qsort(b->preferred, b->n_preferred, sizeof(*b->preferred), cmp_u64);
    size_t w = 1;
    for (size_t i = 1; i < b->n_preferred; i++) {
        if (b->preferred[i] != b->preferred[w - 1])
            b->preferred[w++] = b->preferred[i];
    }
    b->n_preferred = w;
    b->max_preferred = b->preferred[w - 1];

    /* Levels and their policies (spec §5.6). Without dynamic_batching there
     * is one unbounded queue without timeouts. */
    b->levels_on = dyn && db->priority_levels > 0;
    /* item->level is 32 bits wide. */
    if (b->levels_on && (db->priority_levels > UINT32_MAX || db->priority_levels > SIZE_MAX / sizeof(level_queue))) {
        free_batcher(b);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "model '%s': priority_levels too large", cfg->name);
    }
    b->n_levels = b->levels_on ? (size_t)db->priority_levels : 1;
    b->levels = calloc(b->n_levels, sizeof(*b->levels));
    if (b->levels == NULL)
        goto oom;
    b->default_level = db->default_priority_level;
    if (b->levels_on && (b->default_level < 1 || b->default_level > b->n_levels))
        b->default_level = 1; /* validation rejects this; stay in range anyway */
    for (size_t l = 0; l < b->n_levels; l++) {
        level_queue *lq = &b->levels[l];
        if (!dyn)
            memset(&lq->policy, 0, sizeof(lq->policy));
        else if (b->levels_on && db->level_policies != NULL)
            lq->policy = db->level_policies[l + 1];
        else
            lq->policy = db->default_queue_policy;
        lq->timeout_ns = us_to_ns(lq->policy.default_timeout_us);
        if (lq->timeout_ns != 0)
            b->has_timer = true;
    }

    if (pthread_mutex_init(&b->mu, NULL) != 0)
        goto oom;
    if (imagen_cond_init_monotonic(&b->work_cv) != 0) {
        pthread_mutex_destroy(&b->mu);
        goto oom;
    }
    if (imagen_cond_init_monotonic(&b->timer_cv) != 0) {
        pthread_cond_destroy(&b->work_cv);
        pthread_mutex_destroy(&b->mu);
        goto oom;
    }
    if (b->has_timer && pthread_create(&b->timer, NULL, timer_main, b) != 0) {
        pthread_cond_destroy(&b->timer_cv);
        pthread_cond_destroy(&b->work_cv);
        pthread_mutex_destroy(&b->mu);
        free_batcher(b);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "model '%s': cannot start the batcher timer thread", cfg->name);
    }
    *out = b;
    return NULL;

oom:
    free_batcher(b);
    return imagen_error_new(IMAGEN_ERR_INTERNAL, "batcher for model '%s': out of memory", cfg->name);
}

imagen_error *
imagen_batcher_enqueue(imagen_batcher *b, imagen_batch_item *item)
{
    uint32_t level = 0;
    if (b->levels_on) {
        uint64_t p = item->priority;
        level = (uint32_t)(p == 0 || p > b->n_levels ? b->default_level : p);
    }

    pthread_mutex_lock(&b->mu);
    if (b->shutdown) {
        pthread_mutex_unlock(&b->mu);
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "Server exiting: model is not accepting requests");
    }
    level_queue *lq = &b->levels[level ? level - 1 : 0];
    if (lq->policy.max_queue_size > 0 && lq->count >= lq->policy.max_queue_size) {
        pthread_mutex_unlock(&b->mu);
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "Exceeds maximum queue size");
    }

    /* Spec §5.7: an override may only shorten a nonzero default. */
    uint64_t timeout_ns = lq->timeout_ns;
    if (timeout_ns != 0 && lq->policy.allow_timeout_override && item->timeout_us != 0 &&
        us_to_ns(item->timeout_us) < timeout_ns)
        timeout_ns = us_to_ns(item->timeout_us);

    uint64_t now = imagen_time_now_ns();
    item->prev = item->next = NULL;
    item->enqueue_ns = now;
    item->deadline_ns = timeout_ns ? sat_add(now, timeout_ns) : 0;
    item->sequence = 0;
    item->level = level;
    item->delayed = false;
    item->order_done = false;
    item->heap_index = HEAP_NONE;
    item->deliver = NULL;
    item->deliver_ctx = NULL;
    if (item->deadline_ns != 0) {
        if (!heap_push(b, item)) {
            pthread_mutex_unlock(&b->mu);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "batcher: out of memory queueing request");
        }
        if (item->heap_index == 0)
            pthread_cond_signal(&b->timer_cv); /* a nearer deadline than the timer sleeps to */
    }
    list_append(&lq->live, item);
    item->queued = true;
    lq->count++;
    atomic_fetch_add_explicit(&b->pending, 1, memory_order_relaxed);
    b->total_enqueued++;

    if (holding(b)) {
        if (b->total_enqueued >= b->delay_until_count) {
            b->hold_released = true;
            pthread_cond_broadcast(&b->work_cv);
        }
    } else {
        /* One waiter is enough: it forms a batch or, if the batch is not
         * ready, re-waits; the early wake of §5.3 step 4 comes from this. */
        pthread_cond_signal(&b->work_cv);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

size_t
imagen_batcher_next_batch(imagen_batcher *b, imagen_batch_item **out, size_t cap)
{
    item_list rejects = {NULL, NULL};
    size_t taken = 0;
    if (IMAGEN_NEVER(cap == 0))
        return 0;

    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (rejects.head) {
            /* Complete rejected items before any wait, not after it. */
            pthread_mutex_unlock(&b->mu);
            flush_timeouts(b, &rejects);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        if (!b->shutdown && holding(b)) {
            pthread_cond_wait(&b->work_cv, &b->mu);
            continue;
        }
        if (atomic_load_explicit(&b->pending, memory_order_relaxed) == 0) {
            if (b->shutdown)
                break;
            pthread_cond_wait(&b->work_cv, &b->mu);
            continue;
        }

        uint64_t now = imagen_time_now_ns();
        formed f;
        scan(b, now, out, cap, &f, &rejects);
        /* During shutdown nothing waits for more requests: drain now. */
        bool delay_over = b->shutdown || (b->delay_ns != 0 && now - f.oldest_ns >= b->delay_ns);
        size_t take = 0;
        if (f.cut_n != 0 && !delay_over)
            take = f.cut_n; /* 1. a preferred (or P_max) cut point */
        else if (f.n == 0)
            continue; /* 2. all expired: flush, look again */
        else if (f.send_now || f.size >= b->max_preferred)
            take = f.n; /* 3. cannot grow */
        else if (delay_over || b->delay_ns == 0)
            take = f.n; /* 4. waited long enough, or greedy */

        if (take > 0) {
            for (size_t i = 0; i < take; i++) {
                remove_item(b, out[i]);
                out[i]->sequence = b->next_sequence++;
            }
            taken = take;
            atomic_fetch_add(&b->in_hand, 1);
            if (atomic_load_explicit(&b->pending, memory_order_relaxed) > 0)
                pthread_cond_signal(&b->work_cv); /* another instance may form the next */
            break;
        }
        if (rejects.head)
            continue;
        /* 5. Wait for the delay of the oldest pending request to run out, or
         * for an enqueue to make the batch preferred. Nearer queue deadlines
         * need no timed wake here: the timer thread handles them and then
         * signals work_cv. */
        imagen_cond_wait_until(&b->work_cv, &b->mu, sat_add(f.oldest_ns, b->delay_ns));
    }
    pthread_mutex_unlock(&b->mu);
    flush_timeouts(b, &rejects);
    return taken;
}

bool
imagen_batcher_cancel(imagen_batcher *b, imagen_batch_item *item)
{
    pthread_mutex_lock(&b->mu);
    bool queued = item->queued;
    if (queued)
        remove_item(b, item);
    pthread_mutex_unlock(&b->mu);
    if (!queued)
        return false;
    /* A waiting instance may be timing a batch that held this item; it
     * rescans when its wait ends, so no wake-up is needed. */
    b->on_reject(b->ctx, item, imagen_error_new(IMAGEN_ERR_CANCELLED, "Request cancelled"), IMAGEN_FAIL_CANCELED);
    return true;
}

size_t
imagen_batcher_pending_count(imagen_batcher *b)
{
    return atomic_load_explicit(&b->pending, memory_order_relaxed);
}

bool
imagen_batcher_bypass_ok(imagen_batcher *b)
{
    if (b->delay_ns != 0 || b->preserve_ordering || b->delay_until_count != 0 ||
        atomic_load_explicit(&b->pending, memory_order_relaxed) != 0 || atomic_load(&b->in_hand) != 0)
        return false;
    pthread_mutex_lock(&b->mu);
    bool ok =
        !b->shutdown && atomic_load_explicit(&b->pending, memory_order_relaxed) == 0 && atomic_load(&b->in_hand) == 0;
    pthread_mutex_unlock(&b->mu);
    return ok;
}

void
imagen_batcher_batch_started(imagen_batcher *b)
{
    atomic_fetch_sub(&b->in_hand, 1);
}

bool
imagen_batcher_preserves_ordering(const imagen_batcher *b)
{
    return b->preserve_ordering;
}

/* Inserts a finished item into b->held, sorted by sequence. Items mostly
 * finish in order, so the walk from the tail is short; it is bounded by the
 * number of finished items waiting, at most the requests in flight. */
static void
held_insert(imagen_batcher *b, imagen_batch_item *it)
{
    imagen_batch_item *after = b->held.tail;
    while (after && after->sequence > it->sequence)
        after = after->prev;
    it->prev = after;
    it->next = after ? after->next : b->held.head;
    if (it->next)
        it->next->prev = it;
    else
        b->held.tail = it;
    if (after)
        after->next = it;
    else
        b->held.head = it;
}

/* Runs the deliver callbacks of `l` in order, without b->mu. */
static void
deliver_list(item_list *l)
{
    imagen_batch_item *it = l->head;
    l->head = l->tail = NULL;
    while (it) {
        imagen_batch_item *next = it->next;
        it->prev = it->next = NULL;
        it->deliver(it, it->deliver_ctx);
        it = next;
    }
}

void
imagen_batcher_complete(imagen_batcher *b, imagen_batch_item *item, void (*deliver)(imagen_batch_item *item, void *ctx),
                        void *ctx)
{
    if (!b->preserve_ordering) {
        deliver(item, ctx);
        return;
    }
    pthread_mutex_lock(&b->mu);
    item->deliver = deliver;
    item->deliver_ctx = ctx;
    item->order_done = true;
    held_insert(b, item);
    /* Only one thread delivers at a time: two threads releasing consecutive
     * runs after unlocking could otherwise call deliver out of order. The
     * active one picks up whatever becomes ready meanwhile. */
    if (b->delivering) {
        pthread_mutex_unlock(&b->mu);
        return;
    }
    b->delivering = true;
    for (;;) {
        item_list ready = {NULL, NULL};
        while (b->held.head && b->held.head->sequence == b->next_deliver) {
            imagen_batch_item *it = b->held.head;
            list_unlink(&b->held, it);
            list_append(&ready, it);
            b->next_deliver++;
        }
        if (ready.head == NULL)
            break;
        pthread_mutex_unlock(&b->mu);
        deliver_list(&ready);
        pthread_mutex_lock(&b->mu);
    }
    b->delivering = false;
    pthread_mutex_unlock(&b->mu);
}

void
imagen_batcher_shutdown(imagen_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->shutdown = true;
    pthread_cond_broadcast(&b->work_cv);
    pthread_mutex_unlock(&b->mu);
}

void
imagen_batcher_destroy(imagen_batcher *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->mu);
    b->shutdown = true;
    b->stop_timer = true;
    pthread_cond_broadcast(&b->timer_cv);
    pthread_cond_broadcast(&b->work_cv);
    pthread_mutex_unlock(&b->mu);
    if (b->has_timer)
        pthread_join(b->timer, NULL);

    /* Nothing accepted is dropped silently: requests still queued (no
     * instance drained them) fail, and finished requests held behind one
     * that never completed are released in sequence order. */
    item_list left = {NULL, NULL};
    for (size_t l = 0; l < b->n_levels; l++) {
        level_queue *lq = &b->levels[l];
        item_list *lists[2] = {&lq->live, &lq->delayed};
        for (int k = 0; k < 2; k++) {
            while (lists[k]->head) {
                imagen_batch_item *it = lists[k]->head;
                remove_item(b, it);
                list_append(&left, it);
            }
        }
    }
    flush_rejects(b, &left, IMAGEN_ERR_UNAVAILABLE, "Server exiting: request was not executed", IMAGEN_FAIL_OTHER);
    deliver_list(&b->held);

    pthread_cond_destroy(&b->timer_cv);
    pthread_cond_destroy(&b->work_cv);
    pthread_mutex_destroy(&b->mu);
    free_batcher(b);
}
