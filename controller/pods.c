/*
 * Pod construction.  Fixed parts come from JSON text parsed once per call;
 * anything taken from the user's resource (names, image, selectors) is set
 * through json-c, never pasted into text, so no value can change the
 * document's structure.
 */
#include "controller/pods.h"

#include <stdio.h>
#include <string.h>

#include "kube/quantity.h"

static const char worker_container[] =
    "{\"name\":\"worker\","
    "\"ports\":[{\"name\":\"http\",\"containerPort\":8080}],"
    "\"env\":["
    "{\"name\":\"POD_NAME\",\"valueFrom\":{\"fieldRef\":"
    "{\"fieldPath\":\"metadata.name\"}}},"
    "{\"name\":\"POD_NAMESPACE\",\"valueFrom\":{\"fieldRef\":"
    "{\"fieldPath\":\"metadata.namespace\"}}},"
    "{\"name\":\"NODE_NAME\",\"valueFrom\":{\"fieldRef\":"
    "{\"fieldPath\":\"spec.nodeName\"}}},"
    "{\"name\":\"POD_IP\",\"valueFrom\":{\"fieldRef\":"
    "{\"fieldPath\":\"status.podIP\"}}},"
    "{\"name\":\"MEMORY_LIMIT\",\"valueFrom\":{\"resourceFieldRef\":"
    "{\"resource\":\"limits.memory\"}}}],"
    "\"readinessProbe\":{\"httpGet\":{\"path\":\"/readyz\",\"port\":8080},"
    "\"periodSeconds\":2,\"failureThreshold\":3},"
    "\"livenessProbe\":{\"httpGet\":{\"path\":\"/healthz\",\"port\":8080},"
    "\"periodSeconds\":10,\"failureThreshold\":3},"
    "\"securityContext\":{\"allowPrivilegeEscalation\":false,"
    "\"readOnlyRootFilesystem\":true,"
    "\"capabilities\":{\"drop\":[\"ALL\"]}}}";

static const char pod_security[] =
    "{\"runAsNonRoot\":true,\"runAsUser\":65532,\"runAsGroup\":65532,"
    "\"seccompProfile\":{\"type\":\"RuntimeDefault\"}}";

void pods_worker_name(const char *test, int index, char *buf, size_t size)
{
    snprintf(buf, size, "%s-worker-%d", test, index);
}

static const char *get_string(struct json_object *obj, const char *a,
                              const char *b)
{
    struct json_object *v;

    if (!json_object_object_get_ex(obj, a, &v))
        return NULL;
    if (b && !json_object_object_get_ex(v, b, &v))
        return NULL;
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                    : NULL;
}

static void add_str(struct json_object *obj, const char *key, const char *v)
{
    json_object_object_add(obj, key, json_object_new_string(v));
}

/* Copies template field key into spec when present. */
static void copy_field(struct json_object *template, struct json_object *spec,
                       const char *key)
{
    struct json_object *value, *copy = NULL;

    if (template && json_object_object_get_ex(template, key, &value) &&
        json_object_deep_copy(value, &copy, NULL) == 0)
        json_object_object_add(spec, key, copy);
}

static struct json_object *metadata_for(struct json_object *mst,
                                        const char *name, int index)
{
    struct json_object *metadata = json_object_new_object();
    struct json_object *labels = json_object_new_object();
    struct json_object *owner = json_object_new_object();
    struct json_object *owners = json_object_new_array();
    char index_text[16];

    snprintf(index_text, sizeof(index_text), "%d", index);
    add_str(labels, "app.kubernetes.io/name", "memstress-worker");
    add_str(labels, PODS_LABEL_MANAGED_BY, PODS_MANAGER);
    add_str(labels, PODS_LABEL_TEST, get_string(mst, "metadata", "name"));
    add_str(labels, PODS_LABEL_INDEX, index_text);

    add_str(owner, "apiVersion", "memstress.dev/v1alpha1");
    add_str(owner, "kind", "MemoryStressTest");
    add_str(owner, "name", get_string(mst, "metadata", "name"));
    add_str(owner, "uid", get_string(mst, "metadata", "uid"));
    json_object_object_add(owner, "controller", json_object_new_boolean(1));
    json_object_object_add(owner, "blockOwnerDeletion",
                           json_object_new_boolean(1));
    json_object_array_add(owners, owner);

    add_str(metadata, "name", name);
    add_str(metadata, "namespace", get_string(mst, "metadata", "namespace"));
    json_object_object_add(metadata, "labels", labels);
    json_object_object_add(metadata, "ownerReferences", owners);
    return metadata;
}

/*
 * Returns the container resources: the template's, or with an absolute
 * target and no template resources, requests equal to limits at the target
 * plus the worker's overhead, which gives the pod Guaranteed QoS.
 */
static struct json_object *resources_for(struct json_object *spec,
                                         struct json_object *template)
{
    struct json_object *value, *copy = NULL, *resources, *amounts;
    int64_t target, cpu_percent = 5;
    char memory[32], cpu[32];

    if (template && json_object_object_get_ex(template, "resources", &value) &&
        json_object_deep_copy(value, &copy, NULL) == 0)
        return copy;
    if (!json_object_object_get_ex(spec, "memory", &value) ||
        quantity_from_json(value, &target) < 0)
        return json_object_new_object();

    if (json_object_object_get_ex(spec, "cpuPercent", &value))
        cpu_percent = json_object_get_int64(value);
    /* A quarter core at least, so that the build is not throttled to a
     * crawl by a CPU limit meant for the search phase. */
    if (cpu_percent * 10 < 250)
        cpu_percent = 25;
    quantity_format(target + PODS_WORKER_OVERHEAD_BYTES, memory,
                    sizeof(memory));
    snprintf(cpu, sizeof(cpu), "%lldm", (long long)cpu_percent * 10);

    resources = json_object_new_object();
    for (int i = 0; i < 2; i++) {
        amounts = json_object_new_object();
        add_str(amounts, "memory", memory);
        add_str(amounts, "cpu", cpu);
        json_object_object_add(resources, i ? "requests" : "limits", amounts);
    }
    return resources;
}

static struct json_object *args_for(const char *test)
{
    struct json_object *args = json_object_new_array();
    char target[300];

    snprintf(target, sizeof(target), "$(POD_NAMESPACE)/%s", test);
    json_object_array_add(args, json_object_new_string("--listen"));
    json_object_array_add(args, json_object_new_string("$(POD_IP):8080"));
    json_object_array_add(args, json_object_new_string("--test"));
    json_object_array_add(args, json_object_new_string(target));
    return args;
}

struct json_object *pods_worker_pod(struct json_object *mst, int index,
                                    const struct pods_settings *settings)
{
    const char *test = get_string(mst, "metadata", "name");
    const char *image;
    struct json_object *spec, *template = NULL, *pod, *pod_spec, *container;
    struct json_object *containers, *command;
    char name[300];

    if (!test || !get_string(mst, "metadata", "namespace") ||
        !get_string(mst, "metadata", "uid") ||
        !json_object_object_get_ex(mst, "spec", &spec))
        return NULL;
    json_object_object_get_ex(spec, "template", &template);
    image = get_string(spec, "template", "image");
    pods_worker_name(test, index, name, sizeof(name));

    container = json_tokener_parse(worker_container);
    command = json_object_new_array();
    json_object_array_add(command, json_object_new_string(settings->command));
    add_str(container, "image", image ? image : settings->image);
    json_object_object_add(container, "command", command);
    json_object_object_add(container, "args", args_for(test));
    json_object_object_add(container, "resources",
                           resources_for(spec, template));
    containers = json_object_new_array();
    json_object_array_add(containers, container);

    pod_spec = json_object_new_object();
    add_str(pod_spec, "restartPolicy", "Never");
    add_str(pod_spec, "serviceAccountName", PODS_WORKER_ACCOUNT);
    json_object_object_add(pod_spec, "terminationGracePeriodSeconds",
                           json_object_new_int(10));
    json_object_object_add(pod_spec, "securityContext",
                           json_tokener_parse(pod_security));
    json_object_object_add(pod_spec, "containers", containers);
    copy_field(template, pod_spec, "nodeSelector");
    copy_field(template, pod_spec, "tolerations");
    copy_field(template, pod_spec, "affinity");
    copy_field(template, pod_spec, "priorityClassName");

    pod = json_object_new_object();
    add_str(pod, "apiVersion", "v1");
    add_str(pod, "kind", "Pod");
    json_object_object_add(pod, "metadata", metadata_for(mst, name, index));
    json_object_object_add(pod, "spec", pod_spec);
    return pod;
}

static struct json_object *named(const char *api_version, const char *kind,
                                 const char *namespace)
{
    struct json_object *obj = json_object_new_object();
    struct json_object *metadata = json_object_new_object();
    struct json_object *labels = json_object_new_object();

    add_str(labels, PODS_LABEL_MANAGED_BY, PODS_MANAGER);
    add_str(metadata, "name", PODS_WORKER_ACCOUNT);
    add_str(metadata, "namespace", namespace);
    json_object_object_add(metadata, "labels", labels);
    add_str(obj, "apiVersion", api_version);
    add_str(obj, "kind", kind);
    json_object_object_add(obj, "metadata", metadata);
    return obj;
}

void pods_worker_rbac(const char *namespace, struct json_object *objects[2])
{
    struct json_object *subject = json_object_new_object();
    struct json_object *subjects = json_object_new_array();
    struct json_object *role_ref = json_object_new_object();

    objects[0] = named("v1", "ServiceAccount", namespace);
    objects[1] =
        named("rbac.authorization.k8s.io/v1", "RoleBinding", namespace);
    add_str(subject, "kind", "ServiceAccount");
    add_str(subject, "name", PODS_WORKER_ACCOUNT);
    add_str(subject, "namespace", namespace);
    json_object_array_add(subjects, subject);
    add_str(role_ref, "apiGroup", "rbac.authorization.k8s.io");
    add_str(role_ref, "kind", "ClusterRole");
    add_str(role_ref, "name", PODS_WORKER_ROLE);
    json_object_object_add(objects[1], "subjects", subjects);
    json_object_object_add(objects[1], "roleRef", role_ref);
}
