/*
 * Quantity parsing and formatting: binary and decimal suffixes, fractions,
 * exponents, and the strings the API server would reject.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kube/quantity.h"

struct good_case {
    const char *text;
    int64_t bytes;
};

static void valid_quantities_parse(void **state)
{
    static const struct good_case cases[] = {
        {"0", 0},
        {"128974848", 128974848},
        {"100Ki", 102400},
        {"512Mi", 536870912},
        {"1Gi", 1073741824},
        {"1.5Gi", 1610612736},
        {".5Mi", 524288},
        {"+2Ki", 2048},
        {"1k", 1000},
        {"129M", 129000000},
        {"1G", 1000000000},
        {"1e3", 1000},
        {"12E3", 12000},
        {"1500m", 2},
        {"1Ti", 1099511627776LL},
        {"7Ei", 8070450532247928832LL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t bytes = -1;

        print_message("quantity: %s\n", cases[i].text);
        assert_int_equal(quantity_parse(cases[i].text, &bytes), 0);
        assert_int_equal(bytes, cases[i].bytes);
    }
}

static void invalid_quantities_fail(void **state)
{
    static const char *const cases[] = {
        "", "Mi", "lots", "-1Mi", "1.2.3", "1 Mi", "1MB", "1mi", "1e", "0x10",
    };
    int64_t bytes;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        print_message("quantity: '%s'\n", cases[i]);
        assert_int_equal(quantity_parse(cases[i], &bytes), -EINVAL);
    }
    assert_int_equal(quantity_parse("8Ei", &bytes), -ERANGE);
    assert_int_equal(quantity_parse(NULL, &bytes), -EINVAL);
}

static void json_quantities_parse(void **state)
{
    struct json_object *text = json_object_new_string("64Mi");
    struct json_object *number = json_object_new_int64(4096);
    struct json_object *flag = json_object_new_boolean(1);
    int64_t bytes = 0;

    (void)state;
    assert_int_equal(quantity_from_json(text, &bytes), 0);
    assert_int_equal(bytes, 67108864);
    assert_int_equal(quantity_from_json(number, &bytes), 0);
    assert_int_equal(bytes, 4096);
    assert_int_equal(quantity_from_json(flag, &bytes), -EINVAL);
    json_object_put(text);
    json_object_put(number);
    json_object_put(flag);
}

static void format_picks_exact_unit(void **state)
{
    char buf[32];

    (void)state;
    quantity_format(536870912, buf, sizeof(buf));
    assert_string_equal(buf, "512Mi");
    quantity_format(1572864, buf, sizeof(buf));
    assert_string_equal(buf, "1536Ki");
    quantity_format(1000, buf, sizeof(buf));
    assert_string_equal(buf, "1000");
    quantity_format(0, buf, sizeof(buf));
    assert_string_equal(buf, "0");
    quantity_format(3LL << 40, buf, sizeof(buf));
    assert_string_equal(buf, "3Ti");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_quantities_parse),
        cmocka_unit_test(invalid_quantities_fail),
        cmocka_unit_test(json_quantities_parse),
        cmocka_unit_test(format_picks_exact_unit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
