/*
 * The scheduler of one model version: the dynamic batcher of spec §5, and
 * the default scheduler (no dynamic_batching: every request executes alone)
 * as the same object with batching off.
 *
 * Shape of the design: instances PULL. Each instance thread, when free, calls
 * imagen_batcher_next_batch(), which forms a batch under the batcher lock by
 * the rules of spec §5.3 and hands it over; so "one batch per free instance"
 * holds by construction and a batch is formed at the last possible moment,
 * which is when it can be largest. Queue-timeout expiry (REJECT) must not
 * wait for an instance to become free, so a batcher whose policies have
 * timeouts runs one small timer thread that rejects expired requests.
 *
 * Items are imagen_batch_item structs embedded in the core's requests; the
 * batcher links them into its queues and never allocates per request.
 *
 * Threads: enqueue/cancel from frontend threads, next_batch from instance
 * threads, the timer thread; every entry point is thread-safe. Callbacks
 * (on_reject) are invoked WITHOUT the batcher lock held.
 */
#ifndef IMAGEN_CORE_BATCHER_H
#define IMAGEN_CORE_BATCHER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imagen/error.h"
#include "imagen/model_config.h"
#include "imagen/server.h"

/* Name of the test-only environment variable that holds batch formation
 * until that many requests are queued (then the hold ends for good), so that
 * tests get exact batch composition. Like TRITONSERVER_DELAY_SCHEDULER. */
#define IMAGEN_BATCHER_DELAY_ENV "IMAGEN_DELAY_SCHEDULER"

typedef struct imagen_batcher imagen_batcher;

typedef struct imagen_batch_item {
    /* ---- set by the caller before enqueue, read-only afterwards ---- */
    uint64_t batch_size; /* >= 1 (a non-batching request counts 1) */
    uint64_t priority;   /* request's priority; 0 = model default */
    uint64_t timeout_us; /* request's timeout override; 0 = none */
    /* Shape signature for requests that must agree to share a batch: the
     * non-batch dims of every input, in a canonical input order, with the
     * input count folded in. NULL/0 when the model needs no shape check. */
    const int64_t *shape_sig;
    size_t shape_sig_len;
    /* ---- owned by the batcher (zero them before the first enqueue; the
     * caller may read them, e.g. `sequence` after next_batch, but never
     * writes them) ---- */
    struct imagen_batch_item *prev, *next; /* queue links; reused for the ordering list */
    uint64_t enqueue_ns;                   /* monotonic time of enqueue */
    uint64_t deadline_ns;                  /* queue-timeout deadline, monotonic ns; 0 = none */
    uint64_t sequence;                     /* dequeue order (for preserve_ordering) */
    uint32_t level;                        /* priority level it was queued at (0 when levels off) */
    bool delayed;                          /* timed out under DELAY policy */
    bool queued;                           /* currently linked in a queue */
    bool order_done;                       /* preserve_ordering: completed, waiting for earlier ones */
    size_t heap_index;                     /* slot in the deadline heap; SIZE_MAX = not in it */
    /* preserve_ordering: the deliver callback given to complete(), kept so
     * a held item can be delivered later on another thread. */
    void (*deliver)(struct imagen_batch_item *item, void *ctx);
    void *deliver_ctx;
} imagen_batch_item;

typedef struct imagen_batcher_options {
    const imagen_model_config *config; /* borrowed; outlives the batcher */
    size_t n_instances;                /* active (non-passive) instances, >= 1; informational:
                                          instances pull, so no prefetch count is needed */
    /* Completes an item the batcher drops from its queue (never executed):
     * queue timeout with REJECT (UNAVAILABLE "Request timeout expired",
     * reason REJECTED) or cancellation (CANCELLED, reason CANCELED). Takes
     * ownership of `err`. Called without the lock held. */
    void (*on_reject)(void *ctx, imagen_batch_item *item, imagen_error *err, imagen_fail_reason reason);
    void *ctx;
    /* Hold formation until this many requests were queued (0 = off; the
     * core fills it from IMAGEN_BATCHER_DELAY_ENV). */
    size_t delay_until_count;
} imagen_batcher_options;

/* Creates a batcher (and its timer thread when needed). *out is owned; free
 * with imagen_batcher_destroy(). */
imagen_error *imagen_batcher_create(const imagen_batcher_options *opts, imagen_batcher **out);

/* Queues an item at its priority level (spec §5.2) and sets its deadline
 * (§5.7). The item is borrowed until it comes back from next_batch or goes
 * to on_reject. Errors (item not queued, no callback): UNAVAILABLE "Exceeds
 * maximum queue size" when the level is full; UNAVAILABLE "Server exiting: ..."
 * when the batcher is shut down; INTERNAL when the deadline heap cannot grow. */
imagen_error *imagen_batcher_enqueue(imagen_batcher *b, imagen_batch_item *item);

/* Called by a free instance thread: blocks until a batch is formed (spec
 * §5.3) and stores up to `cap` (>= 1) items in `out`, returning their count;
 * `cap` bounds the batch like max_batch_size does. Every returned item gets
 * a fresh `sequence` and now belongs to the caller. Returns 0 only after
 * imagen_batcher_shutdown() once the queues are empty (queued items are still
 * executed during shutdown, without waiting for max_queue_delay, so nothing
 * accepted is lost). May call on_reject for expired items before returning. */
size_t imagen_batcher_next_batch(imagen_batcher *b, imagen_batch_item **out, size_t cap);

/* Drops the item if it is still queued, completing it through on_reject with
 * CANCELLED "Request cancelled" (reason CANCELED) on the calling thread.
 * Returns true if it was dropped, false if it is not queued (already handed
 * to an instance, already rejected, or its enqueue failed). */
bool imagen_batcher_cancel(imagen_batcher *b, imagen_batch_item *item);

/* Requests queued and not yet handed to an instance (the
 * nv_inference_pending_request_count gauge). Lock-free; any thread. */
size_t imagen_batcher_pending_count(imagen_batcher *b);

/* preserve_ordering: true when responses must be released in dequeue order. */
bool imagen_batcher_preserves_ordering(const imagen_batcher *b);
/* True when a request may skip the queue and run at once on its caller's
 * thread without changing what this batcher would do with it: the batcher is
 * greedy (no max_queue_delay), keeps no order, holds nothing (the test knob),
 * is not shutting down, nothing is queued and no batch taken is still
 * waiting to start. A request enqueued by another
 * thread meanwhile just waits for an instance, as it would have. */
bool imagen_batcher_bypass_ok(imagen_batcher *b);
/* The instance that took a batch from imagen_batcher_next_batch() has it in
 * hand and no request can overtake it any more: until this call, requests
 * arriving meanwhile do not bypass the queue (bypass_ok is false), so none
 * runs ahead of a batch taken before it. */
void imagen_batcher_batch_started(imagen_batcher *b);

/* With preserve_ordering, called when an item finished executing: calls
 * deliver(item, ctx) for it and every later finished item, strictly in
 * `sequence` order, deferring items whose predecessors are unfinished.
 * Without preserve_ordering it calls deliver at once. deliver is called
 * without the batcher lock held, possibly on another instance's thread. */
void imagen_batcher_complete(imagen_batcher *b, imagen_batch_item *item,
                             void (*deliver)(imagen_batch_item *item, void *ctx), void *ctx);

/* Stops accepting, wakes every waiting thread; queued items will still be
 * returned by next_batch until the queues are empty. */
void imagen_batcher_shutdown(imagen_batcher *b);

/* Joins the timer thread and frees. All instance threads must have returned
 * from next_batch. Items still queued (no instance drained them) go to
 * on_reject with UNAVAILABLE and reason OTHER; preserve_ordering items held
 * behind one that never completed are delivered in sequence order.
 * Accepts NULL. */
void imagen_batcher_destroy(imagen_batcher *b);

#endif /* IMAGEN_CORE_BATCHER_H */
