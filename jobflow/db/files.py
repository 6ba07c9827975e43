"""Private files and folders: what only the product's own user may read (secrets, the embedded database)."""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger("jobflow.db")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed; make it mode 700 (only this user may list or enter it)."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            log.warning("cannot make %s private (mode 700): %s", path, exc.strerror)
    return path


def make_private(path: Path) -> bool:
    """Make an existing file mode 600 if group or others may read or write it; True if it had to be changed.

    Under an exclusive lock on the file, so of processes starting together exactly one changes it (and says so).
    Raises OSError when the mode cannot be changed.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_mode & 0o077 == 0:
            return False
        os.fchmod(fd, 0o600)
        return True
    finally:
        os.close(fd)        # releases the lock


def tighten(path: Path) -> None:
    """An existing file that group or others may use: mode 600 (a warning if that fails)."""
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot make %s private (mode 600): %s", path, exc.strerror)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` creating the file mode 600; an existing file is made 600 too (one of an older version)."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError as exc:
        log.warning("cannot make %s private (mode 600): %s", path, exc.strerror)
    return fd


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner may read (created mode 600, or made so)."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "w") as handle:
        handle.write(text)


def nobody_uses(users_file: Path) -> bool:
    """True when no process holds a lock on the users file (the caller holds ``secantus.lock``)."""
    try:
        fd = os.open(users_file, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
