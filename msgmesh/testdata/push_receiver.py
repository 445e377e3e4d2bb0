"""An HTTP push receiver for msgmesh tests, on Python's standard library only.

It serves POSTs on 127.0.0.1 (port chosen by the OS; the first line it
prints is "port <n>") and logs one JSON line per request to stdout:
{"body", "id", "attempt", "status"}. Bodies are "<prefix><number>"; on a
delivery's first attempt it answers
  - 503 with Retry-After: 1 when the number is divisible by 5,
  - nothing until after the push timeout (it sleeps SLOW seconds, then
    answers 200, too late: status "late") when divisible by 7,
and 200 otherwise (and on every later attempt).
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
out = threading.Lock()


def log(**kw):
    with out:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n).decode("utf-8", "replace")
        attempt = int(self.headers.get("Msgmesh-Attempt", "0"))
        ce_id = self.headers.get("ce-id", "")
        if self.headers.get("ce-specversion") != "1.0" or not ce_id:
            log(body=body, id=ce_id, attempt=attempt, status="invalid")
            self.answer(400)
            return
        num = int("".join(c for c in body if c.isdigit()) or "1")
        if attempt == 1 and num % 5 == 0:
            log(body=body, id=ce_id, attempt=attempt, status="503")
            self.answer(503, {"Retry-After": "1"})
            return
        if attempt == 1 and num % 7 == 0:
            threading.Event().wait(SLOW)
            log(body=body, id=ce_id, attempt=attempt, status="late")
            self.answer(200)
            return
        log(body=body, id=ce_id, attempt=attempt, status="200")
        self.answer(200)

    def answer(self, status, headers=None):
        try:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sidecar gave up waiting (the "late" answers)

    def log_message(self, *args):
        pass


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.daemon_threads = True
print("port", srv.server_address[1], flush=True)
srv.serve_forever()
