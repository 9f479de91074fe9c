"""An index directory on disk: ``header.json`` plus the arrays and models it names.

Saving never touches a file that hashpivot did not write for this index:

* a directory holding files but no hashpivot header is refused (:class:`IndexDirectoryError`);
* each save writes a new generation of files (``codes-<gen>.npy`` ...), fsyncs them, replaces the
  header atomically, then removes only the files the *previous header* named;
* a journal (``.hashpivot-pending.json``) lists the files a save is about to write and the
  previous generation's, so that the next save removes whatever of them the header then does not
  name: a save killed at any point (before or after the header switch) leaves nothing behind
  for good; after a save it is gone;
* saves to one directory are serialised by an exclusive ``flock`` on the directory itself (no
  lock file), across threads and processes;
* a failed save (disk full) removes what it wrote and raises :class:`StorageError` with the file
  and the space it needed; files are created with the process's umask, like ``open()``'s.

Loading validates the header's fields against sane bounds and every member's declared dtype and
shape against what the header implies *before* it opens or allocates anything; members must be
regular files inside the directory (symlinks are refused); a reader that finds a member gone
because a concurrent save replaced the index reads the new header and starts again, so it sees
the old index or the new one, never a false corruption.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import stat
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import numpy as np

from . import _core
from ._io import atomic_write, file_mode, fsync_dir, sha256_array
from ._validate import choice, count, number
from .codes import check_n_bits
from .documents import LEGACY_DOCS, LEGACY_OFFSETS, DocStore
from .errors import (
    CorruptFileError,
    FormatVersionError,
    IndexDirectoryError,
    IndexFormatError,
    InvalidInputError,
    InvalidTypeError,
    MissingFileError,
    StorageError,
)
from .plan import MAX_BOUND

PathLike = Union[str, "os.PathLike[str]"]
HEADER = "header.json"
JOURNAL = ".hashpivot-pending.json"
FORMAT = "hashpivot-index"
HEADER_SUM = "header_sha256"  # the header's own checksum (format 4 on)
CHECKSUMMED_FROM = 4  # headers of this format version on must carry HEADER_SUM
MAX_HEADER_BYTES = 1 << 24  # a header is a few kilobytes (meta included)
MAX_BLOB_BYTES = 1 << 30  # an ITQ model is a few hundred kilobytes
LOAD_RETRIES = 20  # a reader racing that many saves in a row gives up
Expectation = Dict[str, Tuple[np.dtype, Tuple[int, ...]]]


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the directory (flock on its own descriptor: no lock file)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_header_bytes(root: Path) -> Optional[bytes]:
    p = root / HEADER
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise CorruptFileError(f"{p} is not a regular file (a symlink?): refused")
    if st.st_size > MAX_HEADER_BYTES:
        raise CorruptFileError(f"{p} is {st.st_size:,} bytes: not a hashpivot header")
    with open(p, "rb") as f:
        return f.read(MAX_HEADER_BYTES + 1)


def header_digest(header: Dict[str, Any]) -> str:
    """sha256 of the header's fields (its own checksum left out), in a canonical form."""
    body = {k: v for k, v in header.items() if k != HEADER_SUM}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def parse_header(raw: bytes, where: Path) -> Dict[str, Any]:
    """The header's fields; a header of format 4 on must match its own checksum, so that a
    flipped bit cannot turn one valid-looking field into another."""
    try:
        header = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise CorruptFileError(f"{where} is corrupt (not JSON)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise CorruptFileError(f"{where.parent} is not a hashpivot index (format {fmt!r})")
    version = header.get("version")
    checked = isinstance(version, int) and version >= CHECKSUMMED_FROM
    if HEADER_SUM in header or checked:
        try:
            ok = header.get(HEADER_SUM) == header_digest(header)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise CorruptFileError(f"{where}: checksum mismatch (the header is corrupt)")
    return header


def member_files(header: Dict[str, Any]) -> set:
    """The files a header names (arrays and models)."""
    files = set()
    for e in (header.get("arrays") or {}).values():
        if isinstance(e, dict) and isinstance(e.get("file"), str):
            files.add(e["file"])
    for name in (header.get("files") or {}).values():
        if isinstance(name, str):
            files.add(name)
    if isinstance(header.get("itq"), str):  # format 1 and 2 named the ITQ model here
        files.add(header["itq"])
    docs = header.get("documents")
    if isinstance(docs, dict):
        offsets = docs.get("offsets")
        for name in (docs.get("file"), offsets.get("file") if isinstance(offsets, dict) else None):
            if isinstance(name, str):
                files.add(name)
    return files


# What a save names its files: <array>-<generation>.npy, <model>-<generation>.npz and
# docs-<generation>.jsonl; every generation has codes and ids. Any array any format version saved.
GENERATION_ARRAYS = (
    *("codes", "ids", "table", "offsets", "parts", "radius", "cdist", "lists", "factors"),
    *("biases", "errors", "extra", "extra_factors", "extra_biases", "vectors", "scales"),
    *("pivots", "centres", "list_centres", "list_radii", "itq", "docs", "docs-offsets"),
)
_GENERATION_FILE = re.compile(
    r"^(" + "|".join(map(re.escape, GENERATION_ARRAYS)) + r")-([0-9a-f]{12})\.(npy|npz|jsonl)$"
)


def _collect_generations(root: Path, keep: set) -> None:
    """Removes the files of every whole generation the header does not name (its codes and ids
    both there: what a save killed after its header switch left before the journal listed the
    old generation). A lone file that looks like one of ours is not a generation: it stays."""
    generations: Dict[str, list] = {}
    for p in root.iterdir():
        m = _GENERATION_FILE.match(p.name)
        if m and p.name not in keep:
            generations.setdefault(m.group(2), []).append((m.group(1), p.name))
    for files in generations.values():
        if {"codes", "ids"} <= {name for name, _ in files}:
            _remove(root, [f for _, f in files])


def _safe_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and name not in (HEADER, JOURNAL)
    )


def _remove(root: Path, names) -> None:
    for name in names:
        if _safe_name(name) or (
            isinstance(name, str)
            and name.startswith(".")
            and name.endswith(".tmp")
            and "/" not in name
        ):
            try:
                os.unlink(root / name)
            except FileNotFoundError:
                pass


def _clean_journal(root: Path, keep: set) -> None:
    """Removes what a killed save listed in its journal (files the header does not name)."""
    j = root / JOURNAL
    try:
        raw = j.read_bytes()
    except FileNotFoundError:
        return
    try:
        pending = [f for f in json.loads(raw.decode()) if isinstance(f, str)]
    except (ValueError, TypeError, UnicodeDecodeError):
        pending = []
    _remove(root, [f for f in pending if f not in keep])
    os.unlink(j)


def _write_file(root: Path, name: str, write: Callable[[Any], None], mode: int) -> None:
    """write(file) into .<name>.tmp (the name the journal lists), fsync, rename to name."""
    atomic_write(root / name, write, mode=mode, tmp_name=f".{name}.tmp", sync_dir=False)


def _disk_full(root: Path, e: OSError, size: int) -> bool:
    """Whether a failed write ran out of space (numpy reports a short write without errno)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    try:
        return shutil.disk_usage(root).free < max(size, 1 << 16)
    except OSError:
        return False


def _space_message(root: Path, name: str, need: int, err: OSError) -> str:
    try:
        free = shutil.disk_usage(root).free
        where = f"; {free / 1e6:,.1f} MB free on that file system"
    except OSError:
        where = ""
    return (
        f"saving the index to {root} failed writing {name}: no space left on the device "
        f"({need / 1e6:,.1f} MB to write in all{where} after cleaning up; {err.strerror or err}); "
        "nothing of this save was left behind and the previous index, if any, is intact"
    )


def save_dir(
    path: PathLike,
    header: Dict[str, Any],
    arrays: Dict[str, np.ndarray],
    blobs: Dict[str, Callable[[Any], None]],
    documents: Optional[DocStore] = None,
) -> None:
    """Writes an index directory (see the module's docstring). ``header`` holds the index's
    fields; ``arrays`` become ``<name>-<gen>.npy``; ``blobs`` (name -> writer) become
    ``<name>-<gen>.npz``; ``documents`` become ``docs-<gen>.jsonl`` with their offsets, in the
    same generation (one header names both)."""
    root = Path(path)
    try:
        meta_json = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as e:  # before anything touches the disk
        raise InvalidInputError(
            f"the index header (meta included) must be plain JSON: {e}"
        ) from None
    del meta_json
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create the index directory {root}: {e.strerror or e}") from e
    if not root.is_dir():
        raise IndexDirectoryError(f"{root} is not a directory")
    mode = file_mode()
    with _locked(root):
        raw = _read_header_bytes(root)
        if raw is None:
            others = [p.name for p in root.iterdir() if p.name != JOURNAL]
            if others:
                raise IndexDirectoryError(
                    f"{root} is not empty and holds no hashpivot index ({len(others)} other "
                    f"file(s), e.g. {sorted(others)[0]!r}): save into a new or empty directory "
                    "(nothing was changed)"
                )
            old_files: set = set()
        else:
            try:
                old_files = member_files(parse_header(raw, root / HEADER))
            except IndexFormatError:
                raise IndexDirectoryError(
                    f"{root} has a {HEADER} that is not a readable hashpivot index: refusing to "
                    "save over it (nothing was changed)"
                ) from None
        _clean_journal(root, old_files)
        gen = uuid.uuid4().hex[:12]
        names = {name: f"{name}-{gen}.npy" for name in arrays}
        blob_names = {name: f"{name}-{gen}.npz" for name in blobs}
        new_files = list(names.values()) + list(blob_names.values())
        if documents is not None:
            docs_name, offsets_name = f"docs-{gen}.jsonl", f"docs-offsets-{gen}.npy"
            new_files += [docs_name, offsets_name]
        pending = new_files + [f".{f}.tmp" for f in new_files] + [f".{HEADER}.tmp"]
        # the journal also lists the old generation: a save killed after the header switch
        # leaves it to the next save, which removes whatever the header then does not name
        journal = pending + sorted(old_files - set(new_files))
        need = sum(a.nbytes for a in arrays.values())
        current, current_size = JOURNAL, 0
        try:
            _write_file(root, JOURNAL, lambda f: f.write(json.dumps(journal).encode()), mode)
            entries = {}
            for name, a in arrays.items():
                a = np.ascontiguousarray(a)
                current, current_size = names[name], a.nbytes
                _write_file(root, current, lambda f, a=a: np.save(f, a, allow_pickle=False), mode)
                entries[name] = {
                    "file": names[name],
                    "dtype": str(a.dtype),
                    "shape": list(a.shape),
                    "sha256": sha256_array(a),
                }
            for name, write in blobs.items():
                current = blob_names[name]
                _write_file(root, current, write, mode)
            full = dict(header, arrays=entries, files=blob_names)
            if documents is not None:
                full["documents"] = _write_documents(root, documents, docs_name, offsets_name, mode)
            full[HEADER_SUM] = header_digest(full)
            current = HEADER
            _write_file(root, HEADER, lambda f: f.write(json.dumps(full, indent=1).encode()), mode)
        except BaseException as e:
            full = isinstance(e, OSError) and _disk_full(root, e, current_size)
            _remove(root, [*pending, f".{JOURNAL}.tmp"])
            try:
                os.unlink(root / JOURNAL)
            except OSError:
                pass
            if isinstance(e, OSError) and not isinstance(e, StorageError):
                if full:
                    raise StorageError(errno.ENOSPC, _space_message(root, current, need, e)) from e
                raise StorageError(
                    e.errno or errno.EIO,
                    f"saving the index to {root} failed writing {current}: {e.strerror or e}; "
                    "the previous index, if any, is intact",
                ) from e
            raise
        _remove(root, [f for f in old_files if f not in new_files])
        _collect_generations(root, set(new_files))
        if raw is not None:  # documents beside a format-3 index belonged to that generation
            _remove_legacy_documents(root)
        os.unlink(root / JOURNAL)
        fsync_dir(root)


def _write_documents(
    root: Path, documents: DocStore, docs_name: str, offsets_name: str, mode: int
) -> Dict[str, Any]:
    h = hashlib.sha256()

    def write(f) -> None:
        documents.write(_Tee(f, h))

    _write_file(root, docs_name, write, mode)
    offsets = np.ascontiguousarray(documents.offsets, dtype=np.int64)
    _write_file(root, offsets_name, lambda f: np.save(f, offsets, allow_pickle=False), mode)
    return {
        "file": docs_name,
        "count": len(documents),
        "sha256": h.hexdigest(),
        "offsets": {
            "file": offsets_name,
            "dtype": "int64",
            "shape": list(offsets.shape),
            "sha256": sha256_array(offsets),
        },
    }


class _Tee:
    """A file that also feeds what is written to a hash."""

    def __init__(self, f, h) -> None:
        self.f, self.h = f, h

    def write(self, b: bytes) -> int:
        self.h.update(b)
        return self.f.write(b)


def _remove_legacy_documents(root: Path) -> None:
    for name in (LEGACY_DOCS, LEGACY_OFFSETS):
        p = root / name
        if p.is_file() and not p.is_symlink():
            p.unlink()


# ---- loading ----
def _open_member(root: Path, name: object, what: str) -> io.BufferedReader:
    """A member file opened for reading: a plain name, a regular file, not a symlink."""
    if not _safe_name(name):
        raise CorruptFileError(f"{root}: bad file name for '{what}' in the header")
    p = root / str(name)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise MissingFileError(f"{root}: the file for '{what}' ({name}) is missing") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise CorruptFileError(
            f"{p} is a symlink or not a regular file: refused (an index's "
            "files must lie in its directory)"
        )
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise MissingFileError(f"{root}: the file for '{what}' ({name}) is missing") from None
    except OSError as e:
        raise CorruptFileError(f"{p} cannot be opened: {e.strerror or e}") from None
    return os.fdopen(fd, "rb")


class SizeGuard:
    """The file under a memory-mapped array, held open, and the size it must keep: reading a
    page past the end of a mapped file that someone truncated kills the process (SIGBUS), so
    searches check the size first (one fstat)."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        self.fd, self.size, self.name = fd, size, name

    def check(self) -> None:
        if os.fstat(self.fd).st_size < self.size:
            raise CorruptFileError(
                f"{self.name} was truncated while memory-mapped (another program changed an index "
                "file in place): reload the index; nothing of it was read"
            )

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def _load_array(
    root: Path,
    name: str,
    entry: object,
    want: Tuple[np.dtype, Tuple[int, ...]],
    mmap: bool,
    verify: bool,
) -> np.ndarray:
    dtype, shape = want
    if (
        not isinstance(entry, dict)
        or entry.get("dtype") != str(dtype)
        or list(entry.get("shape", [])) != list(shape)
    ):
        got = (entry.get("dtype"), entry.get("shape")) if isinstance(entry, dict) else entry
        raise CorruptFileError(
            f"{root}: the header declares '{name}' as {got}, but the index's "
            f"fields imply {dtype}{tuple(shape)}"
        )
    f = _open_member(root, entry.get("file"), name)
    with f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                fshape, fortran, fdtype = np.lib.format.read_array_header_1_0(f)
            else:
                fshape, fortran, fdtype = np.lib.format.read_array_header_2_0(f)
        except Exception as e:
            raise CorruptFileError(f"{f.name} is truncated or corrupt: {e}") from None
        if fortran:
            raise CorruptFileError(f"{f.name}: Fortran-ordered array (an index stores C order)")
        if fdtype != dtype or tuple(fshape) != tuple(shape):
            raise CorruptFileError(
                f"{f.name}: dtype/shape {fdtype}{fshape} do not match the header"
            )
        offset = f.tell()
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = os.fstat(f.fileno()).st_size
        if size != offset + nbytes:
            raise CorruptFileError(
                f"{f.name} is truncated or corrupt ({size:,} bytes, expected {offset + nbytes:,})"
            )
        if mmap and nbytes:
            a = np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=tuple(shape), order="C")
            a.size_guard = SizeGuard(os.dup(f.fileno()), size, f.name)  # type: ignore[attr-defined]
        else:
            a = np.fromfile(f, dtype=dtype, count=nbytes // max(dtype.itemsize, 1)).reshape(shape)
            a.flags.writeable = not mmap
    if verify and sha256_array(a) != entry.get("sha256"):
        raise CorruptFileError(f"{root / entry['file']}: checksum mismatch (the file is corrupt)")
    return a


def load_dir(
    path: PathLike,
    expect: Callable[[Dict[str, Any]], Tuple[Expectation, Dict[str, int]]],
    mmap: bool = True,
    verify: bool = True,
) -> Tuple[Dict[str, Any], Dict[str, np.ndarray], Dict[str, io.BytesIO], Optional[DocStore]]:
    """(header, arrays, blobs, documents) of an index directory, all of one generation.
    ``expect(header)`` validates the header's fields and returns the dtype and shape every
    array must have, and the models (blobs) it must hold with their size limit; nothing is
    opened before that. The documents (None when the index has none) keep their file open."""
    root = Path(path)
    last: Optional[Exception] = None
    for _ in range(LOAD_RETRIES):
        raw = _read_header_bytes(root)
        if raw is None:
            if root.is_dir():
                raise CorruptFileError(f"{root} is not a hashpivot index (no {HEADER})")
            raise MissingFileError(f"{root}: no such index directory")
        header = parse_header(raw, root / HEADER)
        arrays_want, blobs_want = expect(header)
        entries = header.get("arrays")
        if not isinstance(entries, dict) or set(entries) - set(arrays_want):
            raise CorruptFileError(f"{root / HEADER}: unknown or missing arrays")
        try:
            arrays = {
                name: _load_array(root, name, entries.get(name), want, mmap, verify)
                for name, want in arrays_want.items()
            }
            blobs = {}
            files = header.get("files") or {}
            for name in blobs_want:
                fname = files.get(name) if isinstance(files, dict) else None
                if fname is None and name == "itq":
                    fname = header.get("itq")  # formats 1 and 2
                with _open_member(root, fname, name) as f:
                    data = f.read(MAX_BLOB_BYTES + 1)
                if len(data) > MAX_BLOB_BYTES:
                    raise CorruptFileError(f"{root}: '{name}' is larger than any model")
                blobs[name] = io.BytesIO(data)
            return header, arrays, blobs, _load_documents(root, header, mmap, verify)
        except MissingFileError as e:
            if _read_header_bytes(root) == raw:  # nothing replaced the index: it is broken
                raise
            last = e  # a save replaced the index between our reads: read the new one
    raise CorruptFileError(f"{root} changed under {LOAD_RETRIES} reads in a row: {last}")


def _load_documents(
    root: Path, header: Dict[str, Any], mmap: bool, verify: bool
) -> Optional[DocStore]:
    entry = header.get("documents")
    if entry is None:
        return DocStore.open_legacy(root)
    count = entry.get("count") if isinstance(entry, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count < 1 << 40:
        raise CorruptFileError(f"{root / HEADER}: the documents entry is invalid")
    offsets = _load_array(
        root,
        "document offsets",
        entry.get("offsets"),
        (np.dtype(np.int64), (count + 1,)),
        mmap,
        verify,
    )
    f = _open_member(root, entry.get("file"), "documents")
    fd = os.dup(f.fileno())
    f.close()
    sha = entry.get("sha256") if verify else None
    return DocStore.open_fd(fd, str(root / str(entry["file"])), np.asarray(offsets), sha)


VERSION = 7  # 4: the header carries its own checksum, documents are members; 5: ivf biases;
# 6: ivf list radii; 7: ivf error levels and extra bits
OLDEST_VERSION = 1  # each layout is readable from the version that introduced it


@dataclass(frozen=True)
class IndexHeader:
    """The fields of an index's ``header.json`` (besides its members' entries): one definition,
    written by :func:`save_index`, bounded by :meth:`parse` before anything is allocated."""

    layout: str
    n: int
    n_bits: int
    dim: Optional[int]
    store: Optional[str]
    metric: str
    levels: int = 0
    n_pivots: int = 0
    groups: int = 0
    extra_bits: int = 0  # ivf: bits a dimension beyond the sign, kept for the re-estimate
    meta: Dict[str, Any] = field(default_factory=dict)
    tuned: Dict[str, Any] = field(default_factory=dict)
    has_itq: bool = False
    version: int = VERSION

    def to_json(self) -> Dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "n": self.n,
            "n_bits": self.n_bits,
            "dim": self.dim,
            "layout": self.layout,
            "levels": self.levels,
            "n_pivots": self.n_pivots,
            "groups": self.groups,
            "extra_bits": self.extra_bits,
            "store": self.store,
            "metric": self.metric,
            "meta": self.meta,
            "tuned": self.tuned,
        }

    @classmethod
    def parse(cls, h: Dict[str, Any], root: Path) -> IndexHeader:
        """Every field checked against sane bounds (and the layout's own rules)."""
        from .layouts import layout_class
        from .options import LAYOUTS, MAX_ROWS, METRICS, STORES

        def check(name: str, rule: Callable[[Any], Any]) -> Any:
            try:
                return rule(h.get(name))
            except (IndexFormatError, InvalidInputError, InvalidTypeError, TypeError) as e:
                raise CorruptFileError(f"{root}: header field {name!r} is invalid: {e}") from None

        def mapping(v: Any, name: str) -> Dict[str, Any]:
            return {} if v is None else (v if isinstance(v, dict) else count(None, name))

        layout = check("layout", lambda v: choice("flat" if v is None else v, "layout", LAYOUTS))
        cls_ = layout_class(layout)
        version = h.get("version")
        if (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not max(OLDEST_VERSION, cls_.first_version) <= version <= VERSION
        ):
            raise FormatVersionError(
                f"{root} has index format version {version!r} ({layout} layout); this hashpivot "
                f"reads {layout} indexes of versions {cls_.first_version} to {VERSION}: upgrade "
                "hashpivot or rebuild the index"
            )
        tuned = check("tuned", lambda v: mapping(v, "tuned"))
        for key, value in tuned.items():
            if key in ("nprobe", "candidates", "reestimate"):
                check("tuned", lambda v, value=value, key=key: count(value, key, 1))
            elif key == "bound":
                check("tuned", lambda v, value=value: number(value, "bound", 0.0, MAX_BOUND))
        n = check("n", lambda v: count(v, "n", 0, MAX_ROWS))
        files = h.get("files")
        entries = h.get("arrays")
        out = cls(
            layout=layout,
            n=n,
            n_bits=check("n_bits", check_n_bits),
            dim=check("dim", lambda v: None if v is None else count(v, "dim", 1, _core.MAX_DIM)),
            store=check("store", lambda v: choice(v, "store", STORES)),
            metric=check("metric", lambda v: choice("ip" if v is None else v, "metric", METRICS)),
            levels=check(
                "levels",
                lambda v: count(0 if v is None else v, "levels", 0, _core.MAX_SORTED_LEVELS),
            ),
            n_pivots=check(
                "n_pivots", lambda v: count(0 if v is None else v, "n_pivots", 0, _core.MAX_PIVOTS)
            ),
            groups=cls_.group_count(entries, n) if isinstance(entries, dict) else 0,
            extra_bits=check(
                "extra_bits",
                lambda v: count(0 if v is None else v, "extra_bits", 0, _core.MAX_EXTRA_BITS),
            ),
            meta=check("meta", lambda v: mapping(v, "meta")),
            tuned=tuned,
            has_itq=bool(h.get("itq")) or bool(isinstance(files, dict) and files.get("itq")),
            version=version,
        )
        problem = cls_.check_header(out)
        if problem is None and out.extra_bits and cls_.capabilities.source != "lists":
            problem = "extra bits belong to the ivf layout"
        if problem is None and (out.store is not None or out.has_itq) and out.dim is None:
            problem = "stored vectors or an ITQ model need dim"
        if problem:
            raise CorruptFileError(f"{root}: {problem}")
        return out

    def expect(self) -> Tuple[Expectation, list]:
        """dtype and shape of every array the header implies, and the models it names."""
        from .layouts import layout_class

        want: Expectation = {
            "codes": (np.dtype(np.uint8), (self.n, self.n_bits // 8)),
            "ids": (np.dtype(np.int64), (self.n,)),
            **layout_class(self.layout).expect(self),
        }
        if self.store is not None:
            want["vectors"] = (np.dtype(self.store), (self.n, self.dim))
            if self.store == "int8":
                want["scales"] = (np.dtype(np.float32), (self.n,))
        return want, (["itq"] if self.has_itq else [])


def save_index(
    path: PathLike,
    layout: Any,
    rows: Any,
    documents: Optional[DocStore],
    *,
    store: Optional[str],
    metric: str,
    meta: Dict[str, Any],
    tuned: Dict[str, Any],
) -> None:
    """Writes an index in one generation: its header, the layout's model arrays, the rows'
    arrays, its ITQ model and the documents."""
    itq = layout.itq
    header = IndexHeader(
        layout=layout.name,
        n=rows.n,
        n_bits=layout.n_bits,
        dim=None if itq is None else itq.dim,
        store=store,
        metric=metric,
        meta=meta,
        tuned=tuned,
        **layout.header(),
    )
    blobs = {} if itq is None else {"itq": itq.save_to}
    save_dir(path, header.to_json(), {**layout.model_arrays(), **rows.saved()}, blobs, documents)


def load_index(
    path: PathLike, mmap: bool = True, verify: bool = True
) -> Tuple[IndexHeader, Any, Any, Optional[DocStore]]:
    """(header, layout, rows, documents) of a saved index, validated before anything is
    allocated; ``verify`` checks the checksums (the caller then checks the derived arrays)."""
    from .itq import ITQ
    from .layouts import Rows, layout_class

    root = Path(path)
    parsed: Dict[str, IndexHeader] = {}

    def expect(raw: Dict[str, Any]):
        parsed["h"] = IndexHeader.parse(raw, root)
        return parsed["h"].expect()

    _, arrays, blobs, documents = load_dir(root, expect, mmap, verify)
    h = parsed["h"]
    itq = ITQ.load_from(blobs["itq"], str(root / "itq")) if h.has_itq else None
    if itq is not None and (itq.n_bits != h.n_bits or itq.dim != h.dim):
        raise CorruptFileError(f"{root}: the ITQ model does not match the header")
    model = {k: np.ascontiguousarray(arrays.pop(k)) for k in list(arrays) if k not in Rows.fields()}
    layout = layout_class(h.layout).from_header(h, itq, model)
    return h, layout, layout.upgrade(Rows.from_saved(arrays)), documents
