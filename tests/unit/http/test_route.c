/* Unit tests for the endpoint table of src/http/http_route.c (spec §1.2). */
#include <string.h>

#include "common/percent.h"
#include "http/http_internal.h"
#include "test.h"

static imagen__http_route
route(const char *path)
{
    imagen__http_route r;
    imagen__http_route_match(path, &r);
    return r;
}

static void
test_health_and_server_metadata(void)
{
    CHECK_INT_EQ(route("/v2/health/live").kind, IMAGEN_HTTP_ROUTE_HEALTH_LIVE);
    CHECK_INT_EQ(route("/v2/health/ready").kind, IMAGEN_HTTP_ROUTE_HEALTH_READY);
    CHECK_INT_EQ(route("/v2").kind, IMAGEN_HTTP_ROUTE_SERVER_METADATA);
    CHECK_INT_EQ(route("/v2").methods, IMAGEN_HTTP_METHOD_GET);
}

static void
test_model_routes_capture_name_and_version(void)
{
    imagen__http_route r = route("/v2/models/resnet/versions/12/infer");
    CHECK_INT_EQ(r.kind, IMAGEN_HTTP_ROUTE_INFER);
    CHECK_INT_EQ(r.methods, IMAGEN_HTTP_METHOD_POST);
    CHECK_INT_EQ(r.model_len, 6);
    CHECK(strncmp(r.model, "resnet", 6) == 0);
    CHECK_INT_EQ(r.version, 12);
    r = route("/v2/models/resnet/config");
    CHECK_INT_EQ(r.kind, IMAGEN_HTTP_ROUTE_MODEL_CONFIG);
    CHECK_INT_EQ(r.version, -1);
}

static void
test_stats_for_all_models_wins_over_a_model_named_stats(void)
{
    imagen__http_route r = route("/v2/models/stats");
    CHECK_INT_EQ(r.kind, IMAGEN_HTTP_ROUTE_MODEL_STATS);
    CHECK(r.model == NULL);
    CHECK_INT_EQ(route("/v2/models/stats/stats").kind, IMAGEN_HTTP_ROUTE_MODEL_STATS);
}

static void
test_non_digit_version_is_not_found(void)
{
    CHECK_INT_EQ(route("/v2/models/m/versions/1a").kind, IMAGEN_HTTP_ROUTE_NOT_FOUND);
    CHECK_INT_EQ(route("/v2/models/m/versions/-1/ready").kind, IMAGEN_HTTP_ROUTE_NOT_FOUND);
    CHECK_INT_EQ(route("/v2/models/m/versions//ready").kind, IMAGEN_HTTP_ROUTE_NOT_FOUND);
}

static void
test_overflowing_version_is_bad_version(void)
{
    imagen__http_route r = route("/v2/models/m/versions/9223372036854775808/infer");
    CHECK_INT_EQ(r.kind, IMAGEN_HTTP_ROUTE_BAD_VERSION);
    CHECK_INT_EQ(route("/v2/models/m/versions/9223372036854775807").kind, IMAGEN_HTTP_ROUTE_MODEL_METADATA);
    CHECK_INT_EQ(route("/v2/models/m/versions/99999999999999999999/nope").kind, IMAGEN_HTTP_ROUTE_NOT_FOUND);
}

static void
test_unknown_and_unsupported_paths_are_not_found(void)
{
    const char *paths[] = {"",
                           "/",
                           "/v1",
                           "/v2/",
                           "/v2/models",
                           "/v2/models/",
                           "/v2/models/m/",
                           "/v2/models/m/generate",
                           "/v2/models/m/generate_stream",
                           "/v2/trace/setting",
                           "/v2/models/m/trace/setting",
                           "/v2/health",
                           "/v2/a/b/c/d/e/f/g/h/i/j",
                           "v2"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        CHECK_INT_EQ(route(paths[i]).kind, IMAGEN_HTTP_ROUTE_NOT_FOUND);
}

static void
test_repository_routes_with_and_without_repo_name(void)
{
    imagen__http_route r = route("/v2/repository/index");
    CHECK_INT_EQ(r.kind, IMAGEN_HTTP_ROUTE_REPO_INDEX);
    CHECK_INT_EQ(r.repo_len, 0);
    r = route("/v2/repository/models/m/load");
    CHECK_INT_EQ(r.kind, IMAGEN_HTTP_ROUTE_REPO_LOAD);
    CHECK_INT_EQ(r.repo_len, 0);
    CHECK_INT_EQ(r.model_len, 1);
    r = route("/v2/repository/r1/models/m/unload");
    CHECK_INT_EQ(r.kind, IMAGEN_HTTP_ROUTE_REPO_UNLOAD);
    CHECK_INT_EQ(r.repo_len, 2);
    r = route("/v2/repository/r1/index");
    CHECK_INT_EQ(r.kind, IMAGEN_HTTP_ROUTE_REPO_INDEX);
    CHECK_INT_EQ(route("/v2/repository/models/m/delete").kind, IMAGEN_HTTP_ROUTE_NOT_FOUND);
}

static void
test_shared_memory_routes(void)
{
    CHECK_INT_EQ(route("/v2/systemsharedmemory/status").kind, IMAGEN_HTTP_ROUTE_SHM_STATUS);
    CHECK_INT_EQ(route("/v2/cudasharedmemory/region/r/status").kind, IMAGEN_HTTP_ROUTE_SHM_STATUS);
    CHECK(route("/v2/cudasharedmemory/region/r/status").cuda_shm);
    CHECK_INT_EQ(route("/v2/systemsharedmemory/region/r/register").kind, IMAGEN_HTTP_ROUTE_SHM_REGISTER);
    CHECK_INT_EQ(route("/v2/systemsharedmemory/unregister").kind, IMAGEN_HTTP_ROUTE_SHM_UNREGISTER);
    CHECK_INT_EQ(route("/v2/systemsharedmemory/register").kind, IMAGEN_HTTP_ROUTE_NOT_FOUND);
}

static void
test_method_bits(void)
{
    CHECK_INT_EQ(imagen__http_method_bit("GET"), IMAGEN_HTTP_METHOD_GET);
    CHECK_INT_EQ(imagen__http_method_bit("POST"), IMAGEN_HTTP_METHOD_POST);
    CHECK_INT_EQ(imagen__http_method_bit("get"), 0);
    CHECK_INT_EQ(imagen__http_method_bit("HEAD"), 0);
}

static void
test_percent_decode(void)
{
    bool nul = true;
    char *s = imagen_percent_decode("a%2Fb%zz%4", 10, &nul);
    CHECK_STR_EQ(s, "a/b%zz%4");
    CHECK(!nul);
    free(s);
    s = imagen_percent_decode("x%00y", 5, &nul);
    CHECK(nul);
    free(s);
}

int
main(void)
{
    RUN(test_health_and_server_metadata);
    RUN(test_model_routes_capture_name_and_version);
    RUN(test_stats_for_all_models_wins_over_a_model_named_stats);
    RUN(test_non_digit_version_is_not_found);
    RUN(test_overflowing_version_is_bad_version);
    RUN(test_unknown_and_unsupported_paths_are_not_found);
    RUN(test_repository_routes_with_and_without_repo_name);
    RUN(test_shared_memory_routes);
    RUN(test_method_bits);
    RUN(test_percent_decode);
    TEST_MAIN_END();
}
