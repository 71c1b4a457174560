/*
 * Request handling.  libmicrohttpd calls the access handler several times
 * per request: once with the headers, then once per piece of body, then a
 * final time with no data, which is when the route runs.  The body is kept
 * in a per-request buffer capped at API_MAX_BODY_BYTES; a request that
 * announces a larger Content-Length gets 413 before its body is read.
 */
#include "worker/api.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "kube/klog.h"
#include "worker/trim.h"

#define MIB ((double)(1 << 20))

struct request {
    char *body;
    size_t len;
    bool too_large;
};

typedef enum MHD_Result (*route_fn)(struct api *api,
                                    struct MHD_Connection *conn,
                                    struct request *req);

struct route {
    const char *path;
    const char *method;
    route_fn handler;
    const char *description;
};

static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status,
                             const char *content_type, const char *body,
                             size_t len, const char *allow)
{
    struct MHD_Response *response;
    enum MHD_Result ret;

    response = MHD_create_response_from_buffer(len, (void *)body,
                                               MHD_RESPMEM_MUST_COPY);
    if (!response)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                            content_type);
    if (allow)
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow);
    ret = MHD_queue_response(conn, status, response);
    MHD_destroy_response(response);
    return ret;
}

/* Sends obj as JSON and drops the caller's reference to it. */
static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status,
                                 struct json_object *obj, const char *allow)
{
    size_t len;
    const char *text = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    char *body = malloc(len + 2);
    enum MHD_Result ret = MHD_NO;

    if (body) {
        memcpy(body, text, len);
        body[len] = '\n';
        ret = queue(conn, status, "application/json", body, len + 1, allow);
        free(body);
    }
    json_object_put(obj);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status,
                                  const char *field, const char *allow,
                                  const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status,
                                  const char *field, const char *allow,
                                  const char *fmt, ...)
{
    struct json_object *obj = json_object_new_object();
    char message[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    json_object_object_add(obj, "error", json_object_new_string(message));
    if (field && *field)
        json_object_object_add(obj, "field", json_object_new_string(field));
    json_object_object_add(obj, "status", json_object_new_int((int)status));
    return send_json(conn, status, obj, allow);
}

static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned status,
                                 const char *content_type, const char *text)
{
    return queue(conn, status, content_type, text, strlen(text), NULL);
}

static struct json_object *json_mb(double bytes)
{
    /* One decimal: enough for MiB figures, and stable to read. */
    char text[32];

    snprintf(text, sizeof(text), "%.1f", bytes / MIB);
    return json_object_new_double_s(bytes / MIB, text);
}

static void format_timestamp(int64_t time_us, char *buf, size_t size)
{
    time_t seconds = (time_t)(time_us / 1000000);
    struct tm tm;

    gmtime_r(&seconds, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(time_us % 1000000));
}

static enum MHD_Result handle_info(struct api *api, struct MHD_Connection *conn,
                                   struct request *req);

static enum MHD_Result
handle_start(struct api *api, struct MHD_Connection *conn, struct request *req)
{
    struct stress_config config;
    struct config_error err;
    struct engine_status status;
    struct json_object *obj, *config_obj;
    int ret;

    if (config_parse(req->body ? req->body : "", req->len, &config, &err) < 0)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, err.field, NULL, "%s",
                          err.message);

    ret = engine_start(api->engine, &config, &err);
    if (ret == -EBUSY)
        return send_error(conn, MHD_HTTP_CONFLICT, "", NULL,
                          "a test is already running; stop it with POST "
                          "/stop or wait for it to complete");
    if (ret == -EINVAL)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, err.field, NULL, "%s",
                          err.message);
    if (ret < 0)
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, err.field, NULL,
                          "failed to start the test: %s",
                          ret == -EIO ? err.message : strerror(-ret));

    engine_status(api->engine, &status);
    config_obj = config_to_json(&config);
    json_object_object_add(config_obj, "target_mb",
                           json_mb((double)status.target_bytes));
    obj = json_object_new_object();
    json_object_object_add(obj, "message",
                           json_object_new_string("Stress test started"));
    json_object_object_add(obj, "config", config_obj);
    json_object_object_add(obj, "target_mb",
                           json_mb((double)status.target_bytes));
    json_object_object_add(obj, "limit_mb",
                           json_mb((double)status.limit.bytes));
    json_object_object_add(
        obj, "percent_base",
        json_object_new_string(memlimit_base_name(status.limit.base)));
    KLOG_INFO(2, "Started stress test", "targetMiB",
              json_object_get_string(json_object_object_get(obj, "target_mb")),
              NULL);
    return send_json(conn, MHD_HTTP_OK, obj, NULL);
}

static enum MHD_Result handle_stop(struct api *api, struct MHD_Connection *conn,
                                   struct request *req)
{
    struct engine_status status;
    struct json_object *obj;

    (void)req;
    if (engine_stop(api->engine) == -ESRCH)
        return send_error(conn, MHD_HTTP_CONFLICT, "", NULL,
                          "no test is running; GET /status shows the last "
                          "test's state");
    engine_status(api->engine, &status);
    obj = json_object_new_object();
    json_object_object_add(obj, "message",
                           json_object_new_string("Stress test stopped"));
    json_object_object_add(
        obj, "state", json_object_new_string(engine_state_name(status.state)));
    json_object_object_add(obj, "nodes", json_object_new_uint64(status.nodes));
    json_object_object_add(obj, "memory_mb", json_mb((double)status.rss_bytes));
    return send_json(conn, MHD_HTTP_OK, obj, NULL);
}

static struct json_object *status_to_json(const struct engine_status *s)
{
    char elapsed[32];
    struct json_object *obj = json_object_new_object();
    struct json_object *tests = json_object_new_object();

    json_object_object_add(obj, "state",
                           json_object_new_string(engine_state_name(s->state)));
    json_object_object_add(
        obj, "is_running",
        json_object_new_boolean(engine_is_running(s->state)));
    json_object_object_add(obj, "memory_mb", json_mb((double)s->rss_bytes));
    json_object_object_add(obj, "target_mb", json_mb((double)s->target_bytes));
    json_object_object_add(obj, "limit_mb", json_mb((double)s->limit.bytes));
    json_object_object_add(
        obj, "percent_base",
        json_object_new_string(memlimit_base_name(s->limit.base)));
    json_object_object_add(obj, "limit_source",
                           json_object_new_string(s->limit.source));
    json_object_object_add(obj, "host_memory_mb",
                           json_mb((double)s->limit.host_bytes));
    json_object_object_add(obj, "nodes", json_object_new_uint64(s->nodes));
    json_object_object_add(obj, "searches",
                           json_object_new_uint64(s->searches));
    json_object_object_add(obj, "search_hits",
                           json_object_new_uint64(s->search_hits));
    snprintf(elapsed, sizeof(elapsed), "%.3f", s->elapsed_seconds);
    json_object_object_add(
        obj, "elapsed_seconds",
        json_object_new_double_s(s->elapsed_seconds, elapsed));
    json_object_object_add(obj, "config",
                           s->has_config ? config_to_json(&s->config) : NULL);
    if (s->error[0])
        json_object_object_add(obj, "error", json_object_new_string(s->error));
    for (int i = 0; i < ENGINE_OUTCOME_COUNT; i++)
        json_object_object_add(tests, engine_outcome_name(i),
                               json_object_new_uint64(s->outcomes[i]));
    json_object_object_add(obj, "tests", tests);
    return obj;
}

static enum MHD_Result
handle_status(struct api *api, struct MHD_Connection *conn, struct request *req)
{
    struct engine_status status;

    (void)req;
    engine_status(api->engine, &status);
    return send_json(conn, MHD_HTTP_OK, status_to_json(&status), NULL);
}

/* Parses a query argument as an integer in [min, max]; absent keeps *out. */
static int query_integer(struct MHD_Connection *conn, const char *name,
                         uint64_t min, uint64_t max, uint64_t *out)
{
    const char *text =
        MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    char *end;
    unsigned long long value;

    if (!text)
        return 0;
    if (*text < '0' || *text > '9')
        return -EINVAL;
    errno = 0;
    value = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || value < min || value > max)
        return -EINVAL;
    *out = value;
    return 0;
}

static struct json_object *log_entry_to_json(const struct logring_entry *e)
{
    struct json_object *obj = json_object_new_object();
    char timestamp[80];

    format_timestamp(e->time_us, timestamp, sizeof(timestamp));
    json_object_object_add(obj, "seq", json_object_new_uint64(e->seq));
    json_object_object_add(obj, "timestamp", json_object_new_string(timestamp));
    json_object_object_add(obj, "operation",
                           json_object_new_string(e->operation));
    json_object_object_add(obj, "memory_use_mb", json_mb(e->memory_mb * MIB));
    json_object_object_add(obj, "message", json_object_new_string(e->message));
    return obj;
}

static enum MHD_Result handle_logs(struct api *api, struct MHD_Connection *conn,
                                   struct request *req)
{
    struct logring *ring = &api->engine->logs;
    uint64_t limit = ring->capacity, after = 0;
    struct logring_entry *entries;
    struct json_object *obj, *list;
    size_t count, total;

    (void)req;
    if (query_integer(conn, "limit", 1, ring->capacity, &limit) < 0)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "limit", NULL,
                          "limit must be an integer between 1 and %zu",
                          ring->capacity);
    if (query_integer(conn, "after", 0, UINT64_MAX, &after) < 0)
        return send_error(conn, MHD_HTTP_BAD_REQUEST, "after", NULL,
                          "after must be a non-negative integer: the seq of "
                          "the last entry already read");

    entries = malloc(limit * sizeof(*entries));
    if (!entries)
        return send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "", NULL,
                          "out of memory");
    count = logring_read(ring, after, limit, entries, &total);
    list = json_object_new_array_ext((int)count);
    for (size_t i = 0; i < count; i++)
        json_object_array_add(list, log_entry_to_json(&entries[i]));

    obj = json_object_new_object();
    json_object_object_add(obj, "logs", list);
    json_object_object_add(obj, "count", json_object_new_uint64(count));
    json_object_object_add(obj, "total", json_object_new_uint64(total));
    json_object_object_add(obj, "dropped",
                           json_object_new_uint64(logring_dropped(ring)));
    json_object_object_add(
        obj, "next_after",
        json_object_new_uint64(count ? entries[count - 1].seq : after));
    free(entries);
    return send_json(conn, MHD_HTTP_OK, obj, NULL);
}

static enum MHD_Result
handle_clear(struct api *api, struct MHD_Connection *conn, struct request *req)
{
    uint64_t freed = 0;
    struct json_object *obj;

    (void)req;
    if (engine_clear(api->engine, &freed) == -EBUSY)
        return send_error(conn, MHD_HTTP_CONFLICT, "", NULL,
                          "a test is running; stop it with POST /stop "
                          "before clearing");
    /* Clearing is when the process is back to idle: trim it to idle size. */
    trim_library_pages();
    obj = json_object_new_object();
    json_object_object_add(obj, "message",
                           json_object_new_string("Memory cleared"));
    json_object_object_add(obj, "freed_mb", json_mb((double)freed));
    json_object_object_add(obj, "memory_mb",
                           json_mb((double)memlimit_rss_bytes()));
    return send_json(conn, MHD_HTTP_OK, obj, NULL);
}

static enum MHD_Result
handle_health(struct api *api, struct MHD_Connection *conn, struct request *req)
{
    struct json_object *obj = json_object_new_object();

    (void)api;
    (void)req;
    json_object_object_add(obj, "status", json_object_new_string("healthy"));
    return send_json(conn, MHD_HTTP_OK, obj, NULL);
}

static enum MHD_Result
handle_probe(struct api *api, struct MHD_Connection *conn, struct request *req)
{
    (void)api;
    (void)req;
    return send_text(conn, MHD_HTTP_OK, "text/plain; charset=utf-8", "ok\n");
}

/* Appends printf output to a growing buffer; returns -ENOMEM on failure. */
static int appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -EINVAL;
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return 0;
        }
        char *bigger = realloc(*buf, *cap * 2 + (size_t)n);
        if (!bigger)
            return -ENOMEM;
        *buf = bigger;
        *cap = *cap * 2 + (size_t)n;
    }
}

static void append_gauge(char **buf, size_t *len, size_t *cap, const char *name,
                         const char *type, const char *help, uint64_t value)
{
    appendf(buf, len, cap, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name,
            help, name, type, name, value);
}

static enum MHD_Result handle_metrics(struct api *api,
                                      struct MHD_Connection *conn,
                                      struct request *req)
{
    struct engine_status s;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    enum MHD_Result ret;

    (void)req;
    if (!buf)
        return MHD_NO;
    buf[0] = '\0';
    engine_status(api->engine, &s);
    append_gauge(&buf, &len, &cap, "memstress_worker_resident_memory_bytes",
                 "gauge", "Resident set size of the worker process.",
                 s.rss_bytes);
    append_gauge(&buf, &len, &cap, "memstress_worker_target_memory_bytes",
                 "gauge", "Resident size the current or last test aims for.",
                 s.target_bytes);
    append_gauge(&buf, &len, &cap, "memstress_worker_memory_limit_bytes",
                 "gauge", "Memory limit the worker sees (cgroup or host).",
                 s.limit.bytes);
    append_gauge(&buf, &len, &cap, "memstress_worker_tree_nodes", "gauge",
                 "Nodes in the stress tree.", s.nodes);
    append_gauge(&buf, &len, &cap, "memstress_worker_searches_total", "counter",
                 "Tree searches run by the current or last test.", s.searches);
    appendf(&buf, &len, &cap,
            "# HELP memstress_worker_tests_total Tests ended, by outcome.\n"
            "# TYPE memstress_worker_tests_total counter\n");
    for (int i = 0; i < ENGINE_OUTCOME_COUNT; i++)
        appendf(&buf, &len, &cap,
                "memstress_worker_tests_total{outcome=\"%s\"} %" PRIu64 "\n",
                engine_outcome_name(i), s.outcomes[i]);
    appendf(&buf, &len, &cap,
            "# HELP memstress_worker_state Current engine state (1 for the "
            "active one).\n# TYPE memstress_worker_state gauge\n");
    for (int i = 0; i < ENGINE_STATE_COUNT; i++)
        appendf(&buf, &len, &cap, "memstress_worker_state{state=\"%s\"} %d\n",
                engine_state_name(i), (int)s.state == i);
    ret = queue(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                buf, len, NULL);
    free(buf);
    return ret;
}

static const struct route routes[] = {
    {"/", "GET", handle_info, "API information"},
    {"/start", "POST", handle_start,
     "Start a test; JSON body with memory_mb or memory_percent"},
    {"/stop", "POST", handle_stop, "Stop the running test, keeping memory"},
    {"/status", "GET", handle_status, "Current state and memory"},
    {"/logs", "GET", handle_logs, "Test log; ?limit=N&after=SEQ to page"},
    {"/clear", "POST", handle_clear, "Free the tree's memory"},
    {"/health", "GET", handle_health, "Health check"},
    {"/healthz", "GET", handle_probe, "Liveness probe"},
    {"/readyz", "GET", handle_probe, "Readiness probe"},
    {"/metrics", "GET", handle_metrics, "Prometheus metrics"},
};

#define ROUTE_COUNT (sizeof(routes) / sizeof(routes[0]))

static enum MHD_Result handle_info(struct api *api, struct MHD_Connection *conn,
                                   struct request *req)
{
    struct json_object *obj = json_object_new_object();
    struct json_object *endpoints = json_object_new_array();

    (void)api;
    (void)req;
    for (size_t i = 0; i < ROUTE_COUNT; i++) {
        struct json_object *e = json_object_new_object();

        json_object_object_add(e, "method",
                               json_object_new_string(routes[i].method));
        json_object_object_add(e, "path",
                               json_object_new_string(routes[i].path));
        json_object_object_add(e, "description",
                               json_object_new_string(routes[i].description));
        json_object_array_add(endpoints, e);
    }
    json_object_object_add(obj, "name",
                           json_object_new_string("memstress-worker"));
    json_object_object_add(obj, "version",
                           json_object_new_string(MEMSTRESS_VERSION));
    json_object_object_add(obj, "endpoints", endpoints);
    return send_json(conn, MHD_HTTP_OK, obj, NULL);
}

static enum MHD_Result dispatch(struct api *api, struct MHD_Connection *conn,
                                const char *url, const char *method,
                                struct request *req)
{
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    for (size_t i = 0; i < ROUTE_COUNT; i++) {
        const struct route *r = &routes[i];

        if (strcmp(url, r->path) != 0)
            continue;
        if (strcmp(method, r->method) == 0 ||
            (is_get && strcmp(r->method, "GET") == 0)) {
            if (req->too_large)
                return send_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "", NULL,
                                  "request body exceeds %zu bytes",
                                  API_MAX_BODY_BYTES);
            return r->handler(api, conn, req);
        }
        return send_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "",
                          strcmp(r->method, "GET") == 0 ? "GET, HEAD"
                                                        : r->method,
                          "method %.16s is not allowed on %s; use %s", method,
                          r->path, r->method);
    }
    return send_error(conn, MHD_HTTP_NOT_FOUND, "", NULL,
                      "no endpoint at %.200s; GET / lists the endpoints", url);
}

/* Returns true when the request announces a body larger than the cap. */
static bool announces_large_body(struct MHD_Connection *conn)
{
    const char *length = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

    return length && strtoull(length, NULL, 10) > API_MAX_BODY_BYTES;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn,
                                      const char *url, const char *method,
                                      const char *version,
                                      const char *upload_data,
                                      size_t *upload_data_size, void **con_cls)
{
    struct api *api = cls;
    struct request *req = *con_cls;

    (void)version;
    if (!req) {
        req = calloc(1, sizeof(*req));
        if (!req)
            return MHD_NO;
        *con_cls = req;
        if (announces_large_body(conn))
            return send_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "", NULL,
                              "request body exceeds %zu bytes",
                              API_MAX_BODY_BYTES);
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;

        if (!req->too_large && req->len + n <= API_MAX_BODY_BYTES) {
            char *grown = realloc(req->body, req->len + n + 1);

            if (!grown)
                return MHD_NO;
            req->body = grown;
            memcpy(req->body + req->len, upload_data, n);
            req->len += n;
            req->body[req->len] = '\0';
        } else {
            req->too_large = true;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    return dispatch(api, conn, url, method, req);
}

static void request_completed(void *cls, struct MHD_Connection *conn,
                              void **con_cls,
                              enum MHD_RequestTerminationCode code)
{
    struct request *req = *con_cls;

    (void)cls;
    (void)conn;
    (void)code;
    if (req) {
        free(req->body);
        free(req);
        *con_cls = NULL;
    }
}

static void log_mhd_error(void *cls, const char *fmt, va_list ap)
{
    char message[512];
    size_t len;

    (void)cls;
    vsnprintf(message, sizeof(message), fmt, ap);
    len = strlen(message);
    while (len > 0 && message[len - 1] == '\n')
        message[--len] = '\0';
    KLOG_ERROR("HTTP server reported an error", message, NULL);
}

int api_start(struct api *api, struct engine *engine, int listen_fd,
              unsigned threads)
{
    api->engine = engine;
    api->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        access_handler, api, MHD_OPTION_EXTERNAL_LOGGER, log_mhd_error, NULL,
        MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_THREAD_POOL_SIZE,
        threads, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)512, MHD_OPTION_NOTIFY_COMPLETED,
        request_completed, NULL, MHD_OPTION_END);
    return api->daemon ? 0 : -EIO;
}

void api_stop(struct api *api)
{
    if (api->daemon) {
        MHD_stop_daemon(api->daemon);
        api->daemon = NULL;
    }
}
