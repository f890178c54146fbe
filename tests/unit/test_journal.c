/*
 * test_journal: the pure part of the per-event journal (journal.c): entries
 * encoded as compact JSON with only their meaningful fields, errors cut on a
 * UTF-8 boundary and cleaned of invalid bytes, the journal key, and the story
 * `warren trace` prints: where the message is now (done, DLQ, delay tier,
 * processing, never seen), the trace id, the handler versions, the commands
 * to run next, and the text timeline.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "journal.h"

static void test_encode(void)
{
    wr_journal_entry e = wr_journal_entry_init(WR_JOURNAL_RETRIED);
    e.ts_ms = 1764475200123;
    e.subscription = "orders";
    e.worker = 0;
    e.message_id = "evt-1xyz";
    e.message_id_len = 5;
    e.attempt = 2;
    e.reason = "handler-error";
    e.error = "h.lua:3: boom";
    e.delay_ms = 1000;
    e.queue = "orders.retry.1s";
    e.duration_ms = 0.12345;
    e.trace_id = "0af7651916cd43dd8448eb211c80319c";
    e.handler_version = "b3367eaf0cdd";
    char *s = wr_journal_encode(&e);
    CHECK_STR(s, "{\"ts\":1764475200123,\"event\":\"retried\",\"subscription\":\"orders\","
                 "\"worker\":0,\"message_id\":\"evt-1\",\"attempt\":2,"
                 "\"reason\":\"handler-error\",\"error\":\"h.lua:3: boom\",\"delay_ms\":1000,"
                 "\"queue\":\"orders.retry.1s\",\"duration_ms\":0.123,"
                 "\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\","
                 "\"handler_version\":\"b3367eaf0cdd\"}");
    free(s);

    /* only the event and the time when nothing else is set */
    e = wr_journal_entry_init(WR_JOURNAL_DUPLICATE);
    e.ts_ms = 5;
    e.replay = 1;
    s = wr_journal_encode(&e);
    CHECK_STR(s, "{\"ts\":5,\"event\":\"duplicate\",\"replay\":true}");
    free(s);

    /* ts 0: the wall clock */
    e = wr_journal_entry_init(WR_JOURNAL_OK);
    s = wr_journal_encode(&e);
    CHECK(s != NULL && strstr(s, "\"ts\":17") != NULL);
    free(s);

    /* no event: nothing */
    e = wr_journal_entry_init(NULL);
    CHECK(wr_journal_encode(&e) == NULL);

    /* a long error is cut on a UTF-8 boundary; invalid bytes become '?' */
    char err[1000];
    memset(err, 'x', sizeof(err));
    memcpy(err + WR_JOURNAL_ERROR_MAX - 1, "\xc3\xa9", 2); /* 'é' across the limit */
    err[sizeof(err) - 1] = '\0';
    e = wr_journal_entry_init(WR_JOURNAL_DEAD_LETTERED);
    e.ts_ms = 1;
    e.error = err;
    s = wr_journal_encode(&e);
    json_t *j = json_loads(s, 0, NULL);
    const char *got = json_string_value(json_object_get(j, "error"));
    CHECK_INT(got ? strlen(got) : 0, WR_JOURNAL_ERROR_MAX - 1);
    json_decref(j);
    free(s);
    e.error = "bad \xff byte";
    s = wr_journal_encode(&e);
    CHECK(s != NULL && strstr(s, "\"error\":\"bad ? byte\"") != NULL);
    free(s);

    /* quotes, backslashes and control bytes are escaped; the text stays JSON */
    e = wr_journal_entry_init(WR_JOURNAL_OK);
    e.ts_ms = 1;
    e.error = "say \"hi\"\\\n\x01";
    e.duration_ms = 2;
    s = wr_journal_encode(&e);
    CHECK_STR(s, "{\"ts\":1,\"event\":\"ok\",\"error\":\"say \\\"hi\\\"\\\\\\n\\u0001\","
                 "\"duration_ms\":2.0}");
    j = json_loads(s, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(j, "error")), "say \"hi\"\\\n\x01");
    json_decref(j);
    free(s);
}

static void test_key(void)
{
    char k[64];
    CHECK_INT(wr_journal_key("warren:idem:", "orders", "evt-1", k, sizeof(k)), 0);
    CHECK_STR(k, "warren:idem:journal:orders:evt-1");
    char small[10];
    CHECK_INT(wr_journal_key("warren:idem:", "orders", "evt-1", small, sizeof(small)), -1);
}

static const wr_journal_subject subject = {
    .config = "w.yaml",
    .subscription = "orders",
    .key = "evt-1",
    .journal_key = "warren:idem:journal:orders:evt-1",
    .queue = "orders.in",
    .dlq = "orders.in.dlq",
    .now_ms = 10000,
};

static const char *where_state(const json_t *story)
{
    return json_string_value(json_object_get(json_object_get(story, "where"), "state"));
}

static const char *next_cmd(const json_t *story, size_t i)
{
    return json_string_value(json_array_get(json_object_get(story, "next"), i));
}

static void test_story_dlq_then_replayed_ok(void)
{
    const char *entries[] = {
        "{\"ts\":1000,\"event\":\"received\",\"message_id\":\"evt-1\",\"trace_id\":\"t1\"}",
        "{\"ts\":1001,\"event\":\"retried\",\"message_id\":\"evt-1\",\"attempt\":1,"
        "\"reason\":\"handler-error\",\"error\":\"boom\",\"delay_ms\":500,"
        "\"queue\":\"orders.in.retry.500ms\",\"trace_id\":\"t1\",\"handler_version\":\"v1\"}",
        "{\"ts\":1600,\"event\":\"dead-lettered\",\"message_id\":\"evt-1\",\"attempt\":2,"
        "\"reason\":\"handler-error\",\"error\":\"boom\",\"queue\":\"orders.in.dlq\","
        "\"trace_id\":\"t1\",\"handler_version\":\"v1\"}",
    };
    wr_journal_record rec = {
        .state = "done", .outcome = "dead-lettered", .done_at = 1600, .starts = 2};
    json_t *s = wr_journal_story(&subject, entries, 3, &rec);
    CHECK_STR(where_state(s), "dlq");
    CHECK_STR(json_string_value(json_object_get(s, "trace_id")), "t1");
    CHECK_INT(json_array_size(json_object_get(s, "handler_versions")), 1);
    CHECK_STR(next_cmd(s, 0), "warren dlq show -c w.yaml --subscription orders evt-1");
    CHECK_STR(next_cmd(s, 1), "warren dlq replay -c w.yaml --subscription orders --id evt-1");
    CHECK(json_is_true(json_object_get(s, "found")));
    CHECK_STR(json_string_value(json_object_get(json_object_get(s, "where"), "detail")),
              "in the DLQ orders.in.dlq: dead-lettered at 1970-01-01T00:00:01.600Z after "
              "attempt 2 (handler-error)");
    json_decref(s);

    /* after the replay: replayed, received, ok with a new handler version */
    const char *more[] = {
        entries[0],
        entries[1],
        entries[2],
        "{\"ts\":2000,\"event\":\"replayed\",\"by\":\"warren dlq replay\","
        "\"queue\":\"orders.in\",\"note\":\"record reset\"}",
        "{\"ts\":2100,\"event\":\"received\",\"message_id\":\"evt-1\",\"replay\":true}",
        "{\"ts\":2101,\"event\":\"ok\",\"message_id\":\"evt-1\",\"attempt\":1,"
        "\"duration_ms\":0.5,\"published\":1,\"trace_id\":\"t1\",\"handler_version\":\"v2\","
        "\"replay\":true}",
        "not json",
    };
    rec = (wr_journal_record){.state = "done", .outcome = "ok", .done_at = 2101, .starts = 1};
    s = wr_journal_story(&subject, more, 7, &rec);
    CHECK_STR(where_state(s), "done");
    CHECK_INT(json_array_size(json_object_get(s, "next")), 0);
    CHECK_INT(json_array_size(json_object_get(s, "handler_versions")), 2);
    json_t *e6 = json_array_get(json_object_get(s, "entries"), 6);
    CHECK_STR(json_string_value(json_object_get(e6, "event")), "unreadable");

    /* the text form */
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    wr_journal_render(fp, s);
    fclose(fp);
    CHECK(strstr(buf, "event evt-1 in subscription orders\n") != NULL);
    CHECK(strstr(buf, "  trace id  t1\n") != NULL);
    CHECK(strstr(buf, "  handlers  v1, v2\n") != NULL);
    CHECK(strstr(buf, "  record    done/ok, started 1 time(s)\n") != NULL);
    CHECK(strstr(buf, "1970-01-01T00:00:01.001Z  retried        attempt 1 failed: "
                      "handler-error: boom; retry in 500 ms via orders.in.retry.500ms\n") != NULL);
    CHECK(strstr(buf, "replayed       sent back to orders.in by warren dlq replay; record "
                      "reset\n") != NULL);
    CHECK(strstr(buf, "ok             attempt 1 handled ok in 0.500 ms, 1 event(s) published "
                      "(a replayed copy)\n") != NULL);
    CHECK(strstr(buf, "\nwhere: done - done: handled ok at 1970-01-01T00:00:02.101Z\n") != NULL);
    CHECK(strstr(buf, "next:  nothing to do\n") != NULL);
    free(buf);
    json_decref(s);
}

static void test_story_duplicate_replay(void)
{
    /* written out of order: the worker saw the copy before the replay's entry was written,
     * and the duplicate fell in the same millisecond as the replay */
    const char *entries[] = {
        "{\"ts\":1000,\"event\":\"ok\",\"attempt\":1}",
        "{\"ts\":3000,\"event\":\"duplicate\",\"replay\":true}",
        "{\"ts\":3000,\"event\":\"replayed\",\"by\":\"warren dlq replay\"}",
    };
    wr_journal_record rec = {.state = "done", .outcome = "ok", .done_at = 1000, .starts = 1};
    json_t *s = wr_journal_story(&subject, entries, 3, &rec);
    CHECK_STR(where_state(s), "done");
    const json_t *list = json_object_get(s, "entries");
    CHECK_STR(json_string_value(json_object_get(json_array_get(list, 1), "event")), "replayed");
    CHECK_STR(json_string_value(json_object_get(json_array_get(list, 2), "event")), "duplicate");
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    wr_journal_render(fp, s);
    fclose(fp);
    CHECK(strstr(buf, "duplicate      replayed, skipped as duplicate (already done)\n") != NULL);
    free(buf);
    json_decref(s);
}

static void test_story_where(void)
{
    /* waiting in a delay tier */
    const char *retried[] = {"{\"ts\":9000,\"event\":\"retried\",\"attempt\":1,"
                             "\"delay_ms\":5000,\"queue\":\"orders.in.retry.5s\"}"};
    wr_journal_record released = {.state = "released", .starts = 1};
    json_t *s = wr_journal_story(&subject, retried, 1, &released);
    CHECK_STR(where_state(s), "delay");
    CHECK_INT(json_integer_value(json_object_get(json_object_get(s, "where"), "due")), 14000);
    json_decref(s);

    /* a worker holds it now: that wins over the last entry */
    wr_journal_record busy = {.state = "processing", .lease_until = 20000, .starts = 2};
    s = wr_journal_story(&subject, retried, 1, &busy);
    CHECK_STR(where_state(s), "processing");
    json_decref(s);

    /* a lease that ran out is not a worker on it */
    busy.lease_until = 5000;
    s = wr_journal_story(&subject, retried, 1, &busy);
    CHECK_STR(where_state(s), "delay");
    json_decref(s);

    /* never seen */
    s = wr_journal_story(&subject, NULL, 0, NULL);
    CHECK_STR(where_state(s), "unknown");
    CHECK(json_is_false(json_object_get(s, "found")));
    CHECK(json_is_null(json_object_get(s, "trace_id")));
    json_decref(s);

    /* a record without a journal (journal expired, or off) */
    wr_journal_record done = {.state = "done", .outcome = "ok", .done_at = 1000, .starts = 1};
    s = wr_journal_story(&subject, NULL, 0, &done);
    CHECK_STR(where_state(s), "done");
    CHECK(json_is_true(json_object_get(s, "found")));
    json_decref(s);

    /* dead-lettered long ago: the journal expired, the record did not */
    wr_journal_record dead = {.state = "done", .outcome = "rejected", .done_at = 1000};
    s = wr_journal_story(&subject, NULL, 0, &dead);
    CHECK_STR(where_state(s), "dlq");
    CHECK_STR(next_cmd(s, 0), "warren dlq show -c w.yaml --subscription orders evt-1");
    json_decref(s);

    /* replayed, not picked up yet */
    const char *replayed[] = {"{\"ts\":9000,\"event\":\"replayed\",\"by\":\"x\"}"};
    s = wr_journal_story(&subject, replayed, 1, NULL);
    CHECK_STR(where_state(s), "queue");
    json_decref(s);

    /* the DLQ commands name the message id when the key is something else */
    const char *dl[] = {"{\"ts\":9000,\"event\":\"dead-lettered\",\"message_id\":\"m-7\"}"};
    s = wr_journal_story(&subject, dl, 1, NULL);
    CHECK_STR(next_cmd(s, 1), "warren dlq replay -c w.yaml --subscription orders --id m-7");
    json_decref(s);
}

static void test_story_received_at(void)
{
    /* one entry per message: the reader makes the "received" entry from received_at */
    wr_journal_entry e = wr_journal_entry_init(WR_JOURNAL_OK);
    e.ts_ms = 2000;
    e.received_ms = 1990;
    e.message_id = "m-1";
    e.message_id_len = 3;
    e.type = "order.created";
    e.type_len = 13;
    e.redelivered = 1;
    e.trace_id = "t9";
    e.attempt = 1;
    char *text = wr_journal_encode(&e);
    CHECK_STR(text, "{\"ts\":2000,\"event\":\"ok\",\"message_id\":\"m-1\","
                    "\"type\":\"order.created\",\"attempt\":1,\"trace_id\":\"t9\","
                    "\"redelivered\":true,\"received_at\":1990}");
    const char *entries[] = {text};
    json_t *s = wr_journal_story(&subject, entries, 1, NULL);
    const json_t *list = json_object_get(s, "entries");
    CHECK_INT(json_array_size(list), 2);
    const json_t *r = json_array_get(list, 0);
    CHECK_STR(json_string_value(json_object_get(r, "event")), "received");
    CHECK_INT(json_integer_value(json_object_get(r, "ts")), 1990);
    CHECK_STR(json_string_value(json_object_get(r, "type")), "order.created");
    CHECK(json_is_true(json_object_get(r, "redelivered")));
    CHECK_STR(json_string_value(json_object_get(json_array_get(list, 1), "event")), "ok");
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    wr_journal_render(fp, s);
    fclose(fp);
    CHECK(strstr(buf, "received       message m-1 (order.created), redelivered\n") != NULL);
    free(buf);
    json_decref(s);
    free(text);
}

/* A declined (ctx.reject) or unreadable message in the DLQ: no replay offered,
 * the story says why; a handler error still offers one. */
static void test_story_no_replay_for_permanent(void)
{
    const char *rejected[] = {
        "{\"ts\":1000,\"event\":\"dead-lettered\",\"message_id\":\"o-1\",\"attempt\":1,"
        "\"reason\":\"rejected\",\"error\":\"card declined\",\"queue\":\"orders.in.dlq\"}",
    };
    json_t *s = wr_journal_story(&subject, rejected, 1, NULL);
    CHECK_STR(where_state(s), "dlq");
    CHECK_INT(json_array_size(json_object_get(s, "next")), 1);
    CHECK_STR(next_cmd(s, 0), "warren dlq show -c w.yaml --subscription orders o-1");
    CHECK_STR(json_string_value(json_object_get(json_object_get(s, "where"), "detail")),
              "in the DLQ orders.in.dlq: dead-lettered at 1970-01-01T00:00:01.000Z after "
              "attempt 1 (rejected); its handler declined it: a replay is rejected again "
              "unless the handler or the data changed");
    json_decref(s);
    const char *invalid[] = {
        "{\"ts\":1000,\"event\":\"dead-lettered\",\"message_id\":\"o-2\",\"attempt\":1,"
        "\"reason\":\"invalid-json\",\"queue\":\"orders.in.dlq\"}",
    };
    s = wr_journal_story(&subject, invalid, 1, NULL);
    CHECK_INT(json_array_size(json_object_get(s, "next")), 1);
    CHECK(strstr(json_string_value(json_object_get(json_object_get(s, "where"), "detail")),
                 "a replay fails the same way") != NULL);
    json_decref(s);
}

int main(void)
{
    test_encode();
    test_key();
    test_story_dlq_then_replayed_ok();
    test_story_duplicate_replay();
    test_story_where();
    test_story_received_at();
    test_story_no_replay_for_permanent();
    return check_report("test_journal");
}
