/*
 * Data type tables (spec §1.12) and shape arithmetic.
 */
#include "imagen/types.h"

#include <string.h>

static const struct {
    const char *name;
    const char *config_name;
    size_t size;
} type_table[IMAGEN_DATATYPE_COUNT] = {
#define IMAGEN_DATATYPE_ROW_(sfx, num, name, size) [num] = {name, "TYPE_" #sfx, size},
    IMAGEN_DATATYPES(IMAGEN_DATATYPE_ROW_)
#undef IMAGEN_DATATYPE_ROW_
};

static bool
valid(imagen_datatype dt)
{
    return (int)dt > 0 && (int)dt < IMAGEN_DATATYPE_COUNT;
}

const char *
imagen_datatype_name(imagen_datatype dt)
{
    return valid(dt) ? type_table[dt].name : "INVALID";
}

const char *
imagen_datatype_config_name(imagen_datatype dt)
{
    if (dt == IMAGEN_TYPE_BYTES)
        return "TYPE_STRING";
    return valid(dt) ? type_table[dt].config_name : "TYPE_INVALID";
}

imagen_datatype
imagen_datatype_from_name(const char *name, size_t len)
{
    for (int i = 1; i < IMAGEN_DATATYPE_COUNT; i++) {
        const char *n = type_table[i].name;
        if (strlen(n) == len && memcmp(n, name, len) == 0)
            return (imagen_datatype)i;
    }
    return IMAGEN_TYPE_INVALID;
}

size_t
imagen_datatype_size(imagen_datatype dt)
{
    return valid(dt) ? type_table[dt].size : 0;
}

bool
imagen_shape_element_count(const int64_t *shape, size_t rank, uint64_t limit, uint64_t *out)
{
    uint64_t count = 1;
    for (size_t i = 0; i < rank; i++) {
        if (shape[i] < 0)
            return false;
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && count > limit / d)
            return false;
        count *= d;
    }
    if (count > limit)
        return false;
    *out = count;
    return true;
}
