"""A recording HTTP relay for csql-proxy's tests (not a mock: every request goes on
to the real csql-emulator and its answer comes back unchanged).

    python3 relay.py UPSTREAM_URL RECORD_FILE [HEADER,HEADER...]

Prints its own base URL on the first line of stdout, then serves until killed.
Each request becomes one JSON line in RECORD_FILE: method, path, the listed
request headers (lower-case names; never Authorization, whatever is asked),
and the body parsed as JSON (null if it is not JSON).
"""
import http.server
import json
import sys
import urllib.error
import urllib.request

upstream, record = sys.argv[1], sys.argv[2]
wanted = [h.strip().lower() for h in (sys.argv[3] if len(sys.argv) > 3 else "").split(",")
          if h.strip() and h.strip().lower() != "authorization"]
FORWARDED = ("Authorization", "Content-Type", "Accept", "User-Agent", "X-Goog-User-Project",
             "X-Goog-Api-Client", "Metadata-Flavor")


class Tap(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def relay(self):
        n = int(self.headers.get("Content-Length", "0") or "0")
        body = self.rfile.read(n) if n > 0 else None
        try:
            shown = json.loads(body) if body else None
        except ValueError:
            shown = None
        headers = {h: self.headers.get(h) for h in wanted if self.headers.get(h) is not None}
        with open(record, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path,
                                "headers": headers, "body": shown}) + "\n")
        req = urllib.request.Request(upstream + self.path, data=body, method=self.command)
        for h in FORWARDED:
            if self.headers.get(h) is not None:
                req.add_header(h, self.headers[h])
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, out, ctype = r.status, r.read(), r.headers.get("Content-Type")
        except urllib.error.HTTPError as e:
            status, out, ctype = e.code, e.read(), e.headers.get("Content-Type")
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = relay

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tap)
print("http://127.0.0.1:%d" % srv.server_address[1], flush=True)
srv.serve_forever()
