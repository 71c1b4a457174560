/*
 * Request credentials that change over time: bearer token files (the
 * in-cluster service account token rotates on disk) and exec credential
 * plugins (tokens or client certificates with an expiry).
 *
 * A struct auth caches the current credentials under a mutex so that several
 * threads can send requests through one client.  Token files are re-read when
 * the cached copy is older than AUTH_TOKEN_FILE_MAX_AGE_S and after
 * auth_invalidate(), which the client calls on HTTP 401.  Exec plugins run
 * again when their expirationTimestamp has passed or after auth_invalidate().
 */
#ifndef KUBE_AUTH_H
#define KUBE_AUTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "kube/kubeconfig.h"

#define AUTH_TOKEN_FILE_MAX_AGE_S 60
/* An exec plugin that has not exited after this long is killed. */
#define AUTH_EXEC_TIMEOUT_S 30

/* One snapshot of the credentials for a request. */
struct auth_credentials {
    char *token;    /* bearer token, or NULL */
    char *cert_pem; /* client certificate from an exec plugin, or NULL */
    char *key_pem;  /* its key, or NULL */
};

struct auth {
    pthread_mutex_t lock;
    const struct kubeconfig *cfg; /* borrowed; outlives the struct auth */
    char *token;                  /* cached token from a file or a plugin */
    char *cert_pem;               /* cached exec plugin certificate */
    char *key_pem;                /* cached exec plugin key */
    time_t loaded_at;             /* CLOCK_MONOTONIC seconds of the load */
    time_t expires_at; /* wall-clock expiry of exec output, 0 for none */
    bool loaded;
    unsigned exec_runs; /* how often the plugin ran, for tests */
};

/* Prepares auth to serve the credentials of cfg, which it borrows. */
void auth_init(struct auth *auth, const struct kubeconfig *cfg);

/* Frees the cached credentials; safe on a zeroed struct. */
void auth_release(struct auth *auth);

/* Returns true when auth_invalidate() can yield different credentials. */
bool auth_refreshable(const struct auth *auth);

/*
 * Fills creds with copies of the current credentials, reading the token file
 * or running the exec plugin first when the cache is stale.  Returns 0, or a
 * negative errno with a one-line message in err.  The caller releases creds
 * with auth_credentials_release().
 */
int auth_get(struct auth *auth, struct auth_credentials *creds, char *err,
             size_t err_size);

/* Marks the cache stale so that the next auth_get() reloads. */
void auth_invalidate(struct auth *auth);

/* Frees what creds owns and zeroes it. */
void auth_credentials_release(struct auth_credentials *creds);

/*
 * Parses an ExecCredential JSON document (client.authentication.k8s.io) into
 * the token, certificate and key copies in creds and the expiry in *expires_at
 * (0 when the plugin gave none).  Returns 0 or -EINVAL with a message in err.
 */
int auth_parse_exec_credential(const char *json, struct auth_credentials *creds,
                               time_t *expires_at, char *err, size_t err_size);

#endif
