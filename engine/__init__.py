"""casavi-sync: a declarative mapping engine, SCALARA -> casavi.

The facade offers a handful of verbs; each stage lives in its own module.
"""

from __future__ import annotations

__version__ = "0.1.0"
