/*
 * The objects the controller creates for a MemoryStressTest: its worker
 * pods, and in each namespace the service account and role binding that let
 * workers report into their test's status.  The binding refers to a
 * ClusterRole installed with the controller, so the controller needs only
 * the right to bind that one role, not to write roles.
 */
#ifndef CONTROLLER_PODS_H
#define CONTROLLER_PODS_H

#include <json-c/json.h>
#include <stdint.h>

#define PODS_WORKER_ACCOUNT "memstress-worker"
/* The ClusterRole from manifests/10-rbac.yaml that worker pods are bound to. */
#define PODS_WORKER_ROLE      "memstress-worker"
#define PODS_LABEL_TEST       "memstress.dev/test"
#define PODS_LABEL_INDEX      "memstress.dev/worker-index"
#define PODS_LABEL_MANAGED_BY "app.kubernetes.io/managed-by"
#define PODS_MANAGER          "memstress-controller"
/* The memory a worker needs beside its target: code, heap, page tables. */
#define PODS_WORKER_OVERHEAD_BYTES ((int64_t)24 << 20)

struct pods_settings {
    const char *image;   /* worker image when the test names none */
    const char *command; /* worker executable, "memstress-worker" */
};

/* Writes the name of worker index of test into buf. */
void pods_worker_name(const char *test, int index, char *buf, size_t size);

/*
 * Builds worker pod number index for the MemoryStressTest mst.  Returns a
 * new object the caller puts, or NULL when mst lacks a name, namespace or
 * uid.
 */
struct json_object *pods_worker_pod(struct json_object *mst, int index,
                                    const struct pods_settings *settings);

/*
 * Builds the worker service account and the role binding that grants it the
 * ClusterRole PODS_WORKER_ROLE in namespace, in that order, into objects[2].
 * The caller puts each one.
 */
void pods_worker_rbac(const char *namespace, struct json_object *objects[2]);

#endif
