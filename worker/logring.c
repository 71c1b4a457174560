/*
 * Ring buffer of log entries.  Entry seq s lives in slot (s - 1) % capacity;
 * the ring contains seqs [first, next_seq) with first = max(1, next_seq -
 * capacity), so no separate head or count needs to be kept in step.
 */
#include "worker/logring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

int logring_init(struct logring *ring, size_t capacity)
{
    memset(ring, 0, sizeof(*ring));
    if (capacity == 0)
        return -EINVAL;
    ring->entries = calloc(capacity, sizeof(*ring->entries));
    if (!ring->entries)
        return -ENOMEM;
    ring->capacity = capacity;
    ring->next_seq = 1;
    pthread_mutex_init(&ring->lock, NULL);
    return 0;
}

void logring_release(struct logring *ring)
{
    if (!ring->entries)
        return;
    free(ring->entries);
    ring->entries = NULL;
    pthread_mutex_destroy(&ring->lock);
}

static uint64_t first_seq(const struct logring *ring)
{
    return ring->next_seq > ring->capacity ? ring->next_seq - ring->capacity
                                           : 1;
}

void logring_add(struct logring *ring, const char *operation, double memory_mb,
                 const char *message)
{
    struct timeval now;
    struct logring_entry *entry;

    gettimeofday(&now, NULL);
    pthread_mutex_lock(&ring->lock);
    entry = &ring->entries[(ring->next_seq - 1) % ring->capacity];
    entry->seq = ring->next_seq++;
    entry->time_us = (int64_t)now.tv_sec * 1000000 + now.tv_usec;
    snprintf(entry->operation, sizeof(entry->operation), "%s", operation);
    entry->memory_mb = memory_mb;
    snprintf(entry->message, sizeof(entry->message), "%s", message);
    pthread_mutex_unlock(&ring->lock);
}

uint64_t logring_dropped(struct logring *ring)
{
    uint64_t dropped;

    pthread_mutex_lock(&ring->lock);
    dropped = first_seq(ring) - 1;
    pthread_mutex_unlock(&ring->lock);
    return dropped;
}

size_t logring_read(struct logring *ring, uint64_t after, size_t max,
                    struct logring_entry *out, size_t *total)
{
    size_t copied = 0;
    uint64_t seq;

    pthread_mutex_lock(&ring->lock);
    seq = first_seq(ring);
    *total = (size_t)(ring->next_seq - seq);
    if (after >= seq)
        seq = after + 1;
    for (; seq < ring->next_seq && copied < max; seq++)
        out[copied++] = ring->entries[(seq - 1) % ring->capacity];
    pthread_mutex_unlock(&ring->lock);
    return copied;
}

int logring_last(struct logring *ring, struct logring_entry *out)
{
    int ret = -ENOENT;

    pthread_mutex_lock(&ring->lock);
    if (ring->next_seq > 1) {
        *out = ring->entries[(ring->next_seq - 2) % ring->capacity];
        ret = 0;
    }
    pthread_mutex_unlock(&ring->lock);
    return ret;
}
