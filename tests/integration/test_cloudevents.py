"""CloudEvents through the real broker, in both content modes of the AMQP
binding, made from the CloudEvents spec's own examples.

Binary mode (attributes as headers, under the binding's "cloudEvents:" prefix
and the "cloudEvents_" / "ce-" / "ce_" that SDKs send; the data as the body)
and structured mode (application/cloudevents+json) reach the handler with
event.cloudevent holding every attribute and extension as sent, event.type the
CloudEvent's type, event.data its data: what the producer sent comes back out
of the handler unchanged. The CloudEvent's type selects the contract, checked
against its data (a structured event whose data breaks it is schema-invalid);
a message that claims to be a CloudEvent but lacks a required attribute is
dead-lettered as invalid-cloudevent; the CloudEvent's id can be the
idempotency key (header:cloudEvents:id), so a second copy is a duplicate.
ctx.publish(..., {cloudevent = {type, source}}) emits a valid binary-mode
CloudEvent (specversion 1.0, id = warren's deterministic message id, time,
the trace as the traceparent extension), which a subscription reads back
with the same attributes; with mode = "structured" the same event is the
whole body (application/cloudevents+json, no cloudEvents: headers) and reads
back the same."""
import json
import os
import re

from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

p = prefix()
tmp = tempdir()
out = p + ".out"
q = p + ".ce"
qk = p + ".cekey"
qe, emitted = p + ".emit", p + ".emitted"

write(os.path.join(tmp, "contracts.yaml"), """\
events:
  com.example.someevent:
    version: 1
    schema:
      type: object
      required: [appinfoA]
      properties:
        appinfoA: { type: string }
        appinfoB: { type: integer }
""")
write(os.path.join(tmp, "h.lua"), r'''
return { handle = function(event, ctx)
  ctx.publish("", "%s", { id = event.id, type = event.type, cloudevent = event.cloudevent,
                          data = event.data, key = ctx.idempotency_key })
end }
''' % out)
write(os.path.join(tmp, "emit.lua"), r'''
return { handle = function(event, ctx)
  ctx.publish("", "%s", { appinfoA = "from " .. event.id, appinfoB = 7 },
              { cloudevent = { type = "com.example.someevent", source = "/warren/emit",
                               subject = "orders/o-1", mode = event.data.mode } })
end }
''' % emitted)
subs = [{"name": "emit", "queue": qe, "handler": "emit.lua"},
        {"name": "ce", "queue": q, "handler": "h.lua", "contracts": {"file": "contracts.yaml"}},
        {"name": "cekey", "queue": qk, "handler": "h.lua",
         "idempotency": {"key": "header:cloudEvents:id"}}]

# the AMQP binding's binary-mode example (section 3.1.4), an extension added
BINARY = {"specversion": "1.0", "type": "com.example.someevent",
          "time": "2018-04-05T03:56:24Z", "id": "1234-1234-1234",
          "source": "/mycontext/subcontext", "comexampleextension1": "value"}
DATA = {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True}
# the JSON event format's example
STRUCTURED = {"specversion": "1.0", "type": "com.example.someevent", "source": "/mycontext",
              "id": "C234-1234-1234", "time": "2018-04-05T17:31:00Z",
              "comexampleextension1": "value", "comexampleothervalue": 5,
              "datacontenttype": "application/json", "data": DATA}

b = Broker()
for queue in (out, q, qk, qe, emitted):
    b.declare(queue)
w = Warren(tmp, subs)
try:
    w.start()
    check(w.wait_consuming(3), "consuming")
    for pfx in ("cloudEvents:", "cloudEvents_", "ce-", "ce_"):
        attrs = dict(BINARY, id="bin-" + pfx)
        b.publish(q, DATA, message_id="m-" + pfx, content_type="application/json",
                  headers={pfx + k: v for k, v in attrs.items()})
    b.publish(q, json.dumps(STRUCTURED), message_id="m-structured",
              content_type="application/cloudevents+json; charset=utf-8")
    b.publish(q, json.dumps(dict(STRUCTURED, id="bad-data", data={"appinfoB": "x"})),
              message_id="m-bad-data", content_type="application/cloudevents+json")
    b.publish(q, json.dumps({k: v for k, v in STRUCTURED.items() if k != "source"}),
              message_id="m-no-source", content_type="application/cloudevents+json")
    # the CloudEvent's id as the idempotency key: the second copy (another message id) is a
    # duplicate
    for mid in ("k-1", "k-2"):
        b.publish(qk, DATA, message_id=mid, content_type="application/json",
                  headers={"cloudEvents:" + k: v for k, v in BINARY.items()})

    wait_for(lambda: b.depth(out) >= 6 and b.depth(q + ".dlq") >= 2 and
             len(w.lines(msg="duplicate message skipped")) >= 1, 30, "all handled")
    got = {}
    for _, body in b.drain(out):
        o = json.loads(body)
        got[o["id"]] = o
    check_eq(sorted(got), ["k-1", "m-ce-", "m-ce_", "m-cloudEvents:", "m-cloudEvents_",
                           "m-structured"], "every valid CloudEvent reached the handler once")
    for pfx in ("cloudEvents:", "cloudEvents_", "ce-", "ce_"):
        o = got.get("m-" + pfx, {})
        check_eq(o.get("cloudevent"), dict(BINARY, id="bin-" + pfx,
                                           datacontenttype="application/json"),
                 "binary mode (%s): event.cloudevent is what was sent" % pfx)
        check_eq(o.get("data"), DATA, "binary mode (%s): event.data is the body" % pfx)
        check_eq(o.get("type"), "com.example.someevent", "binary mode (%s): event.type" % pfx)
    o = got.get("m-structured", {})
    check_eq(o.get("cloudevent"), {k: v for k, v in STRUCTURED.items() if k != "data"},
             "structured mode: event.cloudevent has every attribute and extension")
    check_eq(o.get("data"), DATA, "structured mode: event.data is the event's data")
    check_eq(o.get("type"), "com.example.someevent", "structured mode: event.type")
    check_eq(got.get("k-1", {}).get("key"), "1234-1234-1234",
             "the CloudEvent's id is the idempotency key")
    dead = {props.message_id: props.headers for props, _ in b.drain(q + ".dlq")}
    check_eq(sorted(dead), ["m-bad-data", "m-no-source"], "two dead-lettered")
    h = dead.get("m-bad-data") or {}
    check_eq((h.get("x-warren-reason"), h.get("x-warren-error")),
             ("schema-invalid", "com.example.someevent v1: /: required: missing 'appinfoA'; "
              "/appinfoB: type: string, not integer"),
             "the CloudEvent's type selects the contract, checked against its data")
    h = dead.get("m-no-source") or {}
    check_eq((h.get("x-warren-reason"), h.get("x-warren-error")),
             ("invalid-cloudevent", "structured CloudEvent without source"),
             "a CloudEvent without source")

    # ctx.publish with a cloudevent option, read back by the CloudEvents subscription
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    b.publish(qe, {"x": 1}, message_id="e-1",
              headers={"traceparent": "00-%s-00f067aa0ba902b7-01" % tid})
    wait_for(lambda: b.depth(emitted) >= 1, 20, "the CloudEvent emitted")
    msgs = b.drain(emitted)
    check_eq(len(msgs), 1, "one event emitted")
    if msgs:
        props, body = msgs[0]
        h = props.headers or {}
        ce = {k[len("cloudEvents:"):]: v for k, v in h.items() if k.startswith("cloudEvents:")}
        check_eq(sorted(ce), ["id", "source", "specversion", "subject", "time", "traceparent",
                              "type"], "the CloudEvent's attributes as cloudEvents: headers")
        check_eq((ce.get("specversion"), ce.get("id"), ce.get("type"), ce.get("source"),
                  ce.get("subject")),
                 ("1.0", props.message_id, "com.example.someevent", "/warren/emit",
                  "orders/o-1"),
                 "specversion 1.0, the message's deterministic id, type, source, subject")
        check_eq(props.message_id, "e-1:emit:1", "the deterministic id")
        check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ce.get("time", "")),
              "time is RFC 3339: %r" % ce.get("time"))
        check((ce.get("traceparent") or "").startswith("00-%s-" % tid),
              "the trace travels as the traceparent extension: %r" % ce.get("traceparent"))
        check_eq(props.content_type, "application/json", "datacontenttype: the content type")
        # the round trip: the emitted CloudEvent, as it is, read by a subscription
        b.publish(q, body, message_id=props.message_id, content_type=props.content_type,
                  headers=h)
        wait_for(lambda: b.depth(out) >= 1, 20, "the emitted CloudEvent handled")
        back = [json.loads(x) for _, x in b.drain(out)]
        check_eq(len(back), 1, "read back once")
        if back:
            want = dict(ce, datacontenttype="application/json")
            check_eq(back[0].get("cloudevent"), want, "read back with the same attributes")
            check_eq(back[0].get("data"), {"appinfoA": "from e-1", "appinfoB": 7},
                     "and the same data (valid against the type's contract)")

    # structured mode: the whole event as the body
    b.publish(qe, {"mode": "structured"}, message_id="e-2",
              headers={"traceparent": "00-%s-00f067aa0ba902b7-01" % tid})
    wait_for(lambda: b.depth(emitted) >= 1, 20, "the structured CloudEvent emitted")
    msgs = b.drain(emitted)
    check_eq(len(msgs), 1, "one structured event emitted")
    if msgs:
        props, body = msgs[0]
        check_eq(props.content_type, "application/cloudevents+json",
                 "structured mode's content type")
        check_eq(sorted(k for k in (props.headers or {}) if k.lower().startswith("cloudevents")),
                 [], "no cloudEvents: headers in structured mode")
        ev = json.loads(body)
        check_eq(sorted(ev), ["data", "datacontenttype", "id", "source", "specversion",
                              "subject", "time", "traceparent", "type"],
                 "the attributes and the data in the body")
        check_eq((ev.get("specversion"), ev.get("id"), ev.get("type"), ev.get("source"),
                  ev.get("subject"), ev.get("datacontenttype"), ev.get("data")),
                 ("1.0", props.message_id, "com.example.someevent", "/warren/emit", "orders/o-1",
                  "application/json", {"appinfoA": "from e-2", "appinfoB": 7}),
                 "specversion 1.0, the deterministic id, type, source, subject, the data")
        check_eq(props.message_id, "e-2:emit:1", "the deterministic id (structured)")
        check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ev.get("time", "")),
              "time is RFC 3339: %r" % ev.get("time"))
        check((ev.get("traceparent") or "").startswith("00-%s-" % tid),
              "the trace as the traceparent extension: %r" % ev.get("traceparent"))
        b.publish(q, body, message_id=props.message_id, content_type=props.content_type,
                  headers=props.headers)
        wait_for(lambda: b.depth(out) >= 1, 20, "the structured CloudEvent handled")
        back = [json.loads(x) for _, x in b.drain(out)]
        check_eq(len(back), 1, "read back once (structured)")
        if back:
            check_eq(back[0].get("cloudevent"), {k: v for k, v in ev.items() if k != "data"},
                     "read back with the same attributes (structured)")
            check_eq(back[0].get("data"), ev.get("data"), "and the same data (structured)")
    check_eq(w.stop(), 0, "exit 0")
finally:
    if w.alive():
        w.stop()
    for s in subs:
        b.delete(s["queue"], s["queue"] + ".dlq", s["queue"] + ".wait",
                 *["%s.retry.%s" % (s["queue"], d) for d in ("1s", "5s", "30s", "2m")])
    b.delete(out)
    b.close()
finish()
