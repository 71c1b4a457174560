/*
 * Unit tests for kube/kube.c and kube/ratelimit.c against a scripted HTTP
 * server on 127.0.0.1: verbs and their request shapes, Status errors, 401
 * and 429 retries, paged lists, deadlines and the rate limit.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kube/kube.h"
#include "kube/ratelimit.h"
#include "test/unit/test_kube_server.h"

static char err[KUBECONFIG_ERROR_SIZE];

struct fixture {
    struct fake_server server;
    struct kube_client *client;
    int step; /* handler state, advanced per request */
    char token_path[64];
};

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct kube_client *new_client(const char *server, const char *token,
                                      const char *token_file,
                                      const struct kube_client_options *opts)
{
    struct kubeconfig cfg = {0};
    struct kube_client *client;

    cfg.server = strdup(server);
    cfg.namespace = strdup("default");
    cfg.token = token ? strdup(token) : NULL;
    cfg.token_file = token_file ? strdup(token_file) : NULL;
    if (kube_client_new(&cfg, opts, &client, err, sizeof(err)) != 0)
        fail_msg("kube_client_new failed: %s", err);
    return client;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (fake_server_start(&f->server) != 0)
        return -1;
    f->server.user = f;
    f->client = new_client(f->server.url, "test-token", NULL, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    kube_client_free(f->client);
    fake_server_stop(&f->server);
    if (f->token_path[0])
        unlink(f->token_path);
    free(f);
    return 0;
}

static const char *string_at(struct json_object *obj, const char *path0,
                             const char *path1)
{
    struct json_object *value;

    if (!json_object_object_get_ex(obj, path0, &value))
        return NULL;
    if (path1 && !json_object_object_get_ex(value, path1, &value))
        return NULL;
    return json_object_get_string(value);
}

static void serve_configmap(struct fake_server *server,
                            const struct fake_request *req,
                            struct fake_response *resp)
{
    (void)server;
    (void)req;
    resp->body = "{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"a\"}}";
}

static void get_parses_body(void **state)
{
    struct fixture *f = *state;
    struct kube_response resp;

    f->server.handler = serve_configmap;
    assert_int_equal(
        kube_get(f->client, "/api/v1/namespaces/x/configmaps/a", &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_string_equal(string_at(resp.body, "metadata", "name"), "a");
    assert_null(resp.reason);
    assert_string_equal(f->server.last.method, "GET");
    assert_string_equal(f->server.last.url,
                        "/api/v1/namespaces/x/configmaps/a");
    assert_string_equal(f->server.last.authorization, "Bearer test-token");
    kube_response_release(&resp);
}

struct status_case {
    int code;
    const char *reason;
    int rc;
};

static const struct status_case status_cases[] = {
    {404, "NotFound", -ENOENT}, {409, "AlreadyExists", -EEXIST},
    {410, "Expired", -ESTALE},  {422, "Invalid", -EINVAL},
    {403, "Forbidden", -EPERM}, {500, "InternalError", -EIO},
};

static void serve_status(struct fake_server *server,
                         const struct fake_request *req,
                         struct fake_response *resp)
{
    struct fixture *f = server->user;
    const struct status_case *c = &status_cases[f->step];
    static char body[256];

    (void)req;
    snprintf(body, sizeof(body),
             "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":"
             "\"Failure\",\"message\":\"configmaps \\\"a\\\" %s\","
             "\"reason\":\"%s\",\"code\":%d}",
             c->reason, c->reason, c->code);
    resp->status = c->code;
    resp->body = body;
}

static void error_status_fields(void **state)
{
    struct fixture *f = *state;
    struct kube_response resp;
    char message[64];

    f->server.handler = serve_status;
    for (f->step = 0;
         f->step < (int)(sizeof(status_cases) / sizeof(status_cases[0]));
         f->step++) {
        const struct status_case *c = &status_cases[f->step];

        assert_int_equal(kube_get(f->client, "/api/v1/x", &resp), c->rc);
        assert_int_equal(resp.status, c->code);
        assert_string_equal(resp.reason, c->reason);
        snprintf(message, sizeof(message), "configmaps \"a\" %s", c->reason);
        assert_string_equal(resp.message, message);
        assert_int_equal(kube_errno_for_status(c->code), c->rc);
        kube_response_release(&resp);
    }
}

static void serve_throttled_once(struct fake_server *server,
                                 const struct fake_request *req,
                                 struct fake_response *resp)
{
    (void)req;
    if (atomic_load(&server->requests) == 1) {
        resp->status = 429;
        resp->retry_after = "1";
        resp->body = "{\"kind\":\"Status\",\"reason\":\"TooManyRequests\"}";
        return;
    }
    resp->body = "{}";
}

static void throttled_honours_retry_after(void **state)
{
    struct fixture *f = *state;
    struct kube_response resp;
    double started = now_seconds();

    f->server.handler = serve_throttled_once;
    assert_int_equal(kube_get(f->client, "/api/v1/x", &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_int_equal(atomic_load(&f->server.requests), 2);
    assert_true(now_seconds() - started >= 0.9);
    kube_response_release(&resp);
}

static void serve_always_throttled(struct fake_server *server,
                                   const struct fake_request *req,
                                   struct fake_response *resp)
{
    (void)server;
    (void)req;
    resp->status = 429;
    resp->retry_after = "3600";
    resp->body = "{\"kind\":\"Status\",\"reason\":\"TooManyRequests\","
                 "\"message\":\"slow down\"}";
}

static void throttled_retries_bounded(void **state)
{
    struct fixture *f = *state;
    struct kube_client_options opts;
    struct kube_client *client;
    struct kube_response resp;
    double started = now_seconds();

    kube_client_options_init(&opts);
    opts.max_429_retries = 2;
    opts.retry_after_max_s = 1;
    client = new_client(f->server.url, "t", NULL, &opts);
    f->server.handler = serve_always_throttled;
    assert_int_equal(kube_get(client, "/api/v1/x", &resp), -EAGAIN);
    assert_int_equal(resp.status, 429);
    assert_string_equal(resp.reason, "TooManyRequests");
    assert_int_equal(atomic_load(&f->server.requests), 3);
    /* Retry-After 3600 was capped at retry_after_max_s for each wait. */
    assert_true(now_seconds() - started < 5);
    kube_response_release(&resp);
    kube_client_free(client);
}

static void serve_token_new_only(struct fake_server *server,
                                 const struct fake_request *req,
                                 struct fake_response *resp)
{
    (void)server;
    if (strcmp(req->authorization, "Bearer new") == 0) {
        resp->body = "{}";
        return;
    }
    resp->status = 401;
    resp->body = "{\"kind\":\"Status\",\"reason\":\"Unauthorized\","
                 "\"message\":\"Unauthorized\",\"code\":401}";
}

static void write_token(const char *path, const char *token)
{
    FILE *file = fopen(path, "w");

    assert_non_null(file);
    fprintf(file, "%s\n", token);
    fclose(file);
}

static void unauthorized_rereads_token(void **state)
{
    struct fixture *f = *state;
    struct kube_client *client;
    struct kube_response resp;

    snprintf(f->token_path, sizeof(f->token_path), "/tmp/test-kube-token-%d",
             (int)getpid());
    write_token(f->token_path, "old");
    client = new_client(f->server.url, NULL, f->token_path, NULL);
    f->server.handler = serve_token_new_only;

    /* 401, re-read gives the same token, one retry, then the error. */
    assert_int_equal(kube_get(client, "/api/v1/x", &resp), -EACCES);
    assert_int_equal(resp.status, 401);
    assert_string_equal(resp.reason, "Unauthorized");
    assert_int_equal(atomic_load(&f->server.requests), 2);
    kube_response_release(&resp);

    /* The swapped token is used after the 401 on the cached one. */
    write_token(f->token_path, "new");
    assert_int_equal(kube_get(client, "/api/v1/x", &resp), 0);
    assert_int_equal(atomic_load(&f->server.requests), 4);
    kube_response_release(&resp);
    kube_client_free(client);
}

static bool url_has(const struct fake_request *req, const char *part)
{
    return strstr(req->url, part) != NULL;
}

/* Serves two pages; with step 1 the first continue request gets 410 once. */
static void serve_pages(struct fake_server *server,
                        const struct fake_request *req,
                        struct fake_response *resp)
{
    struct fixture *f = server->user;

    if (!url_has(req, "continue=")) {
        resp->body = "{\"kind\":\"ConfigMapList\",\"apiVersion\":\"v1\","
                     "\"metadata\":{\"resourceVersion\":\"41\","
                     "\"continue\":\"c1\"},\"items\":[{\"metadata\":{"
                     "\"name\":\"a\"}},{\"metadata\":{\"name\":\"b\"}}]}";
        return;
    }
    if (f->step == 1) {
        f->step = 2;
        resp->status = 410;
        resp->body = "{\"kind\":\"Status\",\"reason\":\"Expired\","
                     "\"message\":\"continue token too old\",\"code\":410}";
        return;
    }
    resp->body = "{\"kind\":\"ConfigMapList\",\"apiVersion\":\"v1\","
                 "\"metadata\":{\"resourceVersion\":\"42\"},\"items\":[{"
                 "\"metadata\":{\"name\":\"c\"}}]}";
}

static void check_list(struct kube_response *resp)
{
    struct json_object *items;

    assert_string_equal(string_at(resp->body, "kind", NULL), "ConfigMapList");
    assert_string_equal(string_at(resp->body, "metadata", "resourceVersion"),
                        "42");
    assert_true(json_object_object_get_ex(resp->body, "items", &items));
    assert_int_equal(json_object_array_length(items), 3);
    assert_string_equal(
        string_at(json_object_array_get_idx(items, 2), "metadata", "name"),
        "c");
}

static void list_follows_continue(void **state)
{
    struct fixture *f = *state;
    struct kube_list_options opts = {.limit = 2, .label_selector = "app=x"};
    struct kube_response resp;

    f->server.handler = serve_pages;
    assert_int_equal(kube_list(f->client, "/api/v1/configmaps", &opts, &resp),
                     0);
    check_list(&resp);
    assert_int_equal(atomic_load(&f->server.requests), 2);
    assert_string_equal(f->server.last.url, "/api/v1/configmaps?limit=2&"
                                            "labelSelector=app=x&continue=c1");
    kube_response_release(&resp);
}

static void list_restarts_on_expired_continue(void **state)
{
    struct fixture *f = *state;
    struct kube_response resp;

    f->server.handler = serve_pages;
    f->step = 1;
    assert_int_equal(kube_list(f->client, "/api/v1/configmaps", NULL, &resp),
                     0);
    check_list(&resp);
    assert_int_equal(atomic_load(&f->server.requests), 4);
    kube_response_release(&resp);
}

static void serve_echo(struct fake_server *server,
                       const struct fake_request *req,
                       struct fake_response *resp)
{
    (void)server;
    (void)req;
    resp->body = "{}";
}

static void apply_sends_field_manager(void **state)
{
    struct fixture *f = *state;
    struct kube_response resp;
    struct json_object *obj = json_tokener_parse(
        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{"
        "\"name\":\"a\",\"annotations\":{\"example.com/url\":\"http://x/"
        "y\"}}}");

    f->server.handler = serve_echo;
    assert_int_equal(kube_apply(f->client, "/api/v1/namespaces/n/configmaps/a",
                                obj, "memstress test", true, &resp),
                     0);
    assert_string_equal(f->server.last.method, "PATCH");
    assert_string_equal(f->server.last.content_type,
                        "application/apply-patch+yaml");
    assert_string_equal(f->server.last.url,
                        "/api/v1/namespaces/n/configmaps/a?fieldManager="
                        "memstress test&force=true");
    assert_non_null(strstr(f->server.last.body, "\"example.com/url\""));
    assert_non_null(strstr(f->server.last.body, "http://x/y"));
    assert_null(strstr(f->server.last.body, "\\/"));
    kube_response_release(&resp);
    json_object_put(obj);
}

static void verbs_send_their_shapes(void **state)
{
    struct fixture *f = *state;
    struct kube_response resp;
    struct json_object *merge = json_tokener_parse("{\"data\":{\"k\":\"v\"}}");
    struct json_object *ops = json_tokener_parse(
        "[{\"op\":\"add\",\"path\":\"/data/k\",\"value\":\"v\"}]");

    f->server.handler = serve_echo;
    assert_int_equal(
        kube_create(f->client, "/api/v1/namespaces/n/configmaps", merge, &resp),
        0);
    assert_string_equal(f->server.last.method, "POST");
    assert_string_equal(f->server.last.content_type, "application/json");
    assert_string_equal(f->server.last.body, "{\"data\":{\"k\":\"v\"}}");
    kube_response_release(&resp);

    assert_int_equal(kube_update(f->client, "/p", merge, &resp), 0);
    assert_string_equal(f->server.last.method, "PUT");
    kube_response_release(&resp);

    assert_int_equal(
        kube_patch(f->client, "/p", KUBE_PATCH_MERGE, merge, &resp), 0);
    assert_string_equal(f->server.last.method, "PATCH");
    assert_string_equal(f->server.last.content_type,
                        "application/merge-patch+json");
    kube_response_release(&resp);

    assert_int_equal(kube_patch(f->client, "/p", KUBE_PATCH_JSON, ops, &resp),
                     0);
    assert_string_equal(f->server.last.content_type,
                        "application/json-patch+json");
    assert_non_null(strstr(f->server.last.body, "\"/data/k\""));
    kube_response_release(&resp);

    assert_int_equal(kube_delete(f->client, "/p", "Foreground", &resp), 0);
    assert_string_equal(f->server.last.method, "DELETE");
    assert_non_null(
        strstr(f->server.last.body, "\"propagationPolicy\":\"Foreground\""));
    kube_response_release(&resp);

    assert_int_equal(kube_delete(f->client, "/p", NULL, &resp), 0);
    assert_string_equal(f->server.last.body, "");
    kube_response_release(&resp);
    json_object_put(merge);
    json_object_put(ops);
}

static void path_building(void **state)
{
    struct {
        const char *group, *version, *namespace, *resource, *name, *sub;
        const char *expected;
    } cases[] = {
        {NULL, "v1", "ns", "configmaps", "a", NULL,
         "/api/v1/namespaces/ns/configmaps/a"},
        {"", "v1", NULL, "namespaces", NULL, NULL, "/api/v1/namespaces"},
        {"test.memstress.dev", "v1", "ns", "widgets", "w", "status",
         "/apis/test.memstress.dev/v1/namespaces/ns/widgets/w/status"},
        {"apiextensions.k8s.io", "v1", NULL, "customresourcedefinitions", NULL,
         NULL, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"},
    };
    char *path = strdup("/p");

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *built =
            kube_path(cases[i].group, cases[i].version, cases[i].namespace,
                      cases[i].resource, cases[i].name, cases[i].sub);

        assert_string_equal(built, cases[i].expected);
        free(built);
    }
    assert_int_equal(kube_append_query(&path, "labelSelector", "a in (b,c)"),
                     0);
    assert_int_equal(kube_append_query(&path, "limit", "5"), 0);
    assert_string_equal(path, "/p?labelSelector=a%20in%20%28b%2Cc%29&limit=5");
    free(path);
}

/* Returns a loopback port that had no listener a moment ago. */
static int closed_port(void)
{
    struct sockaddr_in addr = {
        .sin_family = AF_INET,
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    getsockname(fd, (struct sockaddr *)&addr, &len);
    close(fd);
    return ntohs(addr.sin_port);
}

static void refused_port_fails_fast(void **state)
{
    struct kube_client_options opts;
    struct kube_client *client;
    struct kube_response resp;
    char url[64];
    double started = now_seconds();

    (void)state;
    kube_client_options_init(&opts);
    opts.connect_timeout_ms = 2000;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    client = new_client(url, "t", NULL, &opts);
    assert_int_equal(kube_get(client, "/api/v1/namespaces", &resp),
                     -ECONNREFUSED);
    assert_int_equal(resp.status, 0);
    assert_non_null(strstr(resp.message, url));
    assert_non_null(strstr(resp.message, "failed: "));
    assert_true(now_seconds() - started < 3);
    kube_response_release(&resp);
    kube_client_free(client);
}

static const char *const stall_chunks[] = {"{\"type\":\"BOOKMARK\"}\n"};

static void serve_stall(struct fake_server *server,
                        const struct fake_request *req,
                        struct fake_response *resp)
{
    (void)server;
    (void)req;
    resp->chunks = stall_chunks;
    resp->chunk_count = 1;
    resp->stall = true;
}

struct collected {
    size_t bytes;
    atomic_bool *stop_after_data;
};

static int collect(const char *data, size_t len, void *user)
{
    struct collected *c = user;

    (void)data;
    c->bytes += len;
    if (c->stop_after_data)
        atomic_store(c->stop_after_data, true);
    return 0;
}

static void stream_idle_deadline(void **state)
{
    struct fixture *f = *state;
    struct collected got = {0};
    struct kube_stream_options opts = {
        .on_data = collect,
        .user = &got,
        .idle_timeout_s = 1,
    };
    struct kube_response resp;
    double started = now_seconds(), elapsed;

    f->server.handler = serve_stall;
    assert_int_equal(kube_stream(f->client, "/watch", &opts, &resp),
                     -ETIMEDOUT);
    elapsed = now_seconds() - started;
    assert_int_equal(got.bytes, strlen(stall_chunks[0]));
    assert_true(elapsed >= 0.9);
    if (elapsed >= 4)
        fail_msg("idle stream failed after %.1f s", elapsed);
    assert_int_equal(resp.status, 200);
    assert_non_null(resp.message);
    kube_response_release(&resp);
}

static void stream_stop_flag(void **state)
{
    struct fixture *f = *state;
    atomic_bool stop = false;
    struct collected got = {.stop_after_data = &stop};
    struct kube_stream_options opts = {
        .on_data = collect,
        .user = &got,
        .stop = &stop,
        .idle_timeout_s = 30,
    };
    struct kube_response resp;
    double started = now_seconds();

    f->server.handler = serve_stall;
    assert_int_equal(kube_stream(f->client, "/watch", &opts, &resp),
                     -ECANCELED);
    assert_true(now_seconds() - started < 3);
    assert_non_null(strstr(resp.message, "stopped"));
    kube_response_release(&resp);
}

static void ratelimit_reserves_in_order(void **state)
{
    struct ratelimit rl;
    double wait = 0;

    (void)state;
    ratelimit_init(&rl, 50, 2);
    assert_true(ratelimit_reserve(&rl) == 0);
    assert_true(ratelimit_reserve(&rl) == 0);
    for (int i = 0; i < 10; i++)
        wait = ratelimit_reserve(&rl);
    /* Ten tokens past the burst at 50/s: the last is due in 0.2 s. */
    assert_true(wait > 0.18);
    assert_true(wait <= 0.2001);
    ratelimit_release(&rl);

    ratelimit_init(&rl, 0, 1);
    for (int i = 0; i < 100; i++)
        assert_true(ratelimit_reserve(&rl) == 0);
    ratelimit_release(&rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(get_parses_body, setup, teardown),
        cmocka_unit_test_setup_teardown(error_status_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(throttled_honours_retry_after, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(throttled_retries_bounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(unauthorized_rereads_token, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(list_follows_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(list_restarts_on_expired_continue,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(apply_sends_field_manager, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(verbs_send_their_shapes, setup,
                                        teardown),
        cmocka_unit_test(path_building),
        cmocka_unit_test(refused_port_fails_fast),
        cmocka_unit_test_setup_teardown(stream_idle_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_stop_flag, setup, teardown),
        cmocka_unit_test(ratelimit_reserves_in_order),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
