"""The observation endpoint: ``/metrics`` (Prometheus text format), ``/healthz``, ``/readyz``.

A small stdlib HTTP server on its own thread beside ``serve`` or a worker (the web console mounts
the same three handlers through :func:`render`). It serves GET and HEAD only and reads nothing from
the request but the path, so it needs no authentication to be safe; bind it to an internal
address (default ``127.0.0.1``) and let the monitoring system scrape it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from engine.errors import ConfigError
from engine.observe.health import Health

DEFAULT_METRICS_PATH = "/metrics"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` -> (host, port); a ConfigError naming the expected form otherwise."""
    value = text.strip()
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"metrics address {text!r} is not HOST:PORT (e.g. 127.0.0.1:9464 or :9464)")
    return host, port


def render(path: str, registry: CollectorRegistry, health: Health,
           metrics_path: str = DEFAULT_METRICS_PATH) -> tuple[int, str, bytes]:
    """(status, content type, body) for one of the three paths; 404 for anything else."""
    route = path.split("?", 1)[0]
    if route == metrics_path:
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
    if route in ("/healthz", "/livez"):
        ok, doc = health.liveness()
    elif route == "/readyz":
        ok, doc = health.readiness()
    else:
        return 404, "application/json", b'{"error": "not_found"}'
    return (200 if ok else 503), "application/json", json.dumps(doc).encode("utf-8")


class ObserveServer:
    """``with ObserveServer(("127.0.0.1", 9464), registry, health) as s: ...`` - serves until closed."""

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, health: Health,
                 metrics_path: str = DEFAULT_METRICS_PATH) -> None:
        registry_, health_, path_ = registry, health, metrics_path

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, ctype, body = render(self.path, registry_, health_, path_)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
                return

        try:
            self.httpd = ThreadingHTTPServer(address, Handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen for metrics on {address[0]}:{address[1]}: {exc.strerror or exc}; "
                              "choose another --metrics-address") from None
        self.httpd.daemon_threads = True
        # close() waits for the serve loop's next poll (0.5 s by default): 0.1 s keeps stopping
        # serve, worker and web prompt
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="observe-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}" if isinstance(host, str) else f"http://{host.decode()}:{port}"

    def __enter__(self) -> ObserveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
