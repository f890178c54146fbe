"""A handler's version covers the handler and the modules it requires, nothing else.

Three subscriptions share one directory: a.lua and b.lua require util.lua, c.lua
requires nothing, and an unrelated notes.lua sits beside them. Editing a.lua
reloads a only (one "handler reloaded" line naming a.lua as changed, the reload
counter up by one, b's and c's versions unchanged); editing util.lua reloads a
and b (the line names util.lua), not c; editing notes.lua reloads nothing. The
versions are read from /status (what the workers run) and the log.
"""
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (Broker, Warren, check, check_eq, delete_queues, finish, prefix,  # noqa: E402
                    tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
UTIL = "local M = {}\nfunction M.total(d) return d.n or 0 end\nreturn M\n"
USES = ("local util = require('util')\nlocal M = {}\n"
        "function M.handle(event, ctx) util.total(event.data) end\nreturn M\n")
write(os.path.join(tmp, "util.lua"), UTIL)
write(os.path.join(tmp, "a.lua"), USES)
write(os.path.join(tmp, "b.lua"), USES)
write(os.path.join(tmp, "c.lua"), "return { handle = function(event, ctx) end }\n")
write(os.path.join(tmp, "notes.lua"), "-- scratch\nreturn {}\n")
subs = [{"name": n, "queue": "%s.%s" % (p, n), "handler": n + ".lua"} for n in "abc"]
w = Warren(tmp, subs)


def versions():
    code, body = w.get("/status")
    return {s["name"]: s["handler"]["version"] for s in json.loads(body)["subscriptions"]}


def applied():
    return w.metric_or_0(w.metrics(), "warren_handler_reloads_total", result="applied")


def edit(name, text):
    with open(os.path.join(tmp, name), "a") as fh:
        fh.write(text)


try:
    w.start()
    check(w.wait_consuming(3), "warren consumes")
    v0 = versions()
    check(v0["a"] == v0["b"] and v0["a"] != v0["c"],
          "a and b (same text, same module) share a version; c has its own: %r" % v0)

    # a.lua edited: a only
    n0 = applied()
    edit("a.lua", "-- a edited\n")
    check(wait_for(lambda: versions()["a"] != v0["a"], 20, "a reloaded"), "a's version moved")
    time.sleep(1.5)  # let any other reload show up
    v1 = versions()
    check_eq((v1["b"], v1["c"]), (v0["b"], v0["c"]), "b's and c's versions unchanged")
    check_eq(applied() - n0, 1, "one reload counted for one edited handler")
    lines = w.lines(msg="handler reloaded")
    check_eq([(ln.get("subscription"), ln.get("changed")) for ln in lines], [("a", "a.lua")],
             "the reload line names the subscription and the changed file")

    # util.lua edited: a and b, not c
    edit("util.lua", "-- util edited\n")
    check(wait_for(lambda: len(w.lines(msg="handler reloaded")) >= 3, 20, "a and b reloaded"),
          "two more reloads")
    time.sleep(1.5)
    v2 = versions()
    check(v2["a"] != v1["a"] and v2["b"] != v1["b"] and v2["c"] == v1["c"],
          "util.lua's edit moved a and b, not c: %r -> %r" % (v1, v2))
    lines = w.lines(msg="handler reloaded")[1:]
    check_eq(sorted((ln.get("subscription"), ln.get("changed")) for ln in lines),
             [("a", "util.lua"), ("b", "util.lua")], "both lines name util.lua")

    # an unrelated file: nothing
    n2 = applied()
    edit("notes.lua", "-- more notes\n")
    time.sleep(3)
    check_eq(versions(), v2, "notes.lua's edit changes no version")
    check_eq(applied() - n2, 0, "and reloads nothing")

    # and the messages still flow on the new versions
    b = Broker()
    for n in "abc":
        b.publish("%s.%s" % (p, n), {"n": 1}, message_id="%s-%s" % (p, n))
    check(wait_for(lambda: len(w.lines(msg="message handled")) >= 3, 20, "handled"),
          "each subscription handles a message")
    b.close()
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if w.alive():
        w.stop()
    qs = []
    for s in subs:
        qs += [s["queue"], s["queue"] + ".wait", s["queue"] + ".dlq"]
    delete_queues(qs)
finish()
