/*
 * The worker's HTTP API, served with libmicrohttpd from a small thread pool.
 *
 * Endpoint and field names are those of the earlier Python (Flask) version
 * of this tool, so scripts written for it keep working.  That version had
 * GET /, POST /start, POST /stop, GET /status, GET /logs, POST /clear and
 * GET /health.  This one adds /healthz and /readyz for Kubernetes probes and
 * /metrics in the Prometheus text format.  Every error is a JSON object
 * {"error": ..., "field": ..., "status": ...}.
 */
#ifndef WORKER_API_H
#define WORKER_API_H

#include <stddef.h>

#include "worker/engine.h"

/* The largest request body accepted; more gets 413. */
#define API_MAX_BODY_BYTES ((size_t)64 * 1024)

struct api {
    struct MHD_Daemon *daemon;
    struct engine *engine;
};

/*
 * Serves the API on an already listening socket with threads workers.
 * Returns 0, or -EIO when libmicrohttpd cannot start (it logs why).
 * The socket stays owned by the caller.
 */
int api_start(struct api *api, struct engine *engine, int listen_fd,
              unsigned threads);

/* Stops serving and waits for the request threads.  Safe when not started. */
void api_stop(struct api *api);

#endif
