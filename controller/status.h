/*
 * Status aggregation: from a MemoryStressTest (its spec and the entries its
 * workers applied) and its worker pods, decide the test's phase, which pods
 * to create, and the controller's part of the status.
 *
 * This is a pure function of its inputs, so reconciling is level-triggered
 * and idempotent: the same resource and pods always give the same plan, and
 * a plan whose status equals the stored one needs no write.
 */
#ifndef CONTROLLER_STATUS_H
#define CONTROLLER_STATUS_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#define STATUS_MAX_WORKERS 100
#define STATUS_MAX_EVENTS  20

struct status_plan {
    char phase[16];
    char old_phase[16];
    bool terminal;
    int workers;
    bool create[STATUS_MAX_WORKERS]; /* pods to create, by index */
    int oom_kills;
    int lost;
    /* The server-side apply body for the status subresource. */
    struct json_object *apply;
    /* False when the stored status already equals the plan's. */
    bool changed;
    /* Seconds until the test's TTL runs out; < 0 when there is none. */
    double ttl_left;
    /* Kubernetes Event for a phase change: reason is "" when none. */
    char event_reason[32];
    char event_type[8];
    char event_message[256];
};

/*
 * Plans one reconcile of mst.  pods[i] is worker pod i or NULL when it does
 * not exist (the array has spec.workers entries).  now is the RFC 3339 time
 * to stamp and now_epoch the same in seconds.  Returns 0, or -EINVAL when
 * mst has no spec or name.  The caller frees plan->apply with
 * json_object_put().
 */
int status_plan(struct json_object *mst, struct json_object **pods,
                const char *now, double now_epoch, struct status_plan *plan);

/* Parses an RFC 3339 UTC time ("2026-12-04T15:00:00Z"); returns -1 on error. */
double status_parse_time(const char *text);

#endif
