/*
 * Tensor files for the `imagen` command: a small .npy reader/writer (numpy
 * format v1-v3 headers) and image decode/encode through libvips.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <vips/vips.h>

#include "cli/imagen_cli.h"

void
imagen_io_tensor_free(imagen_io_tensor *t)
{
    free(t->data);
    t->data = NULL;
}

/* ---- .npy ------------------------------------------------------------------ */

/* numpy descr (without byte-order char) for each datatype. */
static const struct {
    imagen_datatype dt;
    const char *code;
} npy_codes[] = {
    {IMAGEN_TYPE_BOOL, "b1"},   {IMAGEN_TYPE_UINT8, "u1"}, {IMAGEN_TYPE_UINT16, "u2"}, {IMAGEN_TYPE_UINT32, "u4"},
    {IMAGEN_TYPE_UINT64, "u8"}, {IMAGEN_TYPE_INT8, "i1"},  {IMAGEN_TYPE_INT16, "i2"},  {IMAGEN_TYPE_INT32, "i4"},
    {IMAGEN_TYPE_INT64, "i8"},  {IMAGEN_TYPE_FP16, "f2"},  {IMAGEN_TYPE_FP32, "f4"},   {IMAGEN_TYPE_FP64, "f8"},
};

static imagen_error *
read_file(const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return imagen_error_new(IMAGEN_ERR_NOT_FOUND, "%s: %s", path, strerror(errno));
    imagen_error *err = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s: not a regular file", path);
    }
    *data = malloc((size_t)size + 1);
    if (*data == NULL)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "%s: out of memory", path);
    else if (fread(*data, 1, (size_t)size, f) != (size_t)size)
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "%s: read error", path);
    fclose(f);
    if (err != NULL) {
        free(*data);
        return err;
    }
    (*data)[size] = '\0';
    *len = (size_t)size;
    return NULL;
}

/* Finds the value after 'key': in a numpy header dict. */
static const char *
dict_value(const char *hdr, const char *key)
{
    const char *p = strstr(hdr, key);
    if (p == NULL)
        return NULL;
    p = strchr(p + strlen(key), ':');
    if (p == NULL)
        return NULL;
    p++;
    while (*p == ' ')
        p++;
    return p;
}

imagen_error *
imagen_io_read_npy(const char *path, imagen_io_tensor *out)
{
    char *buf = NULL;
    size_t len = 0;
    IMAGEN_RETURN_IF_ERROR(read_file(path, &buf, &len));
    imagen_error *err = NULL;
    size_t hstart, hlen;
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s: not a .npy file", path);
        goto fail;
    }
    if (buf[6] == 1) {
        hlen = (uint8_t)buf[8] | (size_t)(uint8_t)buf[9] << 8;
        hstart = 10;
    } else if ((buf[6] == 2 || buf[6] == 3) && len >= 12) {
        hlen = (uint8_t)buf[8] | (size_t)(uint8_t)buf[9] << 8 | (size_t)(uint8_t)buf[10] << 16 |
               (size_t)(uint8_t)buf[11] << 24;
        hstart = 12;
    } else {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s: unsupported .npy version %d", path, buf[6]);
        goto fail;
    }
    if (hlen > len - hstart) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s: truncated .npy header", path);
        goto fail;
    }
    char *hdr = strndup(buf + hstart, hlen);
    if (hdr == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        goto fail;
    }
    const char *descr = dict_value(hdr, "'descr'");
    const char *fortran = dict_value(hdr, "'fortran_order'");
    const char *shape = dict_value(hdr, "'shape'");
    imagen_datatype dt = IMAGEN_TYPE_INVALID;
    if (descr != NULL && (descr[0] == '\'' || descr[0] == '"') && strchr("<|=", descr[1]) != NULL)
        for (size_t i = 0; i < sizeof(npy_codes) / sizeof(npy_codes[0]); i++)
            if (strncmp(descr + 2, npy_codes[i].code, 2) == 0 && descr[4] == descr[0])
                dt = npy_codes[i].dt;
    if (dt == IMAGEN_TYPE_INVALID || fortran == NULL || strncmp(fortran, "False", 5) != 0 || shape == NULL ||
        shape[0] != '(') {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                               "%s: unsupported .npy header (need little-endian numbers or bool, C order): %s", path,
                               hdr);
        free(hdr);
        goto fail;
    }
    out->rank = 0;
    const char *p = shape + 1;
    uint64_t count = 1;
    while (*p != ')' && *p != '\0') {
        char *end;
        long long d = strtoll(p, &end, 10);
        if (end == p) {
            p++;
            continue;
        }
        if (out->rank == IMAGEN_MAX_RANK || d < 0 || (d > 0 && count > UINT64_MAX / (uint64_t)d)) {
            err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s: shape too large", path);
            free(hdr);
            goto fail;
        }
        out->shape[out->rank++] = d;
        count *= (uint64_t)d;
        p = end;
    }
    free(hdr);
    size_t nbytes = (size_t)count * imagen_datatype_size(dt);
    if (nbytes != len - hstart - hlen) {
        err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s: %zu data bytes, the header's shape needs %zu", path,
                               len - hstart - hlen, nbytes);
        goto fail;
    }
    out->datatype = dt;
    out->byte_size = nbytes;
    out->data = malloc(nbytes ? nbytes : 1);
    if (out->data == NULL) {
        err = imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
        goto fail;
    }
    memcpy(out->data, buf + hstart + hlen, nbytes);
fail:
    free(buf);
    return err;
}

imagen_error *
imagen_io_write_npy(const char *path, const imagen_tensor *t)
{
    const char *code = NULL;
    for (size_t i = 0; i < sizeof(npy_codes) / sizeof(npy_codes[0]); i++)
        if (npy_codes[i].dt == t->datatype)
            code = npy_codes[i].code;
    if (code == NULL)
        return imagen_error_new(IMAGEN_ERR_UNSUPPORTED, "output '%s': %s cannot be written as .npy", t->name,
                                imagen_datatype_name(t->datatype));
    char dict[512];
    int n = snprintf(dict, sizeof(dict), "{'descr': '%c%s', 'fortran_order': False, 'shape': (",
                     t->datatype == IMAGEN_TYPE_BOOL || imagen_datatype_size(t->datatype) == 1 ? '|' : '<', code);
    for (size_t d = 0; d < t->rank; d++)
        n += snprintf(dict + n, sizeof(dict) - (size_t)n, "%lld%s", (long long)t->shape[d],
                      t->rank == 1 ? "," : (d + 1 < t->rank ? ", " : ""));
    n += snprintf(dict + n, sizeof(dict) - (size_t)n, "), }");
    /* numpy pads the header with spaces and a newline so the data starts
     * on a 64-byte boundary. */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)n + pad + 1;
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return imagen_error_new(IMAGEN_ERR_NOT_FOUND, "%s: %s", path, strerror(errno));
    unsigned char pre[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    bool ok = fwrite(pre, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)n, f) == (size_t)n;
    for (size_t i = 0; ok && i < pad; i++)
        ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    ok = ok && (t->byte_size == 0 || fwrite(t->data, 1, t->byte_size, f) == t->byte_size);
    ok = fclose(f) == 0 && ok;
    return ok ? NULL : imagen_error_new(IMAGEN_ERR_INTERNAL, "%s: write error", path);
}

/* ---- images ---------------------------------------------------------------- */

bool
imagen_io_is_image(const char *path)
{
    static const char *const exts[] = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".gif", NULL};
    const char *dot = strrchr(path, '.');
    if (dot == NULL)
        return false;
    for (size_t i = 0; exts[i] != NULL; i++)
        if (strcasecmp(dot, exts[i]) == 0)
            return true;
    return false;
}

static bool vips_started;

static imagen_error *
vips_start(void)
{
    if (!vips_started && VIPS_INIT("imagen") != 0)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "libvips failed to start: %s", vips_error_buffer());
    vips_started = true;
    return NULL;
}

static imagen_error *
vips_failure(const char *path)
{
    imagen_error *err = imagen_error_new(IMAGEN_ERR_INVALID_ARG, "%s: %s", path, vips_error_buffer());
    vips_error_clear();
    return err;
}

/* Replaces *img by next (unref'ing the old one); false when next failed. */
static bool
step(VipsImage **img, int rc, VipsImage *next)
{
    if (rc != 0)
        return false;
    g_object_unref(*img);
    *img = next;
    return true;
}

imagen_error *
imagen_io_read_image(const char *path, int want_channels, imagen_io_tensor *out)
{
    IMAGEN_RETURN_IF_ERROR(vips_start());
    /* Sequential access: decode in one pass without keeping the whole
     * source image twice. */
    VipsImage *img = vips_image_new_from_file(path, "access", VIPS_ACCESS_SEQUENTIAL, NULL);
    if (img == NULL)
        return vips_failure(path);
    VipsImage *next = NULL;
    bool ok = true;
    if (want_channels == 3 && (img->Bands == 2 || img->Bands == 4))
        ok = step(&img, vips_flatten(img, &next, NULL), next);
    if (ok && want_channels == 3 && img->Bands == 1)
        ok = step(&img, vips_colourspace(img, &next, VIPS_INTERPRETATION_sRGB, NULL), next);
    if (ok && img->BandFmt != VIPS_FORMAT_UCHAR)
        ok = step(&img, vips_cast_uchar(img, &next, NULL), next);
    size_t size = 0;
    void *mem = ok ? vips_image_write_to_memory(img, &size) : NULL;
    if (mem == NULL) {
        g_object_unref(img);
        return vips_failure(path);
    }
    out->datatype = IMAGEN_TYPE_UINT8;
    out->shape[0] = img->Ysize;
    out->shape[1] = img->Xsize;
    out->shape[2] = img->Bands;
    out->rank = 3;
    out->byte_size = size;
    g_object_unref(img);
    /* Own the bytes with malloc so every tensor is freed the same way. */
    out->data = malloc(size ? size : 1);
    if (out->data != NULL)
        memcpy(out->data, mem, size);
    g_free(mem);
    return out->data ? NULL : imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory");
}

bool
imagen_io_is_png_shaped(const imagen_tensor *t)
{
    if (t->datatype != IMAGEN_TYPE_UINT8)
        return false;
    size_t r = t->rank;
    if (r == 4 && t->shape[0] == 1)
        r = 3;
    else if (r != 3)
        return false;
    int64_t c = t->shape[t->rank - 1];
    return r == 3 && (c == 3 || c == 4) && t->shape[t->rank - 2] > 0 && t->shape[t->rank - 3] > 0;
}

imagen_error *
imagen_io_write_png(const char *path, const imagen_tensor *t)
{
    IMAGEN_RETURN_IF_ERROR(vips_start());
    int h = (int)t->shape[t->rank - 3], w = (int)t->shape[t->rank - 2], c = (int)t->shape[t->rank - 1];
    if ((size_t)h * (size_t)w * (size_t)c != t->byte_size)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "output '%s': %zu bytes do not fill its shape", t->name,
                                t->byte_size);
    VipsImage *img = vips_image_new_from_memory(t->data, t->byte_size, w, h, c, VIPS_FORMAT_UCHAR);
    if (img == NULL)
        return vips_failure(path);
    int rc = vips_pngsave(img, path, NULL);
    g_object_unref(img);
    return rc == 0 ? NULL : vips_failure(path);
}
