"""`casavi-sync rotate-key`: re-encrypt the stored secrets under a new key (see engine/ops/keys.py)."""

from __future__ import annotations

from typing import Any

import click

from engine.cli.base import main
from engine.cli.context import handle_errors


@main.command("rotate-key")
@click.option("--state", "state_path", metavar="PATH|URL", envvar="CASAVI_SYNC_STATE", show_envvar=True,
              help="State file or postgresql:// URL (default: $XDG_STATE_HOME/casavi-sync/state.db).")
@click.option("--forget-unreadable", is_flag=True,
              help="Delete stored secrets that no configured key decrypts (a lost key); enter them again after.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
@handle_errors
def rotate_key(state_path: str | None, forget_unreadable: bool, quiet: bool, **_: Any) -> None:
    """Re-encrypt the stored tokens and key pairs under a new key.

    With the key file (default: secret.key beside the state file, or CASAVI_SYNC_SECRET_KEY_FILE) a
    new key is generated, everything is re-encrypted, then the old key is removed; safe to rerun
    after an interruption. With CASAVI_SYNC_SECRET_KEY=NEW,OLD everything is re-encrypted under
    NEW; drop OLD from the variable afterwards. Exit codes: 0 done, 3 the key does not decrypt the
    stored secrets (the message says what to do), or the state cannot be read.
    """
    from engine.ops.keys import rotate_key as rotate
    from engine.state import state_location

    where = state_location(state_path)
    done = rotate(where, forget_unreadable=forget_unreadable)
    r = done.result
    for tenant, what in r.forgotten:
        again = f"casavi-sync connect --tenant {tenant}" if what == "SCALARA token" else f"casavi-sync tenant add {tenant}"
        click.echo(f"warning: the {what} of tenant '{tenant}' could not be decrypted and was deleted; enter it "
                   f"again: {again}", err=True)
    if not quiet or r.forgotten:
        click.echo(f"{r.reencrypted} secret(s) re-encrypted under key {done.key_id}"
                   + (f" ({r.already_current} already were)" if r.already_current else "")
                   + f"; key from {done.source}")
    if done.retired:
        click.echo(f"old key(s) {', '.join(done.retired)} removed from the key file; it now holds key {done.key_id} only")
    elif done.still_configured:
        click.echo(f"nothing is encrypted with key(s) {', '.join(done.still_configured)} any more: remove them "
                   f"from CASAVI_SYNC_SECRET_KEY")
    elif done.from_env and not r.reencrypted:
        click.echo("to rotate, put a new key first: CASAVI_SYNC_SECRET_KEY=NEW,OLD (see docs/state.md)")
