/*
 * The bounded test log: wrap-around, the dropped count, and paging forward
 * by sequence number.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "worker/logring.h"

static void fill(struct logring *ring, int count)
{
    char message[32];

    for (int i = 1; i <= count; i++) {
        snprintf(message, sizeof(message), "entry %d", i);
        logring_add(ring, "SEARCH_TREE_PROGRESS", (double)i, message);
    }
}

static void keeps_entries_in_order(void **state)
{
    struct logring ring;
    struct logring_entry out[10];
    size_t total = 0;

    (void)state;
    assert_int_equal(logring_init(&ring, 10), 0);
    fill(&ring, 3);
    assert_int_equal(logring_read(&ring, 0, 10, out, &total), 3);
    assert_int_equal(total, 3);
    assert_int_equal(out[0].seq, 1);
    assert_string_equal(out[0].message, "entry 1");
    assert_string_equal(out[2].message, "entry 3");
    assert_true(out[2].memory_mb == 3.0);
    assert_int_equal(logring_dropped(&ring), 0);
    logring_release(&ring);
}

static void wraps_and_counts_dropped(void **state)
{
    struct logring ring;
    struct logring_entry out[10];
    size_t total = 0;

    (void)state;
    assert_int_equal(logring_init(&ring, 10), 0);
    fill(&ring, 25);
    assert_int_equal(logring_read(&ring, 0, 10, out, &total), 10);
    assert_int_equal(total, 10);
    assert_int_equal(out[0].seq, 16);
    assert_string_equal(out[0].message, "entry 16");
    assert_int_equal(out[9].seq, 25);
    assert_int_equal(logring_dropped(&ring), 15);
    logring_release(&ring);
}

static void pages_forward_after_seq(void **state)
{
    struct logring ring;
    struct logring_entry out[4], last;
    size_t total = 0;

    (void)state;
    assert_int_equal(logring_init(&ring, 100), 0);
    fill(&ring, 10);
    assert_int_equal(logring_read(&ring, 0, 4, out, &total), 4);
    assert_int_equal(out[3].seq, 4);
    assert_int_equal(logring_read(&ring, 4, 4, out, &total), 4);
    assert_int_equal(out[0].seq, 5);
    assert_int_equal(logring_read(&ring, 8, 4, out, &total), 2);
    assert_int_equal(out[1].seq, 10);
    assert_int_equal(logring_read(&ring, 10, 4, out, &total), 0);
    assert_int_equal(logring_last(&ring, &last), 0);
    assert_int_equal(last.seq, 10);
    logring_release(&ring);
}

static void long_text_is_cut(void **state)
{
    struct logring ring;
    struct logring_entry out[1];
    char message[1000];
    size_t total;

    (void)state;
    memset(message, 'x', sizeof(message) - 1);
    message[sizeof(message) - 1] = '\0';
    assert_int_equal(logring_init(&ring, 2), 0);
    logring_add(&ring, "A_VERY_LONG_OPERATION_NAME_THAT_DOES_NOT_FIT", 1,
                message);
    assert_int_equal(logring_read(&ring, 0, 1, out, &total), 1);
    assert_int_equal(strlen(out[0].message), LOGRING_MESSAGE_MAX - 1);
    assert_int_equal(strlen(out[0].operation), LOGRING_OPERATION_MAX - 1);
    logring_release(&ring);
}

static void empty_ring_has_no_last(void **state)
{
    struct logring ring;
    struct logring_entry last;

    (void)state;
    assert_int_equal(logring_init(&ring, 5), 0);
    assert_int_equal(logring_last(&ring, &last), -ENOENT);
    assert_int_equal(logring_init(&ring, 0), -EINVAL);
    logring_release(&ring);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keeps_entries_in_order),
        cmocka_unit_test(wraps_and_counts_dropped),
        cmocka_unit_test(pages_forward_after_seq),
        cmocka_unit_test(long_text_is_cut),
        cmocka_unit_test(empty_ring_has_no_last),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
