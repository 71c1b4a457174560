/*
 * cgroup v1 and v2 limit detection, run against fixture folders under
 * test/unit/fixtures/cgroup/.  Each folder holds a copy of /proc/self/cgroup,
 * /proc/meminfo (16 GiB) and a cgroup root.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "worker/memlimit.h"

#define FIXTURES   "test/unit/fixtures/cgroup/"
#define MIB        ((uint64_t)1 << 20)
#define HOST_BYTES ((uint64_t)16 * 1024 * MIB)

static void detect(const char *name, struct memlimit *limit)
{
    char root[256], proc[256], meminfo[256];

    snprintf(root, sizeof(root), FIXTURES "%s/root", name);
    snprintf(proc, sizeof(proc), FIXTURES "%s/proc-self-cgroup", name);
    snprintf(meminfo, sizeof(meminfo), FIXTURES "%s/meminfo", name);
    assert_int_equal(memlimit_detect(root, proc, meminfo, limit), 0);
}

static void v1_parent_limit_binds(void **state)
{
    struct memlimit limit;

    (void)state;
    detect("v1-parent-limit", &limit);
    assert_int_equal(limit.base, MEMLIMIT_CGROUP);
    assert_int_equal(limit.bytes, 256 * MIB);
    assert_int_equal(limit.host_bytes, HOST_BYTES);
    assert_non_null(strstr(limit.source, "kubepods/pod1/memory.limit_in"));
}

static void v1_huge_value_is_unlimited(void **state)
{
    struct memlimit limit;

    (void)state;
    detect("v1-unlimited", &limit);
    assert_int_equal(limit.base, MEMLIMIT_HOST);
    assert_int_equal(limit.bytes, HOST_BYTES);
}

static void v2_limit_is_read(void **state)
{
    struct memlimit limit;

    (void)state;
    detect("v2-limit", &limit);
    assert_int_equal(limit.base, MEMLIMIT_CGROUP);
    assert_int_equal(limit.bytes, 512 * MIB);
}

static void v2_max_is_unlimited(void **state)
{
    struct memlimit limit;

    (void)state;
    detect("v2-max", &limit);
    assert_int_equal(limit.base, MEMLIMIT_HOST);
    assert_int_equal(limit.bytes, HOST_BYTES);
    assert_string_equal(limit.source, FIXTURES "v2-max/meminfo");
}

static void v2_namespaced_reads_root(void **state)
{
    struct memlimit limit;

    (void)state;
    detect("v2-namespaced", &limit);
    assert_int_equal(limit.base, MEMLIMIT_CGROUP);
    assert_int_equal(limit.bytes, 128 * MIB);
}

static void missing_files_fall_back_to_host(void **state)
{
    struct memlimit limit;

    (void)state;
    detect("missing", &limit);
    assert_int_equal(limit.base, MEMLIMIT_HOST);
    assert_int_equal(limit.bytes, HOST_BYTES);
}

static void limit_above_host_uses_host(void **state)
{
    struct memlimit limit;

    (void)state;
    detect("v2-above-host", &limit);
    assert_int_equal(limit.base, MEMLIMIT_HOST);
    assert_int_equal(limit.bytes, HOST_BYTES);
}

static void missing_meminfo_is_error(void **state)
{
    struct memlimit limit;

    (void)state;
    assert_int_equal(memlimit_detect(FIXTURES "missing/root",
                                     FIXTURES "missing/proc-self-cgroup",
                                     FIXTURES "missing/no-such-file", &limit),
                     -ENOENT);
}

static void parse_value_cases(void **state)
{
    uint64_t bytes = 0;

    (void)state;
    assert_int_equal(memlimit_parse_value("max\n", &bytes), 0);
    assert_true(bytes == UINT64_MAX);
    assert_int_equal(memlimit_parse_value("268435456\n", &bytes), 0);
    assert_int_equal(bytes, 268435456);
    assert_int_equal(memlimit_parse_value("9223372036854771712", &bytes), 0);
    assert_true(bytes == UINT64_MAX);
    assert_int_equal(memlimit_parse_value("99999999999999999999999", &bytes),
                     0);
    assert_true(bytes == UINT64_MAX);
    assert_int_equal(memlimit_parse_value("", &bytes), -EINVAL);
    assert_int_equal(memlimit_parse_value("-1", &bytes), -EINVAL);
    assert_int_equal(memlimit_parse_value("12abc", &bytes), -EINVAL);
    assert_int_equal(memlimit_parse_value("maximum", &bytes), -EINVAL);
}

static void rss_is_plausible(void **state)
{
    uint64_t rss = memlimit_rss_bytes();

    (void)state;
    assert_true(rss > 100 * 1024);
    assert_true(rss < 1024 * MIB);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v1_parent_limit_binds),
        cmocka_unit_test(v1_huge_value_is_unlimited),
        cmocka_unit_test(v2_limit_is_read),
        cmocka_unit_test(v2_max_is_unlimited),
        cmocka_unit_test(v2_namespaced_reads_root),
        cmocka_unit_test(missing_files_fall_back_to_host),
        cmocka_unit_test(limit_above_host_uses_host),
        cmocka_unit_test(missing_meminfo_is_error),
        cmocka_unit_test(parse_value_cases),
        cmocka_unit_test(rss_is_plausible),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
