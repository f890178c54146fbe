"""TLS: AMQP over TLS to the real RabbitMQ, and Redis behind a TLS proxy.

The test stack's RabbitMQ also listens for amqps:// (WR_AMQPS_PORT, see
deploy/local/stack.sh) with a throwaway PKI that openssl made when the node
started: the broker's certificate names "localhost" only, a client
certificate of the same CA exists, and so does a second CA nobody trusts.
The broker asks for a client certificate but does not require one.

1. amqps://localhost with amqp.tls.ca: warren consumes over TLS and handles
   a message (its idempotency record is done in Redis); the broker lists
   warren's connection as TLS, without a client certificate. `warren dlq
   list` and `warren dlq replay` connect over TLS too: a dead-lettered
   message is listed and replayed.
2. With amqp.tls.cert and key as well: the broker sees the client
   certificate's subject on warren's connection, and the message is handled.
3. Every failure is a clear error, and nothing is consumed: the URL names
   127.0.0.1, which the certificate does not ("does not name host
   '127.0.0.1' (it names 'localhost')"); the CA given is not the broker's,
   or none is given and the system's CAs do not know the test CA ("is not
   trusted"); the client certificate comes from the other CA (the broker
   answers "unknown ca"); amqps:// to the plain AMQP port ("TLS handshake ...
   failed"). `warren run` logs it and keeps retrying without consuming;
   `warren dlq list` prints it and exits 1. The password is in none of them.
4. Redis: hiredis 0.14 has no TLS, so a Redis that speaks only TLS (port 0,
   tls-port WR_REDIS_TLS_PORT, client certificates required) is reached
   through stunnel4 in client mode on WR_STUNNEL_PORT (plain in; TLS out,
   the test CA trusted, the name "localhost" checked, the client certificate
   shown), configured with docs/security.md's stunnel.conf as the page shows
   it (its addresses, names and files replaced by the test's). warren handles a message through the proxy (its record lands in
   the TLS Redis, read back over TLS directly), `warren trace` reads the
   event's journal through the proxy, and a plain client on the TLS port
   gets no answer.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import redis as redislib

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, SOURCE_DIR, STACK_DIR, STACK_SH, WARREN, Broker,  # noqa: E402
                    Warren, check, check_eq, delete_queues, finish, idem_record, prefix,
                    redis_client, tempdir, wait_for, write)

if "WARREN_AMQPS_URL" not in ENV:
    check(False, "the test stack has a TLS listener (WR_AMQPS_PORT; %s/env has no "
          "WARREN_AMQPS_URL)" % STACK_DIR)
    finish()

AMQPS = ENV["WARREN_AMQPS_URL"]                     # amqps://guest:guest@localhost:PORT/
AMQPS_PORT = urlparse(AMQPS).port
AMQP_PORT = urlparse(ENV["WARREN_AMQP_URL"]).port
TLS = ENV["WARREN_TLS_DIR"]
REDIS_TLS_PORT = int(os.environ.get("WR_REDIS_TLS_PORT", "0"))
STUNNEL_PORT = int(os.environ.get("WR_STUNNEL_PORT", "0"))
PASSWORD = "guest"

p = prefix()
tmp = tempdir()
queues = []
write(os.path.join(tmp, "h.lua"), '''
local M = {}
function M.handle(event, ctx)
  if event.data.fail then error("refused on purpose") end
  ctx.log.info("handled over TLS", { n = event.data.n })
end
return M
''')


def tls(name):
    return os.path.join(TLS, name)


def sidecar(name, amqp_url, tls_keys=None, redis_url=None, retry=None):
    """A Warren whose amqp section (and maybe redis URL) is ours instead of the stack's."""
    queue = "%s.%s" % (p, name)
    queues.extend([queue, queue + ".dlq"])
    sub = {"name": name, "queue": queue, "handler": "h.lua"}
    if retry:
        sub["retry"] = retry
    w = Warren(tmp, [sub], name=name)
    with open(w.config) as fh:
        text = fh.read()
    amqp = "amqp:\n  url: %s\n  heartbeat: 5s\n  connect_timeout: 3s\n" % amqp_url
    if tls_keys:
        amqp += "  tls:\n" + "".join("    %s: %s\n" % kv for kv in tls_keys.items())
    text = text.replace("amqp:\n  url: ${WARREN_AMQP_URL}\n  heartbeat: 5s\n", amqp, 1)
    if redis_url:
        text = text.replace("url: ${WARREN_REDIS_URL}", "url: %s" % redis_url, 1)
    write(w.config, text)
    w.queue = queue
    w.sub_name = name
    return w


def run(*args, timeout=60):
    env = dict(os.environ)
    env.update(ENV)
    res = subprocess.run([WARREN] + list(args), capture_output=True, env=env, timeout=timeout)
    return (res.returncode, res.stdout.decode("utf-8", "replace"),
            res.stderr.decode("utf-8", "replace"))


def connections():
    """RabbitMQ's client connections (name, user, ssl, peer_cert_subject)."""
    env = dict(os.environ)
    env["WR_AMQP_PORT"] = str(AMQP_PORT)
    env["WR_REDIS_PORT"] = str(urlparse(ENV["WARREN_REDIS_URL"]).port)
    env["WR_AMQPS_PORT"] = str(AMQPS_PORT)
    res = subprocess.run(["bash", STACK_SH, "connections", STACK_DIR], capture_output=True,
                         env=env, timeout=60)
    try:
        return json.loads(res.stdout)
    except ValueError:
        check(False, "stack.sh connections gives JSON (rc %d, %r, %r)"
              % (res.returncode, res.stdout[-300:], res.stderr[-300:]))
        return []


def connection_of(sub_name):
    """The broker's record of warren's worker connection for SUB_NAME, or None."""
    for c in connections():
        props = {kv[0]: kv[2] for kv in c.get("client_properties") or [] if len(kv) == 3}
        if props.get("connection_name") == "warren %s#0" % sub_name:
            return c
    return None


def handled(w, r, mid, timeout=30):
    return wait_for(lambda: idem_record(r, w.sub_name, mid).get("state") == "done", timeout,
                    "%s handled" % mid)


b = Broker()
r = redis_client()
started = []
try:
    # --- 1. amqps with the test CA -------------------------------------------------
    w1 = sidecar("tls1", AMQPS, {"ca": tls("ca.pem")}, retry={"max_attempts": 1})
    w1.start()
    check(w1.wait_consuming(1), "1: warren consumes over amqps://localhost with amqp.tls.ca")
    b.declare(w1.queue)
    b.publish(w1.queue, {"n": 1}, message_id=p + "-1")
    handled(w1, r, p + "-1")
    check_eq(idem_record(r, "tls1", p + "-1").get("outcome"), "ok", "1: the message was handled")
    c = connection_of("tls1")
    check(c is not None and c.get("ssl") is True,
          "1: the broker lists warren's connection as TLS (%r)" % c)
    check(c is not None and c.get("peer_cert_subject") in ("", None),
          "1: no client certificate was shown (%r)" % (c and c.get("peer_cert_subject")))

    # warren dlq over TLS: a message that fails lands in the DLQ, is listed and replayed
    b.publish(w1.queue, {"n": 2, "fail": True}, message_id=p + "-2")
    wait_for(lambda: b.depth(w1.queue + ".dlq") >= 1, 30, "1: the failing message in the DLQ")
    rc, out, err = run("dlq", "list", "-c", w1.config, "--subscription", "tls1")
    check(rc == 0 and p + "-2" in out, "1: warren dlq list over TLS lists it (rc %d, %r, %r)"
          % (rc, out[-300:], err[-300:]))
    rc, out, err = run("dlq", "replay", "-c", w1.config, "--subscription", "tls1")
    check_eq(rc, 0, "1: warren dlq replay over TLS exits 0 (%r)" % err[-300:])
    wait_for(lambda: b.depth(w1.queue + ".dlq") >= 1, 30, "1: the replayed message fails again")
    check_eq(w1.stop(), 0, "1: warren stops cleanly")

    # --- 2. with a client certificate -------------------------------------------------
    w2 = sidecar("tls2", AMQPS, {"ca": tls("ca.pem"), "cert": tls("client.pem"),
                                 "key": tls("client.key")})
    w2.start()
    check(w2.wait_consuming(1), "2: warren consumes with a client certificate")
    b.declare(w2.queue)
    b.publish(w2.queue, {"n": 3}, message_id=p + "-3")
    handled(w2, r, p + "-3")
    c = connection_of("tls2")
    check(c is not None and c.get("ssl") is True and
          "warren-test-client" in (c.get("peer_cert_subject") or ""),
          "2: the broker saw the client certificate (%r)" % c)
    check_eq(w2.stop(), 0, "2: warren stops cleanly")

    # --- 3. failures: clear errors, nothing consumed -----------------------------------
    ip_url = AMQPS.replace("@localhost:", "@127.0.0.1:")
    cases = [
        ("name", ip_url, {"ca": tls("ca.pem")},
         "TLS: the broker's certificate does not name host '127.0.0.1' (it names 'localhost')"),
        ("otherca", AMQPS, {"ca": tls("other-ca.pem")},
         "TLS: the broker localhost:%d is not trusted: " % AMQPS_PORT),
        ("noca", AMQPS, None, "TLS: the broker localhost:%d is not trusted: " % AMQPS_PORT),
        # TLS 1.3: the broker refuses the certificate after the handshake; its alert is
        # read at login, or the connection is reset first (then the message says so)
        ("rogue", AMQPS, {"ca": tls("ca.pem"), "cert": tls("other-client.pem"),
                          "key": tls("other-client.key")},
         ("tlsv1 alert unknown ca", "does it refuse our client certificate, or want one?")),
        ("plain", "amqps://guest:guest@localhost:%d/" % AMQP_PORT, {"ca": tls("ca.pem")},
         "TLS handshake with localhost:%d failed" % AMQP_PORT),
    ]
    for name, url, keys, want in cases:
        w = sidecar("bad" + name, url, keys)
        w.start()
        started.append(w)
    for (name, url, keys, want), w in zip(cases, started):
        lines = wait_for(lambda: w.lines(msg="broker not available") or not w.alive(), 30,
                         "3 %s: the failure logged" % name)
        err = (lines[0].get("error") if isinstance(lines, list) and lines else "") or ""
        wants = want if isinstance(want, tuple) else (want,)
        check(any(x in err for x in wants), "3 %s: the log says %r (got %r)" % (name, want, err))
        check(PASSWORD + "@" not in err and ":" + PASSWORD not in err,
              "3 %s: no password in the error" % name)
        check(w.alive(), "3 %s: warren keeps running and retrying" % name)
        check(not w.lines(msg="consuming"), "3 %s: nothing consumed" % name)
        rc, out, derr = run("dlq", "list", "-c", w.config, "--subscription", "bad" + name)
        check(rc == 1 and any(x in derr for x in wants),
              "3 %s: warren dlq list exits 1 saying so (rc %d, %r)" % (name, rc, derr.strip()))
    for w in started:
        w.stop()
    started = []

    # --- 4. Redis behind stunnel4 ----------------------------------------------------
    check(REDIS_TLS_PORT > 0 and STUNNEL_PORT > 0, "4: WR_REDIS_TLS_PORT and WR_STUNNEL_PORT set")
    rdir = os.path.join(tmp, "redis-tls")
    os.makedirs(rdir)
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(REDIS_TLS_PORT), "--bind", "127.0.0.1",
         "--tls-cert-file", tls("server.pem"), "--tls-key-file", tls("server.key"),
         "--tls-ca-cert-file", tls("ca.pem"), "--tls-auth-clients", "yes",
         "--dir", rdir, "--save", "", "--appendonly", "no", "--logfile",
         os.path.join(rdir, "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    # docs/security.md's stunnel.conf, as shown there, pointed at this test's ports and
    # PKI (and told to keep its pid and log here)
    with open(os.path.join(SOURCE_DIR, "docs", "security.md")) as fh:
        shown = re.search(r"```\n(# stunnel.conf[^\n]*\n.*?)```", fh.read(), re.S)
    check(shown is not None, "4: docs/security.md shows a stunnel.conf")
    conf = shown.group(1) if shown else ""
    doc_port = re.search(r"^accept = 127\.0\.0\.1:(\d+)$", conf, re.M)
    check(doc_port and ("redis://:${REDIS_PASSWORD}@127.0.0.1:%s/0" % doc_port[1]) in
          open(os.path.join(SOURCE_DIR, "docs", "security.md")).read(),
          "4: docs/security.md's redis.url names the proxy's port")
    for key, value in (("accept", "127.0.0.1:%d" % STUNNEL_PORT),
                       ("connect", "127.0.0.1:%d" % REDIS_TLS_PORT),
                       ("CAfile", tls("ca.pem")), ("checkHost", "localhost"),
                       ("cert", tls("client.pem")), ("key", tls("client.key"))):
        conf, n = re.subn(r"^%s = [^\s;]+" % key, "%s = %s" % (key, value), conf, flags=re.M)
        check_eq(n, 1, "4: docs/security.md's stunnel.conf sets %s" % key)
    conf = conf.replace("foreground = yes\n", "foreground = yes\npid =\noutput = %s\n"
                        % os.path.join(tmp, "stunnel.log"), 1)
    stunnel_conf = write(os.path.join(tmp, "stunnel.conf"), conf)
    stunnel_proc = subprocess.Popen(["stunnel4", stunnel_conf], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT)
    direct = redislib.Redis(host="localhost", port=REDIS_TLS_PORT, ssl=True,
                            ssl_ca_certs=tls("ca.pem"), ssl_certfile=tls("client.pem"),
                            ssl_keyfile=tls("client.key"), decode_responses=True)

    def tls_redis_up():
        try:
            return direct.ping()
        except Exception:
            return False

    try:
        check(wait_for(tls_redis_up, 20, "4: the TLS-only Redis answers over TLS"),
              "4: TLS Redis up")
        proxied = redislib.Redis(host="127.0.0.1", port=STUNNEL_PORT, decode_responses=True)

        def proxy_up():
            try:
                return proxied.ping()
            except Exception:
                return False

        check(wait_for(proxy_up, 20, "4: Redis answers through stunnel"), "4: the proxy works")
        # A plain client on the TLS port gets no answer.
        s = socket.create_connection(("127.0.0.1", REDIS_TLS_PORT), timeout=3)
        s.sendall(b"PING\r\n")
        try:
            got = s.recv(64)
        except (socket.timeout, ConnectionError):
            got = b""
        s.close()
        check(b"PONG" not in got, "4: plain text to the TLS port gets no PONG (%r)" % got)

        w4 = sidecar("tls4", ENV["WARREN_AMQP_URL"], redis_url="redis://127.0.0.1:%d/0"
                     % STUNNEL_PORT)
        w4.start()
        check(w4.wait_consuming(1), "4: warren consumes with Redis behind the proxy")
        b.declare(w4.queue)
        b.publish(w4.queue, {"n": 4}, message_id=p + "-4")
        rec = wait_for(lambda: idem_record(direct, "tls4", p + "-4").get("state") == "done", 30,
                       "4: the record done in the TLS Redis")
        check(rec, "4: the idempotency record is in the TLS-only Redis")
        check_eq(idem_record(r, "tls4", p + "-4"), {}, "4: and not in the stack's plain Redis")
        rc, out, err = run("trace", "-c", w4.config, p + "-4", "--json")
        try:
            story = json.loads(out)["stories"][0]
        except (ValueError, KeyError, IndexError):
            story = None
        check(rc == 0 and story is not None and story["where"]["state"] == "done",
              "4: warren trace reads the journal through the proxy (rc %d, %r)"
              % (rc, (out or err)[-300:]))
        check_eq(w4.stop(), 0, "4: warren stops cleanly")
    finally:
        for proc in (stunnel_proc, redis_proc):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
finally:
    for w in started:
        if w.alive():
            w.stop()
    b.close()
    delete_queues(queues)

finish()
