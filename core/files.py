"""File helpers: atomic writes (a crash leaves the old file or the new one, never a torn one) and hashing."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from typing import Iterator

from cxr_jetson.core.errors import ToolkitError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not sync directories
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block succeeds it is synced and renamed onto ``path``.

    If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(handle)
    try:
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp creates 0600
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    _fsync_directory(directory)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: str, what: str, is_folder: bool = False) -> None:
    """Refuse, in one line and before any work, an output that cannot be written (``path`` a folder when
    ``is_folder``, else a file): the folder is made if missing, then a temporary file is created in it and
    removed (permission bits alone do not tell: a read-only mount, /proc, a full disk)."""
    if is_folder and os.path.isfile(os.path.normpath(path)):  # "taken/" names the file "taken" too
        raise ToolkitError(f"{what} {path} is a file, not a folder")
    if not is_folder and os.path.isdir(path):
        raise ToolkitError(f"{what} {path} is a folder, not a file")
    folder = path if is_folder else (os.path.dirname(os.path.abspath(path)) or ".")
    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".cxr-write-check.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise ToolkitError(f"cannot write {what} {path}: {err.strerror or err}") from None
