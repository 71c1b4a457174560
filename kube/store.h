/*
 * Local cache of API objects keyed by "namespace/name" ("name" for
 * cluster-scoped objects), filled by kube/watch.c.
 *
 * A hash table of json-c objects behind a read-write lock: the watch thread
 * writes, and any thread may read.  json-c counts references without atomic
 * operations, so no object in the store is ever shared with another thread:
 * store_get() hands out a deep copy, and store_foreach() callbacks run under
 * the lock and must not keep a reference.
 */
#ifndef KUBE_STORE_H
#define KUBE_STORE_H

#include <json-c/json.h>
#include <pthread.h>
#include <stddef.h>

/* Maximum key: a 253-byte namespace or name on each side of the "/". */
#define STORE_KEY_SIZE 512

struct store_entry {
    char *key;
    struct json_object *obj;
    struct store_entry *next;
};

struct store {
    pthread_rwlock_t lock;
    struct store_entry **buckets;
    size_t bucket_count;
    size_t count;
};

/* Returns 0 or -ENOMEM.  Release with store_release(). */
int store_init(struct store *store);

/* Drops every object and frees the table; safe on a zeroed struct. */
void store_release(struct store *store);

/*
 * Writes the key of obj into buf (STORE_KEY_SIZE bytes).  Returns 0, or
 * -EINVAL when obj has no metadata.name or the key does not fit.
 */
int store_key(struct json_object *obj, char *buf, size_t size);

/*
 * Returns a deep copy of the object stored under key, which the caller owns
 * and frees with json_object_put(), or NULL when there is none.
 */
struct json_object *store_get(struct store *store, const char *key);

/*
 * Stores obj under its key, taking a new reference to obj and dropping the
 * object it replaces.  metadata.managedFields is removed from obj first, to
 * save memory.  Returns 0, -EINVAL (no name) or -ENOMEM.
 */
int store_put(struct store *store, struct json_object *obj);

/*
 * Removes the object under key.  Returns it, with the store's reference
 * handed to the caller (drop it with json_object_put()), or NULL.
 */
struct json_object *store_remove(struct store *store, const char *key);

/* Returns the number of objects stored. */
size_t store_count(struct store *store);

/*
 * Calls fn for every object under the read lock, so fn must not call back
 * into the store.  Stops early and returns fn's value when it is non-zero.
 */
int store_foreach(struct store *store,
                  int (*fn)(const char *key, struct json_object *obj,
                            void *user),
                  void *user);

/* Exchanges the contents of two stores, each under its write lock. */
void store_swap(struct store *a, struct store *b);

#endif
