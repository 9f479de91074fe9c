"""Iterative Quantization (Gong & Lazebnik 2011) in torch: center, PCA to n_bits, a learned
orthogonal rotation, sign. Trains on CUDA when present; encodes in chunks.

Bit j of a code is 1 when the rotated projection z_j >= 0 (zero counts as positive, as in
faiss); bits are packed MSB first (np.packbits), the layout of :mod:`hashpivot.codes`.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO, List, Optional, Union

import numpy as np

from . import _core
from ._io import atomic_write, sha256_array
from ._validate import count, to_numpy
from ._validate import seed as _seed
from .codes import check_n_bits
from .errors import (
    CorruptFileError,
    DimensionError,
    FormatVersionError,
    InvalidInputError,
    InvalidTypeError,
    MissingFileError,
    NonFiniteError,
)

FORMAT = "hashpivot-itq"
VERSION = 1
MAX_META_BYTES = 1 << 16  # a model's JSON header is a few hundred bytes
MAX_ITERATIONS = 100_000
FINITE_CHUNK = 1 << 16  # rows whose finiteness is checked at once


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


def as_embeddings(
    x: object,
    name: str = "embeddings",
    dim: Optional[int] = None,
    check_finite: bool = True,
    convert: bool = True,
) -> np.ndarray:
    """A 2-D float array of finite values (1-D: one row). float16/float64 are converted to
    float32 (that conversion is the only copy made); a torch tensor is taken without a copy.
    ``convert=False``: the array as given, its shape and dtype checked only (for a caller that
    converts and checks it a chunk at a time, hashpivot.vectors.prepare)."""
    x = to_numpy(x)
    if not isinstance(x, np.ndarray):
        raise InvalidTypeError(
            f"{name} must be a numpy float array (n, dim), got {type(x).__name__}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidTypeError(f"{name} must be float32 (or float16/float64), got {x.dtype}")
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (n, dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise DimensionError(
            f"{name} have dimension {x.shape[1]}, but this model/index expects {dim}; "
            "embed them with the same model"
        )
    if not convert:
        return x
    x = np.ascontiguousarray(x, dtype=np.float32)
    if check_finite:
        bad = sum(  # a chunk at a time: no boolean copy of a large input
            int((~np.isfinite(x[s : s + FINITE_CHUNK])).any(axis=1).sum())
            for s in range(0, len(x), FINITE_CHUNK)
        )
        if bad:
            raise NonFiniteError(f"{name} contain NaN or inf in {bad} row(s); fix or drop them")
    return x


class ITQ:
    """ITQ hashing: ``fit(x)`` learns mean, PCA and rotation; ``encode(x)`` gives packed codes.

    Parameters: ``n_bits`` (multiple of 64, at most the embedding dimension), ``n_iter``
    rotation updates, ``seed``, ``device`` ("auto", "cpu", "cuda"), ``max_train`` rows used for
    training (default max(32768, 10 * dim), sampled with the seed, as faiss does).
    """

    def __init__(
        self,
        n_bits: int = 128,
        n_iter: int = 50,
        seed: int = 42,
        device: str = "auto",
        max_train: Optional[int] = None,
    ) -> None:
        self.n_bits = check_n_bits(n_bits)
        self.n_iter = count(n_iter, "n_iter", 0, MAX_ITERATIONS)
        self.seed = _seed(seed)
        if not isinstance(device, str):
            raise InvalidTypeError(
                f"device must be a string ('auto', 'cpu', 'cuda'), got {type(device).__name__}"
            )
        self.device = device
        self.max_train = None if max_train is None else count(max_train, "max_train", 2)
        self.mean: Optional[np.ndarray] = None  # (dim,) float32
        self.projection: Optional[np.ndarray] = None  # (dim, n_bits) float32 = PCA @ rotation
        self.pca: Optional[np.ndarray] = None  # (dim, n_bits)
        self.rotation: Optional[np.ndarray] = None  # (n_bits, n_bits)
        self.errors: List[float] = []  # quantization error per iteration

    @property
    def dim(self) -> int:
        self._require_fitted()
        return int(self.mean.shape[0])

    def _require_fitted(self) -> None:
        if self.mean is None:
            raise InvalidInputError("this ITQ model is not fitted: call fit(x) or ITQ.load(path)")

    def fit(self, x: np.ndarray, progress: Optional[bool] = None) -> ITQ:
        """Learns the centre, PCA and rotation from the rows of x (a seeded sample of at most
        ``max_train`` rows), in torch on ``device``; returns self."""
        import torch
        from tqdm.auto import tqdm

        # Finiteness is checked below on the training rows only (on the device, in parallel);
        # encode() checks every row it encodes.
        x = as_embeddings(x, "training embeddings", check_finite=False)
        n, d = x.shape
        if self.n_bits > d:
            hint = f"use n_bits <= {d - d % 64}" if d >= 64 else "use embeddings of >= 64 dims"
            raise InvalidInputError(
                f"n_bits={self.n_bits} is more than the embedding dimension {d}; "
                f"PCA can give at most {d} bits: {hint}"
            )
        if n < 2:
            raise InvalidInputError("ITQ needs at least 2 training rows")
        if n <= self.n_bits:
            warnings.warn(
                f"ITQ: {n} training rows for {self.n_bits} bits: PCA has at most "
                f"{n - 1} informative directions, the other bits are arbitrary (use "
                "fewer bits or more rows)",
                UserWarning,
                stacklevel=3,
            )
        max_train = self.max_train or max(32768, 10 * d)
        if n > max_train:
            rows = np.sort(np.random.default_rng(self.seed).choice(n, max_train, replace=False))
            x = x[rows]
            n = max_train
        if not x.flags.writeable:  # torch wants writable memory (e.g. a read-only memmap)
            x = x.copy()
        device = resolve_device(self.device)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)

        xt = torch.from_numpy(x).to(device)
        if not bool(torch.isfinite(xt).all()):
            raise NonFiniteError("training embeddings contain NaN or inf; fix or drop them")
        mean = xt.double().mean(0)
        xc = xt - mean.float()
        xd = xc.double()
        cov = (xd.T @ xd) / n  # accumulated in float64
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)[: self.n_bits]
        pca = evecs[:, order]
        # A deterministic sign for each component so CPU and GPU give the same codes.
        pca = pca * torch.sign(pca[pca.abs().argmax(0), torch.arange(self.n_bits, device=device)])
        # Rounds run in float64 on a GPU (free there, and as faiss does), float32 on a CPU
        # (2-3x faster with the same result up to sign flips of projections within ~1e-6 of 0).
        dtype = torch.float32 if device == "cpu" else torch.float64
        v = (xd @ pca).to(dtype)  # (n, n_bits)
        del xd, xc, xt
        r0 = torch.randn(self.n_bits, self.n_bits, generator=gen, dtype=torch.float64)
        rot = torch.linalg.qr(r0)[0].to(device, dtype)  # random orthogonal start, seeded
        show = progress if progress is not None else n * self.n_iter > 5e7
        # ||B - V R||^2 = n * n_bits + ||V||^2 - 2 tr(R^T V^T B): the error per round costs an
        # n_bits x n_bits trace instead of another pass over n rows.
        base = n * self.n_bits + float((v.double() ** 2).sum())
        errors = []  # kept on the device: one synchronisation at the end, not one a round
        for _ in tqdm(range(self.n_iter + 1), desc="ITQ", disable=not show, leave=False):
            b = torch.where(v @ rot >= 0, 1.0, -1.0).to(v.dtype)
            c = v.T @ b
            errors.append((base - 2 * (rot * c).double().sum()) / n)
            if len(errors) > self.n_iter:
                break
            # Orthogonal Procrustes on the small n_bits x n_bits matrix, on the CPU whatever
            # the device: faster than a GPU solver at this size, and the same on both.
            u, _, wt = torch.linalg.svd(c.double().cpu())
            rot = (u @ wt).to(device, dtype)
        self.mean = mean.float().cpu().numpy()
        self.pca = pca.float().cpu().numpy()
        self.rotation = rot.float().cpu().numpy()
        # computed exactly as load() does, so a saved and reloaded model encodes identically
        self.projection = np.ascontiguousarray(self.pca @ self.rotation)
        self.errors = [float(e) for e in torch.stack(errors).cpu()]
        return self

    def project(self, x: np.ndarray, centre: bool = True) -> np.ndarray:
        """The rotated projection z = (x - mean) @ PCA @ R, float32 (n, n_bits); without
        ``centre``, x @ PCA @ R. Computed by the C++ core, the same sums on every ISA."""
        self._require_fitted()
        x = as_embeddings(x, "embeddings", self.dim)
        z, _ = _core.encode(
            x, self.mean if centre else None, self.projection, want_z=True, want_codes=False
        )
        return z

    def encode(self, x: np.ndarray, progress: Optional[bool] = None) -> np.ndarray:
        """Packed codes (n, n_bits // 8) uint8: bit j is 1 where z_j >= 0 (the C++ core
        projects row by row, no second copy of x). ``progress`` is accepted for compatibility;
        encoding 1M rows takes about a second."""
        self._require_fitted()
        x = as_embeddings(x, "embeddings", self.dim)
        _, codes = _core.encode(x, self.mean, self.projection, want_z=False, want_codes=True)
        return codes

    def quantization_error(self, x: np.ndarray) -> float:
        """Mean squared distance between z and sign(z) (what ITQ minimises)."""
        z = self.project(x)
        return float(((np.where(z >= 0, 1.0, -1.0) - z) ** 2).sum() / max(1, z.shape[0]))

    # ---- persistence: npz without pickle, with a version and checksums ----
    def _arrays(self) -> dict:
        return {
            "mean": self.mean,
            "pca": self.pca,
            "rotation": self.rotation,
            "errors": np.asarray(self.errors, dtype=np.float64),
        }

    def save(self, path: Union[str, Path]) -> None:
        """Writes the model atomically (npz, no pickle, version and checksums in a header)."""
        self._require_fitted()
        atomic_write(path, self.save_to)

    def save_to(self, f) -> None:
        """Writes the model as an npz (no pickle) to an open binary file."""
        arrays = self._arrays()
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "n_bits": self.n_bits,
            "n_iter": self.n_iter,
            "seed": self.seed,
            "dim": self.dim,
            "sha256": {k: sha256_array(v) for k, v in arrays.items()},
        }
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)

    @classmethod
    def load(cls, path: Union[str, Path]) -> ITQ:
        """Reads a model written by :meth:`save`. Only the members a model has are read, each
        checked against the header's shapes before a byte of it is decompressed (a crafted file
        cannot make this allocate more than the model's size), then against its checksum."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"{path}: no such ITQ model file")
        with open(path, "rb") as f:
            return cls.load_from(f, str(path))

    @classmethod
    def load_from(cls, f: BinaryIO, where: str) -> ITQ:
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise CorruptFileError(f"{where} is not a readable ITQ file: {e}") from None
        with zf:
            meta_raw = _read_member(
                zf, "meta", np.dtype(np.uint8), None, where, max_bytes=MAX_META_BYTES
            )
            try:
                meta = json.loads(bytes(meta_raw).decode())
                fmt, version = meta.get("format"), meta.get("version")
            except Exception:
                raise CorruptFileError(f"{where}: missing or corrupt ITQ header") from None
            if fmt != FORMAT:
                raise CorruptFileError(f"{where} is not a hashpivot ITQ model")
            if version != VERSION:
                raise FormatVersionError(
                    f"{where} has ITQ format version {version}; this hashpivot reads "
                    f"version {VERSION}: upgrade hashpivot or rebuild the model"
                )
            try:
                n_bits, dim = (
                    check_n_bits(meta["n_bits"]),
                    count(meta["dim"], "dim", 1, _core.MAX_DIM),
                )
                n_iter = count(meta["n_iter"], "n_iter", 0, MAX_ITERATIONS)
                m = cls(n_bits=n_bits, n_iter=n_iter, seed=meta["seed"])
                digests = dict(meta["sha256"])
            except (KeyError, TypeError, ValueError) as e:
                raise CorruptFileError(f"{where}: bad ITQ header ({e})") from None
            if n_bits > dim:
                raise CorruptFileError(f"{where}: {n_bits} bits from {dim} dimensions")
            f32 = np.dtype(np.float32)
            shapes = {
                "mean": (f32, (dim,)),
                "pca": (f32, (dim, n_bits)),
                "rotation": (f32, (n_bits, n_bits)),
                "errors": (np.dtype(np.float64), None),
            }
            data = {}
            for name, (dtype, shape) in shapes.items():
                data[name] = _read_member(
                    zf,
                    name,
                    dtype,
                    shape,
                    where,
                    max_bytes=8 * (n_iter + 2) if shape is None else None,
                )
                if sha256_array(data[name]) != digests.get(name):
                    raise CorruptFileError(f"{where}: checksum mismatch in '{name}' (file corrupt)")
        m.mean, m.pca, m.rotation = data["mean"], data["pca"], data["rotation"]
        m.projection = np.ascontiguousarray(m.pca @ m.rotation)
        m.errors = [float(e) for e in data["errors"].reshape(-1)]
        return m


def _read_member(
    zf: zipfile.ZipFile,
    name: str,
    dtype: np.dtype,
    shape: Optional[tuple],
    where: str,
    max_bytes: Optional[int] = None,
) -> np.ndarray:
    """One .npy member of an npz, its header checked before its data is read (at most the
    bytes that header promises)."""
    try:
        info = zf.getinfo(name + ".npy")
    except KeyError:
        raise CorruptFileError(f"{where}: the ITQ file has no '{name}'") from None
    try:
        with zf.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(fp)
            else:
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(fp)
            if (
                got_dtype != dtype
                or fortran
                or (shape is not None and got_shape != shape)
                or len(got_shape) != (1 if shape is None else len(shape))
            ):
                raise CorruptFileError(
                    f"{where}: '{name}' is {got_dtype}{got_shape}, expected "
                    f"{dtype}{shape or '(n,)'}"
                )
            nbytes = int(np.prod(got_shape, dtype=np.int64)) * dtype.itemsize
            if max_bytes is not None and nbytes > max_bytes:
                raise CorruptFileError(f"{where}: '{name}' is larger than a model's ({nbytes} B)")
            raw = fp.read(nbytes)
    except CorruptFileError:
        raise
    except Exception as e:  # zip or npy errors: corrupt or not ours
        raise CorruptFileError(f"{where}: '{name}' is unreadable ({e})") from None
    if len(raw) != nbytes:
        raise CorruptFileError(f"{where}: '{name}' is truncated")
    return np.frombuffer(raw, dtype=dtype).reshape(got_shape).copy()
