/* Clock readings and RFC 3339 formatting; see clock.h. */
#include "kube/clock.h"

#include <stdio.h>
#include <sys/time.h>
#include <time.h>

double clock_monotonic(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void clock_format_utc(char *buf, size_t size, bool micro)
{
    struct timeval tv;
    struct tm tm;
    char base[32];

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    if (micro)
        snprintf(buf, size, "%s.%06ldZ", base, (long)tv.tv_usec);
    else
        snprintf(buf, size, "%sZ", base);
}
