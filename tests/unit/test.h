/*
 * A minimal unit-test harness: CHECK macros print both operands and the
 * location, count failures, and the test's main returns non-zero if any
 * check failed. One behaviour per TEST function; run them from main with
 * RUN(test_name).
 */
#ifndef IMAGEN_TEST_H
#define IMAGEN_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures_;
static int test_checks_;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        test_checks_++;                                                              \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            test_failures_++;                                                        \
        }                                                                            \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                                 \
    do {                                                                                                   \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                \
        test_checks_++;                                                                                    \
        if (a_ != b_) {                                                                                    \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b, a_, b_); \
            test_failures_++;                                                                              \
        }                                                                                                  \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                                            \
    do {                                                                                              \
        const char *a_ = (a), *b_ = (b);                                                              \
        test_checks_++;                                                                               \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                        \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a, #b, \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                          \
            test_failures_++;                                                                         \
        }                                                                                             \
    } while (0)

/* Checks that an imagen_error * expression is NULL; prints and frees it if not. */
#define CHECK_OK(expr)                                                                                      \
    do {                                                                                                    \
        imagen_error *e_ = (expr);                                                                          \
        test_checks_++;                                                                                     \
        if (e_ != NULL) {                                                                                   \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, imagen_error_message(e_)); \
            imagen_error_free(e_);                                                                          \
            test_failures_++;                                                                               \
        }                                                                                                   \
    } while (0)

/* Checks that an imagen_error * expression fails with `code` and a message
 * containing `needle`; frees the error. */
#define CHECK_ERR(expr, code, needle)                                                                               \
    do {                                                                                                            \
        imagen_error *e_ = (expr);                                                                                  \
        test_checks_++;                                                                                             \
        if (e_ == NULL) {                                                                                           \
            fprintf(stderr, "%s:%d: %s unexpectedly succeeded\n", __FILE__, __LINE__, #expr);                       \
            test_failures_++;                                                                                       \
        } else {                                                                                                    \
            if (imagen_error_code_of(e_) != (code) || strstr(imagen_error_message(e_), (needle)) == NULL) {         \
                fprintf(stderr, "%s:%d: %s: got %s \"%s\", want %s containing \"%s\"\n", __FILE__, __LINE__, #expr, \
                        imagen_error_code_name(imagen_error_code_of(e_)), imagen_error_message(e_),                 \
                        imagen_error_code_name(code), (needle));                                                    \
                test_failures_++;                                                                                   \
            }                                                                                                       \
            imagen_error_free(e_);                                                                                  \
        }                                                                                                           \
    } while (0)

#define RUN(test)                                                                       \
    do {                                                                                \
        int before_ = test_failures_;                                                   \
        test();                                                                         \
        fprintf(stderr, "%s %s\n", test_failures_ == before_ ? "ok  " : "FAIL", #test); \
    } while (0)

#define TEST_MAIN_END()                                                          \
    do {                                                                         \
        fprintf(stderr, "%d checks, %d failed\n", test_checks_, test_failures_); \
        return test_failures_ ? 1 : 0;                                           \
    } while (0)

#endif
