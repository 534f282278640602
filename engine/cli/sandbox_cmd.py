"""``casavi-sync sandbox``: serve fake SCALARA and casavi APIs on loopback until Ctrl-C.

For the demo, for recording cassettes and for trying the engine against faults by hand. It prints
both base URLs, a fresh SCALARA token and the casavi key/secret -- the one place the project prints
credentials on purpose: they belong to a local fake and die with the process.

Exit codes: 0 after Ctrl-C / SIGTERM, 2 bad option, 3 cannot start (e.g. port in use).
"""

from __future__ import annotations

import shlex
import signal
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import click

from engine.cli.base import main
from engine.errors import CasaviSyncError

_RATIO = click.FloatRange(0.0, 1.0)
_SIDES = ("scalara", "casavi")


def _side_faults(side: str, options: dict[str, Any]) -> Any:
    from engine.sandbox.faults import FaultConfig

    config = FaultConfig.contract_defaults(side)
    rate = options["rate_limit"]
    if rate is not None:
        burst = options["burst"] or max(1, int(rate * 2))
        config = replace(config, rate_limit_per_s=rate or None, burst=burst if rate else 1)
    elif options["burst"]:
        config = replace(config, burst=options["burst"])
    if options["faults_on"] not in ("both", side):
        return config
    config = replace(
        config, latency_ms=options["latency_ms"], latency_jitter_ms=options["jitter_ms"],
        error_rate_502=options["error_rate_502"], error_rate_503=options["error_rate"],
        drop_connection_ratio=options["drop_rate"], malformed_json_ratio=options["malformed_rate"],
        slow_response_ratio=options["slow_rate"], slow_response_s=options["slow_seconds"],
        retry_after_http_date_ratio=options["retry_after_date_ratio"], seed=options["fault_seed"])
    if side == "casavi" and options["outage_after_writes"] is not None:
        config = replace(config, outage_after_writes=options["outage_after_writes"])
    return config


def _preview_environment(box: Any, token: str) -> str:
    """The environment another shell needs to preview against this sandbox, ready to paste.

    The state file is a fresh one of its own, so a preview never touches a deployment's state.
    """
    state = Path(tempfile.mkdtemp(prefix="casavi-sync-preview-")) / "state.db"
    pairs = [("CASAVI_SYNC_SCALARA_URL", box.scalara_url), ("CASAVI_SYNC_CASAVI_URL", box.casavi_url),
             ("CASAVI_SYNC_SCALARA_TOKEN", token), ("CASAVI_SYNC_CASAVI_KEY", box.casavi_key),
             ("CASAVI_SYNC_CASAVI_SECRET", box.casavi_secret), ("CASAVI_SYNC_STATE", str(state))]
    lines = ["", "In another shell (copy-paste; sandbox credentials only, a state file of its own):"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in pairs]
    lines += ["casavi-sync tenant add && casavi-sync tenant activate && casavi-sync connect --no-initial-import",
              _preview_plan(Path.cwd()), ""]
    return "\n".join(lines)


def _preview_plan(cwd: Path) -> str:
    """The preview command, right in any folder it is pasted into: the mappings folder as an absolute
    path when the sandbox was started in a project folder, else a placeholder to fill in."""
    guide = "docs/consultant-guide.md: the preview loop"
    if (cwd / "mappings").is_dir():
        folder = shlex.quote(str((cwd / "mappings").resolve()))
        return f"casavi-sync plan --details --mappings {folder}    # {guide}"
    return (f"casavi-sync plan --details --mappings PROJECT/mappings    # PROJECT: your mapping project "
            f"folder; {guide}")


def _describe(config: Any) -> str:
    parts = []
    if config.rate_limit_per_s:
        parts.append(f"rate limit {config.rate_limit_per_s:g}/s burst {config.burst}")
    for label, value in (("latency ms", config.latency_ms), ("jitter ms", config.latency_jitter_ms),
                         ("502", config.error_rate_502), ("503", config.error_rate_503),
                         ("drops", config.drop_connection_ratio), ("malformed", config.malformed_json_ratio),
                         ("slow", config.slow_response_ratio)):
        if value:
            parts.append(f"{label} {value:g}")
    if config.outage_after_writes is not None:
        parts.append(f"outage after {config.outage_after_writes} writes")
    return ", ".join(parts) or "none"


@main.command()
@click.option("--properties", type=click.IntRange(1, 5000), default=12, show_default=True,
              help="How many SCALARA properties to generate.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the generated data.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port-scalara", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="SCALARA port (0 = any free port).")
@click.option("--port-casavi", type=click.IntRange(0, 65535), default=8002, show_default=True,
              help="casavi port (0 = any free port).")
@click.option("--rate-limit", type=click.FloatRange(0), default=None,
              help="Requests/s per token on both APIs (0 = unlimited). Default: API.md's 10/s and 20/s.")
@click.option("--burst", type=click.IntRange(1), default=None, help="Token bucket size (default 2 x rate).")
@click.option("--faults-on", type=click.Choice(["both", *_SIDES]), default="both", show_default=True,
              help="Which API the fault options below apply to.")
@click.option("--latency-ms", type=click.FloatRange(0), default=0.0, help="Added to every API call.")
@click.option("--jitter-ms", type=click.FloatRange(0), default=0.0, help="Plus uniform 0..jitter.")
@click.option("--error-rate", type=_RATIO, default=0.0, help="Share of calls answered 503.")
@click.option("--error-rate-502", type=_RATIO, default=0.0, help="Share of calls answered 502.")
@click.option("--drop-rate", type=_RATIO, default=0.0, help="Share of connections closed without an answer.")
@click.option("--malformed-rate", type=_RATIO, default=0.0, help="Share of 200s with a truncated JSON body.")
@click.option("--slow-rate", type=_RATIO, default=0.0, help="Share of calls answered only after --slow-seconds.")
@click.option("--slow-seconds", type=click.FloatRange(0), default=30.0, show_default=True)
@click.option("--retry-after-date-ratio", type=_RATIO, default=0.0,
              help="Share of 429s whose Retry-After is an HTTP date instead of seconds.")
@click.option("--fault-seed", type=int, default=0, show_default=True, help="Seed of every fault decision.")
@click.option("--outage-after-writes", type=click.IntRange(0), default=None,
              help="casavi answers 503 to everything after this many successful writes.")
@click.option("--token-lifetime", type=click.FloatRange(min=0, min_open=True), default=30 * 24 * 3600.0,
              show_default=True, help="casavi token lifetime in seconds.")
@click.option("--unit-quota", type=click.IntRange(0), default=None, help="casavi unit quota of the account.")
@click.option("--page-size", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="casavi list page size.")
def sandbox(**options: Any) -> None:
    """Serve fake SCALARA and casavi APIs on loopback (with optional faults) until Ctrl-C."""
    from engine.sandbox import Sandbox

    try:
        box = Sandbox(properties=options["properties"], seed=options["seed"],
                      scalara_faults=_side_faults("scalara", options), casavi_faults=_side_faults("casavi", options),
                      casavi_page_size=options["page_size"], casavi_token_lifetime_s=options["token_lifetime"],
                      unit_quota=options["unit_quota"], host=options["host"],
                      scalara_port=options["port_scalara"], casavi_port=options["port_casavi"])
        box.start()
    except CasaviSyncError as error:
        click.echo(f"error: {error}", err=True)
        click.get_current_context().exit(3)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        token = box.generate_scalara_token()
        click.echo(f"casavi-sync sandbox: {options['properties']} properties (seed {options['seed']})")
        click.echo(f"SCALARA  {box.scalara_url}")
        click.echo(f"  token   {token}")
        click.echo(f"  faults  {_describe(box.scalara_faults)}")
        click.echo(f"casavi   {box.casavi_url}")
        click.echo(f"  key     {box.casavi_key}")
        click.echo(f"  secret  {box.casavi_secret}")
        click.echo(f"  faults  {_describe(box.casavi_faults)}")
        click.echo(_preview_environment(box, token))
        click.echo("Serving until Ctrl-C.")
        while not stop.wait(0.2):
            pass
    except CasaviSyncError as error:
        click.echo(f"error: {error}", err=True)
        click.get_current_context().exit(3)
    finally:
        box.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("sandbox stopped.")
