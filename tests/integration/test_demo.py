"""README.md's two commands: the demo tells the story the README says it tells.

The README's "Two commands" block is run as it is shown, less what the suite
already did: `bash deploy/demo.sh` runs on this suite's servers and build
(WR_DEMO_STACK, WR_DEMO_BUILD: the demo neither builds, nor starts or stops
servers) with its files in a scratch directory and the shop on a free port.
It must exit 0 (deploy/demo.py exits 1 when an order was charged twice, the
cancelled order was charged, or the ledger's stock is off) and print what the
README says it prints: each event handled, a duplicate skipped, a retry, the
dead-lettered ones and why, the DLQs with their story headers, `warren trace`
of a dead-lettered event, /metrics and /readyz, what the shop recorded and the
ledger's ctx.store state, untouched by a redelivered order.created. The other
command, `bash deploy/test.sh`, is this suite (.ci/run runs it).
"""
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (BUILD_DIR, ENV, SOURCE_DIR, STACK_DIR, check, check_eq, finish,  # noqa: E402
                    tempdir)

with open(os.path.join(SOURCE_DIR, "README.md")) as fh:
    readme = fh.read()
m = re.search(r"## Two commands\n.*?```sh\n(.*?)```", readme, re.S)
commands = [line.split("#")[0].strip() for line in (m.group(1) if m else "").splitlines()]
check_eq(commands, ["bash deploy/demo.sh", "bash deploy/test.sh"], "the README's two commands")
with open(os.path.join(SOURCE_DIR, ".ci", "run")) as fh:
    check("exec bash deploy/test.sh" in fh.read(), ".ci/run runs the README's test command")

s = socket.socket()
s.bind(("127.0.0.1", 0))
shop_port = s.getsockname()[1]
s.close()
tmp = tempdir()
env = dict(os.environ)
env.update(WR_DEMO_BUILD=BUILD_DIR, WR_DEMO_STACK=STACK_DIR, WR_DEMO_DIR=tmp,
           WR_SHOP_PORT=str(shop_port),
           WR_AMQP_PORT=re.search(r":(\d+)/", ENV["WARREN_AMQP_URL"])[1],
           WR_REDIS_PORT=re.search(r":(\d+)/", ENV["WARREN_REDIS_URL"])[1])
t0 = time.monotonic()
p = subprocess.run(["bash", "-c", commands[0] if commands else "false"], cwd=SOURCE_DIR,
                   env=env, capture_output=True, text=True, timeout=300)
out = p.stdout + p.stderr
print("  the demo ran in %.1f s; its last lines:\n%s" % (
    time.monotonic() - t0, "\n".join("    | " + x for x in out.splitlines()[-6:])), flush=True)
check_eq(p.returncode, 0, "bash deploy/demo.sh exits 0")
check(re.search(r"^demo: every order charged at most once, the order cancelled before it "
                r"arrived never charged, stock consistent$", out, re.M),
      "the demo's story is the expected one")
for what, pattern in (
        ("an event handled", r"^  evt-\d+ +order\.created +orders +handled in "),
        ("a duplicate skipped", r"DUPLICATE: already handled, skipped"),
        ("a failure retried", r"attempt 1 failed \(.*\), retry in \d+ ms"),
        ("a declined card dead-lettered", r"DEAD-LETTERED \(rejected\): payment declined"),
        ("an order without items dead-lettered", r"DEAD-LETTERED \(rejected\): order \S+ has "
                                                 r"no items"),
        ("a malformed message dead-lettered", r"DEAD-LETTERED \(invalid-json\)"),
        ("a message without an id dead-lettered", r"DEAD-LETTERED \(missing-message-id\)"),
        ("the dead-letter queues with their story",
         r"^dead-letter queues .*\n(?:  .*\n)*?    - id \S+, reason [a-z-]+, class [a-z-]+, "
         r"attempt \d+, from \S+\n      error: .*\n      trace [0-9a-f]{32}, handler "),
        ("warren trace of an event", r"^one event's whole story, in one command \(warren "
                                     r"trace\)"),
        ("/metrics", r"GET http://127\.0\.0\.1:\d+/metrics"),
        ("/readyz", r"GET http://127\.0\.0\.1:\d+/readyz: 200 "),
        ("what the shop recorded", r"^what the shop's services recorded"),
        ("the ledger's ctx.store, untouched by a redelivery",
         r"ledger stock after: .*\(untouched\)")):
    check(re.search(pattern, out, re.M), "the demo prints %s" % what)
check_eq(p.returncode == 0 and os.path.exists(os.path.join(tmp, "warren.log")), True,
         "the demo's files are in WR_DEMO_DIR")
finish()
