"""Metrics and health endpoints against the real sidecar, RabbitMQ and Redis.

The test sends known numbers of each kind of message and checks that
/metrics says exactly that: OK ok messages, DUP duplicates of them (sent
after the originals are done, so each is a plain duplicate), FAIL messages
whose handler raises (max_attempts 2: one retry each, then the DLQ), REJ
rejected by the handler, BAD undecodable bodies. The received counter, the
outcomes, the dead letters by reason, the retries by attempt, the handler
duration histogram's count and the polled DLQ depth must all match what was
sent. promtool (Debian package prometheus) must accept the exposition.

Then health: /healthz and /readyz answer 200; with Redis stopped /readyz
answers 503 naming Redis within seconds and warren_redis_up is 0; once Redis
is back /readyz is 200 again. A handler edit is a reload: the reload counter
and the handler_info version follow it. Unknown paths answer 404."""
import os
import subprocess
import time
import traceback

from wrtest import (Broker, Warren, check, check_eq, delete_queues, done_count, finish, prefix,
                    redis_client,
                    stack, tempdir, wait_for, write)

OK, DUP, FAIL, REJ, BAD = 300, 60, 5, 4, 3

p = prefix()
tmp = tempdir()
queue = p + ".in"
sub_name = "met"
all_queues = (queue, queue + ".wait", queue + ".dlq", queue + ".retry.1s")

handler = write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local d = event.data
  if d.fail then error("told to fail") end
  if d.reject then ctx.reject("told to reject") end
end
return M
''')

sub = {"name": sub_name, "queue": queue, "handler": "h.lua", "concurrency": 2,
       "retry": {"max_attempts": 2, "delays": ["1s"]}, "breaker": {"enabled": False}}
w = Warren(tmp, [sub])
b = Broker()
r = redis_client()
try:
    w.start()
    check(w.wait_consuming(2), "warren consumes with 2 workers")
    status, body = w.get("/healthz")
    check_eq(status, 200, "/healthz")
    check(wait_for(lambda: w.get("/readyz")[0] == 200, 10, "/readyz 200"),
          "/readyz is 200 once started: %r" % (w.get("/readyz"),))

    ok_ids = ["ok-%04d" % i for i in range(OK)]
    for i in ok_ids:
        b.publish(queue, {"n": i}, message_id=i)
    check(wait_for(lambda: done_count(r, sub_name) >= OK, 60, "the ok messages"),
          "all %d ok messages done" % OK)
    for i in ok_ids[:DUP]:
        b.publish(queue, {"n": i}, message_id=i)
    for k in range(FAIL):
        b.publish(queue, {"fail": True}, message_id="fail-%d" % k)
    for k in range(REJ):
        b.publish(queue, {"reject": True}, message_id="rej-%d" % k)
    for k in range(BAD):
        b.publish(queue, b"{not json", message_id="bad-%d" % k)
    dead = FAIL + REJ + BAD
    check(wait_for(lambda: b.depth(queue + ".dlq") >= dead, 60, "the dead letters"),
          "%d copies in the DLQ" % dead)

    def handled(outcome, samples):
        return w.metric(samples, "warren_messages_handled_total", subscription=sub_name,
                        outcome=outcome)

    want_received = OK + DUP + 2 * FAIL + REJ + BAD
    wait_for(lambda: w.metric_or_0(w.metrics(), "warren_messages_received_total",
                                   subscription=sub_name) >= want_received, 10, "received count")
    m = w.metrics()
    check_eq(w.metric(m, "warren_messages_received_total", subscription=sub_name), want_received,
             "received = every delivery (retries included)")
    check_eq(handled("ok", m), OK, "outcome ok")
    check_eq(handled("duplicate", m), DUP, "outcome duplicate")
    check_eq(handled("retried", m), FAIL, "outcome retried")
    check_eq(handled("dead_lettered", m), FAIL, "outcome dead_lettered")
    check_eq(handled("rejected", m), REJ, "outcome rejected")
    check_eq(handled("invalid", m), BAD, "outcome invalid")
    # an absent series reads as None: every "expect 0" below also asserts the series exists
    check_eq(handled("deferred", m), 0, "outcome deferred: none")
    check_eq(handled("returned", m), 0, "outcome returned: none")
    for reason, n in (("handler-error", FAIL), ("rejected", REJ), ("invalid-json", BAD),
                      ("timeout", 0), ("crashed", 0)):
        check_eq(w.metric(m, "warren_dead_letters_total", subscription=sub_name, reason=reason),
                 n, "dead letters, reason %s" % reason)
    check_eq(w.metric(m, "warren_retries_total", subscription=sub_name, attempt="1"), FAIL,
             "retries of attempt 1")
    # a message that came without a traceparent keeps one trace across its attempts
    for k in range(FAIL):
        traces = {rec.get("trace_id") for rec in w.lines(message_id="fail-%d" % k)
                  if rec.get("outcome") in ("retried", "dead-lettered")}
        check(len(traces) == 1 and None not in traces,
              "fail-%d: one trace id over both attempts: %r" % (k, traces))
    check_eq(w.metric(m, "warren_handler_duration_seconds_count", subscription=sub_name),
             OK + 2 * FAIL + REJ, "one handler duration per handler run")
    check_eq(w.metric(m, "warren_handler_duration_seconds_bucket", subscription=sub_name,
                      le="+Inf"),
             OK + 2 * FAIL + REJ, "the +Inf bucket holds every run")
    v = w.metric(m, "warren_redis_call_duration_seconds_count", subscription=sub_name,
                 call="claim")
    check(v is not None and v > 0, "Redis claim latency observed (%r)" % v)
    v = w.metric(m, "warren_publish_confirm_duration_seconds_count", subscription=sub_name)
    check(v is not None and v > 0, "confirm latency observed (%r)" % v)
    check_eq(w.metric(m, "warren_workers_connected", subscription=sub_name), 2,
             "both workers connected")
    check_eq(w.metric(m, "warren_breaker_state", breaker=sub_name, kind="subscription",
                      state="closed"), 1, "breaker closed")
    check(wait_for(lambda: w.metric(w.metrics(), "warren_queue_messages", subscription=sub_name,
                                    queue=queue + ".dlq", kind="dlq") == dead, 10,
                   "DLQ depth metric"), "the polled DLQ depth is %d" % dead)
    check(("warren_queue_messages", frozenset({"subscription": sub_name, "queue": queue,
                                               "kind": "main"}.items())) in w.metrics(),
          "the main queue's depth is exported")

    # promtool must accept the exposition as it is
    status, text = w.get("/metrics")
    pt = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check_eq(pt.returncode, 0, "promtool check metrics: %s" %
             pt.stdout.decode("utf-8", "replace").strip()[:500])

    # a handler edit is a reload; the version label follows
    v0 = [dict(k[1]) for k in w.metrics() if k[0] == "warren_handler_info"]
    check_eq(len(v0), 1, "one handler_info series")
    with open(handler, "a") as fh:
        fh.write("-- edited\n")
    check(wait_for(lambda: w.metric_or_0(w.metrics(), "warren_handler_reloads_total",
                                         result="applied") >= 1, 20, "the reload"),
          "the reload is counted")
    v1 = [dict(k[1]) for k in w.metrics() if k[0] == "warren_handler_info"]
    check(len(v1) == 1 and v1[0]["version"] != v0[0]["version"],
          "handler_info shows the new version: %r -> %r" % (v0, v1))

    status, _ = w.get("/nothing-here")
    check_eq(status, 404, "unknown path")

    # Redis away: not ready within seconds, ready again after
    try:
        check_eq(stack("stop-redis"), 0, "Redis stopped")
        t0 = time.monotonic()
        check(wait_for(lambda: w.get("/readyz")[0] == 503, 10, "/readyz 503"),
              "/readyz turns 503 without Redis")
        print("  not ready %.1f s after Redis stopped" % (time.monotonic() - t0), flush=True)
        status, body = w.get("/readyz")
        check("redis: not answering" in body, "/readyz names Redis: %r" % body)
        check_eq(w.metric(w.metrics(), "warren_redis_up"), 0, "warren_redis_up is 0")
        check_eq(w.get("/healthz")[0], 200, "still live: waiting on Redis is not stuck")
    finally:
        check_eq(stack("start-redis"), 0, "Redis started again")
    t0 = time.monotonic()
    check(wait_for(lambda: w.get("/readyz")[0] == 200, 30, "/readyz 200 again"),
          "/readyz is 200 again once Redis is back: %r" % (w.get("/readyz"),))
    print("  ready again %.1f s after Redis started" % (time.monotonic() - t0), flush=True)
    check_eq(w.metric(w.metrics(), "warren_redis_up"), 1, "warren_redis_up is 1")
    check_eq(w.stop(), 0, "warren exits 0 on SIGTERM")
    check(not any("body" in rec for rec in w.lines(msg="message handled")),
          "bodies are not logged by default")

    # log.bodies: the outcome line carries the body (its first 2 KiB)
    w = Warren(tmp, [sub], name="bodies", log_bodies=True).start()
    check(w.wait_consuming(2), "the second warren consumes")
    b.publish(queue, {"note": "body-in-the-log"}, message_id="with-body")
    b.publish(queue, {"note": "x" * 5000}, message_id="big-body")
    wait_for(lambda: len(w.lines(msg="message handled")) >= 2, 20, "two outcome lines")
    lines = {rec.get("message_id"): rec for rec in w.lines(msg="message handled")}
    check_eq(lines.get("with-body", {}).get("body"), '{"note": "body-in-the-log"}',
             "log.bodies: the body is in the outcome line")
    big = lines.get("big-body", {})
    check(len(big.get("body", "")) == 2048 and big.get("body_truncated") is True,
          "a long body is cut at 2 KiB and marked truncated")
    check_eq(w.stop(), 0, "the second warren exits 0")
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    delete_queues(all_queues)
finish()
