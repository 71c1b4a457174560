/*
 * Leader election on a coordination.k8s.io Lease, so that only one of
 * several controller replicas reconciles at a time.
 *
 * A candidate takes the Lease when it does not exist, when it is its own,
 * or when its holder has not renewed it for leaseDurationSeconds as seen by
 * this process's clock (the holder's timestamps are not trusted, so clock
 * skew between nodes does not matter).  Every write carries the Lease's
 * resourceVersion, so two candidates cannot both win.  The leader renews
 * every retry period and steps down when it could not renew for the renew
 * deadline.  On a clean shutdown it releases the Lease so that a standby
 * takes over at once.
 */
#ifndef CONTROLLER_LEADER_H
#define CONTROLLER_LEADER_H

#include <stdatomic.h>
#include <stdbool.h>

#include "kube/kube.h"

struct leader {
    struct kube_client *client; /* borrowed */
    char *path;                 /* the Lease object's path */
    char *collection;           /* its namespace's leases */
    char namespace[254];
    char name[254];
    char identity[254];
    int lease_duration_s;
    int renew_deadline_s;
    int retry_period_s;
    atomic_bool is_leader;
    /* The last record seen and when this process saw it change. */
    char observed_holder[254];
    char observed_renew[64];
    double observed_at;
    double last_renew; /* monotonic time of the last successful renew */
};

/* Prepares an election; returns 0 or -ENOMEM. */
int leader_init(struct leader *l, struct kube_client *client,
                const char *namespace, const char *name, const char *identity,
                int lease_duration_s, int renew_deadline_s, int retry_period_s);

void leader_release(struct leader *l);

/*
 * Tries once to acquire or renew the Lease.  Returns 1 when this process
 * owns it, 0 when another does, or a negative errno on API errors.
 */
int leader_try(struct leader *l);

/*
 * Blocks until this process leads (returns 0) or *stop is set (returns
 * -ECANCELED).
 */
int leader_acquire(struct leader *l, const atomic_bool *stop);

/*
 * Renews until *stop is set (returns 0, after releasing the Lease) or the
 * renew deadline passes without a renewal (returns -ETIMEDOUT).
 */
int leader_hold(struct leader *l, const atomic_bool *stop);

#endif
