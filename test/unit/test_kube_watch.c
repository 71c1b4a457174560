/*
 * Unit tests for kube/watch.c and kube/store.c: the stream decoder fed split
 * at every byte, the event size cap, the keyed store, and the list-watch
 * loop against a scripted server (410 in both shapes, synthetic DELETED
 * events, fatal and bounded failures).  The decoder throughput test prints
 * events per second and asserts nothing about time.
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

#include <cmocka.h>

#include "kube/watch.h"
#include "test/unit/test_kube_server.h"

/* Events chosen to put hard bytes at chunk edges: escapes, braces inside
 * strings, multi-byte UTF-8, numbers and literals at the end of a value. */
static const char stream_text[] =
    "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\","
    "\"namespace\":\"n\",\"resourceVersion\":\"11\"},\"data\":{\"k\":"
    "\"line\\nbreak \\\"quoted\\\" {brace} [bracket] \\u00e9\"}}}\n"
    "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"b\","
    "\"resourceVersion\":\"12\"},\"spec\":{\"n\":-12.5e3,\"t\":true,"
    "\"f\":false,\"z\":null,\"l\":[1,[2,{}],\"\xc3\xa9\xe2\x82\xac\"]}}}\n"
    "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{"
    "\"resourceVersion\":\"13\"}}}"
    "{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"a\","
    "\"namespace\":\"n\",\"resourceVersion\":\"14\"}}}\r\n\n"
    "  {\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410}}\n";

#define STREAM_EVENTS 5

struct event_log {
    char *events[64];
    size_t count;
};

static int log_event(struct json_object *event, void *user)
{
    struct event_log *log = user;

    if (log->count < 64)
        log->events[log->count] = strdup(
            json_object_to_json_string_ext(event, JSON_C_TO_STRING_PLAIN));
    log->count++;
    return 0;
}

static void log_clear(struct event_log *log)
{
    for (size_t i = 0; i < log->count && i < 64; i++)
        free(log->events[i]);
    log->count = 0;
}

static void decode_whole(struct event_log *log)
{
    struct watch_decoder decoder;

    assert_int_equal(watch_decoder_init(&decoder, 4096, log_event, log), 0);
    assert_int_equal(
        watch_decoder_feed(&decoder, stream_text, strlen(stream_text)), 0);
    watch_decoder_release(&decoder);
}

static void assert_same_events(struct event_log *expected,
                               struct event_log *got, const char *how)
{
    if (got->count != expected->count)
        fail_msg("%s: %zu events instead of %zu", how, got->count,
                 expected->count);
    for (size_t i = 0; i < got->count; i++)
        if (strcmp(got->events[i], expected->events[i]) != 0)
            fail_msg("%s: event %zu differs: %s", how, i, got->events[i]);
}

static void decoder_split_every_byte(void **state)
{
    size_t len = strlen(stream_text);
    struct event_log expected = {0}, got = {0};
    struct watch_decoder decoder;
    char how[64];

    (void)state;
    decode_whole(&expected);
    assert_int_equal(expected.count, STREAM_EVENTS);

    /* Two pieces, split at every position. */
    for (size_t split = 0; split <= len; split++) {
        snprintf(how, sizeof(how), "split at byte %zu", split);
        assert_int_equal(watch_decoder_init(&decoder, 4096, log_event, &got),
                         0);
        assert_int_equal(watch_decoder_feed(&decoder, stream_text, split), 0);
        assert_int_equal(
            watch_decoder_feed(&decoder, stream_text + split, len - split), 0);
        assert_same_events(&expected, &got, how);
        watch_decoder_release(&decoder);
        log_clear(&got);
    }

    /* One byte at a time: every boundary at once. */
    assert_int_equal(watch_decoder_init(&decoder, 4096, log_event, &got), 0);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(watch_decoder_feed(&decoder, stream_text + i, 1), 0);
    assert_same_events(&expected, &got, "one byte at a time");
    watch_decoder_release(&decoder);
    log_clear(&got);
    log_clear(&expected);
}

static void decoder_three_way_splits(void **state)
{
    size_t len = strlen(stream_text);
    struct event_log expected = {0}, got = {0};
    struct watch_decoder decoder;
    char how[64];

    (void)state;
    decode_whole(&expected);
    /* Every pair of split points, so that one event spans three chunks. */
    for (size_t a = 0; a <= len; a += 3) {
        for (size_t b = a; b <= len; b += 5) {
            snprintf(how, sizeof(how), "split at %zu and %zu", a, b);
            watch_decoder_init(&decoder, 4096, log_event, &got);
            assert_int_equal(watch_decoder_feed(&decoder, stream_text, a), 0);
            assert_int_equal(
                watch_decoder_feed(&decoder, stream_text + a, b - a), 0);
            assert_int_equal(
                watch_decoder_feed(&decoder, stream_text + b, len - b), 0);
            assert_same_events(&expected, &got, how);
            watch_decoder_release(&decoder);
            log_clear(&got);
        }
    }
    log_clear(&expected);
}

static void decoder_event_cap(void **state)
{
    struct event_log got = {0};
    struct watch_decoder decoder;
    char big[600];
    int rc = 0;

    (void)state;
    memset(big, 0, sizeof(big));
    strcpy(big, "{\"type\":\"ADDED\",\"object\":{\"data\":\"");
    memset(big + strlen(big), 'x', 500);
    strcat(big, "\"}}\n");

    /* Fed in small pieces, the cap trips before the event completes. */
    watch_decoder_init(&decoder, 256, log_event, &got);
    for (size_t i = 0; i < strlen(big) && rc == 0; i += 7) {
        size_t n = strlen(big) - i < 7 ? strlen(big) - i : 7;

        rc = watch_decoder_feed(&decoder, big + i, n);
        if (rc == 0)
            assert_true(decoder.pending <= 256);
    }
    assert_int_equal(rc, -EMSGSIZE);
    assert_int_equal(got.count, 0);
    watch_decoder_release(&decoder);

    /* Fed whole, the completed event is still rejected. */
    watch_decoder_init(&decoder, 256, log_event, &got);
    assert_int_equal(watch_decoder_feed(&decoder, big, strlen(big)), -EMSGSIZE);
    assert_int_equal(got.count, 0);
    watch_decoder_release(&decoder);

    /* Events under the cap pass, however many arrive. */
    watch_decoder_init(&decoder, 256, log_event, &got);
    for (int i = 0; i < 100; i++)
        assert_int_equal(watch_decoder_feed(&decoder, "{\"type\":\"X\"}\n", 13),
                         0);
    assert_int_equal(got.count, 100);
    watch_decoder_release(&decoder);
    log_clear(&got);
}

static void decoder_invalid_json(void **state)
{
    struct event_log got = {0};
    struct watch_decoder decoder;

    (void)state;
    watch_decoder_init(&decoder, 256, log_event, &got);
    assert_int_equal(watch_decoder_feed(&decoder, "{\"a\":1}\n{\"b\"::", 15),
                     -EBADMSG);
    assert_int_equal(got.count, 1);
    watch_decoder_reset(&decoder);
    assert_int_equal(watch_decoder_feed(&decoder, "{\"c\":2}", 7), 0);
    assert_int_equal(got.count, 2);
    watch_decoder_release(&decoder);
    log_clear(&got);
}

static struct json_object *object(const char *namespace, const char *name,
                                  const char *rv)
{
    char text[256];

    snprintf(text, sizeof(text),
             "{\"metadata\":{%s%s%s\"name\":\"%s\",\"resourceVersion\":"
             "\"%s\"}}",
             namespace ? "\"namespace\":\"" : "", namespace ? namespace : "",
             namespace ? "\"," : "", name, rv);
    return json_tokener_parse(text);
}

static void store_get_returns_copy(void **state)
{
    struct store store;
    struct json_object *obj, *got, *metadata;

    (void)state;
    assert_int_equal(store_init(&store), 0);
    obj =
        json_tokener_parse("{\"metadata\":{\"name\":\"a\",\"namespace\":"
                           "\"ns\",\"managedFields\":[{\"manager\":\"x\"}]}}");
    assert_int_equal(store_put(&store, obj), 0);
    json_object_put(obj);

    got = store_get(&store, "ns/a");
    assert_non_null(got);
    metadata = json_object_object_get(got, "metadata");
    assert_false(json_object_object_get_ex(metadata, "managedFields", NULL));
    json_object_object_add(metadata, "name", json_object_new_string("b"));
    json_object_put(got);

    got = store_get(&store, "ns/a");
    assert_string_equal(json_object_get_string(json_object_object_get(
                            json_object_object_get(got, "metadata"), "name")),
                        "a");
    json_object_put(got);
    store_release(&store);
}

static void store_put_get_remove(void **state)
{
    struct store store;
    struct json_object *obj, *got;
    char key[STORE_KEY_SIZE];

    (void)state;
    assert_int_equal(store_init(&store), 0);
    for (int i = 0; i < 1000; i++) {
        char name[16];

        snprintf(name, sizeof(name), "obj-%d", i);
        obj = object(i % 2 ? "ns" : NULL, name, "1");
        assert_int_equal(store_put(&store, obj), 0);
        json_object_put(obj);
    }
    assert_int_equal(store_count(&store), 1000);
    assert_true(store.bucket_count >= 1000);

    obj = object("ns", "obj-1", "2");
    assert_int_equal(store_key(obj, key, sizeof(key)), 0);
    assert_string_equal(key, "ns/obj-1");
    assert_int_equal(store_put(&store, obj), 0);
    json_object_put(obj);
    assert_int_equal(store_count(&store), 1000);
    got = store_get(&store, "ns/obj-1");
    assert_string_equal(
        json_object_get_string(json_object_object_get(
            json_object_object_get(got, "metadata"), "resourceVersion")),
        "2");
    json_object_put(got);

    assert_non_null(got = store_get(&store, "obj-0"));
    json_object_put(got);
    assert_null(store_get(&store, "ns/obj-0"));
    got = store_remove(&store, "obj-0");
    assert_non_null(got);
    json_object_put(got);
    assert_null(store_remove(&store, "obj-0"));
    assert_int_equal(store_count(&store), 999);

    obj = json_tokener_parse("{\"metadata\":{}}");
    assert_int_equal(store_put(&store, obj), -EINVAL);
    json_object_put(obj);
    store_release(&store);
    store_release(&store);
}

/* --- the list-watch loop against the scripted server ------------------ */

enum expiry_shape {
    EXPIRE_BY_EVENT,
    EXPIRE_BY_STATUS,
};

struct scenario {
    enum expiry_shape shape;
    atomic_bool stop;
    int lists;
    int watches;
    char watch_urls[4][2048];
    char events[64][640]; /* "ADDED n/a 11" */
    int event_count;
    unsigned long synced;
};

static const char *const first_watch_chunks[] = {
    "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"d\",\"name",
    "space\":\"n\",\"resourceVersion\":\"11\"}}}\n{\"type\":\"MODIF",
    "IED\",\"object\":{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\","
    "\"resourceVersion\":\"12\"}}}\n{\"type\":\"BOOKMARK\",\"object\":{"
    "\"metadata\":{\"resourceVersion\":\"13\"}}}\n",
    "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":"
    "\"v1\",\"status\":\"Failure\",\"reason\":\"Expired\",\"code\":410}}\n",
};

static const char *const second_watch_chunks[] = {
    "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"f\","
    "\"namespace\":\"n\",\"resourceVersion\":\"21\"}}}\n",
};

static const char first_list[] =
    "{\"kind\":\"ConfigMapList\",\"apiVersion\":\"v1\",\"metadata\":{"
    "\"resourceVersion\":\"10\"},\"items\":["
    "{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\",\"resourceVersion\":"
    "\"1\"}},{\"metadata\":{\"name\":\"b\",\"namespace\":\"n\","
    "\"resourceVersion\":\"2\"}},{\"metadata\":{\"name\":\"c\","
    "\"namespace\":\"n\",\"resourceVersion\":\"3\"}}]}";

/* After the 410: b and c are gone, e is new, a and d are unchanged. */
static const char second_list[] =
    "{\"kind\":\"ConfigMapList\",\"apiVersion\":\"v1\",\"metadata\":{"
    "\"resourceVersion\":\"20\"},\"items\":["
    "{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\",\"resourceVersion\":"
    "\"12\"}},{\"metadata\":{\"name\":\"d\",\"namespace\":\"n\","
    "\"resourceVersion\":\"11\"}},{\"metadata\":{\"name\":\"e\","
    "\"namespace\":\"n\",\"resourceVersion\":\"19\"}}]}";

static void serve_scenario(struct fake_server *server,
                           const struct fake_request *req,
                           struct fake_response *resp)
{
    struct scenario *s = server->user;

    if (!strstr(req->url, "watch=1")) {
        resp->body = s->lists++ == 0 ? first_list : second_list;
        return;
    }
    snprintf(s->watch_urls[s->watches & 3], sizeof(s->watch_urls[0]), "%s",
             req->url);
    if (s->watches++ == 0) {
        resp->chunks = first_watch_chunks;
        resp->chunk_count = s->shape == EXPIRE_BY_EVENT ? 4 : 3;
        return;
    }
    if (s->shape == EXPIRE_BY_STATUS && s->watches == 2) {
        resp->status = 410;
        resp->body = "{\"kind\":\"Status\",\"reason\":\"Expired\","
                     "\"message\":\"too old resource version\",\"code\":410}";
        return;
    }
    resp->chunks = second_watch_chunks;
    resp->chunk_count = 1;
    resp->stall = true;
}

static int record_event(enum watch_event_type type, struct json_object *obj,
                        void *user)
{
    struct scenario *s = user;
    char key[STORE_KEY_SIZE];
    struct json_object *meta, *rv;

    store_key(obj, key, sizeof(key));
    json_object_object_get_ex(obj, "metadata", &meta);
    json_object_object_get_ex(meta, "resourceVersion", &rv);
    snprintf(s->events[s->event_count++ & 63], sizeof(s->events[0]), "%s %s %s",
             watch_event_name(type), key, json_object_get_string(rv));
    if (strcmp(key, "n/f") == 0)
        atomic_store(&s->stop, true);
    return 0;
}

static void record_synced(unsigned long lists, void *user)
{
    struct scenario *s = user;

    s->synced = lists;
}

static int run_scenario(struct scenario *s, struct fake_server *server,
                        struct watch *w, struct kube_client **client)
{
    struct watch_options opts = {
        .path = "/api/v1/namespaces/n/configmaps",
        .timeout_s = 60,
        .idle_timeout_s = 10,
        .stop = &s->stop,
        .on_event = record_event,
        .on_synced = record_synced,
        .user = s,
    };
    struct kubeconfig cfg = {0};
    char err[KUBECONFIG_ERROR_SIZE];
    int rc;

    assert_int_equal(fake_server_start(server), 0);
    server->handler = serve_scenario;
    server->user = s;
    cfg.server = strdup(server->url);
    assert_int_equal(kube_client_new(&cfg, NULL, client, err, sizeof(err)), 0);
    assert_int_equal(watch_init(w, *client, &opts), 0);
    rc = watch_run(w);
    fake_server_stop(server);
    return rc;
}

static bool has_event(struct scenario *s, int from, int to, const char *text)
{
    for (int i = from; i < to; i++)
        if (strcmp(s->events[i], text) == 0)
            return true;
    return false;
}

static void check_scenario(struct scenario *s, struct watch *w)
{
    const char *expected_head[] = {
        "ADDED n/a 1",  "ADDED n/b 2",     "ADDED n/c 3",
        "ADDED n/d 11", "MODIFIED n/a 12", "ADDED n/e 19",
    };
    struct json_object *obj;

    assert_int_equal(s->event_count, 9);
    for (int i = 0; i < 6; i++)
        assert_string_equal(s->events[i], expected_head[i]);
    /* The vanished objects, in any order, with their last known state. */
    assert_true(has_event(s, 6, 8, "DELETED n/b 2"));
    assert_true(has_event(s, 6, 8, "DELETED n/c 3"));
    assert_string_equal(s->events[8], "ADDED n/f 21");

    assert_int_equal(s->synced, 2);
    assert_int_equal(w->lists, 2);
    assert_int_equal(store_count(&w->store), 4);
    assert_null(store_get(&w->store, "n/b"));
    obj = store_get(&w->store, "n/a");
    assert_non_null(obj);
    json_object_put(obj);
    assert_string_equal(w->resource_version, "21");
    assert_non_null(strstr(s->watch_urls[0], "?watch=1&resourceVersion=10&"
                                             "allowWatchBookmarks=true&"
                                             "timeoutSeconds=60"));
}

static void watch_relists_on_error_event(void **state)
{
    struct scenario s = {.shape = EXPIRE_BY_EVENT};
    struct fake_server server;
    struct kube_client *client;
    struct watch w;

    (void)state;
    assert_int_equal(run_scenario(&s, &server, &w, &client), 0);
    check_scenario(&s, &w);
    assert_int_equal(s.watches, 2);
    assert_non_null(strstr(s.watch_urls[1], "resourceVersion=20&"));
    watch_release(&w);
    kube_client_free(client);
}

static void watch_relists_on_http_gone(void **state)
{
    struct scenario s = {.shape = EXPIRE_BY_STATUS};
    struct fake_server server;
    struct kube_client *client;
    struct watch w;

    (void)state;
    assert_int_equal(run_scenario(&s, &server, &w, &client), 0);
    check_scenario(&s, &w);
    assert_int_equal(s.watches, 3);
    /* The stream ended after the bookmark, so the next watch resumed at 13. */
    assert_non_null(strstr(s.watch_urls[1], "resourceVersion=13&"));
    assert_non_null(strstr(s.watch_urls[2], "resourceVersion=20&"));
    watch_release(&w);
    kube_client_free(client);
}

static void serve_forbidden(struct fake_server *server,
                            const struct fake_request *req,
                            struct fake_response *resp)
{
    (void)server;
    (void)req;
    resp->status = 403;
    resp->body = "{\"kind\":\"Status\",\"reason\":\"Forbidden\",\"code\":403}";
}

static void serve_unavailable(struct fake_server *server,
                              const struct fake_request *req,
                              struct fake_response *resp)
{
    (void)server;
    (void)req;
    resp->status = 503;
    resp->body = "{\"kind\":\"Status\",\"reason\":\"ServiceUnavailable\"}";
}

static int run_failing(void (*handler)(struct fake_server *,
                                       const struct fake_request *,
                                       struct fake_response *),
                       int max_failures, int *requests)
{
    struct watch_options opts = {
        .path = "/api/v1/configmaps",
        .max_failures = max_failures,
    };
    struct fake_server server;
    struct kubeconfig cfg = {0};
    struct kube_client *client;
    char err[KUBECONFIG_ERROR_SIZE];
    struct watch w;
    int rc;

    assert_int_equal(fake_server_start(&server), 0);
    server.handler = handler;
    cfg.server = strdup(server.url);
    assert_int_equal(kube_client_new(&cfg, NULL, &client, err, sizeof(err)), 0);
    assert_int_equal(watch_init(&w, client, &opts), 0);
    rc = watch_run(&w);
    *requests = atomic_load(&server.requests);
    watch_release(&w);
    kube_client_free(client);
    fake_server_stop(&server);
    return rc;
}

static void watch_forbidden_is_fatal(void **state)
{
    int requests;

    (void)state;
    assert_int_equal(run_failing(serve_forbidden, 0, &requests), -EPERM);
    assert_int_equal(requests, 1);
}

static void watch_failures_bounded(void **state)
{
    int requests;

    (void)state;
    assert_int_equal(run_failing(serve_unavailable, 2, &requests), -EIO);
    assert_int_equal(requests, 2);
}

/* --- throughput ---------------------------------------------------------- */

#define BENCH_EVENTS 10000

static int apply_to_store(struct json_object *event, void *user)
{
    struct json_object *obj;

    json_object_object_get_ex(event, "object", &obj);
    return store_put(user, obj);
}

static char *build_bench_stream(size_t *len)
{
    size_t cap = (size_t)BENCH_EVENTS * 1024, used = 0;
    char *text = malloc(cap);

    for (int i = 0; i < BENCH_EVENTS; i++)
        used += (size_t)snprintf(
            text + used, cap - used,
            "{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"v1\",\"kind\":"
            "\"ConfigMap\",\"metadata\":{\"name\":\"bench-%d\",\"namespace\":"
            "\"memstress\",\"uid\":\"6f1c1b9e-0000-4000-8000-%012d\","
            "\"resourceVersion\":\"%d\",\"labels\":{\"app\":\"memstress\","
            "\"tier\":\"bench\"},\"annotations\":{\"example.com/note\":"
            "\"a value with / and \\\"quotes\\\"\"}},\"data\":{\"size\":"
            "\"%d\",\"payload\":\"0123456789abcdef0123456789abcdef"
            "0123456789abcdef0123456789abcdef\"}}}\n",
            i, i, 1000 + i, i * 7);
    *len = used;
    return text;
}

static void decoder_throughput_10000_events(void **state)
{
    size_t len, chunk = 16384;
    char *text = build_bench_stream(&len);
    struct watch_decoder decoder;
    struct store store;
    struct timespec start, end;
    double seconds;

    (void)state;
    store_init(&store);
    watch_decoder_init(&decoder, 1 << 20, apply_to_store, &store);
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (size_t i = 0; i < len; i += chunk)
        assert_int_equal(watch_decoder_feed(&decoder, text + i,
                                            len - i < chunk ? len - i : chunk),
                         0);
    clock_gettime(CLOCK_MONOTONIC, &end);
    seconds = (double)(end.tv_sec - start.tv_sec) +
              (double)(end.tv_nsec - start.tv_nsec) / 1e9;
    assert_int_equal(store_count(&store), BENCH_EVENTS);
    print_message("watch decoder: %d events (%zu bytes, 16 KiB chunks) "
                  "decoded and stored in %.3f s: %.0f events/s\n",
                  BENCH_EVENTS, len, seconds, BENCH_EVENTS / seconds);
    watch_decoder_release(&decoder);
    store_release(&store);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decoder_split_every_byte),
        cmocka_unit_test(decoder_three_way_splits),
        cmocka_unit_test(decoder_event_cap),
        cmocka_unit_test(decoder_invalid_json),
        cmocka_unit_test(store_put_get_remove),
        cmocka_unit_test(store_get_returns_copy),
        cmocka_unit_test(watch_relists_on_error_event),
        cmocka_unit_test(watch_relists_on_http_gone),
        cmocka_unit_test(watch_forbidden_is_fatal),
        cmocka_unit_test(watch_failures_bounded),
        cmocka_unit_test(decoder_throughput_10000_events),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
