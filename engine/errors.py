"""One rooted exception tree, split by who must act.

```
CasaviSyncError                      root: everything the engine raises on purpose
├── SpecError                        the mapping author must fix a file   -> validate exits 1
│     carries a list of Diagnostic (file:line:col, JSON path, message, hint)
├── OperatorError                    the operator must act               -> run aborted (exit 3)
│   ├── ConfigError                  bad config file, unknown tenant, missing connection
│   ├── AuthError                    token/key rejected (message says where to get a new one)
│   ├── NetworkError                 retries exhausted, service unreachable
│   └── StateError                   state file corrupt, newer version, locked
└── RecordError                      one record could not be mapped or written:
                                     reported, the run goes on (exit 1 at the end)
```

Only the CLI turns these into exit codes; nothing below it prints or exits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine.text import clip

REASON_LIMIT, ID_LIMIT = 1000, 200


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a user's file, positioned for humans and machines.

    ``line`` and ``col`` are 1-based (as editors show them); 0 means unknown.
    """

    file: str
    line: int
    col: int
    message: str
    path: str = "$"
    hint: str | None = None
    code: str = "error"
    severity: str = "error"
    source_line: str | None = None

    def __post_init__(self) -> None:
        # a message may quote the file (a 1 MB identifier): cut once here, for every renderer
        for name in ("message", "hint"):
            value = getattr(self, name)
            if isinstance(value, str) and len(value) > REASON_LIMIT:
                object.__setattr__(self, name, clip(value, REASON_LIMIT))

    def location(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


class CasaviSyncError(Exception):
    """Root of every error the engine raises on purpose."""


class SpecError(CasaviSyncError):
    """A mapping or test file is wrong; the author must fix it."""

    def __init__(self, diagnostics: list[Diagnostic], owner: str | None = None) -> None:
        self.diagnostics = list(diagnostics)
        self.owner = owner  # e.g. "the mapping set of tenant 'acme'": whose files these are
        first = self.diagnostics[0] if self.diagnostics else None
        text = f"{first.location()}: {first.message}" if first else "invalid specification"
        if len(self.diagnostics) > 1:
            text += f" (and {len(self.diagnostics) - 1} more)"
        super().__init__(text)


class ExpressionError(SpecError):
    """An expression does not parse, or calls an unknown function or with the wrong arity.

    ``offset`` is the 0-based position inside the expression text (None if unknown), so that a
    caller knowing where the expression sits in a file can point at the exact column.
    """

    def __init__(self, source: str, message: str, offset: int | None = None, hint: str | None = None):
        self.source = source
        self.reason = message
        self.offset = offset
        self.hint = hint
        col = offset + 1 if offset is not None else 0
        super().__init__([Diagnostic(file="<expression>", line=1 if col else 0, col=col,
                                     message=message, hint=hint, code="expression")])


class OperatorError(CasaviSyncError):
    """The operator must act; the run is aborted."""


class ConfigError(OperatorError):
    """Configuration is missing or wrong."""


class AuthError(OperatorError):
    """A token, key or secret was rejected."""


class NetworkError(OperatorError):
    """A service could not be reached, even after retries."""


class StateError(OperatorError):
    """The state store cannot be used (corrupt, newer version, locked)."""


@dataclass
class RecordError(CasaviSyncError):
    """One record failed; it is reported and the run goes on."""

    reason: str
    source_id: str | None = None
    resource: str | None = None
    target_id: str | None = None
    field: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # a record's reason or id may quote SCALARA data (a 10 MB text field): it goes to stdout,
        # the report and the state, so it is cut here, once for every path
        self.reason = clip(str(self.reason), REASON_LIMIT)
        for name in ("source_id", "target_id", "field"):
            value = getattr(self, name)
            if isinstance(value, str) and len(value) > ID_LIMIT:
                setattr(self, name, clip(value, ID_LIMIT))
        super().__init__(self.reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "sourceId": self.source_id,
            "targetId": self.target_id,
            "field": self.field,
            "reason": self.reason,
        }
