/*
 * libmicrohttpd on one internal thread: the endpoints only read atomics and
 * the caches, so no request waits on another.
 */
#include "controller/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kube/klog.h"

struct text {
    char *buf;
    size_t len;
    size_t cap;
};

static void appendf(struct text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void appendf(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        char *grown = realloc(t->buf, t->cap * 2 + (size_t)n);
        if (!grown)
            return;
        t->buf = grown;
        t->cap = t->cap * 2 + (size_t)n;
    }
}

static const char *const phases[] = {"Pending",   "Building", "Holding",
                                     "Succeeded", "Stopped",  "Failed"};
#define PHASE_COUNT (sizeof(phases) / sizeof(phases[0]))

static int count_phase(const char *key, struct json_object *obj, void *user)
{
    unsigned long *counts = user;
    struct json_object *status, *phase;

    (void)key;
    if (!json_object_object_get_ex(obj, "status", &status) ||
        !json_object_object_get_ex(status, "phase", &phase)) {
        counts[0]++; /* not yet reconciled: Pending */
        return 0;
    }
    for (size_t i = 0; i < PHASE_COUNT; i++)
        if (strcmp(json_object_get_string(phase), phases[i]) == 0)
            counts[i]++;
    return 0;
}

static void counter(struct text *t, const char *name, const char *help,
                    unsigned long value)
{
    appendf(t, "# HELP %s %s\n# TYPE %s counter\n%s %lu\n", name, help, name,
            name, value);
}

static void duration_histogram(struct text *t, struct controller_metrics *m)
{
    const char *name = "memstress_controller_reconcile_duration_seconds";

    appendf(t, "# HELP %s Time taken by one reconcile.\n# TYPE %s histogram\n",
            name, name);
    for (int i = 0; i < CONTROLLER_DURATION_BUCKETS; i++)
        appendf(t, "%s_bucket{le=\"%g\"} %lu\n", name,
                controller_duration_bounds[i],
                atomic_load(&m->duration_buckets[i]));
    appendf(t, "%s_bucket{le=\"+Inf\"} %lu\n", name,
            atomic_load(&m->duration_count));
    appendf(t, "%s_sum %.6f\n%s_count %lu\n", name,
            (double)atomic_load(&m->duration_sum_us) / 1e6, name,
            atomic_load(&m->duration_count));
}

char *server_metrics_text(struct controller *c, struct leader *leader)
{
    struct text t = {.buf = malloc(4096), .len = 0, .cap = 4096};
    struct controller_metrics *m = &c->metrics;
    unsigned long counts[PHASE_COUNT] = {0};

    if (!t.buf)
        return NULL;
    t.buf[0] = '\0';
    counter(&t, "memstress_controller_reconciles_total", "Reconciles run.",
            atomic_load(&m->reconciles));
    counter(&t, "memstress_controller_reconcile_errors_total",
            "Reconciles that failed and were requeued.",
            atomic_load(&m->errors));
    counter(&t, "memstress_controller_pods_created_total",
            "Worker pods created.", atomic_load(&m->pods_created));
    counter(&t, "memstress_controller_status_writes_total",
            "Status updates applied.", atomic_load(&m->status_writes));
    counter(&t, "memstress_controller_events_total", "Events emitted.",
            atomic_load(&m->events_emitted));
    counter(&t, "memstress_controller_ttl_deletions_total",
            "Tests deleted after their TTL.", atomic_load(&m->tests_deleted));
    duration_histogram(&t, m);
    appendf(&t,
            "# HELP memstress_controller_queue_depth Keys waiting in the work "
            "queue.\n# TYPE memstress_controller_queue_depth gauge\n"
            "memstress_controller_queue_depth %zu\n",
            queue_len(&c->queue));

    store_foreach(&c->tests.store, count_phase, counts);
    appendf(&t, "# HELP memstress_controller_tests MemoryStressTests by "
                "phase.\n# TYPE memstress_controller_tests gauge\n");
    for (size_t i = 0; i < PHASE_COUNT; i++)
        appendf(&t, "memstress_controller_tests{phase=\"%s\"} %lu\n", phases[i],
                counts[i]);
    appendf(&t,
            "# HELP memstress_controller_leader 1 when this replica leads.\n"
            "# TYPE memstress_controller_leader gauge\n"
            "memstress_controller_leader %d\n",
            leader ? (int)atomic_load(&leader->is_leader) : 1);
    return t.buf;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             const char *type, const char *body, bool own)
{
    struct MHD_Response *response = MHD_create_response_from_buffer(
        strlen(body), (void *)body,
        own ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (!response)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    ret = MHD_queue_response(conn, status, response);
    MHD_destroy_response(response);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn,
                              const char *url, const char *method,
                              const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct server *s = cls;
    const char *text = "text/plain; charset=utf-8";
    bool standby;

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text,
                     "only GET is served\n", false);
    if (strcmp(url, "/healthz") == 0)
        return reply(conn, MHD_HTTP_OK, text, "ok\n", false);
    if (strcmp(url, "/readyz") == 0) {
        standby = s->leader && !atomic_load(&s->leader->is_leader);
        if (standby || controller_synced(s->controller))
            return reply(conn, MHD_HTTP_OK, text, "ok\n", false);
        return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text,
                     "caches not synced\n", false);
    }
    if (strcmp(url, "/metrics") == 0) {
        char *body = server_metrics_text(s->controller, s->leader);

        return body ? reply(conn, MHD_HTTP_OK,
                            "text/plain; version=0.0.4; charset=utf-8", body,
                            true)
                    : MHD_NO;
    }
    return reply(conn, MHD_HTTP_NOT_FOUND, text,
                 "not found: /healthz, /readyz and /metrics are served\n",
                 false);
}

static int open_listener(const char *address)
{
    char host[256], port[16];
    const char *colon = strrchr(address, ':');
    struct addrinfo hints = {0}, *res = NULL;
    int fd, one = 1;

    if (!colon || (size_t)(colon - address) >= sizeof(host) ||
        strlen(colon + 1) >= sizeof(port) ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
        colon[1] == '\0' || strlen(colon + 1) > 5 || atoi(colon + 1) > 65535)
        return -EINVAL;
    snprintf(host, sizeof(host), "%.*s", (int)(colon - address), address);
    snprintf(port, sizeof(port), "%s", colon + 1);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0)
        return -EINVAL;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        int err = -errno;

        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return err;
    }
    freeaddrinfo(res);
    return fd;
}

int server_start(struct server *s, const char *listen,
                 struct controller *controller, struct leader *leader)
{
    memset(s, 0, sizeof(*s));
    s->controller = controller;
    s->leader = leader;
    s->fd = open_listener(listen);
    if (s->fd < 0) {
        KLOG_ERROR("Failed to listen",
                   s->fd == -EINVAL ? "expected ADDR:PORT with a numeric "
                                      "address and a port from 0 to 65535"
                                    : strerror(-s->fd),
                   "listen", listen, NULL);
        return s->fd;
    }
    s->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL,
                                 handle, s, MHD_OPTION_LISTEN_SOCKET, s->fd,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        close(s->fd);
        KLOG_ERROR("Failed to start the HTTP server", NULL, "listen", listen,
                   NULL);
        return -EIO;
    }
    KLOG_INFO(0, "Started HTTP server", "address", listen, NULL);
    return 0;
}

void server_stop(struct server *s)
{
    if (s->daemon) {
        MHD_stop_daemon(s->daemon);
        close(s->fd);
        s->daemon = NULL;
    }
}
