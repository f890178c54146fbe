"""The docs' examples do what the docs say: every example of docs/*.md that no
other test runs is run here, read from the document itself (so an edit that
breaks an example fails here), and its output compared with what the page
shows, after normalising what changes from run to run (times, handler
versions, durations, the scratch directory, ports).

- docs/contracts.md: the file's shape (placeholders emptied) is a contracts
  file `warren check` loads; the violations block is what `warren exec` prints for an
  event that breaks a contract in those three ways; the upcaster is
  config/upcasters/order_created_v1.lua (the same code) and passes `warren
  check` in the example contracts; the `warren exec` contract steps are what
  exec prints for a v1 event upcast twice.
- docs/handler-api.md: the orders handler passes `warren check` (its init
  logs the version) and does what it says through `warren exec`; the
  ctx.store snippet, run in a handler, reads, writes and reads its own write
  as its comments say.
- docs/testing-handlers.md: the `warren exec` output, for the event file it
  shows; the output without a fake for the HTTP call; `cd handlers && busted`.
- docs/cli.md: each `warren check` error line is what check prints for a
  config written to cause it.
- docs/ordering.md: each YAML snippet, merged into a config, passes `warren
  check`, and so do the alternatives its comments name; what its prose says
  check refuses is refused. On the real RabbitMQ and Redis, the partitions
  snippet declares its exchange and single-active-consumer partitions and
  re-routes a message to its handler, and the gate holds an order.cancelled
  until its order.created is done.
- docs/operations.md: the podman command mounts a directory whose config
  passes `warren check` with the two variables it sets, in the image
  deploy/container/build.sh tags; on the real servers, a shop of three
  subscriptions plays the examples: `dlq list --group-by reason`, the log's
  dead-lettered line (every field), `warren trace` before and after a replay
  and its `published:` tree, and `curl /readyz` while Redis does not answer.
- docs/development.md: the layout map names every folder of the tree (the
  top-level ones, and those of sidecar/ and tests/) and only files that exist,
  and an entry that names most of its folder's files names all of them; the
  commands of "Building by hand" (builds take minutes: not run) name options,
  targets, labels and paths the build has.
"""
import glob
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, SOURCE_DIR, WARREN, Broker, Warren, check, check_eq,  # noqa: E402
                    delete_queues, finish, tempdir, wait_for, write)

SHOWN = "/srv"  # where the pages' projects live in their outputs

env = dict(os.environ)
env.update(ENV)
env["PATH"] = os.path.dirname(WARREN) + ":" + env.get("PATH", "")


def page(name):
    with open(os.path.join(SOURCE_DIR, "docs", name)) as fh:
        return fh.read()


def doc_block(name, first_line, lang=None):
    """The fenced block of docs/NAME whose first line starts with FIRST_LINE
    (and whose language is LANG when given), without its fences; None (and a
    failed check) when the page has no such block."""
    for m in re.finditer(r"^```([a-z]*)\n(.*?)^```", page(name), re.S | re.M):
        if m.group(2).startswith(first_line) and (lang is None or m.group(1) == lang):
            return m.group(2)
    check(False, "docs/%s has a block starting %r" % (name, first_line))
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def canonical_json(m):
    """A flat JSON object with its keys sorted: LuaJIT hashes strings with a
    per-process seed, so cjson writes a table's keys in no fixed order."""
    try:
        return json.dumps(json.loads(m.group(0)), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return m.group(0)


def normalise(text, where=None):
    if where:
        text = text.replace(os.path.realpath(where), SHOWN).replace(where, SHOWN)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "<time>", text)
    text = re.sub(r"\b[0-9a-f]{12}\b", "<version>", text)
    text = re.sub(r"\d+\.\d+ ms\b", "<n> ms", text)
    return re.sub(r"\{[^{}]*\}", canonical_json, text)


def lines_of(text):
    return text.rstrip("\n").split("\n")


def run(args, cwd=None, extra_env=None):
    e = dict(env)
    e.update(extra_env or {})
    p = subprocess.run(args, cwd=cwd, env=e, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def warren(*args, cwd=None):
    return run([WARREN] + list(args), cwd=cwd)


CONFIG_HEAD = "amqp:\n  url: ${WARREN_AMQP_URL}\nredis:\n  url: ${WARREN_REDIS_URL}\n"
tmp = tempdir()


def project(name, files):
    """A scratch directory NAME holding FILES ({relative path: text})."""
    d = os.path.join(tmp, name)
    for path, text in files.items():
        full = os.path.join(d, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        write(full, text)
    return d


def exec_json(cwd, sub, event, config="warren.yaml"):
    """`warren exec --json` of EVENT (a dict): (exit status, report, stderr)."""
    path = write(os.path.join(cwd, "event.json"), json.dumps(event))
    rc, out, err = warren("exec", "-c", config, "--subscription", sub, "--event", path, "--json",
                          cwd=cwd)
    try:
        return rc, json.loads(out), err
    except ValueError:
        return rc, {}, err + out


def log_lines(text):
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


# ---- docs/contracts.md ----------------------------------------------------------------
# The violations: a contract and an event that break it in the three ways shown.
shown = doc_block("contracts.md", "order.created v2: /: required")
contract = '''events:
  order.created:
    version: 2
    schema:
      type: object
      required: [order_id, customer_id, items]
      properties:
        order_id: { type: string }
        customer_id: { type: string }
        items: { type: array, items: { type: object,
                 properties: { quantity: { type: integer, minimum: 1 } } } }
        timestamp: { type: string, format: date-time }
'''
ok_handler = "return { handle = function(event, ctx) end }\n"
sub_yaml = '''subscriptions:
  - name: orders
    queue: orders
    handler: handlers/ok.lua
    contracts: { file: contracts.yaml }
'''
d = project("violations", {"contracts.yaml": contract, "handlers/ok.lua": ok_handler,
                           "warren.yaml": CONFIG_HEAD + sub_yaml})
rc, rep, err = exec_json(d, "orders", {"id": "m-1", "type": "order.created",
                                       "headers": {"version": 2},
                                       "data": {"order_id": "o-1", "items": [{"quantity": 0}],
                                                "timestamp": "yesterday"}})
check_eq((rc, (rep.get("decision") or {}).get("reason")), (1, "schema-invalid"),
         "contracts.md: the event is dead-lettered as schema-invalid (%s)" % err[-300:])
check_eq(rep.get("error"), " ".join(lines_of(shown or "")),
         "contracts.md: the violations are the ones the page shows (its block is one line, "
         "wrapped)")

# The contracts file's shape, its placeholders ({ ... }, [ ... ]) left empty, is a
# contracts file warren check loads (with the page's upcaster path).
shown = doc_block("contracts.md", "events:\n  order.created:", "yaml")
shape = (shown or "").replace("{ ... }", "{}").replace("[ ... ]", "[]")
with open(os.path.join(SOURCE_DIR, "config", "upcasters", "order_created_v1.lua")) as fh:
    upcaster = fh.read()
upcaster_path = re.search(r"upcaster: (\S+)", shape)
d = project("shape", {"contracts.yaml": shape, "handlers/ok.lua": ok_handler,
                      (upcaster_path[1] if upcaster_path else "up.lua"): upcaster,
                      "warren.yaml": CONFIG_HEAD + sub_yaml})
rc, out, err = warren("check", "-c", "warren.yaml", cwd=d)
check(rc == 0 and "1 event contract, examples valid" in out,
      "contracts.md: the contracts file's shape loads (%s)" % (out + err)[-300:])

# The upcaster: the page's code is config/upcasters/order_created_v1.lua's, and it
# passes `warren check` in the example's contracts (check runs it on the v1 examples).
shown = doc_block("contracts.md", "-- config/upcasters/order_created_v1.lua", "lua")
with open(os.path.join(SOURCE_DIR, "config", "upcasters", "order_created_v1.lua")) as fh:
    real = fh.read()


def code(text):
    """Lua text without its comments, whitespace and trailing commas in tables."""
    return re.sub(r"\s+", "", re.sub(r"--[^\n]*", "", text)).replace(",}", "}")


check_eq(code(shown or ""), code(real),
         "contracts.md's upcaster is config/upcasters/order_created_v1.lua's code")
with open(os.path.join(SOURCE_DIR, "config", "contracts.yaml")) as fh:
    contracts = fh.read()
d = project("upcaster", {"contracts.yaml": contracts, "handlers/ok.lua": ok_handler,
                         "upcasters/order_created_v1.lua": shown or "",
                         "warren.yaml": CONFIG_HEAD + sub_yaml})
rc, out, err = warren("check", "-c", "warren.yaml", cwd=d)
check(rc == 0 and "examples valid" in out,
      "contracts.md's upcaster passes warren check in config/contracts.yaml (%s)"
      % (out + err)[-300:])
rc, rep, err = exec_json(d, "orders", {
    "id": "m-2", "type": "order.created", "headers": {"version": 1},
    "data": {"order_id": "o-2", "customer": "c-2", "amount": 3.0,
             "lines": [{"sku": "pen-1", "quantity": 2}]}})
body = json.loads((rep.get("contract") or {}).get("body_for_handler") or "null")
check_eq((rc, body), (0, {"order_id": "o-2", "customer_id": "c-2", "total": 3.0,
                          "items": [{"sku": "pen-1", "qty": 2}]}),
         "contracts.md's upcaster turns a v1 order into v2 (%s)" % err[-300:])

# `warren exec`'s contract steps: a v1 event upcast to v2, then to v3.
shown = doc_block("contracts.md", "contract      order.created v1 received")
v1 = re.search(r"upcast +v1 -> v2 ok: (\{.*\})", shown or "")
contract3 = '''events:
  order.created:
    version: 3
    schema: { type: object, required: [order_id, customer_id, channel] }
    backwards_compatible_with:
      - version: 1
        upcaster: upcasters/v1.lua
        schema: { type: object, required: [order_id, customer] }
      - version: 2
        upcaster: upcasters/v2.lua
'''
d = project("steps", {
    "contracts.yaml": contract3, "handlers/ok.lua": ok_handler,
    "upcasters/v1.lua": "return function(data, info)\n"
                        "  return { order_id = data.order_id, customer_id = data.customer }\n"
                        "end\n",
    "upcasters/v2.lua": 'return function(data, info)\n  data.channel = "web"\n  return data\n'
                        "end\n",
    "warren.yaml": CONFIG_HEAD + sub_yaml})
v1_data = json.loads(v1.group(1)) if v1 else {}
v1_data = {"order_id": v1_data.get("order_id"), "customer": v1_data.get("customer_id")}
write(os.path.join(d, "event.json"), json.dumps({"id": "m-3", "type": "order.created",
                                                 "headers": {"version": 1}, "data": v1_data}))
rc, out, err = warren("exec", "-c", "warren.yaml", "--subscription", "orders", "--event",
                      "event.json", cwd=d)
got = lines_of(normalise(out))
start = [i for i, line in enumerate(got) if line.startswith("contract ")]
want = lines_of(normalise(shown or ""))
check_eq(got[start[0]:start[0] + len(want)] if start else got, want,
         "contracts.md: `warren exec` shows the contract's steps as the page does (%s)"
         % err[-200:])

# ---- docs/handler-api.md ----------------------------------------------------------------
shown = doc_block("handler-api.md", "-- handlers/orders.lua", "lua")
d = project("handler-api", {"handlers/orders.lua": shown or "", "warren.yaml": CONFIG_HEAD + '''
subscriptions:
  - name: orders
    queue: orders
    handler: handlers/orders.lua
'''})
rc, out, err = warren("check", "-c", "warren.yaml", cwd=d)
check(rc == 0 and "configuration OK" in out,
      "handler-api.md: the orders handler passes warren check (%s)" % (out + err)[-300:])
rc, rep, err = exec_json(d, "orders", {"id": "m-1", "type": "order.created",
                                       "data": {"order_id": "o-1", "total": 12.5,
                                                "items": [{"sku": "tea"}]}})
check_eq((rc, [(p.get("exchange"), p.get("routing_key"), p.get("type"), json.loads(p["body"]))
               for p in rep.get("published") or []]),
         (0, [("shop.events", "order.confirmed", "order.confirmed",
               {"order_id": "o-1", "total": 12.5})]),
         "handler-api.md: an order with items publishes order.confirmed (%s)" % err[-300:])
logs = log_lines(err)
loaded = [x for x in logs if x.get("msg") == "orders handler loaded"]
check(loaded and all((x.get("fields") or {}).get("version") == rep.get("handler_version")
                     for x in loaded),
      "handler-api.md: init logs the handler's version (%r)" % loaded[:1])
check_eq([(x.get("message_id"), x.get("fields")) for x in logs
          if x.get("msg") == "order confirmed"],
         [("m-1", {"order_id": "o-1"})], "handler-api.md: the handler logs the confirmation")
rc, rep, err = exec_json(d, "orders", {"id": "m-2", "type": "order.created",
                                       "data": {"order_id": "o-2", "items": []}})
check_eq((rc, rep.get("outcome"), (rep.get("decision") or {}).get("action"),
          rep.get("error"), rep.get("published")),
         (1, "rejected", "dead-letter", "order o-2 has no items", []),
         "handler-api.md: an order without items is rejected, to the DLQ, nothing published")
rc, rep, err = exec_json(d, "orders", {"id": "m-3", "type": "order.cancelled",
                                       "data": {"order_id": "o-3"}})
check_eq((rc, rep.get("outcome"), rep.get("published")), (0, "ok", []),
         "handler-api.md: another type returns normally: success, nothing published")
write(os.path.join(d, "handlers", "orders.lua"),
      (shown or "").replace("function M.init(ctx)\n", "function M.init(ctx)\n  error('no')\n"))
rc, out, err = warren("check", "-c", "warren.yaml", cwd=d)
check(rc == 1 and "init" in err, "handler-api.md: an error in init fails warren check (%s)"
      % err.strip()[-200:])

# The ctx.store snippet, in a handler: a proxy ctx.store notes what each call returned.
shown = doc_block("handler-api.md", "local st = ctx.store", "lua")
STORE_HANDLER = '''local M = {}
function M.handle(event, ctx)
  local d = event.data
  local id, sku, qty, customer, cents = d.id, d.sku, d.qty, d.customer, d.cents
  local real, seen = ctx.store, {}
  local proxy = setmetatable({}, { __index = function(_, name)
    return function(...)
      local r = real[name](...)
      seen[#seen + 1] = { name, r == nil and "nil" or r }
      return r
    end
  end })
  local ctx = setmetatable({ store = proxy }, { __index = ctx })
  local function snippet()
%s
  end
  snippet()
  ctx.log.info("store calls", { calls = ctx.json.encode(seen) })
end
return M
'''
d = project("store", {"handlers/store.lua": STORE_HANDLER % (shown or ""),
                      "warren.yaml": CONFIG_HEAD + '''
subscriptions:
  - name: ledger
    queue: ledger
    handler: handlers/store.lua
'''})
data = {"id": "o-1", "sku": "tea", "qty": 2, "customer": "c-7", "cents": 1250}


def store_run(store):
    rc, rep, err = exec_json(d, "ledger", {"id": "m-1", "type": "order.created", "data": data,
                                           "store": store})
    calls = [json.loads(x["fields"]["calls"]) for x in log_lines(err)
             if x.get("msg") == "store calls"]
    return rc, rep.get("store_writes"), calls[0] if calls else err[-300:]


rc, writes, calls = store_run({"stock:tea": "5"})
check_eq((rc, writes), (0, [["incrby", "stock:tea", -2], ["hincrby", "ledger:c-7", "total_cents",
                                                              1250],
                            ["hset", "order:o-1", "state", "created"]]),
         "handler-api.md: the snippet's writes are buffered, in order")
check_eq(calls, [["hget", "nil"], ["incrby", "nil"], ["hincrby", "nil"], ["hset", "nil"],
                 ["get", "3"]],
         "handler-api.md: reads go to the store, writes return nothing, and the last get sees "
         "the -qty (5 - 2)")
rc, writes, calls = store_run({"stock:tea": "5", "order:o-1": {"state": "created"}})
check_eq((rc, writes, calls), (0, [], [["hget", "created"]]),
         "handler-api.md: an order already created returns at the read, writing nothing")

# ---- docs/testing-handlers.md -----------------------------------------------------------
# The page shows exec's output for a refunds handler it does not show: this one
# makes the call, the store write and the publish it reports (the call on line 5).
REFUNDS = '''local M = {}
function M.handle(event, ctx)
  local d = event.data
  ctx.store.hincrby("customer:" .. d.customer, "refunded_cents", d.amount)
  local res = ctx.http.request{ method = "POST", url = URL, body = { amount = d.amount } }
  ctx.publish("shop.events", "refund.done", { refund_id = res.json.refund_id })
end
return M
'''
shown = doc_block("testing-handlers.md", "$ build/warren exec -c warren.yaml", "sh")
event_file = doc_block("testing-handlers.md", "{\n  \"id\": \"rf-9\"", "json")
no_fake = doc_block("testing-handlers.md", "subscription  refunds (handler")
cmd, _, want = (shown or "").partition("\n")
event_name = re.search(r"--event (\S+)", cmd)
event = json.loads(event_file or "{}")
url = (event.get("http") or [{}])[0].get("url", "")
d = project("refunds", {
    "handlers/refunds.lua": REFUNDS.replace("URL", json.dumps(url)),
    (event_name[1] if event_name else "refund.json"): event_file or "",
    "warren.yaml": CONFIG_HEAD + '''
subscriptions:
  - name: refunds
    queue: refunds
    handler: handlers/refunds.lua
    retry: { max_attempts: 4, delays: [5s, 30s, 2m] }
'''})
os.makedirs(os.path.join(d, "build"))
os.symlink(WARREN, os.path.join(d, "build", "warren"))
p = subprocess.run(cmd[2:], shell=True, cwd=d, env=env, capture_output=True, text=True,
                   timeout=60)
check_eq(lines_of(normalise(p.stdout, d)), lines_of(normalise(want)),
         "testing-handlers.md: `%s` prints what the page shows (%s)" % (cmd[2:], p.stderr[-200:]))
event.pop("http", None)
write(os.path.join(d, "no-fake.json"), json.dumps(event))
rc, out, err = warren("exec", "-c", "warren.yaml", "--subscription", "refunds", "--event",
                      "no-fake.json", cwd=d)
check_eq((rc, lines_of(normalise(out, d))), (1, lines_of(normalise(no_fake or ""))),
         "testing-handlers.md: the same event without its fake prints what the page shows")

# "Run this repository's specs": the handlers' specs alone (the kit's and both together
# are ctest's lua_busted, tests/lua/run_busted.sh).
shown = doc_block("testing-handlers.md", "bash tests/lua/run_busted.sh", "sh")
cmds = [line.split("#")[0].strip() for line in lines_of(shown or "")]
check("bash tests/lua/run_busted.sh" in cmds, "testing-handlers.md names run_busted.sh")
with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as fh:
    cmakelists = fh.read()
check(re.search(r"add_test\(NAME lua_busted COMMAND bash [^)]*tests/lua/run_busted\.sh",
                cmakelists), "ctest's lua_busted runs tests/lua/run_busted.sh")
for c in cmds:
    if c.startswith("cd handlers"):
        p = subprocess.run(c, shell=True, cwd=SOURCE_DIR, env=env, capture_output=True,
                           text=True, timeout=120)
        last = lines_of(p.stdout + p.stderr)[-1]
        check(p.returncode == 0 and re.match(r"\d+ successes / 0 failures / 0 errors / 0 pending",
                                             last),
              "testing-handlers.md: `%s` passes (%s)" % (c, last))

# ---- docs/cli.md ------------------------------------------------------------------------
# `warren check`'s error lines: config/warren.yaml with each problem where the
# line shows it (config problems first; handlers are compiled once the config loads).
shown = doc_block("cli.md", "config/warren.yaml:")


def at_line(n, text, lines):
    """Put TEXT at line N of LINES (comments fill the gap)."""
    while len(lines) < n - 1:
        lines.append("# ...")
    check_eq(len(lines), n - 1, "cli.md: line %d is free for %r" % (n, text))
    lines.append(text)


def broken_config(fixed):
    lines = CONFIG_HEAD.rstrip("\n").split("\n")
    at_line(11, "defaults:", lines)
    at_line(12, "    prefetch: %s" % ("10" if fixed else "lots"), lines)
    at_line(28, "subscriptions:", lines)
    at_line(29, "  - name: refunds", lines)
    at_line(30, "    %s: 5" % ("prefetch" if fixed else "prefetc"), lines)
    lines += ["    queue: refunds", "    handler: ../handlers/refunds.lua"]
    at_line(41, "  - name: orders", lines)
    lines += ["    queue: orders", "    handler: ../handlers/orders.lua"]
    return "\n".join(lines) + "\n"


d = project("check-errors", {
    "config/warren.yaml": broken_config(False),
    "handlers/orders.lua": "local M = {}\nfunction M.handle(event, ctx)\n  if then\nend\n"
                           "return M\n",
    "handlers/refunds.lua": "local M = {}\n\nfunction M.handle(event, ctx)\n"
                            "  local id = event.data.refund_id\n  ctx.log.info(\"refund\")\n"
                            "  -- the refunds already made\n"
                            "  local n = store.get(\"refunds:\" .. id)\nend\n\nreturn M\n"})
got = []
for fixed in (False, True):
    write(os.path.join(d, "config", "warren.yaml"), broken_config(fixed))
    rc, out, err = warren("check", "-c", "config/warren.yaml", cwd=d)
    check_eq(rc, 1, "cli.md: warren check exits 1 (%s config)" % ("fixed" if fixed else "broken"))
    got += lines_of(normalise(err, d))
want = lines_of(shown or "")
check_eq(len(got), len(want), "cli.md: as many problems as the page shows (%r)" % got)
for g, w in zip(got, want):
    pattern = ".*".join(re.escape(part) for part in w.split("..."))
    check(re.fullmatch(pattern, g), "cli.md: `%s` is what warren check prints (%s)" % (w, g))

# ---- docs/ordering.md -------------------------------------------------------------------
# Each snippet, given what it leaves out (a queue, a handler), passes warren check;
# so does each alternative its comments name (`# or X`, `# ..., or X`), and what the prose says
# check refuses is refused.
snippets = re.findall(r"^```yaml\n(subscriptions:\n.*?)^```", page("ordering.md"), re.S | re.M)
check_eq(len(snippets), 3, "ordering.md shows three snippets")
d = project("ordering-check", {"handlers/ok.lua": ok_handler})


def ordering_check(snippet, name):
    """warren check of SNIPPET completed into a config: (exit status, stderr)."""
    text = snippet
    if not re.search(r"^    queue:", text, re.M):
        text += "    queue: doc.ordering\n"
    text += "    handler: handlers/ok.lua\n"
    write(os.path.join(d, name + ".yaml"), CONFIG_HEAD + text)
    rc, out, err = warren("check", "-c", name + ".yaml", cwd=d)
    return rc, err.strip()


for i, snippet in enumerate(snippets):
    rc, err = ordering_check(snippet, "s%d" % i)
    check_eq((rc, err), (0, ""), "ordering.md: snippet %d passes warren check" % (i + 1))
    for m in re.finditer(r"^( +\w+: )(\S+)( +#(?:[^\n]*,)? or )(\S+)", snippet, re.M):
        alt = m.group(4).replace("NAME", "x-order-id").rstrip(";,")
        variant = snippet.replace(m.group(0), m.group(1) + alt)
        rc, err = ordering_check(variant, "s%d-alt" % i)
        check_eq((rc, err), (0, ""), "ordering.md: snippet %d with %s: %s passes"
                 % (i + 1, m.group(1).strip().rstrip(":"), alt))
lanes, partitions, gates = (snippets + ["", "", ""])[:3]
refused = [
    ("the ordering key message_id", lanes, "json:order_id ", "message_id ",
     "ordering.key: expected header:NAME or json:PATH"),
    ("partitions without ordering.key", partitions, "    ordering: {key: json:order_id}", "",
     "partitions: needs ordering.key"),
    ("65 partitions", partitions, "partitions: 8 ", "partitions: 65 ",
     "partitions: expected an integer from 1 to 64"),
    ("a gate keyed on message_id", gates, "key: json:order_id ", "key: message_id ",
     "gates[0].key: expected header:NAME or json:PATH"),
    ("a gate that waits for itself", gates, "after: order.created ", "after: order.cancelled ",
     "gates[0].after: a type cannot wait for itself"),
    ("a gate without idempotency", gates + "    idempotency: { enabled: false }\n", "", "",
     "gates: need idempotency.enabled"),
    ("a gate whose predecessor no binding routes",
     gates + "    bindings: [{ exchange: shop.events, routing_keys: [order.cancelled] }]\n",
     "", "", "no binding of queue 'doc.ordering' routes 'order.created'"),
]
for what, snippet, old, new, error in refused:
    check(old in snippet, "ordering.md: the snippet has %r" % old)
    rc, err = ordering_check(snippet.replace(old, new, 1) if old else snippet, "refused")
    check(rc == 1 and error in err, "ordering.md: warren check refuses %s (%s)" % (what, err))
rc, err = ordering_check(gates + "    bindings: [{ exchange: shop.events, routing_keys: "
                         "[order.created, order.cancelled] }]\n", "bound")
check_eq((rc, err), (0, ""), "ordering.md: the gate passes with a binding for both types")

# ---- docs/development.md ----------------------------------------------------------------
# The layout map: an entry is a line that starts with a path (or two, comma-separated);
# the lines below it, indented, continue its text.
shown = doc_block("development.md", "sidecar/src/")
entries = []
for line in lines_of(shown or ""):
    m = re.match(r"((?:[\w.-]+/)*[\w.-]+/?(?:, (?:[\w.-]+/)*[\w.-]+/?)*) ", line)
    if m and not line.startswith(" "):
        entries.append([m.group(1).split(", "), line[m.end():]])
    elif entries:
        entries[-1][1] += " " + line.strip()
tracked = subprocess.run(["git", "-C", SOURCE_DIR, "ls-files"], capture_output=True,
                         text=True).stdout.split()
tracked_dirs = set()
for f in tracked:
    parts = f.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        tracked_dirs.add("/".join(parts[:i]))
named = set()
for paths, text in entries:
    for path in paths:
        full = os.path.join(SOURCE_DIR, path)
        check(os.path.exists(full), "development.md: %s exists" % path)
        named.add(path.rstrip("/"))
    top = os.path.join(SOURCE_DIR, paths[-1])
    base = top if os.path.isdir(top) else SOURCE_DIR
    # every file or folder its text names exists, under it or from the root
    mentioned = set(re.findall(r"(?<![\w./-])((?:[\w-]+/)*[\w.-]+\.(?:lua|sh|py|c|h|md|yaml|cmake)"
                               r"|(?:[\w-]+/)+)(?![\w/])", text))
    for name in sorted(mentioned):
        found = os.path.exists(os.path.join(base, name)) or \
            os.path.exists(os.path.join(SOURCE_DIR, name)) or \
            any(f == name or f.endswith("/" + name) for f in tracked)
        check(found, "development.md: %s names %s, which exists" % (paths[-1], name))
    # a list that names most of a folder's entries names all of them
    if os.path.isdir(top):
        children = set(c for c in os.listdir(top) if not c.startswith(".") and
                       (os.path.relpath(os.path.join(top, c), SOURCE_DIR) in tracked_dirs or
                        os.path.relpath(os.path.join(top, c), SOURCE_DIR) in tracked))
        said = set(n.split("/")[0] for n in mentioned) & children
        if len(said) * 2 >= len(children) and len(said) >= 2:
            check_eq(sorted(children - said), [],
                     "development.md: %s names most of its entries, so all of them" % paths[-1])
# every folder of the tree is in the map: the top-level ones, and those of
# sidecar/ and tests/ (whose map names their folders one by one)
for folder in sorted(tracked_dirs):
    parts = folder.split("/")
    if folder.startswith(".") or len(parts) > 2 or (len(parts) == 2) != (parts[0] in
                                                                         ("sidecar", "tests")):
        continue
    check(any(folder == n or folder.startswith(n + "/") for n in named),
          "development.md: the layout map names %s/" % folder)

# "Building by hand": builds take minutes, so its commands are checked against the
# build, not run: every option is one of CMakeLists.txt's, every target and ctest
# label exists, every path and script is there.
shown = doc_block("development.md", "bash deploy/install-deps.sh", "sh")
options = set(re.findall(r"^option\((\w+)", cmakelists, re.M))
labels = set(re.findall(r"LABELS (\w+)", cmakelists))
targets = set(re.findall(r"add_(?:executable|custom_target)\((\w+)", cmakelists))
targets |= set("fuzz_" + os.path.basename(f)[5:-2]
               for f in glob.glob(os.path.join(SOURCE_DIR, "tests", "fuzz", "fuzz_*.c")))
seen = {"option": 0, "label": 0, "target": 0}
for line in lines_of(shown or ""):
    for command in line.split("#")[0].split("&&"):
        words = shlex.split(command)
        while words and "=" in words[0]:
            words = words[1:]  # CC=clang-14
        for i, w in enumerate(words):
            if w.startswith("-D"):
                seen["option"] += 1
                check(w[2:].split("=")[0] in options, "development.md: %s is an option" % w)
            elif w == "-L":
                seen["label"] += 1
                check(words[i + 1] in labels, "development.md: ctest label %s" % words[i + 1])
            elif w == "--target":
                seen["target"] += 1
                check(words[i + 1] in targets, "development.md: target %s" % words[i + 1])
        if words and words[0] == "bash":
            check(os.path.exists(os.path.join(SOURCE_DIR, words[1])),
                  "development.md: %s exists" % words[1])
        elif words and words[0].startswith("build-fuzz/"):
            check(os.path.basename(words[0]) in targets, "development.md: %s is a fuzz target"
                  % words[0])
            check(all(os.path.exists(os.path.join(SOURCE_DIR, w)) for w in words[1:]
                      if not w.startswith("-")), "development.md: %s's corpus exists" % words[0])
check(all(seen.values()), "development.md: the commands name options, labels and targets (%r)"
      % seen)

# ---- docs/operations.md: podman ---------------------------------------------------------
# The image is not built here (deploy/container/build.sh: minutes, mmdebstrap, a
# mirror), and podman is not installed: what the command relies on is checked.
shown = doc_block("operations.md", "podman run", "sh")
words = shlex.split((shown or "").replace("\\\n", " "))
volume = words[words.index("-v") + 1].split(":") if "-v" in words else ["", "", ""]
source = volume[0].replace("$PWD", SOURCE_DIR)
variables = [w.split("=")[0] for i, w in enumerate(words) if i and words[i - 1] == "-e"]
with open(os.path.join(SOURCE_DIR, "deploy", "container", "Dockerfile")) as fh:
    dockerfile = fh.read()
cmd = re.search(r'^CMD \["run", "-c", "([^"]+)"\]', dockerfile, re.M)
check(cmd and os.path.dirname(cmd[1]) == volume[1],
      "operations.md: podman mounts %s where the image's default command reads its config (%s)"
      % (volume[1], cmd and cmd[1]))
version = re.search(r"project\(warren VERSION ([0-9.]+)", cmakelists)
with open(os.path.join(SOURCE_DIR, "deploy", "container", "build.sh")) as fh:
    build_sh = fh.read()
check("IMAGE=${IMAGE:-localhost/warren:$VERSION}" in build_sh and version and
      words[-1] == "localhost/warren:" + version[1],
      "operations.md: the image is the one deploy/container/build.sh tags (%s)" % words[-1])
e = {k: v for k, v in env.items() if not k.startswith("WARREN_")}
e.update({v: ENV[v] for v in variables})
p = subprocess.run([WARREN, "check", "-c", os.path.join(source, "warren.yaml")], env=e,
                   capture_output=True, text=True, timeout=60)
check(variables == ["WARREN_AMQP_URL", "WARREN_REDIS_URL"] and p.returncode == 0,
      "operations.md: the mounted config passes warren check with the variables podman sets "
      "(%s: %s)" % (variables, (p.stdout + p.stderr).strip()[-300:]))

# ---- on the real RabbitMQ and Redis -----------------------------------------------------
# docs/operations.md's examples: a shop whose orders publish a payment request and a
# confirmation; payments fail or decline some; notifications has a bug (an order
# without an e-mail address) that is fixed, then its DLQ replayed.
ORDERS = '''-- orders: ask for the payment, confirm the order
local M = {}
function M.handle(event, ctx)
  ctx.publish("shop.events", "payment.requested", event.data)
  ctx.publish("shop.events", "order.confirmed", event.data)
end
return M
'''
PAYMENTS = '''-- payments: charge the order
local M = {}
function M.handle(event, ctx)
  local p = event.data
  if p.declined then return ctx.reject("card declined") end
  if p.fail then error("payment service unavailable") end
end
return M
'''
NOTIFY = '''-- notifications: mail the customer about the order
local M = {}

function M.handle(event, ctx)
  local order = event.data
  if order.unsubscribed then
    return ctx.reject("the customer unsubscribed")
  end
  local email = order.email
  if email == nil then
    -- orders placed by phone have none
    error("no e-mail address")
  end
  ctx.publish("shop.events", "notification.sent", { order_id = order.order_id, to = email })
end

return M
'''
NOTIFY_FIXED = NOTIFY.replace('error("no e-mail address")', 'email = "phone"')
SHOP = CONFIG_HEAD + '''http:
  listen: 127.0.0.1:0
  queue_poll: 1s
subscriptions:
  - name: orders
    queue: orders.events
    handler: handlers/orders.lua
    bindings: [{ exchange: shop.events, routing_keys: [order.created] }]
  - name: payments
    queue: payments
    handler: handlers/payments.lua
    retry: { max_attempts: 1 }
    bindings: [{ exchange: shop.events, routing_keys: [payment.requested] }]
  - name: notifications
    queue: notifications.in
    handler: handlers/notifications.lua
    retry: { max_attempts: 3, delays: [1s, 5s] }
    bindings: [{ exchange: shop.events, routing_keys: [order.confirmed] }]
'''
shop_queues = []
for q in ("orders.events", "payments", "notifications.in"):
    shop_queues += [q, q + ".dlq", q + ".wait", q + ".retry.1s", q + ".retry.5s"]
delete_queues(shop_queues)
shop = project("shop", {"handlers/orders.lua": ORDERS, "handlers/payments.lua": PAYMENTS,
                        "handlers/notifications.lua": NOTIFY, "warren.yaml": SHOP})
w = Warren(shop, [], name="shop")
w.config = os.path.join(shop, "warren.yaml")
b = None


def shell(cmd, cwd, extra_env=None):
    e = dict(env)
    e.update(extra_env or {})
    p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=e, capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stdout + p.stderr


# docs/ordering.md's partitions and gate snippets, run: one more sidecar.
ORDERING_HANDLER = '''local M = {}
function M.handle(event, ctx)
  ctx.log.info("ran", { type = event.type, order_id = event.data.order_id })
end
return M
'''
ordering = project("ordering", {
    "handlers/ordering.lua": ORDERING_HANDLER,
    "warren.yaml": CONFIG_HEAD + "http:\n  listen: 127.0.0.1:0\n" + partitions +
    "    handler: handlers/ordering.lua\n" + gates.replace("subscriptions:\n", "") +
    "    queue: doc.ledger\n    handler: handlers/ordering.lua\n"
    "    bindings: [{ exchange: doc.ordering,\n"
    "                 routing_keys: [order.created, order.cancelled] }]\n"})
ordered_queue = re.search(r"^    queue: (\S+)", partitions, re.M)
ordered_queue = ordered_queue[1] if ordered_queue else "orders"
n_partitions = int((re.search(r"^    partitions: (\d+)", partitions, re.M) or [0, 0])[1])
ordering_queues = []
for q in (ordered_queue, "doc.ledger"):
    ordering_queues += [q + s for s in ("", ".dlq", ".wait", ".retry.1s", ".retry.5s",
                                        ".retry.30s", ".retry.2m")]
ordering_queues += ["%s.p%d" % (ordered_queue, i) for i in range(n_partitions)]
delete_queues(ordering_queues)
wo = Warren(ordering, [], name="ordering")
wo.config = os.path.join(ordering, "warren.yaml")

# docs/operations.md's /readyz while Redis does not answer: a sidecar whose Redis is
# a port nothing listens on.
readyz_shown = doc_block("operations.md", "$ curl -s -w '%{http_code}\\n' localhost:9464/readyz")
closed = free_port()
readyz = project("readyz", {"handlers/ok.lua": ok_handler, "warren.yaml": CONFIG_HEAD.replace(
    "${WARREN_REDIS_URL}", "redis://127.0.0.1:%d/0" % closed) + '''http:
  listen: 127.0.0.1:0
subscriptions:
  - name: doc-readyz
    queue: doc.readyz
    handler: handlers/ok.lua
'''})
wr = Warren(readyz, [], name="readyz")
wr.config = os.path.join(readyz, "warren.yaml")

trace_shown = doc_block("operations.md", "$ warren trace -c warren.yaml evt-1002")
before_shown = doc_block("operations.md", "where: dlq - in the DLQ notifications.in.dlq")
tree_shown = doc_block("operations.md", "published:\n  |- m-2:orders:1")
group_shown = doc_block("operations.md",
                        "$ warren dlq list -c warren.yaml --subscription payments", "text")
log_shown = doc_block("operations.md", '{"ts":', "json")
trace_id = re.search(r"^  trace id  (\S+)", trace_shown or "", re.M)


def settled(cmd, cwd, want, timeout=15, fix=lambda text: text):
    """Run CMD until its normalised output (FIX applied) is WANT (a state that
    settles, such as a DLQ's depth or the prober's view) or TIMEOUT passes:
    (exit status, lines)."""
    deadline = time.monotonic() + timeout
    while True:
        rc, out = shell(cmd, cwd)
        got = lines_of(normalise(fix(out), cwd))
        if got == want or time.monotonic() > deadline:
            return rc, got
        time.sleep(0.5)


def shown_command(block):
    cmd, _, out = (block or "").partition("\n")
    return cmd[2:], lines_of(normalise(out))


def ordering_run(b):
    """docs/ordering.md's partitions and gate, on the ordering sidecar; B: a Broker
    of its own (a broker error here does not stop the shop's checks)."""
    if not check(wo.wait_consuming(2), "the ordering sidecar consumes"):
        return
    exchange = ordered_queue + ".partitions"
    try:
        b.ch.exchange_declare(exchange=exchange, passive=True)
        # an equivalent declaration passes only with the same type
        b.ch.exchange_declare(exchange=exchange, exchange_type="x-consistent-hash", durable=True)
        check(True, "ordering.md: %s is a consistent-hash exchange" % exchange)
    except Exception as e:
        check(False, "ordering.md: %s is a consistent-hash exchange (%s)" % (exchange, e))
        b.ch = b.conn.channel()
    present = []
    for i in range(n_partitions + 1):
        try:
            b.ch.queue_declare(queue="%s.p%d" % (ordered_queue, i), passive=True)
            present.append(i)
        except Exception:
            b.ch = b.conn.channel()
    check_eq(present, list(range(n_partitions)),
             "ordering.md: partitions: %d declares %s.p0 .. p%d"
             % (n_partitions, ordered_queue, n_partitions - 1))
    try:
        b.ch.queue_declare(queue=ordered_queue + ".p0", durable=True,
                           arguments={"x-single-active-consumer": False})
        check(False, "ordering.md: a partition is single active consumer")
    except Exception as e:
        check("x-single-active-consumer" in str(e),
              "ordering.md: a partition is single active consumer (%s)" % e)
        b.ch = b.conn.channel()
    b.ch.confirm_delivery()
    b.publish(ordered_queue, {"order_id": "o-9"}, message_id="doc-part-1", type="order.created")
    check(wait_for(lambda: wo.lines(msg="ran", message_id="doc-part-1"), 20, "the re-routed "
                   "message"), "ordering.md: a message published to %s reaches its handler "
                               "through a partition" % ordered_queue)
    b.publish("order.cancelled", {"order_id": "o-7"}, exchange="doc.ordering",
              message_id="doc-gate-2", type="order.cancelled")
    check(wait_for(lambda: wo.lines(msg="parked behind a causal gate", message_id="doc-gate-2"),
                   20, "the cancel parked"),
          "ordering.md: the order.cancelled that comes first is parked")
    b.publish("order.created", {"order_id": "o-7"}, exchange="doc.ordering",
              message_id="doc-gate-1", type="order.created")
    wait_for(lambda: wo.lines(msg="ran", message_id="doc-gate-2"), 20, "the cancel released")
    check_eq([x.get("message_id") for x in wo.lines(msg="ran", subscription="ledger")],
             ["doc-gate-1", "doc-gate-2"],
             "ordering.md: the gate runs order.cancelled after its order.created")


try:
    w.start()
    wo.start()
    wr.start()
    check(w.wait_consuming(3), "the shop's warren consumes")
    b = Broker()
    # the traced event, with the trace id the page shows
    traceparent = "00-%s-00f067aa0ba902b7-01" % (trace_id[1] if trace_id else "0" * 32)
    b.publish("order.confirmed", {"order_id": "o-1002"}, exchange="shop.events",
              message_id="evt-1002", type="order.confirmed", headers={"traceparent": traceparent})
    for n, data in enumerate([{"fail": True}] * 3 + [{"declined": True}]):
        b.publish("payments", data, message_id="pay-%d" % (n + 1), type="payment.requested")
    b.publish("order.created", {"order_id": "o-2", "unsubscribed": True}, exchange="shop.events",
              message_id="m-2", type="order.created")

    # while evt-1002 waits in its delay queues: /readyz without Redis, ...
    cmd, want = shown_command(readyz_shown)
    cmd = cmd.replace(":9464/", ":%d/" % wr.http_port())
    rc, got = settled(cmd, readyz, want, timeout=20,
                      fix=lambda text: text.replace(":%d:" % closed, ":6379:"))
    check_eq(got, want,
             "operations.md: `curl .../readyz` prints what the page shows while Redis is away")

    # ... the partitions and the gate of docs/ordering.md ...
    bo = Broker()
    try:
        ordering_run(bo)
    except Exception:
        traceback.print_exc()
        check(False, "ordering.md: no exception")
    finally:
        try:
            bo.ch.exchange_delete(exchange=ordered_queue + ".partitions")
            bo.ch.exchange_delete(exchange="doc.ordering")
        except Exception:
            pass
        bo.close()

    # ... and the shop's payments DLQ and m-2's tree
    wait_for(lambda: b.depth("payments.dlq") == 4 and
             w.lines(msg="message dead-lettered", message_id="m-2:orders:2"), 30,
             "the payments DLQ and m-2's notification")
    cmd, want = shown_command(group_shown)
    rc, got = settled(cmd, shop, want)
    check_eq((rc, got), (0, want), "operations.md: `%s` prints what the page shows" % cmd)
    rc, out = shell("warren trace -c warren.yaml m-2", shop)
    got = lines_of(normalise(out, shop))
    at = got.index("published:") if "published:" in got else 0
    check_eq((rc, got[at:]), (0, lines_of(normalise(tree_shown or ""))),
             "operations.md: m-2's published tree is what the page shows")

    # evt-1002 dead-lettered after its third attempt: its log line, then its trace
    lines = wait_for(lambda: w.lines(msg="message dead-lettered", message_id="evt-1002"), 30,
                     "evt-1002 dead-lettered")
    try:
        want = json.loads(" ".join(lines_of(log_shown or "{}")))
    except ValueError:
        want = {}
    got = dict(lines[0]) if lines else {}
    for rec in (want, got):
        rec["error"] = normalise(rec.get("error", ""), shop)
        for k, pattern in (("ts", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"),
                           ("handler_version", r"[0-9a-f]{12}"), ("duration_ms", r"\d+\.\d+")):
            v = str(rec.get(k))
            rec[k] = "<%s>" % k if re.fullmatch(pattern, v) else v
    check_eq(list(got.items()), list(want.items()),
             "operations.md: the log's dead-lettered line has the page's fields, in its order")
    rc, out = shell("warren trace -c warren.yaml evt-1002", shop)
    want = lines_of(normalise(before_shown or ""))
    check_eq((rc, lines_of(normalise(out, shop))[-len(want):]), (0, want),
             "operations.md: before the replay, warren trace ends as the page shows")

    # the fix, the replay (by "ops"), and the trace
    write(os.path.join(shop, "handlers", "notifications.lua"), NOTIFY_FIXED)
    check(wait_for(lambda: w.lines(msg="handler reloaded"), 20, "the fix"), "the fix is loaded")
    rc, out = shell("warren dlq replay -c warren.yaml --subscription notifications --id evt-1002",
                    shop, {"USER": "ops"})
    check_eq(rc, 0, "evt-1002 replayed (%s)" % out.strip()[-300:])
    check(wait_for(lambda: w.lines(msg="message handled", message_id="evt-1002"), 20,
                   "the replay handled"), "the replayed evt-1002 is handled")
    cmd, want = shown_command(trace_shown)
    rc, got = settled(cmd, shop, want)
    check_eq((rc, got), (0, want), "operations.md: `%s` prints what the page shows" % cmd)
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    for x in (w, wo, wr):
        if x.alive():
            x.stop()
    if b:
        b.close()
    delete_queues(shop_queues + ordering_queues + ["doc.readyz", "doc.readyz.dlq",
                                                   "doc.readyz.wait"])

finish()
