"""How long `casavi-sync validate mappings` takes, as a consultant experiences it.

Each run is a fresh subprocess, so interpreter start and imports count (they dominate). The
baseline is `python -c pass` on the same interpreter; the target is a median under 0.5 s.

    python bench/bench_validate.py            # 9 runs each
    python bench/bench_validate.py --runs 21

If it is over, `python -X importtime -c "import engine.cli"` shows which import to make lazy.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 0.5


def _time(cmd: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        samples.append(time.perf_counter() - start)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    cli = [sys.executable, "-c", "from engine.cli import main; main()"]
    cases = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("casavi-sync --help", [*cli, "--help"]),
        ("casavi-sync validate mappings", [*cli, "validate", "mappings"]),
        ("validate --format json", [*cli, "validate", "--format", "json", "mappings"]),
    ]
    rows = []
    for label, cmd in cases:
        samples = _time(cmd, args.runs)
        rows.append((label, statistics.median(samples), min(samples), max(samples)))
    base = rows[0][1]
    print(f"{'command':32} {'median':>8} {'min':>8} {'max':>8} {'x base':>7}")
    for label, median, low, high in rows:
        print(f"{label:32} {median:8.3f} {low:8.3f} {high:8.3f} {median / base:7.1f}")
    validate_median = rows[2][1]
    verdict = "OK" if validate_median < TARGET_SECONDS else "OVER"
    print(f"\nvalidate median {validate_median:.3f} s, target < {TARGET_SECONDS} s: {verdict} ({args.runs} runs each)")


if __name__ == "__main__":
    main()
