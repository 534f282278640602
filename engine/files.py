"""Files holding customer data or secrets are created owner-only, whatever the umask.

The state folder, run reports, the key file and backups hold names, addresses and tokens. A
process started under ``umask 000`` (a container default, a careless unit file) would otherwise
create them world-readable and -writable. Here the mode is passed to ``os.open``/``mkdir`` *and*
set again with ``chmod``, because the umask can only take bits away, never keep them off.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700; an existing folder we just made is tightened.

    Parents that existed before are left alone (they may be shared, e.g. ``~/.local/state``);
    folders created here are 0700 each.
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=DIR_MODE)
        os.chmod(folder, DIR_MODE)
    return path


def write_private(path: Path, text: str, *, exclusive: bool = False) -> bool:
    """Write ``text`` to ``path`` atomically (temp file + rename), the result 0600, the folder 0700.

    ``exclusive``: only if ``path`` does not exist yet (a hard link, atomic against a concurrent
    writer); returns False, writing nothing, when it does.
    """
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if not exclusive:
            tmp.replace(path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def tighten(folder: Path) -> None:
    """Make one of our own folders owner-only again (left loose by an older release)."""
    with contextlib.suppress(OSError):
        if folder.stat().st_mode & 0o077:
            os.chmod(folder, DIR_MODE)


_REPORTS: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
_REPORTS_KEPT = 64


def read_report(path: str | None) -> dict[str, Any] | None:
    """A run report, parsed once while the file stays the same (a console shows the same reports often).

    Treat the result as read-only: it is shared between callers. None when there is no path, the
    file is gone or it is not JSON.
    """
    if not path:
        return None
    try:
        st = Path(path).stat()
        stamp = (st.st_mtime_ns, st.st_size)
        cached = _REPORTS.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    if len(_REPORTS) >= _REPORTS_KEPT:
        _REPORTS.pop(next(iter(_REPORTS)), None)
    _REPORTS[path] = (stamp, report)
    return report
