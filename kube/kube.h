/*
 * Kubernetes API client: requests over libcurl with JSON bodies (json-c).
 *
 * A struct kube_client owns its configuration, a token bucket rate limit
 * and a pool of idle curl handles, which keeps TLS connections open between
 * requests.  Every function here is safe to call from several threads on
 * one client.
 *
 * Each call returns 0 for a 2xx response and a negative errno otherwise, and
 * fills a struct kube_response with the HTTP status (0 when none arrived),
 * the API's Status reason and message, and the parsed body, so that callers
 * can branch on 404, 409, 410, 422 or 429.  The errno for an HTTP error is
 * kube_errno_for_status(status); transport failures give -ECONNREFUSED,
 * -ETIMEDOUT, -ECONNRESET, -EPROTO (TLS) or -EIO, with the curl error text
 * in the message.
 *
 * Paths start with "/" and may carry a query; kube_path() builds them for
 * core and group resources, including subresources such as "status".
 */
#ifndef KUBE_KUBE_H
#define KUBE_KUBE_H

#include <json-c/json.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "kube/kubeconfig.h"

struct kube_client;

struct kube_client_options {
    double qps;              /* sustained requests per second; <= 0: none */
    int burst;               /* requests allowed at once above qps */
    long timeout_ms;         /* whole-request deadline (not for streams) */
    long connect_timeout_ms; /* TCP and TLS connection deadline */
    int retry_after_max_s;   /* maximum wait honoured for one 429 */
    int max_429_retries;     /* 429 responses retried before giving up */
    const char *user_agent;  /* NULL for "memstress/<version>" */
};

/* Fills opts with the defaults: 20 qps, burst 30, 30 s, 10 s, 10 s, 3. */
void kube_client_options_init(struct kube_client_options *opts);

/*
 * Creates a client that takes over the contents of cfg (cfg is zeroed and
 * must not be released by the caller).  opts may be NULL for the defaults.
 * Returns 0 and the client in *out, which the caller frees with
 * kube_client_free(), or a negative errno with a message in err.
 */
int kube_client_new(struct kubeconfig *cfg,
                    const struct kube_client_options *opts,
                    struct kube_client **out, char *err, size_t err_size);

/* Frees the client; NULL is a no-op.  No call may be running on it. */
void kube_client_free(struct kube_client *client);

/* Returns the configuration the client uses; owned by the client. */
const struct kubeconfig *kube_client_config(const struct kube_client *client);

struct kube_response {
    long status;   /* HTTP status, or 0 when no response arrived */
    char *reason;  /* Status.reason such as "NotFound", or NULL */
    char *message; /* Status.message, or the transport error, or NULL */
    struct json_object *body; /* parsed JSON body, or NULL */
};

/* Frees what resp owns and zeroes it; safe on a zeroed struct. */
void kube_response_release(struct kube_response *resp);

/* Maps an HTTP status to the negative errno the calls return for it. */
int kube_errno_for_status(long status);

/*
 * Builds "/api/v1/..." (group NULL or "") or "/apis/<group>/<version>/...",
 * with "namespaces/<namespace>/" when namespace is not NULL, then resource,
 * and name and subresource when not NULL.  Returns a string the caller
 * frees with free(), or NULL when out of memory.
 */
char *kube_path(const char *group, const char *version, const char *namespace,
                const char *resource, const char *name,
                const char *subresource);

/*
 * Sends one request.  body is sent as is when not NULL, with content_type.
 * Every verb below is built on this.  The response is the caller's, to be
 * released with kube_response_release() whatever the return value.
 */
int kube_request(struct kube_client *client, const char *method,
                 const char *path, const char *content_type, const char *body,
                 struct kube_response *resp);

/* GET path. */
int kube_get(struct kube_client *client, const char *path,
             struct kube_response *resp);

struct kube_list_options {
    const char *label_selector; /* NULL for all */
    const char *field_selector; /* NULL for all */
    long limit;                 /* page size; 0 for 500 */
};

/*
 * Lists a collection page by page (limit and continue).  When the continue
 * token has expired (HTTP 410) the list starts again from the first page, at
 * most three times.  On success resp->body is one list object: the first
 * page's apiVersion and kind, the last page's metadata.resourceVersion, and
 * the items of every page.  opts may be NULL.
 */
int kube_list(struct kube_client *client, const char *path,
              const struct kube_list_options *opts, struct kube_response *resp);

/* POSTs obj to the collection path; resp->body is the created object. */
int kube_create(struct kube_client *client, const char *path,
                struct json_object *obj, struct kube_response *resp);

/* PUTs obj to path (also the way to replace a status subresource). */
int kube_update(struct kube_client *client, const char *path,
                struct json_object *obj, struct kube_response *resp);

/*
 * DELETEs path.  propagation is "Foreground", "Background", "Orphan" or
 * NULL for the server's default.
 */
int kube_delete(struct kube_client *client, const char *path,
                const char *propagation, struct kube_response *resp);

enum kube_patch_type {
    KUBE_PATCH_MERGE,     /* application/merge-patch+json, RFC 7386 */
    KUBE_PATCH_JSON,      /* application/json-patch+json, RFC 6902 */
    KUBE_PATCH_STRATEGIC, /* built-in kinds only */
};

/* PATCHes path with patch, a JSON object or (for KUBE_PATCH_JSON) array. */
int kube_patch(struct kube_client *client, const char *path,
               enum kube_patch_type type, struct json_object *patch,
               struct kube_response *resp);

/*
 * Applies obj server-side: PATCHes path (the object's own path, or its
 * status subresource) with obj as application/apply-patch+yaml, owned by
 * field_manager.  With force, it takes over fields other managers own.
 */
int kube_apply(struct kube_client *client, const char *path,
               struct json_object *obj, const char *field_manager, bool force,
               struct kube_response *resp);

/*
 * Serialises obj the way every request body is sent: compact and with "/"
 * not escaped, because apply bodies are parsed as YAML, where "\/" is an
 * invalid escape.  The string belongs to obj (json-c) and lives until obj
 * changes or is freed.
 */
const char *kube_json_string(struct json_object *obj);

/*
 * Appends "name=value" to the path in *path with "?" or "&", percent-encoding
 * value.  *path must come from malloc(); it is reallocated.  Returns 0 or
 * -ENOMEM, in which case *path is unchanged.
 */
int kube_append_query(char **path, const char *name, const char *value);

struct kube_stream_options {
    /*
     * Receives each piece of a 2xx body as it arrives; a non-zero return
     * aborts the transfer and becomes the call's return value.
     */
    int (*on_data)(const char *data, size_t len, void *user);
    void *user;
    const atomic_bool *stop; /* checked about once a second, or NULL */
    long timeout_ms;         /* whole-stream deadline; 0 for none */
    long idle_timeout_s;     /* fail when no byte arrives for this long */
};

/*
 * GETs path and hands the body to opts->on_data instead of keeping it.  A
 * non-2xx response is kept and parsed into resp as for other calls.  Returns
 * 0 when the server ended the body, -ECANCELED when *opts->stop was set,
 * -ETIMEDOUT for either deadline, or another negative errno.
 */
int kube_stream(struct kube_client *client, const char *path,
                const struct kube_stream_options *opts,
                struct kube_response *resp);

#endif
