/*
 * Unit tests for metrics.c: histogram buckets, the text exposition and the
 * health verdicts, on a registry built from a hand-made config (no servers).
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "log.h"
#include "metrics.h"

static wr_subscription subs[2];
static wr_config cfg;

static void setup(void)
{
    subs[0] = (wr_subscription){.name = "orders", .concurrency = 2, .handler_timeout_ms = 5000};
    subs[0].retry.max_attempts = 3;
    subs[1] = (wr_subscription){.name = "payments", .concurrency = 1, .handler_timeout_ms = 1000};
    subs[1].retry.max_attempts = 1;
    cfg = (wr_config){.subs = subs, .sub_count = 2, .redis_timeout_ms = 2000};
}

/* Render M into a malloc'd string. (noinline: GCC 12 mistakes the buffer that
 * open_memstream fills for a pointer to the local that holds it.) */
__attribute__((noinline)) static char *render(wr_metrics *m)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    wr_metrics_render(m, fp);
    fclose(fp);
    return buf;
}

static int has(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p != NULL; p = strstr(p + 1, line)) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0')) {
            return 1;
        }
    }
    return 0;
}

#define CHECK_LINE(text, line)                                                                     \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!has(text, line)) {                                                                    \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: missing line: %s\n", __FILE__, __LINE__, line);                \
        }                                                                                          \
    } while (0)

static void test_hist(void)
{
    wr_hist h;
    memset(&h, 0, sizeof(h));
    wr_hist_observe(&h, 0.00005); /* below the first bound */
    wr_hist_observe(&h, 0.0001);  /* on a bound: that bucket (le is inclusive) */
    wr_hist_observe(&h, 0.003);
    wr_hist_observe(&h, 100); /* past the last bound: +Inf */
    CHECK_INT(h.bucket[0], 2);
    CHECK_INT(h.bucket[5], 1); /* 0.005 */
    CHECK_INT(h.bucket[WR_HIST_BUCKETS], 1);
    CHECK_INT(h.count, 4);
    CHECK_INT(h.sum_ns, 50000 + 100000 + 3000000 + 100000000000ULL);
}

static void test_render(void)
{
    wr_metrics *m = wr_metrics_create(&cfg);
    CHECK(m != NULL);
    if (m == NULL) {
        return;
    }
    wr_wstats *a = wr_metrics_worker(m, 0, 0), *b = wr_metrics_worker(m, 0, 1);
    wr_wstats *c = wr_metrics_worker(m, 1, 0);
    CHECK(a != NULL && b != NULL && c != NULL && a != b && b != c);
    CHECK(wr_metrics_worker(m, 1, 1) == NULL);
    wr_stat_add(&a->received, 5);
    wr_stat_add(&b->received, 7);
    wr_stat_add(&a->outcomes[WR_MO_OK], 4);
    wr_stat_add(&b->outcomes[WR_MO_OK], 6);
    wr_stat_add(&b->outcomes[WR_MO_DUPLICATE], 1);
    wr_stat_add(&a->dead_letters[WR_RS_TIMEOUT], 1);
    wr_stat_add(&a->retries[2], 3);
    wr_stat_add(&c->received, 1);
    wr_stat_add(&a->journal_errors, 1);
    wr_stat_add(&b->journal_errors, 1);
    wr_stat_add(&a->replica_waits_failed, 3);
    wr_hist_observe(&a->redis_wait, 0.002);
    wr_hist_observe(&a->redis_journal, 0.0004);
    wr_hist_observe(&a->handler, 0.002);
    wr_hist_observe(&b->handler, 0.2);
    wr_hist_observe(&b->handler, 0.2);
    atomic_store(&a->in_flight, 3);
    atomic_store(&b->in_flight, 2);
    atomic_store(&a->connected, 1);
    wr_metrics_set_queue(m, 0, "orders.q", "main", 42, 2);
    wr_metrics_set_queue(m, 0, "orders.q.dlq", "dlq", 3, 0);
    wr_metrics_set_queue(m, 0, "orders.q.dlq", "dlq", 4, 0);     /* updated, not added */
    wr_metrics_set_queue(m, 0, "orders.q.wait", "wait", -1, -1); /* unreadable: left out */

    char *t = render(m);
    CHECK_LINE(t, "# TYPE warren_messages_received_total counter");
    CHECK_LINE(t, "warren_messages_received_total{subscription=\"orders\"} 12");
    CHECK_LINE(t, "warren_messages_received_total{subscription=\"payments\"} 1");
    CHECK_LINE(t, "warren_messages_handled_total{subscription=\"orders\",outcome=\"ok\"} 10");
    CHECK_LINE(t, "warren_messages_handled_total{subscription=\"orders\",outcome=\"duplicate\"} 1");
    CHECK_LINE(t, "warren_messages_handled_total{subscription=\"orders\",outcome=\"invalid\"} 0");
    CHECK_LINE(t, "warren_dead_letters_total{subscription=\"orders\",reason=\"timeout\"} 1");
    /* the reason label is the DLQ header's code (outcome.h), every code exported */
    CHECK_LINE(t, "warren_dead_letters_total{subscription=\"orders\",reason=\"handler-error\"} 0");
    CHECK_LINE(t, "warren_dead_letters_total{subscription=\"orders\",reason=\"invalid-json\"} 0");
    CHECK(strstr(t, "reason=\"error\"") == NULL);
    CHECK(strstr(t, "reason=\"invalid\"") == NULL);
    CHECK(strstr(t, "reason=\"\"") == NULL);
    CHECK_LINE(t, "warren_retries_total{subscription=\"orders\",attempt=\"2\"} 3");
    CHECK_LINE(t, "warren_journal_write_failures_total{subscription=\"orders\"} 2");
    CHECK_LINE(t, "warren_journal_write_failures_total{subscription=\"payments\"} 0");
    CHECK_LINE(t, "warren_redis_replica_wait_failures_total{subscription=\"orders\"} 3");
    CHECK_LINE(t, "warren_redis_replica_wait_failures_total{subscription=\"payments\"} 0");
    CHECK_LINE(t, "warren_redis_call_duration_seconds_count{subscription=\"orders\",call=\"wait\"} "
                  "1");
    CHECK_LINE(t, "warren_redis_call_duration_seconds_count{subscription=\"orders\","
                  "call=\"journal\"} 1");
    CHECK_LINE(t, "warren_retries_total{subscription=\"orders\",attempt=\"1\"} 0");
    CHECK(strstr(t, "attempt=\"3\"") == NULL); /* the last attempt never retries */
    CHECK_LINE(t, "# TYPE warren_handler_duration_seconds histogram");
    CHECK_LINE(t, "warren_handler_duration_seconds_bucket{subscription=\"orders\",le=\"0.001\"} 0");
    CHECK_LINE(t,
               "warren_handler_duration_seconds_bucket{subscription=\"orders\",le=\"0.0025\"} 1");
    CHECK_LINE(t, "warren_handler_duration_seconds_bucket{subscription=\"orders\",le=\"0.25\"} 3");
    CHECK_LINE(t, "warren_handler_duration_seconds_bucket{subscription=\"orders\",le=\"+Inf\"} 3");
    CHECK_LINE(t, "warren_handler_duration_seconds_count{subscription=\"orders\"} 3");
    CHECK_LINE(t, "warren_handler_duration_seconds_sum{subscription=\"orders\"} 0.402000000");
    CHECK_LINE(t, "warren_messages_in_flight{subscription=\"orders\"} 5");
    CHECK_LINE(t, "warren_workers_connected{subscription=\"orders\"} 1");
    CHECK_LINE(
        t, "warren_queue_messages{subscription=\"orders\",queue=\"orders.q\",kind=\"main\"} 42");
    CHECK_LINE(
        t, "warren_queue_messages{subscription=\"orders\",queue=\"orders.q.dlq\",kind=\"dlq\"} 4");
    CHECK_LINE(t, "warren_queue_consumers{subscription=\"orders\"} 2");
    CHECK(strstr(t, "orders.q.wait") == NULL);
    CHECK_LINE(t, "warren_redis_up 0");
    /* every family has HELP and TYPE once */
    CHECK(strstr(strstr(t, "# TYPE warren_dead_letters_total") + 1,
                 "# TYPE warren_dead_letters_total") == NULL);
    free(t);
    wr_metrics_destroy(m);
}

/* Run a health verdict; its report goes to *TEXT (malloc'd). */
static int verdict(int (*fn)(wr_metrics *, FILE *), wr_metrics *m, char **text)
{
    size_t len = 0;
    *text = NULL;
    FILE *fp = open_memstream(text, &len);
    int r = fn(m, fp);
    fclose(fp);
    return r;
}

#define CHECK_VERDICT(fn, m, want, needle)                                                         \
    do {                                                                                           \
        char *t_;                                                                                  \
        CHECK_INT(verdict(fn, m, &t_), want);                                                      \
        if ((needle) != NULL) {                                                                    \
            const char *n_ = (needle);                                                             \
            check_count++;                                                                         \
            if (t_ == NULL || strstr(t_, n_) == NULL) {                                            \
                check_failures++;                                                                  \
                fprintf(stderr, "%s:%d: report lacks '%s':\n%s", __FILE__, __LINE__, n_,           \
                        t_ ? t_ : "");                                                             \
            }                                                                                      \
        }                                                                                          \
        free(t_);                                                                                  \
    } while (0)

static void test_health(void)
{
    wr_metrics *m = wr_metrics_create(&cfg);
    const char *none = NULL;
    /* not started, no Redis answer, nobody connected */
    CHECK_VERDICT(wr_metrics_ready, m, 0, "handlers: not loaded yet");
    CHECK_VERDICT(wr_metrics_ready, m, 0, "redis: not answering");
    /* Redis away: the workers' closed connections are the pause, not the broker */
    CHECK_VERDICT(wr_metrics_ready, m, 0, "paused: Redis not answering; consumption resumes");
    wr_metrics_set_started(m);
    wr_metrics_set_redis(m, 1, NULL);
    CHECK_VERDICT(wr_metrics_ready, m, 0, "worker orders#0 not connected");
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < subs[s].concurrency; i++) {
            atomic_store(&wr_metrics_worker(m, s, i)->connected, 1);
        }
    }
    CHECK_VERDICT(wr_metrics_ready, m, 1, "broker: 3 workers connected");
    wr_metrics_set_redis(m, 0, "Connection refused");
    CHECK_VERDICT(wr_metrics_ready, m, 0, "redis: not answering: Connection refused");
    wr_metrics_set_redis(m, 1, NULL);
    wr_metrics_set_draining(m, 1);
    CHECK_VERDICT(wr_metrics_ready, m, 0, "draining: shutting down");

    /* liveness: idle workers are live however long they wait; a busy one is
     * stuck only past its limit */
    CHECK_VERDICT(wr_metrics_live, m, 1, none);
    wr_wstats *w = wr_metrics_worker(m, 1, 0);
    CHECK_INT(w->stuck_after_ms, 2 * 1000 + 2 * 2000 + 60000);
    atomic_store(&w->beat_ms, (long long)(wr_mono_ms() - 70000));
    CHECK_VERDICT(wr_metrics_live, m, 1, none); /* not busy: waiting is fine */
    atomic_store(&w->busy, 1);
    atomic_store(&w->beat_ms, (long long)wr_mono_ms());
    CHECK_VERDICT(wr_metrics_live, m, 1, none);
    atomic_store(&w->beat_ms, (long long)(wr_mono_ms() - 70000));
    CHECK_VERDICT(wr_metrics_live, m, 0, "worker payments#0: stuck");
    wr_metrics_destroy(m);
}

/* Gate counters: one series per gate of each subscription, summed over its
 * workers, labelled with the gate's type and after (escaped); none for a
 * subscription without gates. */
static void test_gates(void)
{
    wr_gate gates[2] = {{.type = "order.cancelled", .after = "order.created"},
                        {.type = "order.\"x\"", .after = "order.paid"}};
    subs[0].gates = gates;
    subs[0].gate_count = 2;
    wr_metrics *m = wr_metrics_create(&cfg);
    CHECK(m != NULL);
    if (m == NULL) {
        subs[0].gates = NULL;
        subs[0].gate_count = 0;
        return;
    }
    wr_wstats *a = wr_metrics_worker(m, 0, 0), *b = wr_metrics_worker(m, 0, 1);
    wr_stat_add(&a->gate_parked[0], 2);
    wr_stat_add(&b->gate_parked[0], 1);
    wr_stat_add(&b->gate_parked[1], 5);
    wr_stat_add(&a->gate_released[0], 2);
    wr_stat_add(&b->gate_timeouts[0], 1);
    wr_stat_add(&a->gate_timeouts[1], 4);
    char *t = render(m);
    CHECK_LINE(t, "# TYPE warren_gate_parked_total counter");
    CHECK_LINE(t, "warren_gate_parked_total{subscription=\"orders\","
                  "gate=\"order.cancelled<-order.created\"} 3");
    CHECK_LINE(t, "warren_gate_parked_total{subscription=\"orders\","
                  "gate=\"order.\\\"x\\\"<-order.paid\"} 5");
    CHECK_LINE(t, "warren_gate_released_total{subscription=\"orders\","
                  "gate=\"order.cancelled<-order.created\"} 2");
    CHECK_LINE(t, "warren_gate_released_total{subscription=\"orders\","
                  "gate=\"order.\\\"x\\\"<-order.paid\"} 0");
    CHECK_LINE(t, "warren_gate_timeouts_total{subscription=\"orders\","
                  "gate=\"order.cancelled<-order.created\"} 1");
    CHECK_LINE(t, "warren_gate_timeouts_total{subscription=\"orders\","
                  "gate=\"order.\\\"x\\\"<-order.paid\"} 4");
    CHECK(strstr(t, "warren_gate_parked_total{subscription=\"payments\"") == NULL);
    free(t);
    wr_metrics_destroy(m);
    subs[0].gates = NULL;
    subs[0].gate_count = 0;
}

static void test_escape(void)
{
    char out[64];
    wr_metrics_label_escape("a\"b\\c\nd", out, sizeof(out));
    CHECK_STR(out, "a\\\"b\\\\c\\nd");
    wr_metrics_label_escape("abcdefgh", out, 6); /* truncated, still terminated */
    CHECK(strlen(out) < 6);
}

int main(void)
{
    setup();
    test_hist();
    test_render();
    test_health();
    test_gates();
    test_escape();
    return check_report("test_metrics");
}
