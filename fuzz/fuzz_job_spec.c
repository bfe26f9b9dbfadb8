/*
 * libFuzzer target for job specs (src/worker/job_spec.c): the JSON a worker
 * reads from the queue, written by any producer. The first byte picks the
 * operation, the rest is the spec. A spec that parses must serialise and
 * parse again to the same JSON, and must name an output location.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/job_spec.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const imagen_operation *op = &imagen_operations[data[0] % imagen_operation_count];
    char *text = malloc(size);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';

    imagen_job_spec spec;
    imagen_error *err = imagen_job_spec_parse(op->name, text, &spec);
    if (err != NULL) {
        imagen_error_free(err);
        free(text);
        return 0;
    }
    char *json = NULL;
    err = imagen_job_spec_to_json(&spec, &json);
    if (err != NULL)
        abort(); /* a spec that parsed is complete */
    imagen_job_spec again;
    err = imagen_job_spec_parse(op->name, json, &again);
    if (err != NULL)
        abort();
    char *json2 = NULL;
    err = imagen_job_spec_to_json(&again, &json2);
    if (err != NULL || strcmp(json, json2) != 0)
        abort();
    char *where = imagen_job_output_location(&spec, "0123456789abcdef01234567", "png");
    if (where == NULL)
        abort();
    free(where);
    free(json2);
    free(json);
    imagen_job_spec_clear(&again);
    imagen_job_spec_clear(&spec);
    free(text);
    return 0;
}
