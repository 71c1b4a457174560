/*
 * Token bucket with reservation.  The bucket refills lazily from the
 * monotonic clock on each call, so it needs no timer thread.
 */
#include "kube/ratelimit.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ratelimit_init(struct ratelimit *rl, double qps, int burst)
{
    memset(rl, 0, sizeof(*rl));
    pthread_mutex_init(&rl->lock, NULL);
    rl->qps = qps;
    rl->burst = burst < 1 ? 1 : burst;
    rl->tokens = rl->burst;
    rl->last = now_seconds();
}

void ratelimit_release(struct ratelimit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->lock);
}

double ratelimit_reserve(struct ratelimit *rl)
{
    double now, wait = 0;

    if (rl->qps <= 0)
        return 0;
    pthread_mutex_lock(&rl->lock);
    now = now_seconds();
    rl->tokens += (now - rl->last) * rl->qps;
    if (rl->tokens > rl->burst)
        rl->tokens = rl->burst;
    rl->last = now;
    rl->tokens -= 1;
    if (rl->tokens < 0)
        wait = -rl->tokens / rl->qps;
    pthread_mutex_unlock(&rl->lock);
    return wait;
}

void ratelimit_wait(struct ratelimit *rl)
{
    double wait = ratelimit_reserve(rl);
    struct timespec ts;

    if (wait <= 0)
        return;
    ts.tv_sec = (time_t)wait;
    ts.tv_nsec = (long)((wait - floor(wait)) * 1e9);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}
