/*
 * Token files and exec credential plugins, cached under a mutex.
 *
 * The plugin runs with posix_spawnp() and its stdout in a pipe.  The parent
 * reads with poll() against a deadline, so a hung plugin is killed by its
 * PID rather than blocking every request.  Its stderr is inherited, as
 * kubectl does, so prompts and errors reach the user.
 */
#include "kube/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ExecCredential output is a token or a certificate and key: small. */
#define EXEC_OUTPUT_MAX_BYTES ((size_t)1024 * 1024)
/* Reuse exec output only while it stays valid for this much longer. */
#define EXEC_EXPIRY_MARGIN_S 10

extern char **environ;

static time_t monotonic_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

void auth_init(struct auth *auth, const struct kubeconfig *cfg)
{
    memset(auth, 0, sizeof(*auth));
    pthread_mutex_init(&auth->lock, NULL);
    auth->cfg = cfg;
}

static void clear_cache(struct auth *auth)
{
    free(auth->token);
    free(auth->cert_pem);
    free(auth->key_pem);
    auth->token = NULL;
    auth->cert_pem = NULL;
    auth->key_pem = NULL;
    auth->loaded = false;
    auth->expires_at = 0;
}

void auth_release(struct auth *auth)
{
    if (!auth || !auth->cfg)
        return;
    clear_cache(auth);
    pthread_mutex_destroy(&auth->lock);
    memset(auth, 0, sizeof(*auth));
}

bool auth_refreshable(const struct auth *auth)
{
    return auth->cfg->token_file || auth->cfg->exec;
}

void auth_credentials_release(struct auth_credentials *creds)
{
    if (!creds)
        return;
    free(creds->token);
    free(creds->cert_pem);
    free(creds->key_pem);
    memset(creds, 0, sizeof(*creds));
}

static int load_token_file(struct auth *auth, char *err, size_t err_size)
{
    const char *path = auth->cfg->token_file;
    char buf[16384];
    size_t len = 0;
    FILE *f;

    f = fopen(path, "re");
    if (!f) {
        int rc = -errno;

        snprintf(err, err_size, "failed to read token file %s: %s", path,
                 strerror(errno));
        return rc;
    }
    len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (len > 0 && strchr(" \t\r\n", buf[len - 1]))
        len--;
    buf[len] = '\0';
    if (len == 0) {
        snprintf(err, err_size, "token file %s is empty", path);
        return -EINVAL;
    }
    free(auth->token);
    auth->token = strdup(buf);
    if (!auth->token) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* Parses RFC 3339 "2006-01-02T15:04:05Z" or with an offset or fraction. */
static int parse_timestamp(const char *text, time_t *out)
{
    struct tm tm = {0};
    const char *rest = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
    long offset = 0;

    if (!rest)
        return -EINVAL;
    if (*rest == '.')
        while (*++rest >= '0' && *rest <= '9')
            ;
    if (*rest == '+' || *rest == '-') {
        int hours, minutes;

        if (sscanf(rest + 1, "%2d:%2d", &hours, &minutes) != 2)
            return -EINVAL;
        offset = (hours * 3600L + minutes * 60L) * (*rest == '-' ? -1 : 1);
    } else if (*rest != 'Z' && *rest != 'z') {
        return -EINVAL;
    }
    *out = timegm(&tm) - offset;
    return 0;
}

static const char *json_string_at(struct json_object *obj, const char *key)
{
    struct json_object *value;

    if (!json_object_object_get_ex(obj, key, &value) ||
        !json_object_is_type(value, json_type_string))
        return NULL;
    return json_object_get_string(value);
}

static int dup_or_null(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? -ENOMEM : 0;
}

int auth_parse_exec_credential(const char *json, struct auth_credentials *creds,
                               time_t *expires_at, char *err, size_t err_size)
{
    struct json_object *root, *status;
    const char *expiry;
    int rc = -EINVAL;

    memset(creds, 0, sizeof(*creds));
    *expires_at = 0;
    root = json_tokener_parse(json);
    if (!root || !json_object_object_get_ex(root, "status", &status)) {
        snprintf(err, err_size,
                 "exec plugin output is not an ExecCredential with a status");
        goto out_put_root;
    }
    if (dup_or_null(&creds->token, json_string_at(status, "token")) < 0 ||
        dup_or_null(&creds->cert_pem,
                    json_string_at(status, "clientCertificateData")) < 0 ||
        dup_or_null(&creds->key_pem, json_string_at(status, "clientKeyData")) <
            0) {
        snprintf(err, err_size, "out of memory");
        rc = -ENOMEM;
        goto out_release_creds;
    }
    if (!creds->token && !(creds->cert_pem && creds->key_pem)) {
        snprintf(err, err_size,
                 "exec plugin output has neither status.token nor "
                 "status.clientCertificateData and status.clientKeyData");
        goto out_release_creds;
    }
    expiry = json_string_at(status, "expirationTimestamp");
    if (expiry && parse_timestamp(expiry, expires_at) < 0) {
        snprintf(err, err_size,
                 "exec plugin output has an invalid "
                 "status.expirationTimestamp \"%s\"",
                 expiry);
        goto out_release_creds;
    }
    rc = 0;
    goto out_put_root;
out_release_creds:
    auth_credentials_release(creds);
out_put_root:
    json_object_put(root);
    return rc;
}

/* Builds the plugin's environment: ours, the kubeconfig's, and the info. */
static char **build_env(const struct kubeconfig_exec *exec, char **info)
{
    size_t n_environ = 0, n_exec = 0, i = 0;
    char **env;

    while (environ[n_environ])
        n_environ++;
    while (exec->env[n_exec])
        n_exec++;
    env = calloc(n_environ + n_exec + 2, sizeof(*env));
    if (!env)
        return NULL;
    if (asprintf(info,
                 "KUBERNETES_EXEC_INFO={\"apiVersion\":\"%s\",\"kind\":"
                 "\"ExecCredential\",\"spec\":{\"interactive\":false}}",
                 exec->api_version) < 0) {
        free(env);
        return NULL;
    }
    for (size_t k = 0; k < n_environ; k++)
        if (strncmp(environ[k], "KUBERNETES_EXEC_INFO=", 21) != 0)
            env[i++] = environ[k];
    for (size_t k = 0; k < n_exec; k++)
        env[i++] = exec->env[k];
    env[i] = *info;
    return env;
}

/* Reads the child's stdout until EOF, the size cap or the deadline. */
static int read_output(int fd, char **out, char *err, size_t err_size)
{
    time_t deadline = monotonic_seconds() + AUTH_EXEC_TIMEOUT_S;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);

    if (!buf)
        return -ENOMEM;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        time_t left = deadline - monotonic_seconds();
        ssize_t n;

        if (left <= 0 || poll(&pfd, 1, (int)left * 1000) == 0) {
            snprintf(err, err_size, "exec plugin timed out after %d s",
                     AUTH_EXEC_TIMEOUT_S);
            free(buf);
            return -ETIMEDOUT;
        }
        if (len + 1 == cap) {
            char *bigger;

            if (cap >= EXEC_OUTPUT_MAX_BYTES) {
                snprintf(err, err_size, "exec plugin output exceeds %zu bytes",
                         EXEC_OUTPUT_MAX_BYTES);
                free(buf);
                return -EFBIG;
            }
            bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                return -ENOMEM;
            }
            buf = bigger;
            cap *= 2;
        }
        n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    return 0;
}

static int spawn_plugin(const struct kubeconfig_exec *exec, int out_fd,
                        pid_t *pid, char *err, size_t err_size)
{
    posix_spawn_file_actions_t actions;
    char **argv, **env, *info = NULL;
    size_t n_args = 0;
    int rc = -ENOMEM;

    while (exec->args[n_args])
        n_args++;
    argv = calloc(n_args + 2, sizeof(*argv));
    env = build_env(exec, &info);
    if (!argv || !env)
        goto out_free;
    argv[0] = exec->command;
    memcpy(argv + 1, exec->args, n_args * sizeof(*argv));
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out_fd, STDOUT_FILENO);
    rc = -posix_spawnp(pid, exec->command, &actions, NULL, argv, env);
    posix_spawn_file_actions_destroy(&actions);
    if (rc < 0)
        snprintf(err, err_size, "failed to run exec plugin %s: %s",
                 exec->command, strerror(-rc));
out_free:
    if (rc == -ENOMEM)
        snprintf(err, err_size, "out of memory");
    free(info);
    free(env);
    free(argv);
    return rc;
}

static int run_plugin(struct auth *auth, char *err, size_t err_size)
{
    const struct kubeconfig_exec *exec = auth->cfg->exec;
    struct auth_credentials creds;
    char *output = NULL;
    int pipe_fds[2], status, rc;
    pid_t pid;

    if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
        rc = -errno;
        snprintf(err, err_size, "failed to run exec plugin %s: %s",
                 exec->command, strerror(errno));
        return rc;
    }
    rc = spawn_plugin(exec, pipe_fds[1], &pid, err, err_size);
    close(pipe_fds[1]);
    if (rc < 0)
        goto out_close;
    auth->exec_runs++;
    rc = read_output(pipe_fds[0], &output, err, err_size);
    if (rc < 0)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (rc < 0)
        goto out_close;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(err, err_size, "exec plugin %s failed with status %d",
                 exec->command,
                 WIFEXITED(status) ? WEXITSTATUS(status)
                                   : 128 + WTERMSIG(status));
        rc = -EIO;
        goto out_free_output;
    }
    rc = auth_parse_exec_credential(output, &creds, &auth->expires_at, err,
                                    err_size);
    if (rc < 0)
        goto out_free_output;
    auth->token = creds.token;
    auth->cert_pem = creds.cert_pem;
    auth->key_pem = creds.key_pem;
out_free_output:
    free(output);
out_close:
    close(pipe_fds[0]);
    return rc;
}

static bool cache_fresh(const struct auth *auth)
{
    if (!auth->loaded)
        return false;
    if (auth->cfg->exec)
        return auth->expires_at == 0 ||
               time(NULL) + EXEC_EXPIRY_MARGIN_S < auth->expires_at;
    return monotonic_seconds() - auth->loaded_at < AUTH_TOKEN_FILE_MAX_AGE_S;
}

static int reload(struct auth *auth, char *err, size_t err_size)
{
    int rc;

    clear_cache(auth);
    if (auth->cfg->exec)
        rc = run_plugin(auth, err, err_size);
    else
        rc = load_token_file(auth, err, err_size);
    if (rc < 0)
        return rc;
    auth->loaded = true;
    auth->loaded_at = monotonic_seconds();
    return 0;
}

int auth_get(struct auth *auth, struct auth_credentials *creds, char *err,
             size_t err_size)
{
    const char *token;
    int rc = 0;

    memset(creds, 0, sizeof(*creds));
    pthread_mutex_lock(&auth->lock);
    if (auth_refreshable(auth) && !cache_fresh(auth)) {
        rc = reload(auth, err, err_size);
        if (rc < 0)
            goto out_unlock;
    }
    token = auth->token ? auth->token : auth->cfg->token;
    if (dup_or_null(&creds->token, token) < 0 ||
        dup_or_null(&creds->cert_pem, auth->cert_pem) < 0 ||
        dup_or_null(&creds->key_pem, auth->key_pem) < 0) {
        auth_credentials_release(creds);
        snprintf(err, err_size, "out of memory");
        rc = -ENOMEM;
    }
out_unlock:
    pthread_mutex_unlock(&auth->lock);
    return rc;
}

void auth_invalidate(struct auth *auth)
{
    pthread_mutex_lock(&auth->lock);
    auth->loaded = false;
    pthread_mutex_unlock(&auth->lock);
}
