"""Advisory file locks whose files are removed when done, without breaking the lock.

Removing a lock file naively reopens a race: a process that opened the file just before it was
unlinked can still lock the old (now nameless) file, while a newcomer creates and locks a new
file of the same name; both then believe they hold the lock. The rule here closes it: a file is
removed only by a process holding its lock, and whoever takes a lock checks afterwards that the
name still leads to the file it locked (same inode), retrying otherwise.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def acquire(path: Path, blocking: bool = True) -> int | None:
    """An open descriptor holding the exclusive lock on `path` (created if missing), or None
    when `blocking` is False and another process holds it."""
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the file was removed (and maybe made anew) while we waited: try again


def release(fd: int, path: Path) -> None:
    """Remove `path` and drop its lock (held through `fd`): the name is free for the next one."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def remove_unheld(folder: Path, pattern: str = "*.lock") -> int:
    """Remove the lock files in `folder` that nobody holds (left by processes that died);
    returns how many."""
    removed = 0
    for path in Path(folder).glob(pattern):
        try:
            fd = acquire(path, blocking=False)
        except OSError:
            continue
        if fd is not None:
            release(fd, path)
            removed += 1
    return removed
