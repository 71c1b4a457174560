/*
 * kubectl-lite: a small command-line front end to libkube for the
 * integration suite (test/kube/run.sh), so that the shell can drive every
 * verb, the watch loop and the credential reload against a real apiserver.
 *
 *   kubectl-lite [CONFIG] get|delete PATH
 *   kubectl-lite [CONFIG] list PATH [LIMIT [LABEL_SELECTOR]]
 *   kubectl-lite [CONFIG] create|update PATH JSON
 *   kubectl-lite [CONFIG] patch merge|json PATH JSON
 *   kubectl-lite [CONFIG] apply PATH FIELD_MANAGER force|noforce JSON
 *   kubectl-lite [CONFIG] bulk-create PATH NAME_PREFIX COUNT
 *   kubectl-lite [CONFIG] get-steps PATH STEP_DIR COUNT
 *   kubectl-lite [CONFIG] watch PATH [options]
 *
 * CONFIG is --kubeconfig FILE [--context NAME], or --in-cluster DIR (with
 * KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT set).  A request
 * prints the response body; a failed one prints "error: status=S reason=R
 * rc=E message=M" on stderr and exits 1.  Watch options:
 *
 *   --selector S      label selector
 *   --until NAME      stop after an event for the object NAME
 *   --max-seconds N   stop after N seconds (default 120)
 *   --hold FILE       after the first list, wait until FILE exists
 *   --exit-synced     stop after the first list and print the RSS
 *   --timeout N       watch timeoutSeconds; --idle N idle deadline
 *
 * Watch output is one line per event ("ADDED ns/name rv"), "SYNCED n rv"
 * after each list, and "RSS kb" lines.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kube/kube.h"
#include "kube/kubeconfig.h"
#include "kube/watch.h"

struct watch_run_state {
    atomic_bool stop;
    const char *until;
    const char *hold_file;
    bool exit_synced;
    struct watch *w;
};

static long rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static int report(int rc, struct kube_response *resp)
{
    if (rc == 0) {
        if (resp->body)
            printf("%s\n", kube_json_string(resp->body));
        return 0;
    }
    fprintf(stderr, "error: status=%ld reason=%s rc=%d message=%s\n",
            resp->status, resp->reason ? resp->reason : "", rc,
            resp->message ? resp->message : strerror(-rc));
    return 1;
}

static struct json_object *parse_arg(const char *text)
{
    struct json_object *obj = json_tokener_parse(text);

    if (!obj) {
        fprintf(stderr, "error: invalid JSON argument: %s\n", text);
        exit(2);
    }
    return obj;
}

static void wait_for_file(const char *path, int seconds)
{
    struct stat st;

    for (int i = 0; i < seconds * 10 && stat(path, &st) != 0; i++)
        usleep(100000);
}

static int on_event(enum watch_event_type type, struct json_object *obj,
                    void *user)
{
    struct watch_run_state *state = user;
    struct json_object *meta, *name, *rv;
    char key[STORE_KEY_SIZE] = "?";

    store_key(obj, key, sizeof(key));
    json_object_object_get_ex(obj, "metadata", &meta);
    json_object_object_get_ex(meta, "resourceVersion", &rv);
    printf("%s %s %s\n", watch_event_name(type), key,
           json_object_get_string(rv));
    if (state->until && json_object_object_get_ex(meta, "name", &name) &&
        strcmp(json_object_get_string(name), state->until) == 0)
        atomic_store(&state->stop, true);
    return 0;
}

static void on_synced(unsigned long lists, void *user)
{
    struct watch_run_state *state = user;

    printf("SYNCED %lu %s objects=%zu\n", lists, state->w->resource_version,
           store_count(&state->w->store));
    printf("RSS %ld\n", rss_kb());
    if (state->exit_synced)
        atomic_store(&state->stop, true);
    if (lists == 1 && state->hold_file)
        wait_for_file(state->hold_file, 300);
}

struct timer {
    atomic_bool *stop;
    int seconds;
};

static void *stop_later(void *arg)
{
    struct timer *timer = arg;

    for (int i = 0; i < timer->seconds * 10 && !atomic_load(timer->stop); i++)
        usleep(100000);
    atomic_store(timer->stop, true);
    return NULL;
}

static int run_watch(struct kube_client *client, const char *path, int argc,
                     char **argv)
{
    struct watch_run_state state = {0};
    struct watch_options opts = {
        .path = path,
        .stop = &state.stop,
        .on_event = on_event,
        .on_synced = on_synced,
        .user = &state,
    };
    struct timer timer = {.stop = &state.stop, .seconds = 120};
    struct watch w;
    pthread_t thread;
    int rc;

    for (int i = 0; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--selector") == 0)
            opts.label_selector = argv[i + 1];
        else if (strcmp(argv[i], "--until") == 0)
            state.until = argv[i + 1];
        else if (strcmp(argv[i], "--max-seconds") == 0)
            timer.seconds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--hold") == 0)
            state.hold_file = argv[i + 1];
        else if (strcmp(argv[i], "--timeout") == 0)
            opts.timeout_s = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--idle") == 0)
            opts.idle_timeout_s = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--exit-synced") == 0)
            state.exit_synced = strcmp(argv[i + 1], "true") == 0;
    }
    printf("RSS %ld\n", rss_kb());
    rc = watch_init(&w, client, &opts);
    if (rc < 0)
        return 1;
    state.w = &w;
    pthread_create(&thread, NULL, stop_later, &timer);
    rc = watch_run(&w);
    atomic_store(&state.stop, true);
    pthread_join(thread, NULL);
    printf("STOPPED rc=%d lists=%lu streams=%lu events=%lu\n", rc, w.lists,
           w.streams, w.events);
    watch_release(&w);
    return rc == 0 ? 0 : 1;
}

static int bulk_create(struct kube_client *client, const char *path,
                       const char *prefix, int count)
{
    struct timespec start, end;
    int failed = 0;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < count; i++) {
        struct kube_response resp;
        char text[512];
        struct json_object *obj;

        snprintf(text, sizeof(text),
                 "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
                 "{\"name\":\"%s-%d\",\"labels\":{\"app\":\"%s\"}},\"data\":"
                 "{\"index\":\"%d\",\"payload\":\"0123456789abcdef0123456789"
                 "abcdef0123456789abcdef0123456789abcdef\"}}",
                 prefix, i, prefix, i);
        obj = json_tokener_parse(text);
        if (kube_create(client, path, obj, &resp) != 0 && failed++ == 0)
            report(-EIO, &resp);
        kube_response_release(&resp);
        json_object_put(obj);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    printf("created=%d failed=%d seconds=%.1f\n", count - failed, failed,
           (double)(end.tv_sec - start.tv_sec) +
               (double)(end.tv_nsec - start.tv_nsec) / 1e9);
    return failed ? 1 : 0;
}

/* GETs path once per step, each after STEP_DIR/go.<n> appears. */
static int get_steps(struct kube_client *client, const char *path,
                     const char *dir, int count)
{
    char file[4096];

    for (int i = 1; i <= count; i++) {
        struct kube_response resp;
        FILE *done;
        int rc;

        snprintf(file, sizeof(file), "%s/go.%d", dir, i);
        wait_for_file(file, 60);
        rc = kube_get(client, path, &resp);
        printf("step %d status=%ld rc=%d\n", i, resp.status, rc);
        fflush(stdout);
        kube_response_release(&resp);
        snprintf(file, sizeof(file), "%s/done.%d", dir, i);
        done = fopen(file, "w");
        if (done)
            fclose(done);
    }
    return 0;
}

static int run_verb(struct kube_client *client, int argc, char **argv)
{
    const char *verb = argv[0], *path = argv[1];
    struct kube_response resp = {0};
    struct json_object *obj = NULL;
    int rc = -EINVAL;

    if (strcmp(verb, "get") == 0) {
        rc = kube_get(client, path, &resp);
    } else if (strcmp(verb, "delete") == 0) {
        rc = kube_delete(client, path, NULL, &resp);
    } else if (strcmp(verb, "list") == 0) {
        struct kube_list_options opts = {
            .limit = argc > 2 ? atol(argv[2]) : 0,
            .label_selector = argc > 3 ? argv[3] : NULL,
        };

        rc = kube_list(client, path, &opts, &resp);
    } else if (strcmp(verb, "create") == 0 && argc > 2) {
        obj = parse_arg(argv[2]);
        rc = kube_create(client, path, obj, &resp);
    } else if (strcmp(verb, "update") == 0 && argc > 2) {
        obj = parse_arg(argv[2]);
        rc = kube_update(client, path, obj, &resp);
    } else if (strcmp(verb, "patch") == 0 && argc > 3) {
        obj = parse_arg(argv[3]);
        rc = kube_patch(client, argv[2],
                        strcmp(path, "json") == 0 ? KUBE_PATCH_JSON
                                                  : KUBE_PATCH_MERGE,
                        obj, &resp);
    } else if (strcmp(verb, "apply") == 0 && argc > 4) {
        obj = parse_arg(argv[4]);
        rc = kube_apply(client, path, obj, argv[2],
                        strcmp(argv[3], "force") == 0, &resp);
    } else {
        fprintf(stderr, "error: unknown command or missing arguments: %s\n",
                verb);
        return 2;
    }
    rc = report(rc, &resp);
    kube_response_release(&resp);
    json_object_put(obj);
    return rc;
}

static int dispatch(struct kube_client *client, int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "error: missing command or path\n");
        return 2;
    }
    if (strcmp(argv[0], "watch") == 0)
        return run_watch(client, argv[1], argc - 2, argv + 2);
    if (strcmp(argv[0], "bulk-create") == 0 && argc > 3)
        return bulk_create(client, argv[1], argv[2], atoi(argv[3]));
    if (strcmp(argv[0], "get-steps") == 0 && argc > 3)
        return get_steps(client, argv[1], argv[2], atoi(argv[3]));
    return run_verb(client, argc, argv);
}

int main(int argc, char **argv)
{
    const char *kubeconfig = NULL, *context = NULL, *in_cluster = NULL;
    char err[KUBECONFIG_ERROR_SIZE];
    struct kube_client_options opts;
    struct kube_client *client;
    struct kubeconfig cfg;
    int i = 1, rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--kubeconfig") == 0)
            kubeconfig = argv[i + 1];
        else if (strcmp(argv[i], "--context") == 0)
            context = argv[i + 1];
        else if (strcmp(argv[i], "--in-cluster") == 0)
            in_cluster = argv[i + 1];
    }
    if (in_cluster)
        rc = kubeconfig_load_in_cluster(&cfg, in_cluster, err, sizeof(err));
    else
        rc = kubeconfig_load_default(&cfg, kubeconfig, context, err,
                                     sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    kube_client_options_init(&opts);
    opts.qps = 0; /* the suite's bulk creation should not be throttled */
    opts.connect_timeout_ms = 5000;
    rc = kube_client_new(&cfg, &opts, &client, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", err);
        kubeconfig_release(&cfg);
        return 1;
    }
    rc = dispatch(client, argc - i, argv + i);
    kube_client_free(client);
    return rc;
}
