"""`warren exec` takes the sidecar's commit decision for ctx.store writes: it
runs the sidecar's own commit script (sidecar/scripts/finish.lua) over an
in-memory Redis seeded from the event file, so a write Redis would refuse (a
hincrby on a key the store holds as a string, an incrby over "05") is
reported as the sidecar would dead-letter it (store-refused, in the script's
words), and a value the handler read that another message changed before the
commit ("store_at_commit") is a conflict: nothing applied, the message runs
again. The same events then go through the running sidecar against the real
Redis, and its DLQ copy carries the reason and error exec printed; the
conflict is made for real (another write to the key while the handler waits
at a gate after its read): the sidecar logs exec's words, applies nothing and
runs the message again. The busted kit (testing.event_file and
testing.deliver over the same event files and config) decides as exec for
every event."""
import json
import os
import subprocess

from wrtest import (ENV, GATE_LUA, SOURCE_DIR, WARREN, Broker, Gate, Warren, check, check_eq,
                    finish, prefix, redis_client, tempdir, wait_for, write)

tmp = tempdir()
write(os.path.join(tmp, "refunds.lua"), GATE_LUA + r'''local M = {}
function M.handle(event, ctx)
  local d = event.data
  if d.read then
    d.seen = ctx.store.hget("customer:" .. d.customer, "refunded_cents")
  end
  if d.gate then
    ctx.log.info("started")
    gate(ctx, d.gate, event.id) -- the sidecar's run waits here, after its read
  end
  ctx.store.hincrby("customer:" .. d.customer, "refunded_cents", d.amount)
  ctx.store.incrby("refunds:count", 1)
  ctx.publish("", "refund.done", { refund_id = d.refund_id, seen = d.seen })
end
return M
''')
P = prefix()
SP = P + ":store:"
sub = {"name": "refunds", "queue": prefix() + ".refunds", "handler": "refunds.lua",
       "retry": {"max_attempts": 3, "delays": ["1s"]},
       "idempotency": {"key": "json:refund_id", "prefix": P + ":idem:"}}
w = Warren(tmp, [sub], extra="store:\n  prefix: \"%s\"\n" % SP)
cfg = w.config


def run_exec(event, name):
    path = os.path.join(tmp, name + ".json")
    write(path, json.dumps(event))
    env = dict(os.environ)
    env.update(ENV)
    p = subprocess.run([WARREN, "exec", "-c", cfg, "--subscription", "refunds", "--event", path,
                        "--json"], capture_output=True, text=True, env=env, timeout=30)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        check(False, "exec %s printed JSON (stderr: %s)" % (name, p.stderr.strip()[-300:]))
        return p.returncode, {}


def data(refund, customer="c-7", amount=100, read=False):
    return {"refund_id": refund, "customer": customer, "amount": amount, "read": read}


refused_why = "ctx.store.hincrby: key %scustomer:c-7 holds a string in Redis" % SP
cases = {
    # the case: the store holds the customer as a string, not a hash
    "string": ({"id": "m-1", "data": data("r-1"), "store": {"customer:c-7": "500"}},
               1, "refused", {"action": "dead-letter", "queue": sub["queue"] + ".dlq",
                              "reason": "store-refused",
                              "error": "store writes refused, nothing applied: " + refused_why}),
    "counter": ({"id": "m-2", "data": data("r-2", customer="c-8"),
                 "store": {"refunds:count": "05"}},
                1, "refused", {"action": "dead-letter", "queue": sub["queue"] + ".dlq",
                               "reason": "store-refused",
                               "error": "store writes refused, nothing applied: ctx.store.incrby: "
                               "the value of %srefunds:count is not an integer or would overflow"
                               % SP}),
    "hash": ({"id": "m-3", "data": data("r-3", customer="c-9"),
              "store": {"customer:c-9": {"refunded_cents": 500}}},
             0, "applied", {"action": "ack"}),
    "conflict": ({"id": "m-4", "data": data("r-4", customer="c-9", read=True),
                  "store": {"customer:c-9": {"refunded_cents": "500"}},
                  "store_at_commit": {"customer:c-9": {"refunded_cents": "700"}}},
                 1, "conflict", {"action": "requeue", "queue": sub["queue"],
                                 "why": "store conflict: %scustomer:c-9 changed since the handler "
                                 "read it; nothing applied, the message runs again" % SP}),
    "blind": ({"id": "m-5", "data": data("r-5", customer="c-9"),
               "store": {"customer:c-9": {"refunded_cents": "500"}},
               "store_at_commit": {"customer:c-9": {"refunded_cents": "700"}}},
              0, "applied", {"action": "ack"}),
}
reports = {}
for name, (event, rc_want, commit, decision) in cases.items():
    rc, rep = run_exec(event, name)
    reports[name] = rep
    check_eq(rc, rc_want, "%s: exec exit status" % name)
    check_eq(rep.get("outcome"), "ok", "%s: the handler itself succeeded" % name)
    check_eq((rep.get("commit") or {}).get("result"), commit, "%s: the commit" % name)
    check_eq(rep.get("decision"), decision, "%s: the decision" % name)
    check_eq(len(rep.get("published") or []), 1,
             "%s: its event is published either way (the sidecar publishes before the commit)"
             % name)
check_eq(reports["string"]["commit"].get("error"), refused_why, "the script's own words")

# The same event files through the busted kit, with the same config: the same decisions.
KIT = r'''
local cjson = require "cjson"
local testing = require "warren.testing"
local m = assert(testing.load(arg[2]))
local out = {}
for i = 3, #arg do
  local ctx = testing.ctx{ config = arg[1], subscription = "refunds" }
  local event, opts = testing.event_file(arg[i], ctx)
  local res = testing.deliver(m, event, ctx, opts)
  out[arg[i]] = { decision = res.decision, commit = res.commit or cjson.null }
end
io.write(cjson.encode(out))
'''
kit_env = dict(os.environ)
kit_env.update(ENV)
kit_env["LUA_PATH"] = os.path.join(SOURCE_DIR, "lua", "?.lua") + ";;"
kit_env["WARREN_BIN"] = WARREN
paths = {name: os.path.join(tmp, name + ".json") for name in cases}
p = subprocess.run(["luajit", write(os.path.join(tmp, "kit.lua"), KIT), cfg,
                    os.path.join(tmp, "refunds.lua")]
                   + list(paths.values()), capture_output=True, text=True, env=kit_env,
                   timeout=120)
check_eq(p.returncode, 0, "the kit delivers every event file (%s)" % p.stderr.strip()[-300:])
kit = json.loads(p.stdout) if p.returncode == 0 else {}
for name, path in paths.items():
    got = kit.get(path) or {}
    rep = reports[name]
    check_eq((got.get("commit"), got.get("decision")),
             ((rep.get("commit") or {}).get("result"), rep.get("decision")),
             "%s: the kit commits and decides as exec" % name)

# The same refused events through the running sidecar, each over its exec state in Redis.
r = redis_client()
b = Broker()
b.declare(sub["queue"])
w.start()
check(w.wait_consuming(1), "consuming")
for name in ("string", "counter"):
    ev = cases[name][0]
    for k in r.keys(SP + "*"):
        r.delete(k)
    for k, v in ev["store"].items():
        r.set(SP + k, v)
    b.publish(sub["queue"], ev["data"], message_id=ev["id"])
    wait_for(lambda: b.depth(sub["queue"] + ".dlq") >= 1, 30, "%s dead-lettered" % name)
    dead = {props.message_id: props.headers for props, _ in b.drain(sub["queue"] + ".dlq")}
    h = dead.get(ev["id"]) or {}
    want = cases[name][3]
    check_eq((h.get("x-warren-reason"), h.get("x-warren-error")), (want["reason"], want["error"]),
             "%s: the sidecar dead-letters it as exec said" % name)
    check_eq({k[len(SP):]: r.get(k) for k in r.keys(SP + "*")}, ev["store"],
             "%s: nothing applied in Redis" % name)

# The conflict for real: the handler reads the customer's ledger and waits at a
# gate; meanwhile another write changes it (what the event file's
# "store_at_commit" says); its commit is a conflict in exec's words, nothing of
# it applied, and the message runs again over the new value.
gate = Gate()
ev = cases["conflict"][0]
for k in r.keys(SP + "*"):
    r.delete(k)
for k, v in ev["store"].items():
    r.hset(SP + k, mapping=v)
b.publish(sub["queue"], dict(ev["data"], gate=gate.url), message_id=ev["id"])
gate.wait(ev["id"], 30, "the conflict event at its gate, after its read")
for k, v in ev["store_at_commit"].items():
    r.hset(SP + k, mapping=v)
gate.open(ev["id"])
wait_for(lambda: w.lines(msg="message handled", message_id=ev["id"]), 30,
         "the conflict event handled")
errors = [l.get("error") for l in w.lines(message_id=ev["id"]) if l.get("error")]
check_eq(errors, [(reports["conflict"].get("decision") or {}).get("why")],
         "the sidecar's conflict, in exec's words (and the kit's)")
check_eq(len(w.lines(msg="started", message_id=ev["id"])), 2, "the message ran again")
check_eq(r.hgetall(SP + "customer:c-9"), {"refunded_cents": "800"},
         "the first run applied nothing; the second added its 100 to the other write's 700")
gate.close()
check_eq(w.stop(), 0, "exit 0")
q = sub["queue"]
b.delete(q, q + ".dlq", q + ".wait", q + ".retry.1s")
b.close()
finish()
