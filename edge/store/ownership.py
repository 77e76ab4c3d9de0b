"""What the store creates in a state directory that belongs to another user stays that user's.

The service runs as `gatehouse` in /var/lib/gatehouse, and installers run `sudo gatehouse allow
add`, `pass issue` or `alerts ack` on the same store. As root, each file and folder the store makes
there would be root's: the database (when the service has not run yet, or after a damaged one was
moved aside), SQLite's -wal and -shm beside it, the seq reservation and its temporary file, the
attachment folders and files. The service could then no longer write the store. systemd's
StateDirectory= gives back a tree whose top directory has the wrong owner, not files inside a
directory that is already the service's, so the store gives what it creates to the directory's
owner and group itself. Modes stay as they were created.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class StateDirOwner:
    """Gives paths inside `folder` to the folder's owner and group when this process is root
    and the folder belongs to another user; does nothing otherwise."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        info = self.folder.stat()
        self.owner: tuple[int, int] | None = (
            (info.st_uid, info.st_gid) if os.geteuid() == 0 and info.st_uid != 0 else None
        )
        """(uid, gid) to give new paths to; None when nothing is to be given away"""

    def claim(self, *paths: Path) -> None:
        """Give each existing path to the folder's owner. A path whose folder is (through a
        symbolic link) outside the state directory is left alone, and a link itself is changed,
        never what it points at."""
        if self.owner is None:
            return
        uid, gid = self.owner
        for path in paths:
            if not path.parent.resolve().is_relative_to(self.folder):
                log.warning(
                    "%s is outside the state directory %s; its owner is left as it is", path, self.folder
                )
                continue
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if (info.st_uid, info.st_gid) != (uid, gid):
                os.chown(path, uid, gid, follow_symlinks=False)
