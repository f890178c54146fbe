/*
 * statusview: the operator's side of /status. wr_status_fetch GETs it from
 * the running sidecar (the config's http.listen, or a URL), wr_status_render
 * prints it for a terminal (consuming or paused and why, depths, lag, DLQ
 * copies by reason, handler version, last failures); wr_status_usage is
 * `warren status`'s usage text (statuscmd.h runs the command, tracecmd.h
 * reads the status too).
 */
#ifndef WR_STATUSVIEW_H
#define WR_STATUSVIEW_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

/* Print STATUS (statusjson.h's object, fetched) readably to FP. */
void wr_status_render(FILE *fp, const json_t *status);

/* The status of the sidecar running with CONFIG (its http.listen; a fixed
 * port is needed), or at URL when not NULL: GET /status with libcurl (5 s at
 * most). Returns the parsed JSON (caller decrefs), or NULL with ERR. */
json_t *wr_status_fetch(const char *config, const char *url, char *err, size_t cap);

/* `warren status`'s usage lines. */
extern const char wr_status_usage[];

#endif
