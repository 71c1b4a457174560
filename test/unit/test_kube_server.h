/*
 * Scripted HTTP server on 127.0.0.1 for the kube/ unit tests, built on
 * libmicrohttpd with a thread per connection.
 *
 * A test sets server->handler, which receives each request (method, path with
 * decoded query, selected headers, body) and fills a fake_response: a
 * buffered body, or chunks streamed one by one that optionally end in a
 * stall, as a silent watch connection would.  Header-only so that each
 * test program includes its own copy.
 */
#ifndef TEST_KUBE_SERVER_H
#define TEST_KUBE_SERVER_H

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct fake_request {
    char method[16];
    char url[2048]; /* path, then "?k=v&..." with decoded values */
    char content_type[128];
    char authorization[256];
    char *body; /* NUL-terminated */
    size_t body_len;
};

struct fake_response {
    int status;
    const char *body;          /* buffered body (copied), or NULL */
    const char *retry_after;   /* Retry-After header value, or NULL */
    const char *const *chunks; /* streamed instead of body; not copied */
    size_t chunk_count;
    bool stall; /* after the chunks, send nothing until the server stops */
};

struct fake_server;

struct fake_server {
    struct MHD_Daemon *daemon;
    char url[64]; /* "http://127.0.0.1:<port>" */
    void (*handler)(struct fake_server *server, const struct fake_request *req,
                    struct fake_response *resp);
    void *user;
    atomic_int requests;
    atomic_bool stopping;
    pthread_mutex_t lock;
    /* Copy of the latest request, written before its response is sent. */
    struct fake_request last;
};

struct fake_stream {
    struct fake_server *server;
    const char *const *chunks;
    size_t count;
    size_t next;
    bool stall;
};

static ssize_t fake_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct fake_stream *stream = cls;

    (void)pos;
    if (stream->next < stream->count) {
        const char *chunk = stream->chunks[stream->next++];
        size_t len = strlen(chunk);

        if (len > max)
            len = max; /* tests keep chunks below MHD's block size */
        memcpy(buf, chunk, len);
        return (ssize_t)len;
    }
    if (!stream->stall)
        return MHD_CONTENT_READER_END_OF_STREAM;
    while (!atomic_load(&stream->server->stopping))
        usleep(10000);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static enum MHD_Result fake_add_query(void *cls, enum MHD_ValueKind kind,
                                      const char *key, const char *value)
{
    struct fake_request *req = cls;
    size_t len = strlen(req->url);

    (void)kind;
    snprintf(req->url + len, sizeof(req->url) - len, "%c%s=%s",
             strchr(req->url, '?') ? '&' : '?', key, value ? value : "");
    return MHD_YES;
}

static void fake_copy_header(struct MHD_Connection *conn, const char *name,
                             char *dst, size_t size)
{
    const char *value =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);

    snprintf(dst, size, "%s", value ? value : "");
}

static struct MHD_Response *fake_build(struct fake_server *server,
                                       struct fake_response *out)
{
    struct MHD_Response *response;

    if (out->chunks) {
        struct fake_stream *stream = calloc(1, sizeof(*stream));

        stream->server = server;
        stream->chunks = out->chunks;
        stream->count = out->chunk_count;
        stream->stall = out->stall;
        response = MHD_create_response_from_callback(
            MHD_SIZE_UNKNOWN, 4096, fake_stream_read, stream, free);
    } else {
        const char *body = out->body ? out->body : "";

        response = MHD_create_response_from_buffer(strlen(body), (void *)body,
                                                   MHD_RESPMEM_MUST_COPY);
    }
    MHD_add_response_header(response, "Content-Type", "application/json");
    if (out->retry_after)
        MHD_add_response_header(response, "Retry-After", out->retry_after);
    return response;
}

static enum MHD_Result fake_access(void *cls, struct MHD_Connection *conn,
                                   const char *url, const char *method,
                                   const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls)
{
    struct fake_server *server = cls;
    struct fake_request *req = *con_cls;
    struct fake_response out = {.status = 200};
    struct MHD_Response *response;
    enum MHD_Result result;

    (void)version;
    if (!req) {
        req = calloc(1, sizeof(*req));
        req->body = calloc(1, 1);
        *con_cls = req;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        req->body = realloc(req->body, req->body_len + *upload_size + 1);
        memcpy(req->body + req->body_len, upload, *upload_size);
        req->body_len += *upload_size;
        req->body[req->body_len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    snprintf(req->method, sizeof(req->method), "%s", method);
    snprintf(req->url, sizeof(req->url), "%s", url);
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, fake_add_query, req);
    fake_copy_header(conn, "Content-Type", req->content_type,
                     sizeof(req->content_type));
    fake_copy_header(conn, "Authorization", req->authorization,
                     sizeof(req->authorization));
    atomic_fetch_add(&server->requests, 1);
    pthread_mutex_lock(&server->lock);
    free(server->last.body);
    server->last = *req;
    server->last.body = strdup(req->body);
    pthread_mutex_unlock(&server->lock);

    server->handler(server, req, &out);
    response = fake_build(server, &out);
    result = MHD_queue_response(conn, (unsigned)out.status, response);
    MHD_destroy_response(response);
    return result;
}

static void fake_completed(void *cls, struct MHD_Connection *conn,
                           void **con_cls, enum MHD_RequestTerminationCode code)
{
    struct fake_request *req = *con_cls;

    (void)cls;
    (void)conn;
    (void)code;
    if (!req)
        return;
    free(req->body);
    free(req);
    *con_cls = NULL;
}

/* Starts the server on a free loopback port; returns 0 or -1. */
static int fake_server_start(struct fake_server *server)
{
    struct sockaddr_in addr = {
        .sin_family = AF_INET,
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    const union MHD_DaemonInfo *info;

    memset(server, 0, sizeof(*server));
    pthread_mutex_init(&server->lock, NULL);
    server->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0,
        NULL, NULL, fake_access, server, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_NOTIFY_COMPLETED, fake_completed, server, MHD_OPTION_END);
    if (!server->daemon)
        return -1;
    info = MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(server->url, sizeof(server->url), "http://127.0.0.1:%u",
             (unsigned)info->port);
    return 0;
}

static void fake_server_stop(struct fake_server *server)
{
    atomic_store(&server->stopping, true);
    MHD_stop_daemon(server->daemon);
    free(server->last.body);
    pthread_mutex_destroy(&server->lock);
}

#endif
