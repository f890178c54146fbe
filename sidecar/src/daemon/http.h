/*
 * http: the sidecar's HTTP endpoint, for Prometheus and Kubernetes.
 *
 *   GET /metrics  the Prometheus text format (metrics.h)
 *   GET /healthz  200 "ok" while no worker is stuck, else 503 naming it
 *   GET /readyz   200 "ready" when started, not draining, Redis answering and
 *                 every worker connected to the broker; else 503 with the
 *                 failing checks, one per line
 *   GET /status   JSON: per subscription, consuming or paused and why, queue
 *                 depths, DLQ copies by reason, handler version, last
 *                 failures (status.h)
 *
 * Served by libmicrohttpd on its own thread, off the workers' hot path; every
 * answer is computed from the registry at request time. Other paths get 404,
 * other methods 405.
 */
#ifndef WR_HTTP_H
#define WR_HTTP_H

#include <stddef.h>

#include "metrics.h"

typedef struct wr_http wr_http;

/* Listen on HOST:PORT (PORT 0: any free port). Returns NULL with ERR. */
wr_http *wr_http_start(const char *host, int port, wr_metrics *m, char *err, size_t errcap);

/* The port bound (the one chosen when 0 was asked for). */
int wr_http_port(const wr_http *h);

void wr_http_stop(wr_http *h);

#endif
