/*
 * Chained hash table with FNV-1a hashing, doubled when the load passes one
 * entry per bucket.
 */
#include "kube/store.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_BUCKETS 64

static uint64_t hash_key(const char *key)
{
    uint64_t hash = 0xcbf29ce484222325ULL;

    for (; *key; key++) {
        hash ^= (unsigned char)*key;
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

int store_init(struct store *store)
{
    memset(store, 0, sizeof(*store));
    store->buckets = calloc(INITIAL_BUCKETS, sizeof(*store->buckets));
    if (!store->buckets)
        return -ENOMEM;
    store->bucket_count = INITIAL_BUCKETS;
    pthread_rwlock_init(&store->lock, NULL);
    return 0;
}

void store_release(struct store *store)
{
    if (!store || !store->buckets)
        return;
    for (size_t i = 0; i < store->bucket_count; i++) {
        struct store_entry *entry = store->buckets[i];

        while (entry) {
            struct store_entry *next = entry->next;

            json_object_put(entry->obj);
            free(entry->key);
            free(entry);
            entry = next;
        }
    }
    free(store->buckets);
    pthread_rwlock_destroy(&store->lock);
    memset(store, 0, sizeof(*store));
}

static const char *metadata_string(struct json_object *obj, const char *key)
{
    struct json_object *meta, *value;

    if (!json_object_object_get_ex(obj, "metadata", &meta) ||
        !json_object_object_get_ex(meta, key, &value) ||
        !json_object_is_type(value, json_type_string))
        return NULL;
    return json_object_get_string(value);
}

int store_key(struct json_object *obj, char *buf, size_t size)
{
    const char *name = metadata_string(obj, "name");
    const char *namespace = metadata_string(obj, "namespace");
    int n;

    if (!name || !name[0])
        return -EINVAL;
    if (namespace && namespace[0])
        n = snprintf(buf, size, "%s/%s", namespace, name);
    else
        n = snprintf(buf, size, "%s", name);
    return n < 0 || (size_t)n >= size ? -EINVAL : 0;
}

static struct store_entry **find_slot(const struct store *store,
                                      const char *key)
{
    struct store_entry **slot =
        &store->buckets[hash_key(key) & (store->bucket_count - 1)];

    while (*slot && strcmp((*slot)->key, key) != 0)
        slot = &(*slot)->next;
    return slot;
}

struct json_object *store_get(struct store *store, const char *key)
{
    struct json_object *obj = NULL;
    struct store_entry *entry;

    pthread_rwlock_rdlock(&store->lock);
    entry = *find_slot(store, key);
    /*
     * A copy, not a new reference: json-c's reference counts are not atomic,
     * so a reference shared with the watch thread would race on them.
     */
    if (entry && json_object_deep_copy(entry->obj, &obj, NULL) != 0)
        obj = NULL;
    pthread_rwlock_unlock(&store->lock);
    return obj;
}

/* Doubles the table; on allocation failure it stays as it is. */
static void grow(struct store *store)
{
    size_t count = store->bucket_count * 2;
    struct store_entry **buckets = calloc(count, sizeof(*buckets));

    if (!buckets)
        return;
    for (size_t i = 0; i < store->bucket_count; i++) {
        struct store_entry *entry = store->buckets[i];

        while (entry) {
            struct store_entry *next = entry->next;
            size_t index = hash_key(entry->key) & (count - 1);

            entry->next = buckets[index];
            buckets[index] = entry;
            entry = next;
        }
    }
    free(store->buckets);
    store->buckets = buckets;
    store->bucket_count = count;
}

static int put_locked(struct store *store, const char *key,
                      struct json_object *obj)
{
    struct store_entry **slot = find_slot(store, key), *entry = *slot;

    if (entry) {
        json_object_put(entry->obj);
        entry->obj = json_object_get(obj);
        return 0;
    }
    entry = calloc(1, sizeof(*entry));
    if (!entry)
        return -ENOMEM;
    entry->key = strdup(key);
    if (!entry->key) {
        free(entry);
        return -ENOMEM;
    }
    entry->obj = json_object_get(obj);
    *slot = entry;
    store->count++;
    if (store->count > store->bucket_count)
        grow(store);
    return 0;
}

/* managedFields is most of an object's size and no reader of the cache
 * needs it. */
static void strip_managed_fields(struct json_object *obj)
{
    struct json_object *metadata;

    if (json_object_object_get_ex(obj, "metadata", &metadata))
        json_object_object_del(metadata, "managedFields");
}

int store_put(struct store *store, struct json_object *obj)
{
    char key[STORE_KEY_SIZE];
    int rc;

    rc = store_key(obj, key, sizeof(key));
    if (rc < 0)
        return rc;
    strip_managed_fields(obj);
    pthread_rwlock_wrlock(&store->lock);
    rc = put_locked(store, key, obj);
    pthread_rwlock_unlock(&store->lock);
    return rc;
}

struct json_object *store_remove(struct store *store, const char *key)
{
    struct json_object *obj = NULL;
    struct store_entry **slot, *entry;

    pthread_rwlock_wrlock(&store->lock);
    slot = find_slot(store, key);
    entry = *slot;
    if (entry) {
        *slot = entry->next;
        obj = entry->obj;
        free(entry->key);
        free(entry);
        store->count--;
    }
    pthread_rwlock_unlock(&store->lock);
    return obj;
}

size_t store_count(struct store *store)
{
    size_t count;

    pthread_rwlock_rdlock(&store->lock);
    count = store->count;
    pthread_rwlock_unlock(&store->lock);
    return count;
}

int store_foreach(struct store *store,
                  int (*fn)(const char *key, struct json_object *obj,
                            void *user),
                  void *user)
{
    int rc = 0;

    pthread_rwlock_rdlock(&store->lock);
    for (size_t i = 0; i < store->bucket_count && rc == 0; i++)
        for (struct store_entry *e = store->buckets[i]; e && rc == 0;
             e = e->next)
            rc = fn(e->key, e->obj, user);
    pthread_rwlock_unlock(&store->lock);
    return rc;
}

void store_swap(struct store *a, struct store *b)
{
    struct store_entry **buckets;
    size_t bucket_count, count;

    pthread_rwlock_wrlock(&a->lock);
    pthread_rwlock_wrlock(&b->lock);
    buckets = a->buckets;
    bucket_count = a->bucket_count;
    count = a->count;
    a->buckets = b->buckets;
    a->bucket_count = b->bucket_count;
    a->count = b->count;
    b->buckets = buckets;
    b->bucket_count = bucket_count;
    b->count = count;
    pthread_rwlock_unlock(&b->lock);
    pthread_rwlock_unlock(&a->lock);
}
