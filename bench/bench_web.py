"""Benchmark of the web console: 50 concurrent users browsing reports, idle and while a run writes.

Target (issue 13): p95 page time under 300 ms while a run writes, on the 2-core development machine.

    python bench/bench_web.py [--users 50] [--seconds 8] [--properties 30]

Three processes, as in production: the sandbox (SCALARA + casavi, its own process, with 5 ms
latency), the console (``casavi-sync web``, which also runs the sync it starts: "run now" runs in
the console's process, the worst case for its page times), and this load generator (asyncio +
httpx, one logged-in session per user). Each user loops over the tenant list, the run history
and a run report, looking at each page for ``--think`` seconds on average (0.5x to 1.5x); then
the same with no think time at all (a stress test: 50 users clicking as fast as the server
answers). Each round is measured idle, then while a run writes: every contact in SCALARA
changes and "run now" is pressed; only requests during that run count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

WORLD = """
import json, sys
from engine.sandbox import FaultConfig, Sandbox
faults = FaultConfig(latency_ms=5)
box = Sandbox(properties={properties}, seed=1, scalara_faults=faults, casavi_faults=faults)
box.start()
print(json.dumps({{"scalara": box.scalara_url, "casavi": box.casavi_url, "key": box.casavi_key,
                  "secret": box.casavi_secret, "token": box.generate_scalara_token()}}), flush=True)
for round, line in enumerate(sys.stdin):
    if line.strip() == "mutate":
        data = box.scalara.dataset()
        for n, cid in enumerate(sorted(data["contacts"])):
            box.scalara.update_record("contacts", cid, {{"email": f"neu{{round}}-{{n}}@example.org"}})
        print("mutated", flush=True)
box.stop()
"""
PASSWORD = "bench-passwort-123"
PAGES = ("/tenants", "/tenants/default/runs", "/tenants/default/runs/1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def user_session(base: str, index: int) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=30, follow_redirects=False)
    page = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, "no login form"
    r = await client.post("/login", data={"csrf": csrf.group(1), "user": f"bench{index % 5}",
                                          "password": PASSWORD, "next": "/tenants"})
    assert r.status_code == 303, f"login failed: {r.status_code}"
    return client


async def browse(client: httpx.AsyncClient, until: Any, times: list[float], think: float) -> None:
    i = 0
    rng = random.Random(id(client))
    while not until():
        if think:
            await asyncio.sleep(rng.uniform(0.5 * think, 1.5 * think))
        t0 = time.perf_counter()
        r = await client.get(PAGES[i % len(PAGES)])
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, (r.status_code, PAGES[i % len(PAGES)], re.findall(r"id=\"error\">([^<]*)", r.text))
        i += 1


def summary(name: str, times: list[float], seconds: float) -> str:
    if not times:
        return f"{name:<26} no requests"
    q = statistics.quantiles(times, n=100)
    return (f"{name:<26} {len(times):>6} req  {len(times) / seconds:>6.0f} req/s  p50 {q[49] * 1000:>5.0f} ms  "
            f"p95 {q[94] * 1000:>5.0f} ms  max {max(times) * 1000:>5.0f} ms")


async def load(base: str, users: int, seconds: float, world: subprocess.Popen[str], state: Path,
               think: float) -> list[str]:
    from engine.state import StateStore

    clients = [await user_session(base, i) for i in range(users)]
    label = f"think {think:.1f} s" if think else "no think time"
    lines = []
    t0 = time.monotonic()
    times: list[float] = []
    await asyncio.gather(*(browse(c, lambda: time.monotonic() - t0 > seconds, times, think) for c in clients))
    lines.append(summary(f"{label}, idle", times, time.monotonic() - t0))

    assert world.stdin and world.stdout
    world.stdin.write("mutate\n")
    world.stdin.flush()
    world.stdout.readline()
    with StateStore.open(state) as store:
        before = store.runs("default", limit=1)[0].id
    page = await clients[0].get("/tenants/default/runs")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    r = await clients[0].post("/tenants/default/run", data={"csrf": csrf.group(1)})
    assert r.status_code == 303, r.status_code

    def run_over() -> bool:
        with StateStore.open(state) as store:
            runs = store.runs("default", limit=1)
        return bool(runs) and runs[0].id > before and runs[0].finished_at is not None

    done = {"flag": False, "at": 0.0}

    async def watch() -> None:
        while not done["flag"]:
            await asyncio.sleep(0.2)
            if await asyncio.to_thread(run_over):
                done["flag"], done["at"] = True, time.monotonic()

    t1 = time.monotonic()
    times = []
    await asyncio.gather(watch(), *(browse(c, lambda: done["flag"], times, think) for c in clients))
    took = done["at"] - t1
    with StateStore.open(state) as store:
        run = store.runs("default", limit=1)[0]
    lines.append(summary(f"{label}, while a run writes", times, took))
    lines.append(f"  the run: #{run.id} {run.outcome} in {took:.1f} s, {run.outcome_counts}")
    for c in clients:
        await c.aclose()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--properties", type=int, default=30)
    parser.add_argument("--think", type=float, default=1.0, help="Mean seconds a user looks at a page.")
    args = parser.parse_args()
    from engine.ops import Context, connection, users

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        world = subprocess.Popen([sys.executable, "-c", WORLD.format(properties=args.properties)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        console = None
        try:
            assert world.stdout
            info = json.loads(world.stdout.readline())
            cfg = Path(tmp) / "connectors.yaml"
            cfg.write_text(f"scalara:\n  base_url: {info['scalara']}\n  rate_limit: {{rate_per_s: 400, burst: 50}}\n"
                           f"casavi:\n  base_url: {info['casavi']}\n  rate_limit: {{rate_per_s: 400, burst: 50}}\n",
                           encoding="utf-8")
            state = Path(tmp) / "state.db"
            ctx = Context(state, config_path=cfg, env={}, actor="bench")
            connection.add_tenant(ctx, info["key"], info["secret"])
            connection.activate(ctx)
            for i in range(5):
                users.add_user(ctx, f"bench{i}", "operator", PASSWORD)
            t0 = time.monotonic()
            done = connection.connect(ctx, info["token"])
            print(f"initial import of {args.properties} properties: {done.run.outcome} in "
                  f"{time.monotonic() - t0:.1f} s (bench process)")
            port = free_port()
            console = subprocess.Popen([sys.executable, "-c", "from engine.cli import main; main()", "web",
                                        "--state", str(state), "--config", str(cfg), "--port", str(port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    httpx.get(base + "/login", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            print(f"{args.users} users, pages {', '.join(PAGES)}")
            for think in (args.think, 0.0):
                for line in asyncio.run(load(base, args.users, args.seconds, world, state, think)):
                    print(line)
        finally:
            if console is not None:
                console.terminate()
                console.wait(timeout=10)
            if world.stdin:
                world.stdin.close()
            world.wait(timeout=10)


if __name__ == "__main__":
    main()
