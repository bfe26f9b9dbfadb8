/*
 * imagen-loadgen: the project's load generator, in the role of Triton's
 * perf_analyzer. It keeps exactly N inference requests outstanding against
 * one model for a fixed time, for each N of a concurrency sweep, over gRPC
 * (gRPC's C core, one completion queue driven by one thread) or HTTP
 * (libcurl multi, one thread, the binary tensor extension of spec §1.10),
 * optionally with the tensors in system shared memory (§1.13; the server
 * must be on this machine and started with --allow-client-shm=true).
 *
 * One thread drives all N requests so that on a small machine the load
 * generator takes one core at most and never becomes the bottleneck by
 * having more runnable threads than cores. Requests are serialized once
 * (once per slot with shared memory, whose output offsets differ) and sent
 * by reference, so the generator copies no tensor bytes per request.
 *
 * Per step it prints requests/s, p50/p90/p99 latency in µs and MB/s, and
 * with --csv writes rows of
 *   concurrency,protocol,requests,rps,p50_us,p90_us,p99_us,mb_per_s,errors
 * MB/s counts tensor payload both ways: requests/s × (input bytes + output
 * bytes), the output taken as large as the input (identity models).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc_service.pb-c.h"

#define PROG "imagen-loadgen"
#define SVC "/inference.GRPCInferenceService/"
#define MAX_RANK 8
#define MAX_CONCURRENCY 1024
#define MAX_STEPS 32

typedef struct {
    bool grpc;
    char target[256]; /* host:port */
    const char *model;
    const char *input_name, *output_name, *datatype;
    int64_t shape[MAX_RANK];
    size_t rank;
    size_t bytes;
    int concurrency[MAX_STEPS];
    size_t n_steps;
    double duration, warmup;
    bool shm;
    const char *csv;
} options;

/* One step's measurements. */
typedef struct {
    uint32_t *lat_us; /* completions inside the measured window */
    size_t n, cap;
    uint64_t errors; /* failed requests anywhere in the step, warm-up included */
    bool verified;   /* the first successful response was compared with the input */
    char first_error[256];
} step_result;

/* What the shared-memory mode registered; region names are per process. */
typedef struct {
    char in_name[64], out_name[64];
    uint8_t *in_addr, *out_addr;
    size_t out_size;
} shm_state;

static options opt;
static uint8_t *payload; /* the input tensor's bytes */
static shm_state shm;

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
record(step_result *r, double latency_s)
{
    if (r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 4096;
        uint32_t *p = realloc(r->lat_us, ncap * sizeof(*p));
        if (p == NULL) {
            fprintf(stderr, PROG ": out of memory recording latencies\n");
            exit(1);
        }
        r->lat_us = p;
        r->cap = ncap;
    }
    double us = latency_s * 1e6;
    r->lat_us[r->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void
fail(step_result *r, const char *what)
{
    if (r->errors++ == 0)
        snprintf(r->first_error, sizeof(r->first_error), "%s", what);
}

static size_t
datatype_size(const char *dt)
{
    static const struct {
        const char *name;
        size_t size;
    } sizes[] = {{"BOOL", 1},   {"UINT8", 1}, {"INT8", 1}, {"UINT16", 2}, {"INT16", 2}, {"FP16", 2}, {"BF16", 2},
                 {"UINT32", 4}, {"INT32", 4}, {"FP32", 4}, {"UINT64", 8}, {"INT64", 8}, {"FP64", 8}};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        if (strcmp(sizes[i].name, dt) == 0)
            return sizes[i].size;
    return 0;
}

/* Slot k's output region offset (shared memory): one output per slot. */
static size_t
out_offset(size_t slot)
{
    return slot * opt.bytes;
}

/* ======================================================================
 * gRPC
 * ==================================================================== */

static grpc_channel *channel;
static void *infer_handle;

static Inference__InferParameter *
int_param(Inference__InferParameter *p, int64_t v)
{
    inference__infer_parameter__init(p);
    p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    p->int64_param = v;
    return p;
}

static Inference__InferParameter *
str_param(Inference__InferParameter *p, const char *v)
{
    inference__infer_parameter__init(p);
    p->parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
    p->string_param = (char *)v;
    return p;
}

/* The serialized ModelInferRequest of slot `slot` (the slot only matters
 * with shared memory). */
static grpc_slice
grpc_request_message(size_t slot)
{
    Inference__ModelInferRequest__InferInputTensor in = INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    in.name = (char *)opt.input_name;
    in.datatype = (char *)opt.datatype;
    in.n_shape = opt.rank;
    in.shape = opt.shape;
    Inference__ModelInferRequest__InferInputTensor *inputs[1] = {&in};
    Inference__ModelInferRequest__InferRequestedOutputTensor out =
        INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT;
    out.name = (char *)opt.output_name;
    Inference__ModelInferRequest__InferRequestedOutputTensor *outputs[1] = {&out};
    ProtobufCBinaryData raw = {opt.bytes, payload};
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    req.model_name = (char *)opt.model;
    req.n_inputs = 1;
    req.inputs = inputs;
    req.n_outputs = 1;
    req.outputs = outputs;

    Inference__InferParameter pv[6];
    Inference__ModelInferRequest__InferInputTensor__ParametersEntry ie[3];
    Inference__ModelInferRequest__InferRequestedOutputTensor__ParametersEntry oe[3];
    Inference__ModelInferRequest__InferInputTensor__ParametersEntry *iep[3] = {&ie[0], &ie[1], &ie[2]};
    Inference__ModelInferRequest__InferRequestedOutputTensor__ParametersEntry *oep[3] = {&oe[0], &oe[1], &oe[2]};
    if (opt.shm) {
        static const char *const keys[3] = {"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"};
        for (int i = 0; i < 3; i++) {
            inference__model_infer_request__infer_input_tensor__parameters_entry__init(&ie[i]);
            inference__model_infer_request__infer_requested_output_tensor__parameters_entry__init(&oe[i]);
            ie[i].key = oe[i].key = (char *)keys[i];
        }
        ie[0].value = str_param(&pv[0], shm.in_name);
        ie[1].value = int_param(&pv[1], (int64_t)opt.bytes);
        ie[2].value = int_param(&pv[2], 0);
        oe[0].value = str_param(&pv[3], shm.out_name);
        oe[1].value = int_param(&pv[4], (int64_t)opt.bytes);
        oe[2].value = int_param(&pv[5], (int64_t)out_offset(slot));
        in.n_parameters = 3;
        in.parameters = iep;
        out.n_parameters = 3;
        out.parameters = oep;
    } else {
        req.n_raw_input_contents = 1;
        req.raw_input_contents = &raw;
    }
    size_t len = inference__model_infer_request__get_packed_size(&req);
    grpc_slice s = grpc_slice_malloc(len);
    inference__model_infer_request__pack(&req, GRPC_SLICE_START_PTR(s));
    return s;
}

/* A unary call outside the measurement (shared-memory registration).
 * Returns NULL or a static description of what failed. */
static const char *
grpc_unary(const char *method, const ProtobufCMessage *msg)
{
    static char why[512];
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice path = grpc_slice_from_static_string(method);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(10, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path, NULL, deadline, NULL);
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array md, trailing;
    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&trailing);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    const char *result = "cannot start the call";
    if (grpc_call_start_batch(call, ops, 6, (void *)1, NULL) == GRPC_CALL_OK) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        result = NULL;
        if (ev.type != GRPC_OP_COMPLETE || !ev.success || status != GRPC_STATUS_OK) {
            char *d = grpc_slice_to_c_string(details);
            snprintf(why, sizeof(why), "%s: status %d: %s", method, (int)status, d);
            gpr_free(d);
            result = why;
        }
    }
    if (recv != NULL)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_metadata_array_destroy(&md);
    grpc_metadata_array_destroy(&trailing);
    grpc_slice_unref(details);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return result;
}

static const char *
grpc_connect(void)
{
    grpc_init();
    /* Responses as large as Triton allows (the default limit is 4 MiB). */
    grpc_arg args[2];
    memset(args, 0, sizeof(args));
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = INT32_MAX;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = INT32_MAX;
    grpc_channel_args chargs = {.num_args = 2, .args = args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    channel = grpc_channel_create(opt.target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    infer_handle = grpc_channel_register_call(channel, SVC "ModelInfer", NULL, NULL);
    return channel == NULL ? "cannot create the channel" : NULL;
}

typedef struct {
    size_t index;
    grpc_call *call;
    grpc_slice message;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array md, trailing;
    grpc_status_code status;
    grpc_slice details;
    double started;
} grpc_slot;

static bool
grpc_start(grpc_completion_queue *cq, grpc_slot *s)
{
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(60, GPR_TIMESPAN));
    s->call =
        grpc_channel_create_registered_call(channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, infer_handle, deadline, NULL);
    s->send = grpc_raw_byte_buffer_create(&s->message, 1); /* references the slice: no copy */
    s->recv = NULL;
    grpc_metadata_array_init(&s->md);
    grpc_metadata_array_init(&s->trailing);
    s->status = GRPC_STATUS_UNKNOWN;
    s->details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->trailing;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    s->started = now_s();
    return grpc_call_start_batch(s->call, ops, 6, s, NULL) == GRPC_CALL_OK;
}

/* Compares a response's first raw output (or the slot's shared-memory
 * output) with the input. */
static bool
grpc_verify(const grpc_slot *s)
{
    if (opt.shm)
        return memcmp(shm.out_addr + out_offset(s->index), payload, opt.bytes) == 0;
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, s->recv))
        return false;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    Inference__ModelInferResponse *r =
        inference__model_infer_response__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    bool same = r != NULL && r->n_raw_output_contents >= 1 && r->raw_output_contents[0].len == opt.bytes &&
                memcmp(r->raw_output_contents[0].data, payload, opt.bytes) == 0;
    if (r != NULL)
        inference__model_infer_response__free_unpacked(r, NULL);
    return same;
}

/* Finishes one completed call: returns whether it succeeded. */
static bool
grpc_finish(grpc_slot *s, bool ok, step_result *r, bool verify)
{
    bool good = ok && s->status == GRPC_STATUS_OK && s->recv != NULL;
    if (!good) {
        char *d = grpc_slice_to_c_string(s->details);
        char msg[200];
        snprintf(msg, sizeof(msg), "status %d: %.150s", (int)s->status, d);
        fail(r, msg);
        gpr_free(d);
    } else if (verify && !r->verified) {
        r->verified = true;
        if (!grpc_verify(s)) {
            fail(r, "the output differs from the input");
            good = false;
        }
    }
    if (s->recv != NULL)
        grpc_byte_buffer_destroy(s->recv);
    grpc_byte_buffer_destroy(s->send);
    grpc_metadata_array_destroy(&s->md);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_slice_unref(s->details);
    grpc_call_unref(s->call);
    s->call = NULL;
    return good;
}

static void
grpc_run_step(int concurrency, step_result *r)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slot *slots = calloc((size_t)concurrency, sizeof(*slots));
    if (slots == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        exit(1);
    }
    grpc_slice shared = opt.shm ? grpc_empty_slice() : grpc_request_message(0);
    double t0 = now_s(), measure_from = t0 + opt.warmup, end = measure_from + opt.duration;
    int outstanding = 0;
    for (int i = 0; i < concurrency; i++) {
        slots[i].index = (size_t)i;
        slots[i].message = opt.shm ? grpc_request_message((size_t)i) : grpc_slice_ref(shared);
        if (grpc_start(cq, &slots[i]))
            outstanding++;
        else
            fail(r, "cannot start a call");
    }
    while (outstanding > 0) {
        gpr_timespec wait = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(cq, wait, NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        grpc_slot *s = ev.tag;
        outstanding--;
        double t = now_s();
        bool good = grpc_finish(s, ev.success != 0, r, true);
        if (good && t >= measure_from && t <= end)
            record(r, t - s->started);
        if (t < end) {
            if (grpc_start(cq, s))
                outstanding++;
            else
                fail(r, "cannot start a call");
        }
    }
    for (int i = 0; i < concurrency; i++)
        grpc_slice_unref(slots[i].message);
    grpc_slice_unref(shared);
    free(slots);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

/* ======================================================================
 * HTTP
 * ==================================================================== */

typedef struct {
    char *data;
    size_t len, cap;
    bool keep; /* store the bytes (verification), else only count them */
} http_body;

static size_t
http_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    http_body *b = user;
    size_t n = size * nmemb;
    if (b->keep) {
        if (b->len + n > b->cap) {
            size_t ncap = b->cap ? b->cap * 2 : 65536;
            while (ncap < b->len + n)
                ncap *= 2;
            char *p = realloc(b->data, ncap);
            if (p == NULL)
                return 0;
            b->data = p;
            b->cap = ncap;
        }
        memcpy(b->data + b->len, ptr, n);
    }
    b->len += n;
    return n;
}

static void
append_shape(char *out, size_t cap)
{
    size_t off = 0;
    for (size_t i = 0; i < opt.rank && off < cap; i++)
        off += (size_t)snprintf(out + off, cap - off, "%s%" PRId64, i ? "," : "", opt.shape[i]);
}

/* The request body of slot `slot`: a JSON header, then (without shared
 * memory) the input's bytes. *json_len is the header's length. */
static char *
http_request_body(size_t slot, size_t *len, size_t *json_len)
{
    char shape[256] = "", header[2048];
    append_shape(shape, sizeof(shape));
    int n;
    if (opt.shm)
        n = snprintf(header, sizeof(header),
                     "{\"inputs\":[{\"name\":\"%s\",\"shape\":[%s],\"datatype\":\"%s\",\"parameters\":{"
                     "\"shared_memory_region\":\"%s\",\"shared_memory_byte_size\":%zu,\"shared_memory_offset\":0}}],"
                     "\"outputs\":[{\"name\":\"%s\",\"parameters\":{\"shared_memory_region\":\"%s\","
                     "\"shared_memory_byte_size\":%zu,\"shared_memory_offset\":%zu}}]}",
                     opt.input_name, shape, opt.datatype, shm.in_name, opt.bytes, opt.output_name, shm.out_name,
                     opt.bytes, out_offset(slot));
    else
        n = snprintf(header, sizeof(header),
                     "{\"inputs\":[{\"name\":\"%s\",\"shape\":[%s],\"datatype\":\"%s\",\"parameters\":{"
                     "\"binary_data_size\":%zu}}],\"outputs\":[{\"name\":\"%s\",\"parameters\":{\"binary_data\":"
                     "true}}]}",
                     opt.input_name, shape, opt.datatype, opt.bytes, opt.output_name);
    *json_len = (size_t)n;
    *len = (size_t)n + (opt.shm ? 0 : opt.bytes);
    char *body = malloc(*len + 1);
    if (body == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        exit(1);
    }
    memcpy(body, header, (size_t)n);
    if (!opt.shm)
        memcpy(body + n, payload, opt.bytes);
    return body;
}

/* A POST outside the measurement (shared-memory registration): NULL or
 * what failed. */
static const char *
http_post(const char *path, const char *json)
{
    static char why[512];
    char url[512];
    snprintf(url, sizeof(url), "http://%s%s", opt.target, path);
    CURL *e = curl_easy_init();
    http_body b = {.keep = true};
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 10L);
    CURLcode rc = curl_easy_perform(e);
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(e);
    const char *result = NULL;
    if (rc != CURLE_OK || code != 200) {
        snprintf(why, sizeof(why), "POST %s: %s, HTTP %ld: %.*s", path, curl_easy_strerror(rc), code, (int)b.len,
                 b.data ? b.data : "");
        result = why;
    }
    free(b.data);
    return result;
}

typedef struct {
    size_t index;
    CURL *easy;
    char *body;
    size_t body_len;
    struct curl_slist *headers; /* per slot: the JSON header length differs with the shm offset */
    http_body resp;
    double started;
} http_slot;

static void
http_verify(http_slot *s, step_result *r)
{
    r->verified = true;
    bool same =
        opt.shm ? memcmp(shm.out_addr + out_offset(s->index), payload, opt.bytes) == 0
                : s->resp.len >= opt.bytes && memcmp(s->resp.data + s->resp.len - opt.bytes, payload, opt.bytes) == 0;
    if (!same)
        fail(r, "the output differs from the input");
}

static void
http_run_step(int concurrency, step_result *r)
{
    CURLM *multi = curl_multi_init();
    http_slot *slots = calloc((size_t)concurrency, sizeof(*slots));
    if (multi == NULL || slots == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        exit(1);
    }
    char url[512];
    snprintf(url, sizeof(url), "http://%s/v2/models/%s/infer", opt.target, opt.model);
    size_t json_len = 0;
    double t0 = now_s(), measure_from = t0 + opt.warmup, end = measure_from + opt.duration;
    for (int i = 0; i < concurrency; i++) {
        http_slot *s = &slots[i];
        s->index = (size_t)i;
        s->body = http_request_body((size_t)i, &s->body_len, &json_len);
        char h[96];
        snprintf(h, sizeof(h), "Inference-Header-Content-Length: %zu", json_len);
        s->headers = curl_slist_append(NULL, h);
        s->headers = curl_slist_append(s->headers, "Content-Type: application/octet-stream");
        /* No "Expect: 100-continue" round trip before large bodies. */
        s->headers = curl_slist_append(s->headers, "Expect:");
        s->easy = curl_easy_init();
        curl_easy_setopt(s->easy, CURLOPT_URL, url);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body); /* sent from this buffer, not copied */
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body_len);
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
        curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, http_write);
        curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, &s->resp);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
        curl_easy_setopt(s->easy, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(s->easy, CURLOPT_TIMEOUT, 60L);
        s->resp.keep = i == 0;
        s->started = now_s();
        curl_multi_add_handle(multi, s->easy);
    }
    int running = concurrency;
    while (running > 0) {
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            http_slot *s = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            CURLcode rc = m->data.result;
            double t = now_s();
            long code = 0;
            curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
            bool good = rc == CURLE_OK && code == 200;
            if (!good) {
                char msg[128];
                snprintf(msg, sizeof(msg), "%s, HTTP %ld", curl_easy_strerror(rc), code);
                fail(r, msg);
            } else if (s->resp.keep && !r->verified) {
                http_verify(s, r);
            }
            if (good && t >= measure_from && t <= end)
                record(r, t - s->started);
            curl_multi_remove_handle(multi, s->easy);
            s->resp.keep = false;
            s->resp.len = 0;
            if (t < end) {
                s->started = now_s();
                curl_multi_add_handle(multi, s->easy);
                running++;
            }
        }
        if (running > 0)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < concurrency; i++) {
        curl_easy_cleanup(slots[i].easy);
        free(slots[i].body);
        free(slots[i].resp.data);
        curl_slist_free_all(slots[i].headers);
    }
    curl_multi_cleanup(multi);
    free(slots);
}

/* ======================================================================
 * Shared memory
 * ==================================================================== */

static uint8_t *
shm_create(const char *name, size_t size)
{
    char key[80];
    snprintf(key, sizeof(key), "/%s", name);
    int fd = shm_open(key, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
        fprintf(stderr, PROG ": shm_open/ftruncate %s: %s\n", key, strerror(errno));
        exit(1);
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        fprintf(stderr, PROG ": mmap %s: %s\n", key, strerror(errno));
        exit(1);
    }
    return p;
}

static const char *
shm_register(const char *name, size_t size)
{
    char key[80];
    snprintf(key, sizeof(key), "/%s", name);
    if (opt.grpc) {
        Inference__SystemSharedMemoryRegisterRequest req = INFERENCE__SYSTEM_SHARED_MEMORY_REGISTER_REQUEST__INIT;
        req.name = (char *)name;
        req.key = key;
        req.byte_size = size;
        return grpc_unary(SVC "SystemSharedMemoryRegister", &req.base);
    }
    char path[160], json[256];
    snprintf(path, sizeof(path), "/v2/systemsharedmemory/region/%s/register", name);
    snprintf(json, sizeof(json), "{\"key\":\"%s\",\"offset\":0,\"byte_size\":%zu}", key, size);
    return http_post(path, json);
}

static void
shm_unregister(const char *name)
{
    const char *why;
    if (opt.grpc) {
        Inference__SystemSharedMemoryUnregisterRequest req = INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_REQUEST__INIT;
        req.name = (char *)name;
        why = grpc_unary(SVC "SystemSharedMemoryUnregister", &req.base);
    } else {
        char path[160];
        snprintf(path, sizeof(path), "/v2/systemsharedmemory/region/%s/unregister", name);
        why = http_post(path, "");
    }
    if (why != NULL)
        fprintf(stderr, PROG ": unregistering %s: %s\n", name, why);
    char key[80];
    snprintf(key, sizeof(key), "/%s", name);
    shm_unlink(key);
}

static void
shm_setup(int max_concurrency)
{
    snprintf(shm.in_name, sizeof(shm.in_name), "imagen_loadgen_%ld_in", (long)getpid());
    snprintf(shm.out_name, sizeof(shm.out_name), "imagen_loadgen_%ld_out", (long)getpid());
    shm.in_addr = shm_create(shm.in_name, opt.bytes);
    shm.out_size = (size_t)max_concurrency * opt.bytes;
    shm.out_addr = shm_create(shm.out_name, shm.out_size);
    memcpy(shm.in_addr, payload, opt.bytes);
    const char *why = shm_register(shm.in_name, opt.bytes);
    if (why == NULL)
        why = shm_register(shm.out_name, shm.out_size);
    if (why != NULL) {
        fprintf(stderr, PROG ": registering shared memory (is the server local, with --allow-client-shm=true?): %s\n",
                why);
        shm_unregister(shm.in_name);
        shm_unregister(shm.out_name);
        exit(1);
    }
}

/* ======================================================================
 * Options, report, main
 * ==================================================================== */

static int
usage(int status)
{
    fprintf(status ? stderr : stdout,
            "usage: " PROG " --url grpc://HOST:PORT|http://HOST:PORT --model NAME [options]\n"
            "Keeps N inference requests outstanding for --duration seconds, for each N of --concurrency.\n"
            "  --input-shape D,D,...  input shape (default 1,16)\n"
            "  --datatype T           input datatype (default INT32)\n"
            "  --bytes N              input of N bytes: shape [N / size of T] unless --input-shape is given\n"
            "  --input-name NAME      (default INPUT0)\n"
            "  --output-name NAME     (default OUTPUT0)\n"
            "  --concurrency LIST     comma-separated sweep (default 1,16,64)\n"
            "  --duration S           measured seconds per step (default 5)\n"
            "  --warmup S             unmeasured seconds before each step (default 1)\n"
            "  --shm                  tensors in system shared memory (local server, --allow-client-shm=true)\n"
            "  --csv FILE             write concurrency,protocol,requests,rps,p50_us,p90_us,p99_us,mb_per_s,errors\n"
            "Exit status: 0, 1 when a step had errors or a wrong output, 2 for bad options.\n");
    return status;
}

static bool
parse_list(const char *text, bool shape)
{
    char *copy = strdup(text), *save = NULL;
    bool ok = copy != NULL;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; ok && tok; tok = strtok_r(NULL, ",", &save)) {
        char *endp;
        long long v = strtoll(tok, &endp, 10);
        if (*endp != '\0' || v < (shape ? 0 : 1) || (!shape && v > MAX_CONCURRENCY))
            ok = false;
        else if (shape && opt.rank < MAX_RANK)
            opt.shape[opt.rank++] = v;
        else if (!shape && opt.n_steps < MAX_STEPS)
            opt.concurrency[opt.n_steps++] = (int)v;
        else
            ok = false;
    }
    free(copy);
    return ok;
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t
percentile(const step_result *r, double p)
{
    if (r->n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(r->n - 1) + 0.5);
    return r->lat_us[i];
}

int
main(int argc, char **argv)
{
    const char *url = NULL, *shape = NULL, *conc = "1,16,64";
    long long bytes = -1;
    opt.model = NULL;
    opt.input_name = "INPUT0";
    opt.output_name = "OUTPUT0";
    opt.datatype = "INT32";
    opt.duration = 5;
    opt.warmup = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return usage(0);
        if (strcmp(a, "--shm") == 0) {
            opt.shm = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, PROG ": %s needs a value\n", a);
            return usage(2);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--model") == 0)
            opt.model = v;
        else if (strcmp(a, "--input-shape") == 0)
            shape = v;
        else if (strcmp(a, "--datatype") == 0)
            opt.datatype = v;
        else if (strcmp(a, "--bytes") == 0)
            bytes = atoll(v);
        else if (strcmp(a, "--input-name") == 0)
            opt.input_name = v;
        else if (strcmp(a, "--output-name") == 0)
            opt.output_name = v;
        else if (strcmp(a, "--concurrency") == 0)
            conc = v;
        else if (strcmp(a, "--duration") == 0)
            opt.duration = atof(v);
        else if (strcmp(a, "--warmup") == 0)
            opt.warmup = atof(v);
        else if (strcmp(a, "--csv") == 0)
            opt.csv = v;
        else {
            fprintf(stderr, PROG ": unknown option %s\n", a);
            return usage(2);
        }
    }
    if (url == NULL || opt.model == NULL) {
        fprintf(stderr, PROG ": --url and --model are required\n");
        return usage(2);
    }
    if (strncmp(url, "grpc://", 7) == 0)
        opt.grpc = true;
    else if (strncmp(url, "http://", 7) != 0) {
        fprintf(stderr, PROG ": --url '%s' must start with grpc:// or http://\n", url);
        return 2;
    }
    snprintf(opt.target, sizeof(opt.target), "%s", url + 7);
    size_t tl = strlen(opt.target);
    if (tl > 0 && opt.target[tl - 1] == '/')
        opt.target[tl - 1] = '\0';
    size_t esize = datatype_size(opt.datatype);
    if (esize == 0) {
        fprintf(stderr, PROG ": --datatype '%s' is not a fixed-size tensor datatype\n", opt.datatype);
        return 2;
    }
    if (!parse_list(conc, false)) {
        fprintf(stderr, PROG ": --concurrency '%s' must be a list of integers in [1, %d]\n", conc, MAX_CONCURRENCY);
        return 2;
    }
    if (shape != NULL && !parse_list(shape, true)) {
        fprintf(stderr, PROG ": --input-shape '%s' must be a list of at most %d non-negative integers\n", shape,
                MAX_RANK);
        return 2;
    }
    if (shape == NULL && bytes >= 0) {
        if (bytes % (long long)esize != 0) {
            fprintf(stderr, PROG ": --bytes %lld is not a multiple of %s's %zu bytes\n", bytes, opt.datatype, esize);
            return 2;
        }
        opt.shape[opt.rank++] = bytes / (long long)esize;
    } else if (shape == NULL) {
        opt.shape[opt.rank++] = 1;
        opt.shape[opt.rank++] = 16;
    }
    size_t elems = 1;
    for (size_t i = 0; i < opt.rank; i++)
        elems *= (size_t)opt.shape[i];
    opt.bytes = elems * esize;
    if (bytes >= 0 && (size_t)bytes != opt.bytes) {
        fprintf(stderr, PROG ": --bytes %lld does not match --input-shape (%zu bytes)\n", bytes, opt.bytes);
        return 2;
    }
    if (opt.duration <= 0 || opt.warmup < 0) {
        fprintf(stderr, PROG ": --duration must be > 0 and --warmup >= 0\n");
        return 2;
    }
    payload = malloc(opt.bytes ? opt.bytes : 1);
    if (payload == NULL) {
        fprintf(stderr, PROG ": out of memory for a %zu-byte input\n", opt.bytes);
        return 1;
    }
    for (size_t i = 0; i < opt.bytes; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    int max_c = 0;
    for (size_t i = 0; i < opt.n_steps; i++)
        max_c = opt.concurrency[i] > max_c ? opt.concurrency[i] : max_c;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (opt.grpc && grpc_connect() != NULL) {
        fprintf(stderr, PROG ": cannot create a gRPC channel to %s\n", opt.target);
        return 1;
    }
    if (opt.shm)
        shm_setup(max_c);
    FILE *csv = NULL;
    if (opt.csv != NULL) {
        csv = fopen(opt.csv, "w");
        if (csv == NULL) {
            fprintf(stderr, PROG ": cannot write %s: %s\n", opt.csv, strerror(errno));
            return 1;
        }
        fprintf(csv, "concurrency,protocol,requests,rps,p50_us,p90_us,p99_us,mb_per_s,errors\n");
    }
    const char *protocol = opt.shm ? (opt.grpc ? "grpc-shm" : "http-shm") : (opt.grpc ? "grpc" : "http");
    printf("%s %s model %s, input %s %zu bytes, %.1f s per step after %.1f s warm-up\n", protocol, opt.target,
           opt.model, opt.datatype, opt.bytes, opt.duration, opt.warmup);
    printf("%11s  %9s  %10s  %8s  %8s  %8s  %9s  %6s\n", "concurrency", "requests", "req/s", "p50 µs", "p90 µs",
           "p99 µs", "MB/s", "errors");
    int status = 0;
    for (size_t i = 0; i < opt.n_steps; i++) {
        step_result r;
        memset(&r, 0, sizeof(r));
        if (opt.grpc)
            grpc_run_step(opt.concurrency[i], &r);
        else
            http_run_step(opt.concurrency[i], &r);
        if (r.n > 0) /* no latencies when every request failed */
            qsort(r.lat_us, r.n, sizeof(*r.lat_us), cmp_u32);
        double rps = (double)r.n / opt.duration;
        double mbps = rps * 2.0 * (double)opt.bytes / 1e6;
        printf("%11d  %9zu  %10.1f  %8" PRIu32 "  %8" PRIu32 "  %8" PRIu32 "  %9.1f  %6" PRIu64 "\n",
               opt.concurrency[i], r.n, rps, percentile(&r, 0.50), percentile(&r, 0.90), percentile(&r, 0.99), mbps,
               r.errors);
        if (csv != NULL)
            fprintf(csv, "%d,%s,%zu,%.1f,%" PRIu32 ",%" PRIu32 ",%" PRIu32 ",%.2f,%" PRIu64 "\n", opt.concurrency[i],
                    protocol, r.n, rps, percentile(&r, 0.50), percentile(&r, 0.90), percentile(&r, 0.99), mbps,
                    r.errors);
        if (r.errors > 0) {
            fprintf(stderr, PROG ": %" PRIu64 " failed request(s) at concurrency %d; first: %s\n", r.errors,
                    opt.concurrency[i], r.first_error);
            status = 1;
        } else if (r.n == 0) {
            fprintf(stderr, PROG ": no request completed at concurrency %d\n", opt.concurrency[i]);
            status = 1;
        }
        fflush(stdout);
        free(r.lat_us);
    }
    if (csv != NULL)
        fclose(csv);
    if (opt.shm) {
        shm_unregister(shm.in_name);
        shm_unregister(shm.out_name);
    }
    if (opt.grpc) {
        grpc_channel_destroy(channel);
        grpc_shutdown();
    }
    curl_global_cleanup();
    free(payload);
    return status;
}
