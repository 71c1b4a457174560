/*
 * Request parsing with json-c.  The tokener runs in strict mode over the
 * exact body length, so trailing bytes after the object ("{}garbage"),
 * single quotes and NaN are all malformed JSON, not silently accepted.
 */
#include "worker/config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MIB ((uint64_t)1 << 20)

void config_defaults(struct stress_config *config)
{
    memset(config, 0, sizeof(*config));
    config->duration_seconds = CONFIG_DEFAULT_DURATION_SECONDS;
    config->log_interval_sec = CONFIG_DEFAULT_LOG_INTERVAL_SECONDS;
    config->payload_kb = CONFIG_DEFAULT_PAYLOAD_KB;
    config->cpu_percent = CONFIG_DEFAULT_CPU_PERCENT;
}

static int set_error(struct config_error *err, const char *field,
                     const char *fmt, ...)
{
    va_list ap;

    snprintf(err->field, sizeof(err->field), "%s", field);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Reads an integer field in [min, max]; a double is accepted if integral. */
static int get_integer(struct json_object *value, const char *field,
                       int64_t min, int64_t max, int64_t *out,
                       struct config_error *err)
{
    double d;

    switch (json_object_get_type(value)) {
    case json_type_int:
        errno = 0;
        *out = json_object_get_int64(value);
        if (errno == 0 && *out >= min && *out <= max)
            return 0;
        break;
    case json_type_double:
        d = json_object_get_double(value);
        if (d != floor(d))
            return set_error(err, field, "%s must be an integer, got %g", field,
                             d);
        if (d >= (double)min && d <= (double)max) {
            *out = (int64_t)d;
            return 0;
        }
        break;
    default:
        return set_error(err, field, "%s must be an integer, got %s", field,
                         json_type_to_name(json_object_get_type(value)));
    }
    return set_error(err, field, "%s must be between %lld and %lld, got %s",
                     field, (long long)min, (long long)max,
                     json_object_to_json_string(value));
}

static int get_number(struct json_object *value, const char *field, double min,
                      double max, double *out, struct config_error *err)
{
    enum json_type type = json_object_get_type(value);

    if (type != json_type_int && type != json_type_double)
        return set_error(err, field, "%s must be a number, got %s", field,
                         json_type_to_name(type));
    *out = json_object_get_double(value);
    if (!isfinite(*out) || *out < min || *out > max)
        return set_error(err, field, "%s must be between %g and %g, got %s",
                         field, min, max, json_object_to_json_string(value));
    return 0;
}

static int get_bool(struct json_object *value, const char *field, bool *out,
                    struct config_error *err)
{
    if (json_object_get_type(value) != json_type_boolean)
        return set_error(err, field, "%s must be true or false, got %s", field,
                         json_type_to_name(json_object_get_type(value)));
    *out = json_object_get_boolean(value);
    return 0;
}

static int parse_field(const char *key, struct json_object *value,
                       struct stress_config *c, struct config_error *err)
{
    if (strcmp(key, "memory_mb") == 0) {
        c->has_memory_mb = true;
        return get_integer(value, key, (int64_t)CONFIG_MEMORY_MB_MIN,
                           CONFIG_MEMORY_MB_MAX, &c->memory_mb, err);
    }
    if (strcmp(key, "memory_percent") == 0) {
        c->has_memory_percent = true;
        return get_number(value, key, 1, 95, &c->memory_percent, err);
    }
    if (strcmp(key, "duration_seconds") == 0)
        return get_integer(value, key, 5, 3600, &c->duration_seconds, err);
    if (strcmp(key, "log_interval_sec") == 0)
        return get_integer(value, key, 1, 60, &c->log_interval_sec, err);
    if (strcmp(key, "payload_kb") == 0)
        return get_integer(value, key, 1, 10240, &c->payload_kb, err);
    if (strcmp(key, "ramp_mb_per_sec") == 0)
        return get_number(value, key, 1, 1000000, &c->ramp_mb_per_sec, err);
    if (strcmp(key, "cpu_percent") == 0)
        return get_integer(value, key, 1, 100, &c->cpu_percent, err);
    if (strcmp(key, "touch_payload") == 0)
        return get_bool(value, key, &c->touch_payload, err);
    if (strcmp(key, "allow_oom") == 0)
        return get_bool(value, key, &c->allow_oom, err);
    return set_error(err, key,
                     "unknown field \"%.64s\"; valid fields are memory_mb, "
                     "memory_percent, duration_seconds, log_interval_sec, "
                     "payload_kb, ramp_mb_per_sec, cpu_percent, "
                     "touch_payload and allow_oom",
                     key);
}

static int parse_object(struct json_object *root, struct stress_config *c,
                        struct config_error *err)
{
    if (!json_object_is_type(root, json_type_object))
        return set_error(err, "", "request body must be a JSON object, got %s",
                         json_type_to_name(json_object_get_type(root)));

    json_object_object_foreach(root, key, value)
    {
        int ret = parse_field(key, value, c, err);

        if (ret < 0)
            return ret;
    }

    if (c->has_memory_mb && c->has_memory_percent)
        return set_error(err, "memory_mb",
                         "give exactly one of memory_mb and memory_percent, "
                         "not both");
    if (!c->has_memory_mb && !c->has_memory_percent)
        return set_error(err, "memory_mb",
                         "missing target: give memory_mb (MiB) or "
                         "memory_percent (percent of the memory limit)");
    return 0;
}

/*
 * Returns the offset of a single quote outside any double-quoted string, or
 * -1.  json-c accepts 'single-quoted' strings even in strict mode, but they
 * are not JSON, and a client sending them has a bug worth reporting.
 */
static long find_single_quote(const char *body, size_t len)
{
    bool in_string = false;

    for (size_t i = 0; i < len; i++) {
        if (in_string && body[i] == '\\')
            i++;
        else if (body[i] == '"')
            in_string = !in_string;
        else if (!in_string && body[i] == '\'')
            return (long)i;
    }
    return -1;
}

int config_parse(const char *body, size_t len, struct stress_config *config,
                 struct config_error *err)
{
    struct json_tokener *tok;
    struct json_object *root;
    int ret;

    config_defaults(config);
    memset(err, 0, sizeof(*err));
    if (len == 0)
        return set_error(err, "",
                         "request body is empty; send a JSON object such as "
                         "{\"memory_mb\": 256}");
    if (len > INT32_MAX)
        return set_error(err, "", "request body is too large");

    if (memchr(body, '\0', len))
        return set_error(
            err, "", "malformed JSON at byte %zu: NUL byte",
            (size_t)((const char *)memchr(body, '\0', len) - body));
    if (memmem(body, len, "\\u0000", 6))
        return set_error(err, "",
                         "malformed JSON: \\u0000 (NUL) is not allowed in "
                         "names or values");

    long quote = find_single_quote(body, len);
    if (quote >= 0)
        return set_error(err, "",
                         "malformed JSON at byte %ld: strings need double "
                         "quotes",
                         quote);

    tok = json_tokener_new();
    if (!tok)
        return set_error(err, "", "out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    root = json_tokener_parse_ex(tok, body, (int)len);
    /* A bare number needs to see the end of input to finish. */
    if (!root && json_tokener_get_error(tok) == json_tokener_continue) {
        root = json_tokener_parse_ex(tok, "", 1);
        if (!root && json_tokener_get_error(tok) != json_tokener_success) {
            ret = set_error(err, "", "malformed JSON: unexpected end of body");
            goto out_free_tok;
        }
    }
    if (!root) {
        enum json_tokener_error jerr = json_tokener_get_error(tok);

        if (jerr == json_tokener_success)
            ret = set_error(err, "",
                            "request body must be a JSON object, got null");
        else
            ret = set_error(err, "", "malformed JSON at byte %zu: %s",
                            json_tokener_get_parse_end(tok),
                            json_tokener_error_desc(jerr));
        goto out_free_tok;
    }

    ret = parse_object(root, config, err);
    json_object_put(root);
out_free_tok:
    json_tokener_free(tok);
    return ret;
}

int config_resolve_target(const struct stress_config *config,
                          const struct memlimit *limit, uint64_t *target,
                          struct config_error *err)
{
    const char *field = config->has_memory_mb ? "memory_mb" : "memory_percent";
    uint64_t limit_mb = limit->bytes / MIB;

    if (config->has_memory_mb)
        *target = (uint64_t)config->memory_mb * MIB;
    else
        *target =
            (uint64_t)((double)limit->bytes * config->memory_percent / 100.0);

    if (*target < CONFIG_MEMORY_MB_MIN * MIB)
        return set_error(err, field,
                         "%s resolves to %.1f MiB, below the minimum of %d "
                         "MiB (%s limit %llu MiB)",
                         field, (double)*target / MIB, CONFIG_MEMORY_MB_MIN,
                         memlimit_base_name(limit->base),
                         (unsigned long long)limit_mb);
    if (*target > limit->bytes && !config->allow_oom)
        return set_error(err, field,
                         "%s of %llu MiB exceeds the %s memory limit of %llu "
                         "MiB; lower it, or set allow_oom to true to find "
                         "the point where the process is OOM-killed",
                         field, (unsigned long long)(*target / MIB),
                         memlimit_base_name(limit->base),
                         (unsigned long long)limit_mb);
    return 0;
}

struct json_object *config_to_json(const struct stress_config *c)
{
    struct json_object *o = json_object_new_object();

    if (c->has_memory_mb)
        json_object_object_add(o, "memory_mb",
                               json_object_new_int64(c->memory_mb));
    if (c->has_memory_percent)
        json_object_object_add(o, "memory_percent",
                               json_object_new_double(c->memory_percent));
    json_object_object_add(o, "duration_seconds",
                           json_object_new_int64(c->duration_seconds));
    json_object_object_add(o, "log_interval_sec",
                           json_object_new_int64(c->log_interval_sec));
    json_object_object_add(o, "payload_kb",
                           json_object_new_int64(c->payload_kb));
    if (c->ramp_mb_per_sec > 0)
        json_object_object_add(o, "ramp_mb_per_sec",
                               json_object_new_double(c->ramp_mb_per_sec));
    json_object_object_add(o, "cpu_percent",
                           json_object_new_int64(c->cpu_percent));
    json_object_object_add(o, "touch_payload",
                           json_object_new_boolean(c->touch_payload));
    json_object_object_add(o, "allow_oom",
                           json_object_new_boolean(c->allow_oom));
    return o;
}
