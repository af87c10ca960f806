"""Echo backends for the local environment: stand-ins for a cluster's pods.

Started as processes by :mod:`e2e.envoy`-based tests and the demo. Each answers
every HTTP request with who it is (cluster and address), so a request through
an Envoy shows which cluster served it. ``python -m e2e.backends --listen
127.1.0.10:8080 --name a``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


def _handler(name: str, address: str) -> type[BaseHTTPRequestHandler]:
    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = json.dumps({"cluster": name, "backend": address, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("x-backend-cluster", name)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: a load loop would flood the log

    return Echo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.backends")
    parser.add_argument("--listen", required=True, help="HOST:PORT on loopback")
    parser.add_argument("--name", required=True, help="the cluster this backend belongs to")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host.startswith("127."):
        print("backends listen on loopback only", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((host, int(port)), _handler(args.name, args.listen))
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
