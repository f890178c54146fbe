"""docs/handlers.md, the handler author's guide, is true: every file it shows
is written out as a project (the files its list of the project names), every command it shows is run against warren as
installed (`cmake --install`: the binary, the kit on the Lua path, the commit
script beside it) and prints what the guide says it prints (paths, handler
versions, the payment service's port and busted's timing normalised). Then
the guide's handler and its spec events go through all three ways a handler
author meets warren and must be decided alike: the busted kit
(testing.deliver), `warren exec`, and the running sidecar against the real
RabbitMQ and Redis, with a payment service on loopback answering as the
events' fakes say. The sidecar's decision is read from what it did (its
outcome line, the DLQ copy's reason, the delay queue that holds the message),
not from exec's or the kit's report. testing-handlers.md's `.busted` for a kit
installed under another prefix is run too: with it, and no LUA_PATH, busted
finds the kit and the guide's specs pass.

Markers in the guide (HTML comments, invisible when rendered):
  <!-- file: PATH -->        the next code block is the file PATH
  <!-- run [exit=N] [tail=N] -->  the next code block is "$ command" lines,
                             each followed by its expected output (all of it,
                             or its last N lines), stdout then stderr
"""
import fnmatch
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

from wrtest import (BUILD_DIR, ENV, SOURCE_DIR, Broker, check, check_eq, finish, redis_client,
                    tempdir, wait_for)

GUIDE = os.path.join(SOURCE_DIR, "docs", "handlers.md")
SHOWN_DIR = "/srv/refunds"   # where the guide's project lives in its outputs
SHOWN_PORT = "18090"         # the payment service's port in the guide

tmp = tempdir()
prefix = os.path.join(tmp, "prefix")
r = subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", prefix], capture_output=True,
                   text=True)
check_eq(r.returncode, 0, "cmake --install into a scratch prefix (%s)" % r.stderr[-300:])

# A free loopback port for the payment service: the guide's port replaced in
# every file, and put back in every output.
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = str(s.getsockname()[1])
s.close()

with open(GUIDE) as fh:
    guide = fh.read()
blocks = re.findall(r"<!-- (file|run)([^>]*)-->\n```[a-z]*\n(.*?)```", guide, re.S)
files = [(args.strip()[len(":"):].strip(), body) for kind, args, body in blocks
         if kind == "file"]
runs = [(args, body) for kind, args, body in blocks if kind == "run"]
check(len(files) >= 10 and len(runs) >= 5,
      "the guide's marked blocks are found (%d files, %d runs)" % (len(files), len(runs)))
other = re.findall(r"```(?:lua|json|yaml)\n", guide)
check_eq(len(other), len(files), "every lua, json and yaml block of the guide is a marked file")

# "The project": each path it lists is a file (or files) the guide writes, and every
# folder the guide writes into is listed
listing = re.search(r"## The project\n\n```\n(.*?)```", guide, re.S)
listed = [line.split()[0] for line in (listing.group(1) if listing else "").splitlines()
          if line.strip()]
written = [path for path, _ in files]
check(listed, "the guide lists the project's files")
for pattern in listed:
    check(fnmatch.filter(written, pattern), "the project's %s is a file the guide writes"
          % pattern)
check_eq(sorted(set(os.path.dirname(p) for p in written) -
                set(os.path.dirname(p) for p in listed)), [],
         "every folder the guide writes into is in its list of the project")

project = os.path.join(tmp, "refunds")
for path, body in files:
    full = os.path.join(project, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as fh:
        fh.write(body.replace("127.0.0.1:" + SHOWN_PORT, "127.0.0.1:" + port))

env = dict(os.environ)
env.update(ENV)
env["PATH"] = os.path.join(prefix, "bin") + ":" + env["PATH"]
env["LUA_PATH"] = os.path.join(prefix, "share", "lua", "5.1", "?.lua") + ";;"
env.pop("WARREN_BIN", None)  # the kit finds `warren` on the PATH, as a user's would
env.pop("WARREN_SHARE_DIR", None)


def canonical_json(m):
    """A flat JSON object with its keys sorted: LuaJIT hashes strings with a
    per-process seed, so cjson writes a table's keys in no fixed order."""
    try:
        return json.dumps(json.loads(m.group(0)), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return m.group(0)


def normalise(text):
    text = text.replace(os.path.realpath(project), SHOWN_DIR).replace(project, SHOWN_DIR)
    text = text.replace("127.0.0.1:" + port, "127.0.0.1:" + SHOWN_PORT)
    text = re.sub(r"version [0-9a-f]{12}", "version V", text)
    text = re.sub(r": [0-9.]+ seconds", ": T seconds", text)
    return re.sub(r"\{[^{}]*\}", canonical_json, text)


for args, body in runs:
    want_exit = int((re.search(r"exit=(\d+)", args) or [0, 0])[1])
    tail = re.search(r"tail=(\d+)", args)
    for cmd_block in re.split(r"^\$ ", body, flags=re.M)[1:]:
        cmd, _, expected = cmd_block.partition("\n")
        p = subprocess.run(cmd, shell=True, cwd=project, env=env, capture_output=True, text=True,
                           timeout=120)
        got = normalise(p.stdout + p.stderr).rstrip("\n").split("\n")
        want = normalise(expected).rstrip("\n").split("\n")
        if tail:
            got = got[-int(tail[1]):]
        check_eq(p.returncode, want_exit, "`%s` exits %d" % (cmd, want_exit))
        check_eq(got, want, "`%s` prints what the guide shows" % cmd)

# docs/testing-handlers.md's own `warren exec` example: a published id is
# <key>:<subscription>:<n>, with the key and the subscription the example shows.
with open(os.path.join(SOURCE_DIR, "docs", "testing-handlers.md")) as fh:
    readme = fh.read()
example = readme[readme.index("$ build/warren exec -c warren.yaml --subscription refunds"):]
example = example[:example.index("```")]
sub = re.search(r"^subscription  (\S+)", example, re.M)
key = re.search(r"^key           (\S+)", example, re.M)
ids = re.findall(r"^  (\S+) -> ", example, re.M)
check(sub and key and ids == ["%s:%s:1" % (key[1], sub[1])],
      "testing-handlers.md's exec example shows ids as <key>:<subscription>:<n>: %r" % ids)

# testing-handlers.md's `.busted` for a kit installed under another prefix (/opt/warren
# there, the scratch prefix here): the guide's specs pass with it alone, no
# LUA_PATH; with the guide's own .busted (no lpath) the kit is not found.
busted_config = re.search(r"<!-- busted-config -->\n```lua\n(.*?)```", readme, re.S)
check(busted_config, "testing-handlers.md shows a .busted for a kit under another prefix")
busted_want = [body for args, body in runs if body.startswith("$ busted\n")]
check_eq(len(busted_want), 1, "the guide runs busted once")
if busted_config and busted_want:
    elsewhere = os.path.join(tmp, "refunds-lpath")
    shutil.copytree(project, elsewhere)
    env_no_path = dict(env)
    env_no_path.pop("LUA_PATH", None)
    p = subprocess.run(["busted"], cwd=elsewhere, env=env_no_path, capture_output=True,
                       text=True, timeout=120)
    check(p.returncode != 0 and "module 'warren.testing' not found" in p.stdout + p.stderr,
          "without LUA_PATH or lpath the kit is not found (exit %d)" % p.returncode)
    with open(os.path.join(elsewhere, ".busted"), "w") as fh:
        fh.write(busted_config[1].replace("/opt/warren", prefix))
    p = subprocess.run(["busted"], cwd=elsewhere, env=env_no_path, capture_output=True,
                       text=True, timeout=120)
    check_eq((p.returncode, normalise(p.stdout + p.stderr).rstrip("\n").split("\n")[-1]),
             (0, normalise(busted_want[0]).rstrip("\n").split("\n")[-1]),
             "testing-handlers.md's .busted finds the kit: the guide's specs pass (%s)"
             % (p.stdout + p.stderr)[-300:])
    shutil.rmtree(elsewhere, ignore_errors=True)

# ---- the guide's events through the kit, warren exec and the sidecar -----------------
events = sorted(p for p, _ in files if p.startswith("events/"))
check_eq(len(events), 6, "six events in the guide")

KIT = r'''
local cjson = require "cjson"
local testing = require "warren.testing"
local refunds = assert(testing.load("handlers/refunds.lua"))
local out = {}
for _, path in ipairs(arg) do
  local ctx = testing.ctx{ config = "warren.yaml", subscription = "refunds" }
  local event, opts = testing.event_file(path, ctx)
  local res = testing.deliver(refunds, event, ctx, opts)
  out[path] = { decision = res.decision, error = res.error or cjson.null }
end
io.write(cjson.encode(out))
'''
with open(os.path.join(tmp, "kit.lua"), "w") as fh:
    fh.write(KIT)
p = subprocess.run(["luajit", os.path.join(tmp, "kit.lua")] + events, cwd=project, env=env,
                   capture_output=True, text=True, timeout=120)
check_eq(p.returncode, 0, "the kit delivers every event (%s)" % p.stderr[-300:])
kit = json.loads(p.stdout) if p.returncode == 0 else {}

execd, exec_errors = {}, {}
for ev in events:
    p = subprocess.run(["warren", "exec", "-c", "warren.yaml", "--subscription", "refunds",
                        "--event", ev, "--json"], cwd=project, env=env, capture_output=True,
                       text=True, timeout=60)
    rep = json.loads(p.stdout) if p.stdout else {}
    execd[ev] = rep.get("decision")
    exec_errors[ev] = rep.get("error") or (rep.get("decision") or {}).get("error")


def essential(d):
    """What must agree: the action, where the message goes, with which reason."""
    d = d or {}
    return (d.get("action"), d.get("queue"), d.get("reason"))


for ev in events:
    got = kit.get(ev) or {}
    check_eq(essential(got.get("decision")), essential(execd.get(ev)),
             "%s: the kit decides as exec" % ev)
    # the same words, the handler's file:line included (the kit loads it by a
    # relative path, exec by the config's absolute one)
    err = exec_errors.get(ev)
    if got.get("decision", {}).get("action") != "ack":
        check_eq(got.get("error"), err and err.replace(os.path.realpath(project) + "/", ""),
                 "%s: the kit's error is exec's" % ev)

# The payment service the sidecar calls: 503 for refund r-2, else 201.
calls = []


class PSP(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        calls.append((self.path, body, self.headers.get("Idempotency-Key")))
        status = 503 if body.get("refund_id") == "r-2" else 201
        data = json.dumps({"id": "psp-" + str(body.get("refund_id"))}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), PSP)
threading.Thread(target=server.serve_forever, daemon=True).start()

rd = redis_client()
QUEUE = "refunds.requests"
QUEUES = [QUEUE, QUEUE + ".dlq", QUEUE + ".wait"] + \
    [QUEUE + ".retry." + d for d in ("5s", "30s", "2m")]


def clean():
    for pattern in ("refunds:*", "warren:idem:refunds:*", "warren:idem:journal:refunds:*"):
        for k in rd.keys(pattern):
            rd.delete(k)


b = Broker()
for q in QUEUES:
    b.ch.queue_delete(queue=q)
clean()
log_path = os.path.join(tmp, "warren.log")
logfh = open(log_path, "wb")
proc = subprocess.Popen(["warren", "run", "-c", "warren.yaml"], cwd=project, env=env,
                        stdout=logfh, stderr=subprocess.STDOUT)


def lines():
    out = []
    with open(log_path) as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


wait_for(lambda: any(x.get("msg") == "consuming" for x in lines()) or proc.poll() is not None,
         30, "the sidecar to consume")
sidecar = {}
for ev in events:
    with open(os.path.join(project, ev)) as fh:
        e = json.load(fh)
    clean()
    for k, v in (e.get("store") or {}).items():
        if isinstance(v, dict):
            rd.hset("refunds:" + k, mapping=v)
        elif isinstance(v, list):
            rd.sadd("refunds:" + k, *v)
        else:
            rd.set("refunds:" + k, v)
    body = json.dumps(e["data"]) if "data" in e else e["body"]
    b.publish("refund.requested", body, exchange="shop.events", message_id=e["id"],
              type=e.get("type"), content_type=None)
    line = wait_for(lambda: [x for x in lines() if x.get("message_id") == e["id"]
                             and x.get("outcome")], 30, "%s handled" % ev)
    out = line[0] if line else {}
    d = {"outcome": out.get("outcome"), "error": out.get("error")}
    if out.get("outcome") == "ok":
        d["action"] = "ack"
    elif out.get("outcome") == "retried":
        d["action"] = "retry"
        d["reason"] = out.get("reason")
        d["queue"] = [q for q in QUEUES if ".retry." in q and b.depth(q) > 0]
        d["queue"] = d["queue"][0] if len(d["queue"]) == 1 else d["queue"]
        d["delay_ms"] = out.get("delay_ms")
    elif out.get("outcome") == "dead-lettered":
        d["action"] = "dead-letter"
        copies = b.drain(QUEUE + ".dlq")
        d["queue"] = QUEUE + ".dlq" if len(copies) == 1 else copies
        d["reason"] = copies[0][0].headers.get("x-warren-reason") if copies else None
        d["dlq_error"] = copies[0][0].headers.get("x-warren-error") if copies else None
    sidecar[ev] = d
    for q in QUEUES[2:]:
        b.ch.queue_purge(queue=q)  # a retry copy must not come back during the next event

for ev in events:
    got = sidecar.get(ev) or {}
    check_eq(essential(got), essential(execd.get(ev)),
             "%s: the sidecar decides as exec and the kit" % ev)
    if got.get("action") != "ack":
        check_eq(got.get("dlq_error", got.get("error")), exec_errors.get(ev),
                 "%s: the sidecar's error, to the handler's line, is exec's" % ev)
want = {"events/refund-ok.json": "ack", "events/refund-psp-down.json": "retry",
        "events/refund-no-id.json": "dead-letter", "events/refund-bad-amount.json": "dead-letter",
        "events/refund-string-customer.json": "dead-letter",
        "events/refund-not-json.json": "dead-letter"}
check_eq({ev: (sidecar.get(ev) or {}).get("action") for ev in events}, want,
         "the sidecar's actions are the guide's")
check_eq(sorted(c[1].get("refund_id") for c in calls), ["r-1", "r-2", "r-5"],
         "the payment service was called by the events whose handler got that far")
check(all(c[2] == c[1].get("refund_id") for c in calls),
      "every refund went out with its refund id as Idempotency-Key: %r" % calls)

proc.terminate()
check_eq(proc.wait(40), 0, "the sidecar exits 0")
logfh.close()
server.shutdown()
for q in QUEUES:
    b.ch.queue_delete(queue=q)
b.ch.exchange_delete(exchange="shop.events")
b.close()
clean()
shutil.rmtree(project, ignore_errors=True)
finish()
