/*
 * imagen-bench-grpc-echo: a bare inference.GRPCInferenceService/ModelInfer
 * service on gRPC's C core, the ceiling bench/grpc.sh measures
 * imagen-server's gRPC frontend against. It is built like the server's
 * frontend (same library, several completion-queue threads, calls requested
 * ahead on each queue, RECV_CLOSE_ON_SERVER per call) and does the
 * protocol's part of the work (it unpacks the whole ModelInferRequest with
 * the generated protobuf-c code and packs a ModelInferResponse whose
 * raw_output_contents equal the raw_input_contents), but it has no model,
 * no queue and no thread hand-off: each call is answered on the queue thread
 * it arrived on. Every other method is answered UNIMPLEMENTED.
 *
 *   imagen-bench-grpc-echo [--address A] [--port N] [--threads N]
 *
 * Prints "listening on A:PORT" once serving; SIGTERM or SIGINT stop it.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "grpc_service.pb-c.h"

#define MODEL_INFER_PATH "/inference.GRPCInferenceService/ModelInfer"
/* Calls requested ahead per queue and kind, as the server's SLOTS_INFER. */
#define SLOTS 32
#define MAX_THREADS 64

typedef enum { TAG_NEW, TAG_SEND, TAG_CLOSE, TAG_SHUTDOWN } tag_kind;

typedef struct echo_call echo_call;
typedef struct {
    tag_kind kind;
    echo_call *call;
} echo_tag;

/* One accepted call: freed when both the send and the close batches are
 * done (refs). `registered` tells a ModelInfer call from any other. */
struct echo_call {
    echo_tag new_tag, send_tag, close_tag;
    grpc_completion_queue *cq;
    bool registered;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_call_details details; /* unregistered calls */
    grpc_metadata_array request_md;
    grpc_byte_buffer *payload;
    grpc_byte_buffer *reply;
    grpc_slice status_details;
    int cancelled;
    atomic_int refs;
};

static grpc_server *server;
static void *method_handle;
static echo_tag shutdown_tag = {TAG_SHUTDOWN, NULL};
/* grpc_server_destroy may only run once the shutdown tag was delivered. */
static pthread_mutex_t shutdown_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t shutdown_cond = PTHREAD_COND_INITIALIZER;
static bool shutdown_done;

static void
request_call(grpc_completion_queue *cq, bool registered)
{
    echo_call *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        fprintf(stderr, "imagen-bench-grpc-echo: out of memory requesting a call\n");
        return;
    }
    c->new_tag = (echo_tag){TAG_NEW, c};
    c->send_tag = (echo_tag){TAG_SEND, c};
    c->close_tag = (echo_tag){TAG_CLOSE, c};
    c->cq = cq;
    c->registered = registered;
    c->status_details = grpc_empty_slice();
    grpc_metadata_array_init(&c->request_md);
    grpc_call_details_init(&c->details);
    grpc_call_error e =
        registered ? grpc_server_request_registered_call(server, method_handle, &c->call, &c->deadline, &c->request_md,
                                                         &c->payload, cq, cq, &c->new_tag)
                   : grpc_server_request_call(server, &c->call, &c->details, &c->request_md, cq, cq, &c->new_tag);
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&c->request_md);
        grpc_call_details_destroy(&c->details);
        free(c);
    }
}

static void
call_free(echo_call *c)
{
    if (c->call != NULL)
        grpc_call_unref(c->call);
    if (c->payload != NULL)
        grpc_byte_buffer_destroy(c->payload);
    if (c->reply != NULL)
        grpc_byte_buffer_destroy(c->reply);
    grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->request_md);
    grpc_call_details_destroy(&c->details);
    free(c);
}

static void
call_unref(echo_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        call_free(c);
}

/* Unpacks the request and packs the echo. Returns the packed response
 * (malloc'd) or NULL with *why set. */
static uint8_t *
echo_response(grpc_byte_buffer *bb, size_t *len, const char **why)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb)) {
        *why = "cannot read the request message";
        return NULL;
    }
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    Inference__ModelInferRequest *req =
        inference__model_infer_request__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (req == NULL) {
        *why = "failed to parse the request message as inference.ModelInferRequest";
        return NULL;
    }
    size_t n = req->n_raw_input_contents < req->n_inputs ? req->n_raw_input_contents : req->n_inputs;
    Inference__ModelInferResponse__InferOutputTensor *outs = calloc(n + 1, sizeof(*outs));
    Inference__ModelInferResponse__InferOutputTensor **ptrs = calloc(n + 1, sizeof(*ptrs));
    char(*names)[32] = calloc(n + 1, sizeof(*names));
    uint8_t *buf = NULL;
    if (outs == NULL || ptrs == NULL || names == NULL) {
        *why = "out of memory";
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const Inference__ModelInferRequest__InferInputTensor *in = req->inputs[i];
        inference__model_infer_response__infer_output_tensor__init(&outs[i]);
        /* The requested output's name when there is one, else OUTPUTi. */
        if (i < req->n_outputs) {
            outs[i].name = req->outputs[i]->name;
        } else {
            snprintf(names[i], sizeof(names[i]), "OUTPUT%zu", i);
            outs[i].name = names[i];
        }
        outs[i].datatype = in->datatype;
        outs[i].n_shape = in->n_shape;
        outs[i].shape = in->shape;
        ptrs[i] = &outs[i];
    }
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    resp.model_name = req->model_name;
    resp.model_version = req->model_version[0] ? req->model_version : "1";
    resp.id = req->id;
    resp.n_outputs = n;
    resp.outputs = ptrs;
    resp.n_raw_output_contents = n;
    resp.raw_output_contents = req->raw_input_contents;
    *len = inference__model_infer_response__get_packed_size(&resp);
    buf = malloc(*len ? *len : 1);
    if (buf == NULL)
        *why = "out of memory";
    else
        inference__model_infer_response__pack(&resp, buf);
done:
    free(outs);
    free(ptrs);
    free(names);
    inference__model_infer_request__free_unpacked(req, NULL);
    return buf;
}

static void
on_new_call(echo_call *c, bool ok)
{
    if (!ok) { /* shutdown failed the request: nothing arrived */
        call_free(c);
        return;
    }
    request_call(c->cq, c->registered);
    atomic_store(&c->refs, 2);
    grpc_op close_op;
    memset(&close_op, 0, sizeof(close_op));
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch(c->call, &close_op, 1, &c->close_tag, NULL) != GRPC_CALL_OK)
        atomic_fetch_sub(&c->refs, 1);

    grpc_status_code status = GRPC_STATUS_OK;
    const char *why = NULL;
    if (!c->registered) {
        status = GRPC_STATUS_UNIMPLEMENTED;
        why = "imagen-bench-grpc-echo serves ModelInfer only";
    } else if (c->payload == NULL) {
        status = GRPC_STATUS_INVALID_ARGUMENT;
        why = "the call carries no request message";
    } else {
        size_t len = 0;
        uint8_t *buf = echo_response(c->payload, &len, &why);
        if (buf == NULL) {
            status = GRPC_STATUS_INVALID_ARGUMENT;
        } else {
            grpc_slice s = grpc_slice_new(buf, len, free);
            c->reply = grpc_raw_byte_buffer_create(&s, 1);
            grpc_slice_unref(s);
        }
    }
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->reply != NULL) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->reply;
    }
    if (why != NULL)
        c->status_details = grpc_slice_from_copied_string(why);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    ops[n].data.send_status_from_server.status_details = &c->status_details;
    n++;
    if (grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL) != GRPC_CALL_OK)
        call_unref(c);
}

static void *
cq_main(void *arg)
{
    grpc_completion_queue *cq = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        echo_tag *tag = ev.tag;
        switch (tag->kind) {
        case TAG_NEW:
            on_new_call(tag->call, ev.success != 0);
            break;
        case TAG_SEND:
        case TAG_CLOSE:
            call_unref(tag->call);
            break;
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&shutdown_lock);
            shutdown_done = true;
            pthread_cond_signal(&shutdown_cond);
            pthread_mutex_unlock(&shutdown_lock);
            break;
        }
    }
    return NULL;
}

static int
usage(int status)
{
    fprintf(status ? stderr : stdout, "usage: imagen-bench-grpc-echo [--address A] [--port N] [--threads N]\n"
                                      "  --address A   listen address (default 127.0.0.1)\n"
                                      "  --port N      port (default 8001; 0 picks one)\n"
                                      "  --threads N   completion-queue threads (default 2, as the server's\n"
                                      "                --grpc-infer-thread-count)\n");
    return status;
}

int
main(int argc, char **argv)
{
    const char *address = "127.0.0.1";
    int port = 8001, n_threads = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return usage(0);
        if (i + 1 >= argc)
            return usage(2);
        if (strcmp(argv[i], "--address") == 0)
            address = argv[++i];
        else if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0)
            n_threads = atoi(argv[++i]);
        else
            return usage(2);
    }
    if (n_threads < 1 || n_threads > MAX_THREADS || port < 0 || port > 65535) {
        fprintf(stderr, "imagen-bench-grpc-echo: --threads must be in [1, %d] and --port in [0, 65535]\n", MAX_THREADS);
        return 2;
    }
    /* The signals are taken by sigwait in this thread only. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    grpc_init();
    grpc_arg args[2];
    memset(args, 0, sizeof(args));
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = INT32_MAX;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = INT32_MAX;
    grpc_channel_args chargs = {.num_args = 2, .args = args};
    server = grpc_server_create(&chargs, NULL);
    method_handle =
        grpc_server_register_method(server, MODEL_INFER_PATH, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_completion_queue *cqs[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    for (int i = 0; i < n_threads; i++) {
        cqs[i] = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(server, cqs[i], NULL);
    }
    char addr[300];
    snprintf(addr, sizeof(addr), "%s:%d", address, port);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int bound = grpc_server_add_http2_port(server, addr, creds);
    grpc_server_credentials_release(creds);
    if (bound == 0) {
        fprintf(stderr, "imagen-bench-grpc-echo: cannot bind %s\n", addr);
        return 1;
    }
    grpc_server_start(server);
    for (int i = 0; i < n_threads; i++) {
        for (int k = 0; k < SLOTS; k++)
            request_call(cqs[i], true);
        request_call(cqs[i], false);
        if (pthread_create(&threads[i], NULL, cq_main, cqs[i]) != 0) {
            fprintf(stderr, "imagen-bench-grpc-echo: cannot start thread %d\n", i);
            return 1;
        }
    }
    printf("listening on %s:%d\n", address, bound);
    fflush(stdout);

    int sig = 0;
    sigwait(&stop, &sig);
    grpc_server_shutdown_and_notify(server, cqs[0], &shutdown_tag);
    grpc_server_cancel_all_calls(server);
    /* The shutdown tag arrives on queue 0 once every call is over. */
    pthread_mutex_lock(&shutdown_lock);
    while (!shutdown_done)
        pthread_cond_wait(&shutdown_cond, &shutdown_lock);
    pthread_mutex_unlock(&shutdown_lock);
    grpc_server_destroy(server);
    for (int i = 0; i < n_threads; i++)
        grpc_completion_queue_shutdown(cqs[i]);
    for (int i = 0; i < n_threads; i++) {
        pthread_join(threads[i], NULL);
        grpc_completion_queue_destroy(cqs[i]);
    }
    grpc_shutdown();
    return 0;
}
