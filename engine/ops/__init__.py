r"""The service layer: what every face (the CLI, the web console, the worker fleet) asks the engine.

```
engine/cli   engine/web   engine/fleet      faces: parse input, call ops, render the result
        \        |        /
         engine/ops         context     config, mappings, clients, store of one tenant
                            connection  activate, deactivate, save the token (checked against SCALARA;
                                        the first save starts the initial import), disconnect
                            runs        start a run (manual, initial, schedule), plan, its outcome
                            records     explain one record live (the same trace as `explain`)
                            keys        rotate the key that encrypts the stored secrets
            |
   explain, serve, sync/, connectors, state/
```

Nothing here prints, prompts or exits: results come back as values, problems as the errors of
``engine.errors``. A face never needs to reach around this layer for "save a token" or "start a
run", so the CLI's ``connect`` and the console's "Anbindungen > SCALARA" form behave the same.
"""

from __future__ import annotations

from engine.ops.context import DEFAULT_TENANT, Context

__all__ = ["DEFAULT_TENANT", "Context"]
