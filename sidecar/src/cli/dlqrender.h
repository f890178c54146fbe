/*
 * dlqrender: what `warren dlq` prints about DLQ messages (dlqread.h), as
 * text for people and as JSON for scripts. Everything goes to stdout (the
 * report) except the closing counts of a list, which go to stderr. Bytes
 * that are not UTF-8 become '?' in JSON strings; control characters become
 * spaces in text lines, so one message is one line.
 */
#ifndef WR_DLQRENDER_H
#define WR_DLQRENDER_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"
#include "dlqread.h"

/* Where a list's output goes. */
typedef struct {
    int json;     /* JSON instead of text */
    json_t *sink; /* a list of every subscription: each one's JSON is kept here under its
                     name instead of printed (NULL: print) */
} wr_dlqrender_out;

/* A new JSON string of B; bytes that are not UTF-8 become '?'. */
json_t *wr_dlqrender_bytes(amqp_bytes_t b);

/* B on one line of FP (control characters as spaces), or "-" when empty. */
void wr_dlqrender_field(FILE *fp, amqp_bytes_t b);

/* M's summary (handle, reason, error class, attempts, COPIES, failures,
 * route, error, body size) as a new JSON object. */
json_t *wr_dlqrender_summary_json(const wr_dlqread_msg *m, size_t copies);

/* M's summary as one line of FP (the error cut to 80 bytes). */
void wr_dlqrender_summary_line(FILE *fp, const wr_dlqread_msg *m, size_t copies);

/* Every property and header of M and its body (hex head when not UTF-8), as
 * a new JSON object. */
json_t *wr_dlqrender_show_json(const wr_dlqread_msg *m, size_t copies);

/* The same for people on stdout, headed by M's handle in DLQ. */
void wr_dlqrender_show_text(const wr_dlqread_msg *m, size_t copies, const char *dlq);

/* Print J (indented, ASCII) on stdout and decref it. 0, or 1 when it failed. */
int wr_dlqrender_print_json(json_t *j);

/* A list's JSON J of SUB: printed, or kept in O->sink under SUB's name.
 * Takes J. 0, or 1 when it failed. */
int wr_dlqrender_emit(const wr_dlqrender_out *o, const wr_subscription *sub, json_t *j);

/*
 * Count the selected groups SEL[0..NSEL) of R per key of BY ("reason": the
 * reason code, or "error": the error's first line cut to 120 bytes): a new
 * JSON object key -> {key, ids, messages}, or NULL when out of memory.
 * *WIDTH (when not NULL) grows to the longest key.
 */
json_t *wr_dlqrender_count_groups(const char *by, const wr_dlqreader *r, const size_t *sel,
                                  size_t nsel, size_t *width);

/*
 * `dlq list --group-by BY`: one row per reason code (or error text) with the
 * count of selected ids and of their copies, most ids first, as O says.
 * Returns the exit status.
 */
int wr_dlqrender_groups(const wr_dlqrender_out *o, const char *by, const wr_subscription *sub,
                        const wr_dlqreader *r, const size_t *sel, size_t nsel);

#endif
