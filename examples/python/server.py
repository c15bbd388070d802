"""A Python HTTP server that takes its listening socket from cohort (systemd socket activation).

`cohort start examples/python/server.py --name py -i 2 --port 8000` binds :8000 once per worker slot
and hands each worker its socket as fd 3 (LISTEN_FDS=1, LISTEN_PID=<its pid>).
Run alone (`python3 server.py`) it binds :8000 itself.
"""
import os
import socket
from http.server import BaseHTTPRequestHandler, HTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from python pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print(fmt % args, flush=True)


class ActivatedServer(HTTPServer):
    def server_bind(self):
        if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
            self.socket = socket.socket(fileno=3)
            self.server_address = self.socket.getsockname()[:2]
            self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]
        else:
            super().server_bind()

    def server_activate(self):
        if os.environ.get("LISTEN_PID") != str(os.getpid()):
            super().server_activate()


if __name__ == "__main__":
    server = ActivatedServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Hello, bind_and_activate=True)
    print(f"python server pid {os.getpid()} serving on {server.server_address}", flush=True)
    server.serve_forever()
