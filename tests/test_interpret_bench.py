"""Differential test: the interpreter with the fixture mappings and bench/handwritten.py agree.

The fixture mappings (tests/fixtures/mappings/) are a frozen copy of the shipped defaults, which
bench/handwritten.py was written after; a consultant's change to mappings/ does not touch them.

The benchmark's generator makes realistic, messy data (co-owners, leases over several units,
companies, broken e-mail addresses, ended roles, units whose building is gone, tombstones); on a
small slice of it both implementations must give the same payloads and fail the same records.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_mapping import compare, generate, shipped  # noqa: E402
from tests.conftest import MAPPINGS_DIR  # noqa: E402


def test_interpreter_equals_handwritten_on_generated_data() -> None:
    data = generate(scale=0.05, seed=11)
    assert sum(len(v) for v in data.values()) > 4000
    produced, failed = compare(data, shipped(MAPPINGS_DIR))
    assert produced > 4000
    assert failed >= 0


def test_generator_is_deterministic() -> None:
    assert generate(scale=0.01, seed=3) == generate(scale=0.01, seed=3)
    assert generate(scale=0.01, seed=3) != generate(scale=0.01, seed=4)
