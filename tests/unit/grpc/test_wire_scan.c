/* Unit tests for src/grpc/grpc_wire.c, the scanner that lets ModelInfer use
 * raw_input_contents in place in the received message. */
#include "grpc/grpc_wire.h"
#include "grpc_service.pb-c.h"
#include "test.h"

/* Packs a ModelInferRequest with two inputs and the given raw contents. */
static uint8_t *
pack_request(const ProtobufCBinaryData *raw, size_t n_raw, size_t *len)
{
    Inference__ModelInferRequest msg = INFERENCE__MODEL_INFER_REQUEST__INIT;
    Inference__ModelInferRequest__InferInputTensor in[2];
    Inference__ModelInferRequest__InferInputTensor *ins[2] = {&in[0], &in[1]};
    int64_t shape[1] = {4};
    for (int i = 0; i < 2; i++) {
        inference__model_infer_request__infer_input_tensor__init(&in[i]);
        in[i].name = i ? "INPUT1" : "INPUT0";
        in[i].datatype = "UINT8";
        in[i].n_shape = 1;
        in[i].shape = shape;
    }
    msg.model_name = "identity";
    msg.id = "req-1";
    msg.n_inputs = 2;
    msg.inputs = ins;
    msg.n_raw_input_contents = n_raw;
    msg.raw_input_contents = (ProtobufCBinaryData *)raw;
    *len = protobuf_c_message_get_packed_size(&msg.base);
    uint8_t *buf = malloc(*len);
    protobuf_c_message_pack(&msg.base, buf);
    return buf;
}

/* The scan finds every raw entry in place and the rest unpacks to the
 * message without them. */
static void
test_finds_raw_contents_in_place(void)
{
    ProtobufCBinaryData raw[3] = {{4, (uint8_t *)"abcd"}, {0, NULL}, {300, NULL}};
    uint8_t big[300];
    memset(big, 0x5a, sizeof(big));
    raw[2].data = big;
    size_t len = 0;
    uint8_t *buf = pack_request(raw, 3, &len);
    imagen__grpc_wire_scan scan;
    CHECK_INT_EQ(imagen__grpc_wire_scan_message(buf, len, 7, &scan), IMAGEN_GRPC_WIRE_OK);
    CHECK_INT_EQ(scan.n_found, 3);
    for (size_t i = 0; i < scan.n_found && i < 3; i++) {
        CHECK_INT_EQ(scan.found[i].len, raw[i].len);
        CHECK(scan.found[i].offset + scan.found[i].len <= len);
        if (raw[i].len)
            CHECK(memcmp(buf + scan.found[i].offset, raw[i].data, raw[i].len) == 0);
    }
    /* Field order: everything else precedes the raw contents, one range. */
    CHECK_INT_EQ(scan.n_rest, 1);
    if (scan.n_rest == 1) {
        CHECK_INT_EQ(scan.rest[0].offset, 0);
        Inference__ModelInferRequest *m =
            inference__model_infer_request__unpack(NULL, scan.rest[0].len, buf + scan.rest[0].offset);
        CHECK(m != NULL);
        if (m != NULL) {
            CHECK_STR_EQ(m->model_name, "identity");
            CHECK_STR_EQ(m->id, "req-1");
            CHECK_INT_EQ(m->n_inputs, 2);
            CHECK_INT_EQ(m->n_raw_input_contents, 0);
            inference__model_infer_request__free_unpacked(m, NULL);
        }
    }
    imagen__grpc_wire_scan_free(&scan);
    free(buf);
}

/* Raw entries between other fields split the rest into several ranges. */
static void
test_interleaved_fields(void)
{
    /* id "x" (field 3), raw "ab" (7), model_name "m" (1), raw "" (7), raw "c" (7) */
    const uint8_t buf[] = {0x1a, 1, 'x', 0x3a, 2, 'a', 'b', 0x0a, 1, 'm', 0x3a, 0, 0x3a, 1, 'c'};
    imagen__grpc_wire_scan scan;
    CHECK_INT_EQ(imagen__grpc_wire_scan_message(buf, sizeof(buf), 7, &scan), IMAGEN_GRPC_WIRE_OK);
    CHECK_INT_EQ(scan.n_found, 3);
    CHECK_INT_EQ(scan.n_rest, 2);
    if (scan.n_found == 3 && scan.n_rest == 2) {
        CHECK_INT_EQ(scan.found[0].offset, 5);
        CHECK_INT_EQ(scan.found[0].len, 2);
        CHECK_INT_EQ(scan.found[1].len, 0);
        CHECK_INT_EQ(scan.found[2].offset, 14);
        CHECK_INT_EQ(scan.found[2].len, 1);
        CHECK_INT_EQ(scan.rest[0].offset, 0);
        CHECK_INT_EQ(scan.rest[0].len, 3);
        CHECK_INT_EQ(scan.rest[1].offset, 7);
        CHECK_INT_EQ(scan.rest[1].len, 3);
    }
    imagen__grpc_wire_scan_free(&scan);
}

/* Other wire types are skipped whole; an empty message scans to nothing. */
static void
test_skips_fixed_and_varint_fields(void)
{
    /* field 9 varint 300, field 10 fixed64, field 11 fixed32, raw "z" */
    const uint8_t buf[] = {0x48, 0xac, 0x02, 0x51, 1, 2, 3, 4, 5, 6, 7, 8, 0x5d, 1, 2, 3, 4, 0x3a, 1, 'z'};
    imagen__grpc_wire_scan scan;
    CHECK_INT_EQ(imagen__grpc_wire_scan_message(buf, sizeof(buf), 7, &scan), IMAGEN_GRPC_WIRE_OK);
    CHECK_INT_EQ(scan.n_found, 1);
    CHECK_INT_EQ(scan.n_rest, 1);
    if (scan.n_rest == 1)
        CHECK_INT_EQ(scan.rest[0].len, 17);
    imagen__grpc_wire_scan_free(&scan);
    CHECK_INT_EQ(imagen__grpc_wire_scan_message(buf, 0, 7, &scan), IMAGEN_GRPC_WIRE_OK);
    CHECK_INT_EQ(scan.n_found + scan.n_rest, 0);
    imagen__grpc_wire_scan_free(&scan);
}

/* Truncations, bad tags, groups and a non-length-delimited field 7 fail. */
static void
test_rejects_malformed(void)
{
    static const struct {
        uint8_t bytes[12];
        size_t len;
    } bad[] = {
        {{0x3a, 5, 'a'}, 3},                                                      /* length past the end */
        {{0x3a}, 1},                                                              /* no length */
        {{0x38, 1}, 2},                                                           /* field 7 as a varint */
        {{0x02, 0}, 2},                                                           /* field number 0 */
        {{0x0b, 0x0c}, 2},                                                        /* a group */
        {{0x0e, 0}, 2},                                                           /* wire type 6 */
        {{0x51, 1, 2}, 3},                                                        /* truncated fixed64 */
        {{0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 11}, /* varint > 64 bits */
        {{0x3a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 11}, /* huge length */
        {{0x48, 0x80}, 2},                                                        /* unterminated varint */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        imagen__grpc_wire_scan scan;
        CHECK_INT_EQ(imagen__grpc_wire_scan_message(bad[i].bytes, bad[i].len, 7, &scan), IMAGEN_GRPC_WIRE_MALFORMED);
        CHECK(scan.found == NULL && scan.rest == NULL);
    }
}

int
main(void)
{
    RUN(test_finds_raw_contents_in_place);
    RUN(test_interleaved_fields);
    RUN(test_skips_fixed_and_varint_fields);
    RUN(test_rejects_malformed);
    TEST_MAIN_END();
}
