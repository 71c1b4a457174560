/*
 * Unit tests for kube/kubeconfig.c and kube/auth.c: every supported way to
 * configure a cluster and a user, and the one-line message for each kind of
 * bad configuration.  Fixtures live in test/unit/fixtures/kube/; the tests
 * run from the repository root, as test/run.sh does.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kube/auth.h"
#include "kube/kubeconfig.h"

#define FIXTURES     "test/unit/fixtures/kube"
#define KUBECONFIG   FIXTURES "/kubeconfig.yaml"
#define BAD_CONTEXTS FIXTURES "/bad-contexts.yaml"

static char err[KUBECONFIG_ERROR_SIZE];

static void load_ok(struct kubeconfig *cfg, const char *path,
                    const char *context)
{
    int rc = kubeconfig_load(cfg, path, context, err, sizeof(err));

    if (rc != 0)
        fail_msg("kubeconfig_load(%s, %s) failed: %s", path,
                 context ? context : "current-context", err);
}

static void load_fails(const char *path, const char *context, int expected_rc)
{
    struct kubeconfig cfg;

    err[0] = '\0';
    assert_int_equal(kubeconfig_load(&cfg, path, context, err, sizeof(err)),
                     expected_rc);
    assert_null(strchr(err, '\n'));
}

static void current_context_with_token(void **state)
{
    struct kubeconfig cfg;

    (void)state;
    load_ok(&cfg, KUBECONFIG, NULL);
    assert_string_equal(cfg.context, "token");
    assert_string_equal(cfg.server, "https://127.0.0.1:6443");
    assert_string_equal(cfg.namespace, "team-a");
    assert_string_equal(cfg.token, "static-token");
    assert_non_null(strstr(cfg.ca_pem, "BEGIN CERTIFICATE"));
    assert_int_equal(cfg.ca_pem_len, strlen(cfg.ca_pem));
    assert_false(cfg.insecure_skip_tls_verify);
    assert_null(cfg.cert_pem);
    assert_null(cfg.exec);
    kubeconfig_release(&cfg);
}

static void client_cert_from_files(void **state)
{
    struct kubeconfig cfg;

    (void)state;
    load_ok(&cfg, KUBECONFIG, "cert-files");
    assert_string_equal(cfg.namespace, "default");
    assert_non_null(strstr(cfg.cert_pem, "BEGIN CERTIFICATE"));
    assert_non_null(strstr(cfg.key_pem, "BEGIN PRIVATE KEY"));
    assert_null(cfg.token);
    kubeconfig_release(&cfg);
}

static void client_cert_from_data(void **state)
{
    struct kubeconfig cfg;
    struct kubeconfig files;

    (void)state;
    load_ok(&cfg, KUBECONFIG, "cert-data");
    load_ok(&files, KUBECONFIG, "cert-files");
    assert_string_equal(cfg.server, "https://[::1]:6443");
    assert_string_equal(cfg.cert_pem, files.cert_pem);
    assert_string_equal(cfg.key_pem, files.key_pem);
    assert_string_equal(cfg.ca_pem, files.ca_pem);
    kubeconfig_release(&files);
    kubeconfig_release(&cfg);
}

static void insecure_with_token_file(void **state)
{
    struct kubeconfig cfg;
    struct auth auth;
    struct auth_credentials creds;

    (void)state;
    load_ok(&cfg, KUBECONFIG, "token-file");
    assert_true(cfg.insecure_skip_tls_verify);
    assert_null(cfg.ca_pem);
    assert_string_equal(cfg.token_file, FIXTURES "/token");

    auth_init(&auth, &cfg);
    assert_true(auth_refreshable(&auth));
    assert_int_equal(auth_get(&auth, &creds, err, sizeof(err)), 0);
    assert_string_equal(creds.token, "token-from-file");
    auth_credentials_release(&creds);
    auth_release(&auth);
    kubeconfig_release(&cfg);
}

static void token_file_reread_after_invalidate(void **state)
{
    char dir[] = "/tmp/test-kube-token.XXXXXX";
    char path[64];
    struct kubeconfig cfg = {0};
    struct auth auth;
    struct auth_credentials creds;
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/token", dir);
    f = fopen(path, "w");
    fputs("first\n", f);
    fclose(f);
    cfg.token_file = path;
    auth_init(&auth, &cfg);
    assert_int_equal(auth_get(&auth, &creds, err, sizeof(err)), 0);
    assert_string_equal(creds.token, "first");
    auth_credentials_release(&creds);

    f = fopen(path, "w");
    fputs("second\n", f);
    fclose(f);
    /* Within AUTH_TOKEN_FILE_MAX_AGE_S the cached token is kept. */
    assert_int_equal(auth_get(&auth, &creds, err, sizeof(err)), 0);
    assert_string_equal(creds.token, "first");
    auth_credentials_release(&creds);
    auth_invalidate(&auth);
    assert_int_equal(auth_get(&auth, &creds, err, sizeof(err)), 0);
    assert_string_equal(creds.token, "second");
    auth_credentials_release(&creds);

    auth_release(&auth);
    unlink(path);
    rmdir(dir);
}

static void exec_plugin_token_cached(void **state)
{
    struct kubeconfig cfg;
    struct auth auth;
    struct auth_credentials creds;

    (void)state;
    load_ok(&cfg, KUBECONFIG, "exec");
    assert_non_null(cfg.exec);
    assert_string_equal(cfg.exec->command, FIXTURES "/./exec-plugin.sh");
    assert_string_equal(cfg.exec->args[0], "valid");
    assert_null(cfg.exec->args[1]);
    assert_string_equal(cfg.exec->env[0], "TOKEN_PREFIX=from-env");

    auth_init(&auth, &cfg);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(auth_get(&auth, &creds, err, sizeof(err)), 0);
        assert_string_equal(creds.token, "from-env-token");
        auth_credentials_release(&creds);
    }
    assert_int_equal(auth.exec_runs, 1);
    auth_invalidate(&auth);
    assert_int_equal(auth_get(&auth, &creds, err, sizeof(err)), 0);
    auth_credentials_release(&creds);
    assert_int_equal(auth.exec_runs, 2);
    auth_release(&auth);
    kubeconfig_release(&cfg);
}

static void exec_plugin_expired_rerun(void **state)
{
    struct kubeconfig cfg;
    struct auth auth;
    struct auth_credentials creds;

    (void)state;
    load_ok(&cfg, KUBECONFIG, "exec-expired");
    auth_init(&auth, &cfg);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(auth_get(&auth, &creds, err, sizeof(err)), 0);
        assert_string_equal(creds.token, "old-token");
        auth_credentials_release(&creds);
    }
    assert_int_equal(auth.exec_runs, 2);
    auth_release(&auth);
    kubeconfig_release(&cfg);
}

static void exec_plugin_client_cert(void **state)
{
    struct kubeconfig cfg;
    struct auth auth;
    struct auth_credentials creds;

    (void)state;
    load_ok(&cfg, KUBECONFIG, "exec-cert");
    auth_init(&auth, &cfg);
    assert_int_equal(auth_get(&auth, &creds, err, sizeof(err)), 0);
    assert_null(creds.token);
    assert_non_null(strstr(creds.cert_pem, "BEGIN CERTIFICATE"));
    assert_non_null(strstr(creds.key_pem, "BEGIN PRIVATE KEY"));
    auth_credentials_release(&creds);
    auth_release(&auth);
    kubeconfig_release(&cfg);
}

static void exec_credential_parse_errors(void **state)
{
    struct auth_credentials creds;
    time_t expiry;

    (void)state;
    assert_int_equal(
        auth_parse_exec_credential("{}", &creds, &expiry, err, sizeof(err)),
        -EINVAL);
    assert_string_equal(
        err, "exec plugin output is not an ExecCredential with a status");
    assert_int_equal(auth_parse_exec_credential("{\"status\":{}}", &creds,
                                                &expiry, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "neither status.token"));
    assert_int_equal(
        auth_parse_exec_credential("{\"status\":{\"token\":\"t\","
                                   "\"expirationTimestamp\":\"soon\"}}",
                                   &creds, &expiry, err, sizeof(err)),
        -EINVAL);
    assert_string_equal(err, "exec plugin output has an invalid "
                             "status.expirationTimestamp \"soon\"");
    assert_int_equal(
        auth_parse_exec_credential("{\"status\":{\"token\":\"t\","
                                   "\"expirationTimestamp\":"
                                   "\"2024-05-01T10:00:00.5-02:00\"}}",
                                   &creds, &expiry, err, sizeof(err)),
        0);
    assert_int_equal(expiry, 1714564800);
    auth_credentials_release(&creds);
}

static void kubeconfig_env_first_file(void **state)
{
    struct kubeconfig cfg;

    (void)state;
    setenv("KUBECONFIG", KUBECONFIG ":/nonexistent/second", 1);
    assert_int_equal(
        kubeconfig_load_default(&cfg, NULL, "cert-data", err, sizeof(err)), 0);
    assert_string_equal(cfg.source, KUBECONFIG);
    assert_string_equal(cfg.context, "cert-data");
    kubeconfig_release(&cfg);

    /* An explicit path wins over $KUBECONFIG. */
    setenv("KUBECONFIG", "/nonexistent/first", 1);
    assert_int_equal(
        kubeconfig_load_default(&cfg, KUBECONFIG, NULL, err, sizeof(err)), 0);
    assert_string_equal(cfg.context, "token");
    kubeconfig_release(&cfg);
    unsetenv("KUBECONFIG");
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void remove_files(const char *dir)
{
    const char *names[] = {"token", "ca.crt", "namespace"};
    char path[256];

    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void in_cluster_service_account(void **state)
{
    char dir[] = "/tmp/test-kube-sa.XXXXXX";
    struct kubeconfig cfg;

    (void)state;
    assert_non_null(mkdtemp(dir));
    write_file(dir, "token", "sa-token\n");
    write_file(dir, "ca.crt",
               "-----BEGIN CERTIFICATE-----\nQQ==\n"
               "-----END CERTIFICATE-----\n");
    write_file(dir, "namespace", "memstress-system");
    setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "26443", 1);
    assert_int_equal(kubeconfig_load_in_cluster(&cfg, dir, err, sizeof(err)),
                     0);
    assert_string_equal(cfg.server, "https://127.0.0.1:26443");
    assert_string_equal(cfg.namespace, "memstress-system");
    assert_non_null(strstr(cfg.token_file, "/token"));
    assert_null(cfg.token);
    assert_non_null(cfg.ca_pem);
    kubeconfig_release(&cfg);

    setenv("KUBERNETES_SERVICE_HOST", "::1", 1);
    assert_int_equal(kubeconfig_load_in_cluster(&cfg, dir, err, sizeof(err)),
                     0);
    assert_string_equal(cfg.server, "https://[::1]:26443");
    kubeconfig_release(&cfg);
    remove_files(dir);
}

static void in_cluster_errors(void **state)
{
    char dir[] = "/tmp/test-kube-sa.XXXXXX";
    char expected[256];
    struct kubeconfig cfg;

    (void)state;
    assert_non_null(mkdtemp(dir));
    unsetenv("KUBERNETES_SERVICE_HOST");
    assert_int_equal(kubeconfig_load_in_cluster(&cfg, dir, err, sizeof(err)),
                     -ENOENT);
    assert_string_equal(err, "not running in a cluster: "
                             "KUBERNETES_SERVICE_HOST and "
                             "KUBERNETES_SERVICE_PORT must both be set");

    setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "26443", 1);
    assert_int_equal(kubeconfig_load_in_cluster(&cfg, dir, err, sizeof(err)),
                     -ENOENT);
    snprintf(expected, sizeof(expected),
             "failed to read the service account token %s/token: No such "
             "file or directory",
             dir);
    assert_string_equal(err, expected);

    write_file(dir, "token", "sa-token\n");
    assert_int_equal(kubeconfig_load_in_cluster(&cfg, dir, err, sizeof(err)),
                     -ENOENT);
    snprintf(expected, sizeof(expected),
             "failed to read the service account certificate-authority "
             "%s/ca.crt: No such file or directory",
             dir);
    assert_string_equal(err, expected);
    remove_files(dir);
}

static void missing_file_message(void **state)
{
    (void)state;
    load_fails(FIXTURES "/absent.yaml", NULL, -ENOENT);
    assert_string_equal(err, "failed to read kubeconfig " FIXTURES
                             "/absent.yaml: No such file or directory");
}

static void unknown_context_message(void **state)
{
    (void)state;
    load_fails(KUBECONFIG, "staging", -ENOENT);
    assert_string_equal(err, "context \"staging\" not found in kubeconfig "
                             "test/unit/fixtures/kube/kubeconfig.yaml");
}

static void unreadable_ca_message(void **state)
{
    (void)state;
    load_fails(BAD_CONTEXTS, NULL, -ENOENT);
    assert_string_equal(err,
                        "failed to read certificate-authority " FIXTURES
                        "/does-not-exist.crt of cluster \"missing-ca\" "
                        "(context \"missing-ca\") in kubeconfig " BAD_CONTEXTS
                        ": No such file or directory");

    load_fails(BAD_CONTEXTS, "not-pem-ca", -EINVAL);
    assert_string_equal(err, "invalid certificate-authority of cluster "
                             "\"not-pem-ca\" (context \"not-pem-ca\") in "
                             "kubeconfig " BAD_CONTEXTS ": no PEM block found");

    load_fails(BAD_CONTEXTS, "directory-ca", -EISDIR);
    assert_string_equal(err, "failed to read certificate-authority " FIXTURES
                             "/. of cluster \"directory-ca\" (context "
                             "\"directory-ca\") in kubeconfig " BAD_CONTEXTS
                             ": Is a directory");

    load_fails(BAD_CONTEXTS, "bad-base64", -EINVAL);
    assert_string_equal(err, "invalid base64 in certificate-authority-data "
                             "of cluster \"bad-base64\" (context "
                             "\"bad-base64\") in kubeconfig " BAD_CONTEXTS);
}

static void unreadable_ca_permission(void **state)
{
    char dir[] = "/tmp/test-kube-ca.XXXXXX";
    char path[128], ca[128], expected[512];
    FILE *f;

    (void)state;
    if (geteuid() == 0)
        skip(); /* root reads files whatever their mode */
    assert_non_null(mkdtemp(dir));
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    write_file(dir, "ca.crt", "-----BEGIN CERTIFICATE-----\n");
    chmod(ca, 0);
    snprintf(path, sizeof(path), "%s/config", dir);
    f = fopen(path, "w");
    fprintf(f, "current-context: c\ncontexts:\n- name: c\n  context: "
               "{cluster: k}\nclusters:\n- name: k\n  cluster: {server: "
               "https://127.0.0.1:1, certificate-authority: ca.crt}\n");
    fclose(f);
    load_fails(path, NULL, -EACCES);
    snprintf(expected, sizeof(expected),
             "failed to read certificate-authority %s of cluster \"k\" "
             "(context \"c\") in kubeconfig %s: Permission denied",
             ca, path);
    assert_string_equal(err, expected);
    unlink(ca);
    unlink(path);
    rmdir(dir);
}

static void garbage_yaml_message(void **state)
{
    (void)state;
    load_fails(FIXTURES "/garbage.yaml", NULL, -EINVAL);
    assert_string_equal(err, "invalid YAML in kubeconfig " FIXTURES
                             "/garbage.yaml at line 6 column 1: found "
                             "unexpected end of stream");
}

static void not_a_mapping_message(void **state)
{
    (void)state;
    load_fails(FIXTURES "/ca.crt", NULL, -EINVAL);
    assert_string_equal(err, "invalid kubeconfig " FIXTURES
                             "/ca.crt: the document is not a mapping");
}

static void no_server_message(void **state)
{
    (void)state;
    load_fails(BAD_CONTEXTS, "no-server", -EINVAL);
    assert_string_equal(err, "cluster \"no-server\" (context \"no-server\") "
                             "in kubeconfig " BAD_CONTEXTS " has no server");
}

static void unknown_cluster_message(void **state)
{
    (void)state;
    load_fails(BAD_CONTEXTS, "unknown-cluster", -ENOENT);
    assert_string_equal(
        err, "cluster \"nowhere\" of context "
             "\"unknown-cluster\" not found in kubeconfig " BAD_CONTEXTS);
}

static void cert_without_key_message(void **state)
{
    (void)state;
    load_fails(BAD_CONTEXTS, "cert-without-key", -EINVAL);
    assert_string_equal(err, "user \"cert-without-key\" (context "
                             "\"cert-without-key\") in kubeconfig " BAD_CONTEXTS
                             " has a client certificate without a key or a "
                             "key without a certificate");
}

static void base64_decoding(void **state)
{
    char *out;
    size_t len;

    (void)state;
    assert_int_equal(kubeconfig_base64_decode("aGVs\nbG8=", &out, &len), 0);
    assert_int_equal(len, 5);
    assert_string_equal(out, "hello");
    free(out);
    assert_int_equal(kubeconfig_base64_decode("aGk", &out, &len), 0);
    assert_string_equal(out, "hi");
    free(out);
    assert_int_equal(kubeconfig_base64_decode("a", &out, &len), -EINVAL);
    assert_int_equal(kubeconfig_base64_decode("aG=k", &out, &len), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(current_context_with_token),
        cmocka_unit_test(client_cert_from_files),
        cmocka_unit_test(client_cert_from_data),
        cmocka_unit_test(insecure_with_token_file),
        cmocka_unit_test(token_file_reread_after_invalidate),
        cmocka_unit_test(exec_plugin_token_cached),
        cmocka_unit_test(exec_plugin_expired_rerun),
        cmocka_unit_test(exec_plugin_client_cert),
        cmocka_unit_test(exec_credential_parse_errors),
        cmocka_unit_test(kubeconfig_env_first_file),
        cmocka_unit_test(in_cluster_service_account),
        cmocka_unit_test(in_cluster_errors),
        cmocka_unit_test(missing_file_message),
        cmocka_unit_test(unknown_context_message),
        cmocka_unit_test(unreadable_ca_message),
        cmocka_unit_test(unreadable_ca_permission),
        cmocka_unit_test(garbage_yaml_message),
        cmocka_unit_test(not_a_mapping_message),
        cmocka_unit_test(no_server_message),
        cmocka_unit_test(unknown_cluster_message),
        cmocka_unit_test(cert_without_key_message),
        cmocka_unit_test(base64_decoding),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
