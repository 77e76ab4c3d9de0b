"""Writing the gateway's private files: the configuration and its secrets."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 from the first byte, replacing it atomically. A file
    that already exists keeps its owner: the configuration belongs to the `gatehouse` user the
    service runs as, and an edit made with sudo must not take it away."""
    try:
        owner: tuple[int, int] | None = (path.stat().st_uid, path.stat().st_gid)
    except FileNotFoundError:
        owner = None
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            # only root may give a file away; anyone else writes a file they own, as by hand
            with contextlib.suppress(PermissionError):
                os.chown(temporary, *owner)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
