/*
 * Reconciling one test: read it and its pods from the caches, plan (a pure
 * function), then act on the plan in a fixed order: worker RBAC, missing
 * pods, the status, an Event for a phase change, and the TTL.  Every step
 * is safe to repeat, so a failure at any step is handled by retrying the
 * whole reconcile with backoff.
 */
#include "controller/controller.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "controller/status.h"
#include "kube/clock.h"
#include "kube/klog.h"

#define GROUP    "memstress.dev"
#define VERSION  "v1alpha1"
#define RESOURCE "memorystresstests"

const double controller_duration_bounds[CONTROLLER_DURATION_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

static const char *get_str(struct json_object *obj, const char *a,
                           const char *b)
{
    struct json_object *v = NULL;

    if (!json_object_object_get_ex(obj, a, &v))
        return NULL;
    if (b && !json_object_object_get_ex(v, b, &v))
        return NULL;
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                    : NULL;
}

/* Splits "namespace/name"; returns -EINVAL for any other shape. */
static int split_key(const char *key, char *ns, size_t ns_size, char *name,
                     size_t name_size)
{
    const char *slash = strchr(key, '/');

    if (!slash || slash == key || (size_t)(slash - key) >= ns_size ||
        strlen(slash + 1) >= name_size || slash[1] == '\0')
        return -EINVAL;
    snprintf(ns, ns_size, "%.*s", (int)(slash - key), key);
    snprintf(name, name_size, "%s", slash + 1);
    return 0;
}

static void log_api_error(const char *message, const char *key,
                          struct kube_response *resp, int ret)
{
    char status[16];

    snprintf(status, sizeof(status), "%ld", resp->status);
    KLOG_ERROR(message, resp->message ? resp->message : strerror(-ret),
               "memoryStressTest", key, "status", status, NULL);
}

/* Creates the worker service account and role binding in ns once. */
static int ensure_rbac(struct controller *c, const char *ns)
{
    static const char *const resources[2] = {"serviceaccounts", "rolebindings"};
    static const char *const groups[2] = {NULL, "rbac.authorization.k8s.io"};
    struct json_object *objects[2];
    int ret = 0;

    pthread_mutex_lock(&c->rbac_lock);
    for (size_t i = 0; i < c->rbac_count; i++) {
        if (strcmp(c->rbac_done[i], ns) == 0) {
            pthread_mutex_unlock(&c->rbac_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&c->rbac_lock);

    pods_worker_rbac(ns, objects);
    for (int i = 0; i < 2; i++) {
        struct kube_response resp = {0};
        char *path = kube_path(groups[i], "v1", ns, resources[i], NULL, NULL);
        int rc =
            path ? kube_create(c->client, path, objects[i], &resp) : -ENOMEM;

        if (rc < 0 && resp.status != 409 && ret == 0) {
            log_api_error("Failed to create worker RBAC", ns, &resp, rc);
            ret = rc;
        }
        kube_response_release(&resp);
        free(path);
        json_object_put(objects[i]);
    }
    if (ret == 0) {
        pthread_mutex_lock(&c->rbac_lock);
        char **grown =
            realloc(c->rbac_done, (c->rbac_count + 1) * sizeof(*grown));
        if (grown) {
            c->rbac_done = grown;
            c->rbac_done[c->rbac_count++] = strdup(ns);
        }
        pthread_mutex_unlock(&c->rbac_lock);
    }
    return ret;
}

struct pod_filter {
    const char *ns;
    const char *test;
    int workers;
    struct json_object **pods;
};

/* Copies the pods of one test out of the pod cache, by worker index. */
static int collect_pod(const char *key, struct json_object *pod, void *user)
{
    struct pod_filter *f = user;
    struct json_object *labels = NULL, *value;
    int index;

    (void)key;
    if (strcmp(get_str(pod, "metadata", "namespace") ?: "", f->ns) != 0)
        return 0;
    json_object_object_get_ex(json_object_object_get(pod, "metadata"), "labels",
                              &labels);
    if (!json_object_object_get_ex(labels, PODS_LABEL_TEST, &value) ||
        strcmp(json_object_get_string(value), f->test) != 0 ||
        !json_object_object_get_ex(labels, PODS_LABEL_INDEX, &value))
        return 0;
    index = atoi(json_object_get_string(value));
    if (index < 0 || index >= f->workers || f->pods[index])
        return 0;
    json_object_deep_copy(pod, &f->pods[index], NULL);
    return 0;
}

/*
 * Looks up, with the API server itself, every worker pod that the cache
 * lacks once the test has started.  A pod created moments ago may not have
 * reached the cache yet, and mistaking it for a deleted one would fail the
 * test for good.  Returns 0, or a negative errno when the API server could
 * not say (then nothing may be judged lost, and the reconcile is retried).
 */
static int confirm_missing_pods(struct controller *c, struct json_object *mst,
                                const char *ns, const char *test,
                                struct pod_filter *f)
{
    char name[300];
    int ret = 0;

    if (!get_str(mst, "status", "startTime"))
        return 0;
    for (int i = 0; i < f->workers && i < STATUS_MAX_WORKERS && ret == 0; i++) {
        struct kube_response resp = {0};
        char *path;

        if (f->pods[i])
            continue;
        pods_worker_name(test, i, name, sizeof(name));
        path = kube_path(NULL, "v1", ns, "pods", name, NULL);
        ret = path ? kube_get(c->client, path, &resp) : -ENOMEM;
        if (ret == 0) {
            f->pods[i] = resp.body;
            resp.body = NULL;
        } else if (resp.status == 404) {
            ret = 0;
        } else {
            log_api_error("Failed to get worker Pod", name, &resp, ret);
        }
        kube_response_release(&resp);
        free(path);
    }
    return ret;
}

static int create_pods(struct controller *c, struct json_object *mst,
                       const struct status_plan *plan, const char *ns,
                       const char *key)
{
    char *path = kube_path(NULL, "v1", ns, "pods", NULL, NULL);
    int ret = 0, created = 0;

    for (int i = 0; i < plan->workers && ret == 0; i++) {
        struct kube_response resp = {0};
        struct json_object *pod;

        if (!plan->create[i])
            continue;
        pod = pods_worker_pod(mst, i, &c->options.pods);
        ret = pod ? kube_create(c->client, path, pod, &resp) : -EINVAL;
        if (ret == 0) {
            created++;
            atomic_fetch_add(&c->metrics.pods_created, 1);
        } else if (resp.status == 409) {
            ret = 0; /* created by an earlier pass */
        } else {
            log_api_error("Failed to create worker Pod", key, &resp, ret);
        }
        kube_response_release(&resp);
        json_object_put(pod);
    }
    free(path);
    if (created > 0) {
        char count[16];

        snprintf(count, sizeof(count), "%d", created);
        KLOG_INFO(2, "Created worker Pods", "memoryStressTest", key, "count",
                  count, NULL);
    }
    return ret;
}

static void emit_event(struct controller *c, struct json_object *mst,
                       const char *ns, const struct status_plan *plan)
{
    struct json_object *event = json_object_new_object();
    struct json_object *metadata = json_object_new_object();
    struct json_object *involved = json_object_new_object();
    struct json_object *source = json_object_new_object();
    struct kube_response resp = {0};
    char prefix[300], now[40];
    char *path = kube_path(NULL, "v1", ns, "events", NULL, NULL);
    const char *name = get_str(mst, "metadata", "name");

    clock_format_utc(now, sizeof(now), false);
    snprintf(prefix, sizeof(prefix), "%s.", name);
    json_object_object_add(metadata, "generateName",
                           json_object_new_string(prefix));
    json_object_object_add(metadata, "namespace", json_object_new_string(ns));
    json_object_object_add(involved, "apiVersion",
                           json_object_new_string(GROUP "/" VERSION));
    json_object_object_add(involved, "kind",
                           json_object_new_string("MemoryStressTest"));
    json_object_object_add(involved, "name", json_object_new_string(name));
    json_object_object_add(involved, "namespace", json_object_new_string(ns));
    json_object_object_add(
        involved, "uid",
        json_object_new_string(get_str(mst, "metadata", "uid") ?: ""));
    json_object_object_add(source, "component",
                           json_object_new_string(PODS_MANAGER));
    json_object_object_add(event, "apiVersion", json_object_new_string("v1"));
    json_object_object_add(event, "kind", json_object_new_string("Event"));
    json_object_object_add(event, "metadata", metadata);
    json_object_object_add(event, "involvedObject", involved);
    json_object_object_add(event, "reason",
                           json_object_new_string(plan->event_reason));
    json_object_object_add(event, "message",
                           json_object_new_string(plan->event_message));
    json_object_object_add(event, "type",
                           json_object_new_string(plan->event_type));
    json_object_object_add(event, "source", source);
    json_object_object_add(event, "firstTimestamp",
                           json_object_new_string(now));
    json_object_object_add(event, "lastTimestamp", json_object_new_string(now));
    json_object_object_add(event, "count", json_object_new_int(1));
    json_object_object_add(event, "reportingComponent",
                           json_object_new_string(PODS_MANAGER));
    json_object_object_add(
        event, "reportingInstance",
        json_object_new_string(c->options.identity ?: PODS_MANAGER));

    /* An Event is informational: a failure is logged, not retried. */
    if (path && kube_create(c->client, path, event, &resp) == 0)
        atomic_fetch_add(&c->metrics.events_emitted, 1);
    else
        log_api_error("Failed to create Event", name, &resp, -EIO);
    kube_response_release(&resp);
    json_object_put(event);
    free(path);
}

static int apply_status(struct controller *c, const struct status_plan *plan,
                        const char *ns, const char *name, const char *key)
{
    struct kube_response resp = {0};
    char *path = kube_path(GROUP, VERSION, ns, RESOURCE, name, "status");
    int ret = path ? kube_apply(c->client, path, plan->apply, PODS_MANAGER,
                                true, &resp)
                   : -ENOMEM;

    if (ret == 0)
        atomic_fetch_add(&c->metrics.status_writes, 1);
    else if (resp.status == 404)
        ret = 0; /* deleted meanwhile */
    else
        log_api_error("Failed to apply MemoryStressTest status", key, &resp,
                      ret);
    kube_response_release(&resp);
    free(path);
    return ret;
}

/* Deletes the test when its TTL ran out, or queues it for that moment. */
static int handle_ttl(struct controller *c, const struct status_plan *plan,
                      const char *ns, const char *name, const char *key)
{
    struct kube_response resp = {0};
    char *path;
    int ret;

    if (plan->ttl_left < 0)
        return 0;
    if (plan->ttl_left > 0) {
        queue_add_after(&c->queue, key, plan->ttl_left);
        return 0;
    }
    path = kube_path(GROUP, VERSION, ns, RESOURCE, name, NULL);
    ret = path ? kube_delete(c->client, path, "Background", &resp) : -ENOMEM;
    if (ret == 0) {
        atomic_fetch_add(&c->metrics.tests_deleted, 1);
        KLOG_INFO(2, "Deleted MemoryStressTest after its TTL",
                  "memoryStressTest", key, NULL);
    } else if (resp.status == 404) {
        ret = 0;
    } else {
        log_api_error("Failed to delete MemoryStressTest", key, &resp, ret);
    }
    kube_response_release(&resp);
    free(path);
    return ret;
}

static int act(struct controller *c, struct json_object *mst,
               struct status_plan *plan, const char *ns, const char *name,
               const char *key)
{
    bool creating = false;
    int ret;

    for (int i = 0; i < plan->workers; i++)
        creating |= plan->create[i];
    if (creating) {
        ret = ensure_rbac(c, ns);
        if (ret == 0)
            ret = create_pods(c, mst, plan, ns, key);
        if (ret < 0)
            return ret;
    }
    if (plan->changed) {
        ret = apply_status(c, plan, ns, name, key);
        if (ret < 0)
            return ret;
        if (plan->event_reason[0]) {
            KLOG_INFO(2, "Changed MemoryStressTest phase", "memoryStressTest",
                      key, "from", plan->old_phase[0] ? plan->old_phase : "-",
                      "to", plan->phase, NULL);
            emit_event(c, mst, ns, plan);
        }
    }
    return handle_ttl(c, plan, ns, name, key);
}

int controller_reconcile(struct controller *c, const char *key)
{
    struct json_object *mst, *pods[STATUS_MAX_WORKERS] = {0};
    struct json_object *workers;
    struct status_plan plan;
    char ns[256], name[256], now[32];
    struct pod_filter filter;
    int ret;

    if (split_key(key, ns, sizeof(ns), name, sizeof(name)) < 0)
        return 0; /* not a key this controller made: nothing to retry */
    mst = store_get(&c->tests.store, key);
    if (!mst || get_str(mst, "metadata", "deletionTimestamp")) {
        json_object_put(mst);
        return 0; /* garbage collection removes the pods */
    }

    filter = (struct pod_filter){
        .ns = ns, .test = name, .pods = pods, .workers = STATUS_MAX_WORKERS};
    if (json_object_object_get_ex(json_object_object_get(mst, "spec"),
                                  "workers", &workers))
        filter.workers = json_object_get_int(workers);
    store_foreach(&c->pods.store, collect_pod, &filter);
    ret = confirm_missing_pods(c, mst, ns, name, &filter);
    if (ret < 0)
        goto out_put;

    clock_format_utc(now, sizeof(now), false);
    ret = status_plan(mst, pods, now, (double)time(NULL), &plan);
    if (ret < 0) {
        KLOG_ERROR("Invalid MemoryStressTest", "spec or metadata missing",
                   "memoryStressTest", key, NULL);
        ret = 0; /* invalid input is not retried */
    } else {
        ret = act(c, mst, &plan, ns, name, key);
        json_object_put(plan.apply);
    }

out_put:
    for (int i = 0; i < STATUS_MAX_WORKERS; i++)
        json_object_put(pods[i]);
    json_object_put(mst);
    return ret;
}

static void record_duration(struct controller *c, double seconds)
{
    for (int i = 0; i < CONTROLLER_DURATION_BUCKETS; i++)
        if (seconds <= controller_duration_bounds[i])
            atomic_fetch_add(&c->metrics.duration_buckets[i], 1);
    atomic_fetch_add(&c->metrics.duration_count, 1);
    atomic_fetch_add(&c->metrics.duration_sum_us,
                     (unsigned long)(seconds * 1e6));
}

static void *worker_loop(void *arg)
{
    struct controller *c = arg;
    char key[QUEUE_KEY_SIZE];
    struct timespec pause = {0, 50 * 1000000L};

    while (!controller_synced(c) && !atomic_load(&c->stop))
        nanosleep(&pause, NULL);
    while (queue_get(&c->queue, key) == 0) {
        double start = clock_monotonic();
        int ret = controller_reconcile(c, key);

        record_duration(c, clock_monotonic() - start);
        atomic_fetch_add(&c->metrics.reconciles, 1);
        if (ret < 0) {
            atomic_fetch_add(&c->metrics.errors, 1);
            queue_add_rate_limited(&c->queue, key);
        } else {
            queue_forget(&c->queue, key);
        }
        queue_done(&c->queue, key);
    }
    return NULL;
}

static int on_test(enum watch_event_type type, struct json_object *obj,
                   void *user)
{
    struct controller *c = user;
    char key[STORE_KEY_SIZE];

    (void)type;
    if (store_key(obj, key, sizeof(key)) == 0)
        queue_add(&c->queue, key);
    return 0;
}

static int on_pod(enum watch_event_type type, struct json_object *obj,
                  void *user)
{
    struct controller *c = user;
    const char *ns = get_str(obj, "metadata", "namespace");
    struct json_object *labels = NULL, *test;
    char key[STORE_KEY_SIZE];

    (void)type;
    json_object_object_get_ex(json_object_object_get(obj, "metadata"), "labels",
                              &labels);
    if (ns && json_object_object_get_ex(labels, PODS_LABEL_TEST, &test)) {
        snprintf(key, sizeof(key), "%s/%s", ns, json_object_get_string(test));
        queue_add(&c->queue, key);
    }
    return 0;
}

static void on_tests_synced(unsigned long lists, void *user)
{
    struct controller *c = user;

    (void)lists;
    atomic_store(&c->tests_synced, true);
}

static void on_pods_synced(unsigned long lists, void *user)
{
    struct controller *c = user;

    (void)lists;
    atomic_store(&c->pods_synced, true);
}

static void *run_watch(void *arg)
{
    struct watch *w = arg;
    int ret = watch_run(w);

    if (ret < 0)
        KLOG_ERROR("Watch ended", strerror(-ret), "path", w->opts.path, NULL);
    return NULL;
}

bool controller_synced(struct controller *c)
{
    return atomic_load(&c->tests_synced) && atomic_load(&c->pods_synced);
}

int controller_init(struct controller *c, struct kube_client *client,
                    const struct controller_options *options)
{
    static char tests_path[512], pods_path[512];
    struct watch_options tests = {0}, pods = {0};
    int ret;

    memset(c, 0, sizeof(*c));
    c->options = *options;
    c->client = client;
    queue_init(&c->queue, options->qps, options->burst);
    pthread_mutex_init(&c->rbac_lock, NULL);

    if (options->namespace) {
        snprintf(tests_path, sizeof(tests_path),
                 "/apis/" GROUP "/" VERSION "/namespaces/%s/" RESOURCE,
                 options->namespace);
        snprintf(pods_path, sizeof(pods_path), "/api/v1/namespaces/%s/pods",
                 options->namespace);
    } else {
        snprintf(tests_path, sizeof(tests_path),
                 "/apis/" GROUP "/" VERSION "/" RESOURCE);
        snprintf(pods_path, sizeof(pods_path), "/api/v1/pods");
    }
    tests = (struct watch_options){.path = tests_path,
                                   .stop = &c->stop,
                                   .on_event = on_test,
                                   .on_synced = on_tests_synced,
                                   .user = c};
    pods = (struct watch_options){.path = pods_path,
                                  .label_selector =
                                      PODS_LABEL_MANAGED_BY "=" PODS_MANAGER,
                                  .stop = &c->stop,
                                  .on_event = on_pod,
                                  .on_synced = on_pods_synced,
                                  .user = c};
    ret = watch_init(&c->tests, client, &tests);
    if (ret == 0)
        ret = watch_init(&c->pods, client, &pods);
    return ret;
}

int controller_start(struct controller *c)
{
    if (c->options.concurrency < 1)
        c->options.concurrency = 1;
    if (c->options.concurrency > CONTROLLER_MAX_CONCURRENCY)
        c->options.concurrency = CONTROLLER_MAX_CONCURRENCY;
    pthread_create(&c->test_thread, NULL, run_watch, &c->tests);
    pthread_create(&c->pod_thread, NULL, run_watch, &c->pods);
    for (int i = 0; i < c->options.concurrency; i++)
        pthread_create(&c->workers[i], NULL, worker_loop, c);
    c->running = true;
    return 0;
}

void controller_stop(struct controller *c)
{
    if (!c->running)
        return;
    atomic_store(&c->stop, true);
    queue_shutdown(&c->queue);
    for (int i = 0; i < c->options.concurrency; i++)
        pthread_join(c->workers[i], NULL);
    pthread_join(c->test_thread, NULL);
    pthread_join(c->pod_thread, NULL);
    c->running = false;
}

void controller_release(struct controller *c)
{
    controller_stop(c);
    watch_release(&c->tests);
    watch_release(&c->pods);
    queue_release(&c->queue);
    for (size_t i = 0; i < c->rbac_count; i++)
        free(c->rbac_done[i]);
    free(c->rbac_done);
    pthread_mutex_destroy(&c->rbac_lock);
}
