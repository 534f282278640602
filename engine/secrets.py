"""Secrets at rest: the SCALARA tokens and casavi key pairs are stored encrypted (Fernet).

Why: the state file is copied around (backups, ``StateStore.backup``, a move to PostgreSQL, a
support dump); a copy of it alone must not hand out the tokens that read a customer's whole master
data. The key therefore never lives in the state store. It comes, in this order of precedence:

1. ``CASAVI_SYNC_SECRET_KEY``: one or more Fernet keys, comma-separated, the newest first;
2. ``CASAVI_SYNC_SECRET_KEY_FILE``: a file with one key per line, the newest first;
3. the embedded default: ``secret.key`` in the state file's folder, generated (mode 0600) the
   first time a secret is stored, so ``casavi-sync demo`` and a single-machine setup need nothing.

A stored value reads ``enc:v1:<key id>:<Fernet token>``; the key id is the first 8 hex digits of
the key's SHA-256, so every ciphertext names the key that made it, a missing key is named in the
error, and ``rotate-key`` knows what is left to re-encrypt. Every configured key decrypts (the
``MultiFernet`` idea: old keys stay accepted until a rotation is done); only the first encrypts.

The store calls ``seal`` before it writes a secret and ``unseal`` after it reads one, above the
SQL layer, so every backend stores the same ciphertext. Nothing here prints or exits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

KEY_ENV = "CASAVI_SYNC_SECRET_KEY"
KEY_FILE_ENV = "CASAVI_SYNC_SECRET_KEY_FILE"
DEFAULT_KEY_FILE = "secret.key"
PREFIX = "enc:v1:"

LOST_KEY_HINT = ("if that key is lost, the stored secrets cannot be recovered: run `casavi-sync rotate-key "
                 "--forget-unreadable`, then enter them again (`casavi-sync tenant add NAME` for the casavi key "
                 "pair, `casavi-sync connect --tenant NAME` for the SCALARA token)")


class SecretKeyError(ConfigError):
    """The configured key cannot decrypt a stored secret (wrong, missing or lost key)."""


def key_id(key: bytes) -> str:
    """8 hex digits naming a key (a hash prefix: it tells keys apart and reveals nothing usable)."""
    return hashlib.sha256(key.strip()).hexdigest()[:8]


def generate_key() -> bytes:
    from cryptography.fernet import Fernet

    return Fernet.generate_key()


def _check_key(text: str, where: str) -> bytes:
    raw = text.strip().encode("ascii", "replace")
    try:
        ok = len(base64.urlsafe_b64decode(raw)) == 32
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{where} is not a Fernet key (44 characters of url-safe base64 encoding 32 bytes); "
                          "see docs/state.md, section Secrets, for how to make one")
    return raw


def key_id_of(stored: str) -> str | None:
    """The id of the key that encrypted ``stored``; None for a value stored before encryption."""
    if not stored.startswith(PREFIX):
        return None
    return stored[len(PREFIX):].split(":", 1)[0]


@dataclass(frozen=True)
class KeySource:
    """Where the keys come from: an environment value, or a key file (given, or the default)."""

    env_value: str | None
    file: Path | None
    file_is_default: bool = False

    @classmethod
    def for_state(cls, state_path: str | Path, environ: Mapping[str, str] | None = None) -> KeySource:
        env = os.environ if environ is None else environ
        value = (env.get(KEY_ENV) or "").strip()
        if value:
            return cls(value, None)
        given = (env.get(KEY_FILE_ENV) or "").strip()
        if given:
            return cls(None, Path(given).expanduser())
        text = str(state_path)
        if "://" in text:  # a database URL (PostgreSQL): no folder of its own to put the key in
            from engine.state import default_state_path

            folder = default_state_path({k: v for k, v in env.items() if k != "CASAVI_SYNC_STATE"}).parent
        else:
            folder = Path(text).expanduser().parent
        return cls(None, folder / DEFAULT_KEY_FILE, file_is_default=True)

    def describe(self) -> str:
        if self.env_value is not None:
            return KEY_ENV
        what = "the default key file" if self.file_is_default else f"the key file ({KEY_FILE_ENV})"
        return f"{what} {self.file}"

    def load(self) -> list[bytes]:
        """The configured keys, newest first; an empty list when the key file does not exist yet."""
        if self.env_value is not None:
            parts = [p for p in self.env_value.split(",") if p.strip()]
            return [_check_key(p, f"{KEY_ENV} (entry {i})") for i, p in enumerate(parts, start=1)]
        assert self.file is not None
        try:
            text = self.file.read_text(encoding="ascii")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the key file {self.file}: {getattr(exc, 'strerror', None) or exc}") \
                from None
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            raise ConfigError(f"the key file {self.file} holds no key; restore it from backup ({LOST_KEY_HINT})")
        return [_check_key(ln, f"line {i} of the key file {self.file}") for i, ln in enumerate(lines, start=1)]

    @property
    def writable(self) -> bool:
        """Only a key file can be written (generated, rotated); an environment value cannot."""
        return self.file is not None

    def write(self, keys: list[bytes], *, exclusive: bool = False) -> bool:
        """Replace the key file atomically with ``keys`` (newest first), mode 0600 whatever the umask.

        ``exclusive``: only create it (False when another process was first).
        """
        assert self.file is not None
        from engine.files import write_private

        body = "# casavi-sync secret keys (Fernet), newest first. Keep a copy apart from the state file.\n"
        try:
            return write_private(self.file, body + "".join(k.decode("ascii") + "\n" for k in keys),
                                 exclusive=exclusive)
        except OSError as exc:
            raise ConfigError(f"cannot write the key file {self.file}: {exc.strerror or exc}") from None


class SecretBox:
    """Encrypts secrets before they are stored and decrypts them after they are read.

    Thread-safe. The key ring is loaded lazily and reloaded once when a ciphertext names a key it
    does not hold (another process may have rotated the key file meanwhile).
    """

    def __init__(self, source: KeySource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._ring: dict[str, Fernet] | None = None
        self._order: list[str] = []

    @classmethod
    def for_state(cls, state_path: str | Path, environ: Mapping[str, str] | None = None) -> SecretBox:
        return cls(KeySource.for_state(state_path, environ))

    # -- keys -------------------------------------------------------------------------------

    def _load(self) -> dict[str, Fernet]:
        from cryptography.fernet import Fernet

        keys = self.source.load()
        self._order = [key_id(k) for k in keys]
        self._ring = {key_id(k): Fernet(k) for k in keys}
        return self._ring

    def ring(self, *, reload: bool = False) -> dict[str, Fernet]:
        with self._lock:
            if self._ring is None or reload:
                return self._load()
            return self._ring

    def key_ids(self) -> list[str]:
        """The configured keys' ids, the one that encrypts first."""
        self.ring()
        return list(self._order)

    def primary_id(self, *, create: bool = False) -> str | None:
        """The id of the key new secrets are encrypted with; generates the default key file if asked."""
        ring = self.ring()
        if not ring and create:
            with self._lock:
                if self.source.writable and not self.source.load():
                    self.source.write([generate_key()], exclusive=True)  # a concurrent creator wins
                self._load()
        return self._order[0] if self._order else None

    # -- seal / unseal ------------------------------------------------------------------------

    def seal(self, plaintext: str) -> str:
        primary = self.primary_id(create=True)
        assert primary is not None
        token = self.ring()[primary].encrypt(plaintext.encode("utf-8"))
        return f"{PREFIX}{primary}:{token.decode('ascii')}"

    def unseal(self, stored: str) -> str:
        """The plaintext of a stored value (a value stored before encryption is returned as is)."""
        kid = key_id_of(stored)
        if kid is None:
            return stored
        fernet = self.ring().get(kid) or self.ring(reload=True).get(kid)
        if fernet is None:
            raise self.unknown_key_error([kid])
        from cryptography.fernet import InvalidToken

        token = stored[len(PREFIX) + len(kid) + 1:]
        try:
            return fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError):
            raise SecretKeyError(f"a stored secret does not decrypt with key {kid} (damaged or altered); "
                                 f"{LOST_KEY_HINT}") from None

    def is_current(self, stored: str) -> bool:
        """Encrypted with the key that encrypts now (nothing left to rotate)."""
        return key_id_of(stored) is not None and key_id_of(stored) == self.primary_id()

    def unknown_key_error(self, missing: list[str]) -> SecretKeyError:
        have = ", ".join(self.key_ids()) or "none (the file does not exist)"
        ids = ", ".join(sorted(set(missing)))
        return SecretKeyError(
            f"the stored secrets were encrypted with key {ids}, which {self.source.describe()} does not hold "
            f"(it has: {have}). Point {KEY_ENV} or {KEY_FILE_ENV} at the key used before; {LOST_KEY_HINT}")

