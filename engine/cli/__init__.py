"""The command line: a thin shell over the engine's stages.

Each command group lives in its own module and attaches itself to ``main``. Only this layer
prints and chooses exit codes; the engine below raises errors from ``engine.errors``.
"""

from __future__ import annotations

from engine.cli import (
    demo_cmd,
    explain_cmd,
    failures_cmd,
    init_cmd,
    keys_cmd,
    map_cmd,
    observe_cmd,
    sandbox_cmd,
    serve_cmd,
    state_cmd,
    status_cmd,
    sync_cmd,
    tenant_cmd,
    test_cmd,
    validate_cmd,
    web_cmd,
    worker_cmd,
)
from engine.cli.base import main

__all__ = ["demo_cmd", "explain_cmd", "failures_cmd", "init_cmd", "keys_cmd", "main", "map_cmd", "observe_cmd",
           "sandbox_cmd", "serve_cmd", "state_cmd", "status_cmd", "sync_cmd", "tenant_cmd", "test_cmd", "validate_cmd",
           "web_cmd", "worker_cmd"]
