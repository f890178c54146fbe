"""`warren exec` is a dry run: by default it makes no network call. Each
ctx.http request is answered by a fake from the event file's "http" list
(matched by method and URL, in file order, each used once unless "reuse" is
set), or fails the handler's call with a message that names the request and
shows the exact JSON to add; --live-http sends the requests for real. A real
HTTP server on loopback counts what reaches it, so "nothing was sent" is
measured at the server, not taken from warren's own report. The event file is
checked like the config (unknown keys, wrong types, out-of-range attempts:
FILE:LINE:COL errors, exit 2). ctx.http errors never show a URL's userinfo or
query string, and a request header over 4096 bytes is an error, not a
truncated header."""
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wrtest import ENV, WARREN, check, check_eq, finish, tempdir, write
import subprocess

received = []


class Service(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def handle_any(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n).decode() if n else ""
        received.append({"method": self.command, "path": self.path, "body": body,
                         "headers": dict(self.headers)})
        data = json.dumps({"refund_id": "r-live", "path": self.path}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
port = server.server_address[1]
threading.Thread(target=server.serve_forever, daemon=True).start()
base = "http://127.0.0.1:%d" % port

# a loopback port with nothing listening: a live call there cannot connect
s = socket.socket()
s.bind(("127.0.0.1", 0))
closed_port = s.getsockname()[1]
s.close()

tmp = tempdir()
# The handler makes the calls its event lists and publishes what each returned.
handler = write(os.path.join(tmp, "calls.lua"), r'''local M = {}
function M.handle(event, ctx)
  local out = {}
  for i, c in ipairs(event.data.calls) do
    local res, err = ctx.http.request{ method = c.method, url = c.url, body = c.body,
                                       headers = c.headers, raise = c.raise }
    if res then
      out[i] = { status = res.status, json = res.json, body = res.body,
                 ct = res.headers["content-type"] or "none", x = res.headers["x-fake"] or "none" }
    else
      out[i] = { err = err }
    end
  end
  ctx.publish("", "out", out)
end
return M
''')
cfg = write(os.path.join(tmp, "warren.yaml"),
            "amqp:\n  url: ${WARREN_AMQP_URL}\nredis:\n  url: ${WARREN_REDIS_URL}\n"
            "subscriptions:\n  - name: refunds\n    queue: q.refunds\n    handler: calls.lua\n"
            "    retry: {max_attempts: 3, delays: [2s]}\n")


def run_exec(event, *extra, text=None, name="event.json"):
    path = os.path.join(tmp, name)
    write(path, text if text is not None else json.dumps(event, indent=2))
    env = dict(os.environ)
    env.update(ENV)
    p = subprocess.run([WARREN, "exec", "-c", cfg, "--subscription", "refunds", "--event", path]
                       + list(extra), capture_output=True, text=True, env=env, timeout=30)
    return p.returncode, p.stdout, p.stderr, path


def report(out):
    try:
        return json.loads(out)
    except ValueError:
        return {}


def published(rep):
    pubs = rep.get("published") or [{}]
    return json.loads(pubs[0].get("body") or "null")


refund = {"method": "POST", "url": base + "/refunds", "body": {"amount": 100}}

# 1. No fake, no --live-http: nothing reaches the server, the call fails and says how to fake it.
rc, out, err, path = run_exec({"id": "e-1", "data": {"calls": [refund]}}, "--json")
rep = report(out)
check_eq(len(received), 0, "without fakes and without --live-http no request reaches the server")
check_eq(rc, 1, "an unfaked request makes exec exit 1 (stderr: %s)" % err.strip()[-300:])
check_eq(rep.get("outcome"), "error", "the handler's call failed")
hint = '{"method": "POST", "url": "%s/refunds", "status": 200, "json": {}}' % base
check_eq(rep.get("error"),
         '%s:5: http POST %s/refunds: no fake response in the event file (warren exec '
         'makes no network call without --live-http); to fake it, add %s to the event file\'s '
         '"http" list' % (handler, base, hint),
         "the error names the request and shows the exact JSON to add")
calls = rep.get("http_calls") or [{}]
check_eq((calls[0].get("method"), calls[0].get("url"), calls[0].get("answer")),
         ("POST", base + "/refunds", "none"), "the report lists the unanswered call")
check_eq(calls[0].get("add"), json.loads(hint), "with the fake to add")
check_eq(calls[0].get("body"), '{"amount":100}', "and the body the handler would have sent")

# The same request with raise = false still fails loudly: a missing fake is a test-setup error.
quiet = dict(refund, **{"raise": False})
rc, out, _, _ = run_exec({"id": "e-2", "data": {"calls": [quiet]}}, "--json")
check_eq((rc, report(out).get("outcome")), (1, "error"),
         "raise = false does not turn a missing fake into a quiet nil, err")
check_eq(len(received), 0, "still nothing sent")

# The text report shows the same.
rc, out, _, _ = run_exec({"id": "e-3", "data": {"calls": [refund]}})
check("  POST %s/refunds {\"amount\":100} -> no fake; add to the event file's \"http\" list:\n"
      "      %s\n" % (base, hint) in out, "the text report shows the fake to add: %r" % out)

# 2. Fakes: matched by method and URL, in order, each once unless reusable.
fakes = [
    {"method": "POST", "url": base + "/refunds", "status": 201, "json": {"refund_id": "r-1"},
     "headers": {"X-Fake": "yes"}},
    {"method": "GET", "url": base + "/status", "status": 503},
    {"method": "GET", "url": base + "/status", "status": 200, "body": "fine",
     "headers": {"Content-Type": "text/plain"}, "reuse": True},
    {"method": "POST", "url": base + "/notify", "error": "connect"},
    {"method": "DELETE", "url": base + "/never", "status": 204},
]
get_status = {"method": "GET", "url": base + "/status", "raise": False}
event = {"id": "e-4", "data": {"calls": [
    refund, get_status, get_status, get_status,
    {"method": "POST", "url": base + "/notify", "raise": False}]}, "http": fakes}
rc, out, err, path = run_exec(event, "--json")
rep = report(out)
check_eq(len(received), 0, "fakes answer: nothing reaches the server")
check_eq((rc, rep.get("outcome")), (0, "ok"),
         "a fully faked run succeeds (stderr: %s)" % err[-300:])
res = published(rep) or [{}] * 5
check_eq(res[0], {"status": 201, "json": {"refund_id": "r-1"}, "body": '{"refund_id":"r-1"}',
                  "ct": "application/json", "x": "yes"},
         "a json fake: status, body, decoded json, content type and headers (lowercased)")
check_eq([r.get("status") for r in res[1:4]], [503, 200, 200],
         "the first matching unused fake answers; a reusable one answers again")
check_eq((res[2].get("body"), res[2].get("ct")), ("fine", "text/plain"), "a text body fake")
check_eq(res[4], {"err": "http POST %s/notify: Couldn't connect to server" % base},
         "a transport-error fake fails like the real transport (curl's words)")
check_eq([(c.get("answer"), c.get("fake")) for c in rep.get("http_calls", [])],
         [("fake", "http[0]"), ("fake", "http[1]"), ("fake", "http[2]"), ("fake", "http[2]"),
          ("fake", "http[3]")], "the report says which fake answered each call")
with open(path) as fh:
    lines = fh.read().splitlines()
never = [i + 1 for i, l in enumerate(lines) if '"DELETE"' in l][0] - 1  # its "{" line
check_eq([(u.get("fake"), u.get("at")) for u in rep.get("unused_fakes", [])],
         [("http[4]", "%s:%d:5" % (path, never))], "a fake no request used is reported")

rc, out, _, _ = run_exec(event)
check("  POST %s/refunds {\"amount\":100} -> 201 from http[0]\n" % base in out,
      "the text report shows each call and its fake: %r" % out)
check("  GET %s/status -> 503 from http[1]\n" % base in out, "a 503 fake: %r" % out)
check("  POST %s/notify -> Couldn't connect to server from http[3]\n" % base in out,
      "a transport error fake: %r" % out)

# A 5xx fake raises (raise defaults to true) with the reason phrase a server would send.
rc, out, _, _ = run_exec({"id": "e-5", "data": {"calls": [{"method": "GET",
                          "url": base + "/status"}]},
                          "http": [{"method": "GET", "url": base + "/status", "status": 503}]},
                         "--json")
rep = report(out)
check_eq((rc, rep.get("outcome"), rep.get("error")),
         (1, "error", "%s:5: http GET %s/status: 503 Service Unavailable" % (handler, base)),
         "a 503 fake raises as a real 503 does")
check_eq(rep.get("decision", {}).get("action"), "retry", "and is retried like one")

# 3. --live-http: the requests go out for real (and are still listed).
rc, out, err, _ = run_exec({"id": "e-6", "data": {"calls": [refund]}}, "--json", "--live-http")
rep = report(out)
check_eq(len(received), 1, "with --live-http the request reaches the server")
if received:
    check_eq((received[0]["method"], received[0]["path"], received[0]["body"]),
             ("POST", "/refunds", '{"amount":100}'), "the request as the handler made it")
check_eq((rc, rep.get("outcome")), (0, "ok"), "the live call succeeds (stderr: %s)" % err[-300:])
check_eq((published(rep) or [{}])[0].get("json"), {"refund_id": "r-live", "path": "/refunds"},
         "the server's answer reaches the handler")
check_eq([c.get("answer") for c in rep.get("http_calls", [])], ["live"],
         "the report marks the call as live")
rc, out, _, _ = run_exec({"id": "e-6b", "data": {"calls": [refund]}}, "--live-http")
check("  POST %s/refunds {\"amount\":100} -> 201 (live)\n" % base in out,
      "the text report marks it too: %r" % out)
check_eq(len(received), 2, "one more request")

# 4. Credentials never appear in ctx.http's errors: userinfo masked, query dropped.
secret_url = "http://admin:s3cr3t@127.0.0.1:%d/pay?api_key=k3y" % closed_port
rc, out, _, _ = run_exec({"id": "e-7", "data": {"calls": [{"method": "GET", "url": secret_url}]}},
                         "--json", "--live-http")
rep = report(out)
check_eq(rep.get("error"), "%s:5: http GET http://***@127.0.0.1:%d/pay?...: "
         "Couldn't connect to server" % (handler, closed_port), "a transport error masks the URL")
rc, out, err, _ = run_exec({"id": "e-8", "data": {"calls": [{"method": "GET",
                                                               "url": secret_url}]}}, "--json")
rep = report(out)
check("s3cr3t" not in rep.get("error", "") and "k3y" not in rep.get("error", ""),
      "the no-fake error masks the URL too: %r" % rep.get("error"))
check_eq((rep.get("http_calls") or [{}])[0].get("add", {}).get("url"), secret_url,
         "the report still gives the exact URL to fake")

# 5. A request header over 4096 bytes is an error, not a truncated header.
big = {"method": "GET", "url": base + "/big", "headers": {"X-Big": "v" * 5000}}
before = len(received)
rc, out, _, _ = run_exec({"id": "e-9", "data": {"calls": [big]}}, "--json", "--live-http")
rep = report(out)
check_eq(len(received), before, "an oversized header is not sent")
check_eq(rep.get("error"), "%s:5: ctx.http.request{...}: header 'X-Big' is longer than "
         "4096 bytes" % handler, "and is refused with a clear error")

# 6. The event file is checked like the config.
text = ('{\n  "id": "e-10",\n  "data": {"calls": []},\n  "stroe": {"a": 1},\n'
        '  "attempt": 2147483648,\n  "http": [\n'
        '    {"method": "POST", "url": "%s/r", "stauts": 200},\n'
        '    {"method": "GET", "url": "%s/s", "error": "boom"},\n    {"url": "%s/t"}\n  ],\n'
        '  "headers": {"x-a": [1]}\n}\n' % (base, base, base))
rc, out, err, path = run_exec(None, text=text, name="bad.json")
errs = err.strip().splitlines()
check_eq(rc, 2, "a bad event file exits 2")
check_eq(out, "", "and runs nothing")
def pos(text, needle):
    """LINE:COL (1-based) of the first NEEDLE in TEXT."""
    i = text.index(needle)
    return "%d:%d" % (text.count("\n", 0, i) + 1, i - (text.rfind("\n", 0, i) + 1) + 1)


want = [
    "%s:%s: unknown key 'stroe' at the top level (expected one of: id, type, routing_key, "
    "exchange, content_type, headers, attempt, redelivered, data, body, store, http, "
    "store_at_commit)"
    % (path, pos(text, '"stroe"')),
    "%s:%s: attempt: expected an integer from 1 to 1000000, got 2147483648"
    % (path, pos(text, "2147483648")),
    "%s:%s: unknown key 'stauts' in http[0] (expected one of: method, url, status, reason, "
    "headers, json, body, error, reuse)" % (path, pos(text, '"stauts"')),
    "%s:%s: http[1].error: expected one of connect, timeout, resolve, reset, tls, empty, "
    "got 'boom'" % (path, pos(text, '"boom"')),
    "%s:%s: http[2]: missing key 'method'" % (path, pos(text, '{"url"')),
    "%s:%s: headers.x-a: expected a string, a number or a boolean, got an array"
    % (path, pos(text, "[1]")),
]
check_eq(pos(text, "2147483648"), "5:14", "pos() counts from 1")
check_eq(errs, want, "every problem, as FILE:LINE:COL: message, in file order")

text = '{"id": "e-11", "data": {}, "attempt": 0}'
rc, _, err, path = run_exec(None, text=text, name="a0.json")
check_eq((rc, err.strip()), (2, "%s:%s: attempt: expected an integer from 1 to 1000000, got 0"
                             % (path, pos(text, "0}"))), "attempt 0 is refused")
text = '{"id": "e-12",\n "data": {}, "body": "x"}'
rc, _, err, path = run_exec(None, text=text, name="both.json")
check_eq((rc, err.strip()), (2, "%s:%s: body: give \"data\" or \"body\", not both"
                             % (path, pos(text, '"body"'))), "data and body together are refused")
rc, _, err, path = run_exec(None, text='{"id": "e-13", "data": {},\n  "id": "again"}',
                            name="dup.json")
check_eq(rc, 2, "a duplicate key is refused")
check(err.startswith(path + ":2:") and "duplicate object key" in err,
      "with its position: %r" % err)
rc, _, err, path = run_exec(None, text='{"id": "e-14", "data": {', name="trunc.json")
check(rc == 2 and err.startswith(path + ":1:"), "a JSON syntax error has its position: %r" % err)
check_eq(len(received), 2, "no other request ever reached the server")

server.shutdown()
finish()
