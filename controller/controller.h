/*
 * The controller: two list-watch caches (MemoryStressTests, and the worker
 * pods it created), a work queue of test keys fed by both, and reconcile
 * workers that turn each test's plan (controller/status.h) into API calls.
 *
 * Reconciling waits until both caches have synced, so a pod that exists but
 * is not yet in the cache is never mistaken for a lost worker.
 */
#ifndef CONTROLLER_CONTROLLER_H
#define CONTROLLER_CONTROLLER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "controller/pods.h"
#include "controller/queue.h"
#include "kube/kube.h"
#include "kube/watch.h"

#define CONTROLLER_MAX_CONCURRENCY  16
#define CONTROLLER_DURATION_BUCKETS 11

struct controller_options {
    const char *namespace; /* watch only this namespace; NULL for all */
    const char *identity;  /* this instance, for Events and the Lease */
    struct pods_settings pods;
    int concurrency;
    double qps; /* overall rate of requeued keys */
    int burst;
};

struct controller_metrics {
    atomic_ulong reconciles;
    atomic_ulong errors;
    atomic_ulong pods_created;
    atomic_ulong status_writes;
    atomic_ulong events_emitted;
    atomic_ulong tests_deleted;
    /* Reconcile durations: counts per bucket, their sum in microseconds. */
    atomic_ulong duration_buckets[CONTROLLER_DURATION_BUCKETS];
    atomic_ulong duration_count;
    atomic_ulong duration_sum_us;
};

struct controller {
    struct controller_options options;
    struct kube_client *client; /* borrowed */
    struct queue queue;
    struct watch tests;
    struct watch pods;
    atomic_bool stop;
    atomic_bool tests_synced;
    atomic_bool pods_synced;
    pthread_t test_thread;
    pthread_t pod_thread;
    pthread_t workers[CONTROLLER_MAX_CONCURRENCY];
    bool running;
    pthread_mutex_t rbac_lock;
    char **rbac_done; /* namespaces whose worker RBAC exists */
    size_t rbac_count;
    struct controller_metrics metrics;
};

/* Upper bounds of the reconcile duration histogram, in seconds. */
extern const double controller_duration_bounds[CONTROLLER_DURATION_BUCKETS];

/* Prepares the controller; returns 0 or a negative errno. */
int controller_init(struct controller *c, struct kube_client *client,
                    const struct controller_options *options);

/* Starts the watches and the reconcile workers. */
int controller_start(struct controller *c);

/* Stops and joins every thread; safe to call when not started. */
void controller_stop(struct controller *c);

/* Frees what controller_init() set up. */
void controller_release(struct controller *c);

/* Returns true once both caches have synced. */
bool controller_synced(struct controller *c);

/*
 * Reconciles the test under key ("namespace/name") once.  Returns 0, or a
 * negative errno when the key should be retried with backoff.
 */
int controller_reconcile(struct controller *c, const char *key);

#endif
