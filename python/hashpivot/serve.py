"""``hashpivot serve``: an index over HTTP with FastAPI and uvicorn.

- ``GET /search?q=…&k=10&where=field=value`` → ``{"query", "results": [{rank, id, title,
  score, text}]}`` (the text is a snippet of the stored document).
- ``POST /search`` with ``{"queries": [texts]}`` or ``{"embeddings": [[floats]]}``, ``k``,
  ``where`` → ``{"results": [[…], …]}``, one list per query.
- ``GET /healthz`` → rows, layout, bits, model.
- ``GET /`` → a search page (a query box; with ``?q=`` the ranked results, rendered by the
  server so that it works without JavaScript).

Limits (each a 4xx with one message, never a 5xx): a query is at most ``MAX_QUERY_CHARS``
characters (the encoder also truncates to its model's window, as sentence-transformers does),
a request at most ``MAX_BATCH`` queries or embeddings of at most ``MAX_DIM`` values,
``MAX_WHERE`` filters, and ``REQUEST_SECONDS`` of embedding work (503 past it). Answers are
always finite JSON; a search error never takes the server down. The same
app runs as a Ray Serve deployment over a sharded index (``hashpivot serve --ray``, see
:mod:`hashpivot.distributed`). Servers bind to 127.0.0.1 unless told otherwise.
"""

import html
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .documents import DocStore, best_documents, ranked_results
from .errors import ConfigurationError, HashpivotError, InvalidInputError, one_line
from .storage import HEADER

MAX_K = 1000  # results per query a request may ask for
MAX_BATCH = 64  # queries (or embeddings) per POST request
MAX_QUERY_CHARS = 2048  # characters of one query text (about four E5 windows of 512 tokens)
MAX_DIM = 8192  # values of one posted embedding
MAX_WHERE = 16  # field=value filters per request
MAX_FIELD_CHARS = 256  # characters of a filter's field or value
REQUEST_SECONDS = 30.0  # embedding work one request may take before it is refused (503)
SNIPPET_CHARS = 200  # characters of a document shown with a result
RELOAD_CHECK_SECONDS = 0.5  # how often a server looks for a newer saved generation
SCORE_LABELS = {"cosine": "cosine similarity", "ip": "inner product"}


class RequestTooSlowError(HashpivotError):
    """A request ran past its time budget (``REQUEST_SECONDS``): 503, retry with less."""


class SearchService:
    """What a server searches: an index (or a sharded index), the encoder of its queries and
    its stored documents (titles and snippets; optional)."""

    def __init__(self, index: Any, encoder: Any = None, docs: Any = None) -> None:
        self.index, self.encoder, self.docs = index, encoder, docs

    @classmethod
    def open(cls, path: str, device: str = "auto", use_ray: bool = False) -> "SearchService":
        """An index directory written by ``hashpivot build`` (its encoder and documents), or a
        sharded index directory (:mod:`hashpivot.distributed`; with ``use_ray`` one Ray actor
        per shard, else its shards in this process)."""
        from .embed import encoder_from_info

        root = Path(path)
        if (root / "manifest.json").is_file():
            from .distributed import ShardedIndex

            index: Any = ShardedIndex.load(root, use_ray=use_ray)
        else:
            from .index import Index

            index = Index.load(root)
        info = index.meta.get("encoder")
        encoder = encoder_from_info(info, device) if info else None
        return cls(index, encoder, getattr(index, "documents", None))

    def allowed(self, where: Sequence[Tuple[str, str]]) -> Optional[np.ndarray]:
        """The ids whose stored fields equal every (field, value) pair (None: no filter)."""
        if not where:
            return None
        if self.docs is None:
            raise ConfigurationError("this index has no stored documents to filter (where=)")
        return self.docs.where(where)

    def embed(self, texts: List[str], seconds: float = REQUEST_SECONDS) -> np.ndarray:
        """Query embeddings, as the index's encoder makes them, a batch at a time within a time
        budget (:class:`RequestTooSlowError` past it)."""
        if self.encoder is None:
            raise ConfigurationError("this index records no encoder: POST embeddings instead")
        for t in texts:
            if len(t) > MAX_QUERY_CHARS:
                raise InvalidInputError(
                    f"a query is at most {MAX_QUERY_CHARS:,} characters, got {len(t):,}"
                )
        deadline = time.monotonic() + seconds
        step = max(1, int(getattr(self.encoder, "batch_size", 16)))
        parts = []
        for s in range(0, len(texts), step):
            if time.monotonic() > deadline:
                raise RequestTooSlowError(
                    f"the request took more than {seconds:.0f} s of embedding: send fewer or "
                    "shorter queries"
                )
            parts.append(self.encoder.encode_queries(texts[s : s + step], progress=False))
        dim = self.encoder.dim
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    def search(
        self, q: np.ndarray, k: int, where: Sequence[Tuple[str, str]] = ()
    ) -> List[List[Dict]]:
        """Ranked results (rank, id, title, score, snippet) of each query embedding."""
        scores, ids = self.index.search(q, k, allowed=self.allowed(where))
        found = ids >= 0
        if scores.dtype.kind == "f" and not np.isfinite(scores[found]).all():
            raise InvalidInputError(
                "a score overflowed float32 (metric 'ip' with very large embeddings): scale "
                "the query embeddings down"
            )
        return [self.results(scores[j], ids[j]) for j in range(len(q))]

    def results(self, scores: np.ndarray, ids: np.ndarray) -> List[Dict]:
        """One query's ranked results with titles and snippets."""
        return ranked_results(self.docs, scores, ids, SNIPPET_CHARS)

    def health(self) -> Dict[str, Any]:
        """What /healthz reports: rows, layout, bits, model."""
        info = (self.index.meta.get("encoder") or {}).get("model")
        return {
            "status": "ok",
            "rows": len(self.index),
            "layout": self.index.layout,
            "n_bits": self.index.n_bits,
            "model": info,
        }


def parse_where(items: Sequence[str]) -> List[Tuple[str, str]]:
    """``field=value`` strings as (field, value) pairs."""
    if len(items) > MAX_WHERE or any(len(item) > 2 * MAX_FIELD_CHARS + 1 for item in items):
        raise InvalidInputError(
            f"at most {MAX_WHERE} filters of at most {MAX_FIELD_CHARS} characters a side"
        )
    return [DocStore.condition(item) for item in items]


PAGE = """<!doctype html>
<html lang="ja"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hashpivot search</title>
<style>
body {{ font-family: "Noto Sans CJK JP", "Hiragino Sans", sans-serif; max-width: 52rem;
       margin: 2rem auto; padding: 0 1rem; line-height: 1.6; }}
form {{ display: flex; gap: .5rem; }}
input[name=q] {{ flex: 1; font-size: 1.1rem; padding: .4rem; }}
ol {{ padding-left: 1.5rem; }} li {{ margin: 1rem 0; }} .score {{ color: #666; font-size: .85rem; }}
.title {{ font-weight: bold; }} .snippet {{ color: #333; }} .error {{ color: #b00; }}
</style></head>
<body><h1>hashpivot</h1>
<p>{rows:,} documents · {layout} · {n_bits} bits</p>
<form action="/" method="get"><input name="q" value="{q}" placeholder="検索 / search" autofocus>
<input name="k" type="number" min="1" max="{max_k}" value="{k}"><button>Search</button></form>
{body}
</body></html>
"""


def embeddings_array(rows: List[List[float]]) -> np.ndarray:
    """Posted embeddings as a (n, dim) float32 array; ragged rows are a 400, not a crash."""
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise InvalidInputError(
            f"embeddings must all have one length, got lengths {sorted(lengths)[:4]}"
        )
    if not rows:
        return np.zeros((0, 1), np.float32)
    with np.errstate(over="ignore"):  # a value past float32 becomes inf: the search refuses it
        return np.asarray(rows, dtype=np.float32)


def render_page(service: SearchService, q: str, k: int, error: str = "") -> str:
    body = ""
    if error:
        body = f'<p class="error">{html.escape(error)}</p>'
    elif q:
        qe = service.embed([q])
        rows = best_documents(lambda n: service.search(qe, n), k, min(MAX_K, len(service.index)))[0]
        label = SCORE_LABELS.get(getattr(service.index, "metric", ""), "score")
        items = "".join(
            f'<li><div class="title">{html.escape(r["title"] or r["doc"])}</div>'
            f'<div class="score">{html.escape(r["id"])} · {label} {r["score"]:.4f}'
            + (f" · {r['more']} more passage{'s' if r['more'] > 1 else ''}" if r["more"] else "")
            + f'</div><div class="snippet">{html.escape(r["text"])}</div></li>'
            for r in rows
        )
        body = f'<ol id="results">{items}</ol>'
    h = service.health()
    return PAGE.format(
        rows=h["rows"],
        layout=h["layout"],
        n_bits=h["n_bits"],
        q=html.escape(q.encode("utf-8", "replace").decode("utf-8")),
        k=k,
        max_k=MAX_K,
        body=body,
    )


class ReloadingService:
    """The service of an index directory that follows its saves: each request asks
    :meth:`current` once and uses what it returns throughout (a search never mixes two
    generations); a new header (a save by ``hashpivot add``/``remove``/``build``/``tune``) is
    noticed within RELOAD_CHECK_SECONDS and loaded, the encoder kept when the model is the same."""

    def __init__(self, path: str, device: str = "auto") -> None:
        self.path, self.device = Path(path), device
        self._service = SearchService.open(path, device)
        self._stamp = self._read_stamp()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _read_stamp(self) -> Optional[Tuple[int, int, int]]:
        try:
            st = os.stat(self.path / HEADER)  # a save replaces it: a new inode
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> SearchService:
        """The service of the newest generation saved (checked at most every
        RELOAD_CHECK_SECONDS; a generation that fails to load leaves the one in use)."""
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return self._service
        with self._lock:
            if now - self._checked >= RELOAD_CHECK_SECONDS:
                self._checked = now
                stamp = self._read_stamp()
                if stamp is not None and stamp != self._stamp:
                    self._reload(stamp)
        return self._service

    def _reload(self, stamp: Tuple[int, int, int]) -> None:
        from .index import Index

        try:
            index = Index.load(self.path)
        except (HashpivotError, OSError):
            return  # keeps answering from the generation it has; tries again next time
        old = self._service
        same_model = index.meta.get("encoder") == old.index.meta.get("encoder")
        encoder = old.encoder if same_model else None
        if not same_model and index.meta.get("encoder"):
            from .embed import encoder_from_info

            encoder = encoder_from_info(index.meta["encoder"], self.device)
        self._service, self._stamp = SearchService(index, encoder, index.documents), stamp

    def __getattr__(self, name: str):  # anything else: the current generation's service
        return getattr(self.current(), name)


def create_app(service: SearchService):
    """The FastAPI app over a :class:`SearchService` (or a :class:`ReloadingService`: each
    request then uses the generation current when it starts)."""
    try:
        from fastapi import FastAPI, HTTPException, Query, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse
        from pydantic import BaseModel, Field
    except ImportError as e:
        raise ConfigurationError(
            "serving needs FastAPI and uvicorn: pip install 'hashpivot[serve]'"
        ) from e

    app = FastAPI(title="hashpivot", description="Semantic search over compact binary codes")
    current = getattr(service, "current", lambda: service)

    Text = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
    Vector = Annotated[List[float], Field(min_length=1, max_length=MAX_DIM)]
    Name = Annotated[str, Field(max_length=MAX_FIELD_CHARS)]

    class SearchRequest(BaseModel):
        queries: Optional[List[Text]] = Field(None, max_length=MAX_BATCH)
        embeddings: Optional[List[Vector]] = Field(None, max_length=MAX_BATCH)
        k: int = Field(10, ge=1, le=MAX_K)
        where: Dict[Name, Name] = Field(default_factory=dict, max_length=MAX_WHERE)

    def run(make):
        try:
            return make()
        except RequestTooSlowError as e:
            raise HTTPException(status_code=503, detail=one_line(e)) from None
        except HashpivotError as e:  # the request's fault: one line, 400
            raise HTTPException(status_code=400, detail=one_line(e)) from None

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):  # one line, input not echoed
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = one_line(Exception(f"{where}: {first.get('msg', 'invalid request')}"))
        return JSONResponse({"detail": msg}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):  # one line, never a traceback
        return JSONResponse({"detail": f"internal error: {type(e).__name__}"}, status_code=500)

    @app.get("/search")
    def search_get(
        q: str = Query(..., min_length=1, max_length=MAX_QUERY_CHARS),
        k: int = Query(10, ge=1, le=MAX_K),
        where: List[str] = Query([]),
    ):
        def go():
            svc = current()
            rows = svc.search(svc.embed([q]), k, parse_where(where))[0]
            return {"query": q, "results": rows}

        return run(go)

    @app.post("/search")
    def search_post(req: SearchRequest):
        if (req.queries is None) == (req.embeddings is None):
            raise HTTPException(status_code=422, detail="give either queries or embeddings")

        def go():
            svc = current()
            if req.queries is not None:
                q = svc.embed(req.queries) if req.queries else np.zeros((0, 1), np.float32)
            else:
                q = embeddings_array(req.embeddings)
            if len(q) == 0:
                return {"results": []}
            return {"results": svc.search(q, req.k, list(req.where.items()))}

        return run(go)

    @app.get("/healthz")
    def healthz():
        return current().health()

    @app.get("/", response_class=HTMLResponse)
    def page(q: str = Query("", max_length=MAX_QUERY_CHARS), k: int = Query(10, ge=1, le=MAX_K)):
        svc = current()
        try:
            return render_page(svc, q, k)
        except RequestTooSlowError as e:
            return HTMLResponse(render_page(svc, q, k, one_line(e)), status_code=503)
        except HashpivotError as e:
            return HTMLResponse(render_page(svc, q, k, one_line(e)), status_code=400)

    return app


def serve(
    path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    use_ray: bool = False,
    device: str = "auto",
) -> None:
    """Serves the index at ``path`` until interrupted (``--ray``: as a Ray Serve deployment
    over the shards of a sharded index, one actor per shard)."""
    if use_ray:
        serve_with_ray(path, host=host, port=port, device=device)
        return
    import uvicorn

    root = Path(path)
    service: Any = (
        SearchService.open(path, device)
        if (root / "manifest.json").is_file()  # a sharded index: as it was opened
        else ReloadingService(path, device)
    )
    app = create_app(service)
    index = service.index
    url = f"http://{host}:{port}/"
    print(
        f"hashpivot: serving {path} ({len(index):,} rows, {index.layout}, {index.n_bits} bits) "
        f"at {url} (the search page; JSON: {url}search?q=...&k=10); Ctrl-C stops",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)


def serve_with_ray(
    path: str, host: str = "127.0.0.1", port: int = 8000, device: str = "auto"
) -> None:
    """``hashpivot serve --ray``: the FastAPI app of :mod:`hashpivot.serve` as a Ray Serve
    deployment; its replica opens the sharded index (one actor per shard) on first use."""
    from .distributed import require_ray

    ray = require_ray()
    from ray import serve as ray_serve

    class _LazyService:  # opened inside the replica: only the path travels
        def __init__(self) -> None:
            self._service = None

        def __getattr__(self, name: str):
            if name.startswith("__"):  # pickle's probes, before __dict__ is restored
                raise AttributeError(name)
            if self.__dict__.get("_service") is None:
                self.__dict__["_service"] = _open_service(path, device)
            return getattr(self.__dict__["_service"], name)

    app = create_app(_LazyService())

    @ray_serve.deployment
    @ray_serve.ingress(app)
    class HashpivotServer:
        pass

    if not ray.is_initialized():
        ray.init()
    ray_serve.start(http_options={"host": host, "port": port})
    ray_serve.run(HashpivotServer.bind(), route_prefix="/", blocking=True)


def _open_service(path: str, device: str) -> SearchService:
    return SearchService.open(path, device, use_ray=True)


__all__ = [
    "MAX_BATCH",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "RequestTooSlowError",
    "SearchService",
    "create_app",
    "parse_where",
    "serve",
    "serve_with_ray",
]
