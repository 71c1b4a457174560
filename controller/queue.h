/*
 * The controller's work queue of "namespace/name" keys, in the shape of
 * client-go's rate-limited work queue.
 *
 * A key is queued at most once however often it is added, and is never
 * handed to two workers at once: a key added while a worker processes it
 * is queued again when that worker calls queue_done().  Failed keys come
 * back after a per-key exponential backoff (5 ms doubling up to 1000 s),
 * and every rate-limited add also passes an overall token bucket, so a
 * storm of failures cannot flood the API server.
 */
#ifndef CONTROLLER_QUEUE_H
#define CONTROLLER_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define QUEUE_KEY_SIZE 512

struct queue_item;

struct queue {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct queue_item *items; /* every key in the queue, in one list */
    bool shutting_down;
    double base_delay; /* first backoff, seconds */
    double max_delay;  /* maximum backoff, seconds */
    double qps;        /* overall rate of rate-limited adds */
    double burst;
    double tokens;
    double tokens_at; /* monotonic time of the token count */
};

/* Prepares an empty queue; returns 0 or a negative errno. */
int queue_init(struct queue *q, double qps, int burst);

/* Frees every key; no thread may be blocked in queue_get(). */
void queue_release(struct queue *q);

/* Queues key now. */
void queue_add(struct queue *q, const char *key);

/* Queues key after delay seconds, or sooner if it is added again. */
void queue_add_after(struct queue *q, const char *key, double delay);

/*
 * Queues key after its backoff, which doubles with every call until
 * queue_forget(), and no sooner than the overall rate limit allows.
 * Returns the delay chosen, in seconds.
 */
double queue_add_rate_limited(struct queue *q, const char *key);

/* Resets the backoff of key after a success. */
void queue_forget(struct queue *q, const char *key);

/* Returns the failures counted for key since its last queue_forget(). */
int queue_failures(struct queue *q, const char *key);

/*
 * Waits for a ready key and copies it into key (QUEUE_KEY_SIZE bytes).
 * Returns 0, or -ESHUTDOWN once queue_shutdown() was called.  The caller
 * must call queue_done() with the key when it has processed it.
 */
int queue_get(struct queue *q, char *key);

/* Marks key as processed; queues it again if it was added meanwhile. */
void queue_done(struct queue *q, const char *key);

/* Wakes every waiting queue_get(), which then returns -ESHUTDOWN. */
void queue_shutdown(struct queue *q);

/* Returns the number of keys ready or waiting for their time. */
size_t queue_len(struct queue *q);

#endif
