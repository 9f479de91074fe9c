"""Iterative Quantization (Gong & Lazebnik 2011) in torch: center, PCA to n_bits, a learned
orthogonal rotation, sign. Trains on CUDA when present; encodes in chunks.

Bit j of a code is 1 when the rotated projection z_j >= 0 (zero counts as positive, as in
faiss); bits are packed MSB first (np.packbits), the layout of :mod:`hashpivot.codes`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from ._io import atomic_write, sha256_array
from .codes import check_n_bits
from .errors import (CorruptFileError, DimensionError, FormatVersionError, InvalidInputError,
                     InvalidTypeError, NonFiniteError)

FORMAT = "hashpivot-itq"
VERSION = 1
_ENCODE_CHUNK = 1 << 16


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


def as_embeddings(x: object, name: str = "embeddings", dim: Optional[int] = None,
                  check_finite: bool = True) -> np.ndarray:
    """A 2-D float array of finite values (1-D: one row). float16/float64 are converted to
    float32 (that conversion is the only copy made)."""
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
    x = np.ascontiguousarray(x, dtype=np.float32)
    if check_finite and x.size and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise NonFiniteError(f"{name} contain NaN or inf in {bad} row(s); fix or drop them")
    return x


class ITQ:
    """ITQ hashing: ``fit(x)`` learns mean, PCA and rotation; ``encode(x)`` gives packed codes.

    Parameters: ``n_bits`` (multiple of 64, at most the embedding dimension), ``n_iter``
    rotation updates, ``seed``, ``device`` ("auto", "cpu", "cuda"), ``max_train`` rows used for
    training (default max(32768, 10 * dim), sampled with the seed, as faiss does).
    """

    def __init__(self, n_bits: int = 128, n_iter: int = 50, seed: int = 42,
                 device: str = "auto", max_train: Optional[int] = None) -> None:
        self.n_bits = check_n_bits(n_bits)
        if int(n_iter) < 0:
            raise InvalidInputError(f"n_iter must be >= 0, got {n_iter}")
        self.n_iter = int(n_iter)
        self.seed = int(seed)
        self.device = device
        self.max_train = max_train
        self.mean: Optional[np.ndarray] = None        # (dim,) float32
        self.projection: Optional[np.ndarray] = None  # (dim, n_bits) float32 = PCA @ rotation
        self.pca: Optional[np.ndarray] = None         # (dim, n_bits)
        self.rotation: Optional[np.ndarray] = None    # (n_bits, n_bits)
        self.errors: List[float] = []                 # quantization error per iteration

    @property
    def dim(self) -> int:
        self._require_fitted()
        return int(self.mean.shape[0])

    def _require_fitted(self) -> None:
        if self.mean is None:
            raise InvalidInputError("this ITQ model is not fitted: call fit(x) or ITQ.load(path)")

    def fit(self, x: np.ndarray, progress: Optional[bool] = None) -> "ITQ":
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
        cov = (xd.T @ xd) / n                               # accumulated in float64
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)[: self.n_bits]
        pca = evecs[:, order]
        # A deterministic sign for each component so CPU and GPU give the same codes.
        pca = pca * torch.sign(pca[pca.abs().argmax(0), torch.arange(self.n_bits, device=device)])
        # Rounds run in float64 on a GPU (free there, and as faiss does), float32 on a CPU
        # (2-3x faster with the same result up to sign flips of projections within ~1e-6 of 0).
        dtype = torch.float32 if device == "cpu" else torch.float64
        v = (xd @ pca).to(dtype)                            # (n, n_bits)
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

    def project(self, x: np.ndarray) -> np.ndarray:
        """The rotated projection z = (x - mean) @ PCA @ R, float32 (n, n_bits)."""
        self._require_fitted()
        x = as_embeddings(x, "embeddings", self.dim)
        return (x - self.mean) @ self.projection

    def encode(self, x: np.ndarray, progress: Optional[bool] = None) -> np.ndarray:
        """Packed codes (n, n_bits // 8) uint8, computed in chunks (no second full copy)."""
        from tqdm.auto import tqdm

        self._require_fitted()
        if not isinstance(x, np.ndarray):
            raise InvalidTypeError(f"embeddings must be a numpy array, got {type(x).__name__}")
        if x.ndim == 1:
            x = x.reshape(1, -1)
        as_embeddings(x[:0] if x.ndim == 2 else x, "embeddings", self.dim)  # dtype/shape checks
        out = np.empty((x.shape[0], self.n_bits // 8), dtype=np.uint8)
        show = progress if progress is not None else x.shape[0] > 1_000_000
        for s in tqdm(range(0, x.shape[0], _ENCODE_CHUNK), desc="encode", disable=not show,
                      leave=False):
            z = self.project(x[s:s + _ENCODE_CHUNK])
            out[s:s + _ENCODE_CHUNK] = np.packbits(z >= 0, axis=1)
        return out

    def quantization_error(self, x: np.ndarray) -> float:
        """Mean squared distance between z and sign(z) (what ITQ minimises)."""
        z = self.project(x)
        return float(((np.where(z >= 0, 1.0, -1.0) - z) ** 2).sum() / max(1, z.shape[0]))

    # ---- persistence: npz without pickle, with a version and checksums ----
    def _arrays(self) -> dict:
        return {"mean": self.mean, "pca": self.pca, "rotation": self.rotation,
                "errors": np.asarray(self.errors, dtype=np.float64)}

    def save(self, path: Union[str, Path]) -> None:
        """Writes the model atomically (npz, no pickle, version and checksums in a header)."""
        self._require_fitted()
        atomic_write(path, self.save_to)

    def save_to(self, f) -> None:
        arrays = self._arrays()
        meta = {"format": FORMAT, "version": VERSION, "n_bits": self.n_bits,
                "n_iter": self.n_iter, "seed": self.seed, "dim": self.dim,
                "sha256": {k: sha256_array(v) for k, v in arrays.items()}}
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "ITQ":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise
        except Exception as e:  # zip/npy errors: corrupt or not ours
            raise CorruptFileError(f"{path} is not a readable ITQ file: {e}") from None
        return cls._from_arrays(data, str(path))

    @classmethod
    def _from_arrays(cls, data: dict, where: str) -> "ITQ":
        try:
            return cls._from_arrays_unchecked(data, where)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, InvalidInputError):
                raise
            raise CorruptFileError(f"{where}: inconsistent ITQ file ({e!r})") from None

    @classmethod
    def _from_arrays_unchecked(cls, data: dict, where: str) -> "ITQ":
        try:
            meta = json.loads(bytes(data["meta"]).decode())
        except Exception:
            raise CorruptFileError(f"{where}: missing or corrupt ITQ header") from None
        if meta.get("format") != FORMAT:
            raise CorruptFileError(f"{where} is not a hashpivot ITQ model")
        if meta.get("version") != VERSION:
            raise FormatVersionError(
                f"{where} has ITQ format version {meta.get('version')}; this hashpivot reads "
                f"version {VERSION}: upgrade hashpivot or rebuild the model"
            )
        for k, digest in meta["sha256"].items():
            if k not in data or sha256_array(data[k]) != digest:
                raise CorruptFileError(f"{where}: checksum mismatch in '{k}' (file corrupt)")
        m = cls(n_bits=meta["n_bits"], n_iter=meta["n_iter"], seed=meta["seed"])
        m.mean = data["mean"].astype(np.float32)
        m.pca = data["pca"].astype(np.float32)
        m.rotation = data["rotation"].astype(np.float32)
        if m.mean.shape != (meta["dim"],) or m.pca.shape != (meta["dim"], m.n_bits) or \
                m.rotation.shape != (m.n_bits, m.n_bits):
            raise CorruptFileError(f"{where}: array shapes do not match the header")
        m.projection = np.ascontiguousarray(m.pca @ m.rotation)
        m.errors = [float(e) for e in data["errors"]]
        return m
