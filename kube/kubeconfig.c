/*
 * Kubeconfig and in-cluster configuration loading.
 *
 * The YAML is loaded with libyaml's document API and walked as a tree: the
 * file is small, and a tree lets the context, cluster and user entries be
 * looked up by name in any order.  Every error message starts with what was
 * wrong and ends with where (context and file), and each failure path writes
 * exactly one message.
 */
#include "kube/kubeconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/* Kubeconfigs, certificates and tokens are small; this bounds a bad path. */
#define FILE_MAX_BYTES ((off_t)4 * 1024 * 1024)

struct loader {
    yaml_document_t doc;
    const char *path;
    char *dir; /* directory of path, for relative file names */
    const char *context;
    char *err;
    size_t err_size;
};

static int fail(struct loader *ld, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes the message into the caller's buffer and returns rc. */
static int fail(struct loader *ld, int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(ld->err, ld->err_size, fmt, ap);
    va_end(ap);
    return rc;
}

static int read_file(const char *path, char **out, size_t *out_len)
{
    struct stat st;
    char *buf = NULL;
    size_t len = 0;
    int fd, rc = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out_close;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto out_close;
    }
    if (st.st_size > FILE_MAX_BYTES) {
        rc = -EFBIG;
        goto out_close;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto out_close;
    }
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            free(buf);
            goto out_close;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
out_close:
    close(fd);
    return rc;
}

static int decode_char(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int kubeconfig_base64_decode(const char *text, char **out, size_t *out_len)
{
    size_t cap = strlen(text) / 4 * 3 + 4, len = 0;
    uint32_t acc = 0;
    int bits = 0;
    bool padded = false;
    char *buf;

    buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (const char *p = text; *p; p++) {
        int v;

        if (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
            continue;
        if (*p == '=') {
            padded = true;
            continue;
        }
        v = decode_char(*p);
        if (v < 0 || padded) {
            free(buf);
            return -EINVAL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[len++] = (char)((acc >> bits) & 0xff);
        }
    }
    /* Six leftover bits cannot come from whole bytes. */
    if (bits >= 6) {
        free(buf);
        return -EINVAL;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map,
                            const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(doc, pair->key);

        if (k && k->type == YAML_SCALAR_NODE &&
            strcmp((const char *)k->data.scalar.value, key) == 0)
            return yaml_document_get_node(doc, pair->value);
    }
    return NULL;
}

/* Returns the scalar text, or NULL when absent, empty or not a scalar. */
static const char *scalar(yaml_node_t *node)
{
    if (!node || node->type != YAML_SCALAR_NODE ||
        node->data.scalar.length == 0)
        return NULL;
    return (const char *)node->data.scalar.value;
}

static const char *map_scalar(yaml_document_t *doc, yaml_node_t *map,
                              const char *key)
{
    return scalar(map_get(doc, map, key));
}

/*
 * Finds the entry called name in a list such as "clusters" and returns its
 * inner mapping (the value of "cluster"), or NULL.
 */
static yaml_node_t *find_named(yaml_document_t *doc, const char *list_key,
                               const char *inner_key, const char *name)
{
    yaml_node_t *root = yaml_document_get_root_node(doc);
    yaml_node_t *list = map_get(doc, root, list_key);

    if (!list || list->type != YAML_SEQUENCE_NODE)
        return NULL;
    for (yaml_node_item_t *item = list->data.sequence.items.start;
         item < list->data.sequence.items.top; item++) {
        yaml_node_t *entry = yaml_document_get_node(doc, *item);
        const char *entry_name = map_scalar(doc, entry, "name");

        if (entry_name && strcmp(entry_name, name) == 0)
            return map_get(doc, entry, inner_key);
    }
    return NULL;
}

static int load_document(struct loader *ld)
{
    yaml_parser_t parser;
    char *text = NULL;
    size_t len = 0;
    int rc;

    rc = read_file(ld->path, &text, &len);
    if (rc < 0)
        return fail(ld, rc, "failed to read kubeconfig %s: %s", ld->path,
                    strerror(-rc));
    if (!yaml_parser_initialize(&parser)) {
        rc = fail(ld, -ENOMEM, "failed to parse kubeconfig %s: out of memory",
                  ld->path);
        goto out_free_text;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &ld->doc)) {
        rc = fail(ld, -EINVAL,
                  "invalid YAML in kubeconfig %s at line %zu column %zu: %s",
                  ld->path, parser.problem_mark.line + 1,
                  parser.problem_mark.column + 1,
                  parser.problem ? parser.problem : "unknown error");
        goto out_delete_parser;
    }
    if (!yaml_document_get_root_node(&ld->doc) ||
        yaml_document_get_root_node(&ld->doc)->type != YAML_MAPPING_NODE) {
        yaml_document_delete(&ld->doc);
        rc = fail(ld, -EINVAL,
                  "invalid kubeconfig %s: the document is not a mapping",
                  ld->path);
        goto out_delete_parser;
    }
out_delete_parser:
    yaml_parser_delete(&parser);
out_free_text:
    free(text);
    return rc;
}

/* Returns name resolved against the kubeconfig's directory, or NULL. */
static char *resolve_path(struct loader *ld, const char *name)
{
    char *path;

    if (name[0] == '/')
        return strdup(name);
    if (asprintf(&path, "%s/%s", ld->dir, name) < 0)
        return NULL;
    return path;
}

/*
 * Sets *pem from the "<field>-data" (base64) or "<field>" (file) entry of
 * map.  what names the owner for messages, e.g. `cluster "kind"`.
 */
static int load_pem(struct loader *ld, yaml_node_t *map, const char *field,
                    const char *what, char **pem, size_t *pem_len)
{
    char data_key[64];
    const char *data, *file;
    char *path;
    int rc;

    snprintf(data_key, sizeof(data_key), "%s-data", field);
    data = map_scalar(&ld->doc, map, data_key);
    file = map_scalar(&ld->doc, map, field);
    if (data) {
        rc = kubeconfig_base64_decode(data, pem, pem_len);
        if (rc < 0)
            return fail(ld, rc,
                        "invalid base64 in %s of %s (context \"%s\") in "
                        "kubeconfig %s",
                        data_key, what, ld->context, ld->path);
        return 0;
    }
    if (!file)
        return 0;
    path = resolve_path(ld, file);
    if (!path)
        return fail(ld, -ENOMEM, "out of memory");
    rc = read_file(path, pem, pem_len);
    if (rc < 0)
        fail(ld, rc,
             "failed to read %s %s of %s (context \"%s\") in kubeconfig %s: "
             "%s",
             field, path, what, ld->context, ld->path, strerror(-rc));
    free(path);
    return rc;
}

static int check_pem(struct loader *ld, const char *pem, const char *field,
                     const char *what)
{
    if (pem && !strstr(pem, "-----BEGIN "))
        return fail(ld, -EINVAL,
                    "invalid %s of %s (context \"%s\") in kubeconfig %s: "
                    "no PEM block found",
                    field, what, ld->context, ld->path);
    return 0;
}

static int strdup_field(char **dst, const char *src)
{
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -ENOMEM;
}

static int load_cluster(struct loader *ld, struct kubeconfig *cfg,
                        const char *name)
{
    yaml_node_t *cluster;
    const char *server, *insecure;
    char what[300];
    int rc;

    snprintf(what, sizeof(what), "cluster \"%s\"", name);
    cluster = find_named(&ld->doc, "clusters", "cluster", name);
    if (!cluster)
        return fail(ld, -ENOENT,
                    "cluster \"%s\" of context \"%s\" not found in kubeconfig "
                    "%s",
                    name, ld->context, ld->path);
    server = map_scalar(&ld->doc, cluster, "server");
    if (!server)
        return fail(ld, -EINVAL,
                    "cluster \"%s\" (context \"%s\") in kubeconfig %s has no "
                    "server",
                    name, ld->context, ld->path);
    cfg->server =
        strndup(server, strlen(server) - (server[strlen(server) - 1] == '/'));
    if (!cfg->server)
        return fail(ld, -ENOMEM, "out of memory");
    insecure = map_scalar(&ld->doc, cluster, "insecure-skip-tls-verify");
    cfg->insecure_skip_tls_verify = insecure && strcmp(insecure, "true") == 0;
    rc = strdup_field(&cfg->tls_server_name,
                      map_scalar(&ld->doc, cluster, "tls-server-name"));
    if (rc < 0)
        return fail(ld, rc, "out of memory");
    rc = load_pem(ld, cluster, "certificate-authority", what, &cfg->ca_pem,
                  &cfg->ca_pem_len);
    if (rc < 0)
        return rc;
    return check_pem(ld, cfg->ca_pem, "certificate-authority", what);
}

static char **load_string_list(yaml_document_t *doc, yaml_node_t *seq)
{
    size_t n = 0;
    char **list;

    if (seq && seq->type == YAML_SEQUENCE_NODE)
        n = (size_t)(seq->data.sequence.items.top -
                     seq->data.sequence.items.start);
    list = calloc(n + 1, sizeof(*list));
    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item =
            yaml_document_get_node(doc, seq->data.sequence.items.start[i]);
        const char *text = scalar(item);

        list[i] = strdup(text ? text : "");
        if (!list[i])
            goto out_free_list;
    }
    return list;
out_free_list:
    for (size_t i = 0; list[i]; i++)
        free(list[i]);
    free(list);
    return NULL;
}

/* Turns exec.env, a list of {name, value}, into "NAME=value" strings. */
static char **load_env_list(yaml_document_t *doc, yaml_node_t *seq)
{
    size_t n = 0;
    char **list;

    if (seq && seq->type == YAML_SEQUENCE_NODE)
        n = (size_t)(seq->data.sequence.items.top -
                     seq->data.sequence.items.start);
    list = calloc(n + 1, sizeof(*list));
    if (!list)
        return NULL;
    for (size_t i = 0, out = 0; i < n; i++) {
        yaml_node_t *item =
            yaml_document_get_node(doc, seq->data.sequence.items.start[i]);
        const char *name = map_scalar(doc, item, "name");
        const char *value = map_scalar(doc, item, "value");

        if (!name)
            continue;
        if (asprintf(&list[out], "%s=%s", name, value ? value : "") < 0) {
            list[out] = NULL;
            goto out_free_list;
        }
        out++;
    }
    return list;
out_free_list:
    for (size_t i = 0; list[i]; i++)
        free(list[i]);
    free(list);
    return NULL;
}

static void exec_free(struct kubeconfig_exec *exec)
{
    if (!exec)
        return;
    free(exec->api_version);
    free(exec->command);
    for (size_t i = 0; exec->args && exec->args[i]; i++)
        free(exec->args[i]);
    free(exec->args);
    for (size_t i = 0; exec->env && exec->env[i]; i++)
        free(exec->env[i]);
    free(exec->env);
    free(exec);
}

static int load_exec(struct loader *ld, struct kubeconfig *cfg,
                     yaml_node_t *node, const char *user)
{
    const char *command = map_scalar(&ld->doc, node, "command");
    const char *api_version = map_scalar(&ld->doc, node, "apiVersion");
    struct kubeconfig_exec *exec;

    if (!command)
        return fail(ld, -EINVAL,
                    "exec plugin of user \"%s\" (context \"%s\") in "
                    "kubeconfig %s has no command",
                    user, ld->context, ld->path);
    exec = calloc(1, sizeof(*exec));
    if (!exec)
        return fail(ld, -ENOMEM, "out of memory");
    cfg->exec = exec;
    /* As kubectl does, a relative command with a "/" is file-relative. */
    if (strchr(command, '/'))
        exec->command = resolve_path(ld, command);
    else
        exec->command = strdup(command);
    exec->api_version =
        strdup(api_version ? api_version : "client.authentication.k8s.io/v1");
    exec->args = load_string_list(&ld->doc, map_get(&ld->doc, node, "args"));
    exec->env = load_env_list(&ld->doc, map_get(&ld->doc, node, "env"));
    if (!exec->command || !exec->api_version || !exec->args || !exec->env)
        return fail(ld, -ENOMEM, "out of memory");
    return 0;
}

static int load_user(struct loader *ld, struct kubeconfig *cfg,
                     const char *name)
{
    yaml_node_t *user, *exec;
    const char *token_file;
    char what[300];
    int rc;

    snprintf(what, sizeof(what), "user \"%s\"", name);
    user = find_named(&ld->doc, "users", "user", name);
    if (!user)
        return fail(ld, -ENOENT,
                    "user \"%s\" of context \"%s\" not found in kubeconfig %s",
                    name, ld->context, ld->path);
    rc = load_pem(ld, user, "client-certificate", what, &cfg->cert_pem,
                  &cfg->cert_pem_len);
    if (rc == 0)
        rc = check_pem(ld, cfg->cert_pem, "client-certificate", what);
    if (rc == 0)
        rc = load_pem(ld, user, "client-key", what, &cfg->key_pem,
                      &cfg->key_pem_len);
    if (rc == 0)
        rc = check_pem(ld, cfg->key_pem, "client-key", what);
    if (rc < 0)
        return rc;
    if (!cfg->cert_pem != !cfg->key_pem)
        return fail(ld, -EINVAL,
                    "user \"%s\" (context \"%s\") in kubeconfig %s has a "
                    "client certificate without a key or a key without a "
                    "certificate",
                    name, ld->context, ld->path);
    if (strdup_field(&cfg->token, map_scalar(&ld->doc, user, "token")) < 0)
        return fail(ld, -ENOMEM, "out of memory");
    token_file = map_scalar(&ld->doc, user, "tokenFile");
    if (token_file) {
        cfg->token_file = resolve_path(ld, token_file);
        if (!cfg->token_file)
            return fail(ld, -ENOMEM, "out of memory");
    }
    exec = map_get(&ld->doc, user, "exec");
    if (exec && exec->type == YAML_MAPPING_NODE)
        return load_exec(ld, cfg, exec, name);
    return 0;
}

static int load_context(struct loader *ld, struct kubeconfig *cfg)
{
    yaml_node_t *root = yaml_document_get_root_node(&ld->doc);
    yaml_node_t *context;
    const char *cluster, *user, *namespace;
    int rc;

    if (!ld->context)
        ld->context = map_scalar(&ld->doc, root, "current-context");
    if (!ld->context)
        return fail(ld, -ENOENT,
                    "no context given and current-context is not set in "
                    "kubeconfig %s",
                    ld->path);
    context = find_named(&ld->doc, "contexts", "context", ld->context);
    if (!context)
        return fail(ld, -ENOENT, "context \"%s\" not found in kubeconfig %s",
                    ld->context, ld->path);
    cluster = map_scalar(&ld->doc, context, "cluster");
    if (!cluster)
        return fail(ld, -EINVAL,
                    "context \"%s\" in kubeconfig %s names no cluster",
                    ld->context, ld->path);
    namespace = map_scalar(&ld->doc, context, "namespace");
    cfg->context = strdup(ld->context);
    cfg->namespace = strdup(namespace ? namespace : "default");
    if (!cfg->context || !cfg->namespace)
        return fail(ld, -ENOMEM, "out of memory");
    rc = load_cluster(ld, cfg, cluster);
    if (rc < 0)
        return rc;
    user = map_scalar(&ld->doc, context, "user");
    if (!user)
        return 0;
    return load_user(ld, cfg, user);
}

int kubeconfig_load(struct kubeconfig *cfg, const char *path,
                    const char *context, char *err, size_t err_size)
{
    struct loader ld = {
        .path = path,
        .context = context,
        .err = err,
        .err_size = err_size,
    };
    char *slash;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    ld.dir = strdup(path);
    if (!ld.dir)
        return fail(&ld, -ENOMEM, "out of memory");
    slash = strrchr(ld.dir, '/');
    if (slash)
        *slash = '\0';
    else
        strcpy(ld.dir, ".");
    if (slash == ld.dir)
        strcpy(ld.dir, "/");

    rc = load_document(&ld);
    if (rc < 0)
        goto out_free_dir;
    cfg->source = strdup(path);
    rc = cfg->source ? load_context(&ld, cfg)
                     : fail(&ld, -ENOMEM, "out of memory");
    if (rc < 0)
        kubeconfig_release(cfg);
    yaml_document_delete(&ld.doc);
out_free_dir:
    free(ld.dir);
    return rc;
}

/* Reads a small text file and strips trailing whitespace. */
static int read_trimmed(const char *path, char **out)
{
    size_t len = 0;
    int rc;

    rc = read_file(path, out, &len);
    if (rc < 0)
        return rc;
    while (len > 0 && strchr(" \t\r\n", (*out)[len - 1]))
        (*out)[--len] = '\0';
    return 0;
}

static int load_in_cluster_files(struct kubeconfig *cfg, const char *dir,
                                 char *err, size_t err_size)
{
    char path[PATH_MAX];
    char *token = NULL;
    int rc;

    snprintf(path, sizeof(path), "%s/token", dir);
    rc = read_trimmed(path, &token);
    if (rc < 0) {
        snprintf(err, err_size,
                 "failed to read the service account token %s: %s", path,
                 strerror(-rc));
        return rc;
    }
    free(token);
    cfg->token_file = strdup(path);

    snprintf(path, sizeof(path), "%s/ca.crt", dir);
    rc = read_file(path, &cfg->ca_pem, &cfg->ca_pem_len);
    if (rc < 0) {
        snprintf(err, err_size,
                 "failed to read the service account certificate-authority "
                 "%s: %s",
                 path, strerror(-rc));
        return rc;
    }
    if (!strstr(cfg->ca_pem, "-----BEGIN ")) {
        snprintf(err, err_size,
                 "invalid service account certificate-authority %s: no PEM "
                 "block found",
                 path);
        return -EINVAL;
    }

    /* The namespace file is optional; "default" is what kubectl assumes. */
    snprintf(path, sizeof(path), "%s/namespace", dir);
    if (read_trimmed(path, &cfg->namespace) < 0 || !cfg->namespace[0]) {
        free(cfg->namespace);
        cfg->namespace = strdup("default");
    }
    if (!cfg->token_file || !cfg->namespace) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

int kubeconfig_load_in_cluster(struct kubeconfig *cfg, const char *dir,
                               char *err, size_t err_size)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    bool ipv6;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    if (!dir)
        dir = KUBECONFIG_SERVICEACCOUNT_DIR;
    if (!host || !host[0] || !port || !port[0]) {
        snprintf(err, err_size,
                 "not running in a cluster: KUBERNETES_SERVICE_HOST and "
                 "KUBERNETES_SERVICE_PORT must both be set");
        return -ENOENT;
    }
    ipv6 = strchr(host, ':') != NULL;
    if (asprintf(&cfg->server, "https://%s%s%s:%s", ipv6 ? "[" : "", host,
                 ipv6 ? "]" : "", port) < 0) {
        cfg->server = NULL;
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    cfg->source = strdup(dir);
    rc = cfg->source ? load_in_cluster_files(cfg, dir, err, err_size) : -ENOMEM;
    if (rc == -ENOMEM)
        snprintf(err, err_size, "out of memory");
    if (rc < 0)
        kubeconfig_release(cfg);
    return rc;
}

int kubeconfig_load_default(struct kubeconfig *cfg, const char *path,
                            const char *context, char *err, size_t err_size)
{
    const char *env = getenv("KUBECONFIG");
    const char *home = getenv("HOME");
    char home_path[PATH_MAX];

    if (path)
        return kubeconfig_load(cfg, path, context, err, err_size);
    /*
     * NEEDSWORK: kubectl merges every file of a colon-separated $KUBECONFIG,
     * and the first file wins for each entry.  This loads the first file
     * only, so contexts defined in later files are not found.
     */
    if (env && env[0]) {
        size_t len = strcspn(env, ":");
        char first[PATH_MAX];

        if (len > 0 && len < sizeof(first)) {
            memcpy(first, env, len);
            first[len] = '\0';
            return kubeconfig_load(cfg, first, context, err, err_size);
        }
    }
    if (home && home[0]) {
        snprintf(home_path, sizeof(home_path), "%s/.kube/config", home);
        if (access(home_path, F_OK) == 0)
            return kubeconfig_load(cfg, home_path, context, err, err_size);
    }
    return kubeconfig_load_in_cluster(cfg, NULL, err, err_size);
}

void kubeconfig_release(struct kubeconfig *cfg)
{
    if (!cfg)
        return;
    free(cfg->source);
    free(cfg->context);
    free(cfg->server);
    free(cfg->namespace);
    free(cfg->tls_server_name);
    free(cfg->ca_pem);
    free(cfg->cert_pem);
    free(cfg->key_pem);
    free(cfg->token);
    free(cfg->token_file);
    exec_free(cfg->exec);
    memset(cfg, 0, sizeof(*cfg));
}
