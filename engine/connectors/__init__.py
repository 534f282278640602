"""Connectors: one httpx client per side, configured by ``default.yaml`` (see docs/connectors.md).

```
ConnectorConfig  <- load_connector_config()   default.yaml + operator file + env URL overrides
ScalaraClient    reads SCALARA resources page by page (cursor pagination, Bearer token)
CasaviClient     reads and writes casavi records (key/secret -> token, renew once on 401)
RateLimiter      token bucket shared by a client's threads; paused by a 429's Retry-After
```

Both clients take an optional ``transport`` (``httpx.MockTransport`` in tests, the sandbox's
transport in demos) and injectable ``sleep``/``clock`` so retries can be tested without waiting.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.connectors.casavi import CasaviClient, CasaviRejected, WriteResult
    from engine.connectors.config import (
        CasaviConfig,
        ConnectorConfig,
        RateLimit,
        RetryPolicy,
        ScalaraConfig,
        load_connector_config,
    )
    from engine.connectors.retry import RateLimiter, Retrier, Stats, TransientResponse, parse_retry_after
    from engine.connectors.scalara import ScalaraClient

# Loaded on first use (PEP 562): `validate` needs the connector config but not httpx, which the
# clients import; importing this package must not cost a cold validate tens of milliseconds.
_WHERE = {
    "CasaviClient": "casavi", "CasaviRejected": "casavi", "WriteResult": "casavi",
    "CasaviConfig": "config", "ConnectorConfig": "config", "RateLimit": "config", "RetryPolicy": "config",
    "ScalaraConfig": "config", "load_connector_config": "config",
    "RateLimiter": "retry", "Retrier": "retry", "Stats": "retry", "TransientResponse": "retry",
    "parse_retry_after": "retry",
    "ScalaraClient": "scalara",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.connectors' has no attribute {name!r}")
    value = getattr(import_module(f"engine.connectors.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CasaviClient",
    "CasaviConfig",
    "CasaviRejected",
    "ConnectorConfig",
    "RateLimit",
    "RateLimiter",
    "Retrier",
    "RetryPolicy",
    "ScalaraClient",
    "ScalaraConfig",
    "Stats",
    "TransientResponse",
    "WriteResult",
    "load_connector_config",
    "parse_retry_after",
]
