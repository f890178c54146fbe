"""In a running sidecar, ctx.http errors never repeat a URL's credentials: a
call to http://admin:s3cr3t@host/path?api_key=... that fails (no server; a
503) is retried and dead-lettered with the URL's userinfo masked and its query
string dropped, in the log lines and in every DLQ header. The secrets are
looked for in the raw log file and in the raw DLQ headers, not only in the
fields the sidecar is meant to fill."""
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

hits = []


class Busy(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        hits.append(self.path)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
port = server.server_address[1]
threading.Thread(target=server.serve_forever, daemon=True).start()
s = socket.socket()
s.bind(("127.0.0.1", 0))
closed_port = s.getsockname()[1]
s.close()

p = prefix()
tmp = tempdir()
queue = p + ".in"
write(os.path.join(tmp, "leaky.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.http.request{ url = event.data.url, timeout = 2 }
end
return M
''')
b = Broker()
b.declare(queue)
w = Warren(tmp, [{"name": "leaky", "queue": queue, "handler": "leaky.lua",
                  "retry": {"max_attempts": 2, "delays": ["1s"]},
                  "breaker": {"enabled": False}}]).start()
check(w.wait_consuming(1), "consuming")
down = "http://admin:s3cr3t@127.0.0.1:%d/pay?api_key=k3y" % closed_port
busy = "http://tok3n@127.0.0.1:%d/pay?api_key=k3y#fr4g" % port
b.publish(queue, {"url": down}, message_id="down")
b.publish(queue, {"url": busy}, message_id="busy")
wait_for(lambda: b.depth(queue + ".dlq") >= 2, 30, "both dead-lettered")
check_eq(len(hits), 2, "the 503 server was called on both attempts")
check(all(h == "/pay?api_key=k3y" for h in hits), "with the real URL: %r" % hits)

dlq = {props.message_id: props.headers for props, _ in b.drain(queue + ".dlq")}
check_eq(sorted(dlq), ["busy", "down"], "both in the DLQ")
down_err = dlq.get("down", {}).get("x-warren-error", "")
busy_err = dlq.get("busy", {}).get("x-warren-error", "")
check(down_err.endswith("http GET http://***@127.0.0.1:%d/pay?...: Couldn't connect to server"
                        % closed_port), "the transport error masks the URL: %r" % down_err)
check(busy_err.endswith("http GET http://***@127.0.0.1:%d/pay?...: 503 Service Unavailable"
                        % port), "the status error masks the URL: %r" % busy_err)
raw_headers = json.dumps(dlq, default=str)
for secret in ("s3cr3t", "k3y", "tok3n", "fr4g", "admin"):
    check(secret not in raw_headers, "no %r in any DLQ header" % secret)
check_eq(w.stop(), 0, "exit 0")
log = w.raw_log()
check(len(w.lines(msg="message dead-lettered")) == 2, "the log has both outcomes")
check("http GET http://***@127.0.0.1:%d/pay?...: Couldn't connect" % closed_port in log,
      "the log shows the masked URL")
for secret in ("s3cr3t", "k3y", "tok3n", "fr4g", "admin"):
    check(secret not in log, "no %r in the log" % secret)
server.shutdown()
b.delete(queue, queue + ".dlq", queue + ".wait", queue + ".retry.1s")
b.close()
finish()
