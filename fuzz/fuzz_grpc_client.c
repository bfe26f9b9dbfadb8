/*
 * libFuzzer target: gRPC responses as the client library receives them
 * (src/client/h2_channel.c, the response half of client_grpc.c).
 *
 * Each input is everything a server sends on a connection: its SETTINGS,
 * then the frames that answer the client's first stream, a ModelInfer. A
 * listener thread on the loopback plays the server: it accepts, writes the
 * input, half-closes and reads what the client sends until the client
 * closes, for each connection the client opens during the call. The client must come back with a result or an error,
 * every time: no crash, no sanitizer report, no hang (a 2 s call timeout bounds a peer that stops halfway), no leak.
 *
 * Seeds (fuzz/corpus/grpc_client/) are answers made with python3-h2 by
 * fuzz/make-grpc-client-corpus.py: a full answer, one in one-byte DATA
 * frames, a trailers-only error, and others.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "imagen/client.h"

static int listen_fd = -1;
static int wake[2] = {-1, -1}; /* the client is done: a byte on wake[1] */
static char url[64];

typedef struct peer {
    const uint8_t *data;
    size_t size;
    _Atomic bool client_done; /* the client gave up without connecting */
} peer;

/* Serves the input on every connection the client opens (it opens a
 * second one when it tries a refused call again), one after the other,
 * until the client is done. */
static void *
peer_main(void *arg)
{
    peer *p = arg;
    for (;;) {
        struct pollfd pl[2] = {{listen_fd, POLLIN, 0}, {wake[0], POLLIN, 0}};
        if (poll(pl, 2, -1) < 0)
            continue;
        if (pl[1].revents & POLLIN) {
            char b;
            if (read(wake[0], &b, 1) == 1 && atomic_load(&p->client_done))
                return NULL;
            continue;
        }
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        size_t off = 0;
        while (off < p->size) {
            ssize_t n = send(fd, p->data + off, p->size - off, MSG_NOSIGNAL);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        shutdown(fd, SHUT_WR);
        char sink[4096];
        while (recv(fd, sink, sizeof(sink), 0) > 0)
            ;
        close(fd);
    }
}

static void
listen_once(void)
{
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(listen_fd, 8) != 0 ||
        getsockname(listen_fd, (struct sockaddr *)&a, &len) != 0) {
        perror("fuzz_grpc_client: loopback listener");
        abort();
    }
    snprintf(url, sizeof(url), "grpc://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    if (pipe(wake) != 0) {
        perror("fuzz_grpc_client: pipe");
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (listen_fd < 0)
        listen_once();
    peer p = {data, size, false};
    pthread_t tid;
    if (pthread_create(&tid, NULL, peer_main, &p) != 0)
        abort();

    imagen_client *c = NULL;
    imagen_error *err = imagen_client_create(url, &c);
    if (err == NULL) {
        imagen_client_set_timeout_ms(c, 2000);
        int32_t x = 7;
        int64_t shape[2] = {1, 1};
        imagen_tensor in = {"INPUT0", IMAGEN_TYPE_INT32, shape, 2, &x, sizeof(x)};
        imagen_infer_request req = {.model = "identity", .inputs = &in, .n_inputs = 1};
        imagen_infer_result *res = NULL;
        err = imagen_client_infer(c, &req, &res);
        if (err == NULL) {
            /* Read everything the result claims to hold. */
            volatile uint8_t sum = 0;
            for (size_t i = 0; i < imagen_infer_result_output_count(res); i++) {
                const imagen_tensor *t = imagen_infer_result_output(res, i);
                for (size_t b = 0; b < t->byte_size; b++)
                    sum ^= ((const uint8_t *)t->data)[b];
                for (size_t r = 0; r < t->rank; r++)
                    sum ^= (uint8_t)t->shape[r];
                sum ^= (uint8_t)strlen(t->name);
            }
            sum ^= (uint8_t)strlen(imagen_infer_result_model_name(res));
            (void)sum;
            imagen_infer_result_free(res);
        }
        imagen_client_destroy(c);
    }
    /* FUZZ_GRPC_CLIENT_VERBOSE=1: what each input came to (for the seeds). */
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("FUZZ_GRPC_CLIENT_VERBOSE") != NULL;
    if (verbose)
        fprintf(stderr, "fuzz_grpc_client: %s\n", err != NULL ? imagen_error_message(err) : "a result");
    imagen_error_free(err);
    atomic_store(&p.client_done, true);
    while (write(wake[1], "x", 1) < 0)
        ;
    pthread_join(tid, NULL);
    return 0;
}
