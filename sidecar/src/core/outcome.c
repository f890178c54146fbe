/*
 * outcome: name tables of wr_outcome and wr_reason. See outcome.h.
 */
#include "outcome.h"

#include <stdio.h>
#include <string.h>

const char *wr_outcome_name(wr_outcome o)
{
    switch (o) {
    case WR_OUT_OK:
        return "ok";
    case WR_OUT_ERROR:
        return "error";
    case WR_OUT_TIMEOUT:
        return "timeout";
    case WR_OUT_RETRY:
        return "retry";
    case WR_OUT_REJECT:
        return "rejected";
    case WR_OUT_INVALID:
        return "invalid";
    }
    return "error";
}

static const char *const reason_names[WR_RS_COUNT] = {
    [WR_RS_NONE] = "",
    [WR_RS_MISSING_ID] = "missing-message-id",
    [WR_RS_EMPTY_BODY] = "empty-body",
    [WR_RS_TOO_LARGE] = "body-too-large",
    [WR_RS_INVALID_JSON] = "invalid-json",
    [WR_RS_ENCODING] = "unsupported-content-encoding",
    [WR_RS_MISSING_KEY] = "missing-idempotency-key",
    [WR_RS_SCHEMA_INVALID] = "schema-invalid",
    [WR_RS_VERSION_UNKNOWN] = "version-unknown",
    [WR_RS_UNKNOWN_TYPE] = "unknown-type",
    [WR_RS_UPCAST_FAILED] = "upcast-failed",
    [WR_RS_INVALID_CLOUDEVENT] = "invalid-cloudevent",
    [WR_RS_HANDLER_ERROR] = "handler-error",
    [WR_RS_TIMEOUT] = "timeout",
    [WR_RS_OUT_OF_MEMORY] = "out-of-memory",
    [WR_RS_STACK_OVERFLOW] = "stack-overflow",
    [WR_RS_RETRY_REQUESTED] = "retry-requested",
    [WR_RS_REJECTED] = "rejected",
    [WR_RS_CRASHED] = "crashed",
    [WR_RS_STORE_REFUSED] = "store-refused",
    [WR_RS_OTHER] = "other",
};

const char *wr_reason_name(wr_reason r)
{
    return r >= 0 && r < WR_RS_COUNT ? reason_names[r] : "other";
}

wr_reason wr_reason_parse(const char *name)
{
    if (name == NULL || name[0] == '\0') {
        return WR_RS_NONE;
    }
    for (int r = 1; r < WR_RS_COUNT; r++) {
        if (strcmp(reason_names[r], name) == 0) {
            return (wr_reason)r;
        }
    }
    return WR_RS_OTHER;
}

int wr_reason_lookup(const char *name, wr_reason *out)
{
    for (int r = 1; name != NULL && r < WR_RS_COUNT; r++) {
        if (strcmp(reason_names[r], name) == 0) {
            *out = (wr_reason)r;
            return 0;
        }
    }
    return -1;
}

void wr_reason_list(const char *sep, char *out, size_t cap)
{
    size_t n = 0;
    if (cap == 0) {
        return;
    }
    out[0] = '\0';
    for (int r = 1; r < WR_RS_COUNT && n < cap; r++) {
        int w = snprintf(out + n, cap - n, "%s%s", r > 1 ? sep : "", reason_names[r]);
        if (w < 0) {
            break;
        }
        n += (size_t)w;
    }
}
