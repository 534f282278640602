"""The seam between the sandbox's API logic and its HTTP server.

Each API (SCALARA export, casavi v2) is an ``App``: a plain object that turns a ``Request`` into a
``Response``. The HTTP layer (``engine.sandbox.http``) serves any App on loopback and adds the
fault knobs; tests may also call an App directly or through an httpx transport.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Request:
    method: str                      # upper case: GET, PUT, POST, DELETE
    path: str                        # without query string, e.g. "/units/123"
    query: dict[str, list[str]]      # parsed query string (keep_blank_values=True)
    headers: dict[str, str]          # lower-case names
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    status: int
    body: Any = None                 # JSON-serialisable object, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes | bytearray):
            return bytes(self.body)
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class App(Protocol):
    name: str                        # "scalara" or "casavi" (counters, logs)

    def handle(self, request: Request) -> Response: ...

    def resource_of(self, request: Request) -> str:
        """The resource a request addresses, for the per-method/resource request counters."""
        ...
