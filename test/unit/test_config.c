/*
 * Request parsing and target resolution: every accepted field, the defaults,
 * and each kind of bad input, with the field that the error names.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "worker/config.h"

#define MIB ((uint64_t)1 << 20)

static int parse(const char *body, struct stress_config *c,
                 struct config_error *err)
{
    return config_parse(body, strlen(body), c, err);
}

static void full_request_is_parsed(void **state)
{
    struct stress_config c;
    struct config_error err;

    (void)state;
    assert_int_equal(parse("{\"memory_mb\": 256, \"duration_seconds\": 30, "
                           "\"log_interval_sec\": 2, \"payload_kb\": 64, "
                           "\"ramp_mb_per_sec\": 50.5, \"cpu_percent\": 20, "
                           "\"touch_payload\": true, \"allow_oom\": true}",
                           &c, &err),
                     0);
    assert_true(c.has_memory_mb);
    assert_false(c.has_memory_percent);
    assert_int_equal(c.memory_mb, 256);
    assert_int_equal(c.duration_seconds, 30);
    assert_int_equal(c.log_interval_sec, 2);
    assert_int_equal(c.payload_kb, 64);
    assert_true(c.ramp_mb_per_sec == 50.5);
    assert_int_equal(c.cpu_percent, 20);
    assert_true(c.touch_payload);
    assert_true(c.allow_oom);
}

static void defaults_apply(void **state)
{
    struct stress_config c;
    struct config_error err;

    (void)state;
    assert_int_equal(parse("{\"memory_percent\": 50}", &c, &err), 0);
    assert_true(c.has_memory_percent);
    assert_true(c.memory_percent == 50.0);
    assert_int_equal(c.duration_seconds, 60);
    assert_int_equal(c.log_interval_sec, 5);
    assert_int_equal(c.payload_kb, 100);
    assert_int_equal(c.cpu_percent, 5);
    assert_true(c.ramp_mb_per_sec == 0);
    assert_false(c.touch_payload);
    assert_false(c.allow_oom);
}

static void nul_byte_is_rejected(void **state)
{
    static const char body[] = "{\"memory_mb\": 20}\0garbage";
    struct stress_config c;
    struct config_error err;

    (void)state;
    assert_int_equal(config_parse(body, sizeof(body) - 1, &c, &err), -EINVAL);
    assert_non_null(strstr(err.message, "NUL byte"));
}

static void trailing_whitespace_is_accepted(void **state)
{
    struct stress_config c;
    struct config_error err;

    (void)state;
    assert_int_equal(parse("{\"memory_mb\": 100}\r\n  \n", &c, &err), 0);
    assert_int_equal(c.memory_mb, 100);
}

struct bad_case {
    const char *body;
    const char *field;
    const char *message_part;
};

static void bad_requests_name_the_field(void **state)
{
    static const struct bad_case cases[] = {
        {"", "", "empty"},
        {"{\"memory_mb\": 100", "", "malformed JSON"},
        {"not json", "", "malformed JSON"},
        {"{\"memory_mb\": 100} trailing", "", "malformed JSON at byte 19"},
        {"[1, 2]", "", "must be a JSON object"},
        {"42", "", "must be a JSON object, got int"},
        {"null", "", "must be a JSON object, got null"},
        {"tru", "", "unexpected end of body"},
        {"{\"memory_mb\\u0000\": 20}", "", "NUL"},
        {"{\"memory_mb\": \"100\"}", "memory_mb", "must be an integer"},
        {"{\"memory_mb\": 100.5}", "memory_mb", "must be an integer"},
        {"{\"memory_mb\": 9}", "memory_mb", "between 10 and"},
        {"{\"memory_mb\": 99999999999999999999}", "memory_mb", "between"},
        {"{\"memory_percent\": 0}", "memory_percent", "between 1 and 95"},
        {"{\"memory_percent\": 96}", "memory_percent", "between 1 and 95"},
        {"{\"memory_percent\": true}", "memory_percent", "must be a number"},
        {"{\"memory_mb\": 100, \"memory_percent\": 10}", "memory_mb",
         "exactly one"},
        {"{}", "memory_mb", "missing target"},
        {"{\"duration_seconds\": 60}", "memory_mb", "missing target"},
        {"{\"memory_mb\": 100, \"duration_seconds\": 4}", "duration_seconds",
         "between 5 and 3600"},
        {"{\"memory_mb\": 100, \"duration_seconds\": 3601}", "duration_seconds",
         "between 5 and 3600"},
        {"{\"memory_mb\": 100, \"log_interval_sec\": 0}", "log_interval_sec",
         "between 1 and 60"},
        {"{\"memory_mb\": 100, \"log_interval_sec\": 61}", "log_interval_sec",
         "between 1 and 60"},
        {"{\"memory_mb\": 100, \"payload_kb\": 0}", "payload_kb",
         "between 1 and 10240"},
        {"{\"memory_mb\": 100, \"payload_kb\": 10241}", "payload_kb",
         "between 1 and 10240"},
        {"{\"memory_mb\": 100, \"cpu_percent\": 101}", "cpu_percent",
         "between 1 and 100"},
        {"{\"memory_mb\": 100, \"ramp_mb_per_sec\": 0}", "ramp_mb_per_sec",
         "between 1 and"},
        {"{\"memory_mb\": 100, \"touch_payload\": 1}", "touch_payload",
         "true or false"},
        {"{\"memory_mb\": 100, \"allow_oom\": \"yes\"}", "allow_oom",
         "true or false"},
        {"{\"memory_mb\": 100, \"memroy_mb\": 5}", "memroy_mb",
         "unknown field"},
        {"{\"memory_mb\": NaN}", "memory_mb", "must be an integer"},
        {"{\"memory_percent\": NaN}", "memory_percent", "between 1 and 95"},
        {"{'memory_mb': 100}", "", "malformed JSON"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct stress_config c;
        struct config_error err;

        print_message("body: %s\n", cases[i].body);
        assert_int_equal(parse(cases[i].body, &c, &err), -EINVAL);
        assert_string_equal(err.field, cases[i].field);
        assert_non_null(strstr(err.message, cases[i].message_part));
    }
}

static const struct memlimit cgroup_256 = {
    .base = MEMLIMIT_CGROUP,
    .bytes = 256 * MIB,
    .host_bytes = 16384 * MIB,
};

static void percent_uses_cgroup_limit(void **state)
{
    struct stress_config c;
    struct config_error err;
    uint64_t target = 0;

    (void)state;
    assert_int_equal(parse("{\"memory_percent\": 50}", &c, &err), 0);
    assert_int_equal(config_resolve_target(&c, &cgroup_256, &target, &err), 0);
    assert_int_equal(target, 128 * MIB);
}

static void target_above_limit_is_rejected(void **state)
{
    struct stress_config c;
    struct config_error err;
    uint64_t target = 0;

    (void)state;
    assert_int_equal(parse("{\"memory_mb\": 512}", &c, &err), 0);
    assert_int_equal(config_resolve_target(&c, &cgroup_256, &target, &err),
                     -EINVAL);
    assert_string_equal(err.field, "memory_mb");
    assert_non_null(strstr(err.message, "exceeds the cgroup memory limit"));
    assert_non_null(strstr(err.message, "allow_oom"));
}

static void allow_oom_accepts_target(void **state)
{
    struct stress_config c;
    struct config_error err;
    uint64_t target = 0;

    (void)state;
    assert_int_equal(
        parse("{\"memory_mb\": 512, \"allow_oom\": true}", &c, &err), 0);
    assert_int_equal(config_resolve_target(&c, &cgroup_256, &target, &err), 0);
    assert_int_equal(target, 512 * MIB);
}

static void tiny_percent_is_rejected(void **state)
{
    struct stress_config c;
    struct config_error err;
    uint64_t target = 0;

    (void)state;
    assert_int_equal(parse("{\"memory_percent\": 2}", &c, &err), 0);
    assert_int_equal(config_resolve_target(&c, &cgroup_256, &target, &err),
                     -EINVAL);
    assert_string_equal(err.field, "memory_percent");
    assert_non_null(strstr(err.message, "below the minimum"));
}

static void config_round_trips_to_json(void **state)
{
    struct stress_config c;
    struct config_error err;
    struct json_object *obj, *value;

    (void)state;
    assert_int_equal(
        parse("{\"memory_mb\": 300, \"cpu_percent\": 40}", &c, &err), 0);
    obj = config_to_json(&c);
    assert_true(json_object_object_get_ex(obj, "memory_mb", &value));
    assert_int_equal(json_object_get_int(value), 300);
    assert_true(json_object_object_get_ex(obj, "cpu_percent", &value));
    assert_int_equal(json_object_get_int(value), 40);
    assert_false(json_object_object_get_ex(obj, "memory_percent", &value));
    json_object_put(obj);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_request_is_parsed),
        cmocka_unit_test(defaults_apply),
        cmocka_unit_test(trailing_whitespace_is_accepted),
        cmocka_unit_test(nul_byte_is_rejected),
        cmocka_unit_test(bad_requests_name_the_field),
        cmocka_unit_test(percent_uses_cgroup_limit),
        cmocka_unit_test(target_above_limit_is_rejected),
        cmocka_unit_test(allow_oom_accepts_target),
        cmocka_unit_test(tiny_percent_is_rejected),
        cmocka_unit_test(config_round_trips_to_json),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
