/*
 * The stress engine: one background thread that runs a test in two phases.
 *
 *   building   grow the tree until the process's resident size reaches the
 *              target, as fast as the machine allows or at a set rate
 *   searching  hold that memory and run random searches for the duration,
 *              at a duty cycle of cpu_percent of one core
 *
 * Start, stop and clear may race from any number of HTTP threads.  A control
 * mutex serialises them, and a separate state mutex guards what status
 * readers see, so a status request never waits for a stop to finish.
 */
#ifndef WORKER_ENGINE_H
#define WORKER_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "worker/config.h"
#include "worker/logring.h"
#include "worker/memlimit.h"
#include "worker/tree.h"

enum engine_state {
    ENGINE_IDLE,
    ENGINE_BUILDING,
    ENGINE_SEARCHING,
    ENGINE_COMPLETED,
    ENGINE_STOPPED,
    ENGINE_FAILED,
};

#define ENGINE_STATE_COUNT 6

enum engine_outcome {
    ENGINE_OUTCOME_COMPLETED,
    ENGINE_OUTCOME_STOPPED,
    ENGINE_OUTCOME_FAILED,
};

#define ENGINE_OUTCOME_COUNT 3

struct engine_options {
    const char *cgroup_root;
    const char *proc_cgroup;
    const char *meminfo;
    size_t log_capacity;
    bool huge_pages;
};

/* A consistent copy of what the engine is doing, for /status and metrics. */
struct engine_status {
    enum engine_state state;
    bool has_config;
    struct stress_config config;
    uint64_t target_bytes;
    uint64_t rss_bytes;
    struct memlimit limit;
    uint64_t nodes;
    uint64_t searches;
    uint64_t search_hits;
    double elapsed_seconds;
    uint64_t outcomes[ENGINE_OUTCOME_COUNT];
    char error[256];
};

struct engine {
    /* Serialises start, stop and clear; held while joining the thread. */
    pthread_mutex_t control;
    /* Guards the fields below and pairs with wake. */
    pthread_mutex_t lock;
    /* Signalled on stop, so timed waits in the thread end at once. */
    pthread_cond_t wake;
    pthread_t thread;
    bool thread_joinable;

    struct engine_options options;
    struct logring logs;
    struct tree tree;

    enum engine_state state;
    bool has_config;
    struct stress_config config;
    uint64_t target_bytes;
    struct memlimit limit;
    struct timespec started;
    double final_elapsed;
    uint64_t outcomes[ENGINE_OUTCOME_COUNT];
    char error[256];

    atomic_bool stop_requested;
    atomic_uint_fast64_t nodes;
    atomic_uint_fast64_t searches;
    atomic_uint_fast64_t search_hits;
};

/* Returns the lowercase name of a state, as /status reports it. */
const char *engine_state_name(enum engine_state state);

/* Returns the lowercase name of an outcome, as /metrics reports it. */
const char *engine_outcome_name(enum engine_outcome outcome);

/* Prepares an idle engine; returns 0 or a negative errno. */
int engine_init(struct engine *engine, const struct engine_options *options);

/* Stops any test, frees the tree and the log. */
void engine_release(struct engine *engine);

/*
 * Starts a test.  Frees a tree left by an earlier test first.  Returns 0;
 * -EBUSY while a test runs; -EINVAL when the target does not resolve (err
 * gives the reason); or another negative errno when the thread cannot start.
 */
int engine_start(struct engine *engine, const struct stress_config *config,
                 struct config_error *err);

/*
 * Stops a running test and waits for its thread, keeping the tree in
 * memory.  Returns 0, or -ESRCH when no test is running.
 */
int engine_stop(struct engine *engine);

/*
 * Frees the tree and returns its memory to the kernel.  Returns 0, or
 * -EBUSY while a test runs.  *freed_bytes is set to the payload freed.
 */
int engine_clear(struct engine *engine, uint64_t *freed_bytes);

/* Fills status with a consistent snapshot. */
void engine_status(struct engine *engine, struct engine_status *status);

/* Returns true while a test is building or searching. */
bool engine_is_running(enum engine_state state);

#endif
