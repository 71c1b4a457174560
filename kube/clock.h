/*
 * Time for both binaries: a monotonic clock for deadlines and durations, and
 * the current UTC time in the RFC 3339 forms the Kubernetes API uses (Time,
 * and MicroTime with microseconds, as in Lease renewTime).
 */
#ifndef KUBE_CLOCK_H
#define KUBE_CLOCK_H

#include <stdbool.h>
#include <stddef.h>

/* Returns CLOCK_MONOTONIC in seconds. */
double clock_monotonic(void);

/*
 * Writes the current UTC time as "2026-12-04T12:00:00Z", or with micro as
 * "2026-12-04T12:00:00.000000Z".  size should be at least 32.
 */
void clock_format_utc(char *buf, size_t size, bool micro);

#endif
