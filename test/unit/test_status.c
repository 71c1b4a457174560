/*
 * Status aggregation: phases from worker entries and pod states, lost
 * workers, allowOOM, stop, conditions, the event summary, which pods to
 * create, TTL, and that an unchanged status needs no write.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "controller/pods.h"
#include "controller/status.h"
#include "kube/kube.h"

#define NOW       "2026-12-04T12:00:00Z"
#define NOW_EPOCH 1796385600.0

static struct json_object *mst(const char *spec, const char *status)
{
    char text[4096];

    snprintf(text, sizeof(text),
             "{\"metadata\":{\"name\":\"t\",\"namespace\":\"ns\",\"uid\":"
             "\"u1\",\"generation\":1},\"spec\":%s,\"status\":%s}",
             spec, status ? status : "{}");
    return json_tokener_parse(text);
}

static struct json_object *pod(const char *status)
{
    char text[1024];

    snprintf(text, sizeof(text), "{\"status\":%s}", status);
    return json_tokener_parse(text);
}

static const char *field(struct json_object *obj, const char *key)
{
    struct json_object *v = NULL;

    json_object_object_get_ex(obj, key, &v);
    return v ? json_object_get_string(v) : NULL;
}

static struct json_object *plan_status(struct status_plan *plan)
{
    struct json_object *status = NULL;

    json_object_object_get_ex(plan->apply, "status", &status);
    return status;
}

static const char *condition(struct status_plan *plan, const char *type,
                             const char *key)
{
    struct json_object *list = NULL;

    json_object_object_get_ex(plan_status(plan), "conditions", &list);
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *c = json_object_array_get_idx(list, i);

        if (strcmp(field(c, "type"), type) == 0)
            return field(c, key);
    }
    return NULL;
}

static void new_test_creates_all_pods(void **state)
{
    struct json_object *m = mst("{\"memory\":\"64Mi\",\"workers\":3}", NULL);
    struct json_object *pods[3] = {NULL, NULL, NULL};
    struct status_plan plan;

    (void)state;
    assert_int_equal(status_plan(m, pods, NOW, NOW_EPOCH, &plan), 0);
    assert_string_equal(plan.phase, "Pending");
    assert_true(plan.create[0] && plan.create[1] && plan.create[2]);
    assert_true(plan.changed);
    assert_string_equal(field(plan_status(&plan), "startTime"), NOW);
    assert_string_equal(field(plan_status(&plan), "target"), "64Mi");
    assert_string_equal(field(plan_status(&plan), "workersReady"), "0/3");
    assert_string_equal(condition(&plan, "Succeeded", "status"), "Unknown");
    assert_string_equal(condition(&plan, "WorkersReady", "reason"), "Pending");
    json_object_put(plan.apply);
    json_object_put(m);
}

static const char holding_status[] =
    "{\"phase\":\"Building\",\"startTime\":\"2026-12-04T11:59:00Z\","
    "\"workers\":["
    "{\"name\":\"t-worker-0\",\"state\":\"searching\",\"memoryBytes\":"
    "67108864,\"targetBytes\":67108864,\"lastOperation\":"
    "\"BUILD_TREE_TARGET\",\"lastMessage\":\"Reached\",\"updateTime\":"
    "\"2026-12-04T11:59:30Z\"},"
    "{\"name\":\"t-worker-1\",\"state\":\"searching\",\"memoryBytes\":"
    "68157440,\"targetBytes\":67108864}]}";

static void all_searching_is_holding(void **state)
{
    struct json_object *m =
        mst("{\"memory\":\"64Mi\",\"workers\":2}", holding_status);
    struct json_object *running = pod("{\"phase\":\"Running\"}");
    struct json_object *pods[2] = {running, running};
    struct status_plan plan;
    struct json_object *events = NULL;

    (void)state;
    assert_int_equal(status_plan(m, pods, NOW, NOW_EPOCH, &plan), 0);
    assert_string_equal(plan.phase, "Holding");
    assert_false(plan.create[0] || plan.create[1]);
    assert_string_equal(field(plan_status(&plan), "memory"), "129Mi");
    assert_string_equal(field(plan_status(&plan), "workersReady"), "2/2");
    assert_string_equal(field(plan_status(&plan), "startTime"),
                        "2026-12-04T11:59:00Z");
    assert_string_equal(condition(&plan, "WorkersReady", "status"), "True");
    assert_string_equal(plan.event_reason, "TargetReached");
    json_object_object_get_ex(plan_status(&plan), "events", &events);
    assert_int_equal(json_object_array_length(events), 1);
    assert_string_equal(
        field(json_object_array_get_idx(events, 0), "operation"),
        "BUILD_TREE_TARGET");
    json_object_put(plan.apply);
    json_object_put(running);
    json_object_put(m);
}

static const char oom_pod[] =
    "{\"phase\":\"Failed\",\"containerStatuses\":[{\"state\":{\"terminated\":"
    "{\"reason\":\"OOMKilled\",\"exitCode\":137}}}]}";

static const char building_status[] =
    "{\"phase\":\"Building\",\"startTime\":\"2026-12-04T11:59:00Z\","
    "\"workers\":[{\"name\":\"t-worker-0\",\"state\":\"building\","
    "\"memoryBytes\":132120576}]}";

static void oom_kill_fails_test(void **state)
{
    struct json_object *m = mst("{\"memory\":\"512Mi\"}", building_status);
    struct json_object *killed = pod(oom_pod);
    struct json_object *pods[1] = {killed};
    struct status_plan plan;

    (void)state;
    assert_int_equal(status_plan(m, pods, NOW, NOW_EPOCH, &plan), 0);
    assert_string_equal(plan.phase, "Failed");
    assert_int_equal(plan.oom_kills, 1);
    assert_string_equal(condition(&plan, "Succeeded", "reason"), "WorkerLost");
    assert_string_equal(plan.event_type, "Warning");
    assert_string_equal(field(plan_status(&plan), "completionTime"), NOW);
    json_object_put(plan.apply);
    json_object_put(killed);
    json_object_put(m);
}

static void allowed_oom_kill_succeeds(void **state)
{
    struct json_object *m =
        mst("{\"memory\":\"512Mi\",\"allowOOM\":true}", building_status);
    struct json_object *killed = pod(oom_pod);
    struct json_object *pods[1] = {killed};
    struct status_plan plan;
    struct json_object *workers = NULL, *entry;

    (void)state;
    assert_int_equal(status_plan(m, pods, NOW, NOW_EPOCH, &plan), 0);
    assert_string_equal(plan.phase, "Succeeded");
    assert_string_equal(condition(&plan, "Succeeded", "reason"),
                        "OOMLimitFound");
    json_object_object_get_ex(plan_status(&plan), "workers", &workers);
    entry = json_object_array_get_idx(workers, 0);
    assert_string_equal(field(entry, "name"), "t-worker-0");
    assert_string_equal(field(entry, "reason"), "OOMKilled");
    assert_string_equal(field(entry, "exitCode"), "137");
    assert_string_equal(field(plan_status(&plan), "oomKills"), "1");
    json_object_put(plan.apply);
    json_object_put(killed);
    json_object_put(m);
}

static void missing_pod_after_start_is_lost(void **state)
{
    struct json_object *m = mst("{\"memory\":\"64Mi\"}", building_status);
    struct json_object *pods[1] = {NULL};
    struct status_plan plan;

    (void)state;
    assert_int_equal(status_plan(m, pods, NOW, NOW_EPOCH, &plan), 0);
    assert_string_equal(plan.phase, "Failed");
    assert_false(plan.create[0]);
    assert_int_equal(plan.lost, 1);
    json_object_put(plan.apply);
    json_object_put(m);
}

static void stop_ends_in_stopped(void **state)
{
    struct json_object *m =
        mst("{\"memory\":\"64Mi\",\"stop\":true}",
            "{\"phase\":\"Holding\",\"startTime\":\"2026-12-04T11:59:00Z\","
            "\"workers\":[{\"name\":\"t-worker-0\",\"state\":\"stopped\"}]}");
    struct json_object *running = pod("{\"phase\":\"Running\"}");
    struct json_object *pods[1] = {running};
    struct status_plan plan;

    (void)state;
    assert_int_equal(status_plan(m, pods, NOW, NOW_EPOCH, &plan), 0);
    assert_string_equal(plan.phase, "Stopped");
    assert_string_equal(condition(&plan, "Succeeded", "status"), "False");
    assert_string_equal(plan.event_reason, "Stopped");
    json_object_put(plan.apply);
    json_object_put(running);
    json_object_put(m);
}

static void finished_phase_is_sticky(void **state)
{
    struct json_object *m =
        mst("{\"memory\":\"64Mi\",\"ttlSecondsAfterFinished\":30}",
            "{\"phase\":\"Succeeded\",\"startTime\":\"2026-12-04T11:58:00Z\","
            "\"completionTime\":\"2026-12-04T11:59:50Z\",\"workers\":[{"
            "\"name\":\"t-worker-0\",\"state\":\"building\"}]}");
    struct json_object *pods[1] = {NULL};
    struct status_plan plan;

    (void)state;
    assert_int_equal(status_plan(m, pods, NOW, NOW_EPOCH, &plan), 0);
    assert_string_equal(plan.phase, "Succeeded");
    assert_false(plan.create[0]);
    assert_true(plan.ttl_left > 19.5 && plan.ttl_left < 20.5);
    assert_string_equal(field(plan_status(&plan), "completionTime"),
                        "2026-12-04T11:59:50Z");
    assert_string_equal(plan.event_reason, "");
    json_object_put(plan.apply);
    json_object_put(m);
}

static void unchanged_status_needs_no_write(void **state)
{
    struct json_object *m =
        mst("{\"memory\":\"64Mi\",\"workers\":2}", holding_status);
    struct json_object *running = pod("{\"phase\":\"Running\"}");
    struct json_object *pods[2] = {running, running};
    struct json_object *status, *copy = NULL, *again;
    struct status_plan plan, second;

    (void)state;
    assert_int_equal(status_plan(m, pods, NOW, NOW_EPOCH, &plan), 0);
    assert_true(plan.changed);

    /* Store the planned status, with the workers' entries kept. */
    json_object_object_get_ex(m, "status", &status);
    json_object_deep_copy(plan_status(&plan), &copy, NULL);
    json_object_object_foreach(copy, key, value)
    {
        if (strcmp(key, "workers") != 0)
            json_object_object_add(status, key, json_object_get(value));
    }
    assert_int_equal(
        status_plan(m, pods, "2026-12-04T12:00:05Z", NOW_EPOCH + 5, &second),
        0);
    assert_false(second.changed);
    assert_string_equal(second.event_reason, "");
    json_object_object_get_ex(second.apply, "status", &again);
    assert_string_equal(
        condition(&second, "WorkersReady", "lastTransitionTime"), NOW);
    json_object_put(copy);
    json_object_put(second.apply);
    json_object_put(plan.apply);
    json_object_put(running);
    json_object_put(m);
}

static void bad_resources_are_rejected(void **state)
{
    struct json_object *no_spec = json_tokener_parse(
        "{\"metadata\":{\"name\":\"t\",\"namespace\":\"ns\"}}");
    struct json_object *too_many = mst("{\"workers\":1000}", NULL);
    struct json_object *pods[1] = {NULL};
    struct status_plan plan;

    (void)state;
    assert_int_equal(status_plan(no_spec, pods, NOW, NOW_EPOCH, &plan),
                     -EINVAL);
    assert_int_equal(status_plan(too_many, pods, NOW, NOW_EPOCH, &plan),
                     -EINVAL);
    json_object_put(no_spec);
    json_object_put(too_many);
}

static void worker_pod_has_owner_and_guaranteed_qos(void **state)
{
    struct json_object *m = mst("{\"memory\":\"256Mi\",\"cpuPercent\":50,"
                                "\"template\":{\"image\":\"x:1\","
                                "\"nodeSelector\":{\"a\":\"b\"}}}",
                                NULL);
    struct pods_settings settings = {.image = "memstress:dev",
                                     .command = "memstress-worker"};
    struct json_object *p = pods_worker_pod(m, 2, &settings);
    const char *text = kube_json_string(p);

    (void)state;
    assert_non_null(p);
    assert_non_null(strstr(text, "\"name\":\"t-worker-2\""));
    assert_non_null(strstr(text, "\"controller\":true"));
    assert_non_null(strstr(text, "\"uid\":\"u1\""));
    assert_non_null(strstr(text, "\"image\":\"x:1\""));
    assert_non_null(strstr(text, "\"restartPolicy\":\"Never\""));
    assert_non_null(strstr(text, "\"runAsNonRoot\":true"));
    assert_non_null(strstr(text, "\"nodeSelector\":{\"a\":\"b\"}"));
    assert_non_null(strstr(text, "\"$(POD_NAMESPACE)/t\""));
    /* 256Mi target + 24Mi overhead, requests equal to limits. */
    assert_non_null(strstr(text, "\"limits\":{\"memory\":\"280Mi\","
                                 "\"cpu\":\"500m\"}"));
    assert_non_null(strstr(text, "\"requests\":{\"memory\":\"280Mi\","
                                 "\"cpu\":\"500m\"}"));
    assert_non_null(strstr(text, "\"path\":\"/readyz\""));
    json_object_put(p);
    json_object_put(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_test_creates_all_pods),
        cmocka_unit_test(all_searching_is_holding),
        cmocka_unit_test(oom_kill_fails_test),
        cmocka_unit_test(allowed_oom_kill_succeeds),
        cmocka_unit_test(missing_pod_after_start_is_lost),
        cmocka_unit_test(stop_ends_in_stopped),
        cmocka_unit_test(finished_phase_is_sticky),
        cmocka_unit_test(unchanged_status_needs_no_write),
        cmocka_unit_test(bad_resources_are_rejected),
        cmocka_unit_test(worker_pod_has_owner_and_guaranteed_qos),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
