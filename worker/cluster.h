/*
 * The worker inside a Kubernetes pod: it runs the test that its
 * MemoryStressTest describes, stops when the test's spec.stop turns true or
 * the test is deleted, and writes its own entry in the test's
 * status.workers by server-side apply.
 *
 * Each worker applies its entry under its own field manager, so the workers
 * of one test never overwrite each other's entries, and the controller's
 * fields (phase, conditions) stay the controller's.  Writes happen on every
 * change of state and otherwise at most once per log interval.  The one
 * exception: an allow_oom build past three quarters of its memory limit also
 * writes each time it grew by another 2% of the limit, so that the memory
 * last reported before the OOM kill is within a few MiB of the real limit.
 */
#ifndef WORKER_CLUSTER_H
#define WORKER_CLUSTER_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "kube/kube.h"
#include "kube/watch.h"
#include "worker/config.h"
#include "worker/engine.h"

struct cluster_options {
    const char *namespace;  /* the MemoryStressTest's namespace */
    const char *test;       /* the MemoryStressTest's name */
    const char *pod;        /* this pod's name: the status entry's key */
    const char *node;       /* node name, or NULL */
    const char *pod_ip;     /* pod IP, or NULL */
    const char *kubeconfig; /* NULL for the default lookup, then in-cluster */
};

struct cluster {
    struct cluster_options options;
    struct engine *engine; /* borrowed */
    struct kube_client *client;
    char *test_path;
    char *status_path;
    char field_manager[300];
    atomic_bool stop;
    pthread_t status_thread;
    pthread_t watch_thread;
    bool threads_started;
    struct watch watch;
};

/*
 * Builds a stress configuration from a MemoryStressTest's spec.  Returns 0,
 * or -EINVAL with err naming the spec field at fault.
 */
int cluster_config_from_spec(struct json_object *spec,
                             struct stress_config *config,
                             struct config_error *err);

/*
 * Builds the server-side apply body for this worker's status entry from a
 * status snapshot and the newest log entry (may be NULL).  The caller puts
 * the returned object.
 */
struct json_object *cluster_status_entry(const struct cluster_options *o,
                                         const struct engine_status *status,
                                         const struct logring_entry *last,
                                         const char *now);

/*
 * Connects to the API server and starts the threads that run the test and
 * report it.  Returns 0, or a negative errno after logging why.
 */
int cluster_start(struct cluster *cluster, struct engine *engine,
                  const struct cluster_options *options);

/* Stops the threads, writes a last status entry and frees the client. */
void cluster_stop(struct cluster *cluster);

#endif
