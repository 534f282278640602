"""The web console: a face over ``engine.ops``, served by ``casavi-sync web``.

Why Starlette + Jinja2 + uvicorn: a small, well-kept ASGI toolkit (no ORM, no form framework to
fight), server-rendered autoescaped templates that work without JavaScript, and uvicorn as the
reference ASGI server. FastAPI would add OpenAPI machinery this HTML console does not need.
"""

from __future__ import annotations

from engine.web.app import Deployment, create_app

__all__ = ["Deployment", "create_app"]
