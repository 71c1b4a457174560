/*
 * Lease records.  renewTime and acquireTime are MicroTime values
 * ("2026-12-04T12:00:00.000000Z"); they are written for other readers, and
 * expiry is judged only from when this process last saw the record change.
 */
#include "controller/leader.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "kube/clock.h"
#include "kube/klog.h"

int leader_init(struct leader *l, struct kube_client *client,
                const char *namespace, const char *name, const char *identity,
                int lease_duration_s, int renew_deadline_s, int retry_period_s)
{
    memset(l, 0, sizeof(*l));
    l->client = client;
    snprintf(l->namespace, sizeof(l->namespace), "%s", namespace);
    snprintf(l->name, sizeof(l->name), "%s", name);
    snprintf(l->identity, sizeof(l->identity), "%s", identity);
    l->lease_duration_s = lease_duration_s;
    l->renew_deadline_s = renew_deadline_s;
    l->retry_period_s = retry_period_s;
    l->path =
        kube_path("coordination.k8s.io", "v1", namespace, "leases", name, NULL);
    l->collection =
        kube_path("coordination.k8s.io", "v1", namespace, "leases", NULL, NULL);
    return l->path && l->collection ? 0 : -ENOMEM;
}

void leader_release(struct leader *l)
{
    free(l->path);
    free(l->collection);
    l->path = NULL;
    l->collection = NULL;
}

static const char *spec_str(struct json_object *spec, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(spec, key, &v) &&
                   json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : "";
}

static struct json_object *new_lease(struct leader *l, const char *now)
{
    struct json_object *lease = json_object_new_object();
    struct json_object *metadata = json_object_new_object();
    struct json_object *spec = json_object_new_object();

    json_object_object_add(metadata, "name", json_object_new_string(l->name));
    json_object_object_add(metadata, "namespace",
                           json_object_new_string(l->namespace));
    json_object_object_add(spec, "holderIdentity",
                           json_object_new_string(l->identity));
    json_object_object_add(spec, "leaseDurationSeconds",
                           json_object_new_int(l->lease_duration_s));
    json_object_object_add(spec, "acquireTime", json_object_new_string(now));
    json_object_object_add(spec, "renewTime", json_object_new_string(now));
    json_object_object_add(spec, "leaseTransitions", json_object_new_int(0));
    json_object_object_add(lease, "apiVersion",
                           json_object_new_string("coordination.k8s.io/v1"));
    json_object_object_add(lease, "kind", json_object_new_string("Lease"));
    json_object_object_add(lease, "metadata", metadata);
    json_object_object_add(lease, "spec", spec);
    return lease;
}

/* Records the holder and renew time seen; notes when they changed. */
static void observe(struct leader *l, const char *holder, const char *renew)
{
    if (strcmp(holder, l->observed_holder) != 0 ||
        strcmp(renew, l->observed_renew) != 0 || l->observed_at == 0) {
        snprintf(l->observed_holder, sizeof(l->observed_holder), "%s", holder);
        snprintf(l->observed_renew, sizeof(l->observed_renew), "%s", renew);
        l->observed_at = clock_monotonic();
    }
}

static int create_lease(struct leader *l, const char *now)
{
    struct kube_response resp = {0};
    struct json_object *lease = new_lease(l, now);
    int ret = kube_create(l->client, l->collection, lease, &resp);

    long status = resp.status;

    json_object_put(lease);
    kube_response_release(&resp);
    if (ret == 0)
        return 1;
    return status == 409 ? 0 : ret;
}

/* Writes this process into an existing Lease; 1 on success, 0 on conflict. */
static int take_lease(struct leader *l, struct json_object *lease,
                      const char *now)
{
    struct json_object *spec = json_object_object_get(lease, "spec");
    struct kube_response resp = {0};
    bool new_holder =
        strcmp(spec_str(spec, "holderIdentity"), l->identity) != 0;
    long status;
    int ret;

    if (!spec) {
        spec = json_object_new_object();
        json_object_object_add(lease, "spec", spec);
    }
    if (new_holder) {
        struct json_object *t =
            json_object_object_get(spec, "leaseTransitions");

        json_object_object_add(
            spec, "leaseTransitions",
            json_object_new_int((t ? json_object_get_int(t) : 0) + 1));
        json_object_object_add(spec, "acquireTime",
                               json_object_new_string(now));
    }
    json_object_object_add(spec, "holderIdentity",
                           json_object_new_string(l->identity));
    json_object_object_add(spec, "leaseDurationSeconds",
                           json_object_new_int(l->lease_duration_s));
    json_object_object_add(spec, "renewTime", json_object_new_string(now));
    ret = kube_update(l->client, l->path, lease, &resp);
    status = resp.status;
    kube_response_release(&resp);
    if (ret == 0)
        return 1;
    return status == 409 ? 0 : ret;
}

int leader_try(struct leader *l)
{
    struct kube_response resp = {0};
    struct json_object *spec;
    const char *holder;
    char now[40];
    int ret;

    clock_format_utc(now, sizeof(now), true);
    ret = kube_get(l->client, l->path, &resp);
    if (ret < 0) {
        long status = resp.status;

        kube_response_release(&resp);
        return status == 404 ? create_lease(l, now) : ret;
    }
    spec = json_object_object_get(resp.body, "spec");
    holder = spec_str(spec, "holderIdentity");
    observe(l, holder, spec_str(spec, "renewTime"));

    if (*holder && strcmp(holder, l->identity) != 0 &&
        clock_monotonic() - l->observed_at < l->lease_duration_s) {
        kube_response_release(&resp);
        return 0;
    }
    ret = take_lease(l, resp.body, now);
    kube_response_release(&resp);
    return ret;
}

static void sleep_s(double seconds)
{
    struct timespec ts = {(time_t)seconds,
                          (long)((seconds - (double)(time_t)seconds) * 1e9)};

    nanosleep(&ts, NULL);
}

int leader_acquire(struct leader *l, const atomic_bool *stop)
{
    KLOG_INFO(2, "Waiting to acquire Lease", "lease", l->path, "identity",
              l->identity, NULL);
    while (!atomic_load(stop)) {
        int ret = leader_try(l);

        if (ret < 0)
            KLOG_ERROR("Failed to get or update Lease", strerror(-ret), "lease",
                       l->path, NULL);
        if (ret == 1) {
            l->last_renew = clock_monotonic();
            atomic_store(&l->is_leader, true);
            KLOG_INFO(0, "Acquired Lease", "lease", l->path, "identity",
                      l->identity, NULL);
            return 0;
        }
        sleep_s(l->retry_period_s > 0 ? l->retry_period_s : 1);
    }
    return -ECANCELED;
}

/* Gives the Lease up: an empty holder lets a standby take it at once. */
static void release_lease(struct leader *l)
{
    struct kube_response resp = {0};
    struct json_object *spec;

    if (kube_get(l->client, l->path, &resp) == 0 &&
        (spec = json_object_object_get(resp.body, "spec")) &&
        strcmp(spec_str(spec, "holderIdentity"), l->identity) == 0) {
        struct kube_response put = {0};

        json_object_object_add(spec, "holderIdentity",
                               json_object_new_string(""));
        json_object_object_add(spec, "leaseDurationSeconds",
                               json_object_new_int(1));
        if (kube_update(l->client, l->path, resp.body, &put) == 0)
            KLOG_INFO(0, "Released Lease", "lease", l->path, NULL);
        kube_response_release(&put);
    }
    kube_response_release(&resp);
    atomic_store(&l->is_leader, false);
}

int leader_hold(struct leader *l, const atomic_bool *stop)
{
    while (!atomic_load(stop)) {
        sleep_s(l->retry_period_s > 0 ? l->retry_period_s : 1);
        if (atomic_load(stop))
            break;
        if (leader_try(l) == 1) {
            l->last_renew = clock_monotonic();
            continue;
        }
        if (clock_monotonic() - l->last_renew > l->renew_deadline_s) {
            atomic_store(&l->is_leader, false);
            KLOG_ERROR("Lost Lease", "renew deadline passed", "lease", l->path,
                       "identity", l->identity, NULL);
            return -ETIMEDOUT;
        }
    }
    release_lease(l);
    return 0;
}
