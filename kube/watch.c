/*
 * List-watch loop and the incremental watch stream decoder.
 *
 * Events are applied to the store from inside curl's write callback, so an
 * event is handled as soon as its last byte arrives.  The resourceVersion to
 * resume from advances with every event and bookmark; after a 410 it is
 * dropped and the next step is a full list.
 */
#include "kube/watch.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kube/klog.h"

#define DEFAULT_TIMEOUT_S       300
#define DEFAULT_IDLE_TIMEOUT_S  90
#define DEFAULT_MAX_EVENT_BYTES ((size_t)16 * 1024 * 1024)
#define BACKOFF_INITIAL_MS      500
#define BACKOFF_MAX_MS          30000
/* Added to timeoutSeconds for the client-side deadline of one stream. */
#define STREAM_DEADLINE_SLACK_S 30
/* Marks a stream stopped by a 410 ERROR event rather than by a callback. */
#define EVENT_RC_EXPIRED (-ESTALE)

int watch_decoder_init(struct watch_decoder *decoder, size_t max_event_bytes,
                       int (*on_event)(struct json_object *event, void *user),
                       void *user)
{
    memset(decoder, 0, sizeof(*decoder));
    decoder->tokener = json_tokener_new();
    if (!decoder->tokener)
        return -ENOMEM;
    decoder->max_event_bytes = max_event_bytes;
    decoder->on_event = on_event;
    decoder->user = user;
    return 0;
}

void watch_decoder_release(struct watch_decoder *decoder)
{
    if (!decoder || !decoder->tokener)
        return;
    json_tokener_free(decoder->tokener);
    memset(decoder, 0, sizeof(*decoder));
}

void watch_decoder_reset(struct watch_decoder *decoder)
{
    json_tokener_reset(decoder->tokener);
    decoder->pending = 0;
}

int watch_decoder_feed(struct watch_decoder *decoder, const char *data,
                       size_t len)
{
    while (len > 0) {
        int piece = len > INT_MAX ? INT_MAX : (int)len;
        struct json_object *event;
        enum json_tokener_error error;
        size_t used;
        int rc;

        event = json_tokener_parse_ex(decoder->tokener, data, piece);
        error = json_tokener_get_error(decoder->tokener);
        if (error == json_tokener_continue) {
            decoder->pending += (size_t)piece;
            if (decoder->pending > decoder->max_event_bytes)
                return -EMSGSIZE;
            data += piece;
            len -= (size_t)piece;
            continue;
        }
        if (error != json_tokener_success || !event)
            return -EBADMSG;
        used = json_tokener_get_parse_end(decoder->tokener);
        decoder->pending += used;
        if (decoder->pending > decoder->max_event_bytes) {
            json_object_put(event);
            return -EMSGSIZE;
        }
        decoder->pending = 0;
        rc = decoder->on_event(event, decoder->user);
        json_object_put(event);
        if (rc != 0)
            return rc;
        data += used;
        len -= used;
    }
    return 0;
}

const char *watch_event_name(enum watch_event_type type)
{
    switch (type) {
    case WATCH_ADDED:
        return "ADDED";
    case WATCH_MODIFIED:
        return "MODIFIED";
    case WATCH_DELETED:
        return "DELETED";
    }
    return "UNKNOWN";
}

static const char *resource_version_of(struct json_object *obj)
{
    struct json_object *meta, *rv;

    if (!json_object_object_get_ex(obj, "metadata", &meta) ||
        !json_object_object_get_ex(meta, "resourceVersion", &rv))
        return NULL;
    return json_object_get_string(rv);
}

static int set_resource_version(struct watch *w, const char *rv)
{
    char *copy;

    if (!rv || !rv[0])
        return 0;
    copy = strdup(rv);
    if (!copy)
        return -ENOMEM;
    free(w->resource_version);
    w->resource_version = copy;
    return 0;
}

static int emit(struct watch *w, enum watch_event_type type,
                struct json_object *obj)
{
    w->events++;
    if (!w->opts.on_event)
        return 0;
    return w->opts.on_event(type, obj, w->opts.user);
}

static int apply_change(struct watch *w, const char *type,
                        struct json_object *obj)
{
    char key[STORE_KEY_SIZE];
    struct json_object *old;
    int rc;

    if (strcmp(type, "DELETED") == 0) {
        if (store_key(obj, key, sizeof(key)) < 0)
            return 0;
        json_object_put(store_remove(&w->store, key));
        return emit(w, WATCH_DELETED, obj);
    }
    if (store_key(obj, key, sizeof(key)) < 0)
        return 0;
    old = store_remove(&w->store, key);
    rc = store_put(&w->store, obj);
    json_object_put(old);
    if (rc < 0)
        return rc;
    return emit(w, old ? WATCH_MODIFIED : WATCH_ADDED, obj);
}

static long status_code(struct json_object *status)
{
    struct json_object *code;

    if (!json_object_object_get_ex(status, "code", &code))
        return 0;
    return (long)json_object_get_int64(code);
}

/* Handles one decoded watch event; a non-zero return ends the stream. */
static int on_watch_event(struct json_object *event, void *user)
{
    struct watch *w = user;
    struct json_object *type_obj, *obj;
    const char *type;
    int rc;

    if (!json_object_object_get_ex(event, "type", &type_obj) ||
        !json_object_object_get_ex(event, "object", &obj))
        return -EBADMSG;
    type = json_object_get_string(type_obj);
    if (strcmp(type, "ERROR") == 0) {
        w->event_rc = status_code(obj) == 410 ? EVENT_RC_EXPIRED : -EIO;
        KLOG_INFO(2, "Received watch error event", "path", w->opts.path,
                  "status", kube_json_string(obj), NULL);
        return w->event_rc;
    }
    rc = set_resource_version(w, resource_version_of(obj));
    if (rc < 0 || strcmp(type, "BOOKMARK") == 0)
        return rc;
    rc = apply_change(w, type, obj);
    if (rc != 0)
        w->event_rc = rc;
    return rc;
}

static int on_stream_data(const char *data, size_t len, void *user)
{
    struct watch *w = user;

    return watch_decoder_feed(&w->decoder, data, len);
}

int watch_init(struct watch *w, struct kube_client *client,
               const struct watch_options *opts)
{
    int rc;

    memset(w, 0, sizeof(*w));
    w->client = client;
    w->opts = *opts;
    if (w->opts.timeout_s <= 0)
        w->opts.timeout_s = DEFAULT_TIMEOUT_S;
    if (w->opts.idle_timeout_s <= 0)
        w->opts.idle_timeout_s = DEFAULT_IDLE_TIMEOUT_S;
    if (w->opts.max_event_bytes == 0)
        w->opts.max_event_bytes = DEFAULT_MAX_EVENT_BYTES;
    rc = store_init(&w->store);
    if (rc < 0)
        return rc;
    rc = watch_decoder_init(&w->decoder, w->opts.max_event_bytes,
                            on_watch_event, w);
    if (rc < 0)
        store_release(&w->store);
    return rc;
}

void watch_release(struct watch *w)
{
    if (!w)
        return;
    watch_decoder_release(&w->decoder);
    store_release(&w->store);
    free(w->resource_version);
    memset(w, 0, sizeof(*w));
}

struct replace_state {
    struct watch *w;
    struct store *fresh;
    int rc;
};

/* Reports objects of the old store that the fresh list no longer has. */
static int report_vanished(const char *key, struct json_object *obj, void *user)
{
    struct replace_state *state = user;
    struct json_object *still_there = store_get(state->fresh, key);

    if (still_there) {
        json_object_put(still_there);
        return 0;
    }
    state->rc = emit(state->w, WATCH_DELETED, obj);
    return state->rc;
}

/* Fills fresh from items and reports additions and changes. */
static int report_listed(struct watch *w, struct json_object *items,
                         struct store *fresh)
{
    for (size_t i = 0; i < json_object_array_length(items); i++) {
        struct json_object *obj = json_object_array_get_idx(items, i);
        char key[STORE_KEY_SIZE];
        struct json_object *old;
        const char *old_rv;
        int rc;

        if (store_key(obj, key, sizeof(key)) < 0)
            continue;
        rc = store_put(fresh, obj);
        if (rc < 0)
            return rc;
        old = store_get(&w->store, key);
        old_rv = old ? resource_version_of(old) : NULL;
        if (!old)
            rc = emit(w, WATCH_ADDED, obj);
        else if (!old_rv || !resource_version_of(obj) ||
                 strcmp(old_rv, resource_version_of(obj)) != 0)
            rc = emit(w, WATCH_MODIFIED, obj);
        json_object_put(old);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/*
 * Replaces the store with the listed items.  The old store is kept until
 * the end, so a DELETED event can hand out an object's last known state.
 */
static int replace_store(struct watch *w, struct json_object *items)
{
    struct replace_state state = {.w = w};
    struct store fresh;
    int rc;

    rc = store_init(&fresh);
    if (rc < 0)
        return rc;
    state.fresh = &fresh;
    rc = report_listed(w, items, &fresh);
    if (rc == 0) {
        store_foreach(&w->store, report_vanished, &state);
        rc = state.rc;
    }
    if (rc == 0)
        store_swap(&w->store, &fresh);
    store_release(&fresh);
    return rc;
}

static int relist(struct watch *w)
{
    struct kube_list_options list_opts = {
        .label_selector = w->opts.label_selector,
        .field_selector = w->opts.field_selector,
        .limit = w->opts.page_limit,
    };
    struct kube_response resp;
    struct json_object *items;
    int rc;

    rc = kube_list(w->client, w->opts.path, &list_opts, &resp);
    w->last_status = resp.status;
    if (rc < 0) {
        KLOG_ERROR("Failed to list", resp.message, "path", w->opts.path, NULL);
        goto out_release;
    }
    json_object_object_get_ex(resp.body, "items", &items);
    rc = replace_store(w, items);
    if (rc != 0)
        goto out_release;
    rc = set_resource_version(w, resource_version_of(resp.body));
    w->lists++;
    if (rc == 0 && w->opts.on_synced)
        w->opts.on_synced(w->lists, w->opts.user);
out_release:
    kube_response_release(&resp);
    return rc;
}

static char *watch_path(struct watch *w)
{
    char timeout[32];
    char *path = strdup(w->opts.path);

    snprintf(timeout, sizeof(timeout), "%ld", w->opts.timeout_s);
    if (!path || kube_append_query(&path, "watch", "1") < 0 ||
        kube_append_query(&path, "resourceVersion", w->resource_version) < 0 ||
        kube_append_query(&path, "allowWatchBookmarks", "true") < 0 ||
        kube_append_query(&path, "timeoutSeconds", timeout) < 0)
        goto out_free_path;
    if (w->opts.label_selector &&
        kube_append_query(&path, "labelSelector", w->opts.label_selector) < 0)
        goto out_free_path;
    if (w->opts.field_selector &&
        kube_append_query(&path, "fieldSelector", w->opts.field_selector) < 0)
        goto out_free_path;
    return path;
out_free_path:
    free(path);
    return NULL;
}

/*
 * Streams one watch request.  Returns 0 when the server ended the stream,
 * -ESTALE when the resourceVersion expired, or another negative errno, or
 * the non-zero value of on_event.
 */
static int watch_once(struct watch *w)
{
    struct kube_stream_options stream = {
        .on_data = on_stream_data,
        .user = w,
        .stop = w->opts.stop,
        .timeout_ms = (w->opts.timeout_s + STREAM_DEADLINE_SLACK_S) * 1000,
        .idle_timeout_s = w->opts.idle_timeout_s,
    };
    struct kube_response resp;
    char *path = watch_path(w);
    int rc;

    if (!path)
        return -ENOMEM;
    watch_decoder_reset(&w->decoder);
    w->event_rc = 0;
    w->streams++;
    rc = kube_stream(w->client, path, &stream, &resp);
    w->last_status = resp.status;
    if (w->event_rc != 0)
        rc = w->event_rc;
    else if (resp.status == 410)
        rc = -ESTALE;
    if (rc < 0 && rc != -ESTALE && rc != -ECANCELED)
        KLOG_ERROR("Watch failed", resp.message ? resp.message : strerror(-rc),
                   "path", w->opts.path, NULL);
    kube_response_release(&resp);
    free(path);
    return rc;
}

/* Sleeps up to ms milliseconds, waking early when the stop flag is set. */
static void backoff_sleep(const struct watch *w, long ms)
{
    while (ms > 0 && !(w->opts.stop && atomic_load(w->opts.stop))) {
        long slice = ms < 100 ? ms : 100;
        struct timespec ts = {.tv_nsec = slice * 1000000L};

        nanosleep(&ts, NULL);
        ms -= slice;
    }
}

/* True for errors that retrying cannot fix. */
static bool is_fatal(int rc, long last_status)
{
    if (rc > 0 || rc == -EMSGSIZE || rc == -ENOMEM)
        return true;
    return last_status >= 400 && last_status < 500 && last_status != 408 &&
           last_status != 410 && last_status != 429;
}

static bool stopped(const struct watch *w)
{
    return w->opts.stop && atomic_load(w->opts.stop);
}

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long next_backoff(long ms)
{
    return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
}

int watch_run(struct watch *w)
{
    long backoff_ms = BACKOFF_INITIAL_MS;
    bool need_list = true;
    int failures = 0, rc = 0;

    while (!stopped(w)) {
        if (need_list) {
            rc = relist(w);
            need_list = rc != 0;
        } else {
            double started = now_seconds();

            rc = watch_once(w);
            /* Back off when the server ends streams at once, so the loop cannot
             * spin. */
            if (rc == 0 && now_seconds() - started < 1.0) {
                backoff_sleep(w, backoff_ms);
                backoff_ms = next_backoff(backoff_ms);
                continue;
            }
            if (rc == -ESTALE) {
                KLOG_INFO(2, "Watch expired", "path", w->opts.path, NULL);
                need_list = true;
                continue;
            }
        }
        if (rc == -ECANCELED && stopped(w))
            break;
        if (rc == 0) {
            failures = 0;
            backoff_ms = BACKOFF_INITIAL_MS;
            continue;
        }
        if (is_fatal(rc, w->last_status))
            return rc;
        failures++;
        if (w->opts.max_failures > 0 && failures >= w->opts.max_failures)
            return rc;
        backoff_sleep(w, backoff_ms);
        backoff_ms = next_backoff(backoff_ms);
    }
    return 0;
}
