/*
 * statusview: fetch a running sidecar's /status and print it. See statusview.h.
 */
#include "statusview.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

const char wr_status_usage[] =
    "  status -c FILE [--url URL] [--json] [--no-dlq | --dlq-max N]\n"
    "                       what every subscription is doing now: consuming or paused\n"
    "                       and why, queue depths, lag (ready and held messages, age\n"
    "                       of the oldest waiting, rates in and out over the last\n"
    "                       minute), what is in each DLQ now by reason (read from the\n"
    "                       broker as dlq list --group-by reason does; with -c, unless\n"
    "                       --no-dlq; the first N messages of each, default 10000),\n"
    "                       DLQ copies by reason since start, handler\n"
    "                       version (and whether the file on disk differs), last\n"
    "                       failures; read from the running sidecar's /status (URL:\n"
    "                       default http://127.0.0.1:PORT/status from http.listen)\n";

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

static void put_depth(FILE *fp, const char *name, const json_t *q)
{
    const json_t *d = json_object_get(q, name);
    if (json_is_integer(d)) {
        fprintf(fp, "  %s %" JSON_INTEGER_FORMAT, name, json_integer_value(d));
    } else {
        fprintf(fp, "  %s -", name); /* no such queue, or not read yet */
    }
}

static double num(const json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

static json_int_t count(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* "  lag: 120 ready, 5 held; oldest waiting at most 42 s; over the last 60 s
 *   in 3.0/s, out 5.0/s: catching up: ..." */
static void put_lag(FILE *fp, const json_t *lag)
{
    const json_t *ready = json_object_get(lag, "ready");
    if (!json_is_integer(ready)) {
        fprintf(fp, "  lag: %s\n", str(lag, "verdict"));
        return;
    }
    fprintf(fp, "  lag: %" JSON_INTEGER_FORMAT " ready, %" JSON_INTEGER_FORMAT " held",
            json_integer_value(ready), count(lag, "held"));
    const json_t *age = json_object_get(lag, "oldest_waiting_at_most_s");
    if (json_integer_value(ready) == 0) {
        /* nothing waits: no age to give */
    } else if (json_is_number(age)) {
        fprintf(fp, "; oldest waiting at most %.0f s old", json_number_value(age));
    } else {
        fprintf(fp, "; age of the oldest waiting unknown (no AMQP timestamp)");
    }
    fputc('\n', fp);
    if (num(lag, "window_s") > 0) {
        fprintf(fp, "    over the last %.0f s: in %.1f/s, out %.1f/s%s\n", num(lag, "window_s"),
                num(lag, "in_per_s"), num(lag, "out_per_s"),
                json_is_true(json_object_get(lag, "other_consumers"))
                    ? " (this process's workers only: the queue has other consumers)"
                    : "");
    }
    fprintf(fp, "    %s\n", str(lag, "verdict"));
}

void wr_status_render(FILE *fp, const json_t *st)
{
    const json_t *redis = json_object_get(st, "redis");
    fprintf(fp, "warren %s at %s; Redis %s%s%s\n", str(st, "warren"), str(st, "now"),
            json_is_true(json_object_get(redis, "up")) ? "answering" : "NOT answering: ",
            json_is_true(json_object_get(redis, "up")) ? "" : str(redis, "error"),
            json_is_true(json_object_get(st, "draining")) ? "; draining" : "");
    size_t i, k;
    json_t *s, *v;
    json_array_foreach(json_object_get(st, "subscriptions"), i, s)
    {
        fprintf(fp, "\n%s (%s): %s\n", str(s, "name"), str(s, "queue"), str(s, "state"));
        json_array_foreach(json_object_get(s, "why"), k, v)
        {
            fprintf(fp, "  - %s\n", json_string_value(v));
        }
        const json_t *q = json_object_get(s, "queues");
        fprintf(fp, " ");
        put_depth(fp, "main", q);
        put_depth(fp, "retry", q);
        put_depth(fp, "wait", q);
        put_depth(fp, "dlq", q);
        const json_t *w = json_object_get(s, "workers");
        fprintf(fp,
                "  workers %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT
                " connected, %" JSON_INTEGER_FORMAT " in flight\n",
                count(w, "connected"), count(w, "total"), count(w, "in_flight"));
        const json_t *lag = json_object_get(s, "lag");
        if (lag != NULL) {
            put_lag(fp, lag);
        }
        const json_t *now = json_object_get(s, "dlq_now_by_reason");
        if (json_is_object(now)) {
            fprintf(fp, "  in the DLQ now (by reason, ids/messages):");
            const char *key;
            json_object_foreach((json_t *)now, key, v)
            {
                fprintf(fp, " %s %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT, key,
                        count(v, "ids"), count(v, "messages"));
            }
            const json_t *part = json_object_get(s, "dlq_now_partial");
            if (part != NULL) {
                fprintf(fp,
                        " (the first %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT
                        " messages: dlq list --group-by reason counts them all)",
                        count(part, "read"), count(part, "held"));
            }
            fprintf(fp, "%s\n", json_object_size(now) == 0 ? " empty" : "");
        } else if (json_is_string(now)) {
            fprintf(fp, "  in the DLQ now: not read (%s)\n", json_string_value(now));
        }
        const json_t *dl = json_object_get(s, "dead_letters_by_reason");
        if (json_object_size(dl) > 0) {
            fprintf(fp, "  dead-lettered since start (copies):");
            const char *key;
            json_object_foreach((json_t *)dl, key, v)
            {
                fprintf(fp, " %s %" JSON_INTEGER_FORMAT, key, json_integer_value(v));
            }
            fputc('\n', fp);
        }
        const json_t *b = json_object_get(s, "breaker");
        if (b != NULL) {
            fprintf(fp, "  breaker %s (counts %s, opened %" JSON_INTEGER_FORMAT " time(s))\n",
                    str(b, "state"), str(b, "counts"), count(b, "opened_count"));
        }
        const json_t *h = json_object_get(s, "handler");
        fprintf(fp, "  handler %s version %s", str(h, "path"), str(h, "version"));
        if (json_is_true(json_object_get(h, "differs"))) {
            fprintf(fp, "; the file on disk is %s (not running: a refused reload?)",
                    str(h, "on_disk"));
        }
        fputc('\n', fp);
        const json_t *ct = json_object_get(s, "contracts");
        if (ct != NULL) {
            fprintf(fp, "  contracts %s version %s (%" JSON_INTEGER_FORMAT " event types)\n",
                    str(ct, "path"), str(ct, "version"), count(ct, "event_types"));
        }
        json_array_foreach(json_object_get(s, "last_failures"), k, v)
        {
            fprintf(fp, "  %s %s %s: %s%s\n", k == 0 ? "last failures:" : "              ",
                    str(v, "at"), str(v, "message_id")[0] ? str(v, "message_id") : "-",
                    str(v, "error"),
                    json_is_true(json_object_get(v, "counted_by_breaker")) ? "" : " (not counted)");
        }
    }
}

static size_t collect(char *data, size_t size, size_t n, void *ud)
{
    FILE *fp = ud;
    return fwrite(data, size, n, fp);
}

json_t *wr_status_fetch(const char *config, const char *url, char *err, size_t cap)
{
    char where[300];
    if (url == NULL) {
        wr_config_errors errs = {0};
        wr_config *cfg = wr_config_load(config, &errs);
        if (cfg == NULL) {
            snprintf(err, cap, "%s", errs.count > 0 ? errs.lines[0] : "config not loaded");
            wr_config_errors_free(&errs);
            return NULL;
        }
        char host[64];
        int port = 0;
        const char *why = NULL;
        int ok = cfg->http_listen != NULL &&
                 wr_listen_parse(cfg->http_listen, host, sizeof(host), &port, &why) == 0 &&
                 port > 0;
        wr_config_free(cfg);
        if (!ok) {
            snprintf(err, cap,
                     "%s has no fixed http.listen port: give --url http://HOST:PORT/status",
                     config);
            return NULL;
        }
        /* a wildcard listener answers on loopback */
        snprintf(where, sizeof(where), "http://%s:%d/status",
                 strcmp(host, "0.0.0.0") == 0 ? "127.0.0.1" : host, port);
        url = where;
    }
    char *body = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&body, &len);
    CURL *c = curl_easy_init();
    if (fp == NULL || c == NULL) {
        snprintf(err, cap, "out of memory");
        if (fp != NULL) {
            fclose(fp);
        }
        free(body);
        curl_easy_cleanup(c);
        return NULL;
    }
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, fp);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    fclose(fp);
    json_t *st = NULL;
    if (rc != CURLE_OK) {
        snprintf(err, cap, "%s: %s (is warren running?)", url,
                 cerr[0] ? cerr : curl_easy_strerror(rc));
    } else if (code != 200 || (st = json_loadb(body, len, 0, NULL)) == NULL) {
        snprintf(err, cap, "%s answered %ld, not a status", url, code);
    }
    free(body);
    return st;
}

/*
 * Put what is in each subscription's DLQ now, by reason, into STATUS as the
 * subscription's "dlq_now_by_reason": read from the broker with CONFIG as
 * `dlq list --group-by reason` reads it, or a string saying why not (no
 * CONFIG, the DLQ not readable). At most the first MAX messages of each: when a
 * DLQ holds more, "dlq_now_partial" says how many were read of how many.
 */
