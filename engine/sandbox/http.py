"""Serve any sandbox ``App`` as a real HTTP/1.1 server on loopback, with fault knobs.

The engine's connectors must be tested through the same code path production uses: a real
socket, keep-alive, Content-Length, transport errors. So the sandbox runs the standard library's
``ThreadingHTTPServer`` in a background thread (no hand-written HTTP parsing) and puts the fault
layer (``engine.sandbox.faults``) between the socket and the App:

    with serve(app, faults=FaultConfig(error_rate_503=0.2, seed=7)) as handle:
        httpx.get(handle.url + "/v2/units")
        handle.counters.writes()

Error bodies the layer itself produces (429, 502, 503, 413, 500) use the App's error shape when it
offers an ``error_body(status, code, message)`` method, else SCALARA's ``{"error", "message"}``.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from engine.sandbox.app import App, Request, Response
from engine.sandbox.faults import Decision, FaultConfig, FaultState

MAX_BODY_BYTES = 1024 * 1024          # larger bodies get 413 (read and discarded, never dropped)
_DISCARD_LIMIT = 64 * 1024 * 1024     # beyond this we stop reading and close after answering
_WRITE_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})
_CONTROL_PREFIX = "/sandbox/"


class Counters:
    """Thread-safe request counts: per (method, resource), per status, and writes.

    ``writes()`` counts write requests (PUT/POST/DELETE) that reached the App, whatever it
    answered; requests the fault layer answered instead (429, injected 5xx, drops) are not writes.
    Control paths (``/sandbox/...``) and requests the App declares non-writes (casavi's
    ``POST /v2/authenticate``) are never writes.

    ``start_log()`` also keeps a request log: (monotonic time, method, path, status) of every
    request the App answered, in the order the answers were produced (tests read the order in
    which a sync wrote; off by default, it grows with every request).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_resource: Counter[tuple[str, str]] = Counter()
        self._by_status: Counter[int] = Counter()
        self._writes = 0
        self._successful_writes = 0
        self._connections = 0
        self._log: list[tuple[float, str, str, int]] | None = None

    def start_log(self) -> None:
        with self._lock:
            self._log = []

    def log(self) -> list[tuple[float, str, str, int]]:
        """The request log since ``start_log()`` (empty when it was never started)."""
        with self._lock:
            return list(self._log or [])

    def connection_opened(self) -> None:
        with self._lock:
            self._connections += 1

    def connections(self) -> int:
        """TCP connections accepted: with keep-alive, one client needs only a few."""
        with self._lock:
            return self._connections

    def record(self, method: str, resource: str, status: int, *, write: bool, path: str | None = None) -> None:
        with self._lock:
            if self._log is not None and path is not None:
                self._log.append((time.monotonic(), method, path, status))
            self._by_resource[(method, resource)] += 1
            self._by_status[status] += 1
            if write:
                self._writes += 1
                if 200 <= status < 300:
                    self._successful_writes += 1

    def requests(self, method: str | None = None, resource: str | None = None) -> int:
        """Requests received, optionally only of one method and/or resource."""
        with self._lock:
            return sum(n for (m, r), n in self._by_resource.items()
                       if (method is None or m == method) and (resource is None or r == resource))

    def status(self, code: int) -> int:
        with self._lock:
            return self._by_status[code]

    def by_resource(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._by_resource)

    def by_status(self) -> dict[int, int]:
        with self._lock:
            return dict(self._by_status)

    def writes(self) -> int:
        with self._lock:
            return self._writes

    def successful_writes(self) -> int:
        with self._lock:
            return self._successful_writes

    def reset(self) -> None:
        with self._lock:
            self._by_resource.clear()
            self._by_status.clear()
            self._writes = 0
            self._successful_writes = 0
            self._connections = 0
            if self._log is not None:
                self._log.clear()


def _default_error_body(status: int, code: str, message: str) -> Any:
    return {"error": code, "message": message}


class _Server(ThreadingHTTPServer):
    """Tracks open connections so ``stop`` can close idle keep-alive sockets and join quickly."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handle: ServerHandle) -> None:
        self.handle = handle
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        self.worker_threads: set[threading.Thread] = set()
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
            self.worker_threads.add(threading.current_thread())
        self.handle.counters.connection_opened()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.sockets_lock:
                self.open_sockets.discard(request)
                self.worker_threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        """No tracebacks on stderr: a client that went away is normal, anything else is logged."""
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            self.handle.errors.append(traceback.format_exc())

    def close_connections(self) -> list[threading.Thread]:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
            threads = list(self.worker_threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return threads


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "casavi-sync-sandbox"
    sys_version = ""
    timeout = 60                      # idle keep-alive connections end after a minute
    disable_nagle_algorithm = True    # never wait for the peer's delayed ACK (40 ms stalls)
    wbufsize = 64 * 1024              # headers + body leave in one send; flushed after each request
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log (tests and the demo stay readable)."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unsupported method) as JSON, not HTML."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":   # unparsable request line: answer with headers anyway
            self.request_version = "HTTP/1.0"
        text = message or self.responses.get(code, ("error", ""))[0]
        self.send(Response(code, {"error": f"http_{code}", "message": text}))

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self.server.handle.dispatch(self)

    # -- helpers used by ServerHandle.dispatch -------------------------------------------------

    def read_body(self) -> tuple[bytes | None, Response | None]:
        """The request body, or an error response (oversized, chunked, bad Content-Length)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            return None, Response(411, None)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b"", None
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            return None, Response(400, None)
        if length > MAX_BODY_BYTES:
            self._discard(length)
            return None, Response(413, None)
        return self.rfile.read(length), None

    def _discard(self, length: int) -> None:
        if length > _DISCARD_LIMIT:
            self.close_connection = True
            return
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)

    def send(self, response: Response, *, truncate: bool = False) -> None:
        body = response.encoded()
        if truncate and body:
            body = body[: max(1, len(body) // 2)]
        self.send_response(response.status)
        names = {k.lower() for k in response.headers}
        for key, value in response.headers.items():
            self.send_header(key, value)
        if body and "content-type" not in names:
            is_json = not isinstance(response.body, bytes | bytearray)
            self.send_header("Content-Type", "application/json" if is_json else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)


class ServerHandle:
    """A running sandbox server: ``url``, ``counters``, ``errors``, runtime fault knobs, ``stop``."""

    def __init__(self, app: App, host: str, port: int, faults: FaultConfig | None) -> None:
        self.app = app
        self.faults = FaultState(faults or FaultConfig())
        self.counters = Counters()
        self.errors: list[str] = []     # tracebacks of exceptions inside the App (bugs)
        self._stopping = threading.Event()
        self._error_body: Callable[[int, str, str], Any] = getattr(app, "error_body", _default_error_body)
        self._is_write: Callable[[Request], bool] | None = getattr(app, "is_write", None)
        self._server = _Server((host, port), self)
        bound_host, bound_port = self._server.server_address[:2]
        self.host = str(bound_host)
        self.port = int(bound_port)
        self.url = f"http://{self.host}:{self.port}"
        # stop() waits for the serve loop's next poll: 10 ms keeps a stop (every test's teardown,
        # hundreds per run) short, for an idle cost of a hundred cheap wake-ups a second
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name=f"sandbox-{getattr(app, 'name', 'app')}", daemon=True)
        self._thread.start()

    # -- runtime control ------------------------------------------------------------------------

    def set_faults(self, faults: FaultConfig | None) -> None:
        """Change the fault knobs mid-run (e.g. start a 429 storm); fault state starts afresh."""
        self.faults.reconfigure(faults or FaultConfig())

    def clear_outage(self) -> None:
        self.faults.clear_outage()

    def stop(self) -> None:
        """Stop serving, close keep-alive connections, wake slow responses and join the threads."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        threads = self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=2)
        for thread in threads:
            thread.join(timeout=1)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- one request ------------------------------------------------------------------------------

    def dispatch(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path) or "/"
        method = handler.command.upper()
        headers = {k.lower(): v for k, v in handler.headers.items()}
        control = path.startswith(_CONTROL_PREFIX)
        body, early = handler.read_body()
        request = Request(method=method, path=path, query=parse_qs(split.query, keep_blank_values=True),
                          headers=headers, body=body or b"")
        resource = self._resource(request)
        if early is not None:
            code = {411: "length_required", 413: "body_too_large"}.get(early.status, "bad_request")
            text = {411: "send a Content-Length (chunked bodies are not accepted)",
                    413: f"request body larger than {MAX_BODY_BYTES} bytes"}.get(
                        early.status, "invalid Content-Length header")
            self.counters.record(method, resource, early.status, write=False)
            handler.send(self._error(early.status, code, text))
            return

        decision = Decision() if control else self.faults.decide(self._credential(headers))
        if decision.delay_s > 0 and self._stopping.wait(decision.delay_s):
            handler.close_connection = True
            return
        if decision.kind == "drop":
            handler.close_connection = True
            self.counters.record(method, resource, 0, write=False)
            return
        if decision.kind != "pass":
            response = self._fault_response(decision)
            self.counters.record(method, resource, response.status, write=False)
            handler.send(response)
            return

        response = self._call_app(request)
        write = not control and self._write(request)
        truncate = decision.malformed and response.status == 200 and not isinstance(
            response.body, bytes | bytearray) and response.body is not None
        # Count before answering, so a client that got its answer always sees it counted.
        self.counters.record(method, resource, response.status, write=write, path=path)
        if write:
            self.faults.record_write(200 <= response.status < 300)
        handler.send(response, truncate=truncate)

    def _call_app(self, request: Request) -> Response:
        try:
            return self.app.handle(request)
        except Exception:
            self.errors.append(traceback.format_exc())
            return self._error(500, "internal_error", "internal sandbox error (a bug in the sandbox)")

    def _resource(self, request: Request) -> str:
        try:
            return self.app.resource_of(request)
        except Exception:
            return "unknown"

    def _write(self, request: Request) -> bool:
        if self._is_write is not None:
            return self._is_write(request)
        return request.method in _WRITE_METHODS

    def _fault_response(self, decision: Decision) -> Response:
        if decision.kind == "rate_limited":
            response = self._error(429, "rate_limited", "too many requests; retry later")
        elif decision.kind == "outage":
            response = self._error(503, "service_unavailable", "service unavailable (outage)")
        elif decision.kind == "error_502":
            response = self._error(502, "bad_gateway", "bad gateway")
        else:
            response = self._error(503, "service_unavailable", "service temporarily unavailable")
        if decision.retry_after is not None:
            response.headers["Retry-After"] = decision.retry_after
        return response

    def _error(self, status: int, code: str, message: str) -> Response:
        return Response(status, self._error_body(status, code, message))

    @staticmethod
    def _credential(headers: dict[str, str]) -> str:
        return headers.get("authorization") or headers.get("token") or ""


def serve(app: App, *, host: str = "127.0.0.1", port: int = 0,
          faults: FaultConfig | None = None) -> ServerHandle:
    """Serve ``app`` on ``host:port`` (0 = a free port) in a background thread; see ``ServerHandle``."""
    return ServerHandle(app, host, port, faults)
