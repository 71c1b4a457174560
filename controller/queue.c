/*
 * One list contains every key of the queue.  Each item records whether the
 * key is ready, waiting until a time, being processed, or only remembered for
 * its failure count.  A linear scan is fine for the few thousand keys a
 * controller holds, and it keeps every state change in one place.
 */
#include "controller/queue.h"

#include "kube/clock.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct queue_item {
    struct queue_item *next;
    char key[QUEUE_KEY_SIZE];
    bool queued;     /* ready, or waiting for due */
    double due;      /* monotonic time it becomes ready; 0 for now */
    bool processing; /* handed out and not yet done */
    bool dirty;      /* added again while processing */
    double added_at; /* when it became ready, for fairness */
    int failures;
};

int queue_init(struct queue *q, double qps, int burst)
{
    pthread_condattr_t attr;

    memset(q, 0, sizeof(*q));
    pthread_mutex_init(&q->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&q->changed, &attr);
    pthread_condattr_destroy(&attr);
    q->base_delay = 0.005;
    q->max_delay = 1000;
    q->qps = qps;
    q->burst = burst;
    q->tokens = burst;
    q->tokens_at = clock_monotonic();
    return 0;
}

void queue_release(struct queue *q)
{
    struct queue_item *item = q->items;

    while (item) {
        struct queue_item *next = item->next;

        free(item);
        item = next;
    }
    q->items = NULL;
    pthread_cond_destroy(&q->changed);
    pthread_mutex_destroy(&q->lock);
}

/* Finds or creates the item for key.  Caller holds the lock. */
static struct queue_item *lookup(struct queue *q, const char *key, bool create)
{
    struct queue_item *item;

    for (item = q->items; item; item = item->next)
        if (strcmp(item->key, key) == 0)
            return item;
    if (!create || strlen(key) >= QUEUE_KEY_SIZE)
        return NULL;
    item = calloc(1, sizeof(*item));
    if (!item)
        return NULL;
    strcpy(item->key, key);
    item->next = q->items;
    q->items = item;
    return item;
}

/* Queues or re-times item to become ready at due.  Caller holds the lock. */
static void schedule(struct queue *q, struct queue_item *item, double due)
{
    if (item->processing) {
        /* Run again after the current pass, at the earliest time asked. */
        if (!item->dirty || due < item->due)
            item->due = due;
        item->dirty = true;
        return;
    }
    if (item->queued) {
        if (due < item->due)
            item->due = due;
    } else {
        item->queued = true;
        item->due = due;
        item->added_at = clock_monotonic();
    }
    pthread_cond_broadcast(&q->changed);
}

void queue_add(struct queue *q, const char *key)
{
    queue_add_after(q, key, 0);
}

void queue_add_after(struct queue *q, const char *key, double delay)
{
    struct queue_item *item;

    pthread_mutex_lock(&q->lock);
    item = q->shutting_down ? NULL : lookup(q, key, true);
    if (item)
        schedule(q, item, delay > 0 ? clock_monotonic() + delay : 0);
    pthread_mutex_unlock(&q->lock);
}

/* Takes one token from the bucket; returns the wait for it in seconds. */
static double take_token(struct queue *q)
{
    double now = clock_monotonic(), wait;

    if (q->qps <= 0)
        return 0;
    q->tokens += (now - q->tokens_at) * q->qps;
    if (q->tokens > q->burst)
        q->tokens = q->burst;
    q->tokens_at = now;
    q->tokens -= 1;
    wait = q->tokens >= 0 ? 0 : -q->tokens / q->qps;
    return wait;
}

double queue_add_rate_limited(struct queue *q, const char *key)
{
    struct queue_item *item;
    double backoff = 0, limit;

    pthread_mutex_lock(&q->lock);
    item = q->shutting_down ? NULL : lookup(q, key, true);
    if (item) {
        backoff = q->base_delay * pow(2, item->failures);
        if (backoff > q->max_delay)
            backoff = q->max_delay;
        item->failures++;
        limit = take_token(q);
        if (limit > backoff)
            backoff = limit;
        schedule(q, item, clock_monotonic() + backoff);
    }
    pthread_mutex_unlock(&q->lock);
    return backoff;
}

void queue_forget(struct queue *q, const char *key)
{
    struct queue_item *item;

    pthread_mutex_lock(&q->lock);
    item = lookup(q, key, false);
    if (item)
        item->failures = 0;
    pthread_mutex_unlock(&q->lock);
}

int queue_failures(struct queue *q, const char *key)
{
    struct queue_item *item;
    int failures = 0;

    pthread_mutex_lock(&q->lock);
    item = lookup(q, key, false);
    if (item)
        failures = item->failures;
    pthread_mutex_unlock(&q->lock);
    return failures;
}

/*
 * Picks the ready item queued longest ago, or sets *next_due to the
 * earliest time a waiting item becomes ready (0 when none waits).
 */
static struct queue_item *pick(struct queue *q, double now, double *next_due)
{
    struct queue_item *best = NULL;

    *next_due = 0;
    for (struct queue_item *item = q->items; item; item = item->next) {
        if (!item->queued)
            continue;
        if (item->due > now) {
            if (*next_due == 0 || item->due < *next_due)
                *next_due = item->due;
            continue;
        }
        if (!best || item->added_at < best->added_at)
            best = item;
    }
    return best;
}

static void wait_until(struct queue *q, double due)
{
    struct timespec ts;

    if (due == 0) {
        pthread_cond_wait(&q->changed, &q->lock);
        return;
    }
    ts.tv_sec = (time_t)due;
    ts.tv_nsec = (long)((due - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&q->changed, &q->lock, &ts);
}

int queue_get(struct queue *q, char *key)
{
    struct queue_item *item = NULL;
    double next_due;

    pthread_mutex_lock(&q->lock);
    while (!q->shutting_down) {
        item = pick(q, clock_monotonic(), &next_due);
        if (item)
            break;
        wait_until(q, next_due);
    }
    if (q->shutting_down) {
        pthread_mutex_unlock(&q->lock);
        return -ESHUTDOWN;
    }
    item->queued = false;
    item->processing = true;
    item->dirty = false;
    strcpy(key, item->key);
    pthread_mutex_unlock(&q->lock);
    return 0;
}

void queue_done(struct queue *q, const char *key)
{
    struct queue_item *item;

    pthread_mutex_lock(&q->lock);
    item = lookup(q, key, false);
    if (item) {
        item->processing = false;
        if (item->dirty) {
            item->dirty = false;
            schedule(q, item, item->due);
        }
    }
    pthread_mutex_unlock(&q->lock);
}

void queue_shutdown(struct queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->shutting_down = true;
    pthread_cond_broadcast(&q->changed);
    pthread_mutex_unlock(&q->lock);
}

size_t queue_len(struct queue *q)
{
    size_t count = 0;

    pthread_mutex_lock(&q->lock);
    for (struct queue_item *item = q->items; item; item = item->next)
        count += item->queued;
    pthread_mutex_unlock(&q->lock);
    return count;
}
