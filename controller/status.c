/*
 * The rules, in order of precedence:
 *   - a phase that ended (Succeeded, Stopped, Failed) never changes again;
 *   - a lost worker fails the test, unless it was OOM-killed and the test
 *     allows that (allowOOM), in which case it counts as done and the test
 *     reports the memory it reached;
 *   - all workers done: Succeeded; stop requested and all stopped or done:
 *     Stopped; all holding their target: Holding; any started: Building;
 *     otherwise Pending.
 * A worker is lost when its pod ended (OOMKilled, Evicted, Error) or
 * disappeared after the test started (Deleted).  Lost pods are never
 * replaced, so a lost worker is always visible in the status.
 */
#include "controller/status.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "controller/pods.h"
#include "kube/quantity.h"

struct worker_view {
    char name[300];
    struct json_object *entry; /* borrowed from mst, or NULL */
    const char *state;         /* the worker's own state, or NULL */
    int64_t memory;
    int64_t target;
    const char *lost; /* OOMKilled, Evicted, Deleted, Error */
    int exit_code;
};

struct counts {
    int holding, done, stopped, failed, started;
};

static struct json_object *get(struct json_object *obj, const char *key)
{
    struct json_object *value = NULL;

    if (obj)
        json_object_object_get_ex(obj, key, &value);
    return value;
}

static const char *get_str(struct json_object *obj, const char *key)
{
    struct json_object *value = get(obj, key);

    return json_object_is_type(value, json_type_string)
               ? json_object_get_string(value)
               : NULL;
}

static int64_t get_int(struct json_object *obj, const char *key, int64_t def)
{
    struct json_object *value = get(obj, key);

    return json_object_is_type(value, json_type_int)
               ? json_object_get_int64(value)
               : def;
}

static bool str_is(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

double status_parse_time(const char *text)
{
    struct tm tm = {0};
    const char *end;

    if (!text)
        return -1;
    end = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return -1;
    return (double)timegm(&tm);
}

static struct json_object *find_entry(struct json_object *status,
                                      const char *name)
{
    struct json_object *workers = get(status, "workers");
    size_t n = json_object_is_type(workers, json_type_array)
                   ? json_object_array_length(workers)
                   : 0;

    for (size_t i = 0; i < n; i++) {
        struct json_object *entry = json_object_array_get_idx(workers, i);

        if (str_is(get_str(entry, "name"), name))
            return entry;
    }
    return NULL;
}

/* Sets w->lost from the pod.  A missing pod is lost only once started. */
static void classify_pod(struct worker_view *w, struct json_object *pod,
                         bool started)
{
    struct json_object *status = get(pod, "status");
    struct json_object *statuses = get(status, "containerStatuses");
    struct json_object *terminated = NULL;

    if (!pod) {
        if (started)
            w->lost = "Deleted";
        return;
    }
    if (json_object_is_type(statuses, json_type_array) &&
        json_object_array_length(statuses) > 0)
        terminated = get(get(json_object_array_get_idx(statuses, 0), "state"),
                         "terminated");
    if (terminated) {
        w->exit_code = (int)get_int(terminated, "exitCode", 0);
        if (str_is(get_str(terminated, "reason"), "OOMKilled"))
            w->lost = "OOMKilled";
        else if (!str_is(w->state, "completed") || w->exit_code != 0)
            w->lost = "Error";
    } else if (str_is(get_str(status, "phase"), "Failed")) {
        w->lost =
            str_is(get_str(status, "reason"), "Evicted") ? "Evicted" : "Error";
    }
}

static void count_worker(const struct worker_view *w, bool allow_oom,
                         struct counts *c)
{
    if (w->lost) {
        if (str_is(w->lost, "OOMKilled") && allow_oom)
            c->done++;
        else
            c->failed++;
        return;
    }
    if (str_is(w->state, "failed"))
        c->failed++;
    if (str_is(w->state, "completed")) {
        c->done++;
        c->holding++;
    }
    if (str_is(w->state, "searching"))
        c->holding++;
    if (str_is(w->state, "stopped"))
        c->stopped++;
    if (w->state && !str_is(w->state, "idle"))
        c->started++;
}

static const char *decide_phase(const char *old, const struct counts *c,
                                int workers, bool stop)
{
    if (str_is(old, "Succeeded") || str_is(old, "Stopped") ||
        str_is(old, "Failed"))
        return old;
    if (c->failed > 0)
        return "Failed";
    if (c->done == workers)
        return "Succeeded";
    if (stop && c->done + c->stopped == workers)
        return "Stopped";
    if (c->holding == workers)
        return "Holding";
    if (c->started > 0)
        return "Building";
    return "Pending";
}

/* Adds a condition, keeping the old transition time if status is unchanged. */
static void add_condition(struct json_object *list, struct json_object *old,
                          const char *type, const char *status,
                          const char *reason, const char *message,
                          const char *now, int64_t generation)
{
    struct json_object *c = json_object_new_object();
    const char *since = now;
    size_t n = json_object_is_type(old, json_type_array)
                   ? json_object_array_length(old)
                   : 0;

    for (size_t i = 0; i < n; i++) {
        struct json_object *o = json_object_array_get_idx(old, i);

        if (str_is(get_str(o, "type"), type) &&
            str_is(get_str(o, "status"), status) &&
            get_str(o, "lastTransitionTime"))
            since = get_str(o, "lastTransitionTime");
    }
    json_object_object_add(c, "type", json_object_new_string(type));
    json_object_object_add(c, "status", json_object_new_string(status));
    json_object_object_add(c, "observedGeneration",
                           json_object_new_int64(generation));
    json_object_object_add(c, "lastTransitionTime",
                           json_object_new_string(since));
    json_object_object_add(c, "reason", json_object_new_string(reason));
    json_object_object_add(c, "message", json_object_new_string(message));
    json_object_array_add(list, c);
}

static const char *first_lost(const struct worker_view *views, int workers)
{
    for (int i = 0; i < workers; i++)
        if (views[i].lost)
            return views[i].name;
    return NULL;
}

static struct json_object *conditions_for(const struct status_plan *plan,
                                          const struct worker_view *views,
                                          const struct counts *c,
                                          struct json_object *old,
                                          const char *now, int64_t generation)
{
    struct json_object *list = json_object_new_array();
    const char *phase = plan->phase;
    char message[512];

    if (str_is(phase, "Succeeded")) {
        snprintf(message, sizeof(message),
                 plan->oom_kills ? "%d of %d workers reached the OOM limit; "
                                   "status.workers has the memory reached"
                                 : "All %d of %d workers held their target "
                                   "for the whole duration",
                 plan->oom_kills ? plan->oom_kills : plan->workers,
                 plan->workers);
        add_condition(list, old, "Succeeded", "True",
                      plan->oom_kills ? "OOMLimitFound" : "Completed", message,
                      now, generation);
    } else if (str_is(phase, "Failed")) {
        const char *lost = first_lost(views, plan->workers);

        snprintf(message, sizeof(message),
                 lost ? "Worker %s was lost; status.workers says why"
                      : "A worker failed; status.workers has its last message",
                 lost);
        add_condition(list, old, "Succeeded", "False",
                      lost ? "WorkerLost" : "WorkerFailed", message, now,
                      generation);
    } else if (str_is(phase, "Stopped")) {
        add_condition(list, old, "Succeeded", "False", "Stopped",
                      "Stopped on request (spec.stop)", now, generation);
    } else if (str_is(phase, "Pending")) {
        add_condition(list, old, "Succeeded", "Unknown", "Pending",
                      "Waiting for the worker pods to start; their events "
                      "say why when they cannot be scheduled",
                      now, generation);
    } else {
        add_condition(list, old, "Succeeded", "Unknown", "Running",
                      "The test is running", now, generation);
    }

    snprintf(message, sizeof(message), "%d of %d workers hold their target",
             c->holding, plan->workers);
    if (c->holding == plan->workers)
        add_condition(list, old, "WorkersReady", "True", "TargetReached",
                      message, now, generation);
    else if (str_is(phase, "Stopped"))
        add_condition(list, old, "WorkersReady", "False", "Stopped", message,
                      now, generation);
    else
        add_condition(list, old, "WorkersReady", "False",
                      plan->lost   ? "WorkerLost"
                      : c->started ? "Building"
                                   : "Pending",
                      message, now, generation);
    return list;
}

static bool has_event(struct json_object *events, const char *worker,
                      const char *operation)
{
    size_t n = json_object_array_length(events);

    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(events, i);

        if (str_is(get_str(e, "worker"), worker) &&
            str_is(get_str(e, "operation"), operation))
            return true;
    }
    return false;
}

static void push_event(struct json_object *events, const char *time,
                       const char *worker, const char *operation,
                       const char *message)
{
    struct json_object *e = json_object_new_object();

    if (has_event(events, worker, operation))
        return;
    json_object_object_add(e, "time", json_object_new_string(time));
    json_object_object_add(e, "worker", json_object_new_string(worker));
    json_object_object_add(e, "operation", json_object_new_string(operation));
    json_object_object_add(e, "message",
                           json_object_new_string(message ? message : ""));
    json_object_array_add(events, e);
    if (json_object_array_length(events) > STATUS_MAX_EVENTS)
        json_object_array_del_idx(events, 0, 1);
}

static bool important(const char *operation)
{
    static const char *const ops[] = {
        "BUILD_TREE_TARGET",   "SEARCH_TREE_COMPLETE", "STRESS_TEST_COMPLETE",
        "STRESS_TEST_STOPPED", "STRESS_TEST_ERROR",
    };

    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (str_is(operation, ops[i]))
            return true;
    return false;
}

/* Returns the summary of important events: the old list plus new ones. */
static struct json_object *events_for(struct json_object *old,
                                      const struct worker_view *views,
                                      int workers, const char *now)
{
    struct json_object *events = NULL;
    char message[256], memory[32];

    if (!old || json_object_deep_copy(old, &events, NULL) != 0)
        events = json_object_new_array();
    for (int i = 0; i < workers; i++) {
        const struct worker_view *w = &views[i];
        const char *operation = get_str(w->entry, "lastOperation");
        const char *time = get_str(w->entry, "updateTime");

        if (important(operation))
            push_event(events, time ? time : now, w->name, operation,
                       get_str(w->entry, "lastMessage"));
        if (w->lost) {
            quantity_format(w->memory, memory, sizeof(memory));
            snprintf(message, sizeof(message),
                     "Worker lost (%s, exit code %d); last reported memory %s",
                     w->lost, w->exit_code, memory);
            push_event(events, now, w->name, "WORKER_LOST", message);
        }
    }
    return events;
}

/* Writes bytes for people: exact when it is, else rounded to MiB. */
static void format_display(int64_t bytes, char *text, size_t size)
{
    const int64_t mib = (int64_t)1 << 20;

    if (bytes % mib == 0 || bytes < mib)
        quantity_format(bytes, text, size);
    else
        snprintf(text, size, "%lldMi", (long long)((bytes + mib / 2) / mib));
}

static void add_quantity(struct json_object *status, const char *name,
                         const char *bytes_name, int64_t bytes)
{
    char text[32];

    format_display(bytes, text, sizeof(text));
    json_object_object_add(status, name, json_object_new_string(text));
    json_object_object_add(status, bytes_name, json_object_new_int64(bytes));
}

/* Entries for lost workers: the controller's fields in status.workers. */
static struct json_object *lost_entries(const struct worker_view *views,
                                        int workers)
{
    struct json_object *list = json_object_new_array();

    for (int i = 0; i < workers; i++) {
        struct json_object *e;

        if (!views[i].lost)
            continue;
        e = json_object_new_object();
        json_object_object_add(e, "name",
                               json_object_new_string(views[i].name));
        json_object_object_add(e, "reason",
                               json_object_new_string(views[i].lost));
        json_object_object_add(e, "exitCode",
                               json_object_new_int(views[i].exit_code));
        json_object_array_add(list, e);
    }
    return list;
}

/* Returns true when every field of next equals the stored status. */
static bool same_status(struct json_object *next, struct json_object *old)
{
    json_object_object_foreach(next, key, value)
    {
        if (strcmp(key, "workers") == 0) {
            size_t n = json_object_array_length(value);

            for (size_t i = 0; i < n; i++) {
                struct json_object *e = json_object_array_get_idx(value, i);
                struct json_object *o = find_entry(old, get_str(e, "name"));

                if (!str_is(get_str(o, "reason"), get_str(e, "reason")) ||
                    get_int(o, "exitCode", -1) != get_int(e, "exitCode", -2))
                    return false;
            }
            continue;
        }
        if (!json_object_equal(value, get(old, key)))
            return false;
    }
    return true;
}

static void load_views(struct json_object *mst, struct json_object **pods,
                       struct status_plan *plan, struct worker_view *views)
{
    struct json_object *status = get(mst, "status");
    const char *test = get_str(get(mst, "metadata"), "name");
    bool started = get_str(status, "startTime") != NULL;

    for (int i = 0; i < plan->workers; i++) {
        struct worker_view *w = &views[i];

        memset(w, 0, sizeof(*w));
        pods_worker_name(test, i, w->name, sizeof(w->name));
        w->entry = find_entry(status, w->name);
        w->state = get_str(w->entry, "state");
        w->memory = get_int(w->entry, "memoryBytes", 0);
        w->target = get_int(w->entry, "targetBytes", 0);
        classify_pod(w, pods[i], started);
        if (!pods[i] && !started && !plan->terminal)
            plan->create[i] = true;
        if (w->lost) {
            plan->lost++;
            plan->oom_kills += str_is(w->lost, "OOMKilled");
        }
    }
}

static void plan_event(struct status_plan *plan)
{
    static const struct {
        const char *phase, *reason, *type, *message;
    } events[] = {
        {"Building", "Building", "Normal", "Workers are filling memory"},
        {"Holding", "TargetReached", "Normal",
         "All workers reached their target and hold it"},
        {"Succeeded", "Succeeded", "Normal", "The test completed"},
        {"Stopped", "Stopped", "Normal", "The test was stopped"},
        {"Failed", "Failed", "Warning", "A worker was lost or failed"},
    };

    if (strcmp(plan->phase, plan->old_phase) == 0)
        return;
    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        if (strcmp(plan->phase, events[i].phase) != 0)
            continue;
        snprintf(plan->event_reason, sizeof(plan->event_reason), "%s",
                 events[i].reason);
        snprintf(plan->event_type, sizeof(plan->event_type), "%s",
                 events[i].type);
        snprintf(plan->event_message, sizeof(plan->event_message), "%s",
                 events[i].message);
    }
}

static struct json_object *status_object(struct json_object *mst,
                                         struct status_plan *plan,
                                         const struct worker_view *views,
                                         const struct counts *c,
                                         const char *now)
{
    struct json_object *old = get(mst, "status");
    struct json_object *spec = get(mst, "spec");
    int64_t generation = get_int(get(mst, "metadata"), "generation", 0);
    struct json_object *status = json_object_new_object();
    int64_t memory = 0, target = 0;
    char ready[16];
    const char *start = get_str(old, "startTime");
    const char *completion = get_str(old, "completionTime");

    for (int i = 0; i < plan->workers; i++) {
        if (!views[i].lost)
            memory += views[i].memory;
        if (views[i].target > target)
            target = views[i].target;
    }
    if (target == 0 && get(spec, "memory"))
        quantity_from_json(get(spec, "memory"), &target);
    snprintf(ready, sizeof(ready), "%d/%d", c->holding, plan->workers);

    json_object_object_add(status, "phase",
                           json_object_new_string(plan->phase));
    json_object_object_add(status, "observedGeneration",
                           json_object_new_int64(generation));
    json_object_object_add(status, "startTime",
                           json_object_new_string(start ? start : now));
    if (plan->terminal)
        json_object_object_add(
            status, "completionTime",
            json_object_new_string(completion ? completion : now));
    if (target > 0)
        add_quantity(status, "target", "targetBytes", target);
    add_quantity(status, "memory", "memoryBytes", memory);
    json_object_object_add(status, "workersReady",
                           json_object_new_string(ready));
    json_object_object_add(status, "oomKills",
                           json_object_new_int(plan->oom_kills));
    json_object_object_add(status, "conditions",
                           conditions_for(plan, views, c,
                                          get(old, "conditions"), now,
                                          generation));
    json_object_object_add(
        status, "events",
        events_for(get(old, "events"), views, plan->workers, now));
    json_object_object_add(status, "workers",
                           lost_entries(views, plan->workers));
    return status;
}

static void plan_ttl(struct json_object *mst, struct status_plan *plan,
                     struct json_object *status, double now_epoch)
{
    struct json_object *ttl = get(get(mst, "spec"), "ttlSecondsAfterFinished");
    double done;

    plan->ttl_left = -1;
    if (!plan->terminal || !ttl)
        return;
    done = status_parse_time(get_str(status, "completionTime"));
    if (done < 0)
        done = now_epoch;
    plan->ttl_left = done + (double)json_object_get_int64(ttl) - now_epoch;
    if (plan->ttl_left < 0)
        plan->ttl_left = 0;
}

int status_plan(struct json_object *mst, struct json_object **pods,
                const char *now, double now_epoch, struct status_plan *plan)
{
    struct json_object *spec = get(mst, "spec"), *metadata, *status;
    struct worker_view views[STATUS_MAX_WORKERS] = {0};
    struct counts c = {0};
    const char *old_phase = get_str(get(mst, "status"), "phase");

    memset(plan, 0, sizeof(*plan));
    metadata = get(mst, "metadata");
    if (!spec || !get_str(metadata, "name") || !get_str(metadata, "namespace"))
        return -EINVAL;
    plan->workers = (int)get_int(spec, "workers", 1);
    if (plan->workers < 1 || plan->workers > STATUS_MAX_WORKERS)
        return -EINVAL;
    snprintf(plan->old_phase, sizeof(plan->old_phase), "%s",
             old_phase ? old_phase : "");
    plan->terminal = str_is(old_phase, "Succeeded") ||
                     str_is(old_phase, "Stopped") ||
                     str_is(old_phase, "Failed");

    load_views(mst, pods, plan, views);
    for (int i = 0; i < plan->workers; i++)
        count_worker(&views[i],
                     get_int(spec, "allowOOM", 0) ||
                         json_object_get_boolean(get(spec, "allowOOM")),
                     &c);
    snprintf(plan->phase, sizeof(plan->phase), "%s",
             decide_phase(plan->old_phase, &c, plan->workers,
                          json_object_get_boolean(get(spec, "stop"))));
    plan->terminal = str_is(plan->phase, "Succeeded") ||
                     str_is(plan->phase, "Stopped") ||
                     str_is(plan->phase, "Failed");
    plan_event(plan);

    status = status_object(mst, plan, views, &c, now);
    plan->changed = !same_status(status, get(mst, "status"));
    plan_ttl(mst, plan, status, now_epoch);

    plan->apply = json_object_new_object();
    json_object_object_add(plan->apply, "apiVersion",
                           json_object_new_string("memstress.dev/v1alpha1"));
    json_object_object_add(plan->apply, "kind",
                           json_object_new_string("MemoryStressTest"));
    metadata = json_object_new_object();
    json_object_object_add(
        metadata, "name",
        json_object_new_string(get_str(get(mst, "metadata"), "name")));
    json_object_object_add(
        metadata, "namespace",
        json_object_new_string(get_str(get(mst, "metadata"), "namespace")));
    json_object_object_add(plan->apply, "metadata", metadata);
    json_object_object_add(plan->apply, "status", status);
    return 0;
}
