/*
 * Two threads: the watch thread follows the one MemoryStressTest (a field
 * selector on its name) and stops the engine when spec.stop turns true or
 * the test disappears; the status thread starts the test, then checks the
 * engine four times a second and applies the status entry when the state
 * changed or a log interval has passed since the last write.
 */
#include "worker/cluster.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "kube/clock.h"
#include "kube/klog.h"
#include "kube/quantity.h"

#define GROUP    "memstress.dev"
#define VERSION  "v1alpha1"
#define RESOURCE "memorystresstests"
#define MIB      ((int64_t)1 << 20)
/* How often the status thread looks at the engine. */
#define STATUS_TICK_MS 250
/* The same while an allow_oom test nears its limit. */
#define NEAR_LIMIT_TICK_MS 20

static int spec_error(struct config_error *err, const char *field,
                      const char *message)
{
    snprintf(err->field, sizeof(err->field), "spec.%s", field);
    snprintf(err->message, sizeof(err->message), "spec.%s %s", field, message);
    return -EINVAL;
}

static bool spec_int(struct json_object *spec, const char *key, int64_t *out)
{
    struct json_object *value;

    if (!json_object_object_get_ex(spec, key, &value) ||
        !json_object_is_type(value, json_type_int))
        return false;
    *out = json_object_get_int64(value);
    return true;
}

static bool spec_bool(struct json_object *spec, const char *key)
{
    struct json_object *value;

    return json_object_object_get_ex(spec, key, &value) &&
           json_object_get_boolean(value);
}

static int spec_target(struct json_object *spec, struct stress_config *c,
                       struct config_error *err)
{
    struct json_object *value;
    int64_t bytes, percent;

    if (json_object_object_get_ex(spec, "memory", &value)) {
        if (quantity_from_json(value, &bytes) < 0)
            return spec_error(err, "memory", "is not a valid quantity");
        c->has_memory_mb = true;
        c->memory_mb = (bytes + MIB - 1) / MIB;
    } else if (spec_int(spec, "memoryPercent", &percent)) {
        c->has_memory_percent = true;
        c->memory_percent = (double)percent;
    } else {
        return spec_error(err, "memory",
                          "is missing: set memory or memoryPercent");
    }
    return 0;
}

int cluster_config_from_spec(struct json_object *spec, struct stress_config *c,
                             struct config_error *err)
{
    struct json_object *value;
    int64_t bytes, number;
    int ret;

    config_defaults(c);
    memset(err, 0, sizeof(*err));
    if (!json_object_is_type(spec, json_type_object))
        return spec_error(err, "", "is missing");
    ret = spec_target(spec, c, err);
    if (ret < 0)
        return ret;

    spec_int(spec, "durationSeconds", &c->duration_seconds);
    spec_int(spec, "logIntervalSeconds", &c->log_interval_sec);
    spec_int(spec, "cpuPercent", &c->cpu_percent);
    if (spec_int(spec, "rampMiBPerSecond", &number))
        c->ramp_mb_per_sec = (double)number;
    if (json_object_object_get_ex(spec, "payloadSize", &value)) {
        if (quantity_from_json(value, &bytes) < 0)
            return spec_error(err, "payloadSize", "is not a valid quantity");
        c->payload_kb = (bytes + 1023) / 1024;
    }
    c->touch_payload = spec_bool(spec, "touchPayload");
    c->allow_oom = spec_bool(spec, "allowOOM");

    /* The schema bounds these; a check here guards an older schema. */
    if (c->memory_mb > CONFIG_MEMORY_MB_MAX ||
        (c->has_memory_mb && c->memory_mb < CONFIG_MEMORY_MB_MIN))
        return spec_error(err, "memory", "must be between 10Mi and 1Ti");
    if (c->payload_kb < 1 || c->payload_kb > 10240)
        return spec_error(err, "payloadSize", "must be between 1Ki and 10Mi");
    if (c->duration_seconds < 5 || c->duration_seconds > 3600)
        return spec_error(err, "durationSeconds", "must be between 5 and 3600");
    if (c->log_interval_sec < 1 || c->log_interval_sec > 60)
        return spec_error(err, "logIntervalSeconds",
                          "must be between 1 and 60");
    if (c->cpu_percent < 1 || c->cpu_percent > 100)
        return spec_error(err, "cpuPercent", "must be between 1 and 100");
    return 0;
}

static void add_string(struct json_object *obj, const char *key,
                       const char *value)
{
    if (value && *value)
        json_object_object_add(obj, key, json_object_new_string(value));
}

static void add_int(struct json_object *obj, const char *key, uint64_t value)
{
    json_object_object_add(obj, key, json_object_new_int64((int64_t)value));
}

struct json_object *cluster_status_entry(const struct cluster_options *o,
                                         const struct engine_status *s,
                                         const struct logring_entry *last,
                                         const char *now)
{
    struct json_object *body = json_object_new_object();
    struct json_object *metadata = json_object_new_object();
    struct json_object *status = json_object_new_object();
    struct json_object *workers = json_object_new_array();
    struct json_object *entry = json_object_new_object();

    add_string(entry, "name", o->pod);
    add_string(entry, "pod", o->pod);
    add_string(entry, "node", o->node);
    add_string(entry, "podIP", o->pod_ip);
    add_string(entry, "state", engine_state_name(s->state));
    add_int(entry, "memoryBytes", s->rss_bytes);
    add_int(entry, "targetBytes", s->target_bytes);
    add_int(entry, "limitBytes", s->limit.bytes);
    add_int(entry, "treeNodes", s->nodes);
    add_int(entry, "searches", s->searches);
    if (last) {
        add_string(entry, "lastOperation", last->operation);
        add_string(entry, "lastMessage", last->message);
    }
    add_string(entry, "updateTime", now);
    json_object_array_add(workers, entry);

    json_object_object_add(status, "workers", workers);
    add_string(metadata, "name", o->test);
    add_string(metadata, "namespace", o->namespace);
    add_string(body, "apiVersion", GROUP "/" VERSION);
    add_string(body, "kind", "MemoryStressTest");
    json_object_object_add(body, "metadata", metadata);
    json_object_object_add(body, "status", status);
    return body;
}

static int apply_status(struct cluster *c, struct engine_status *s)
{
    struct logring_entry last;
    struct kube_response resp = {0};
    struct json_object *body;
    char now[32];
    int ret;

    clock_format_utc(now, sizeof(now), false);
    ret = logring_last(&c->engine->logs, &last);
    body = cluster_status_entry(&c->options, s, ret == 0 ? &last : NULL, now);
    ret = kube_apply(c->client, c->status_path, body, c->field_manager, true,
                     &resp);
    if (ret < 0)
        KLOG_ERROR("Failed to apply worker status",
                   resp.message ? resp.message : strerror(-ret),
                   "memoryStressTest", c->test_path, "pod", c->options.pod,
                   NULL);
    kube_response_release(&resp);
    json_object_put(body);
    return ret;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Fetches the test until it exists; returns its spec, or NULL on stop. */
static struct json_object *fetch_spec(struct cluster *c)
{
    long backoff_ms = 200;

    while (!atomic_load(&c->stop)) {
        struct kube_response resp = {0};
        struct json_object *spec = NULL;
        int ret = kube_get(c->client, c->test_path, &resp);

        if (ret == 0 && json_object_object_get_ex(resp.body, "spec", &spec)) {
            json_object_get(spec);
            kube_response_release(&resp);
            return spec;
        }
        KLOG_ERROR("Failed to get MemoryStressTest",
                   resp.message ? resp.message : strerror(-ret),
                   "memoryStressTest", c->test_path, NULL);
        kube_response_release(&resp);
        sleep_ms(backoff_ms);
        backoff_ms = backoff_ms * 2 > 10000 ? 10000 : backoff_ms * 2;
    }
    return NULL;
}

/* Starts the engine from the spec; returns false when the spec is unusable. */
static bool start_test(struct cluster *c, struct json_object *spec,
                       struct engine_status *s)
{
    struct stress_config config;
    struct config_error err;
    int ret = cluster_config_from_spec(spec, &config, &err);

    if (ret == 0)
        ret = engine_start(c->engine, &config, &err);
    if (ret == 0 || ret == -EBUSY)
        return true;

    KLOG_ERROR("Failed to start stress test", err.message, "memoryStressTest",
               c->test_path, NULL);
    logring_add(&c->engine->logs, "STRESS_TEST_ERROR", 0, err.message);
    engine_status(c->engine, s);
    s->state = ENGINE_FAILED;
    apply_status(c, s);
    return false;
}

/*
 * Returns true while an allow_oom build has passed three quarters of the
 * limit.  The kernel may kill the worker at any moment from there on, and
 * the memory it last reported is how the test finds the pod's real limit.
 */
static bool nearing_oom(const struct engine_status *s, bool allow_oom)
{
    return allow_oom && s->state == ENGINE_BUILDING && s->limit.bytes > 0 &&
           s->rss_bytes / 3 >= s->limit.bytes / 4;
}

static void *status_loop(void *arg)
{
    struct cluster *c = arg;
    struct engine_status s;
    enum engine_state written = ENGINE_IDLE;
    uint64_t written_rss = 0;
    double last_write = 0, interval;
    struct json_object *spec = fetch_spec(c);

    if (!spec || !start_test(c, spec, &s)) {
        json_object_put(spec);
        return NULL;
    }
    json_object_put(spec);

    interval = (double)c->engine->config.log_interval_sec;
    while (!atomic_load(&c->stop)) {
        engine_status(c->engine, &s);
        bool changed = s.state != written;
        bool due = engine_is_running(s.state) &&
                   clock_monotonic() - last_write >= interval;
        bool near = nearing_oom(&s, c->engine->config.allow_oom);
        bool grew = near && s.rss_bytes >= written_rss + s.limit.bytes / 50;

        if ((changed || due || grew) && apply_status(c, &s) == 0) {
            written = s.state;
            written_rss = s.rss_bytes;
            last_write = clock_monotonic();
        }
        sleep_ms(near ? NEAR_LIMIT_TICK_MS : STATUS_TICK_MS);
    }
    return NULL;
}

static int on_test_event(enum watch_event_type type, struct json_object *obj,
                         void *user)
{
    struct cluster *c = user;
    struct json_object *spec;
    bool stop = type == WATCH_DELETED;

    if (!stop && json_object_object_get_ex(obj, "spec", &spec))
        stop = spec_bool(spec, "stop");
    if (stop && engine_stop(c->engine) == 0)
        KLOG_INFO(2, "Stopped stress test", "memoryStressTest", c->test_path,
                  "reason", type == WATCH_DELETED ? "deleted" : "spec.stop",
                  NULL);
    return 0;
}

static void *watch_loop(void *arg)
{
    struct cluster *c = arg;
    int ret = watch_run(&c->watch);

    if (ret < 0 && !atomic_load(&c->stop))
        KLOG_ERROR("MemoryStressTest watch ended", strerror(-ret),
                   "memoryStressTest", c->test_path, NULL);
    return NULL;
}

static int connect_client(struct cluster *c)
{
    struct kubeconfig cfg;
    char err[KUBECONFIG_ERROR_SIZE];
    int ret;

    ret = kubeconfig_load_default(&cfg, c->options.kubeconfig, NULL, err,
                                  sizeof(err));
    if (ret < 0) {
        KLOG_ERROR("Failed to load Kubernetes configuration", err, NULL);
        return ret;
    }
    ret = kube_client_new(&cfg, NULL, &c->client, err, sizeof(err));
    if (ret < 0) {
        kubeconfig_release(&cfg);
        KLOG_ERROR("Failed to create Kubernetes client", err, NULL);
    }
    return ret;
}

static int prepare_watch(struct cluster *c, char *collection, char *selector)
{
    struct watch_options wo = {
        .path = collection,
        .field_selector = selector,
        .stop = &c->stop,
        .on_event = on_test_event,
        .user = c,
    };

    return watch_init(&c->watch, c->client, &wo);
}

int cluster_start(struct cluster *c, struct engine *engine,
                  const struct cluster_options *options)
{
    static char collection[600], selector[300];
    int ret;

    memset(c, 0, sizeof(*c));
    c->options = *options;
    c->engine = engine;
    snprintf(c->field_manager, sizeof(c->field_manager), "memstress-worker-%s",
             options->pod);
    c->test_path = kube_path(GROUP, VERSION, options->namespace, RESOURCE,
                             options->test, NULL);
    c->status_path = kube_path(GROUP, VERSION, options->namespace, RESOURCE,
                               options->test, "status");
    if (!c->test_path || !c->status_path)
        return -ENOMEM;
    ret = connect_client(c);
    if (ret < 0)
        return ret;

    snprintf(collection, sizeof(collection),
             "/apis/" GROUP "/" VERSION "/namespaces/%s/" RESOURCE,
             options->namespace);
    snprintf(selector, sizeof(selector), "metadata.name=%s", options->test);
    ret = prepare_watch(c, collection, selector);
    if (ret < 0)
        return ret;
    pthread_create(&c->watch_thread, NULL, watch_loop, c);
    pthread_create(&c->status_thread, NULL, status_loop, c);
    c->threads_started = true;
    KLOG_INFO(0, "Joined MemoryStressTest", "memoryStressTest", c->test_path,
              "pod", options->pod, NULL);
    return 0;
}

void cluster_stop(struct cluster *c)
{
    struct engine_status s;

    atomic_store(&c->stop, true);
    if (c->threads_started) {
        pthread_join(c->status_thread, NULL);
        pthread_join(c->watch_thread, NULL);
        engine_stop(c->engine);
        engine_status(c->engine, &s);
        apply_status(c, &s);
        watch_release(&c->watch);
    }
    kube_client_free(c->client);
    free(c->test_path);
    free(c->status_path);
    c->client = NULL;
    c->test_path = NULL;
    c->status_path = NULL;
}
