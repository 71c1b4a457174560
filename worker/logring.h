/*
 * The test log: a fixed-size ring of the most recent entries.
 *
 * A long test at a short log interval would otherwise grow without bound.
 * Each entry gets a sequence number, so a reader can page forward with
 * "entries after N" and learn from the dropped count that older ones were
 * overwritten.  All calls are thread-safe.
 */
#ifndef WORKER_LOGRING_H
#define WORKER_LOGRING_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define LOGRING_OPERATION_MAX 32
#define LOGRING_MESSAGE_MAX   256

struct logring_entry {
    uint64_t seq;
    /* Wall-clock time of the entry, in microseconds since the epoch. */
    int64_t time_us;
    char operation[LOGRING_OPERATION_MAX];
    double memory_mb;
    char message[LOGRING_MESSAGE_MAX];
};

struct logring {
    pthread_mutex_t lock;
    struct logring_entry *entries;
    size_t capacity;
    /* Sequence number of the next entry; entries start at 1. */
    uint64_t next_seq;
};

/* Allocates room for capacity entries; returns 0 or -ENOMEM. */
int logring_init(struct logring *ring, size_t capacity);

/* Frees the entries.  Safe on a zeroed ring. */
void logring_release(struct logring *ring);

/* Appends an entry, overwriting the oldest when full.  Long text is cut. */
void logring_add(struct logring *ring, const char *operation, double memory_mb,
                 const char *message);

/* Returns how many entries were overwritten since the ring was created. */
uint64_t logring_dropped(struct logring *ring);

/*
 * Copies up to max entries with seq > after, oldest first, into out.
 * Returns the number copied.  *total is set to the entries held in the ring.
 */
size_t logring_read(struct logring *ring, uint64_t after, size_t max,
                    struct logring_entry *out, size_t *total);

/* Copies the newest entry into out; returns 0, or -ENOENT when empty. */
int logring_last(struct logring *ring, struct logring_entry *out);

#endif
