/*
 * Decoding and encoding without a server: EXIF orientation, grey and
 * 16-bit inputs, alpha kept apart (and dropped when opaque), CMYK, header
 * probing, truncated files, and the output formats.
 */
#include <stdint.h>
#include <stdlib.h>
#include <vips/vips.h>

#include "test.h"
#include "worker/image_codec.h"

/* Saves a vips image to a buffer in `suffix`'s format; owned, g_free(). */
static void *
save(VipsImage *img, const char *suffix, size_t *size)
{
    void *buf = NULL;
    if (vips_image_write_to_buffer(img, suffix, &buf, size, NULL) != 0) {
        fprintf(stderr, "save %s: %s\n", suffix, vips_error_buffer());
        vips_error_clear();
        return NULL;
    }
    return buf;
}

/* A w × h image of `bands` bands of `format`, every sample `value`. */
static VipsImage *
constant(int w, int h, int bands, VipsBandFormat format, double value)
{
    VipsImage *black = NULL, *lin = NULL, *cast = NULL;
    vips_black(&black, w, h, "bands", bands, NULL);
    vips_linear1(black, &lin, 1.0, value, NULL);
    vips_cast(lin, &cast, format, NULL);
    g_object_unref(black);
    g_object_unref(lin);
    return cast;
}

static void
test_orientation_applied(void)
{
    /* 40 × 20, left half white: after orientation 6 (turn 90° clockwise)
     * the image is 20 × 40 with the top half white. */
    VipsImage *img = constant(40, 20, 3, VIPS_FORMAT_UCHAR, 0), *white = constant(20, 20, 3, VIPS_FORMAT_UCHAR, 255);
    VipsImage *joined = NULL, *copy = NULL;
    vips_insert(img, white, &joined, 0, 0, NULL);
    vips_copy(joined, &copy, NULL);
    vips_image_set_int(copy, VIPS_META_ORIENTATION, 6);
    size_t size = 0;
    void *jpg = save(copy, ".jpg[Q=95]", &size);
    int w = 0, h = 0;
    const char *fmt = NULL;
    CHECK_OK(imagen_image_probe(jpg, size, &w, &h, &fmt));
    CHECK_INT_EQ(w, 20);
    CHECK_INT_EQ(h, 40);
    CHECK_STR_EQ(fmt, "jpg");
    imagen_image out = {0};
    CHECK_OK(imagen_image_decode(jpg, size, &out));
    CHECK_INT_EQ(out.width, 20);
    CHECK_INT_EQ(out.height, 40);
    if (out.rgb != NULL) {
        CHECK(out.rgb[(5 * 20 + 10) * 3] > 200); /* top half white */
        CHECK(out.rgb[(35 * 20 + 10) * 3] < 50); /* bottom half black */
    }
    imagen_image_clear(&out);
    g_free(jpg);
    g_object_unref(img);
    g_object_unref(white);
    g_object_unref(joined);
    g_object_unref(copy);
}

static void
test_grey_and_16_bit(void)
{
    VipsImage *grey = constant(8, 6, 1, VIPS_FORMAT_UCHAR, 77), *g2 = NULL;
    vips_copy(grey, &g2, "interpretation", VIPS_INTERPRETATION_B_W, NULL);
    size_t size = 0;
    void *png = save(g2, ".png", &size);
    imagen_image out = {0};
    CHECK_OK(imagen_image_decode(png, size, &out));
    CHECK(out.alpha == NULL);
    if (out.rgb != NULL) {
        CHECK_INT_EQ(out.rgb[0], 77);
        CHECK_INT_EQ(out.rgb[1], 77);
        CHECK_INT_EQ(out.rgb[2], 77);
    }
    imagen_image_clear(&out);
    g_free(png);

    VipsImage *deep = constant(8, 6, 3, VIPS_FORMAT_USHORT, 32896), *d2 = NULL; /* 128 × 257 */
    vips_copy(deep, &d2, "interpretation", VIPS_INTERPRETATION_RGB16, NULL);
    png = save(d2, ".png", &size);
    CHECK_OK(imagen_image_decode(png, size, &out));
    if (out.rgb != NULL)
        CHECK(abs((int)out.rgb[0] - 128) <= 1);
    imagen_image_clear(&out);
    g_free(png);
    g_object_unref(grey);
    g_object_unref(g2);
    g_object_unref(deep);
    g_object_unref(d2);
}

static void
test_alpha_split_and_opaque_dropped(void)
{
    uint8_t px[4 * 4 * 4];
    for (int i = 0; i < 16; i++) {
        px[4 * i] = 10;
        px[4 * i + 1] = 20;
        px[4 * i + 2] = 30;
        px[4 * i + 3] = i < 8 ? 0 : 200;
    }
    unsigned char *png = NULL;
    size_t size = 0;
    CHECK_OK(imagen_image_encode(px, 4, 4, 4, "png", 0, &png, &size));
    imagen_image out = {0};
    CHECK_OK(imagen_image_decode(png, size, &out));
    CHECK(out.alpha != NULL);
    if (out.alpha != NULL) {
        CHECK_INT_EQ(out.alpha[0], 0);
        CHECK_INT_EQ(out.alpha[15], 200);
        CHECK_INT_EQ(out.rgb[15 * 3 + 2], 30);
    }
    imagen_image_clear(&out);
    free(png);
    for (int i = 0; i < 16; i++)
        px[4 * i + 3] = 255;
    CHECK_OK(imagen_image_encode(px, 4, 4, 4, "png", 0, &png, &size));
    CHECK_OK(imagen_image_decode(png, size, &out));
    CHECK(out.alpha == NULL);
    CHECK_STR_EQ(out.format, "png");
    imagen_image_clear(&out);
    free(png);
}

static void
test_cmyk_to_srgb(void)
{
    VipsImage *cmyk = constant(8, 8, 4, VIPS_FORMAT_UCHAR, 0), *c2 = NULL;
    vips_copy(cmyk, &c2, "interpretation", VIPS_INTERPRETATION_CMYK, NULL);
    size_t size = 0;
    void *jpg = save(c2, ".jpg", &size);
    imagen_image out = {0};
    CHECK_OK(imagen_image_decode(jpg, size, &out));
    CHECK(out.alpha == NULL); /* K is not alpha */
    if (out.rgb != NULL)
        CHECK(out.rgb[0] > 200 && out.rgb[1] > 200 && out.rgb[2] > 200); /* no ink: white */
    imagen_image_clear(&out);
    g_free(jpg);
    g_object_unref(cmyk);
    g_object_unref(c2);
}

static void
test_encode_formats(void)
{
    uint8_t px[16 * 16 * 3];
    memset(px, 99, sizeof(px));
    const char *formats[] = {"png", "jpg", "jpeg", "webp"};
    const char *found[] = {"png", "jpg", "jpg", "webp"};
    for (int i = 0; i < 4; i++) {
        unsigned char *data = NULL;
        size_t size = 0;
        CHECK_OK(imagen_image_encode(px, 16, 16, 3, formats[i], 80, &data, &size));
        int w = 0, h = 0;
        const char *fmt = NULL;
        CHECK_OK(imagen_image_probe(data, size, &w, &h, &fmt));
        CHECK_INT_EQ(w, 16);
        CHECK_STR_EQ(fmt, found[i]);
        free(data);
    }
    unsigned char *data = NULL;
    size_t size = 0;
    uint8_t rgba[4 * 4 * 4] = {0};
    CHECK_ERR(imagen_image_encode(rgba, 4, 4, 4, "jpeg", 0, &data, &size), IMAGEN_ERR_INVALID_ARG, "alpha");
    CHECK_ERR(imagen_image_encode(px, 4, 4, 3, "gif", 0, &data, &size), IMAGEN_ERR_INVALID_ARG, "gif");
}

static void
test_truncated_is_an_error(void)
{
    uint8_t px[64 * 64 * 3];
    for (size_t i = 0; i < sizeof(px); i++)
        px[i] = (uint8_t)(i * 37);
    const char *formats[] = {"png", "jpg", "webp"};
    for (int i = 0; i < 3; i++) {
        unsigned char *data = NULL;
        size_t size = 0;
        CHECK_OK(imagen_image_encode(px, 64, 64, 3, formats[i], 90, &data, &size));
        imagen_image out = {0};
        CHECK_ERR(imagen_image_decode(data, size * 2 / 3, &out), IMAGEN_ERR_INVALID_ARG, "cannot decode input");
        CHECK(out.rgb == NULL);
        free(data);
    }
    int w, h;
    CHECK_ERR(imagen_image_probe("GIF89", 5, &w, &h, NULL), IMAGEN_ERR_INVALID_ARG, "cannot decode input");
}

static void
test_plane_resize_exact(void)
{
    uint8_t plane[7 * 5];
    memset(plane, 255, sizeof(plane));
    uint8_t *out = NULL;
    CHECK_OK(imagen_plane_resize(plane, 7, 5, 21, 15, &out));
    if (out != NULL) {
        CHECK_INT_EQ(out[0], 255);
        CHECK_INT_EQ(out[21 * 15 - 1], 255);
    }
    free(out);
}

/* decode_into writes exactly what decode gives into the caller's buffer,
 * for plain RGB, grey (expanded) and RGBA (alpha apart) inputs of a size
 * that vips decodes in several strips, and refuses another size. */
static void
test_decode_into_matches_decode(void)
{
    int w = 301, h = 257;
    uint8_t *px = malloc((size_t)w * h * 4);
    for (size_t i = 0; i < (size_t)w * h * 4; i++)
        px[i] = (uint8_t)(i * 7 + i / 1001);
    struct {
        int channels;
        const char *fmt;
    } cases[] = {{3, "png"}, {4, "png"}, {3, "jpg"}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        unsigned char *data = NULL;
        size_t size = 0;
        CHECK_OK(imagen_image_encode(px, w, h, cases[c].channels, cases[c].fmt, 90, &data, &size));
        imagen_image a = {0}, b = {0};
        CHECK_OK(imagen_image_decode(data, size, &a));
        uint8_t *rgb = malloc((size_t)w * h * 3);
        CHECK_OK(imagen_image_decode_into(data, size, rgb, w, h, &b));
        CHECK(b.rgb == NULL);
        CHECK_INT_EQ(b.width, w);
        CHECK_INT_EQ(b.height, h);
        CHECK_STR_EQ(b.format, a.format);
        CHECK(a.rgb != NULL && memcmp(a.rgb, rgb, (size_t)w * h * 3) == 0);
        CHECK((a.alpha == NULL) == (b.alpha == NULL));
        if (a.alpha != NULL && b.alpha != NULL)
            CHECK(memcmp(a.alpha, b.alpha, (size_t)w * h) == 0);
        imagen_image_clear(&b);
        CHECK_ERR(imagen_image_decode_into(data, size, rgb, w - 1, h, &b), IMAGEN_ERR_INVALID_ARG, "301x257");
        CHECK_ERR(imagen_image_decode_into(data, size * 2 / 3, rgb, w, h, &b), IMAGEN_ERR_INVALID_ARG,
                  "cannot decode input");
        free(rgb);
        imagen_image_clear(&a);
        free(data);
    }
    /* Grey comes back as three equal channels. */
    VipsImage *grey = constant(40, 30, 1, VIPS_FORMAT_UCHAR, 77);
    size_t size = 0;
    void *png = save(grey, ".png", &size);
    uint8_t rgb[40 * 30 * 3];
    imagen_image out = {0};
    CHECK_OK(imagen_image_decode_into(png, size, rgb, 40, 30, &out));
    CHECK_INT_EQ(rgb[0], 77);
    CHECK_INT_EQ(rgb[sizeof(rgb) - 1], 77);
    CHECK(out.alpha == NULL);
    g_free(png);
    g_object_unref(grey);
    free(px);
}

int
main(void)
{
    CHECK_OK(imagen_codec_init());
    RUN(test_orientation_applied);
    RUN(test_grey_and_16_bit);
    RUN(test_alpha_split_and_opaque_dropped);
    RUN(test_cmyk_to_srgb);
    RUN(test_encode_formats);
    RUN(test_truncated_is_an_error);
    RUN(test_plane_resize_exact);
    RUN(test_decode_into_matches_decode);
    vips_shutdown();
    TEST_MAIN_END();
}
