/*
 * The embedded queue driver: one SQLite file shared by every process of one
 * machine. Each job is one row of `jobs`; its state, attempts, timestamps and
 * results live in the same row, so the job record and the queue can never
 * disagree. A lease is (lease_token, lease_until_ms): a random token per
 * delivery and a wall-clock deadline. Every call that ends or extends a
 * delivery matches on the token, so a consumer whose lease expired and whose
 * job went to someone else gets NOT_FOUND instead of overwriting the newer
 * delivery.
 *
 * SQLite has no notifications across processes, so a waiting pull polls with
 * a backoff (5 ms doubling to 100 ms); publishes through the same handle wake
 * waiters of that handle at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "common/sync.h"
#include "common/time.h"
#include "queue/queue_driver.h"

/* Bumped whenever the schema changes; a file with a newer version is
 * refused rather than misread. */
#define SCHEMA_VERSION 1

/* Several processes share the file; a writer waits this long for another
 * one's transaction before the call fails as UNAVAILABLE. */
#define BUSY_TIMEOUT_MS 10000

/* Polling bounds of a waiting pull: short at first so a job published just
 * after an empty poll is picked up quickly, capped so that idle workers cost
 * a few queries per second each. */
#define POLL_FIRST_MS 5
#define POLL_MAX_MS 100

/* The most jobs one pull delivers, whatever `max` the caller allows: it
 * bounds the candidate array and the length of the pull's transaction,
 * during which other processes cannot write. */
#define PULL_MAX_JOBS 1024

/* The columns of a job record, in the order job_from_row() reads them. */
#define JOB_COLUMNS                                                                                             \
    "id, op, spec, state, attempts, created_ms, started_ms, finished_ms, updated_ms, consumer, error, output, " \
    "timings"

/* Prepared statements are cached per handle, one slot each. */
typedef enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SYNC_FULL,
    ST_SYNC_NORMAL,
    ST_INSERT,
    ST_EXPIRE_DEAD,
    ST_SELECT_READY,
    ST_SELECT_EXPIRED,
    ST_DELIVER,
    ST_EXTEND,
    ST_ACK,
    ST_FAIL,
    ST_RETRY,
    ST_RELEASE,
    ST_GET,
    ST_LIST_ALL,
    ST_LIST_OP,
    ST_LIST_STATE,
    ST_LIST_OP_STATE,
    ST_REQUEUE,
    ST_STATE_OF,
    ST_REQUEUE_DEAD_ALL,
    ST_REQUEUE_DEAD_OP,
    ST_COUNTS,
    ST_COUNT_
} stmt_id;

static const char *const stmt_sql[ST_COUNT_] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SYNC_FULL] = "PRAGMA synchronous = FULL",
    [ST_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
    [ST_INSERT] = "INSERT INTO jobs (id, op, spec, state, created_ms, updated_ms) VALUES (?1, ?2, ?3, 0, ?4, ?4)",
    /* Step 1 of a pull: an expired delivery that was the last allowed one
     * goes to the dead letters instead of being delivered again. */
    [ST_EXPIRE_DEAD] = "UPDATE jobs SET state = 4, finished_ms = ?2, updated_ms = ?2, lease_token = NULL, "
                       "lease_until_ms = 0, error = printf('lease expired on attempt %d of %d (worker gone?)', "
                       "attempts, ?3) "
                       "WHERE op = ?1 AND state = 1 AND lease_until_ms < ?2 AND attempts >= ?3",
    [ST_SELECT_READY] = "SELECT id, created_ms FROM jobs WHERE op = ?1 AND state = 0 AND not_before_ms <= ?2 "
                        "ORDER BY created_ms, id LIMIT ?3",
    [ST_SELECT_EXPIRED] = "SELECT id, created_ms FROM jobs WHERE op = ?1 AND state = 1 AND lease_until_ms < ?2 "
                          "ORDER BY created_ms, id LIMIT ?3",
    [ST_DELIVER] = "UPDATE jobs SET state = 1, attempts = attempts + 1, lease_token = ?2, lease_until_ms = ?3, "
                   "consumer = ?4, started_ms = ?5, updated_ms = ?5 WHERE id = ?1 RETURNING " JOB_COLUMNS,
    [ST_EXTEND] = "UPDATE jobs SET lease_until_ms = ?3 WHERE id = ?1 AND lease_token = ?2 AND state = 1",
    [ST_ACK] = "UPDATE jobs SET state = 2, output = ?3, timings = ?4, finished_ms = ?5, updated_ms = ?5, "
               "lease_token = NULL, lease_until_ms = 0 WHERE id = ?1 AND lease_token = ?2 AND state = 1",
    [ST_FAIL] = "UPDATE jobs SET state = 3, error = ?3, timings = ?4, finished_ms = ?5, updated_ms = ?5, "
                "lease_token = NULL, lease_until_ms = 0 WHERE id = ?1 AND lease_token = ?2 AND state = 1",
    /* One statement decides between queued-again and dead, so no other
     * process can deliver the job in between. */
    [ST_RETRY] = "UPDATE jobs SET state = CASE WHEN attempts >= ?6 THEN 4 ELSE 0 END, error = ?3, "
                 "not_before_ms = ?4 + ?5, finished_ms = CASE WHEN attempts >= ?6 THEN ?4 ELSE 0 END, "
                 "updated_ms = ?4, lease_token = NULL, lease_until_ms = 0 "
                 "WHERE id = ?1 AND lease_token = ?2 AND state = 1 RETURNING state",
    [ST_RELEASE] = "UPDATE jobs SET state = 0, attempts = max(attempts - 1, 0), not_before_ms = 0, updated_ms = ?3, "
                   "lease_token = NULL, lease_until_ms = 0 WHERE id = ?1 AND lease_token = ?2 AND state = 1",
    [ST_GET] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
    [ST_LIST_ALL] = "SELECT " JOB_COLUMNS " FROM jobs ORDER BY created_ms DESC, id DESC LIMIT ?3",
    [ST_LIST_OP] = "SELECT " JOB_COLUMNS " FROM jobs WHERE op = ?1 ORDER BY created_ms DESC, id DESC LIMIT ?3",
    [ST_LIST_STATE] = "SELECT " JOB_COLUMNS " FROM jobs WHERE state = ?2 ORDER BY created_ms DESC, id DESC LIMIT ?3",
    [ST_LIST_OP_STATE] = "SELECT " JOB_COLUMNS " FROM jobs WHERE op = ?1 AND state = ?2 "
                         "ORDER BY created_ms DESC, id DESC LIMIT ?3",
    [ST_REQUEUE] = "UPDATE jobs SET state = 0, attempts = 0, not_before_ms = 0, finished_ms = 0, updated_ms = ?2, "
                   "lease_token = NULL, lease_until_ms = 0 WHERE id = ?1 AND state IN (3, 4)",
    [ST_STATE_OF] = "SELECT state FROM jobs WHERE id = ?1",
    [ST_REQUEUE_DEAD_ALL] = "UPDATE jobs SET state = 0, attempts = 0, not_before_ms = 0, finished_ms = 0, "
                            "updated_ms = ?2, lease_token = NULL, lease_until_ms = 0 WHERE state = 4",
    [ST_REQUEUE_DEAD_OP] = "UPDATE jobs SET state = 0, attempts = 0, not_before_ms = 0, finished_ms = 0, "
                           "updated_ms = ?2, lease_token = NULL, lease_until_ms = 0 WHERE state = 4 AND op = ?1",
    [ST_COUNTS] = "SELECT op, state, count(*) FROM jobs GROUP BY op, state ORDER BY op",
};

/* The schema of version 1. The pull index is ordered by creation, not by
 * not_before_ms: a pull wants the oldest ready jobs, and only retried jobs
 * have a future not_before_ms, so walking the queued jobs in age order and
 * skipping the few delayed ones stops after `max` rows, while a range on
 * not_before_ms would sort the whole backlog on every pull. */
static const char schema_v1[] = "CREATE TABLE jobs ("
                                " id TEXT PRIMARY KEY,"
                                " op TEXT NOT NULL,"
                                " spec TEXT NOT NULL,"
                                " state INTEGER NOT NULL,"
                                " attempts INTEGER NOT NULL DEFAULT 0,"
                                " created_ms INTEGER NOT NULL,"
                                " started_ms INTEGER NOT NULL DEFAULT 0,"
                                " finished_ms INTEGER NOT NULL DEFAULT 0,"
                                " updated_ms INTEGER NOT NULL,"
                                " not_before_ms INTEGER NOT NULL DEFAULT 0,"
                                " lease_until_ms INTEGER NOT NULL DEFAULT 0,"
                                " lease_token TEXT,"
                                " consumer TEXT,"
                                " error TEXT,"
                                " output TEXT,"
                                " timings TEXT);"
                                "CREATE INDEX jobs_pull ON jobs (op, state, created_ms, id);"
                                "CREATE INDEX jobs_lease ON jobs (state, lease_until_ms);"
                                "CREATE INDEX jobs_age ON jobs (created_ms, id);"
                                "PRAGMA user_version = 1;";

typedef struct sqlite_queue {
    pthread_mutex_t mu;  /* guards db and stmts: one connection per handle */
    pthread_cond_t wake; /* broadcast when this handle made a job ready */
    sqlite3 *db;
    sqlite3_stmt *stmts[ST_COUNT_]; /* prepared on first use */
    char *path;
    char *consumer;
    bool sync_full; /* the connection's current synchronous setting */
    int max_attempts;
    int64_t lease_ms;
} sqlite_queue;

/* ---- errors and statements ------------------------------------------------- */

/* An error for the last failure of q->db: contention and I/O trouble are
 * UNAVAILABLE (worth retrying), anything else is INTERNAL. */
static imagen_error *
db_error(sqlite_queue *q, int rc, const char *doing)
{
    int primary = rc & 0xff;
    imagen_error_code code = (primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_IOERR ||
                              primary == SQLITE_FULL || primary == SQLITE_CANTOPEN || primary == SQLITE_READONLY)
                                 ? IMAGEN_ERR_UNAVAILABLE
                                 : IMAGEN_ERR_INTERNAL;
    return imagen_error_new(code, "queue database %s: %s failed: %s", q->path, doing,
                            q->db != NULL ? sqlite3_errmsg(q->db) : sqlite3_errstr(rc));
}

/* The cached statement `id`, reset and with no bindings. Caller holds q->mu. */
static imagen_error *
stmt_get(sqlite_queue *q, stmt_id id, sqlite3_stmt **out)
{
    if (q->stmts[id] == NULL) {
        int rc = sqlite3_prepare_v3(q->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &q->stmts[id], NULL);
        if (rc != SQLITE_OK)
            return db_error(q, rc, "preparing a statement");
    } else {
        sqlite3_reset(q->stmts[id]);
        sqlite3_clear_bindings(q->stmts[id]);
    }
    *out = q->stmts[id];
    return NULL;
}

/* Resets a statement after use so it holds no read snapshot open (an open
 * snapshot would block checkpoints and hide other processes' writes). */
static void
stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Runs a statement that returns no rows to completion. */
static imagen_error *
stmt_exec(sqlite_queue *q, sqlite3_stmt *st, const char *doing)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    }
    imagen_error *err = rc == SQLITE_DONE ? NULL : db_error(q, rc, doing);
    stmt_done(st);
    return err;
}

static imagen_error *
run_simple(sqlite_queue *q, stmt_id id, const char *doing)
{
    sqlite3_stmt *st = NULL;
    IMAGEN_RETURN_IF_ERROR(stmt_get(q, id, &st));
    return stmt_exec(q, st, doing);
}

/* How durable the next commit must be. In WAL mode synchronous=FULL fsyncs
 * the WAL at every commit, NORMAL only at checkpoints: a NORMAL commit
 * survives a crash of the process but may be lost with the machine's power.
 *
 * Commits whose loss would be visible or lose work are FULL: a publish (the
 * job would vanish), ack/fail/retry (a final state the caller reported)
 * and the administrative requeues. Commits whose loss only causes a
 * redelivery are NORMAL: a pull or extend lost with the power leaves the
 * job queued or its lease shorter, and delivery is at least once anyway; a
 * lost release leaves the job to its lease expiry. Since the WAL is one
 * sequential file, the next FULL commit makes the NORMAL ones before it
 * durable too. A job's life then costs two fsyncs (publish and ack)
 * instead of three, and fsyncs are what bound throughput on most disks;
 * publish_batch and ack_batch share one fsync among a whole batch. */
static imagen_error *
sync_set(sqlite_queue *q, bool full)
{
    if (q->sync_full == full)
        return NULL;
    IMAGEN_RETURN_IF_ERROR(run_simple(q, full ? ST_SYNC_FULL : ST_SYNC_NORMAL, "setting synchronous"));
    q->sync_full = full;
    return NULL;
}

static imagen_error *
tx_begin(sqlite_queue *q)
{
    return run_simple(q, ST_BEGIN, "starting a transaction");
}

static imagen_error *
tx_commit(sqlite_queue *q)
{
    return run_simple(q, ST_COMMIT, "committing");
}

/* Undoes the open transaction after an error; its own failure changes
 * nothing for the caller, who reports the first error. */
static void
tx_rollback(sqlite_queue *q)
{
    if (!sqlite3_get_autocommit(q->db))
        imagen_error_free(run_simple(q, ST_ROLLBACK, "rolling back"));
}

static void
bind_text_or_null(sqlite3_stmt *st, int index, const char *text)
{
    if (text != NULL)
        sqlite3_bind_text(st, index, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, index);
}

static char *
column_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *text = sqlite3_column_text(st, col);
    return text != NULL ? strdup((const char *)text) : NULL;
}

/* Builds a job from a row of JOB_COLUMNS. */
static imagen_error *
job_from_row(sqlite3_stmt *st, imagen_job **out)
{
    imagen_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        return &imagen__error_out_of_memory;
    const unsigned char *id = sqlite3_column_text(st, 0);
    snprintf(job->id, sizeof job->id, "%s", id != NULL ? (const char *)id : "");
    job->op = column_strdup(st, 1);
    job->spec = column_strdup(st, 2);
    job->state = (imagen_job_state)sqlite3_column_int(st, 3);
    job->attempts = sqlite3_column_int(st, 4);
    job->created_ms = sqlite3_column_int64(st, 5);
    job->started_ms = sqlite3_column_int64(st, 6);
    job->finished_ms = sqlite3_column_int64(st, 7);
    job->updated_ms = sqlite3_column_int64(st, 8);
    job->consumer = column_strdup(st, 9);
    job->error = column_strdup(st, 10);
    job->output = column_strdup(st, 11);
    job->timings = column_strdup(st, 12);
    /* op and spec are NOT NULL columns; a missing one here means strdup ran
     * out of memory. The optional columns may legitimately be NULL, so a
     * failed copy of one of them degrades to "none" rather than failing. */
    if (job->op == NULL || job->spec == NULL) {
        imagen_job_free(job);
        return &imagen__error_out_of_memory;
    }
    *out = job;
    return NULL;
}

static int64_t
now_ms(void)
{
    return (int64_t)imagen_time_wall_ms();
}

/* ---- open and close -------------------------------------------------------- */

/* mkdir -p of the directory that will hold `path`. */
static imagen_error *
make_parent_dirs(const char *url, const char *path)
{
    char *dir = strdup(path);
    if (dir == NULL)
        return &imagen__error_out_of_memory;
    char *slash = strrchr(dir, '/');
    if (slash != NULL)
        *slash = '\0';
    for (char *p = dir + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            imagen_error *err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "queue %s: cannot create directory %s: %s",
                                                 url, dir, strerror(errno));
            free(dir);
            return err;
        }
        *p = '/';
    }
    if (dir[0] != '\0' && mkdir(dir, 0755) != 0 && errno != EEXIST) {
        imagen_error *err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "queue %s: cannot create directory %s: %s", url,
                                             dir, strerror(errno));
        free(dir);
        return err;
    }
    free(dir);
    return NULL;
}

/* Creates the schema in a fresh file, or checks the version of an existing
 * one. Runs in an IMMEDIATE transaction so that two processes opening a new
 * file at once do not both create the table. */
static imagen_error *
schema_ensure(sqlite_queue *q)
{
    IMAGEN_RETURN_IF_ERROR(tx_begin(q));
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &st, NULL);
    int version = -1;
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    imagen_error *err = NULL;
    if (version < 0) {
        err = db_error(q, rc, "reading the schema version");
    } else if (version == 0) {
        char *msg = NULL;
        rc = sqlite3_exec(q->db, schema_v1, NULL, NULL, &msg);
        if (rc != SQLITE_OK)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "queue database %s: creating the schema failed: %s", q->path,
                                   msg != NULL ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    } else if (version > SCHEMA_VERSION) {
        err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED,
                               "queue database %s has schema version %d, newer than the %d this imagen reads", q->path,
                               version, SCHEMA_VERSION);
    }
    if (err != NULL) {
        tx_rollback(q);
        return err;
    }
    return tx_commit(q);
}

static void
sqlite_close(void *state)
{
    sqlite_queue *q = state;
    if (q == NULL)
        return;
    for (int i = 0; i < ST_COUNT_; i++)
        sqlite3_finalize(q->stmts[i]);
    sqlite3_close(q->db);
    pthread_cond_destroy(&q->wake);
    pthread_mutex_destroy(&q->mu);
    free(q->path);
    free(q->consumer);
    free(q);
}

static imagen_error *
sqlite_open(const char *url, const imagen_queue_options *options, void **state)
{
    const char *path = url + strlen("sqlite://");
    if (path[0] != '/' || path[1] == '\0')
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "queue URL '%s' needs an absolute file path: sqlite:///path/queue.db", url);

    sqlite_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return &imagen__error_out_of_memory;
    pthread_mutex_init(&q->mu, NULL);
    imagen_cond_init_monotonic(&q->wake);
    q->path = strdup(path);
    q->consumer = strdup(options->consumer);
    q->max_attempts = options->max_attempts;
    q->lease_ms = options->lease_ms;
    if (q->path == NULL || q->consumer == NULL) {
        sqlite_close(q);
        return &imagen__error_out_of_memory;
    }

    imagen_error *err = make_parent_dirs(url, path);
    if (err != NULL) {
        sqlite_close(q);
        return err;
    }
    /* NOMUTEX: the handle's own mutex already serialises the connection and
     * its cached statements, so SQLite's would only add a second lock. */
    int rc = sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "queue %s: cannot open the database file: %s", url,
                               q->db != NULL ? sqlite3_errmsg(q->db) : sqlite3_errstr(rc));
        sqlite_close(q);
        return err;
    }
    sqlite3_busy_timeout(q->db, BUSY_TIMEOUT_MS);
    /* WAL lets readers (status, list, counts) run while a worker writes.
     * synchronous starts FULL, every commit fsyncing the WAL: a published
     * job or an ack must survive a power loss, not just a crash of this
     * process (all that NORMAL guarantees in WAL mode). sync_set() relaxes
     * it for the commits whose loss only causes a redelivery. */
    char *msg = NULL;
    rc = sqlite3_exec(q->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;", NULL,
                      NULL, &msg);
    if (rc != SQLITE_OK) {
        err = imagen_error_new((rc & 0xff) == SQLITE_BUSY ? IMAGEN_ERR_UNAVAILABLE : IMAGEN_ERR_INTERNAL,
                               "queue %s: configuring the database failed: %s", url,
                               msg != NULL ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite_close(q);
        return err;
    }
    q->sync_full = true;
    err = schema_ensure(q);
    if (err != NULL) {
        sqlite_close(q);
        return err;
    }
    *state = q;
    return NULL;
}

/* ---- producing ------------------------------------------------------------- */

static imagen_error *
sqlite_publish(void *state, const char *op, const char *const *specs, char (*ids)[IMAGEN_JOB_ID_SIZE], size_t n)
{
    sqlite_queue *q = state;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = sync_set(q, true);
    /* One transaction for a batch: one fsync however many jobs. */
    if (err == NULL && n > 1)
        err = tx_begin(q);
    int64_t now = now_ms();
    for (size_t i = 0; err == NULL && i < n; i++) {
        err = stmt_get(q, ST_INSERT, &st);
        if (err == NULL) {
            sqlite3_bind_text(st, 1, ids[i], -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, op, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, specs[i], -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, now);
            err = stmt_exec(q, st, "publishing a job");
        }
    }
    if (n > 1) {
        if (err == NULL)
            err = tx_commit(q);
        if (err != NULL)
            tx_rollback(q);
    }
    if (err == NULL)
        pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->mu);
    return err;
}

/* ---- consuming ------------------------------------------------------------- */

/* A deliverable job found by the per-op selects, before it is chosen. */
typedef struct candidate {
    char id[IMAGEN_JOB_ID_SIZE];
    int64_t created_ms;
    size_t op_rank; /* position of its op in the pull's list */
} candidate;

static int
candidate_cmp(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->created_ms != y->created_ms)
        return x->created_ms < y->created_ms ? -1 : 1;
    int c = strcmp(x->id, y->id);
    if (c != 0)
        return c;
    return x->op_rank < y->op_rank ? -1 : x->op_rank > y->op_rank;
}

/* Appends up to `max` rows of a select of (id, created_ms) to cands. */
static imagen_error *
collect_candidates(sqlite_queue *q, stmt_id id, const char *op, size_t rank, int64_t now, size_t max, candidate *cands,
                   size_t *n)
{
    sqlite3_stmt *st = NULL;
    IMAGEN_RETURN_IF_ERROR(stmt_get(q, id, &st));
    sqlite3_bind_text(st, 1, op, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)max);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        candidate *c = &cands[(*n)++];
        const unsigned char *text = sqlite3_column_text(st, 0);
        snprintf(c->id, sizeof c->id, "%s", text != NULL ? (const char *)text : "");
        c->created_ms = sqlite3_column_int64(st, 1);
        c->op_rank = rank;
    }
    imagen_error *err = rc == SQLITE_DONE ? NULL : db_error(q, rc, "looking for jobs to deliver");
    stmt_done(st);
    return err;
}

static void
lease_token_new(char token[64])
{
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        /* Only uniqueness per job matters; time and address still give that
         * within a process when the kernel cannot. */
        static _Atomic unsigned long counter;
        uint64_t mix = imagen_time_now_ns() ^ ((uint64_t)++counter << 32);
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (unsigned char)(mix >> (8 * (i % 8)));
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(token + 2 * i, 3, "%02x", rnd[i]);
}

/* Marks one candidate delivered to this handle and builds its lease. */
static imagen_error *
deliver(sqlite_queue *q, const char *id, int64_t now, imagen_lease **out)
{
    imagen_lease *lease = calloc(1, sizeof *lease);
    if (lease == NULL)
        return &imagen__error_out_of_memory;
    lease_token_new(lease->token);
    lease->expires_ms = now + q->lease_ms;

    sqlite3_stmt *st = NULL;
    imagen_error *err = stmt_get(q, ST_DELIVER, &st);
    if (err != NULL) {
        free(lease);
        return err;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, lease->token, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, lease->expires_ms);
    sqlite3_bind_text(st, 4, q->consumer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = job_from_row(st, &lease->job);
    else if (rc == SQLITE_DONE)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "queue database %s: job %s vanished while being delivered", q->path,
                               id);
    else
        err = db_error(q, rc, "delivering a job");
    if (err == NULL) {
        /* RETURNING rows are produced when the statement first steps; the
         * rest of the run only finishes it. */
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        }
        if (rc != SQLITE_DONE)
            err = db_error(q, rc, "delivering a job");
    }
    stmt_done(st);
    if (err != NULL) {
        imagen_lease_free(lease);
        return err;
    }
    *out = lease;
    return NULL;
}

/* One attempt at a pull, in one IMMEDIATE transaction. Caller holds q->mu. */
static imagen_error *
pull_once(sqlite_queue *q, const char *const *ops, size_t n_ops, size_t max, imagen_lease **leases, size_t *n_out)
{
    int64_t now = now_ms();
    if (max > PULL_MAX_JOBS)
        max = PULL_MAX_JOBS;
    /* Each op contributes at most `max` ready and `max` expired jobs; the
     * oldest `max` of all of them are delivered. */
    if (n_ops > SIZE_MAX / (2 * max * sizeof(candidate)))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "pull of %zu operations at once is too many", n_ops);
    candidate *cands = malloc(2 * n_ops * max * sizeof *cands);
    if (cands == NULL)
        return &imagen__error_out_of_memory;
    size_t n_cands = 0;

    imagen_error *err = sync_set(q, false);
    if (err == NULL)
        err = tx_begin(q);
    if (err != NULL) {
        free(cands);
        return err;
    }
    for (size_t i = 0; i < n_ops && err == NULL; i++) {
        sqlite3_stmt *st = NULL;
        err = stmt_get(q, ST_EXPIRE_DEAD, &st);
        if (err != NULL)
            break;
        sqlite3_bind_text(st, 1, ops[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_int(st, 3, q->max_attempts);
        err = stmt_exec(q, st, "dead-lettering expired jobs");
        if (err == NULL)
            err = collect_candidates(q, ST_SELECT_READY, ops[i], i, now, max, cands, &n_cands);
        if (err == NULL)
            err = collect_candidates(q, ST_SELECT_EXPIRED, ops[i], i, now, max, cands, &n_cands);
    }
    if (err == NULL && n_cands > 0) {
        qsort(cands, n_cands, sizeof *cands, candidate_cmp);
        size_t take = n_cands < max ? n_cands : max;
        for (size_t i = 0; i < take && err == NULL; i++) {
            err = deliver(q, cands[i].id, now, &leases[*n_out]);
            if (err == NULL)
                (*n_out)++;
        }
    }
    free(cands);
    if (err == NULL)
        err = tx_commit(q);
    if (err != NULL) {
        tx_rollback(q);
        for (size_t i = 0; i < *n_out; i++)
            imagen_lease_free(leases[i]);
        *n_out = 0;
    }
    return err;
}

static imagen_error *
sqlite_pull(void *state, const char *const *ops, size_t n_ops, size_t max, int64_t wait_ms, imagen_lease **leases,
            size_t *n_out)
{
    sqlite_queue *q = state;
    *n_out = 0;
    uint64_t deadline_ns = imagen_time_now_ns() + (uint64_t)wait_ms * 1000000u;
    int64_t interval_ms = POLL_FIRST_MS;
    imagen_error *err = NULL;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        err = pull_once(q, ops, n_ops, max, leases, n_out);
        if (err != NULL || *n_out > 0)
            break;
        uint64_t now_ns = imagen_time_now_ns();
        if (now_ns >= deadline_ns)
            break;
        /* Sleeping on the condition variable releases the connection to the
         * handle's other threads and wakes early for their publishes. */
        uint64_t until_ns = now_ns + (uint64_t)interval_ms * 1000000u;
        imagen_cond_wait_until(&q->wake, &q->mu, until_ns < deadline_ns ? until_ns : deadline_ns);
        interval_ms = interval_ms * 2 < POLL_MAX_MS ? interval_ms * 2 : POLL_MAX_MS;
    }
    pthread_mutex_unlock(&q->mu);
    return err;
}

/* Prepares one of the lease-matching updates (extend, ack, fail, retry,
 * release) with ?1 the job id and ?2 the token; the caller binds the rest.
 * `durable` selects the commit's synchronous level (see sync_set). */
static imagen_error *
lease_update(sqlite_queue *q, stmt_id id, const imagen_lease *lease, bool durable, sqlite3_stmt **st_out)
{
    IMAGEN_RETURN_IF_ERROR(sync_set(q, durable));
    IMAGEN_RETURN_IF_ERROR(stmt_get(q, id, st_out));
    sqlite3_bind_text(*st_out, 1, lease->job->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(*st_out, 2, lease->token, -1, SQLITE_STATIC);
    return NULL;
}

static imagen_error *
lease_lost(sqlite_queue *q, const imagen_lease *lease, const char *doing)
{
    return imagen_error_new(IMAGEN_ERR_NOT_FOUND,
                            "lease on job %s was lost: it expired and the job was delivered again or ended "
                            "elsewhere, so it cannot be %s",
                            lease->job->id, doing);
}

/* Finishes a lease update: NOT_FOUND when no row matched. */
static imagen_error *
lease_update_run(sqlite_queue *q, sqlite3_stmt *st, const imagen_lease *lease, const char *doing)
{
    IMAGEN_RETURN_IF_ERROR(stmt_exec(q, st, doing));
    return sqlite3_changes(q->db) == 0 ? lease_lost(q, lease, doing) : NULL;
}

static imagen_error *
sqlite_extend(void *state, imagen_lease *lease)
{
    sqlite_queue *q = state;
    int64_t until = now_ms() + q->lease_ms;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = lease_update(q, ST_EXTEND, lease, false, &st);
    if (err == NULL) {
        sqlite3_bind_int64(st, 3, until);
        err = lease_update_run(q, st, lease, "extended");
    }
    pthread_mutex_unlock(&q->mu);
    if (err == NULL)
        lease->expires_ms = until;
    return err;
}

static imagen_error *
sqlite_ack(void *state, imagen_lease *lease, const char *output, const char *timings)
{
    sqlite_queue *q = state;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = lease_update(q, ST_ACK, lease, true, &st);
    if (err == NULL) {
        bind_text_or_null(st, 3, output);
        bind_text_or_null(st, 4, timings);
        sqlite3_bind_int64(st, 5, now_ms());
        err = lease_update_run(q, st, lease, "acked");
    }
    pthread_mutex_unlock(&q->mu);
    return err;
}

/* Acks n deliveries in one IMMEDIATE transaction, so the whole batch costs
 * one durable commit (one fsync) instead of n. Each lease is matched by
 * ST_ACK exactly as sqlite_ack() matches it, and a lost one only sets its
 * own errs[i], with sqlite_ack()'s message, while the others are acked.
 * Any other failure (the write lock not obtained within BUSY_TIMEOUT_MS,
 * I/O) rolls the whole batch back and leaves errs[] all NULL: nothing was
 * acked, and the deliveries expire as if the call had never been made. */
static imagen_error *
sqlite_ack_batch(void *state, imagen_lease *const *leases, size_t n, const char *const *outputs,
                 const char *const *timings, imagen_error **errs)
{
    sqlite_queue *q = state;
    for (size_t i = 0; i < n; i++)
        errs[i] = NULL;
    pthread_mutex_lock(&q->mu);
    /* synchronous is chosen before BEGIN, as sqlite_publish() does; the
     * lease_update() calls below then find it already FULL. A batch of one
     * needs no explicit transaction: the UPDATE commits on its own. */
    imagen_error *err = sync_set(q, true);
    if (err == NULL && n > 1)
        err = tx_begin(q);
    int64_t now = now_ms();
    for (size_t i = 0; err == NULL && i < n; i++) {
        sqlite3_stmt *st = NULL;
        err = lease_update(q, ST_ACK, leases[i], true, &st);
        if (err != NULL)
            break;
        bind_text_or_null(st, 3, outputs[i]);
        bind_text_or_null(st, 4, timings != NULL ? timings[i] : NULL);
        sqlite3_bind_int64(st, 5, now);
        /* Not lease_update_run(): a lost lease must stay this lease's own
         * result, apart from a database error that ends the batch. */
        err = stmt_exec(q, st, "acked");
        if (err == NULL && sqlite3_changes(q->db) == 0)
            errs[i] = lease_lost(q, leases[i], "acked");
    }
    if (n > 1) {
        if (err == NULL)
            err = tx_commit(q);
        if (err != NULL)
            tx_rollback(q);
    }
    pthread_mutex_unlock(&q->mu);
    if (err != NULL) {
        for (size_t i = 0; i < n; i++) {
            imagen_error_free(errs[i]);
            errs[i] = NULL;
        }
    }
    return err;
}

static imagen_error *
sqlite_fail(void *state, imagen_lease *lease, const char *message, const char *timings)
{
    sqlite_queue *q = state;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = lease_update(q, ST_FAIL, lease, true, &st);
    if (err == NULL) {
        bind_text_or_null(st, 3, message);
        bind_text_or_null(st, 4, timings);
        sqlite3_bind_int64(st, 5, now_ms());
        err = lease_update_run(q, st, lease, "failed");
    }
    pthread_mutex_unlock(&q->mu);
    return err;
}

static imagen_error *
sqlite_retry(void *state, imagen_lease *lease, const char *message, int64_t delay_ms, bool *dead)
{
    sqlite_queue *q = state;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = lease_update(q, ST_RETRY, lease, true, &st);
    if (err == NULL) {
        bind_text_or_null(st, 3, message);
        sqlite3_bind_int64(st, 4, now_ms());
        sqlite3_bind_int64(st, 5, delay_ms);
        sqlite3_bind_int(st, 6, q->max_attempts);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *dead = sqlite3_column_int(st, 0) == IMAGEN_JOB_DEAD;
            err = stmt_exec(q, st, "retrying a job");
        } else if (rc == SQLITE_DONE) {
            stmt_done(st);
            err = lease_lost(q, lease, "retried");
        } else {
            err = db_error(q, rc, "retrying a job");
            stmt_done(st);
        }
    }
    if (err == NULL && !*dead && delay_ms == 0)
        pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->mu);
    return err;
}

static imagen_error *
sqlite_release(void *state, imagen_lease *lease)
{
    sqlite_queue *q = state;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = lease_update(q, ST_RELEASE, lease, false, &st);
    if (err == NULL) {
        sqlite3_bind_int64(st, 3, now_ms());
        err = lease_update_run(q, st, lease, "released");
    }
    if (err == NULL)
        pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->mu);
    return err;
}

/* ---- inspection and administration ----------------------------------------- */

static imagen_error *
sqlite_get(void *state, const char *id, imagen_job **out)
{
    sqlite_queue *q = state;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = stmt_get(q, ST_GET, &st);
    if (err == NULL) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            err = job_from_row(st, out);
        else if (rc == SQLITE_DONE)
            err = imagen_error_new(IMAGEN_ERR_NOT_FOUND, "job '%s' not found in queue %s", id, q->path);
        else
            err = db_error(q, rc, "reading a job");
        stmt_done(st);
    }
    pthread_mutex_unlock(&q->mu);
    return err;
}

static imagen_error *
sqlite_list(void *state, const char *op, int state_filter, size_t limit, imagen_job ***jobs, size_t *n)
{
    sqlite_queue *q = state;
    stmt_id id = op != NULL ? (state_filter >= 0 ? ST_LIST_OP_STATE : ST_LIST_OP)
                            : (state_filter >= 0 ? ST_LIST_STATE : ST_LIST_ALL);
    size_t cap = 0;
    imagen_job **out = NULL;
    size_t count = 0;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = stmt_get(q, id, &st);
    if (err == NULL) {
        if (op != NULL)
            sqlite3_bind_text(st, 1, op, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, state_filter);
        sqlite3_bind_int64(st, 3, limit > INT64_MAX ? INT64_MAX : (sqlite3_int64)limit);
        int rc;
        while (err == NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (count == cap) {
                size_t new_cap = cap == 0 ? 16 : cap * 2;
                imagen_job **grown = realloc(out, new_cap * sizeof *grown);
                if (grown == NULL) {
                    err = &imagen__error_out_of_memory;
                    break;
                }
                out = grown;
                cap = new_cap;
            }
            err = job_from_row(st, &out[count]);
            if (err == NULL)
                count++;
        }
        if (err == NULL && rc != SQLITE_DONE)
            err = db_error(q, rc, "listing jobs");
        stmt_done(st);
    }
    pthread_mutex_unlock(&q->mu);
    if (err != NULL) {
        imagen_job_list_free(out, count);
        return err;
    }
    *jobs = out;
    *n = count;
    return NULL;
}

static imagen_error *
sqlite_requeue(void *state, const char *id)
{
    sqlite_queue *q = state;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = sync_set(q, true);
    if (err == NULL)
        err = stmt_get(q, ST_REQUEUE, &st);
    if (err == NULL) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now_ms());
        err = stmt_exec(q, st, "requeueing a job");
    }
    if (err == NULL && sqlite3_changes(q->db) == 0) {
        /* Nothing changed: say whether the job is missing or in a state that
         * cannot be requeued. */
        err = stmt_get(q, ST_STATE_OF, &st);
        if (err == NULL) {
            sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
            int rc = sqlite3_step(st);
            if (rc == SQLITE_ROW)
                err =
                    imagen_error_new(IMAGEN_ERR_INVALID_ARG, "job '%s' is %s: only failed or dead jobs can be requeued",
                                     id, imagen_job_state_name((imagen_job_state)sqlite3_column_int(st, 0)));
            else if (rc == SQLITE_DONE)
                err = imagen_error_new(IMAGEN_ERR_NOT_FOUND, "job '%s' not found in queue %s", id, q->path);
            else
                err = db_error(q, rc, "reading a job");
            stmt_done(st);
        }
    } else if (err == NULL) {
        pthread_cond_broadcast(&q->wake);
    }
    pthread_mutex_unlock(&q->mu);
    return err;
}

static imagen_error *
sqlite_requeue_dead(void *state, const char *op, size_t *n)
{
    sqlite_queue *q = state;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = sync_set(q, true);
    if (err == NULL)
        err = stmt_get(q, op != NULL ? ST_REQUEUE_DEAD_OP : ST_REQUEUE_DEAD_ALL, &st);
    if (err == NULL) {
        if (op != NULL)
            sqlite3_bind_text(st, 1, op, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now_ms());
        err = stmt_exec(q, st, "requeueing dead jobs");
    }
    if (err == NULL) {
        *n = (size_t)sqlite3_changes(q->db);
        if (*n > 0)
            pthread_cond_broadcast(&q->wake);
    }
    pthread_mutex_unlock(&q->mu);
    return err;
}

static imagen_error *
sqlite_counts(void *state, imagen_queue_counts **counts, size_t *n)
{
    sqlite_queue *q = state;
    imagen_queue_counts *out = NULL;
    size_t count = 0, cap = 0;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st = NULL;
    imagen_error *err = stmt_get(q, ST_COUNTS, &st);
    if (err == NULL) {
        int rc;
        while (err == NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *op = (const char *)sqlite3_column_text(st, 0);
            if (op == NULL)
                continue;
            /* Rows come sorted by op, so a new op starts a new entry. */
            if (count == 0 || strcmp(out[count - 1].op, op) != 0) {
                if (count == cap) {
                    size_t new_cap = cap == 0 ? 8 : cap * 2;
                    imagen_queue_counts *grown = realloc(out, new_cap * sizeof *grown);
                    if (grown == NULL) {
                        err = &imagen__error_out_of_memory;
                        break;
                    }
                    out = grown;
                    cap = new_cap;
                }
                memset(&out[count], 0, sizeof out[count]);
                snprintf(out[count].op, sizeof out[count].op, "%s", op);
                count++;
            }
            imagen_queue_counts *c = &out[count - 1];
            uint64_t k = (uint64_t)sqlite3_column_int64(st, 2);
            switch ((imagen_job_state)sqlite3_column_int(st, 1)) {
            case IMAGEN_JOB_QUEUED:
                c->queued += k;
                break;
            case IMAGEN_JOB_RUNNING:
                c->running += k;
                break;
            case IMAGEN_JOB_DONE:
                c->done += k;
                break;
            case IMAGEN_JOB_FAILED:
                c->failed += k;
                break;
            case IMAGEN_JOB_DEAD:
                c->dead += k;
                break;
            default:
                break;
            }
        }
        if (err == NULL && rc != SQLITE_DONE)
            err = db_error(q, rc, "counting jobs");
        stmt_done(st);
    }
    pthread_mutex_unlock(&q->mu);
    if (err != NULL) {
        free(out);
        return err;
    }
    *counts = out;
    *n = count;
    return NULL;
}

const imagen_queue_driver imagen_queue_driver_sqlite = {
    .name = "sqlite",
    .scheme = "sqlite://",
    .open = sqlite_open,
    .close = sqlite_close,
    .publish = sqlite_publish,
    .pull = sqlite_pull,
    .extend = sqlite_extend,
    .ack = sqlite_ack,
    .ack_batch = sqlite_ack_batch,
    .fail = sqlite_fail,
    .retry = sqlite_retry,
    .release = sqlite_release,
    .get = sqlite_get,
    .list = sqlite_list,
    .requeue = sqlite_requeue,
    .requeue_dead = sqlite_requeue_dead,
    .counts = sqlite_counts,
};
