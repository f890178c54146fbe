/*
 * status: what each subscription is doing now and why, for the operator.
 *
 *   GET /status     (http.h) one JSON object, built here from the registry
 *   warren status   fetches it from the running sidecar and prints it
 *
 * Per subscription: consuming or paused and every reason why (its breaker
 * open or without a probe slot, Redis not answering, the broker blocking
 * publishes, draining, workers not connected), its queue depths (main,
 * delay tiers, wait, DLQ), what it did since start (outcomes, DLQ copies by
 * reason code), the handler version running and whether the file on disk
 * differs (a refused reload), and the last failures.
 *
 * wr_status_why is the one decision (pure: figures in, words out), so the
 * JSON, the text and /readyz say the same thing. wr_status_json reads the
 * registry, the breakers and the handler files; wr_status_render prints the
 * JSON for a terminal.
 */
#ifndef WR_STATUS_H
#define WR_STATUS_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "breakers.h"
#include "metrics.h"

/* What keeps a subscription from consuming, as words. */
typedef struct {
    int paused;       /* 1: it takes no messages now */
    int n;            /* reasons below */
    char why[5][512]; /* "breaker payments open since T, next probe at T", ... */
} wr_status_verdict;

/*
 * Decide for subscription NAME from its figures F, the process's P and its
 * breaker B (NULL: none) at wall clock NOW_MS. Paused when any of: not
 * started, draining, Redis not answering, its breaker open (or half-open with
 * every probe slot taken), the broker blocking publishes, no worker
 * connected. Reasons are in that order.
 */
void wr_status_why(const char *name, const wr_sub_figures *f, const wr_proc_figures *p,
                   const wr_brk_status *b, int64_t now_ms, wr_status_verdict *out);

/* The status of every subscription as a new JSON object (caller decrefs). */
json_t *wr_status_json(wr_metrics *m);

/* Print STATUS (from wr_status_json, possibly fetched) readably to FP. */
void wr_status_render(FILE *fp, const json_t *status);

/* The status of the sidecar running with CONFIG (its http.listen; a fixed
 * port is needed), or at URL when not NULL: GET /status with libcurl (5 s at
 * most). Returns the parsed JSON (caller decrefs), or NULL with ERR. */
json_t *wr_status_fetch(const char *config, const char *url, char *err, size_t cap);

/* `warren status -c FILE [--url URL] [--json]`. */
int wr_status_main(int argc, char **argv);
extern const char wr_status_usage[];

#endif
