/*
 * Client-side token bucket: at most burst requests at once, refilled at qps
 * per second, the same limit client-go puts in front of an API server.
 *
 * ratelimit_wait() reserves a token first and then sleeps off any debt
 * outside the lock, so waiting callers are served in arrival order and a
 * sleeping thread does not block the others from reserving.
 */
#ifndef KUBE_RATELIMIT_H
#define KUBE_RATELIMIT_H

#include <pthread.h>

struct ratelimit {
    pthread_mutex_t lock;
    double qps;    /* tokens per second; <= 0 disables the limit */
    double burst;  /* bucket size, at least 1 */
    double tokens; /* may go negative: the debt of reserved requests */
    double last;   /* CLOCK_MONOTONIC seconds of the last refill */
};

/* Starts with a full bucket.  qps <= 0 disables limiting. */
void ratelimit_init(struct ratelimit *rl, double qps, int burst);

void ratelimit_release(struct ratelimit *rl);

/* Returns the seconds the caller must wait for its reserved token. */
double ratelimit_reserve(struct ratelimit *rl);

/* Reserves a token and sleeps until it is due. */
void ratelimit_wait(struct ratelimit *rl);

#endif
