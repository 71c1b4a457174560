/*
 * Client configuration for the Kubernetes API: a kubeconfig file (YAML) or
 * the in-cluster service account.
 *
 * Loading resolves one context into a flat struct kubeconfig.  Certificate
 * and key files are read at load time, so a missing or unreadable file is
 * reported once, with the file and the context named, rather than as a TLS
 * failure on the first request.  Token files and exec plugins are only
 * recorded here; kube/auth.c reads and runs them when requests need them.
 */
#ifndef KUBE_KUBECONFIG_H
#define KUBE_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define KUBECONFIG_SERVICEACCOUNT_DIR                                          \
    "/var/run/secrets/kubernetes.io/serviceaccount"

/* Size that is always enough for the error text of the functions below. */
#define KUBECONFIG_ERROR_SIZE 512

/* A user's exec credential plugin (client.authentication.k8s.io). */
struct kubeconfig_exec {
    char *api_version;
    char *command;
    char **args; /* NULL-terminated */
    char **env;  /* "NAME=value" strings, NULL-terminated */
};

struct kubeconfig {
    char *source;    /* kubeconfig path, or the service account directory */
    char *context;   /* context name; NULL in-cluster */
    char *server;    /* "https://host:port" without a trailing slash */
    char *namespace; /* context or service account namespace, or "default" */
    bool insecure_skip_tls_verify;
    char *tls_server_name;
    char *ca_pem; /* certificate authority bundle, or NULL for the system's */
    size_t ca_pem_len;
    char *cert_pem; /* client certificate, or NULL */
    size_t cert_pem_len;
    char *key_pem; /* client key, or NULL */
    size_t key_pem_len;
    char *token;      /* static bearer token, or NULL */
    char *token_file; /* bearer token file, re-read by kube/auth.c, or NULL */
    struct kubeconfig_exec *exec; /* exec plugin, or NULL */
};

/*
 * Loads the kubeconfig at path and resolves context (NULL for its
 * current-context).  Relative file names inside it are taken relative to the
 * kubeconfig's directory.  Returns 0, or a negative errno with a one-line
 * message in err (err_size bytes, KUBECONFIG_ERROR_SIZE is enough) that names
 * the problem and the file or context.  On success the caller releases cfg
 * with kubeconfig_release(); on failure cfg holds nothing to release.
 */
int kubeconfig_load(struct kubeconfig *cfg, const char *path,
                    const char *context, char *err, size_t err_size);

/*
 * Loads the in-cluster configuration: token, ca.crt and namespace from dir
 * (NULL for KUBECONFIG_SERVICEACCOUNT_DIR) and the server from
 * KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.  The token is recorded
 * as a token file so that rotation on disk is picked up.  Errors and
 * ownership as for kubeconfig_load().
 */
int kubeconfig_load_in_cluster(struct kubeconfig *cfg, const char *dir,
                               char *err, size_t err_size);

/*
 * Loads the configuration a client run by a user would: the explicit path if
 * not NULL, else the first file named by $KUBECONFIG, else ~/.kube/config if
 * it exists, else the in-cluster configuration.  Errors and ownership as for
 * kubeconfig_load().
 */
int kubeconfig_load_default(struct kubeconfig *cfg, const char *path,
                            const char *context, char *err, size_t err_size);

/* Frees everything cfg owns and zeroes it; safe on a zeroed struct. */
void kubeconfig_release(struct kubeconfig *cfg);

/*
 * Decodes base64 text (whitespace ignored) into a new NUL-terminated buffer
 * in *out, which the caller frees with free(), and its length in *out_len.
 * Returns 0, -EINVAL for invalid text, or -ENOMEM.
 */
int kubeconfig_base64_decode(const char *text, char **out, size_t *out_len);

#endif
