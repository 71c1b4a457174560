/*
 * The engine thread.  The build loop reads the resident size from
 * /proc/self/statm rather than trusting its own byte count, because the
 * kernel backs the tree with 2 MiB huge pages where it can and the process
 * has other memory too.  Far from the target it reads RSS every 16 MiB;
 * close to it, before every node, and there it also switches the arena to
 * 4 KiB pages and cuts the last payload to what is missing, so the build
 * stops within a page or two of the target.
 *
 * Every wait (the ramp rate, the search duty cycle) is a timed wait on a
 * condition variable that a stop signals, so a stop never waits out a sleep.
 */
#include "worker/engine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kube/clock.h"
#include "kube/klog.h"

#define MIB        ((uint64_t)1 << 20)
#define PAGE_BYTES ((uint64_t)4096)
/* Far from the target, RSS is read once per this many bytes grown. */
#define RSS_CHECK_BYTES (16 * MIB)
/* Within this distance of the target, RSS is read before every node: two
 * huge pages that the byte count may not have seen yet. */
#define NEAR_TARGET_BYTES (4 * MIB)
/* Within this distance, growth switches to 4 KiB pages. */
#define SMALL_PAGE_BYTES (8 * MIB)
/* The duty cycle period of the search phase. */
#define SEARCH_PERIOD_SECONDS 0.1
/* Searches between two looks at the clock and the stop flag. */
#define SEARCH_BATCH 64

static const char *const state_names[ENGINE_STATE_COUNT] = {
    "idle", "building", "searching", "completed", "stopped", "failed",
};

static const char *const outcome_names[ENGINE_OUTCOME_COUNT] = {
    "completed",
    "stopped",
    "failed",
};

const char *engine_state_name(enum engine_state state)
{
    return state_names[state];
}

const char *engine_outcome_name(enum engine_outcome outcome)
{
    return outcome_names[outcome];
}

bool engine_is_running(enum engine_state state)
{
    return state == ENGINE_BUILDING || state == ENGINE_SEARCHING;
}

static double seconds_since(const struct timespec *start)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)(ts.tv_sec - start->tv_sec) +
           (double)(ts.tv_nsec - start->tv_nsec) / 1e9;
}

static double rss_mb(void)
{
    return (double)memlimit_rss_bytes() / (double)MIB;
}

/* Adds a test log entry and mirrors it to the process log at verbosity 2. */
static void test_log(struct engine *engine, const char *operation,
                     const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void test_log(struct engine *engine, const char *operation,
                     const char *fmt, ...)
{
    char message[LOGRING_MESSAGE_MAX], memory[32];
    double mb = rss_mb();
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    logring_add(&engine->logs, operation, mb, message);
    snprintf(memory, sizeof(memory), "%.1f", mb);
    KLOG_INFO(2, "Recorded test event", "operation", operation, "memoryMiB",
              memory, "message", message, NULL);
}

/*
 * Waits until the monotonic time deadline or a stop, whichever comes first.
 * Returns true when a stop was requested.
 */
static bool wait_until(struct engine *engine, double deadline)
{
    struct timespec ts;
    bool stop;

    ts.tv_sec = (time_t)deadline;
    ts.tv_nsec = (long)((deadline - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&engine->lock);
    while (!(stop = atomic_load(&engine->stop_requested)) &&
           clock_monotonic() < deadline) {
        if (pthread_cond_timedwait(&engine->wake, &engine->lock, &ts) ==
            ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&engine->lock);
    return stop || atomic_load(&engine->stop_requested);
}

static void set_state(struct engine *engine, enum engine_state state)
{
    pthread_mutex_lock(&engine->lock);
    engine->state = state;
    pthread_mutex_unlock(&engine->lock);
}

/* Picks the next payload size: the configured one, cut near the target. */
static size_t next_payload(uint64_t payload, uint64_t rss, uint64_t target,
                           bool near)
{
    uint64_t missing;

    if (!near || rss >= target)
        return payload;
    missing = (target - rss + PAGE_BYTES - 1) & ~(PAGE_BYTES - 1);
    return missing < payload ? missing : payload;
}

/* Returns 0 once the target is reached, 1 on stop, -ENOMEM on failure. */
static int build(struct engine *engine)
{
    const struct stress_config *c = &engine->config;
    uint64_t target = engine->target_bytes;
    uint64_t payload = (uint64_t)c->payload_kb * 1024;
    double ramp_bytes = c->ramp_mb_per_sec * (double)MIB;
    double start = clock_monotonic(), next_log = start + c->log_interval_sec;
    uint64_t rss = memlimit_rss_bytes(), grown_since_check = 0;
    uint64_t predicted = rss;
    bool small_pages = false;

    test_log(engine, "BUILD_TREE_START",
             "Building tree to %.1f MiB resident with %lld KiB payloads",
             (double)target / MIB, (long long)c->payload_kb);
    for (;;) {
        bool near = predicted + payload + NEAR_TARGET_BYTES >= target;

        if (atomic_load(&engine->stop_requested))
            return 1;
        if (near || grown_since_check >= RSS_CHECK_BYTES) {
            rss = memlimit_rss_bytes();
            predicted = rss;
            grown_since_check = 0;
            if (rss >= target)
                break;
        }
        if (!small_pages && near && target - rss < SMALL_PAGE_BYTES) {
            tree_use_small_pages(&engine->tree);
            small_pages = true;
        }

        size_t len = next_payload(payload, rss, target, near);
        if (ramp_bytes > 0) {
            double due =
                start + (double)(engine->tree.payload_bytes + len) / ramp_bytes;
            if (due > clock_monotonic() && wait_until(engine, due))
                return 1;
        }
        if (tree_grow(&engine->tree, len) != 0) {
            pthread_mutex_lock(&engine->lock);
            snprintf(engine->error, sizeof(engine->error),
                     "failed to allocate memory after %zu nodes at %.1f MiB "
                     "resident",
                     engine->tree.nodes, rss_mb());
            pthread_mutex_unlock(&engine->lock);
            return -ENOMEM;
        }
        atomic_store(&engine->nodes, engine->tree.nodes);
        predicted += len;
        grown_since_check += len;

        if (clock_monotonic() >= next_log) {
            next_log += c->log_interval_sec;
            test_log(engine, "BUILD_TREE_PROGRESS",
                     "Built %zu nodes, %.1f of %.1f MiB resident",
                     engine->tree.nodes, rss_mb(), (double)target / MIB);
        }
    }

    test_log(engine, "BUILD_TREE_TARGET",
             "Reached %.1f MiB resident (target %.1f MiB) with %zu nodes",
             (double)rss / MIB, (double)target / MIB, engine->tree.nodes);
    test_log(engine, "BUILD_TREE_COMPLETE",
             "Built tree with %zu nodes, height %zu, %.1f MiB of payload in "
             "%.2f s",
             engine->tree.nodes, tree_height(&engine->tree),
             (double)engine->tree.payload_bytes / MIB,
             clock_monotonic() - start);
    return 0;
}

static uint64_t next_random(uint64_t *state)
{
    /* xorshift64*: fast, and plenty random for picking search keys. */
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 0x2545f4914f6cdd1dULL;
}

/* Runs one batch of random searches for keys that are in the tree. */
static void search_batch(struct engine *engine, uint64_t *rng, uint64_t *sink)
{
    struct tree *tree = &engine->tree;
    uint64_t hits = 0;

    if (tree->nodes == 0)
        return;
    for (int i = 0; i < SEARCH_BATCH; i++) {
        uint64_t index = next_random(rng) % tree->nodes;
        struct tree_node *node = tree_search(tree, tree_key(tree, index));

        if (!node)
            continue;
        hits++;
        if (engine->config.touch_payload)
            *sink += tree_touch_payload(node);
    }
    atomic_fetch_add(&engine->searches, SEARCH_BATCH);
    atomic_fetch_add(&engine->search_hits, hits);
}

/* Returns 0 when the duration ran out, 1 on stop. */
static int search(struct engine *engine)
{
    const struct stress_config *c = &engine->config;
    double start = clock_monotonic();
    double deadline = start + (double)c->duration_seconds;
    double busy = SEARCH_PERIOD_SECONDS * (double)c->cpu_percent / 100.0;
    double next_log = start + c->log_interval_sec;
    uint64_t rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)start, sink = 0;
    uint64_t searches_at_log = 0;

    set_state(engine, ENGINE_SEARCHING);
    test_log(engine, "SEARCH_TREE_START",
             "Searching %zu nodes for %lld s at %lld%% of one core",
             engine->tree.nodes, (long long)c->duration_seconds,
             (long long)c->cpu_percent);
    for (;;) {
        double period_start = clock_monotonic(), now = period_start;

        if (now >= deadline)
            break;
        do {
            if (atomic_load(&engine->stop_requested))
                return 1;
            search_batch(engine, &rng, &sink);
            now = clock_monotonic();
        } while (now - period_start < busy && now < deadline &&
                 engine->tree.nodes > 0);

        if (now >= next_log) {
            uint64_t searches = atomic_load(&engine->searches);

            test_log(engine, "SEARCH_TREE_PROGRESS",
                     "%llu searches, %.0f per second, %.0f s left",
                     (unsigned long long)searches,
                     (double)(searches - searches_at_log) /
                         (now - next_log + c->log_interval_sec),
                     deadline - now);
            searches_at_log = searches;
            next_log += c->log_interval_sec;
        }
        if (c->cpu_percent < 100 || engine->tree.nodes == 0) {
            double wake = period_start + SEARCH_PERIOD_SECONDS;

            if (wait_until(engine, wake < deadline ? wake : deadline))
                return 1;
        }
    }
    if (c->touch_payload)
        test_log(engine, "SEARCH_TREE_COMPLETE",
                 "Completed %llu searches in %lld s, payload checksum %llx",
                 (unsigned long long)atomic_load(&engine->searches),
                 (long long)c->duration_seconds, (unsigned long long)sink);
    else
        test_log(engine, "SEARCH_TREE_COMPLETE",
                 "Completed %llu searches in %lld s",
                 (unsigned long long)atomic_load(&engine->searches),
                 (long long)c->duration_seconds);
    return 0;
}

static void finish(struct engine *engine, enum engine_state state,
                   enum engine_outcome outcome)
{
    pthread_mutex_lock(&engine->lock);
    engine->state = state;
    engine->final_elapsed = seconds_since(&engine->started);
    engine->outcomes[outcome]++;
    pthread_mutex_unlock(&engine->lock);
}

static void *run_test(void *arg)
{
    struct engine *engine = arg;
    int ret;

    ret = build(engine);
    if (ret == 0)
        ret = search(engine);

    if (ret == 0) {
        test_log(engine, "STRESS_TEST_COMPLETE",
                 "Stress test completed, holding %.1f MiB with %zu nodes",
                 rss_mb(), engine->tree.nodes);
        finish(engine, ENGINE_COMPLETED, ENGINE_OUTCOME_COMPLETED);
    } else if (ret > 0) {
        test_log(engine, "STRESS_TEST_STOPPED",
                 "Stress test stopped on request, keeping %zu nodes in memory",
                 engine->tree.nodes);
        finish(engine, ENGINE_STOPPED, ENGINE_OUTCOME_STOPPED);
    } else {
        test_log(engine, "STRESS_TEST_ERROR", "Stress test failed: %s",
                 engine->error);
        finish(engine, ENGINE_FAILED, ENGINE_OUTCOME_FAILED);
    }
    return NULL;
}

int engine_init(struct engine *engine, const struct engine_options *options)
{
    pthread_condattr_t attr;
    int ret;

    memset(engine, 0, sizeof(*engine));
    engine->options = *options;
    ret = logring_init(&engine->logs, options->log_capacity);
    if (ret < 0)
        return ret;
    ret = memlimit_detect(options->cgroup_root, options->proc_cgroup,
                          options->meminfo, &engine->limit);
    if (ret < 0) {
        logring_release(&engine->logs);
        return ret;
    }
    pthread_mutex_init(&engine->control, NULL);
    pthread_mutex_init(&engine->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&engine->wake, &attr);
    pthread_condattr_destroy(&attr);
    tree_init(&engine->tree, (uint64_t)time(NULL));
    tree_allow_huge_pages(&engine->tree, options->huge_pages);
    engine->state = ENGINE_IDLE;
    return 0;
}

/* Joins a thread that ended by itself.  The caller must own engine->control. */
static void reap_thread(struct engine *engine)
{
    if (engine->thread_joinable) {
        pthread_join(engine->thread, NULL);
        engine->thread_joinable = false;
    }
}

void engine_release(struct engine *engine)
{
    engine_stop(engine);
    pthread_mutex_lock(&engine->control);
    reap_thread(engine);
    pthread_mutex_unlock(&engine->control);
    tree_release(&engine->tree);
    logring_release(&engine->logs);
    pthread_cond_destroy(&engine->wake);
    pthread_mutex_destroy(&engine->lock);
    pthread_mutex_destroy(&engine->control);
}

static enum engine_state current_state(struct engine *engine)
{
    enum engine_state state;

    pthread_mutex_lock(&engine->lock);
    state = engine->state;
    pthread_mutex_unlock(&engine->lock);
    return state;
}

/* Resolves the target and resets the test fields.  The caller must own
 * engine->control. */
static int prepare(struct engine *engine, const struct stress_config *config,
                   struct config_error *err)
{
    struct memlimit limit;
    uint64_t target;
    int ret;

    ret = memlimit_detect(engine->options.cgroup_root,
                          engine->options.proc_cgroup, engine->options.meminfo,
                          &limit);
    if (ret < 0) {
        snprintf(err->field, sizeof(err->field), "%s", "");
        snprintf(err->message, sizeof(err->message),
                 "cannot read the memory size from %s: %s",
                 engine->options.meminfo, strerror(-ret));
        return -EIO;
    }
    ret = config_resolve_target(config, &limit, &target, err);
    if (ret < 0)
        return ret;

    if (engine->tree.nodes > 0) {
        uint64_t freed = engine->tree.payload_bytes;

        tree_release(&engine->tree);
        test_log(engine, "MEMORY_CLEARED",
                 "Freed the previous test's tree (%.1f MiB of payload)",
                 (double)freed / MIB);
    }

    pthread_mutex_lock(&engine->lock);
    engine->limit = limit;
    engine->config = *config;
    engine->has_config = true;
    engine->target_bytes = target;
    engine->error[0] = '\0';
    engine->final_elapsed = 0;
    clock_gettime(CLOCK_MONOTONIC, &engine->started);
    engine->state = ENGINE_BUILDING;
    pthread_mutex_unlock(&engine->lock);
    atomic_store(&engine->stop_requested, false);
    atomic_store(&engine->nodes, 0);
    atomic_store(&engine->searches, 0);
    atomic_store(&engine->search_hits, 0);
    return 0;
}

int engine_start(struct engine *engine, const struct stress_config *config,
                 struct config_error *err)
{
    int ret;

    pthread_mutex_lock(&engine->control);
    if (engine_is_running(current_state(engine))) {
        ret = -EBUSY;
        goto out_unlock;
    }
    reap_thread(engine);
    ret = prepare(engine, config, err);
    if (ret < 0)
        goto out_unlock;

    test_log(engine, "STRESS_TEST_START",
             "Stress test started: target %.1f MiB (%s limit %.1f MiB), "
             "duration %lld s",
             (double)engine->target_bytes / MIB,
             memlimit_base_name(engine->limit.base),
             (double)engine->limit.bytes / MIB,
             (long long)config->duration_seconds);
    ret = -pthread_create(&engine->thread, NULL, run_test, engine);
    if (ret < 0) {
        snprintf(engine->error, sizeof(engine->error),
                 "failed to start the test thread: %s", strerror(-ret));
        test_log(engine, "STRESS_TEST_ERROR", "%s", engine->error);
        finish(engine, ENGINE_FAILED, ENGINE_OUTCOME_FAILED);
        goto out_unlock;
    }
    engine->thread_joinable = true;

out_unlock:
    pthread_mutex_unlock(&engine->control);
    return ret;
}

int engine_stop(struct engine *engine)
{
    int ret = 0;

    pthread_mutex_lock(&engine->control);
    if (!engine_is_running(current_state(engine))) {
        ret = -ESRCH;
        goto out_unlock;
    }
    pthread_mutex_lock(&engine->lock);
    atomic_store(&engine->stop_requested, true);
    pthread_cond_broadcast(&engine->wake);
    pthread_mutex_unlock(&engine->lock);
    reap_thread(engine);

out_unlock:
    pthread_mutex_unlock(&engine->control);
    return ret;
}

int engine_clear(struct engine *engine, uint64_t *freed_bytes)
{
    int ret = 0;
    uint64_t nodes;

    pthread_mutex_lock(&engine->control);
    if (engine_is_running(current_state(engine))) {
        ret = -EBUSY;
        goto out_unlock;
    }
    reap_thread(engine);
    *freed_bytes = engine->tree.payload_bytes;
    nodes = engine->tree.nodes;
    tree_release(&engine->tree);
    atomic_store(&engine->nodes, 0);
    set_state(engine, ENGINE_IDLE);
    test_log(engine, "MEMORY_CLEARED", "Freed %llu nodes (%.1f MiB of payload)",
             (unsigned long long)nodes, (double)*freed_bytes / MIB);

out_unlock:
    pthread_mutex_unlock(&engine->control);
    return ret;
}

void engine_status(struct engine *engine, struct engine_status *status)
{
    memset(status, 0, sizeof(*status));
    pthread_mutex_lock(&engine->lock);
    status->state = engine->state;
    status->has_config = engine->has_config;
    status->config = engine->config;
    status->target_bytes = engine->target_bytes;
    status->limit = engine->limit;
    if (engine_is_running(engine->state))
        status->elapsed_seconds = seconds_since(&engine->started);
    else
        status->elapsed_seconds = engine->final_elapsed;
    memcpy(status->outcomes, engine->outcomes, sizeof(status->outcomes));
    snprintf(status->error, sizeof(status->error), "%s", engine->error);
    pthread_mutex_unlock(&engine->lock);

    status->nodes = atomic_load(&engine->nodes);
    status->searches = atomic_load(&engine->searches);
    status->search_hits = atomic_load(&engine->search_hits);
    status->rss_bytes = memlimit_rss_bytes();
}
