"""Safe files: atomic writes (temporary name, fsync, rename) that respect the umask, checksums,
no pickle anywhere."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
HASH_PIECE = 1 << 24  # hash in 16 MB pieces so a memory-mapped array is never copied whole

_umask_lock = threading.Lock()


def file_mode() -> int:
    """The mode ``open()`` would give a new file under this process's umask."""
    with _umask_lock:  # the umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def sha256_array(a: np.ndarray) -> str:
    h = hashlib.sha256()
    flat = a.reshape(-1).view(np.uint8) if a.size else np.zeros(0, np.uint8)
    for i in range(0, flat.size, HASH_PIECE):
        h.update(memoryview(np.ascontiguousarray(flat[i : i + HASH_PIECE])))
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: PathLike,
    write: Callable[[object], None],
    *,
    mode: Optional[int] = None,
    tmp_name: Optional[str] = None,
    sync_dir: bool = True,
) -> None:
    """Calls write(file) on a temporary file beside `path`, fsyncs it, then renames it over
    `path`: a crash leaves either the old file or the new one, never a torn one. ``mode``: the
    file's mode (default: what ``open()`` gives under the umask); ``tmp_name``: a fixed name for
    the temporary file (an index save lists it in its journal; default: a unique one);
    ``sync_dir``: fsync the directory after the rename (a save does it once at its end)."""
    path = Path(path)
    if tmp_name is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    else:
        tmp = str(path.parent / tmp_name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), file_mode() if mode is None else mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(path.parent)
