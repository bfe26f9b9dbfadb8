/*
 * libFuzzer target for the config.pbtxt parser. Every input goes through
 * imagen_config_parse_text; accepted ones are also cloned, rendered to JSON
 * and protobuf, re-parsed from their own JSON (which must give the same JSON
 * and the same protobuf bytes), normalized and built. Single-threaded; it
 * aborts only on a broken invariant, never on a rejected input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imagen/model_config.h"

static void
check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_config: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    imagen_config_msg *msg = NULL;
    imagen_error *err = imagen_config_parse_text((const char *)data, size, "fuzz.pbtxt", &msg);
    if (err != NULL) {
        check(msg == NULL, "error with a message");
        check(strncmp(imagen_error_message(err), "fuzz.pbtxt:", 11) == 0, "error without file:line:col");
        imagen_error_free(err);
        return 0;
    }

    char *json = imagen_config_msg_to_json(msg);
    check(json != NULL, "to_json");
    uint8_t *pb = NULL;
    size_t pb_len = 0;
    err = imagen_config_msg_to_protobuf(msg, &pb, &pb_len);
    check(err == NULL, "to_protobuf");

    /* JSON round trip: same JSON, same protobuf bytes. */
    imagen_config_msg *again = NULL;
    err = imagen_config_parse_json(json, strlen(json), &again);
    if (err != NULL)
        fprintf(stderr, "%s\n%s\n", json, imagen_error_message(err));
    check(err == NULL, "parse_json of rendered JSON");
    char *json2 = imagen_config_msg_to_json(again);
    check(json2 != NULL && strcmp(json, json2) == 0, "JSON round trip");
    uint8_t *pb2 = NULL;
    size_t pb2_len = 0;
    err = imagen_config_msg_to_protobuf(again, &pb2, &pb2_len);
    check(err == NULL && pb2_len == pb_len && (pb_len == 0 || memcmp(pb, pb2, pb_len) == 0), "protobuf round trip");
    free(pb2);
    free(json2);
    imagen_config_msg_free(again);

    imagen_config_msg *copy = imagen_config_msg_clone(msg);
    check(copy != NULL, "clone");
    char *json3 = imagen_config_msg_to_json(copy);
    check(json3 != NULL && strcmp(json, json3) == 0, "clone renders the same");
    free(json3);

    /* Normalize under the config's own name so the name check passes. */
    imagen_config_autofill ctx = {"fuzz.imageops", NULL, size & 1};
    char name[64];
    const char *p = strstr(json, "\"name\":\"");
    if (p != NULL && strncmp(json, "{\"name\":\"", 9) == 0) {
        size_t n = strcspn(json + 9, "\"\\");
        if (n > 0 && n < sizeof(name) && json[9 + n] == '"') {
            memcpy(name, json + 9, n);
            name[n] = '\0';
            ctx.model_name = name;
        }
    }
    err = imagen_config_normalize(copy, &ctx);
    if (err == NULL) {
        char *j = imagen_config_msg_to_json(copy);
        check(j != NULL, "to_json after normalize");
        free(j);
        imagen_model_config *cfg = NULL;
        err = imagen_model_config_build(copy, &cfg);
        check((err == NULL) == (cfg != NULL), "build result");
        imagen_model_config_free(cfg);
    }
    imagen_error_free(err);
    imagen_model_config_free(NULL);

    /* Build straight from the parsed message too (no normalization). */
    imagen_model_config *cfg = NULL;
    err = imagen_model_config_build(msg, &cfg);
    imagen_error_free(err);
    imagen_model_config_free(cfg);

    imagen_config_msg_free(copy);
    free(pb);
    free(json);
    imagen_config_msg_free(msg);
    return 0;
}
