/*
 * statusjson: the status of every subscription as one JSON object, what GET
 * /status serves (http.h) and `warren status` prints (statusview.h). Per
 * subscription: consuming or paused and why (status.h: wr_status_why, the one
 * decision /readyz shares), workers, queue depths, lag over the last minute
 * (wr_status_lag), outcomes and DLQ copies by reason since start, the
 * breaker and its last failures, the handler version running against the
 * file on disk, the contracts; then the reload counts. Reads the registry
 * (metrics.h), the breakers and the handler files.
 */
#ifndef WR_STATUSJSON_H
#define WR_STATUSJSON_H

#include <jansson.h>

#include "metrics.h"

/* The status of every subscription as a new JSON object (caller decrefs). */
json_t *wr_status_json(wr_metrics *m);

#endif
