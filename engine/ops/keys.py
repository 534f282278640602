"""Rotating the key that encrypts the stored secrets (``casavi-sync rotate-key``).

With a key file (the default ``secret.key`` beside the state file, or ``CASAVI_SYNC_SECRET_KEY_FILE``)
the rotation is three steps, each safe to interrupt:

1. a new key is put first in the key file, the old ones stay behind it (both decrypt);
2. every stored secret is re-encrypted under the new key, in one transaction;
3. the key file is rewritten with the new key only.

A crash after 1 or 2 leaves a key file that still decrypts everything; running ``rotate-key``
again finishes the job. Other processes (``serve``) reload the key file when they meet a
ciphertext of a key they do not hold, so they keep working during the rotation.

With ``CASAVI_SYNC_SECRET_KEY`` the operator puts the new key first (``NEW,OLD``), restarts the
processes with it, runs ``rotate-key`` (step 2), and then drops the old key from the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import StateError
from engine.secrets import KeySource, SecretBox, generate_key, key_id
from engine.state.sealed import RotationResult


@dataclass
class KeyRotation:
    result: RotationResult
    source: str                      # where the key lives (for the operator's message)
    key_id: str | None               # the key everything is encrypted with now
    retired: list[str] = field(default_factory=list)       # key ids removed from the key file
    still_configured: list[str] = field(default_factory=list)  # env: old key ids that may now be dropped
    from_env: bool = False


def rotate_key(state_path: Path | str, environ: Mapping[str, str] | None = None, *,
               forget_unreadable: bool = False) -> KeyRotation:
    from engine.state import StateStore

    if "://" not in str(state_path) and not Path(state_path).exists():
        raise StateError(f"no state file at {state_path}; nothing to re-encrypt")
    source = KeySource.for_state(state_path, environ)
    box = SecretBox(source)
    with StateStore.open(state_path, secrets=box, check_secrets=not forget_unreadable) as store:
        old = source.load()
        if source.writable:
            new = generate_key()
            source.write([new, *old])
            box.ring(reload=True)
        result = store.rotate_secrets(forget_unreadable=forget_unreadable)
    rotation = KeyRotation(result, source.describe(), result.key_id, from_env=not source.writable)
    if source.writable:
        source.write([new])
        rotation.retired = [key_id(k) for k in old]
    else:
        rotation.still_configured = [key_id(k) for k in old[1:]]
    return rotation
