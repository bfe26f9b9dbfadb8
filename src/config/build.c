/*
 * Validation of a ModelConfig message (the checks Triton makes at load,
 * spec §3.3/§3.4/§3.6/§3.9) and construction of the typed, immutable
 * imagen_model_config the core and backends read at run time; also the small
 * edit API backends use to auto-complete a config. Runs on a model-load
 * thread; a built config is never written again and may be read from any
 * thread. Every error names the model and the field at fault and frees
 * everything built so far.
 */
#include "config/schema.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model; /* for messages */
    imagen_error *err;
} bctx;

static bool bfail(bctx *c, const char *field, const char *fmt, ...) IMAGEN_PRINTF(3, 4);

static bool
bfail(bctx *c, const char *field, const char *fmt, ...)
{
    if (c->err != NULL)
        return false;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    c->err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "model '%s': %s (field '%s')", c->model, what, field);
    return false;
}

static bool
oom(bctx *c)
{
    if (c->err == NULL)
        c->err = imagen_error_new(IMAGEN_ERR_INTERNAL, "model '%s': out of memory building config", c->model);
    return false;
}

static char *
dup_str(bctx *c, const char *s)
{
    char *p = imagen_config_strndup(s, strlen(s));
    if (p == NULL)
        oom(c);
    return p;
}

/* Copies repeated int64 field `name` of `m` into dims[] (rank <= MAX_RANK). */
static bool
copy_dims(bctx *c, const imagen_config_msg *m, const char *name, const char *what, int64_t min, int64_t *dims,
          size_t *rank)
{
    size_t n = imagen_config_count(m, name);
    if (n > IMAGEN_MAX_RANK)
        return bfail(c, name, "%s has rank %zu, more than %d", what, n, IMAGEN_MAX_RANK);
    for (size_t i = 0; i < n; i++) {
        int64_t d = imagen_config_at(m, name, i)->i;
        if (d < min)
            return bfail(c, name, "%s has dimension %lld, must be >= %lld", what, (long long)d, (long long)min);
        dims[i] = d;
    }
    *rank = n;
    return true;
}

/* ---- tensors ---- */

static bool
build_tensor(bctx *c, const imagen_config_msg *m, bool is_output, imagen_tensor_config *t)
{
    const char *kind = is_output ? "output" : "input";
    const char *name = imagen_config_get_str(m, "name");
    char what[300];
    if (name[0] == '\0')
        return bfail(c, "name", "%s has an empty name", kind);
    snprintf(what, sizeof(what), "%s '%s'", kind, name);
    if ((t->name = dup_str(c, name)) == NULL)
        return false;
    int64_t dt = imagen_config_get_int(m, "data_type");
    if (dt <= IMAGEN_TYPE_INVALID || dt >= IMAGEN_DATATYPE_COUNT)
        return bfail(c, "data_type", "%s must specify a data type other than TYPE_INVALID", what);
    t->datatype = (imagen_datatype)dt;
    if (!copy_dims(c, m, "dims", what, -1, t->dims, &t->rank))
        return false;
    const imagen_config_msg *reshape = imagen_config_get_msg(m, "reshape");
    if (reshape != NULL) {
        t->has_reshape = true;
        if (!copy_dims(c, reshape, "shape", what, -1, t->reshape, &t->reshape_rank))
            return false;
    }
    if (t->rank == 0 && !t->has_reshape)
        return bfail(c, "dims", "%s must have at least one dimension (rank >= 1) unless reshape is given", what);
    t->is_shape_tensor = imagen_config_get_bool(m, "is_shape_tensor");
    if (is_output) {
        const char *label = imagen_config_get_str(m, "label_filename");
        if (label[0] != '\0' && (t->label_filename = dup_str(c, label)) == NULL)
            return false;
    } else {
        t->format = (imagen_tensor_format)imagen_config_get_int(m, "format");
        t->optional = imagen_config_get_bool(m, "optional");
        t->allow_ragged_batch = imagen_config_get_bool(m, "allow_ragged_batch");
    }
    return true;
}

static int
compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool
build_tensors(bctx *c, const imagen_config_msg *msg, bool is_output, imagen_tensor_config **out, size_t *n_out)
{
    const char *field = is_output ? "output" : "input";
    size_t n = imagen_config_count(msg, field);
    if (n > IMAGEN_CONFIG_MAX_TENSORS)
        return bfail(c, field, "%zu %ss, more than the limit of %d", n, field, IMAGEN_CONFIG_MAX_TENSORS);
    if (n == 0)
        return true;
    imagen_tensor_config *ts = calloc(n, sizeof(*ts));
    if (ts == NULL)
        return oom(c);
    *out = ts;
    for (size_t i = 0; i < n; i++) {
        (*n_out)++; /* counted first so a partial entry is freed too */
        if (!build_tensor(c, imagen_config_at(msg, field, i)->m, is_output, &ts[i]))
            return false;
    }
    /* Unique names: sort a copy of the pointers (n log n). */
    const char **names = malloc(n * sizeof(*names));
    if (names == NULL)
        return oom(c);
    for (size_t i = 0; i < n; i++)
        names[i] = ts[i].name;
    qsort(names, n, sizeof(*names), compare_names);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            bfail(c, "name", "%s '%s' is declared more than once", field, names[i]);
            free(names);
            return false;
        }
    }
    free(names);
    return true;
}

/* ---- dynamic batching ---- */

static void
read_queue_policy(const imagen_config_msg *m, imagen_queue_policy *q)
{
    memset(q, 0, sizeof(*q));
    if (m == NULL)
        return;
    q->timeout_action = (imagen_timeout_action)imagen_config_get_int(m, "timeout_action");
    q->default_timeout_us = imagen_config_get_uint(m, "default_timeout_microseconds");
    q->allow_timeout_override = imagen_config_get_bool(m, "allow_timeout_override");
    q->max_queue_size = (uint32_t)imagen_config_get_uint(m, "max_queue_size");
}

static bool
delays_with_timeout(const imagen_queue_policy *q)
{
    return q->timeout_action == IMAGEN_TIMEOUT_DELAY && q->default_timeout_us != 0;
}

static bool
build_dynamic_batching(bctx *c, const imagen_config_msg *db, int32_t max_batch, imagen_dynamic_batching *out)
{
    size_t n = imagen_config_count(db, "preferred_batch_size");
    for (size_t i = 0; i < n; i++) {
        int64_t s = imagen_config_at(db, "preferred_batch_size", i)->i;
        if (s <= 0)
            return bfail(c, "dynamic_batching.preferred_batch_size", "preferred batch size %lld must be positive",
                         (long long)s);
        if (max_batch > 0 && s > max_batch)
            return bfail(c, "dynamic_batching.preferred_batch_size",
                         "preferred batch size %lld must be <= max_batch_size %d", (long long)s, max_batch);
    }
    size_t np = n ? n : (max_batch > 0 ? 1 : 0);
    if (np > 0) {
        out->preferred_batch_sizes = calloc(np, sizeof(int32_t));
        if (out->preferred_batch_sizes == NULL)
            return oom(c);
        for (size_t i = 0; i < n; i++)
            out->preferred_batch_sizes[i] = (int32_t)imagen_config_at(db, "preferred_batch_size", i)->i;
        if (n == 0)
            out->preferred_batch_sizes[0] = max_batch;
        out->n_preferred_batch_sizes = np;
    }
    out->max_queue_delay_us = imagen_config_get_uint(db, "max_queue_delay_microseconds");
    out->preserve_ordering = imagen_config_get_bool(db, "preserve_ordering");
    out->priority_levels = imagen_config_get_uint(db, "priority_levels");
    out->default_priority_level = imagen_config_get_uint(db, "default_priority_level");
    read_queue_policy(imagen_config_get_msg(db, "default_queue_policy"), &out->default_queue_policy);

    uint64_t levels = out->priority_levels;
    size_t n_pq = imagen_config_count(db, "priority_queue_policy");
    if (levels > IMAGEN_CONFIG_MAX_PRIORITY_LEVELS_COUNT)
        return bfail(c, "dynamic_batching.priority_levels", "priority_levels %llu is more than the limit of %d",
                     (unsigned long long)levels, IMAGEN_CONFIG_MAX_PRIORITY_LEVELS_COUNT);
    if (levels > 0) {
        if (out->default_priority_level == 0 || out->default_priority_level > levels)
            return bfail(c, "dynamic_batching.default_priority_level",
                         "default priority level %llu must be in range [1, %llu]",
                         (unsigned long long)out->default_priority_level, (unsigned long long)levels);
        out->level_policies = calloc((size_t)levels + 1, sizeof(imagen_queue_policy));
        if (out->level_policies == NULL)
            return oom(c);
        for (uint64_t l = 1; l <= levels; l++)
            out->level_policies[l] = out->default_queue_policy;
        for (size_t i = 0; i < n_pq; i++) {
            const imagen_config_msg *e = imagen_config_at(db, "priority_queue_policy", i)->m;
            uint64_t key = imagen_config_get_uint(e, "key");
            if (key == 0 || key > levels)
                return bfail(c, "dynamic_batching.priority_queue_policy",
                             "priority queue policy level %llu must be in range [1, %llu]", (unsigned long long)key,
                             (unsigned long long)levels);
            read_queue_policy(imagen_config_get_msg(e, "value"), &out->level_policies[key]);
        }
    }
    if (out->preserve_ordering) {
        if (levels > 1)
            return bfail(c, "dynamic_batching.preserve_ordering",
                         "preserve_ordering requires priority_levels <= 1, got %llu", (unsigned long long)levels);
        if (delays_with_timeout(&out->default_queue_policy))
            return bfail(c, "dynamic_batching.preserve_ordering",
                         "preserve_ordering cannot be used with a DELAY queue policy that has a timeout");
        for (size_t i = 0; i < n_pq; i++) {
            imagen_queue_policy q;
            read_queue_policy(imagen_config_get_msg(imagen_config_at(db, "priority_queue_policy", i)->m, "value"), &q);
            if (delays_with_timeout(&q))
                return bfail(c, "dynamic_batching.preserve_ordering",
                             "preserve_ordering cannot be used with a DELAY queue policy that has a timeout");
        }
    }
    return true;
}

/* ---- instance groups ---- */

static bool
build_instance_groups(bctx *c, const imagen_config_msg *msg, imagen_model_config *cfg)
{
    size_t n = imagen_config_count(msg, "instance_group");
    if (n == 0)
        return true;
    if (n > IMAGEN_CONFIG_MAX_INSTANCES)
        return bfail(c, "instance_group", "%zu instance groups, more than %d instances", n,
                     IMAGEN_CONFIG_MAX_INSTANCES);
    cfg->instance_groups = calloc(n, sizeof(*cfg->instance_groups));
    if (cfg->instance_groups == NULL)
        return oom(c);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const imagen_config_msg *g = imagen_config_at(msg, "instance_group", i)->m;
        imagen_instance_group *ig = &cfg->instance_groups[i];
        cfg->n_instance_groups++;
        if ((ig->name = dup_str(c, imagen_config_get_str(g, "name"))) == NULL)
            return false;
        ig->kind = (imagen_instance_kind)imagen_config_get_int(g, "kind");
        ig->count = (int32_t)imagen_config_get_int(g, "count");
        ig->passive = imagen_config_get_bool(g, "passive");
        if (ig->count < 1)
            return bfail(c, "instance_group.count", "instance group '%s' has count %d, must be >= 1", ig->name,
                         ig->count);
        size_t ng = imagen_config_count(g, "gpus");
        if (ng > IMAGEN_CONFIG_MAX_INSTANCES)
            return bfail(c, "instance_group.gpus", "instance group '%s' lists %zu GPUs", ig->name, ng);
        if (ng > 0) {
            ig->gpus = calloc(ng, sizeof(int32_t));
            if (ig->gpus == NULL)
                return oom(c);
            for (size_t k = 0; k < ng; k++) {
                ig->gpus[k] = (int32_t)imagen_config_at(g, "gpus", k)->i;
                if (ig->gpus[k] < 0)
                    return bfail(c, "instance_group.gpus", "instance group '%s' lists GPU %d", ig->name, ig->gpus[k]);
            }
            ig->n_gpus = ng;
        }
        uint64_t per = ig->kind == IMAGEN_KIND_GPU && ng > 0 ? ng : 1;
        total += (uint64_t)ig->count * per;
        if (total > IMAGEN_CONFIG_MAX_INSTANCES)
            return bfail(c, "instance_group.count", "model has more than %d instances in total",
                         IMAGEN_CONFIG_MAX_INSTANCES);
    }
    return true;
}

/* ---- maps of strings ---- */

static bool
build_params(bctx *c, const imagen_config_msg *msg, const char *field, bool nested_value, imagen_config_param **out,
             size_t *n_out)
{
    size_t n = imagen_config_count(msg, field);
    if (n == 0)
        return true;
    *out = calloc(n, sizeof(**out));
    if (*out == NULL)
        return oom(c);
    for (size_t i = 0; i < n; i++) {
        const imagen_config_msg *e = imagen_config_at(msg, field, i)->m;
        const char *value;
        if (nested_value) {
            const imagen_config_msg *v = imagen_config_get_msg(e, "value");
            value = v ? imagen_config_get_str(v, "string_value") : "";
        } else {
            value = imagen_config_get_str(e, "value");
        }
        (*n_out)++;
        if (((*out)[i].key = dup_str(c, imagen_config_get_str(e, "key"))) == NULL ||
            ((*out)[i].value = dup_str(c, value)) == NULL)
            return false;
    }
    return true;
}

/* ---- warmup ---- */

static bool
build_warmups(bctx *c, const imagen_config_msg *msg, imagen_model_config *cfg)
{
    size_t n = imagen_config_count(msg, "model_warmup");
    if (n == 0)
        return true;
    cfg->warmups = calloc(n, sizeof(*cfg->warmups));
    if (cfg->warmups == NULL)
        return oom(c);
    for (size_t i = 0; i < n; i++) {
        const imagen_config_msg *w = imagen_config_at(msg, "model_warmup", i)->m;
        imagen_warmup *wu = &cfg->warmups[i];
        cfg->n_warmups++;
        const char *name = imagen_config_get_str(w, "name");
        if (name[0] == '\0')
            return bfail(c, "model_warmup.name", "warmup setting %zu has an empty name", i);
        if ((wu->name = dup_str(c, name)) == NULL)
            return false;
        wu->batch_size = (uint32_t)imagen_config_get_uint(w, "batch_size");
        wu->count = (uint32_t)imagen_config_get_uint(w, "count");
        uint64_t limit = cfg->max_batch_size > 0 ? (uint64_t)cfg->max_batch_size : 1;
        if (wu->batch_size > limit)
            return bfail(c, "model_warmup.batch_size", "warmup '%s' batch_size %u must be <= max_batch_size %d", name,
                         wu->batch_size, cfg->max_batch_size);
        size_t ni = imagen_config_count(w, "inputs");
        if (ni > IMAGEN_CONFIG_MAX_TENSORS)
            return bfail(c, "model_warmup.inputs", "warmup '%s' has too many inputs", name);
        if (ni == 0)
            continue;
        wu->inputs = calloc(ni, sizeof(*wu->inputs));
        if (wu->inputs == NULL)
            return oom(c);
        for (size_t k = 0; k < ni; k++) {
            const imagen_config_msg *e = imagen_config_at(w, "inputs", k)->m;
            const imagen_config_msg *in = imagen_config_get_msg(e, "value");
            imagen_warmup_input *wi = &wu->inputs[k];
            wu->n_inputs++;
            const char *iname = imagen_config_get_str(e, "key");
            if ((wi->name = dup_str(c, iname)) == NULL)
                return false;
            const imagen_tensor_config *tc = imagen_model_config_input(cfg, iname);
            if (tc == NULL)
                return bfail(c, "model_warmup.inputs", "warmup '%s' names '%s', which is not an input of the model",
                             name, iname);
            int64_t dt = in ? imagen_config_get_int(in, "data_type") : 0;
            if (dt != (int64_t)tc->datatype)
                return bfail(c, "model_warmup.inputs.data_type",
                             "warmup '%s' input '%s' has data type %s, the model input has %s", name, iname,
                             imagen_datatype_config_name((imagen_datatype)dt),
                             imagen_datatype_config_name(tc->datatype));
            wi->datatype = tc->datatype;
            char what[300];
            snprintf(what, sizeof(what), "warmup '%s' input '%s'", name, iname);
            if (in != NULL && !copy_dims(c, in, "dims", what, 0, wi->dims, &wi->rank))
                return false;
            wi->source = IMAGEN_WARMUP_ZERO;
            if (in != NULL && imagen_config_has(in, "random_data")) {
                wi->source = IMAGEN_WARMUP_RANDOM;
            } else if (in != NULL && imagen_config_has(in, "input_data_file")) {
                wi->source = IMAGEN_WARMUP_FILE;
                if ((wi->input_data_file = dup_str(c, imagen_config_get_str(in, "input_data_file"))) == NULL)
                    return false;
            }
        }
    }
    return true;
}

/* ---- the whole config ---- */

static bool
build_all(bctx *c, const imagen_config_msg *msg, imagen_model_config *cfg)
{
    if ((cfg->name = dup_str(c, imagen_config_get_str(msg, "name"))) == NULL ||
        (cfg->platform = dup_str(c, imagen_config_get_str(msg, "platform"))) == NULL ||
        (cfg->backend = dup_str(c, imagen_config_get_str(msg, "backend"))) == NULL ||
        (cfg->default_model_filename = dup_str(c, imagen_config_get_str(msg, "default_model_filename"))) == NULL)
        return false;

    const imagen_config_msg *vp = imagen_config_get_msg(msg, "version_policy");
    cfg->version_policy = IMAGEN_VERSION_POLICY_LATEST;
    cfg->latest_num_versions = 1;
    if (vp != NULL && imagen_config_get_msg(vp, "all") != NULL) {
        cfg->version_policy = IMAGEN_VERSION_POLICY_ALL;
    } else if (vp != NULL && imagen_config_get_msg(vp, "specific") != NULL) {
        const imagen_config_msg *sp = imagen_config_get_msg(vp, "specific");
        size_t n = imagen_config_count(sp, "versions");
        cfg->version_policy = IMAGEN_VERSION_POLICY_SPECIFIC;
        if (n > 0) {
            cfg->specific_versions = calloc(n, sizeof(int64_t));
            if (cfg->specific_versions == NULL)
                return oom(c);
            for (size_t i = 0; i < n; i++)
                cfg->specific_versions[i] = imagen_config_at(sp, "versions", i)->i;
            cfg->n_specific_versions = n;
        }
    } else if (vp != NULL && imagen_config_get_msg(vp, "latest") != NULL) {
        cfg->latest_num_versions =
            (uint32_t)imagen_config_get_uint(imagen_config_get_msg(vp, "latest"), "num_versions");
    }

    int64_t mbs = imagen_config_get_int(msg, "max_batch_size");
    if (mbs < 0)
        return bfail(c, "max_batch_size", "max_batch_size %lld must be >= 0", (long long)mbs);
    if (mbs > IMAGEN_CONFIG_MAX_BATCH_SIZE)
        return bfail(c, "max_batch_size", "max_batch_size %lld is more than the limit of %d", (long long)mbs,
                     IMAGEN_CONFIG_MAX_BATCH_SIZE);
    cfg->max_batch_size = (int32_t)mbs;

    if (!build_tensors(c, msg, false, &cfg->inputs, &cfg->n_inputs) ||
        !build_tensors(c, msg, true, &cfg->outputs, &cfg->n_outputs))
        return false;

    const imagen_config_msg *db = imagen_config_get_msg(msg, "dynamic_batching");
    if (db != NULL) {
        cfg->has_dynamic_batching = true;
        if (!build_dynamic_batching(c, db, cfg->max_batch_size, &cfg->dynamic_batching))
            return false;
    }
    cfg->has_sequence_batching = imagen_config_get_msg(msg, "sequence_batching") != NULL;
    cfg->has_ensemble_scheduling = imagen_config_get_msg(msg, "ensemble_scheduling") != NULL;

    if (strcmp(cfg->platform, "ensemble") == 0) {
        if (imagen_config_count(msg, "instance_group") > 0)
            return bfail(c, "instance_group", "an ensemble cannot have instance groups");
        if (imagen_config_count(msg, "model_warmup") > 0)
            return bfail(c, "model_warmup", "an ensemble cannot have warmup settings");
    }
    if (!build_instance_groups(c, msg, cfg) ||
        !build_params(c, msg, "parameters", true, &cfg->parameters, &cfg->n_parameters) ||
        !build_params(c, msg, "metric_tags", false, &cfg->metric_tags, &cfg->n_metric_tags) ||
        !build_warmups(c, msg, cfg))
        return false;

    const imagen_config_msg *tp = imagen_config_get_msg(msg, "model_transaction_policy");
    cfg->decoupled = tp != NULL && imagen_config_get_bool(tp, "decoupled");
    const imagen_config_msg *rc = imagen_config_get_msg(msg, "response_cache");
    cfg->response_cache = rc != NULL && imagen_config_get_bool(rc, "enable");
    return true;
}

imagen_error *
imagen_model_config_build(const imagen_config_msg *msg, imagen_model_config **out)
{
    *out = NULL;
    if (msg == NULL || msg->desc != &imagen_config_model_config_desc)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "no ModelConfig message to build from");
    imagen_model_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory building model config");
    const char *name = imagen_config_get_str(msg, "name");
    bctx c = {name[0] ? name : "(unnamed)", NULL};
    if (build_all(&c, msg, cfg) && (cfg->msg = imagen_config_msg_clone(msg)) == NULL)
        oom(&c);
    if (c.err != NULL) {
        imagen_model_config_free(cfg);
        return c.err;
    }
    *out = cfg;
    return NULL;
}

static void
free_tensors(imagen_tensor_config *ts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(ts[i].name);
        free(ts[i].label_filename);
    }
    free(ts);
}

static void
free_params(imagen_config_param *ps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(ps[i].key);
        free(ps[i].value);
    }
    free(ps);
}

void
imagen_model_config_free(imagen_model_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->name);
    free(cfg->platform);
    free(cfg->backend);
    free(cfg->default_model_filename);
    free(cfg->specific_versions);
    free_tensors(cfg->inputs, cfg->n_inputs);
    free_tensors(cfg->outputs, cfg->n_outputs);
    free(cfg->dynamic_batching.preferred_batch_sizes);
    free(cfg->dynamic_batching.level_policies);
    for (size_t i = 0; i < cfg->n_instance_groups; i++) {
        free(cfg->instance_groups[i].name);
        free(cfg->instance_groups[i].gpus);
    }
    free(cfg->instance_groups);
    free_params(cfg->parameters, cfg->n_parameters);
    free_params(cfg->metric_tags, cfg->n_metric_tags);
    for (size_t i = 0; i < cfg->n_warmups; i++) {
        free(cfg->warmups[i].name);
        for (size_t k = 0; k < cfg->warmups[i].n_inputs; k++) {
            free(cfg->warmups[i].inputs[k].name);
            free(cfg->warmups[i].inputs[k].input_data_file);
        }
        free(cfg->warmups[i].inputs);
    }
    free(cfg->warmups);
    imagen_config_msg_free(cfg->msg);
    free(cfg);
}

/* ---- lookups ---- */

static const imagen_tensor_config *
find_tensor(const imagen_tensor_config *ts, size_t n, const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (ts[i].name != NULL && strcmp(ts[i].name, name) == 0)
            return &ts[i];
    }
    return NULL;
}

const imagen_tensor_config *
imagen_model_config_input(const imagen_model_config *cfg, const char *name)
{
    return cfg ? find_tensor(cfg->inputs, cfg->n_inputs, name) : NULL;
}

const imagen_tensor_config *
imagen_model_config_output(const imagen_model_config *cfg, const char *name)
{
    return cfg ? find_tensor(cfg->outputs, cfg->n_outputs, name) : NULL;
}

const char *
imagen_model_config_parameter(const imagen_model_config *cfg, const char *key)
{
    if (cfg == NULL || key == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_parameters; i++) {
        if (strcmp(cfg->parameters[i].key, key) == 0)
            return cfg->parameters[i].value;
    }
    return NULL;
}

/* ---- edits for backends that auto-complete (spec §3.10.3) ---- */

int32_t
imagen_config_msg_max_batch_size(const imagen_config_msg *msg)
{
    return (int32_t)imagen_config_get_int(msg, "max_batch_size");
}

void
imagen_config_msg_set_max_batch_size(imagen_config_msg *msg, int32_t value)
{
    imagen_config_set_int(msg, "max_batch_size", value);
}

size_t
imagen_config_msg_tensor_count(const imagen_config_msg *msg, bool is_output)
{
    return imagen_config_count(msg, is_output ? "output" : "input");
}

imagen_error *
imagen_config_msg_add_tensor(imagen_config_msg *msg, bool is_output, const char *name, imagen_datatype datatype,
                             const int64_t *dims, size_t rank)
{
    if (name == NULL || rank > IMAGEN_MAX_RANK || (rank > 0 && dims == NULL))
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "add tensor: bad name or rank");
    const char *field = is_output ? "output" : "input";
    if (imagen_config_count(msg, field) >= IMAGEN_CONFIG_MAX_TENSORS)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "add tensor '%s': too many %ss (field '%s')", name, field,
                                field);
    imagen_config_msg *t = imagen_config_add_msg(msg, field);
    if (t == NULL || !imagen_config_set_str(t, "name", name))
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory adding tensor '%s'", name);
    imagen_config_set_int(t, "data_type", (int64_t)datatype);
    for (size_t i = 0; i < rank; i++) {
        if (!imagen_config_add_int(t, "dims", dims[i]))
            return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory adding tensor '%s'", name);
    }
    return NULL;
}

bool
imagen_config_msg_has_scheduler(const imagen_config_msg *msg)
{
    return imagen_config_has(msg, "dynamic_batching") || imagen_config_has(msg, "sequence_batching") ||
           imagen_config_has(msg, "ensemble_scheduling");
}

void
imagen_config_msg_enable_dynamic_batching(imagen_config_msg *msg)
{
    /* A scheduler already chosen by the config is kept; on allocation
     * failure the message is left unchanged. */
    if (!imagen_config_msg_has_scheduler(msg))
        (void)imagen_config_mutable_msg(msg, "dynamic_batching");
}
