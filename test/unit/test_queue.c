/*
 * The controller's work queue: de-duplication, one worker per key, re-adds
 * during processing, delays, per-key exponential backoff, the overall rate
 * limit, and shutdown.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "controller/queue.h"

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void duplicate_adds_queue_once(void **state)
{
    struct queue q;
    char key[QUEUE_KEY_SIZE];

    (void)state;
    queue_init(&q, 0, 0);
    queue_add(&q, "ns/a");
    queue_add(&q, "ns/a");
    queue_add(&q, "ns/b");
    assert_int_equal(queue_len(&q), 2);
    assert_int_equal(queue_get(&q, key), 0);
    assert_string_equal(key, "ns/a");
    assert_int_equal(queue_get(&q, key), 0);
    assert_string_equal(key, "ns/b");
    assert_int_equal(queue_len(&q), 0);
    queue_done(&q, "ns/a");
    queue_done(&q, "ns/b");
    queue_release(&q);
}

static void add_while_processing_requeues(void **state)
{
    struct queue q;
    char key[QUEUE_KEY_SIZE];

    (void)state;
    queue_init(&q, 0, 0);
    queue_add(&q, "ns/a");
    assert_int_equal(queue_get(&q, key), 0);
    /* Added while processing: not handed to a second worker. */
    queue_add(&q, "ns/a");
    assert_int_equal(queue_len(&q), 0);
    queue_done(&q, "ns/a");
    assert_int_equal(queue_len(&q), 1);
    assert_int_equal(queue_get(&q, key), 0);
    assert_string_equal(key, "ns/a");
    queue_done(&q, "ns/a");
    queue_release(&q);
}

static void delayed_add_waits(void **state)
{
    struct queue q;
    char key[QUEUE_KEY_SIZE];
    double start;

    (void)state;
    queue_init(&q, 0, 0);
    start = now_seconds();
    queue_add_after(&q, "ns/later", 0.2);
    queue_add(&q, "ns/now");
    assert_int_equal(queue_get(&q, key), 0);
    assert_string_equal(key, "ns/now");
    assert_true(now_seconds() - start < 0.15);
    assert_int_equal(queue_get(&q, key), 0);
    assert_string_equal(key, "ns/later");
    assert_true(now_seconds() - start >= 0.19);
    queue_release(&q);
}

static void backoff_doubles_and_resets(void **state)
{
    struct queue q;

    (void)state;
    queue_init(&q, 0, 0);
    assert_true(queue_add_rate_limited(&q, "ns/a") == 0.005);
    assert_true(queue_add_rate_limited(&q, "ns/a") == 0.01);
    assert_true(queue_add_rate_limited(&q, "ns/a") == 0.02);
    assert_int_equal(queue_failures(&q, "ns/a"), 3);
    for (int i = 0; i < 30; i++)
        queue_add_rate_limited(&q, "ns/a");
    assert_true(queue_add_rate_limited(&q, "ns/a") == 1000);
    queue_forget(&q, "ns/a");
    assert_int_equal(queue_failures(&q, "ns/a"), 0);
    assert_true(queue_add_rate_limited(&q, "ns/a") == 0.005);
    queue_release(&q);
}

static void overall_rate_limit_applies(void **state)
{
    struct queue q;
    char key[32];
    double delay = 0;

    (void)state;
    queue_init(&q, 10, 5);
    /* Five keys fit the burst; the next ones wait 0.1 s more each. */
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "ns/k%d", i);
        delay = queue_add_rate_limited(&q, key);
    }
    assert_true(delay > 0.25);
    assert_true(delay < 0.35);
    queue_release(&q);
}

static void *get_one(void *arg)
{
    static int result;
    char key[QUEUE_KEY_SIZE];

    result = queue_get(arg, key);
    return &result;
}

static void shutdown_wakes_waiters(void **state)
{
    struct queue q;
    pthread_t thread;
    void *result;

    (void)state;
    queue_init(&q, 0, 0);
    pthread_create(&thread, NULL, get_one, &q);
    queue_shutdown(&q);
    pthread_join(thread, &result);
    assert_int_equal(*(int *)result, -ESHUTDOWN);
    queue_add(&q, "ns/ignored");
    assert_int_equal(queue_len(&q), 0);
    queue_release(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(duplicate_adds_queue_once),
        cmocka_unit_test(add_while_processing_requeues),
        cmocka_unit_test(delayed_add_waits),
        cmocka_unit_test(backoff_doubles_and_resets),
        cmocka_unit_test(overall_rate_limit_applies),
        cmocka_unit_test(shutdown_wakes_waiters),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
