/*
 * Kubernetes API requests over libcurl.
 *
 * Each request takes an easy handle from a small pool and puts it back after
 * use: curl_easy_reset() keeps a handle's live connections, so pooling keeps
 * TLS connections open without sharing a connection cache between threads
 * (curl's shared connection cache is documented as unsafe across threads).
 * Retries happen here and nowhere else: once after a 401 when the token can
 * be reloaded, and up to max_429_retries times after a 429, waiting for the
 * Retry-After the server gave, capped at retry_after_max_s.
 */
#include "kube/kube.h"

#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kube/auth.h"
#include "kube/klog.h"
#include "kube/ratelimit.h"

#ifndef MEMSTRESS_VERSION
#define MEMSTRESS_VERSION "0.1.0-dev"
#endif

#define HANDLE_POOL_SIZE 8
/* A response body larger than this is an error; a 5,000-item list is ~5 MB. */
#define BODY_MAX_BYTES (256L * 1024 * 1024)
/* TCP keepalive: first probe after 15 s idle, then every 5 s, 3 probes. */
#define KEEPALIVE_IDLE_S     15
#define KEEPALIVE_INTERVAL_S 5
#define KEEPALIVE_COUNT      3
/* Unacknowledged data on a dead peer fails the socket after this long. */
#define TCP_USER_TIMEOUT_MS 30000
#define LIST_RESTARTS_MAX   3

struct kube_client {
    struct kubeconfig cfg;
    struct kube_client_options opts;
    char *user_agent;
    struct auth auth;
    struct ratelimit limiter;
    pthread_mutex_t pool_lock;
    CURL *pool[HANDLE_POOL_SIZE];
    int pool_len;
};

/* One HTTP exchange: what to send and what came back. */
struct transfer {
    const char *method;
    const char *path;
    const char *content_type;
    const char *body;
    const struct kube_stream_options *stream; /* NULL for buffered */
    CURL *curl;
    char *data; /* buffered body */
    size_t len;
    size_t cap;
    int callback_rc; /* why a callback aborted the transfer */
    long retry_after_s;
    double last_data_at;   /* monotonic seconds when bytes last arrived */
    curl_off_t last_dlnow; /* body bytes received by then */
    char curl_error[CURL_ERROR_SIZE];
};

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void kube_client_options_init(struct kube_client_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->qps = 20;
    opts->burst = 30;
    opts->timeout_ms = 30000;
    opts->connect_timeout_ms = 10000;
    opts->retry_after_max_s = 10;
    opts->max_429_retries = 3;
}

int kube_client_new(struct kubeconfig *cfg,
                    const struct kube_client_options *opts,
                    struct kube_client **out, char *err, size_t err_size)
{
    struct kube_client *client;

    pthread_once(&global_once, global_init);
    client = calloc(1, sizeof(*client));
    if (!client) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    if (opts)
        client->opts = *opts;
    else
        kube_client_options_init(&client->opts);
    if (client->opts.user_agent)
        client->user_agent = strdup(client->opts.user_agent);
    else
        client->user_agent = strdup("memstress/" MEMSTRESS_VERSION);
    if (!client->user_agent) {
        free(client);
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    client->opts.user_agent = client->user_agent;
    client->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    auth_init(&client->auth, &client->cfg);
    ratelimit_init(&client->limiter, client->opts.qps, client->opts.burst);
    pthread_mutex_init(&client->pool_lock, NULL);
    *out = client;
    return 0;
}

void kube_client_free(struct kube_client *client)
{
    if (!client)
        return;
    for (int i = 0; i < client->pool_len; i++)
        curl_easy_cleanup(client->pool[i]);
    pthread_mutex_destroy(&client->pool_lock);
    ratelimit_release(&client->limiter);
    auth_release(&client->auth);
    kubeconfig_release(&client->cfg);
    free(client->user_agent);
    free(client);
}

const struct kubeconfig *kube_client_config(const struct kube_client *client)
{
    return &client->cfg;
}

void kube_response_release(struct kube_response *resp)
{
    if (!resp)
        return;
    free(resp->reason);
    free(resp->message);
    json_object_put(resp->body);
    memset(resp, 0, sizeof(*resp));
}

int kube_errno_for_status(long status)
{
    if (status >= 200 && status < 300)
        return 0;
    switch (status) {
    case 400:
    case 422:
        return -EINVAL;
    case 401:
        return -EACCES;
    case 403:
        return -EPERM;
    case 404:
        return -ENOENT;
    case 405:
        return -EOPNOTSUPP;
    case 409:
        return -EEXIST;
    case 410:
        return -ESTALE;
    case 413:
        return -E2BIG;
    case 429:
        return -EAGAIN;
    case 504:
        return -ETIMEDOUT;
    }
    return status >= 500 ? -EIO : -EPROTO;
}

const char *kube_json_string(struct json_object *obj)
{
    return json_object_to_json_string_ext(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

char *kube_path(const char *group, const char *version, const char *namespace,
                const char *resource, const char *name, const char *subresource)
{
    bool core = !group || !group[0];
    char *path;

    if (asprintf(&path, "%s%s%s%s%s%s/%s%s%s%s%s", core ? "/api/" : "/apis/",
                 core ? "" : group, core ? "" : "/", version,
                 namespace ? "/namespaces/" : "", namespace ? namespace : "",
                 resource, name ? "/" : "", name ? name : "",
                 subresource ? "/" : "", subresource ? subresource : "") < 0)
        return NULL;
    return path;
}

static CURL *take_handle(struct kube_client *client)
{
    CURL *curl = NULL;

    pthread_mutex_lock(&client->pool_lock);
    if (client->pool_len > 0)
        curl = client->pool[--client->pool_len];
    pthread_mutex_unlock(&client->pool_lock);
    if (curl)
        curl_easy_reset(curl);
    else
        curl = curl_easy_init();
    return curl;
}

static void give_handle(struct kube_client *client, CURL *curl)
{
    pthread_mutex_lock(&client->pool_lock);
    if (client->pool_len < HANDLE_POOL_SIZE) {
        client->pool[client->pool_len++] = curl;
        curl = NULL;
    }
    pthread_mutex_unlock(&client->pool_lock);
    curl_easy_cleanup(curl);
}

static int buffer_append(struct transfer *t, const char *data, size_t len)
{
    if (t->len + len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 16384;
        char *bigger;

        while (cap < t->len + len + 1)
            cap *= 2;
        if (cap > BODY_MAX_BYTES)
            return -EFBIG;
        bigger = realloc(t->data, cap);
        if (!bigger)
            return -ENOMEM;
        t->data = bigger;
        t->cap = cap;
    }
    memcpy(t->data + t->len, data, len);
    t->len += len;
    t->data[t->len] = '\0';
    return 0;
}

static size_t on_write(char *data, size_t size, size_t count, void *user)
{
    struct transfer *t = user;
    size_t len = size * count;
    long status = 0;
    int rc;

    if (t->stream) {
        curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300) {
            rc = t->stream->on_data(data, len, t->stream->user);
            if (rc != 0) {
                t->callback_rc = rc;
                return 0;
            }
            return len;
        }
    }
    rc = buffer_append(t, data, len);
    if (rc < 0) {
        t->callback_rc = rc;
        return 0;
    }
    return len;
}

static size_t on_header(char *data, size_t size, size_t count, void *user)
{
    struct transfer *t = user;
    size_t len = size * count;
    static const char name[] = "retry-after:";

    if (len > sizeof(name) && strncasecmp(data, name, sizeof(name) - 1) == 0)
        t->retry_after_s = strtol(data + sizeof(name) - 1, NULL, 10);
    return len;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    struct transfer *t = user;

    (void)dltotal;
    (void)ultotal;
    (void)ulnow;
    if (!t->stream)
        return 0;
    if (t->stream->stop && atomic_load(t->stream->stop)) {
        t->callback_rc = -ECANCELED;
        return 1;
    }
    /*
     * curl calls this at least once a second.  CURLOPT_LOW_SPEED_TIME is not
     * used for the idle deadline because it averages over several seconds,
     * so a burst of data postpones the failure well past the deadline.
     */
    if (dlnow != t->last_dlnow) {
        t->last_dlnow = dlnow;
        t->last_data_at = now_seconds();
    } else if (t->stream->idle_timeout_s > 0 &&
               now_seconds() - t->last_data_at > t->stream->idle_timeout_s) {
        t->callback_rc = -ETIMEDOUT;
        return 1;
    }
    return 0;
}

/* Sets what curl 7.88 has no option for: probe count and user timeout. */
static int on_socket(void *user, curl_socket_t fd, curlsocktype purpose)
{
    int count = KEEPALIVE_COUNT;
    unsigned int user_timeout = TCP_USER_TIMEOUT_MS;

    (void)user;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKOPT_OK;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout,
               sizeof(user_timeout));
    return CURL_SOCKOPT_OK;
}

static void set_blob(CURL *curl, CURLoption option, const char *data,
                     size_t len)
{
    struct curl_blob blob = {
        .data = (void *)data,
        .len = len,
        .flags = CURL_BLOB_COPY,
    };

    curl_easy_setopt(curl, option, &blob);
}

static void setup_tls(struct kube_client *client, CURL *curl,
                      const struct auth_credentials *creds)
{
    const struct kubeconfig *cfg = &client->cfg;

    /*
     * NEEDSWORK: tls-server-name is parsed but not applied.  libcurl 7.88
     * has no option to verify the certificate against a name other than
     * the URL's host, so a cluster that relies on it fails verification.
     */
    if (cfg->insecure_skip_tls_verify) {
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (cfg->ca_pem) {
        set_blob(curl, CURLOPT_CAINFO_BLOB, cfg->ca_pem, cfg->ca_pem_len);
    }
    if (creds->cert_pem && creds->key_pem) {
        set_blob(curl, CURLOPT_SSLCERT_BLOB, creds->cert_pem,
                 strlen(creds->cert_pem));
        set_blob(curl, CURLOPT_SSLKEY_BLOB, creds->key_pem,
                 strlen(creds->key_pem));
    } else if (cfg->cert_pem && cfg->key_pem) {
        set_blob(curl, CURLOPT_SSLCERT_BLOB, cfg->cert_pem, cfg->cert_pem_len);
        set_blob(curl, CURLOPT_SSLKEY_BLOB, cfg->key_pem, cfg->key_pem_len);
    }
    curl_easy_setopt(curl, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(curl, CURLOPT_SSLKEYTYPE, "PEM");
}

static void setup_timeouts(struct kube_client *client, struct transfer *t)
{
    CURL *curl = t->curl;

    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     client->opts.connect_timeout_ms);
    if (!t->stream) {
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, client->opts.timeout_ms);
    } else {
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, t->stream->timeout_ms);
        t->last_data_at = now_seconds();
        t->last_dlnow = 0;
    }
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPIDLE, (long)KEEPALIVE_IDLE_S);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPINTVL, (long)KEEPALIVE_INTERVAL_S);
    curl_easy_setopt(curl, CURLOPT_SOCKOPTFUNCTION, on_socket);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
}

static struct curl_slist *build_headers(struct transfer *t,
                                        const struct auth_credentials *creds)
{
    struct curl_slist *headers = NULL, *next;
    char line[16384];

    headers = curl_slist_append(headers, "Accept: application/json");
    /* curl would wait for "100 Continue" before sending a large body. */
    next = headers ? curl_slist_append(headers, "Expect:") : NULL;
    if (next && t->content_type) {
        snprintf(line, sizeof(line), "Content-Type: %s", t->content_type);
        headers = next;
        next = curl_slist_append(headers, line);
    }
    if (next && creds->token) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", creds->token);
        headers = next;
        next = curl_slist_append(headers, line);
    }
    if (!next) {
        curl_slist_free_all(headers);
        return NULL;
    }
    return next;
}

static void setup_request(struct kube_client *client, struct transfer *t,
                          const char *url, struct curl_slist *headers)
{
    CURL *curl = t->curl;

    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, client->user_agent);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, t->curl_error);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, t);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");
    if (strcmp(t->method, "GET") == 0)
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    else
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, t->method);
    if (t->body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, t->body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)strlen(t->body));
    }
}

static int errno_for_curl(CURLcode code)
{
    switch (code) {
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        return -ECONNRESET;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
        return -EPROTO;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

static char *dup_json_string(struct json_object *obj, const char *key)
{
    struct json_object *value;

    if (!json_object_object_get_ex(obj, key, &value) ||
        !json_object_is_type(value, json_type_string))
        return NULL;
    return strdup(json_object_get_string(value));
}

/* Parses the buffered body and, for an error, its Status fields. */
static void fill_response(struct transfer *t, struct kube_response *resp)
{
    struct json_object *kind;

    if (t->len > 0)
        resp->body = json_tokener_parse(t->data);
    if (resp->status >= 200 && resp->status < 300)
        return;
    if (resp->body && json_object_object_get_ex(resp->body, "kind", &kind) &&
        strcmp(json_object_get_string(kind), "Status") == 0) {
        resp->reason = dup_json_string(resp->body, "reason");
        resp->message = dup_json_string(resp->body, "message");
    }
    if (!resp->message && t->len > 0)
        resp->message = strndup(t->data, t->len > 512 ? 512 : t->len);
}

static int transport_error(struct kube_client *client, struct transfer *t,
                           CURLcode code, struct kube_response *resp)
{
    int rc = t->callback_rc ? t->callback_rc : errno_for_curl(code);
    char reason[CURL_ERROR_SIZE + 64];

    if (t->callback_rc == -ECANCELED)
        snprintf(reason, sizeof(reason), "stopped");
    else if (t->callback_rc == -ETIMEDOUT)
        snprintf(reason, sizeof(reason), "no data received for %ld s",
                 t->stream->idle_timeout_s);
    else if (t->callback_rc < 0)
        snprintf(reason, sizeof(reason), "%s", strerror(-t->callback_rc));
    else if (t->callback_rc > 0)
        snprintf(reason, sizeof(reason), "ended by the data callback");
    else
        snprintf(reason, sizeof(reason), "%s",
                 t->curl_error[0] ? t->curl_error : curl_easy_strerror(code));
    if (asprintf(&resp->message, "%s %s%s failed: %s", t->method,
                 client->cfg.server, t->path, reason) < 0)
        resp->message = NULL;
    return rc;
}

/* Sends t once and fills resp; no retries. */
static int perform(struct kube_client *client, struct transfer *t,
                   struct kube_response *resp)
{
    struct auth_credentials creds;
    struct curl_slist *headers;
    char auth_err[KUBECONFIG_ERROR_SIZE];
    char *url = NULL;
    CURLcode code;
    int rc;

    rc = auth_get(&client->auth, &creds, auth_err, sizeof(auth_err));
    if (rc < 0) {
        resp->message = strdup(auth_err);
        return rc;
    }
    headers = build_headers(t, &creds);
    if (!headers || asprintf(&url, "%s%s", client->cfg.server, t->path) < 0) {
        rc = -ENOMEM;
        goto out_free_headers;
    }
    t->curl = take_handle(client);
    if (!t->curl) {
        rc = -ENOMEM;
        goto out_free_url;
    }
    setup_request(client, t, url, headers);
    setup_tls(client, t->curl, &creds);
    setup_timeouts(client, t);
    ratelimit_wait(&client->limiter);
    code = curl_easy_perform(t->curl);
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    if (code != CURLE_OK) {
        rc = transport_error(client, t, code, resp);
    } else {
        fill_response(t, resp);
        rc = kube_errno_for_status(resp->status);
    }
    give_handle(client, t->curl);
    t->curl = NULL;
out_free_url:
    free(url);
out_free_headers:
    curl_slist_free_all(headers);
    auth_credentials_release(&creds);
    return rc;
}

static void sleep_seconds(long seconds)
{
    struct timespec ts = {.tv_sec = seconds};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void reset_transfer(struct transfer *t, struct kube_response *resp)
{
    kube_response_release(resp);
    free(t->data);
    t->data = NULL;
    t->len = 0;
    t->cap = 0;
    t->callback_rc = 0;
    t->retry_after_s = 0;
    t->curl_error[0] = '\0';
}

/* Sends t, retrying once after a 401 and a bounded number of 429s. */
static int send_with_retries(struct kube_client *client, struct transfer *t,
                             struct kube_response *resp)
{
    bool reauthenticated = false;
    int throttled = 0, rc;
    char status[16];

    memset(resp, 0, sizeof(*resp));
    for (;;) {
        rc = perform(client, t, resp);
        snprintf(status, sizeof(status), "%ld", resp->status);
        KLOG_INFO(5, "Sent request", "verb", t->method, "path", t->path,
                  "status", status, NULL);
        if (resp->status == 401 && !reauthenticated &&
            auth_refreshable(&client->auth)) {
            reauthenticated = true;
            auth_invalidate(&client->auth);
        } else if (resp->status == 429 &&
                   throttled < client->opts.max_429_retries) {
            long wait = t->retry_after_s > 0 ? t->retry_after_s : 1;

            if (wait > client->opts.retry_after_max_s)
                wait = client->opts.retry_after_max_s;
            throttled++;
            KLOG_INFO(2, "Retried throttled request", "verb", t->method, "path",
                      t->path, NULL);
            sleep_seconds(wait);
        } else {
            break;
        }
        reset_transfer(t, resp);
    }
    free(t->data);
    t->data = NULL;
    return rc;
}

int kube_request(struct kube_client *client, const char *method,
                 const char *path, const char *content_type, const char *body,
                 struct kube_response *resp)
{
    struct transfer t = {
        .method = method,
        .path = path,
        .content_type = content_type,
        .body = body,
    };

    return send_with_retries(client, &t, resp);
}

int kube_stream(struct kube_client *client, const char *path,
                const struct kube_stream_options *opts,
                struct kube_response *resp)
{
    struct transfer t = {
        .method = "GET",
        .path = path,
        .stream = opts,
    };

    return send_with_retries(client, &t, resp);
}

int kube_get(struct kube_client *client, const char *path,
             struct kube_response *resp)
{
    return kube_request(client, "GET", path, NULL, NULL, resp);
}

int kube_create(struct kube_client *client, const char *path,
                struct json_object *obj, struct kube_response *resp)
{
    return kube_request(client, "POST", path, "application/json",
                        kube_json_string(obj), resp);
}

int kube_update(struct kube_client *client, const char *path,
                struct json_object *obj, struct kube_response *resp)
{
    return kube_request(client, "PUT", path, "application/json",
                        kube_json_string(obj), resp);
}

int kube_delete(struct kube_client *client, const char *path,
                const char *propagation, struct kube_response *resp)
{
    char body[128];

    if (!propagation)
        return kube_request(client, "DELETE", path, NULL, NULL, resp);
    snprintf(body, sizeof(body),
             "{\"kind\":\"DeleteOptions\",\"apiVersion\":\"v1\","
             "\"propagationPolicy\":\"%s\"}",
             propagation);
    return kube_request(client, "DELETE", path, "application/json", body, resp);
}

int kube_patch(struct kube_client *client, const char *path,
               enum kube_patch_type type, struct json_object *patch,
               struct kube_response *resp)
{
    static const char *const types[] = {
        [KUBE_PATCH_MERGE] = "application/merge-patch+json",
        [KUBE_PATCH_JSON] = "application/json-patch+json",
        [KUBE_PATCH_STRATEGIC] = "application/strategic-merge-patch+json",
    };

    return kube_request(client, "PATCH", path, types[type],
                        kube_json_string(patch), resp);
}

int kube_append_query(char **path, const char *name, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(*path), value_len = strlen(value);
    char *out = realloc(*path, len + strlen(name) + 3 * value_len + 3);
    char *p;

    if (!out)
        return -ENOMEM;
    *path = out;
    p = out + len;
    *p++ = strchr(out, '?') ? '&' : '?';
    p = stpcpy(p, name);
    *p++ = '=';
    for (const unsigned char *v = (const unsigned char *)value; *v; v++) {
        if ((*v >= 'A' && *v <= 'Z') || (*v >= 'a' && *v <= 'z') ||
            (*v >= '0' && *v <= '9') || strchr("-._~", *v)) {
            *p++ = (char)*v;
        } else {
            *p++ = '%';
            *p++ = hex[*v >> 4];
            *p++ = hex[*v & 15];
        }
    }
    *p = '\0';
    return 0;
}

int kube_apply(struct kube_client *client, const char *path,
               struct json_object *obj, const char *field_manager, bool force,
               struct kube_response *resp)
{
    char *full = strdup(path);
    int rc = -ENOMEM;

    memset(resp, 0, sizeof(*resp));
    if (!full || kube_append_query(&full, "fieldManager", field_manager) < 0 ||
        (force && kube_append_query(&full, "force", "true") < 0))
        goto out_free_path;
    /* JSON is YAML, so the JSON text is a valid apply body. */
    rc = kube_request(client, "PATCH", full, "application/apply-patch+yaml",
                      kube_json_string(obj), resp);
out_free_path:
    free(full);
    return rc;
}

static int get_page(struct kube_client *client, const char *path,
                    const struct kube_list_options *opts, const char *token,
                    struct kube_response *page)
{
    char limit[32];
    char *full = strdup(path);
    int rc = -ENOMEM;

    memset(page, 0, sizeof(*page));
    snprintf(limit, sizeof(limit), "%ld", opts->limit > 0 ? opts->limit : 500);
    if (!full || kube_append_query(&full, "limit", limit) < 0)
        goto out_free_path;
    if (opts->label_selector &&
        kube_append_query(&full, "labelSelector", opts->label_selector) < 0)
        goto out_free_path;
    if (opts->field_selector &&
        kube_append_query(&full, "fieldSelector", opts->field_selector) < 0)
        goto out_free_path;
    if (token && kube_append_query(&full, "continue", token) < 0)
        goto out_free_path;
    rc = kube_get(client, full, page);
out_free_path:
    free(full);
    return rc;
}

/* Moves the items of page into list and copies its list metadata. */
static int merge_page(struct json_object *list, struct kube_response *page,
                      char **token)
{
    struct json_object *items, *page_items, *meta, *value;

    json_object_object_get_ex(list, "items", &items);
    if (!json_object_object_get_ex(page->body, "items", &page_items) ||
        !json_object_is_type(page_items, json_type_array))
        return -EPROTO;
    for (size_t i = 0; i < json_object_array_length(page_items); i++)
        json_object_array_add(
            items, json_object_get(json_object_array_get_idx(page_items, i)));
    if (!json_object_object_get_ex(list, "kind", &value)) {
        if (json_object_object_get_ex(page->body, "kind", &value))
            json_object_object_add(list, "kind", json_object_get(value));
        if (json_object_object_get_ex(page->body, "apiVersion", &value))
            json_object_object_add(list, "apiVersion", json_object_get(value));
    }
    free(*token);
    *token = NULL;
    if (!json_object_object_get_ex(page->body, "metadata", &meta))
        return 0;
    if (json_object_object_get_ex(meta, "resourceVersion", &value))
        json_object_object_add(json_object_object_get(list, "metadata"),
                               "resourceVersion", json_object_get(value));
    if (json_object_object_get_ex(meta, "continue", &value) &&
        json_object_get_string_len(value) > 0) {
        *token = strdup(json_object_get_string(value));
        if (!*token)
            return -ENOMEM;
    }
    return 0;
}

static struct json_object *new_list(void)
{
    struct json_object *list = json_object_new_object();

    json_object_object_add(list, "metadata", json_object_new_object());
    json_object_object_add(list, "items", json_object_new_array());
    return list;
}

/* Lists every page once; *expired is set when a continue token expired. */
static int list_once(struct kube_client *client, const char *path,
                     const struct kube_list_options *opts,
                     struct kube_response *resp, bool *expired)
{
    struct json_object *list = new_list();
    char *token = NULL;
    int rc;

    *expired = false;
    do {
        struct kube_response page;
        bool continued = token != NULL;

        rc = get_page(client, path, opts, token, &page);
        if (rc == 0)
            rc = merge_page(list, &page, &token);
        if (rc < 0) {
            *expired = continued && page.status == 410;
            *resp = page;
            goto out_put_list;
        }
        kube_response_release(&page);
    } while (token);
    resp->status = 200;
    resp->body = list;
    list = NULL;
out_put_list:
    json_object_put(list);
    free(token);
    return rc;
}

int kube_list(struct kube_client *client, const char *path,
              const struct kube_list_options *opts, struct kube_response *resp)
{
    struct kube_list_options defaults = {0};
    bool expired;
    int rc;

    if (!opts)
        opts = &defaults;
    memset(resp, 0, sizeof(*resp));
    for (int attempt = 0;; attempt++) {
        rc = list_once(client, path, opts, resp, &expired);
        if (!expired || attempt == LIST_RESTARTS_MAX)
            return rc;
        KLOG_INFO(2, "Restarted list after its continue token expired", "path",
                  path, NULL);
        kube_response_release(resp);
    }
}
