/*
 * status: what keeps a subscription from consuming, and its lag, as words.
 * See status.h.
 */
#include "status.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

static void add_why(wr_status_verdict *v, int pauses, const char *fmt, const char *a, const char *b)
{
    if (v->n < (int)(sizeof(v->why) / sizeof(v->why[0]))) {
        snprintf(v->why[v->n++], sizeof(v->why[0]), fmt, a, b);
    }
    v->paused |= pauses;
}

void wr_status_why(const char *name, const wr_sub_figures *f, const wr_proc_figures *p,
                   const wr_brk_status *b, int64_t now_ms, wr_status_verdict *out)
{
    memset(out, 0, sizeof(*out));
    (void)now_ms;
    if (!p->started) {
        add_why(out, 1, "starting: handlers not loaded yet%s%s", "", "");
    }
    if (p->draining) {
        add_why(out, 1, "draining: shutting down%s%s", "", "");
    }
    if (!p->redis_up) {
        add_why(out, 1, "paused: Redis not answering (%.200s)%s", p->redis_error, "");
    }
    if (b != NULL && b->state == WR_BRK_OPEN) {
        char since[32], probe[32];
        wr_format_time(b->opened_at_ms, since, sizeof(since));
        wr_format_time(b->probe_at_ms, probe, sizeof(probe));
        char head[200];
        snprintf(head, sizeof(head), "consumption paused: breaker %s open since %s", name, since);
        add_why(out, 1, "%s, next probe at %s", head, probe);
    } else if (b != NULL && b->state == WR_BRK_HALF_OPEN) {
        add_why(out, 0, "breaker %s half-open: a few probe messages go through%s", name, "");
    }
    if (f->blocked > 0) {
        add_why(out, 1, "paused: the broker blocks publishes (memory or disk alarm)%s%s", "", "");
    }
    /* workers close their broker connections on purpose while Redis is away:
     * then that, not the broker, is the reason */
    if (p->redis_up && p->started && f->connected < f->workers) {
        char n[64];
        snprintf(n, sizeof(n), "%d of %d", f->workers - f->connected, f->workers);
        add_why(out, f->connected == 0, "broker: %s workers not connected%s", n, "");
    }
}

/* SECONDS as "45 s", "12 min" or "3.5 h". */
static void span_text(double seconds, char *out, size_t cap)
{
    if (seconds < 120) {
        snprintf(out, cap, "%.0f s", seconds);
    } else if (seconds < 7200) {
        snprintf(out, cap, "%.0f min", seconds / 60);
    } else {
        snprintf(out, cap, "%.1f h", seconds / 3600);
    }
}

void wr_status_lag(const wr_lag_sample *s, int n, long held, int64_t newest_ts_ms, long consumers,
                   int connected, double window_ms, int64_t now_ms, wr_status_lag_t *out)
{
    memset(out, 0, sizeof(*out));
    out->ready = n > 0 ? s[n - 1].ready : -1;
    out->held = held < 0 ? 0 : held;
    out->other_consumers = consumers > connected;
    if (out->ready < 0) {
        out->oldest_max_s = -1;
        snprintf(out->verdict, sizeof(out->verdict), "queue not read yet");
        return;
    }
    if (out->ready == 0) {
        out->oldest_max_s = 0;
    } else if (newest_ts_ms <= 0) {
        out->oldest_max_s = -1;
    } else {
        out->oldest_max_s = now_ms > newest_ts_ms ? (double)(now_ms - newest_ts_ms) / 1000 : 0;
    }
    /* the base: the newest reading at least WINDOW_MS before the last one */
    const wr_lag_sample *last = &s[n - 1], *base = &s[0];
    for (int i = n - 2; i >= 0; i--) {
        if (last->mono_ms - s[i].mono_ms >= window_ms) {
            base = &s[i];
            break;
        }
    }
    double dt = (last->mono_ms - base->mono_ms) / 1000;
    if (n < 2 || dt <= 0) {
        snprintf(out->verdict, sizeof(out->verdict), "measuring: one reading of the queue so far");
        return;
    }
    out->window_s = dt;
    double arrived = (double)(last->ready - base->ready) + (double)(last->held - base->held) +
                     (double)(last->finished - base->finished);
    out->in_per_s = arrived > 0 ? arrived / dt : 0;
    out->out_per_s = (double)(last->finished - base->finished) / dt;
    double net = out->out_per_s - out->in_per_s; /* > 0: the backlog shrinks */
    char w[32];
    span_text(dt, w, sizeof(w));
    /* less than one message over the window is no trend */
    double eps = 1.0 / dt;
    if (out->ready == 0) {
        snprintf(out->verdict, sizeof(out->verdict), "caught up: nothing waiting");
    } else if (out->out_per_s == 0 && out->ready > 0) {
        snprintf(out->verdict, sizeof(out->verdict),
                 "stuck: %ld waiting, none finished in the last %s", out->ready, w);
    } else if (net > eps && out->ready > 0) {
        char eta[32];
        span_text((double)out->ready / net, eta, sizeof(eta));
        snprintf(out->verdict, sizeof(out->verdict),
                 "catching up: the backlog falls %.1f/s, empty in about %s", net, eta);
    } else if (-net > eps) {
        snprintf(out->verdict, sizeof(out->verdict), "falling behind: the backlog grows %.1f/s",
                 -net);
    } else {
        snprintf(out->verdict, sizeof(out->verdict), "keeping up: as many out as in");
    }
}
