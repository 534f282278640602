"""Benchmark of the sandbox: read throughput on loopback and the memory of a large data set.

Why: the demo, cassette recording and fault tests are only pleasant if the sandbox is never the
bottleneck (target: >= 1,000 list requests/s with zero latency and keep-alive), and the
2,000-property sandbox used for scale tests must fit a laptop (target: RSS < 1 GB).

    python bench/bench_sandbox.py [--seconds 3] [--threads 4] [--memory-properties 2000]

Throughput: httpx.Client (one connection pool, keep-alive) shared by a few threads, hammering the
list endpoints of both APIs -- once against ``casavi-sync sandbox`` in its own process (the demo's
setup), once against a ``Sandbox`` in the benchmark's own process (the tests' setup, where client
and server share one GIL, so expect less). Memory: a fresh subprocess generates the data, starts both servers,
reads one page of each list and reports VmRSS / VmHWM from /proc/self/status.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from engine.sandbox import FaultConfig, Sandbox

_MEMORY_PROBE = """
import json, time
started = time.monotonic()
from engine.sandbox import FaultConfig, Sandbox
box = Sandbox(properties={properties}, seed=1, scalara_faults=FaultConfig(), casavi_faults=FaultConfig())
generated = time.monotonic() - started
box.start()
import httpx
token = box.generate_scalara_token()
httpx.get(box.scalara_url + "/units?limit=500", headers={{"Authorization": "Bearer " + token}}).raise_for_status()
auth = httpx.post(box.casavi_url + "/v2/authenticate", json={{"key": box.casavi_key, "secret": box.casavi_secret}})
httpx.get(box.casavi_url + "/v2/units", headers={{"token": auth.json()["token"]}}).raise_for_status()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
kb = lambda name: int(status[name].split()[0])
counts = box.scalara.dataset().counts()
box.stop()
print(json.dumps({{"rss_mb": kb("VmRSS") / 1024, "peak_mb": kb("VmHWM") / 1024, "generate_s": generated,
                  "records": sum(counts.values())}}))
"""


def _hammer(client: httpx.Client, paths: list[str], headers: dict[str, str], seconds: float,
            threads: int) -> tuple[int, int, float]:
    """(requests, failures, elapsed) of ``threads`` workers cycling through ``paths``."""
    done = [0] * threads
    failed = [0] * threads
    stop_at = time.monotonic() + seconds

    def work(slot: int) -> None:
        i = slot
        while time.monotonic() < stop_at:
            response = client.get(paths[i % len(paths)], headers=headers)
            i += 1
            done[slot] += 1
            if response.status_code != 200:
                failed[slot] += 1

    started = time.monotonic()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done), sum(failed), time.monotonic() - started


def _seed_casavi(client: httpx.Client, headers: dict[str, str], properties: int) -> None:
    """Some casavi records, so that list pages carry real payloads (50 per page)."""
    for p in range(properties):
        client.put(f"/v2/properties/p{p}", headers=headers,
                   json={"name": f"WEG Lindenstraße {p}", "addresses": [{"street": f"Lindenstraße {p}"}]})
        for u in range(10):
            client.put(f"/v2/units/p{p}-u{u}", headers=headers,
                       json={"propertyId": f"p{p}", "name": f"WE {u:02d}", "address": f"Lindenstraße {p}",
                             "customFields": {"mea": 100 + u, "areaSqm": 60 + u}})
        for c in range(10):
            client.put(f"/v2/contacts/p{p}-c{c}", headers=headers,
                       json={"firstName": "Jörg", "lastName": f"Müller {p}-{c}", "email": f"m{p}.{c}@example.de"})


def _start_cli(properties: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``casavi-sync sandbox`` in its own process (as the demo runs it), without rate limits."""
    proc = subprocess.Popen([sys.executable, "-c", "from engine.cli import main; main()", "sandbox",
                             "--properties", str(properties), "--rate-limit", "0",
                             "--port-scalara", "0", "--port-casavi", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    shown: dict[str, str] = {}
    for line in proc.stdout:
        if line.startswith("Serving"):
            break
        parts = line.split()
        if len(parts) >= 2:
            shown.setdefault(parts[0], parts[1])
    return proc, shown


def _measure(scalara_url: str, scalara_token: str, casavi_url: str, key: str, secret: str,
             seconds: float, threads: int, where: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(base_url=scalara_url, limits=limits, timeout=10) as client:
        paths = ["/properties?limit=100", "/units?limit=100", "/contacts?limit=100", "/ownerships?limit=100"]
        n, failed, elapsed = _hammer(client, paths, {"Authorization": f"Bearer {scalara_token}"}, seconds, threads)
        rows.append({"api": f"SCALARA lists, 100/page ({where})", "requests": n, "failed": failed,
                     "rps": n / elapsed})
    with httpx.Client(base_url=casavi_url, limits=limits, timeout=10) as client:
        auth = client.post("/v2/authenticate", json={"key": key, "secret": secret})
        headers = {"token": auth.json()["token"]}
        if not client.get("/v2/units", headers=headers).json()["list"]:
            _seed_casavi(client, headers, 10)
        paths = ["/v2/properties", "/v2/units", "/v2/units?page=2", "/v2/contacts"]
        n, failed, elapsed = _hammer(client, paths, headers, seconds, threads)
        rows.append({"api": f"casavi lists, 50/page ({where})", "requests": n, "failed": failed,
                     "rps": n / elapsed})
    return rows


def throughput(seconds: float, threads: int) -> list[dict[str, Any]]:
    """Server in its own process (the demo's setup), then in the client's process (tests' setup,
    where client and server share one GIL)."""
    proc, shown = _start_cli(20)
    try:
        rows = _measure(shown["SCALARA"], shown["token"], shown["casavi"], shown["key"], shown["secret"],
                        seconds, threads, "own process")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    with Sandbox(properties=20, seed=1, scalara_faults=FaultConfig(), casavi_faults=FaultConfig()) as box:
        rows += _measure(box.scalara_url, box.generate_scalara_token(), box.casavi_url, box.casavi_key,
                         box.casavi_secret, seconds, threads, "in-process")
    return rows


def memory(properties: int) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE.format(properties=properties)],
                            capture_output=True, text=True, check=True, timeout=600)
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration per API")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--memory-properties", type=int, default=2000)
    args = parser.parse_args()

    print(f"{'read throughput (keep-alive, zero latency)':<44}{'req/s':>9}{'requests':>10}{'failed':>8}")
    for row in throughput(args.seconds, args.threads):
        print(f"{row['api']:<44}{row['rps']:>9.0f}{row['requests']:>10}{row['failed']:>8}")
    mem = memory(args.memory_properties)
    print()
    print(f"{'memory (subprocess, generate + serve)':<44}{'value':>9}")
    print(f"{'properties':<44}{args.memory_properties:>9}")
    print(f"{'SCALARA records':<44}{mem['records']:>9}")
    print(f"{'generate time (s)':<44}{mem['generate_s']:>9.1f}")
    print(f"{'RSS (MB)':<44}{mem['rss_mb']:>9.0f}")
    print(f"{'peak RSS (MB)':<44}{mem['peak_mb']:>9.0f}")
    print(f"{'under 1 GB':<44}{'yes' if mem['peak_mb'] < 1024 else 'NO':>9}")


if __name__ == "__main__":
    main()
