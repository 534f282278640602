"""A console against the sandbox for the web tests: state, tenants, users, the app.

``Console`` holds an embedded sandbox, a state file with tenants ``default`` (not activated)
and ``hv-sued``, ``hv-nord`` (activated, not connected), and five users (one per role). ``client(user)``
is a logged-in Starlette TestClient over https (so Secure cookies flow); ``serve()`` runs the
same app under uvicorn on a loopback port for the browser.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PASSWORDS = {"team": "team-passwort-1", "kunde": "kunden-passwort-1", "ops": "operator-passwort-1",
             "berater": "berater-passwort-1", "sperre": "sperren-passwort-1"}
ROLES = {"team": ("casavi-team", None), "kunde": ("customer-admin", "default"), "ops": ("operator", None),
         "berater": ("consultant", None), "sperre": ("operator", None)}
FAST_HASH = {"time_cost": 1, "memory_cost": 8192, "parallelism": 1}  # argon2id still; tests need no 64 MiB
XSS_NAME = "<script>alert(\"x\")</script> Müller & Söhne 'Grüne Aue'"


@dataclass
class Console:
    sb: Any
    tmp: Path
    dep: Any
    app: Any
    token: str

    def secrets(self) -> list[str]:
        """Every secret that must never appear in a page: tokens, casavi key and secret, passwords."""
        return [self.token, self.sb.casavi_key, self.sb.casavi_secret, *PASSWORDS.values()]

    def client(self, user: str | None = None) -> Any:
        from starlette.testclient import TestClient

        client = TestClient(self.app, base_url="https://testserver", follow_redirects=False)
        if user is not None:
            login(client, user)
        return client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def login(client: Any, user: str, password: str | None = None) -> Any:
    page = client.get("/login")
    return client.post("/login", data={"csrf": csrf_of(page.text), "user": user,
                                       "password": password or PASSWORDS[user], "next": "/tenants"})


@contextmanager
def console(tmp: Path, *, properties: int = 1, seed: int = 7) -> Iterator[Console]:
    from engine.ops import Context, connection, users
    from engine.sandbox import FaultConfig, Sandbox
    from engine.schedule import Schedule
    from engine.web import Deployment, create_app

    users.HASH_PARAMS.update(FAST_HASH)
    with Sandbox(properties=properties, seed=seed, scalara_faults=FaultConfig(),
                 casavi_faults=FaultConfig()) as sb:
        cfg = tmp / "connectors.yaml"
        cfg.write_text(f"scalara:\n  base_url: {sb.scalara_url}\n  rate_limit: {{rate_per_s: 2000, burst: 200}}\n"
                       f"casavi:\n  base_url: {sb.casavi_url}\n  rate_limit: {{rate_per_s: 2000, burst: 200}}\n",
                       encoding="utf-8")
        ctx = Context(tmp / "state.db", config_path=cfg, env={}, actor="test")
        connection.add_tenant(ctx, sb.casavi_key, sb.casavi_secret)
        for extra in ("hv-sued", "hv-nord"):
            connection.add_tenant(ctx.for_tenant(extra), sb.casavi_key, sb.casavi_secret)
            connection.activate(ctx.for_tenant(extra))
        for name, (role, tenant) in ROLES.items():
            users.add_user(ctx, name, role, PASSWORDS[name], tenant)
        dep = Deployment(ctx, Schedule())
        try:
            yield Console(sb, tmp, dep, create_app(dep), sb.generate_scalara_token())
        finally:
            dep.jobs.stop_all()
            users.HASH_PARAMS.clear()


def wait_job(c: Console, tenant: str = "default", timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.dep.jobs.current(tenant)
        if job is not None and job.finished:
            return dict(job.snapshot())
        time.sleep(0.05)
    raise AssertionError("the console's run did not finish in time")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app under uvicorn on a free loopback port; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://localhost:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
