"""The command line: --version, --help, usage errors (exit 2), `check` on a
good config (exit 0) and on broken ones (exit 1, FILE:LINE:COL: message),
and `run` refusing a handler that does not compile."""
import json
import os
import subprocess

from wrtest import ENV, SOURCE_DIR, WARREN, check, check_eq, finish, tempdir, write


def run(*args, env_extra=None):
    env = dict(os.environ)
    env.update(ENV)
    env.update(env_extra or {})
    p = subprocess.run([WARREN] + list(args), capture_output=True, text=True, env=env, timeout=30)
    return p.returncode, p.stdout, p.stderr


rc, out, _ = run("--version")
check_eq(rc, 0, "--version exits 0")
check(out.startswith("warren "), "--version prints the version: %r" % out)
rc, out, _ = run("--help")
check_eq(rc, 0, "--help exits 0")
check("run -c FILE" in out and "check -c FILE" in out, "--help lists the commands")
for args, what in ((["frobnicate"], "unknown command"), (["run"], "run without -c"),
                   (["check", "-c"], "-c without a file"), (["run", "-c", "x", "extra"], "extra argument"),
                   ([], "no command")):
    rc, _, err = run(*args)
    check_eq(rc, 2, "%s exits 2" % what)
    check("usage: warren" in err, "%s prints the usage on stderr" % what)

# The shipped example config and handlers check clean.
rc, out, err = run("check", "-c", os.path.join(SOURCE_DIR, "config", "warren.yaml"))
check_eq(rc, 0, "check of config/warren.yaml exits 0 (stderr: %s)" % err.strip())
check("configuration OK" in out and "all handlers compiled" in out and
      "no undeclared globals" in out, "check says what it verified")

tmp = tempdir()
good = write(os.path.join(tmp, "good.lua"), "return { handle = function(event, ctx) end }\n")
broken = write(os.path.join(tmp, "broken.lua"), "local M = {}\nfunction M.handle(event, ctx)\n"
               "  if then end\nend\nreturn M\n")
noinit = write(os.path.join(tmp, "noinit.lua"), "return { handle = function() end,\n"
               "  init = function(ctx) error('no database') end }\n")


def config(name, body):
    return write(os.path.join(tmp, name), "amqp:\n  url: ${WARREN_AMQP_URL}\n"
                 "redis:\n  url: ${WARREN_REDIS_URL}\nsubscriptions:\n" + body)


cfg = config("broken.yaml", "  - name: a\n    queue: q.a\n    handler: good.lua\n"
             "  - name: b\n    queue: q.b\n    handler: broken.lua\n"
             "  - name: c\n    queue: q.c\n    handler: noinit.lua\n")
rc, out, err = run("check", "-c", cfg)
check_eq(rc, 1, "check with broken handlers exits 1")
check_eq(out, "%s: check failed, 2 problems (listed on stderr)\n" % cfg,
         "stdout claims nothing was OK when a handler failed")
lines = err.strip().splitlines()
check_eq(len(lines), 2, "one line per broken handler")
check_eq(lines[0] if lines else "",
         "%s:9:5: subscriptions[1].handler: %s:3: unexpected symbol near 'then'" % (cfg, broken),
         "compile error names the config position and the Lua file:line")
check_eq(lines[1] if len(lines) > 1 else "",
         "%s:12:5: subscriptions[2].handler: init failed: %s:2: no database" % (cfg, noinit),
         "init failure is reported")

# A handler that compiles and loads but reads and writes undeclared globals:
# check finds them without running the handler, at FILE:LINE:COL.
typo = write(os.path.join(tmp, "typo.lua"), "local M = {}\n"
             "function M.handle(event, ctx)\n"
             "  local v = store.get('k')\n"
             "  total = v\n"
             "end\n"
             "return M\n")
lint_cfg = config("lint.yaml", "  - name: t\n    queue: q.t\n    handler: typo.lua\n")
rc, out, err = run("check", "-c", lint_cfg)
check_eq(rc, 1, "undeclared globals fail check")
check_eq(err.strip().splitlines(), [
    "%s:3:13: read of the undeclared global 'store' (handler globals are locked: this line "
    "fails when it runs; did you mean ctx.store?)" % typo,
    "%s:4:3: assignment to the global 'total' (handler globals are locked: this line fails "
    "when it runs; declare it local)" % typo], "each one at FILE:LINE:COL")
check_eq(out, "%s: check failed, 2 problems (listed on stderr)\n" % lint_cfg,
         "and stdout says check failed")
rc, out, err = run("check", "-c", lint_cfg, "--lint", "warn")
check_eq(rc, 0, "--lint warn lists them and passes")
check(err.count(": warning: ") == 2 and "2 undeclared globals (warnings" in out,
      "as warnings: %r %r" % (out, err))
rc, out, err = run("check", "-c", lint_cfg, "--lint", "off")
check((rc, err) == (0, "") and "globals not checked" in out, "--lint off does not look")
rc, _, err = run("check", "-c", lint_cfg, "--lint", "loud")
check_eq(rc, 2, "--lint with another word is a usage error")

rc, out, err = run("run", "-c", cfg)
check_eq(rc, 1, "run refuses to start with a broken handler")
# one JSON error line naming the file and line, and nothing consumed before it
lines = [ln for ln in (out + err).splitlines() if ln.strip()]
fatal = json.loads(lines[0]) if len(lines) == 1 and lines[0].startswith("{") else {}
check(len(lines) == 1 and fatal.get("level") == "error" and
      "unexpected symbol near 'then'" in fatal.get("error", "") and
      fatal.get("file") == broken and fatal.get("line") == 3,
      "run says why in one JSON line with the file and line: %r" % lines)
check(not any("consuming" in ln for ln in lines), "nothing consumed")

bad = config("bad.yaml", "  - name: a\n    queue: q.a\n    handler: good.lua\n    prefetch: lots\n"
             "    bogus: 1\n")
rc, out, err = run("check", "-c", bad)
check_eq(rc, 1, "check with config errors exits 1")
errs = err.strip().splitlines()
check_eq(len(errs), 2, "every config problem is reported")
check_eq(out, "%s: check failed, 2 problems (listed on stderr)\n" % bad,
         "stdout says the check failed, as for a handler error")
check(all(e.startswith(bad + ":") for e in errs), "each problem is FILE:LINE:COL: message")
check(any(":9:15: " in e and "prefetch" in e for e in errs), "prefetch error at 9:15: %r" % errs)
check(any(":10:5: " in e and "bogus" in e for e in errs), "unknown key at 10:5: %r" % errs)

rc, out, err = run("check", "-c", os.path.join(tmp, "nope.yaml"))
check_eq(rc, 1, "a missing config file exits 1")
check("nope.yaml" in err, "and names the file")
check_eq(out, "%s: check failed, 1 problem (listed on stderr)\n" % os.path.join(tmp, "nope.yaml"),
         "stdout says the check failed")
retry_line = "    retry: {max_attempts: \"6\"}"
quoted = config("quoted.yaml", "  - name: a\n    queue: q.a\n    handler: good.lua\n"
                + retry_line + "\n")
rc, out, err = run("check", "-c", quoted)
check_eq((rc, err), (1, "%s:9:%d: subscriptions[0].retry.max_attempts: expected an integer from 1 "
                        "to 100, got the quoted string \"6\" (write it without quotes)\n"
                     % (quoted, retry_line.index('"6"') + 1)),
         "a quoted max_attempts fails check at FILE:LINE:COL")
check_eq(out, "%s: check failed, 1 problem (listed on stderr)\n" % quoted,
         "and stdout says the check failed")

# Credentials never appear in errors.
leak = config("leak.yaml", "  - name: a\n    queue: q.a\n    handler: good.lua\n")
rc, _, err = run("check", "-c", leak,
                 env_extra={"WARREN_AMQP_URL": "amqp://bob:s3cr3t@127.0.0.1:notaport/"})
check_eq(rc, 1, "an unparsable AMQP URL is an error")
check("s3cr3t" not in err and "bob" in err, "the password is masked: %r" % err.strip())
# warren exec: one event through the real runtime, no broker.
import json as _json
ex_handler = write(os.path.join(tmp, "ex.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.log.info("seen", { id = event.id })
  if event.data.fail then error("downstream down") end
  if event.data.bad then return ctx.reject("bad order") end
  ctx.publish("shop", "order.confirmed", { id = event.id, attempt = ctx.attempt,
                                           tenant = event.headers["x-tenant"] })
end
return M
''')
ex_cfg = config("ex.yaml", "  - name: ex\n    queue: q.ex\n    handler: ex.lua\n"
                "    retry: {max_attempts: 3, delays: [2s, 10s]}\n")


def run_exec(event, *extra):
    path = write(os.path.join(tmp, "event.json"), _json.dumps(event))
    return run("exec", "-c", ex_cfg, "--subscription", "ex", "--event", path, *extra)


rc, out, err = run_exec({"id": "e-1", "type": "order.created", "data": {"n": 1},
                         "headers": {"x-tenant": "acme"}}, "--json")
check_eq(rc, 0, "exec of a good event exits 0")
rep = _json.loads(out) if rc == 0 else {}
check_eq(rep.get("outcome"), "ok", "exec outcome ok")
check_eq(rep.get("decision", {}).get("action"), "ack", "exec decision ack")
pubs = rep.get("published", [])
check_eq(len(pubs), 1, "exec shows the event it would publish")
if pubs:
    check_eq(pubs[0].get("message_id"), "e-1:ex:1", "with its deterministic id")
    check_eq(_json.loads(pubs[0]["body"]), {"id": "e-1", "attempt": 1, "tenant": "acme"},
             "and its body")
check('"msg":"seen"' in err, "handler logs go to stderr")
rc, out, _ = run_exec({"id": "e-2", "data": {"fail": True}, "attempt": 2}, "--json")
rep = _json.loads(out) if out else {}
check_eq(rc, 1, "exec of a failing event exits 1")
check_eq(rep.get("decision"), {"action": "retry", "delay_ms": 10000, "queue": "q.ex.retry.10s",
                                "next_attempt": 3, "max_attempts": 3, "reason": "handler-error"},
         "a failure on attempt 2 of 3 would be retried in 10s")
rc, out, _ = run_exec({"id": "e-3", "data": {"fail": True}, "attempt": 3}, "--json")
rep = _json.loads(out) if out else {}
check_eq(rep.get("decision", {}).get("why"), "attempts exhausted", "the last attempt dead-letters")
rc, out, _ = run_exec({"id": "e-4", "data": {"bad": True}})
check("decision      dead-letter -> q.ex.dlq" in out, "a rejection dead-letters: %r" % out)
rc, out, _ = run_exec({"data": {"n": 1}}, "--json")
rep = _json.loads(out) if out else {}
check_eq((rep.get("outcome"), rep.get("reason")), ("invalid", "missing-message-id"),
         "a message without id is invalid")
rc, _, err = run("exec", "-c", ex_cfg, "--subscription", "nope", "--event",
                 os.path.join(tmp, "event.json"))
check_eq(rc, 2, "an unknown subscription exits 2")
check("no subscription 'nope'" in err and "have: ex" in err, "and lists the subscriptions")
rc, _, err = run("exec", "-c", ex_cfg, "--subscription", "ex")
check_eq(rc, 2, "exec without --event is a usage error")
finish()
