/*
 * Quantity parsing.  The number is read as a decimal mantissa (digits with
 * at most one point) scaled by the suffix; the product is formed in long
 * double and checked against INT64_MAX before it is rounded up.
 */
#include "kube/quantity.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct suffix {
    const char *text;
    long double scale;
};

static const struct suffix suffixes[] = {
    {"Ki", 1024.0L},
    {"Mi", 1048576.0L},
    {"Gi", 1073741824.0L},
    {"Ti", 1099511627776.0L},
    {"Pi", 1125899906842624.0L},
    {"Ei", 1152921504606846976.0L},
    {"k", 1e3L},
    {"M", 1e6L},
    {"G", 1e9L},
    {"T", 1e12L},
    {"P", 1e15L},
    {"E", 1e18L},
    {"m", 1e-3L},
    {"", 1.0L},
};

/* Reads [+]digits[.digits] or [+].digits; returns the end, or NULL. */
static const char *parse_mantissa(const char *p, long double *value)
{
    long double v = 0, frac = 0.1L;
    int digits = 0;

    if (*p == '+')
        p++;
    for (; *p >= '0' && *p <= '9'; p++, digits++)
        v = v * 10 + (*p - '0');
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, digits++, frac /= 10)
            v += (*p - '0') * frac;
    }
    if (digits == 0)
        return NULL;
    *value = v;
    return p;
}

static int scale_for(const char *p, long double *scale)
{
    char *end;
    long exponent;

    /* The table goes first: "Ei" is a suffix, not an exponent. */
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        if (strcmp(p, suffixes[i].text) == 0) {
            *scale = suffixes[i].scale;
            return 0;
        }
    }
    if (*p != 'e' && *p != 'E')
        return -EINVAL;
    errno = 0;
    exponent = strtol(p + 1, &end, 10);
    if (end == p + 1 || *end != '\0' || errno || exponent > 30 ||
        exponent < -30)
        return -EINVAL;
    *scale = powl(10.0L, (long double)exponent);
    return 0;
}

int quantity_parse(const char *text, int64_t *bytes)
{
    long double value, scale;
    const char *p;

    if (!text)
        return -EINVAL;
    p = parse_mantissa(text, &value);
    if (!p || scale_for(p, &scale) < 0)
        return -EINVAL;
    value = ceill(value * scale);
    if (value > 9223372036854775807.0L)
        return -ERANGE;
    *bytes = (int64_t)value;
    return 0;
}

int quantity_from_json(struct json_object *value, int64_t *bytes)
{
    switch (json_object_get_type(value)) {
    case json_type_string:
        return quantity_parse(json_object_get_string(value), bytes);
    case json_type_int:
        *bytes = json_object_get_int64(value);
        return *bytes >= 0 ? 0 : -EINVAL;
    default:
        return -EINVAL;
    }
}

void quantity_format(int64_t bytes, char *buf, size_t size)
{
    static const char *const units[] = {"Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    int unit = -1;

    while (bytes != 0 && bytes % 1024 == 0 && unit < 5) {
        bytes /= 1024;
        unit++;
    }
    if (unit < 0)
        snprintf(buf, size, "%lld", (long long)bytes);
    else
        snprintf(buf, size, "%lld%s", (long long)bytes, units[unit]);
}
