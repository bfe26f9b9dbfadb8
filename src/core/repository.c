/*
 * The model repository manager (spec §4): finds models in the repository
 * folders, reads and normalizes their config.pbtxt, picks versions by the
 * version policy, loads them (in parallel at start-up), reloads and unloads
 * them under the three model control modes, and answers lookups on the
 * request path.
 *
 * Locking: `lock` guards the entry table and every version slot; it is held
 * only for short bookkeeping, never while a model loads. A load or unload of
 * one model marks its entry busy so operations on the same model are
 * serialised while different models load at the same time. A reload builds
 * the new versions first and swaps them in under the lock; the old versions
 * drain their in-flight requests and are torn down by the reaper.
 */
#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/sync.h"
#include "common/time.h"

#define MODEL_FILE_MAX_BYTES (1u << 30) /* one file of a load request */
#define REPOSITORY_MAX_MODELS 100000    /* entries scanned per repository */

static const char STATE_READY[] = "READY";
static const char STATE_UNAVAILABLE[] = "UNAVAILABLE";
static const char STATE_LOADING[] = "LOADING";

typedef struct version_slot {
    int64_t version;
    const char *state;   /* one of the STATE_* strings */
    char *reason;        /* owned, "" when none */
    imagen_model *model; /* READY version: the repository's reference */
    imagen_stats *stats; /* counters for this version, kept across reloads */
} version_slot;

typedef struct model_entry {
    char *name;
    char *dir;          /* model directory on disk; NULL if none */
    char *override_dir; /* temporary directory of a load with files */
    bool conflict;      /* present in two repositories */
    bool attempted;     /* a load was attempted at least once */
    bool busy;          /* a load/unload is running */
    char *model_reason; /* model-level failure (no version loaded), owned or NULL */
    version_slot *slots;
    size_t n_slots;
    char *fingerprint; /* poll mode: what the directory looked like at load */
} model_entry;

struct imagen_repository {
    imagen_server *srv;
    pthread_mutex_t lock;
    pthread_cond_t busy_cond; /* an entry stopped being busy */
    model_entry **entries;    /* sorted by name */
    size_t n_entries, cap_entries;
    pthread_t poll_thread;
    bool poll_started;
    bool stopping;
    pthread_cond_t poll_cond; /* monotonic; wakes the poll thread to stop */
};

/* ---- entries ---------------------------------------------------------------- */

static model_entry *
find_entry_locked(imagen_repository *repo, const char *name, size_t *pos)
{
    size_t lo = 0, hi = repo->n_entries;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(repo->entries[mid]->name, name);
        if (c == 0) {
            if (pos)
                *pos = mid;
            return repo->entries[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos)
        *pos = lo;
    return NULL;
}

static model_entry *
get_or_add_entry_locked(imagen_repository *repo, const char *name)
{
    size_t pos;
    model_entry *e = find_entry_locked(repo, name, &pos);
    if (e)
        return e;
    if (repo->n_entries == repo->cap_entries) {
        size_t cap = repo->cap_entries ? repo->cap_entries * 2 : 16;
        model_entry **p = realloc(repo->entries, cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        repo->entries = p;
        repo->cap_entries = cap;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->name = strdup(name)) == NULL) {
        free(e);
        return NULL;
    }
    memmove(&repo->entries[pos + 1], &repo->entries[pos], (repo->n_entries - pos) * sizeof(*repo->entries));
    repo->entries[pos] = e;
    repo->n_entries++;
    return e;
}

static version_slot *
find_slot(model_entry *e, int64_t version)
{
    for (size_t i = 0; i < e->n_slots; i++)
        if (e->slots[i].version == version)
            return &e->slots[i];
    return NULL;
}

static version_slot *
get_or_add_slot_locked(model_entry *e, int64_t version)
{
    version_slot *s = find_slot(e, version);
    if (s)
        return s;
    size_t pos = 0;
    while (pos < e->n_slots && e->slots[pos].version < version)
        pos++;
    version_slot *p = realloc(e->slots, (e->n_slots + 1) * sizeof(*p));
    if (p == NULL)
        return NULL;
    e->slots = p;
    memmove(&e->slots[pos + 1], &e->slots[pos], (e->n_slots - pos) * sizeof(*p));
    memset(&e->slots[pos], 0, sizeof(*p));
    e->slots[pos].version = version;
    e->slots[pos].state = STATE_UNAVAILABLE;
    e->slots[pos].reason = strdup("");
    e->n_slots++;
    return &e->slots[pos];
}

static void
set_reason(char **dst, const char *reason)
{
    char *copy = strdup(reason ? reason : "");
    if (copy) {
        free(*dst);
        *dst = copy;
    }
}

/* ---- directory scanning ---------------------------------------------------- */

/* Triton's rule for version folder names: decimal digits, no leading zero
 * unless the name is "0". */
static bool
parse_version_name(const char *name, int64_t *out)
{
    size_t len = strlen(name);
    if (len == 0 || len > 18)
        return false;
    if (len > 1 && name[0] == '0')
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (name[i] - '0');
    }
    *out = v;
    return true;
}

static bool
is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Lists the version folders of a model directory, ascending, and the
 * lexicographically first folder name (for autofill). */
static imagen_error *
list_versions(const char *dir, int64_t **versions, size_t *n, char **first_name)
{
    *versions = NULL;
    *n = 0;
    *first_name = NULL;
    DIR *d = opendir(dir);
    if (d == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "cannot open model directory '%s': %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int64_t v;
        if (!parse_version_name(de->d_name, &v))
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (!is_dir(path))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            int64_t *p = realloc(*versions, cap * sizeof(int64_t));
            if (p == NULL) {
                closedir(d);
                return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
            }
            *versions = p;
        }
        (*versions)[(*n)++] = v;
        if (*first_name == NULL || strcmp(de->d_name, *first_name) < 0) {
            free(*first_name);
            *first_name = strdup(de->d_name);
        }
    }
    closedir(d);
    if (*n)
        qsort(*versions, *n, sizeof(int64_t), cmp_i64);
    return NULL;
}

/* A string that changes when anything poll mode reacts to changes: the
 * config file(s), top-level files such as label files, the set of version
 * folders and their modification times. */
static char *
fingerprint_dir(const char *dir)
{
    imagen_buf b = IMAGEN_BUF_INIT;
    DIR *d = opendir(dir);
    if (d == NULL)
        return strdup("missing");
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **p = realloc(names, cap * sizeof(char *));
            if (p == NULL)
                break;
            names = p;
        }
        if ((names[n] = strdup(de->d_name)) != NULL)
            n++;
    }
    closedir(d);
    for (size_t i = 1; i < n; i++) /* insertion sort: entries are few */
        for (size_t k = i; k > 0 && strcmp(names[k - 1], names[k]) > 0; k--) {
            char *t = names[k];
            names[k] = names[k - 1];
            names[k - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        struct stat st;
        bool ok = stat(path, &st) == 0;
        if (ok)
            imagen_buf_appendf(&b, "%s:%lld.%09ld:%lld;", names[i], (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                               (long long)st.st_size);
        if (ok && strcmp(names[i], "configs") == 0 && S_ISDIR(st.st_mode)) {
            char *sub = fingerprint_dir(path);
            if (sub) {
                imagen_buf_append_str(&b, sub);
                free(sub);
            }
        }
        free(names[i]);
    }
    free(names);
    return imagen_buf_detach(&b, NULL);
}

/* Scans every repository root; returns the model directories found as
 * (name, dir) pairs in `entries` (created if new). Conflicts are marked. */
static void
scan_repositories_locked(imagen_repository *repo)
{
    const imagen_server_options *o = imagen__server_options(repo->srv);
    for (size_t i = 0; i < repo->n_entries; i++) {
        free(repo->entries[i]->dir);
        repo->entries[i]->dir = NULL;
        repo->entries[i]->conflict = false;
    }
    for (size_t r = 0; r < o->n_model_repositories; r++) {
        const char *root = o->model_repositories[r];
        DIR *d = opendir(root);
        if (d == NULL) {
            imagen_log(IMAGEN_LOG_ERROR, "core", "cannot open model repository '%s': %s", root, strerror(errno));
            continue;
        }
        struct dirent *de;
        size_t seen = 0;
        while ((de = readdir(d)) != NULL && seen < REPOSITORY_MAX_MODELS) {
            if (de->d_name[0] == '.')
                continue;
            char path[4096];
            int len = snprintf(path, sizeof(path), "%s/%s", root, de->d_name);
            if (len <= 0 || (size_t)len >= sizeof(path) || !is_dir(path))
                continue;
            seen++;
            model_entry *e = get_or_add_entry_locked(repo, de->d_name);
            if (e == NULL)
                continue;
            if (e->dir != NULL) {
                e->conflict = true;
                continue;
            }
            e->dir = strdup(path);
        }
        closedir(d);
    }
}

/* Explicit mode: picks up model folders added since the last scan. Skipped
 * while any model is loading, whose directory must not change under it. */
static void
rescan_if_idle_locked(imagen_repository *repo)
{
    for (size_t i = 0; i < repo->n_entries; i++)
        if (repo->entries[i]->busy)
            return;
    scan_repositories_locked(repo);
}

/* ---- loading ------------------------------------------------------------------ */

static imagen_error *
read_text_file(const char *path, char **out, size_t *len, bool *missing)
{
    *missing = false;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT) {
            *missing = true;
            return NULL;
        }
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "cannot read '%s': %s", path, strerror(errno));
    }
    imagen_buf b = IMAGEN_BUF_INIT;
    char chunk[8192];
    size_t r;
    while ((r = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b.len + r > IMAGEN_CONFIG_MAX_BYTES) {
            fclose(f);
            imagen_buf_free(&b);
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "'%s' is larger than %u bytes", path,
                                    IMAGEN_CONFIG_MAX_BYTES);
        }
        imagen_buf_append(&b, chunk, r);
    }
    fclose(f);
    *out = imagen_buf_detach(&b, len);
    if (*out == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory reading '%s'", path);
    return NULL;
}

/* Reads the model's config message: the override JSON when given, else
 * configs/<name>.pbtxt (--model-config-name) or config.pbtxt; an absent
 * file yields an empty message for autofill to complete. */
static imagen_error *
read_config(imagen_repository *repo, const char *dir, const char *override_json, imagen_config_msg **out)
{
    if (override_json)
        return imagen_config_parse_json(override_json, strlen(override_json), out);
    const imagen_server_options *o = imagen__server_options(repo->srv);
    char path[4096];
    char *text = NULL;
    size_t len = 0;
    bool missing = true;
    if (o->model_config_name && o->model_config_name[0]) {
        snprintf(path, sizeof(path), "%s/configs/%s.pbtxt", dir, o->model_config_name);
        IMAGEN_RETURN_IF_ERROR(read_text_file(path, &text, &len, &missing));
    }
    if (missing) {
        snprintf(path, sizeof(path), "%s/config.pbtxt", dir);
        IMAGEN_RETURN_IF_ERROR(read_text_file(path, &text, &len, &missing));
    }
    if (missing)
        return imagen_config_parse_text("", 0, path, out);
    imagen_error *err = imagen_config_parse_text(text, len, path, out);
    free(text);
    return err;
}

typedef struct loaded_version {
    int64_t version;
    imagen_model *model; /* NULL on failure */
    imagen_error *error;
} loaded_version;

/* Picks versions per policy from the available ones (ascending). */
static size_t
select_versions(const imagen_model_config *mc, const int64_t *avail, size_t n, int64_t *out, const char *name)
{
    size_t k = 0;
    switch (mc->version_policy) {
    case IMAGEN_VERSION_POLICY_ALL:
        for (size_t i = 0; i < n; i++)
            out[k++] = avail[i];
        break;
    case IMAGEN_VERSION_POLICY_SPECIFIC:
        for (size_t s = 0; s < mc->n_specific_versions; s++) {
            bool found = false;
            for (size_t i = 0; i < n && !found; i++)
                found = avail[i] == mc->specific_versions[s];
            if (found) {
                bool dup = false;
                for (size_t j = 0; j < k && !dup; j++)
                    dup = out[j] == mc->specific_versions[s];
                if (!dup)
                    out[k++] = mc->specific_versions[s];
            } else {
                imagen_log(IMAGEN_LOG_ERROR, "core",
                           "model '%s': version %" PRId64 " named by the version policy does not exist", name,
                           mc->specific_versions[s]);
            }
        }
        qsort(out, k, sizeof(int64_t), cmp_i64);
        break;
    case IMAGEN_VERSION_POLICY_LATEST:
    default: {
        size_t want = mc->latest_num_versions ? mc->latest_num_versions : 1;
        size_t start = n > want ? n - want : 0;
        for (size_t i = start; i < n; i++)
            out[k++] = avail[i];
        break;
    }
    }
    return k;
}

/* Reads, completes and validates the config of a model directory. On
 * success *msg_out and *config_out (the built config, e.g. for picking
 * versions) are owned by the caller. */
static imagen_error *
prepare_config(imagen_repository *repo, const char *name, const char *dir, const char *override_json,
               imagen_config_msg **msg_out, imagen_model_config **config_out, const imagen_backend **backend_out,
               int64_t **versions, size_t *n_versions)
{
    imagen_server *srv = repo->srv;
    const imagen_server_options *o = imagen__server_options(srv);
    imagen_config_msg *msg = NULL;
    imagen_model_config *mc = NULL;
    char *first = NULL;
    imagen_error *err = list_versions(dir, versions, n_versions, &first);
    if (!err)
        err = read_config(repo, dir, override_json, &msg);
    char *first_path = NULL;
    if (!err && first) {
        size_t len = strlen(dir) + strlen(first) + 2;
        if ((first_path = malloc(len)) != NULL)
            snprintf(first_path, len, "%s/%s", dir, first);
    }
    imagen_config_autofill af = {.model_name = name, .first_version_dir = first_path, .gpu_available = false};
    if (!err)
        err = imagen_config_normalize(msg, &af);
    if (!err)
        err = imagen_model_config_build(msg, &mc);
    const imagen_backend *backend = NULL;
    if (!err) {
        if (mc->has_ensemble_scheduling || strcmp(mc->platform, "ensemble") == 0)
            err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "model '%s': ensembles are not supported yet", name);
        else if (mc->has_sequence_batching)
            err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "model '%s': sequence_batching is not supported yet", name);
        else if (mc->decoupled)
            err = imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "model '%s': decoupled models are not supported yet", name);
        else if (mc->backend[0] == '\0')
            err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "model '%s' names no backend (platform '%s')", name,
                                   mc->platform);
        else
            err = imagen__server_find_backend(srv, mc->backend, &backend);
    }
    if (!err && backend->model_auto_complete && !o->disable_auto_complete_config) {
        struct imagen_backend_model view = {name, -1, dir, NULL, mc}; /* config as read, before completion */
        err = backend->model_auto_complete(&view, msg);
        if (!err)
            err = imagen_config_normalize(msg, &af);
        if (!err) {
            imagen_model_config_free(mc);
            mc = NULL;
            err = imagen_model_config_build(msg, &mc);
        }
    }
    free(first);
    free(first_path);
    if (err) {
        imagen_model_config_free(mc);
        imagen_config_msg_free(msg);
        free(*versions);
        *versions = NULL;
        *n_versions = 0;
        return err;
    }
    *msg_out = msg;
    *config_out = mc;
    *backend_out = backend;
    return NULL;
}

/* Loads (or reloads) one model. Runs without the lock except for
 * bookkeeping; the entry is marked busy by the caller. */
static imagen_error *
load_entry(imagen_repository *repo, model_entry *e, const char *override_json)
{
    imagen_server *srv = repo->srv;
    const imagen_server_options *o = imagen__server_options(srv);
    pthread_mutex_lock(&repo->lock);
    const char *src = e->override_dir ? e->override_dir : e->dir;
    char *dir = src ? strdup(src) : NULL;
    bool conflict = e->conflict;
    e->attempted = true;
    pthread_mutex_unlock(&repo->lock);

    imagen_error *err = NULL;
    if (conflict)
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "model '%s' appears in more than one model repository", e->name);
    else if (dir == NULL)
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                               "failed to load '%s': no model directory named '%s' in "
                               "any model repository",
                               e->name, e->name);
    char *fingerprint = dir ? fingerprint_dir(dir) : NULL;

    imagen_config_msg *msg = NULL;
    const imagen_backend *backend = NULL;
    int64_t *avail = NULL, *chosen = NULL;
    size_t n_avail = 0, n_chosen = 0;
    imagen_model_config *probe = NULL;
    if (!err)
        err = prepare_config(repo, e->name, dir, override_json, &msg, &probe, &backend, &avail, &n_avail);
    if (!err) {
        chosen = calloc(n_avail ? n_avail : 1, sizeof(int64_t));
        if (chosen == NULL)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        else
            n_chosen = select_versions(probe, avail, n_avail, chosen, e->name);
        if (!err && n_chosen == 0)
            err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                   "at least one version must be available under the "
                                   "version policy of model '%s'",
                                   e->name);
    }
    imagen_model_config_free(probe);

    if (err) {
        pthread_mutex_lock(&repo->lock);
        bool serving = false;
        for (size_t i = 0; i < e->n_slots; i++)
            serving |= e->slots[i].model != NULL;
        if (!serving && dir == NULL && !conflict && e->n_slots == 0) {
            /* A name with no directory anywhere: the load fails, and the
             * repository keeps no state for it (as Triton). */
            e->attempted = false;
        } else if (!serving) {
            /* Nothing serves: the failure is the model's state. */
            set_reason(&e->model_reason, imagen_error_message(err));
            for (size_t i = 0; i < e->n_slots; i++)
                e->slots[i].state = STATE_UNAVAILABLE;
        }
        free(e->fingerprint);
        e->fingerprint = fingerprint;
        pthread_mutex_unlock(&repo->lock);
        imagen_log(IMAGEN_LOG_ERROR, "core", "failed to load '%s': %s", e->name, imagen_error_message(err));
        imagen_config_msg_free(msg);
        free(avail);
        free(chosen);
        free(dir);
        return err;
    }

    /* Mark the chosen versions LOADING (those not already serving). */
    pthread_mutex_lock(&repo->lock);
    free(e->model_reason);
    e->model_reason = NULL;
    loaded_version *lv = calloc(n_chosen, sizeof(*lv));
    imagen_stats **stats = calloc(n_chosen, sizeof(*stats));
    for (size_t i = 0; lv && stats && i < n_chosen; i++) {
        version_slot *s = get_or_add_slot_locked(e, chosen[i]);
        if (s == NULL)
            continue;
        if (s->model == NULL) {
            s->state = STATE_LOADING;
            set_reason(&s->reason, "");
        }
        if (s->stats == NULL)
            s->stats = imagen_stats_new(e->name, chosen[i], 1, o->latency_histograms, o->latency_summaries,
                                        o->summary_quantiles, o->n_summary_quantiles);
        stats[i] = s->stats ? imagen_stats_ref(s->stats) : NULL;
    }
    pthread_mutex_unlock(&repo->lock);

    imagen_error *first_err = NULL;
    for (size_t i = 0; lv && stats && i < n_chosen; i++) {
        lv[i].version = chosen[i];
        imagen_model_config *mc = NULL;
        lv[i].error =
            stats[i] ? imagen_model_config_build(msg, &mc) : imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        if (!lv[i].error) {
            uint64_t t0 = imagen_time_now_ns();
            lv[i].error = imagen__model_load(srv, e->name, chosen[i], dir, mc, backend, stats[i], &lv[i].model);
            if (!lv[i].error)
                imagen_log(IMAGEN_LOG_INFO, "core", "successfully loaded '%s' version %" PRId64 " (%.1f ms)", e->name,
                           chosen[i], (double)(imagen_time_now_ns() - t0) / 1e6);
        }
        if (lv[i].error) {
            imagen_log(IMAGEN_LOG_ERROR, "core", "failed to load '%s' version %" PRId64 ": %s", e->name, chosen[i],
                       imagen_error_message(lv[i].error));
            if (first_err == NULL)
                first_err =
                    imagen_error_new(imagen_error_code_of(lv[i].error), "failed to load '%s' version %" PRId64 ": %s",
                                     e->name, chosen[i], imagen_error_message(lv[i].error));
        }
    }
    if (lv == NULL || stats == NULL)
        first_err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory loading '%s'", e->name);

    /* Swap in under the lock; collect the references to drop after it. */
    imagen_model **old = calloc(e->n_slots + n_chosen + 1, sizeof(*old));
    size_t n_old = 0;
    pthread_mutex_lock(&repo->lock);
    if (repo->stopping) {
        /* The server shut down while this model loaded: nothing may become
         * READY now, nobody would unload it. */
        for (size_t i = 0; lv && stats && i < n_chosen; i++) {
            if (lv[i].model && old)
                old[n_old++] = lv[i].model;
            lv[i].model = NULL;
        }
        if (first_err == NULL)
            first_err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "Server exiting");
    }
    bool keep_old = first_err != NULL; /* a failed reload keeps the old versions serving */
    for (size_t i = 0; lv && stats && i < n_chosen; i++) {
        version_slot *s = find_slot(e, chosen[i]);
        if (s == NULL) {
            if (lv[i].model && old)
                old[n_old++] = lv[i].model;
            continue;
        }
        if (lv[i].model) {
            if (s->model && old)
                old[n_old++] = s->model;
            s->model = lv[i].model;
            s->state = STATE_READY;
            set_reason(&s->reason, "");
        } else if (s->model == NULL) {
            s->state = STATE_UNAVAILABLE;
            set_reason(&s->reason, imagen_error_message(lv[i].error));
        }
    }
    /* Versions the policy no longer selects are unloaded (only when the
     * whole load succeeded). */
    for (size_t i = 0; !keep_old && i < e->n_slots; i++) {
        bool selected = false;
        for (size_t k = 0; k < n_chosen && !selected; k++)
            selected = chosen[k] == e->slots[i].version;
        if (selected)
            continue;
        if (e->slots[i].model && old)
            old[n_old++] = e->slots[i].model;
        if (e->slots[i].model || e->slots[i].state != STATE_UNAVAILABLE) {
            e->slots[i].state = STATE_UNAVAILABLE;
            set_reason(&e->slots[i].reason, "unloaded");
        }
        e->slots[i].model = NULL;
    }
    free(e->fingerprint);
    e->fingerprint = fingerprint;
    pthread_mutex_unlock(&repo->lock);

    for (size_t i = 0; i < n_old; i++)
        imagen__model_unref(old[i]);
    free(old);
    for (size_t i = 0; lv && i < n_chosen; i++)
        imagen_error_free(lv[i].error);
    for (size_t i = 0; stats && i < n_chosen; i++)
        imagen_stats_unref(stats[i]);
    free(lv);
    free(stats);
    imagen_config_msg_free(msg);
    free(avail);
    free(chosen);
    free(dir);
    return first_err;
}

/* Unloads every version of an entry: READY versions leave at once,
 * in-flight requests finish on them. */
static void
unload_entry(imagen_repository *repo, model_entry *e)
{
    pthread_mutex_lock(&repo->lock);
    imagen_model **old = calloc(e->n_slots + 1, sizeof(*old));
    size_t n_old = 0;
    for (size_t i = 0; i < e->n_slots; i++) {
        version_slot *s = &e->slots[i];
        if (s->model && old)
            old[n_old++] = s->model;
        s->model = NULL;
        s->state = STATE_UNAVAILABLE;
        set_reason(&s->reason, "unloaded");
    }
    /* An unloaded model no longer counts for readiness, failed or not. */
    free(e->model_reason);
    e->model_reason = NULL;
    e->attempted = false;
    pthread_mutex_unlock(&repo->lock);
    for (size_t i = 0; i < n_old; i++) {
        imagen_log(IMAGEN_LOG_INFO, "core", "unloading '%s' version %" PRId64, e->name, imagen_model_version(old[i]));
        imagen__model_unref(old[i]);
    }
    free(old);
}

static void
mark_busy(imagen_repository *repo, model_entry *e)
{
    pthread_mutex_lock(&repo->lock);
    while (e->busy)
        pthread_cond_wait(&repo->busy_cond, &repo->lock);
    e->busy = true;
    pthread_mutex_unlock(&repo->lock);
}

static void
clear_busy(imagen_repository *repo, model_entry *e)
{
    pthread_mutex_lock(&repo->lock);
    e->busy = false;
    pthread_cond_broadcast(&repo->busy_cond);
    pthread_mutex_unlock(&repo->lock);
}

/* ---- parallel start-up loading ---------------------------------------------------- */

typedef struct load_job {
    imagen_repository *repo;
    model_entry **entries;
    size_t n;
    atomic_size_t next;
    atomic_size_t failed;
} load_job;

static void *
loader_main(void *arg)
{
    load_job *job = arg;
    size_t i;
    while ((i = atomic_fetch_add(&job->next, 1)) < job->n) {
        model_entry *e = job->entries[i];
        mark_busy(job->repo, e);
        imagen_error *err = load_entry(job->repo, e, NULL);
        clear_busy(job->repo, e);
        if (err) {
            atomic_fetch_add(&job->failed, 1);
            imagen_error_free(err);
        }
    }
    return NULL;
}

/* Loads the entries on up to model_load_thread_count threads; returns the
 * number that failed. */
static size_t
load_parallel(imagen_repository *repo, model_entry **entries, size_t n)
{
    if (n == 0)
        return 0;
    const imagen_server_options *o = imagen__server_options(repo->srv);
    load_job job = {.repo = repo, .entries = entries, .n = n};
    atomic_init(&job.next, 0);
    atomic_init(&job.failed, 0);
    size_t threads = (size_t)o->model_load_thread_count;
    if (threads > n)
        threads = n;
    pthread_t tids[64];
    if (threads > 64)
        threads = 64;
    size_t started = 0;
    for (size_t t = 1; t < threads; t++)
        if (pthread_create(&tids[started], NULL, loader_main, &job) == 0)
            started++;
    loader_main(&job);
    for (size_t t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    return atomic_load(&job.failed);
}

/* ---- poll mode ------------------------------------------------------------------ */

/* Clears what the repository remembers of a model directory: a model that
 * is no longer on disk counts neither for readiness nor as changed. */
static void
forget_directory_locked(model_entry *e)
{
    e->attempted = false;
    free(e->fingerprint);
    e->fingerprint = NULL;
    free(e->model_reason);
    e->model_reason = NULL;
}

static void
poll_once(imagen_repository *repo)
{
    pthread_mutex_lock(&repo->lock);
    scan_repositories_locked(repo);
    model_entry **to_load = calloc(repo->n_entries + 1, sizeof(*to_load));
    model_entry **to_unload = calloc(repo->n_entries + 1, sizeof(*to_unload));
    size_t n_load = 0, n_unload = 0;
    for (size_t i = 0; to_load && to_unload && i < repo->n_entries; i++) {
        model_entry *e = repo->entries[i];
        if (e->override_dir)
            continue;
        if (e->dir == NULL) {
            /* Gone from disk: unload it and forget what was known about its
             * directory, so that a folder put back later loads again even
             * if its files look exactly as before. */
            bool has = false;
            for (size_t k = 0; k < e->n_slots; k++)
                has |= e->slots[k].model != NULL;
            if (has)
                to_unload[n_unload++] = e;
            if (!e->busy)
                forget_directory_locked(e);
            continue;
        }
        char *fp = fingerprint_dir(e->dir);
        if (!e->attempted || fp == NULL || e->fingerprint == NULL || strcmp(fp, e->fingerprint) != 0)
            to_load[n_load++] = e;
        free(fp);
    }
    pthread_mutex_unlock(&repo->lock);
    for (size_t i = 0; i < n_unload; i++) {
        mark_busy(repo, to_unload[i]);
        unload_entry(repo, to_unload[i]);
        clear_busy(repo, to_unload[i]);
    }
    if (n_load)
        load_parallel(repo, to_load, n_load);
    free(to_load);
    free(to_unload);
}

static void *
poll_main(void *arg)
{
    imagen_repository *repo = arg;
    const imagen_server_options *o = imagen__server_options(repo->srv);
    pthread_mutex_lock(&repo->lock);
    while (!repo->stopping) {
        uint64_t deadline = imagen_time_now_ns() + (uint64_t)o->repository_poll_secs * 1000000000u;
        while (!repo->stopping && imagen_time_now_ns() < deadline)
            imagen_cond_wait_until(&repo->poll_cond, &repo->lock, deadline);
        if (repo->stopping)
            break;
        pthread_mutex_unlock(&repo->lock);
        poll_once(repo);
        pthread_mutex_lock(&repo->lock);
    }
    pthread_mutex_unlock(&repo->lock);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------ */

imagen_error *
imagen__repository_create(imagen_server *srv, imagen_repository **out)
{
    imagen_repository *repo = calloc(1, sizeof(*repo));
    if (repo == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    repo->srv = srv;
    pthread_mutex_init(&repo->lock, NULL);
    pthread_cond_init(&repo->busy_cond, NULL);
    imagen_cond_init_monotonic(&repo->poll_cond);
    *out = repo;
    return NULL;
}

imagen_error *
imagen__repository_start(imagen_repository *repo)
{
    const imagen_server_options *o = imagen__server_options(repo->srv);
    /* A repository root that cannot be read is a start-up error, as in
     * Triton: serving nothing because of a typo in a path helps nobody. */
    for (size_t r = 0; r < o->n_model_repositories; r++) {
        struct stat st;
        bool exists = stat(o->model_repositories[r], &st) == 0;
        if (!exists || !S_ISDIR(st.st_mode))
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "failed to open model repository '%s': %s",
                                    o->model_repositories[r], exists ? "not a directory" : strerror(errno));
    }
    pthread_mutex_lock(&repo->lock);
    scan_repositories_locked(repo);
    model_entry **todo = calloc(repo->n_entries + o->n_startup_models + 1, sizeof(*todo));
    size_t n = 0;
    imagen_error *err = NULL;
    if (todo == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    } else if (o->control_mode != IMAGEN_MODEL_CONTROL_EXPLICIT) {
        for (size_t i = 0; i < repo->n_entries; i++)
            todo[n++] = repo->entries[i];
    } else {
        bool all = false;
        for (size_t i = 0; i < o->n_startup_models; i++)
            all |= strcmp(o->startup_models[i], "*") == 0;
        if (all && o->n_startup_models > 1) {
            err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "--load-model=* must be the only --load-model");
        } else if (all) {
            for (size_t i = 0; i < repo->n_entries; i++)
                todo[n++] = repo->entries[i];
        } else {
            for (size_t i = 0; i < o->n_startup_models; i++) {
                model_entry *e = get_or_add_entry_locked(repo, o->startup_models[i]);
                bool dup = false;
                for (size_t k = 0; k < n && !dup; k++)
                    dup = todo[k] == e;
                if (e && !dup)
                    todo[n++] = e;
            }
        }
    }
    pthread_mutex_unlock(&repo->lock);
    if (err) {
        free(todo);
        return err;
    }
    size_t failed = load_parallel(repo, todo, n);
    free(todo);
    if (failed && o->exit_on_error)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "failed to load all models (%zu failed)", failed);
    if (o->control_mode == IMAGEN_MODEL_CONTROL_POLL) {
        if (pthread_create(&repo->poll_thread, NULL, poll_main, repo) != 0)
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot start the repository poll thread");
        repo->poll_started = true;
    }
    return NULL;
}

void
imagen__repository_shutdown(imagen_repository *repo)
{
    if (repo == NULL)
        return;
    pthread_mutex_lock(&repo->lock);
    repo->stopping = true;
    pthread_cond_broadcast(&repo->poll_cond);
    pthread_mutex_unlock(&repo->lock);
    if (repo->poll_started) {
        pthread_join(repo->poll_thread, NULL);
        repo->poll_started = false;
    }
    /* A snapshot: a concurrent load may grow the table. Loads that finish
     * after `stopping` was set drop their new versions themselves. */
    pthread_mutex_lock(&repo->lock);
    size_t n = repo->n_entries;
    model_entry **all = malloc((n ? n : 1) * sizeof(*all));
    if (all && n)
        memcpy(all, repo->entries, n * sizeof(*all));
    pthread_mutex_unlock(&repo->lock);
    for (size_t i = 0; all && i < n; i++) {
        mark_busy(repo, all[i]);
        unload_entry(repo, all[i]);
        clear_busy(repo, all[i]);
    }
    free(all);
}

static void
remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char sub[4096];
            snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
            struct stat st;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(sub);
            else
                unlink(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

void
imagen__repository_destroy(imagen_repository *repo)
{
    if (repo == NULL)
        return;
    for (size_t i = 0; i < repo->n_entries; i++) {
        model_entry *e = repo->entries[i];
        for (size_t k = 0; k < e->n_slots; k++) {
            free(e->slots[k].reason);
            imagen_stats_unref(e->slots[k].stats);
        }
        if (e->override_dir) {
            remove_tree(e->override_dir);
            free(e->override_dir);
        }
        free(e->slots);
        free(e->name);
        free(e->dir);
        free(e->model_reason);
        free(e->fingerprint);
        free(e);
    }
    free(repo->entries);
    pthread_mutex_destroy(&repo->lock);
    pthread_cond_destroy(&repo->busy_cond);
    pthread_cond_destroy(&repo->poll_cond);
    free(repo);
}

bool
imagen__repository_all_ready(imagen_repository *repo)
{
    bool ready = true;
    pthread_mutex_lock(&repo->lock);
    for (size_t i = 0; i < repo->n_entries && ready; i++) {
        model_entry *e = repo->entries[i];
        if (!e->attempted)
            continue;
        size_t counted = 0;
        for (size_t k = 0; k < e->n_slots && ready; k++) {
            version_slot *s = &e->slots[k];
            if (s->state == STATE_UNAVAILABLE && s->reason && strcmp(s->reason, "unloaded") == 0)
                continue;
            counted++;
            ready = s->state == STATE_READY;
        }
        if (ready && counted == 0 && e->model_reason != NULL)
            ready = false;
        if (ready && e->n_slots == 0)
            ready = false;
    }
    pthread_mutex_unlock(&repo->lock);
    return ready;
}

/* ---- lookups (request path) -------------------------------------------------------- */

imagen_error *
imagen_server_model_acquire(imagen_server *srv, const char *name, int64_t version, imagen_model **out)
{
    imagen_repository *repo = imagen__server_repository(srv);
    if (name == NULL)
        name = "";
    pthread_mutex_lock(&repo->lock);
    model_entry *e = find_entry_locked(repo, name, NULL);
    imagen_error *err = NULL;
    imagen_model *m = NULL;
    if (e == NULL || (e->n_slots == 0 && e->model_reason == NULL)) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Request for unknown model: '%s' is not found", name);
    } else if (version < 0) {
        for (size_t i = e->n_slots; i-- > 0 && m == NULL;)
            if (e->slots[i].model && e->slots[i].state == STATE_READY)
                m = e->slots[i].model;
        if (m == NULL)
            err = imagen_error_new(IMAGEN_ERR_NOT_FOUND, "Request for unknown model: '%s' has no available versions",
                                   name);
    } else {
        version_slot *s = find_slot(e, version);
        if (s == NULL)
            err = imagen_error_new(IMAGEN_ERR_NOT_FOUND,
                                   "Request for unknown model: '%s' version %" PRId64 " is not found", name, version);
        else if (s->model == NULL || s->state != STATE_READY)
            err = imagen_error_new(IMAGEN_ERR_UNAVAILABLE,
                                   "Request for unknown model: '%s' version %" PRId64 " is not at ready state", name,
                                   version);
        else
            m = s->model;
    }
    if (m)
        imagen__model_ref(m);
    pthread_mutex_unlock(&repo->lock);
    if (err == NULL)
        *out = m;
    return err;
}

bool
imagen_server_model_is_ready(imagen_server *srv, const char *name, int64_t version)
{
    imagen_model *m = NULL;
    imagen_error *err = imagen_server_model_acquire(srv, name, version, &m);
    if (err) {
        imagen_error_free(err);
        return false;
    }
    imagen_model_release(m);
    return true;
}

imagen_error *
imagen_server_model_ready_versions(imagen_server *srv, const char *name, int64_t **versions, size_t *n)
{
    imagen_repository *repo = imagen__server_repository(srv);
    *versions = NULL;
    *n = 0;
    pthread_mutex_lock(&repo->lock);
    model_entry *e = find_entry_locked(repo, name ? name : "", NULL);
    imagen_error *err = NULL;
    if (e == NULL || (e->n_slots == 0 && e->model_reason == NULL)) {
        err =
            imagen_error_new(IMAGEN_ERR_INVALID_ARG, "Request for unknown model: '%s' is not found", name ? name : "");
    } else {
        *versions = calloc(e->n_slots + 1, sizeof(int64_t));
        if (*versions == NULL)
            err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        for (size_t i = 0; *versions && i < e->n_slots; i++)
            if (e->slots[i].state == STATE_READY)
                (*versions)[(*n)++] = e->slots[i].version;
    }
    pthread_mutex_unlock(&repo->lock);
    return err;
}

imagen_error *
imagen_server_repository_index(imagen_server *srv, bool ready_only, imagen_repository_entry **entries, size_t *n)
{
    imagen_repository *repo = imagen__server_repository(srv);
    *entries = NULL;
    *n = 0;
    pthread_mutex_lock(&repo->lock);
    /* Pick up models added to disk since the last scan (index lists what
     * is in the repository, loaded or not). Directories are only refreshed
     * for entries not being loaded right now. */
    if (imagen__server_options(srv)->control_mode == IMAGEN_MODEL_CONTROL_EXPLICIT)
        rescan_if_idle_locked(repo);
    size_t cap = 0;
    for (size_t i = 0; i < repo->n_entries; i++)
        cap += repo->entries[i]->n_slots + 1;
    imagen_repository_entry *rows = calloc(cap + 1, sizeof(*rows));
    imagen_error *err = NULL;
    if (rows == NULL)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    size_t k = 0;
    for (size_t i = 0; rows && i < repo->n_entries; i++) {
        model_entry *e = repo->entries[i];
        if (e->dir == NULL && e->n_slots == 0 && e->model_reason == NULL && e->override_dir == NULL)
            continue; /* a name asked for that does not exist anywhere */
        if (e->n_slots == 0 || (e->model_reason != NULL && !ready_only)) {
            if (ready_only)
                continue;
            if (e->n_slots == 0) {
                rows[k].name = strdup(e->name);
                rows[k].version = -1;
                rows[k].state = e->model_reason ? STATE_UNAVAILABLE : NULL;
                rows[k].reason = strdup(e->model_reason ? e->model_reason : "");
                k++;
                continue;
            }
        }
        for (size_t s = 0; s < e->n_slots; s++) {
            version_slot *vs = &e->slots[s];
            if (ready_only && vs->state != STATE_READY)
                continue;
            rows[k].name = strdup(e->name);
            rows[k].version = vs->version;
            rows[k].state = vs->state;
            const char *reason = vs->reason;
            if (vs->state == STATE_UNAVAILABLE && e->model_reason && (reason == NULL || reason[0] == '\0'))
                reason = e->model_reason;
            rows[k].reason = strdup(reason ? reason : "");
            k++;
        }
    }
    pthread_mutex_unlock(&repo->lock);
    if (err)
        return err;
    for (size_t i = 0; i < k; i++) {
        if (rows[i].name == NULL || rows[i].reason == NULL) {
            imagen_repository_index_free(rows, k);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        }
    }
    *entries = rows;
    *n = k;
    return NULL;
}

void
imagen_repository_index_free(imagen_repository_entry *entries, size_t n)
{
    for (size_t i = 0; entries && i < n; i++) {
        free(entries[i].name);
        free(entries[i].reason);
    }
    free(entries);
}

/* ---- explicit load / unload ----------------------------------------------------------- */

static bool
valid_model_name(const char *name)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > IMAGEN_NAME_MAX_BYTES)
        return false;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (const char *p = name; *p; p++)
        if (*p == '/' || *p == '\\' || (unsigned char)*p < 0x20)
            return false;
    return true;
}

static bool
safe_relative_path(const char *path)
{
    if (path == NULL || path[0] == '\0' || path[0] == '/')
        return false;
    const char *seg = path;
    for (const char *p = path;; p++) {
        if (*p == '/' || *p == '\0') {
            size_t len = (size_t)(p - seg);
            if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
                return false;
            if (*p == '\0')
                break;
            seg = p + 1;
        } else if ((unsigned char)*p < 0x20 || *p == '\\') {
            return false;
        }
    }
    return true;
}

/* Writes load-request files into a fresh temporary model directory. */
static imagen_error *
write_override_dir(const char *name, const imagen_model_file *files, size_t n, char **out_dir)
{
    const char *tmp = getenv("TMPDIR");
    char templ[4096];
    snprintf(templ, sizeof(templ), "%s/imagen-model-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (mkdtemp(templ) == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot create a directory for model '%s': %s", name,
                                strerror(errno));
    for (size_t i = 0; i < n; i++) {
        if (!safe_relative_path(files[i].path)) {
            remove_tree(templ);
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                    "file path '%s' of model '%s' must be relative and stay "
                                    "inside the model directory",
                                    files[i].path ? files[i].path : "", name);
        }
        if (files[i].size > MODEL_FILE_MAX_BYTES) {
            remove_tree(templ);
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "file '%s' of model '%s' is larger than %u bytes",
                                    files[i].path, name, MODEL_FILE_MAX_BYTES);
        }
        char path[4096];
        int plen = snprintf(path, sizeof(path), "%s/%s", templ, files[i].path);
        if (plen < 0 || (size_t)plen >= sizeof(path)) {
            remove_tree(templ);
            return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "file path '%s' of model '%s' is too long", files[i].path,
                                    name);
        }
        /* Create parent folders. */
        for (char *p = path + strlen(templ) + 1; *p; p++) {
            if (*p == '/') {
                *p = '\0';
                mkdir(path, 0755);
                *p = '/';
            }
        }
        FILE *f = fopen(path, "wb");
        if (f == NULL || (files[i].size && fwrite(files[i].data, 1, files[i].size, f) != files[i].size)) {
            if (f)
                fclose(f);
            remove_tree(templ);
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "cannot write '%s' of model '%s'", files[i].path, name);
        }
        fclose(f);
    }
    *out_dir = strdup(templ);
    return NULL;
}

/* Load and unload are allowed only in explicit mode (the message is
 * Triton's, which names polling even in none mode) and on a plain name. */
static imagen_error *
check_control_request(imagen_server *srv, const char *name)
{
    if (imagen__server_options(srv)->control_mode != IMAGEN_MODEL_CONTROL_EXPLICIT)
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE,
                                "explicit model load / unload is not allowed if polling is enabled");
    if (!valid_model_name(name))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "invalid model name '%s'", name ? name : "");
    return NULL;
}

imagen_error *
imagen_server_model_load(imagen_server *srv, const char *name, const char *config_json, const imagen_model_file *files,
                         size_t n_files)
{
    imagen_repository *repo = imagen__server_repository(srv);
    IMAGEN_RETURN_IF_ERROR(check_control_request(srv, name));
    if (imagen_server_is_exiting(srv))
        return imagen_error_new(IMAGEN_ERR_UNAVAILABLE, "Server exiting");
    if (n_files > 0 && config_json == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "failed to load '%s': model files given without a 'config' parameter", name);
    char *override_dir = NULL;
    if (n_files > 0)
        IMAGEN_RETURN_IF_ERROR(write_override_dir(name, files, n_files, &override_dir));

    pthread_mutex_lock(&repo->lock);
    rescan_if_idle_locked(repo);
    model_entry *e = get_or_add_entry_locked(repo, name);
    pthread_mutex_unlock(&repo->lock);
    if (e == NULL) {
        if (override_dir)
            remove_tree(override_dir);
        free(override_dir);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    }
    mark_busy(repo, e);
    /* A new override directory replaces the previous one; without files the
     * model goes back to its directory in the repository. */
    pthread_mutex_lock(&repo->lock);
    char *previous_override = e->override_dir;
    e->override_dir = override_dir;
    pthread_mutex_unlock(&repo->lock);
    imagen_error *err = load_entry(repo, e, config_json);
    if (err) {
        /* Keep the old directory on failure: old versions may still serve
         * from it. Only the new one (if any) is removed. */
        pthread_mutex_lock(&repo->lock);
        e->override_dir = previous_override;
        pthread_mutex_unlock(&repo->lock);
        previous_override = override_dir;
    }
    clear_busy(repo, e);
    if (previous_override) {
        remove_tree(previous_override);
        free(previous_override);
    }
    return err;
}

imagen_error *
imagen_server_model_unload(imagen_server *srv, const char *name, bool unload_dependents)
{
    (void)unload_dependents; /* no ensembles yet, so no dependents */
    imagen_repository *repo = imagen__server_repository(srv);
    IMAGEN_RETURN_IF_ERROR(check_control_request(srv, name));
    pthread_mutex_lock(&repo->lock);
    model_entry *e = find_entry_locked(repo, name, NULL);
    pthread_mutex_unlock(&repo->lock);
    if (e == NULL)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "failed to unload '%s', no version is available", name);
    mark_busy(repo, e);
    unload_entry(repo, e);
    clear_busy(repo, e);
    return NULL;
}

/* ---- statistics --------------------------------------------------------------------------- */

static imagen_error *
collect_stats(imagen_server *srv, const char *name, int64_t version, bool all_slots, imagen_model_stats **out,
              size_t *n)
{
    imagen_repository *repo = imagen__server_repository(srv);
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&repo->lock);
    size_t cap = 0;
    for (size_t i = 0; i < repo->n_entries; i++)
        cap += repo->entries[i]->n_slots;
    imagen_stats **picked = calloc(cap + 1, sizeof(*picked));
    size_t k = 0;
    imagen_error *err = NULL;
    if (picked == NULL)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    model_entry *only = NULL;
    if (!err && name != NULL) {
        only = find_entry_locked(repo, name, NULL);
        bool any_ready = false;
        for (size_t s = 0; only && s < only->n_slots; s++)
            any_ready |= only->slots[s].state == STATE_READY && (version < 0 || only->slots[s].version == version);
        if (!any_ready)
            err = version < 0 ? imagen_error_new(IMAGEN_ERR_INVALID_ARG, "requested model '%s' is not available", name)
                              : imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                                 "requested model version is not available for model '%s'", name);
    }
    for (size_t i = 0; !err && i < repo->n_entries; i++) {
        model_entry *e = repo->entries[i];
        if (only && e != only)
            continue;
        for (size_t s = 0; s < e->n_slots; s++) {
            version_slot *vs = &e->slots[s];
            if (vs->stats == NULL)
                continue;
            if (!all_slots && vs->state != STATE_READY)
                continue;
            if (version >= 0 && vs->version != version)
                continue;
            picked[k++] = imagen_stats_ref(vs->stats);
        }
    }
    pthread_mutex_unlock(&repo->lock);
    if (err) {
        free(picked);
        return err;
    }
    imagen_model_stats *rows = calloc(k + 1, sizeof(*rows));
    size_t done = 0;
    for (size_t i = 0; i < k; i++) {
        if (rows && imagen_stats_snapshot(picked[i], &rows[done]))
            done++;
        imagen_stats_unref(picked[i]);
    }
    free(picked);
    if (rows == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
    *out = rows;
    *n = done;
    return NULL;
}

imagen_error *
imagen_server_model_statistics(imagen_server *srv, const char *name, int64_t version, imagen_model_stats **stats,
                               size_t *n)
{
    return collect_stats(srv, name, version, false, stats, n);
}

imagen_error *
imagen_server_metrics_snapshot(imagen_server *srv, imagen_model_stats **stats, size_t *n)
{
    return collect_stats(srv, NULL, -1, true, stats, n);
}
