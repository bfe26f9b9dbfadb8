/*
 * libFuzzer target for the request JSON reader (src/http/http_jsondoc.c),
 * differential against jansson: whatever jansson accepts must parse here to
 * the same values (nesting beyond this reader's limit aside), and whatever
 * this reader accepts must stay inside its arena (ASan). Intended
 * differences: integers above INT64_MAX, which jansson refuses, and raw NUL
 * bytes, which jansson reads as the end of the text.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_internal.h"

static int
depth_of(const json_t *j)
{
    int d = 0;
    if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++) {
            int k = depth_of(json_array_get(j, i));
            d = k > d ? k : d;
        }
        return d + 1;
    }
    if (json_is_object(j)) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v)
        {
            int k = depth_of(v);
            d = k > d ? k : d;
        }
        return d + 1;
    }
    return 0;
}

static void
same(const json_t *j, const imagen__jv *v)
{
    switch (json_typeof(j)) {
    case JSON_NULL:
        if (v->type != IMAGEN_JV_NULL)
            abort();
        break;
    case JSON_TRUE:
        if (v->type != IMAGEN_JV_TRUE)
            abort();
        break;
    case JSON_FALSE:
        if (v->type != IMAGEN_JV_FALSE)
            abort();
        break;
    case JSON_INTEGER:
        if (v->type != IMAGEN_JV_INT || v->v.i != json_integer_value(j))
            abort();
        break;
    case JSON_REAL:
        if (v->type != IMAGEN_JV_REAL || memcmp(&v->v.d, &(double){json_real_value(j)}, sizeof(double)) != 0)
            abort();
        break;
    case JSON_STRING:
        if (v->type != IMAGEN_JV_STRING || v->n != json_string_length(j) ||
            memcmp(v->v.s, json_string_value(j), v->n) != 0 || v->v.s[v->n] != '\0')
            abort();
        break;
    case JSON_ARRAY:
        if (v->type != IMAGEN_JV_ARRAY || v->n != json_array_size(j))
            abort();
        for (size_t i = 0; i < v->n; i++)
            same(json_array_get(j, i), &v->v.items[i]);
        break;
    case JSON_OBJECT: {
        if (v->type != IMAGEN_JV_OBJECT)
            abort();
        const char *key;
        json_t *m;
        json_object_foreach((json_t *)j, key, m)
        {
            const imagen__jv *mine = imagen__jv_object_get(v, key);
            if (mine == NULL && strlen(key) == 0)
                abort();
            if (mine != NULL)
                same(m, mine);
            else if (memchr(key, '\0', 1) == NULL)
                abort();
        }
        break;
    }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char block[512]; /* small, so documents spill into chunks often */
    imagen__jdoc doc;
    imagen__jdoc_init(&doc, block, sizeof(block));
    const imagen__jv *root = NULL;
    imagen__jdoc_error err;
    bool ok = imagen__jdoc_parse(&doc, (const char *)data, size, &root, &err);
    if (!ok && (err.text[0] == '\0' || err.position > size || err.line < 1 || err.column < 1))
        abort();
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    /* jansson takes a raw NUL byte for the end of the text; JSON (and
     * Triton's rapidjson) refuses what follows the value, as this reader does. */
    bool has_nul = memchr(data, 0, size) != NULL;
    if (j != NULL && !has_nul && depth_of(j) <= 1024) {
        if (!ok)
            abort(); /* jansson accepted what this reader refused */
        same(j, root);
    }
    json_decref(j);
    imagen__jdoc_free(&doc);
    return 0;
}
