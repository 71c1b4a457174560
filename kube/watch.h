/*
 * List-then-watch loop over one collection, keeping a struct store in step
 * with the server (what client-go calls a reflector feeding an informer).
 *
 * watch_run() lists the collection, then watches from the list's
 * resourceVersion with allowWatchBookmarks and timeoutSeconds, and watches
 * again from the last seen resourceVersion whenever a stream ends.  When the
 * server returns 410 Gone, as an HTTP status or as an ERROR event whose
 * Status has code 410, the loop lists again and replaces the store,
 * reporting a DELETED event for every object that vanished in between.
 *
 * A dead connection cannot hang the loop: TCP keepalive, TCP_USER_TIMEOUT,
 * and an idle deadline (no byte for idle_timeout_s) fail the stream, which
 * is then retried with backoff.
 */
#ifndef KUBE_WATCH_H
#define KUBE_WATCH_H

#include <json-c/json.h>
#include <stdatomic.h>
#include <stddef.h>

#include "kube/kube.h"
#include "kube/store.h"

/*
 * Splits a watch stream into events however the bytes arrive: a json-c
 * tokener parses incrementally across chunk boundaries, so no line
 * buffering is needed.  An event whose text grows past max_event_bytes is
 * an error instead of unbounded growth.
 */
struct watch_decoder {
    struct json_tokener *tokener;
    size_t max_event_bytes;
    size_t pending; /* bytes of the current event fed so far */
    /* Receives each event object (borrowed); non-zero stops feeding. */
    int (*on_event)(struct json_object *event, void *user);
    void *user;
};

/* Returns 0 or -ENOMEM.  Release with watch_decoder_release(). */
int watch_decoder_init(struct watch_decoder *decoder, size_t max_event_bytes,
                       int (*on_event)(struct json_object *event, void *user),
                       void *user);

void watch_decoder_release(struct watch_decoder *decoder);

/*
 * Feeds len bytes.  Returns 0, -EMSGSIZE when one event exceeds the cap,
 * -EBADMSG for invalid JSON, or the first non-zero on_event() value.  After
 * an error the decoder must be reset with watch_decoder_reset().
 */
int watch_decoder_feed(struct watch_decoder *decoder, const char *data,
                       size_t len);

/* Drops any partial event, as at the start of a new stream. */
void watch_decoder_reset(struct watch_decoder *decoder);

enum watch_event_type {
    WATCH_ADDED,
    WATCH_MODIFIED,
    WATCH_DELETED,
};

/* Returns "ADDED", "MODIFIED" or "DELETED". */
const char *watch_event_name(enum watch_event_type type);

struct watch_options {
    const char *path; /* collection, e.g. "/api/v1/namespaces/x/pods" */
    const char *label_selector; /* NULL for all */
    const char *field_selector; /* NULL for all */
    long timeout_s;             /* server-side timeoutSeconds; 0 for 300 */
    long idle_timeout_s;        /* no byte for this long fails; 0 for 90 */
    size_t max_event_bytes;     /* 0 for 16 MiB */
    long page_limit;            /* list page size; 0 for 500 */
    int max_failures; /* consecutive failures before giving up; 0: never */
    const atomic_bool *stop; /* watch_run() returns 0 soon after it is set */
    /*
     * Called for every change to the store, after the store was updated.
     * obj is borrowed; for DELETED it is the last known state.  A non-zero
     * return stops watch_run(), which returns that value.
     */
    int (*on_event)(enum watch_event_type type, struct json_object *obj,
                    void *user);
    /* Called after each list was applied to the store, or NULL. */
    void (*on_synced)(unsigned long lists, void *user);
    void *user;
};

struct watch {
    struct kube_client *client; /* borrowed */
    struct watch_options opts;
    struct store store; /* readable from other threads; see kube/store.h */
    struct watch_decoder decoder;
    char *resource_version; /* last seen, NULL before the first list */
    int event_rc;           /* why event handling stopped a stream */
    long last_status;       /* HTTP status of the last list or watch */
    unsigned long lists;    /* lists done, the first one included */
    unsigned long streams;  /* watch requests sent */
    unsigned long events;   /* events handed to on_event */
};

/*
 * Prepares w for opts (copied; the strings it points to must outlive w).
 * Returns 0 or -ENOMEM.  The caller releases w with watch_release().
 */
int watch_init(struct watch *w, struct kube_client *client,
               const struct watch_options *opts);

void watch_release(struct watch *w);

/*
 * Runs the list-watch loop until *opts.stop is set (returns 0), on_event
 * returns non-zero (returns that), an event exceeds max_event_bytes
 * (-EMSGSIZE), the server rejects the request with a 4xx other than 408,
 * 410 and 429 (its errno), or max_failures consecutive failures happened
 * (the last one's errno).  Other failures are retried with backoff from
 * 0.5 s to 30 s.
 */
int watch_run(struct watch *w);

#endif
