"""Writing files safely: atomically (a temporary file, then a rename) and under a lock file."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` when the block succeeds.

    Whatever the block writes to the temporary path replaces `path` in one rename, so
    `path` is either absent, the old file, or complete; on an error the temporary file is
    removed. `suffix` ends the temporary name (writers such as Keras check it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` so that `path` is either absent, the old file, or complete."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` so that `path` is either absent, the old file, or complete."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold `PATH.lock` while the block writes `path`, so a second writer cannot interleave.

    The lock is a file created exclusively (`O_CREAT | O_EXCL`, which works where HDF5's
    own file locking is switched off, as on many network file systems) holding the
    owner's host and process id. A second writer finding it raises `FileExistsError`
    naming the path, the owner and the fix; a lock left by a process of this host that
    no longer runs (a killed run) is taken over. The lock file is removed when the block
    ends, however it ends.

    Raises:
        FileExistsError: if another live run holds the lock.
    """
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    owner = {"host": socket.gethostname(), "pid": os.getpid()}
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _lock_owner(lock)
            if attempt == 0 and _is_stale(holder):
                lock.unlink(missing_ok=True)
                continue
            who = (
                f"process {holder['pid']} on {holder['host']}"
                if holder
                else "another run (the lock file is unreadable)"
            )
            raise FileExistsError(
                f"'{path}' is being written by {who} (lock file '{lock}'). Wait for that run to "
                "finish, or write to another path; if no such run is alive, delete the lock file."
            ) from None
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text())
        return {"host": str(holder["host"]), "pid": int(holder["pid"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_stale(holder: dict | None) -> bool:
    """Whether a lock's owner is a process of this host that no longer runs."""
    if holder is None or holder["host"] != socket.gethostname():
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
