/*
 * Job specs: parameters are checked against the operation table when a job
 * is made, the JSON round-trips, bad specs from other producers get errors
 * naming the member, and the output location depends only on the job.
 */
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "worker/job_spec.h"

static imagen_job_spec
spec_for(const char *op)
{
    imagen_job_spec s;
    imagen_job_spec_init(&s, imagen_operation_find(op));
    return s;
}

static void
test_parameters_are_checked(void)
{
    imagen_job_spec s = spec_for("upscale");
    CHECK_OK(imagen_job_spec_set(&s, "scale", "3"));
    CHECK(imagen_job_spec_param(&s, imagen_operation_param_find(s.op, "scale")) == 3);
    CHECK_ERR(imagen_job_spec_set(&s, "scale", "5"), IMAGEN_ERR_INVALID_ARG, "scale=5 is out of range [2, 4]");
    CHECK_ERR(imagen_job_spec_set(&s, "scale", "2.5"), IMAGEN_ERR_INVALID_ARG, "is not an integer");
    CHECK_ERR(imagen_job_spec_set(&s, "scale", "two"), IMAGEN_ERR_INVALID_ARG, "is not an integer");
    CHECK_ERR(imagen_job_spec_set(&s, "strength", "1"), IMAGEN_ERR_INVALID_ARG, "upscale has no parameter 'strength'");
    CHECK_ERR(imagen_job_spec_set(&s, "format", "bmp"), IMAGEN_ERR_INVALID_ARG, "format 'bmp' is not supported");
    CHECK_ERR(imagen_job_spec_set(&s, "quality", "0"), IMAGEN_ERR_INVALID_ARG, "quality '0'");
    CHECK_OK(imagen_job_spec_set(&s, "format", "jpg"));
    CHECK_STR_EQ(s.format, "jpeg");
    CHECK_OK(imagen_job_spec_set(&s, "quality", "75"));
    CHECK_INT_EQ(s.quality, 75);
    imagen_job_spec_clear(&s);

    /* An operation whose result has alpha cannot be asked for JPEG. */
    s = spec_for("background_remove");
    CHECK_ERR(imagen_job_spec_set(&s, "format", "jpeg"), IMAGEN_ERR_INVALID_ARG, "cannot hold the alpha channel");
    CHECK_OK(imagen_job_spec_set(&s, "format", "webp"));
    imagen_job_spec_clear(&s);

    /* Unset parameters fall back to the table's value. */
    s = spec_for("style_comic");
    CHECK(imagen_job_spec_param(&s, imagen_operation_param_find(s.op, "colors")) ==
          imagen_operation_param_find(s.op, "colors")->fallback);
    imagen_job_spec_clear(&s);
}

static void
test_json_round_trip(void)
{
    imagen_job_spec s = spec_for("style_aged");
    s.input = strdup("/photos/a b.jpg");
    s.output = strdup("/out/");
    CHECK_OK(imagen_job_spec_set(&s, "seed", "9007199254740992"));
    CHECK_OK(imagen_job_spec_set(&s, "dust", "0.25"));
    CHECK_OK(imagen_job_spec_set(&s, "format", "png"));
    char *json = NULL;
    CHECK_OK(imagen_job_spec_to_json(&s, &json));
    imagen_job_spec back;
    CHECK_OK(imagen_job_spec_parse("style_aged", json, &back));
    CHECK_STR_EQ(back.input, "/photos/a b.jpg");
    CHECK_STR_EQ(back.format, "png");
    CHECK(imagen_job_spec_param(&back, imagen_operation_param_find(back.op, "seed")) == 9007199254740992.0);
    CHECK(imagen_job_spec_param(&back, imagen_operation_param_find(back.op, "dust")) == 0.25);
    char *where = imagen_job_output_location(&back, "0193aabbccdd112233445566", "png");
    CHECK_STR_EQ(where, "/out/a_b.0193aabbccdd112233445566.png");
    free(where);
    imagen_job_spec_clear(&back);
    free(json);
    imagen_job_spec_clear(&s);

    /* Inline bytes travel as base64 and come back identical. */
    s = spec_for("enhance");
    unsigned char bytes[300];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (unsigned char)(i * 7);
    s.input_data = malloc(sizeof bytes);
    memcpy(s.input_data, bytes, sizeof bytes);
    s.input_size = sizeof bytes;
    s.input_name = strdup("holiday.final.JPG");
    s.output = strdup("https://bucket.example/put?sig=x");
    CHECK_OK(imagen_job_spec_to_json(&s, &json));
    CHECK_OK(imagen_job_spec_parse("enhance", json, &back));
    CHECK_INT_EQ(back.input_size, sizeof bytes);
    CHECK(back.input_data != NULL && memcmp(back.input_data, bytes, sizeof bytes) == 0);
    where = imagen_job_output_location(&back, "id", "jpg");
    CHECK_STR_EQ(where, "https://bucket.example/put?sig=x");
    free(where);
    back.output[0] = '/';
    strcpy(back.output, "/o");
    where = imagen_job_output_location(&back, "id", "jpg");
    CHECK_STR_EQ(where, "/o/holiday.final.id.jpg");
    free(where);
    imagen_job_spec_clear(&back);
    free(json);
    imagen_job_spec_clear(&s);
}

static void
test_bad_specs_name_the_member(void)
{
    imagen_job_spec s;
    CHECK_ERR(imagen_job_spec_parse("sharpen", "{}", &s), IMAGEN_ERR_INVALID_ARG, "unknown operation 'sharpen'");
    CHECK_ERR(imagen_job_spec_parse("enhance", "{\"input\":", &s), IMAGEN_ERR_INVALID_ARG, "not valid JSON");
    CHECK_ERR(imagen_job_spec_parse("enhance", "[1]", &s), IMAGEN_ERR_INVALID_ARG, "not a JSON object");
    CHECK_ERR(imagen_job_spec_parse("enhance", "{\"input\":1,\"output\":\"/o\"}", &s), IMAGEN_ERR_INVALID_ARG,
              "'input' must be a string");
    CHECK_ERR(imagen_job_spec_parse("enhance", "{\"input\":\"/a.png\",\"output\":\"/o\",\"colour\":1}", &s),
              IMAGEN_ERR_INVALID_ARG, "unknown member 'colour'");
    CHECK_ERR(imagen_job_spec_parse("enhance", "{\"input\":\"a.png\",\"output\":\"/o\"}", &s), IMAGEN_ERR_INVALID_ARG,
              "neither an absolute path nor an http(s) URL");
    CHECK_ERR(imagen_job_spec_parse("enhance", "{\"input\":\"/a.png\"}", &s), IMAGEN_ERR_INVALID_ARG,
              "needs an output");
    CHECK_ERR(imagen_job_spec_parse("enhance", "{\"output\":\"/o\"}", &s), IMAGEN_ERR_INVALID_ARG, "exactly one of");
    CHECK_ERR(imagen_job_spec_parse("enhance", "{\"input_data\":\"!!\",\"output\":\"/o\"}", &s), IMAGEN_ERR_INVALID_ARG,
              "not valid base64");
    CHECK_ERR(
        imagen_job_spec_parse("enhance", "{\"input\":\"/a.png\",\"output\":\"/o\",\"params\":{\"strength\":9}}", &s),
        IMAGEN_ERR_INVALID_ARG, "out of range");
    CHECK_ERR(imagen_job_spec_parse("enhance",
                                    "{\"input\":\"/a.png\",\"output\":\"/o\",\"params\":{\"strength\":\"1\"}}", &s),
              IMAGEN_ERR_INVALID_ARG, "must be a number");
}

static void
test_output_stem_is_safe(void)
{
    imagen_job_spec s = spec_for("enhance");
    s.output = strdup("/out");
    const char *cases[][2] = {
        {"/p/../x;rm -rf.png", "/out/x_rm_-rf.J.png"},
        {"https://h/a/photo.jpg?X-Amz-Signature=abc#f", "/out/photo.J.png"},
        {"/p/.hidden", "/out/image.J.png"},
        {"https://h/", "/out/image.J.png"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        free(s.input);
        s.input = strdup(cases[i][0]);
        char *where = imagen_job_output_location(&s, "J", "png");
        CHECK_STR_EQ(where, cases[i][1]);
        free(where);
    }
    imagen_job_spec_clear(&s);
}

int
main(void)
{
    RUN(test_parameters_are_checked);
    RUN(test_json_round_trip);
    RUN(test_bad_specs_name_the_member);
    RUN(test_output_stem_is_safe);
    TEST_MAIN_END();
}
