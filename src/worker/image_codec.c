/*
 * libvips behind image_codec.h: header probing, decoding to 8-bit sRGB with
 * the alpha apart, plane resizing for alpha, and encoding.
 */
#include "worker/image_codec.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

static pthread_once_t codec_once = PTHREAD_ONCE_INIT;
static int codec_init_failed;

/* vips reports what it skipped or found wrong in a file as GLib warnings
 * on stderr, per image; a job's real failure comes back as its error, so
 * a worker going through thousands of images keeps its log for that. */
static void
drop_vips_warning(const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer data)
{
    (void)domain;
    (void)level;
    (void)message;
    (void)data;
}

static void
codec_start(void)
{
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING, drop_vips_warning, NULL);
    if (VIPS_INIT("imagen-worker") != 0) {
        codec_init_failed = 1;
        return;
    }
    vips_cache_set_max(0);
    if (getenv("VIPS_CONCURRENCY") == NULL)
        vips_concurrency_set(1);
}

imagen_error *
imagen_codec_init(void)
{
    pthread_once(&codec_once, codec_start);
    if (codec_init_failed)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "libvips failed to start: %s", vips_error_buffer());
    return NULL;
}

/* An error carrying vips's message (its lines joined), clearing vips's
 * buffer so the next job does not inherit it. */
static imagen_error *
vips_failure(imagen_error_code code, const char *what)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", vips_error_buffer());
    vips_error_clear();
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    for (char *p = msg; *p != '\0'; p++)
        if (*p == '\n')
            *p = ';';
    return imagen_error_new(code, "%s: %s", what, n > 0 ? msg : "libvips gave no reason");
}

static const char *
format_of(const void *data, size_t size)
{
    const char *loader = vips_foreign_find_load_buffer(data, size);
    if (loader == NULL)
        return NULL;
    if (strstr(loader, "Jpeg") != NULL)
        return "jpg";
    if (strstr(loader, "Png") != NULL)
        return "png";
    if (strstr(loader, "Webp") != NULL)
        return "webp";
    return NULL;
}

static imagen_error *
load(const void *data, size_t size, VipsAccess access, VipsImage **out)
{
    /* fail_on=error: a truncated or corrupt file is an error, where vips
     * would otherwise fill what is missing with grey. */
    VipsImage *img = vips_image_new_from_buffer(data, size, "", "access", access, "fail_on", VIPS_FAIL_ON_ERROR, NULL);
    if (img == NULL)
        return vips_failure(IMAGEN_ERR_INVALID_ARG, "cannot decode input");
    *out = img;
    return NULL;
}

imagen_error *
imagen_image_probe(const void *data, size_t size, int *width, int *height, const char **format)
{
    VipsImage *img = NULL;
    IMAGEN_RETURN_IF_ERROR(load(data, size, VIPS_ACCESS_SEQUENTIAL, &img));
    int w = vips_image_get_width(img), h = vips_image_get_height(img);
    /* EXIF orientations 5 to 8 turn the image a quarter. */
    if (vips_image_get_orientation_swap(img)) {
        int t = w;
        w = h;
        h = t;
    }
    g_object_unref(img);
    *width = w;
    *height = h;
    if (format != NULL)
        *format = format_of(data, size);
    return NULL;
}

/* Replaces *img by the result of a vips operation that returned rc. The
 * result is read through a pointer: as an argument it would be evaluated
 * before the operation had written it. */
static bool
step(VipsImage **img, int rc, VipsImage **next)
{
    g_object_unref(*img);
    *img = rc == 0 ? *next : NULL;
    *next = NULL;
    return rc == 0;
}

/* Opens an image for decoding: orientation applied, sRGB, 8 bits. *out is
 * owned (g_object_unref); nothing is decoded yet. */
static imagen_error *
decode_open(const void *data, size_t size, VipsImage **out)
{
    VipsImage *img = NULL, *next = NULL;
    IMAGEN_RETURN_IF_ERROR(load(data, size, VIPS_ACCESS_SEQUENTIAL, &img));
    /* Sequential access decodes straight into our buffer; turning the
     * image needs random access, so only a rotated photo pays for it. */
    if (vips_image_get_orientation(img) > 1) {
        g_object_unref(img);
        IMAGEN_RETURN_IF_ERROR(load(data, size, VIPS_ACCESS_RANDOM, &img));
        if (!step(&img, vips_autorot(img, &next, NULL), &next))
            return vips_failure(IMAGEN_ERR_INVALID_ARG, "cannot decode input");
    }
    VipsInterpretation interp = vips_image_guess_interpretation(img);
    if (interp != VIPS_INTERPRETATION_sRGB && interp != VIPS_INTERPRETATION_MULTIBAND &&
        !step(&img, vips_colourspace(img, &next, VIPS_INTERPRETATION_sRGB, NULL), &next))
        return vips_failure(IMAGEN_ERR_INVALID_ARG, "cannot decode input: cannot convert to sRGB");
    /* 16-bit (or float) data left after the colour conversion: scale,
     * not clip, into 8 bits. */
    if (vips_image_get_format(img) == VIPS_FORMAT_USHORT &&
        !step(&img, vips_cast(img, &next, VIPS_FORMAT_UCHAR, "shift", TRUE, NULL), &next))
        return vips_failure(IMAGEN_ERR_INVALID_ARG, "cannot decode input");
    if (vips_image_get_format(img) != VIPS_FORMAT_UCHAR && !step(&img, vips_cast_uchar(img, &next, NULL), &next))
        return vips_failure(IMAGEN_ERR_INVALID_ARG, "cannot decode input");
    *out = img;
    return NULL;
}

/* Where decode_rows puts the pixels vips hands it. */
typedef struct pixel_sink {
    uint8_t *rgb;   /* width × height × 3 */
    uint8_t *alpha; /* width × height, NULL without alpha */
    int width, bands;
    bool opaque; /* every alpha value seen so far is 255 */
} pixel_sink;

/* vips_sink_disc's writer: called for consecutive bands of whole rows, top
 * to bottom, one call at a time. Splits them into RGB and alpha. */
static int
decode_rows(VipsRegion *region, VipsRect *area, void *arg)
{
    pixel_sink *s = arg;
    for (int y = 0; y < area->height; y++) {
        const uint8_t *p = (const uint8_t *)VIPS_REGION_ADDR(region, area->left, area->top + y);
        size_t first = (size_t)(area->top + y) * s->width + area->left, n = (size_t)area->width;
        uint8_t *rgb = s->rgb + first * 3;
        if (s->bands == 3) {
            memcpy(rgb, p, n * 3);
            continue;
        }
        uint8_t *alpha = s->alpha != NULL ? s->alpha + first : NULL;
        for (size_t x = 0; x < n; x++, p += s->bands) {
            if (s->bands >= 3) {
                rgb[3 * x] = p[0];
                rgb[3 * x + 1] = p[1];
                rgb[3 * x + 2] = p[2];
            } else {
                rgb[3 * x] = rgb[3 * x + 1] = rgb[3 * x + 2] = p[0];
            }
            if (alpha != NULL) {
                alpha[x] = p[s->bands == 2 ? 1 : 3];
                s->opaque = s->opaque && alpha[x] == 255;
            }
        }
    }
    return 0;
}

/* Decodes an opened image's pixels into rgb (its width × height × 3) and,
 * when it has alpha that is not opaque everywhere, a new plane *alpha
 * (owned, free()); NULL otherwise. Consumes img. vips writes the rows
 * straight into rgb: no whole-image buffer of its own. */
static imagen_error *
decode_pixels(VipsImage *img, uint8_t *rgb, uint8_t **alpha)
{
    int w = vips_image_get_width(img), h = vips_image_get_height(img), bands = vips_image_get_bands(img);
    bool has_alpha = bands == 2 || bands >= 4;
    pixel_sink s = {rgb, NULL, w, bands, true};
    if (has_alpha && (s.alpha = malloc((size_t)w * h)) == NULL) {
        g_object_unref(img);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %dx%d image", w, h);
    }
    int rc = vips_sink_disc(img, decode_rows, &s);
    g_object_unref(img);
    if (rc != 0) {
        free(s.alpha);
        return vips_failure(IMAGEN_ERR_INVALID_ARG, "cannot decode input");
    }
    /* An alpha channel that is opaque everywhere says nothing: dropping it
     * keeps the input's format and saves the alpha work. */
    if (s.alpha != NULL && s.opaque) {
        free(s.alpha);
        s.alpha = NULL;
    }
    *alpha = s.alpha;
    return NULL;
}

imagen_error *
imagen_image_decode(const void *data, size_t size, imagen_image *image)
{
    VipsImage *img = NULL;
    IMAGEN_RETURN_IF_ERROR(decode_open(data, size, &img));
    int w = vips_image_get_width(img), h = vips_image_get_height(img);
    uint8_t *rgb = malloc((size_t)w * h * 3), *alpha = NULL;
    if (rgb == NULL) {
        g_object_unref(img);
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %dx%d image", w, h);
    }
    imagen_error *err = decode_pixels(img, rgb, &alpha);
    if (err != NULL) {
        free(rgb);
        return err;
    }
    image->width = w;
    image->height = h;
    image->rgb = rgb;
    image->alpha = alpha;
    image->format = format_of(data, size);
    return NULL;
}

imagen_error *
imagen_image_decode_into(const void *data, size_t size, uint8_t *rgb, int width, int height, imagen_image *image)
{
    VipsImage *img = NULL;
    IMAGEN_RETURN_IF_ERROR(decode_open(data, size, &img));
    int w = vips_image_get_width(img), h = vips_image_get_height(img);
    if (w != width || h != height) {
        g_object_unref(img);
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "cannot decode input: it decodes to %dx%d, not the %dx%d its header gave", w, h, width,
                                height);
    }
    uint8_t *alpha = NULL;
    IMAGEN_RETURN_IF_ERROR(decode_pixels(img, rgb, &alpha));
    image->width = w;
    image->height = h;
    image->rgb = NULL;
    image->alpha = alpha;
    image->format = format_of(data, size);
    return NULL;
}

void
imagen_image_clear(imagen_image *image)
{
    free(image->rgb);
    free(image->alpha);
    image->rgb = NULL;
    image->alpha = NULL;
}

imagen_error *
imagen_plane_resize(const uint8_t *plane, int width, int height, int out_width, int out_height, uint8_t **out)
{
    VipsImage *img = vips_image_new_from_memory(plane, (size_t)width * height, width, height, 1, VIPS_FORMAT_UCHAR);
    VipsImage *next = NULL;
    if (img == NULL)
        return vips_failure(IMAGEN_ERR_INTERNAL, "cannot resize alpha");
    double hscale = (double)out_width / width, vscale = (double)out_height / height;
    bool ok = step(&img, vips_resize(img, &next, hscale, "vscale", vscale, "kernel", VIPS_KERNEL_CUBIC, NULL), &next);
    /* vips rounds the output size; make it exact whatever it did. */
    if (ok && (vips_image_get_width(img) != out_width || vips_image_get_height(img) != out_height))
        ok = step(&img, vips_embed(img, &next, 0, 0, out_width, out_height, "extend", VIPS_EXTEND_COPY, NULL), &next);
    size_t size = 0;
    uint8_t *mem = ok ? vips_image_write_to_memory(img, &size) : NULL;
    if (img != NULL)
        g_object_unref(img);
    if (mem == NULL)
        return vips_failure(IMAGEN_ERR_INTERNAL, "cannot resize alpha");
    uint8_t *copy = malloc(size);
    if (copy != NULL)
        memcpy(copy, mem, size);
    g_free(mem);
    if (copy == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory resizing alpha");
    *out = copy;
    return NULL;
}

imagen_error *
imagen_image_encode(const uint8_t *pixels, int width, int height, int channels, const char *format, int quality,
                    unsigned char **data, size_t *size)
{
    if (quality <= 0)
        quality = 90;
    bool jpeg = strcmp(format, "jpg") == 0 || strcmp(format, "jpeg") == 0;
    if (jpeg && channels == 4)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG,
                                "the result has an alpha channel, which JPEG cannot hold; ask for png or webp");
    if (!jpeg && strcmp(format, "png") != 0 && strcmp(format, "webp") != 0)
        return imagen_error_new(IMAGEN_ERR_INVALID_ARG, "unknown output format '%s' (png, jpeg, webp)", format);
    VipsImage *img = vips_image_new_from_memory(pixels, (size_t)width * height * channels, width, height, channels,
                                                VIPS_FORMAT_UCHAR);
    VipsImage *next = NULL;
    if (img == NULL)
        return vips_failure(IMAGEN_ERR_INTERNAL, "cannot encode the result");
    void *buf = NULL;
    size_t len = 0;
    bool ok = step(&img, vips_copy(img, &next, "interpretation", VIPS_INTERPRETATION_sRGB, NULL), &next);
    if (ok) {
        int rc;
        if (jpeg)
            rc = vips_jpegsave_buffer(img, &buf, &len, "Q", quality, NULL);
        else if (strcmp(format, "webp") == 0)
            rc = vips_webpsave_buffer(img, &buf, &len, "Q", quality, NULL);
        else
            rc = vips_pngsave_buffer(img, &buf, &len, NULL);
        ok = rc == 0;
    }
    if (img != NULL)
        g_object_unref(img);
    if (!ok) {
        g_free(buf);
        return vips_failure(IMAGEN_ERR_INTERNAL, "cannot encode the result");
    }
    /* The result is freed with free() by the job loop; vips hands out
     * g_malloc() memory. */
    unsigned char *copy = malloc(len);
    if (copy != NULL)
        memcpy(copy, buf, len);
    g_free(buf);
    if (copy == NULL)
        return imagen_error_new(IMAGEN_ERR_INTERNAL, "out of memory for a %zu-byte result", len);
    *data = copy;
    *size = len;
    return NULL;
}
