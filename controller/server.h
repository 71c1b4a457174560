/*
 * The controller's HTTP endpoints for Kubernetes probes and Prometheus:
 * /healthz (the process serves), /readyz (the caches have synced, or this
 * replica is a standby waiting for the Lease), and /metrics.
 */
#ifndef CONTROLLER_SERVER_H
#define CONTROLLER_SERVER_H

#include "controller/controller.h"
#include "controller/leader.h"

struct server {
    struct MHD_Daemon *daemon;
    struct controller *controller; /* borrowed */
    struct leader *leader;         /* borrowed; NULL without election */
    int fd;
};

/*
 * Serves on listen ("ADDR:PORT").  Returns 0, or a negative errno after
 * logging why.
 */
int server_start(struct server *s, const char *listen,
                 struct controller *controller, struct leader *leader);

void server_stop(struct server *s);

/* Writes the Prometheus text into a new buffer the caller frees. */
char *server_metrics_text(struct controller *c, struct leader *leader);

#endif
