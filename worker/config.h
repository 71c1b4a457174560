/*
 * A stress test's configuration: parsed from the JSON body of POST /start,
 * checked field by field, and resolved against the visible memory limit.
 *
 * Every check names the field it rejects, so a client learns exactly which
 * part of its request to fix.  Unknown fields are rejected rather than
 * ignored, because a misspelt "memory_mb" would otherwise start a test with
 * a default the caller never asked for.
 */
#ifndef WORKER_CONFIG_H
#define WORKER_CONFIG_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/memlimit.h"

#define CONFIG_MEMORY_MB_MIN 10
/* A sanity ceiling for allow_oom targets (1 TiB), far above any node. */
#define CONFIG_MEMORY_MB_MAX                ((int64_t)1024 * 1024)
#define CONFIG_DEFAULT_DURATION_SECONDS     60
#define CONFIG_DEFAULT_LOG_INTERVAL_SECONDS 5
#define CONFIG_DEFAULT_PAYLOAD_KB           100
/* A small share of one core: a memory test must not also be a CPU test. */
#define CONFIG_DEFAULT_CPU_PERCENT 5

struct stress_config {
    bool has_memory_mb;
    int64_t memory_mb;
    bool has_memory_percent;
    double memory_percent;
    int64_t duration_seconds;
    int64_t log_interval_sec;
    int64_t payload_kb;
    /* Build rate in MiB/s; 0 builds as fast as the machine allows. */
    double ramp_mb_per_sec;
    int64_t cpu_percent;
    bool touch_payload;
    bool allow_oom;
};

/* An error for the client: the field at fault (may be "") and why. */
struct config_error {
    char field[64];
    char message[256];
};

/* Fills config with the defaults and no target. */
void config_defaults(struct stress_config *config);

/*
 * Parses and checks a JSON request body of len bytes.  Returns 0, or
 * -EINVAL with err filled in.
 */
int config_parse(const char *body, size_t len, struct stress_config *config,
                 struct config_error *err);

/*
 * Resolves the target in bytes against the limit.  A target above the limit
 * is rejected unless allow_oom is set.  Returns 0, or -EINVAL with err set.
 */
int config_resolve_target(const struct stress_config *config,
                          const struct memlimit *limit, uint64_t *target,
                          struct config_error *err);

/* Returns a new JSON object describing config; the caller puts it. */
struct json_object *config_to_json(const struct stress_config *config);

#endif
