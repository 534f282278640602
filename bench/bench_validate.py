"""How long `casavi-sync validate mappings` takes, as a consultant experiences it.

Each run is a fresh subprocess, so interpreter start and imports count (they dominate). The
baseline is `python -c pass` on the same interpreter; the target is a median of at most 0.3 s
(issue 11; it was 0.5 s before).

    python bench/bench_validate.py            # 9 runs each
    python bench/bench_validate.py --runs 21
    python bench/bench_validate.py --large    # one file with a 1 / 3 / 5 MB identifier (issue 9)

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
TARGET_SECONDS = 0.3


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
    parser.add_argument("--large", action="store_true",
                        help="time `validate FILE` of one file with a 1, 3 and 5 MB identifier (target: 5 MB < 3 s)")
    args = parser.parse_args()
    cli = [sys.executable, "-c", "from engine.cli import main; main()"]
    if args.large:
        _large(cli)
        return
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
    verdict = "OK" if validate_median <= TARGET_SECONDS else "OVER"
    print(f"\nvalidate median {validate_median:.3f} s, target <= {TARGET_SECONDS} s: {verdict} ({args.runs} runs each)")


def _large(cli: list[str]) -> None:
    """Validation must be linear in the file size: it was quadratic in jmespath's lexer."""
    import tempfile

    source = (ROOT / "mappings" / "units.yaml").read_text(encoding="utf-8")
    import resource

    print(f"{'file':>8} {'wall s':>8} {'CPU s':>8}  (validate FILE in a fresh process; median of 3; CPU = user + sys"
          f" of the child, what an idle machine's wall time would be)")
    with tempfile.TemporaryDirectory() as tmp:
        for megabytes in (1, 3, 5):
            path = Path(tmp) / f"units-{megabytes}mb.yaml"
            path.write_text(source.replace("      number: number\n", f"      number: {'a' * megabytes * 1_000_000}\n"),
                            encoding="utf-8")
            walls, cpus = [], []
            for _ in range(3):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                walls.extend(_time([*cli, "validate", str(path)], 1))
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            print(f"{megabytes:>6} MB {statistics.median(walls):8.2f} {statistics.median(cpus):8.2f}"
                  + ("  (target < 3 s)" if megabytes == 5 else ""))


if __name__ == "__main__":
    main()
