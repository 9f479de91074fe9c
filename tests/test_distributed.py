"""hashpivot.distributed on a local Ray (ray.init(num_cpus=2), no GPU): embedding through an
actor pool equals the local encoder and resumes; a 4-shard build searched exhaustively returns
the exact float top-10 of real queries; a dead shard actor is a named error, and a retry after
its restart succeeds."""

from pathlib import Path

import numpy as np
import pytest

import hashpivot as hp
from hashpivot.truth import recall_at

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")
from hashpivot import distributed  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "manpages-ja"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        ignore_reinit_error=True,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus():
    if (SHARED / "embeddings.npy").is_file():
        return np.load(SHARED / "embeddings.npy"), np.load(SHARED / "query_embeddings.npy")[:100]
    rng = np.random.default_rng(0)  # without the shared corpus: clustered stand-ins
    c = rng.standard_normal((50, 384))
    x = c[rng.integers(0, 50, 10_000)] + 0.5 * rng.standard_normal((10_000, 384))
    q = c[rng.integers(0, 50, 100)] + 0.5 * rng.standard_normal((100, 384))
    return x.astype(np.float32), q.astype(np.float32)


def exact_top10(x, q):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ xn.T), axis=1, kind="stable")[:, :10]


def test_embed_equals_the_local_encoder_and_resumes(local_ray, tiny_model, tmp_path):
    import ray.data

    from hashpivot.embed import get_encoder

    texts = [f"ファイル 圧縮 file {i} " + "list " * (i % 7) for i in range(64)]
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    want = get_encoder(tiny_model, device="cpu").encode_documents(texts)
    got = distributed.embed(ds, model=tiny_model, batch_size=16, concurrency=2, device="cpu")
    rows = sorted(got.take_all(), key=lambda r: r["id"])
    assert np.abs(np.stack([r["embedding"] for r in rows]) - want).max() <= 1e-5
    out = tmp_path / "emb"
    distributed.embed(ds, model=tiny_model, batch_size=16, output_dir=str(out), device="cpu")
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 4
    parts[1].unlink()  # as if the job died before this batch was written
    (out / ".tmp-half.parquet").write_bytes(b"PAR1 half written")
    again = distributed.embed(
        ds, model=tiny_model, batch_size=16, output_dir=str(out), device="cpu"
    )
    assert len(list(out.glob("part-*.parquet"))) == 4 and not list(out.glob(".tmp-*"))
    rows = sorted(again.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(64))
    assert np.abs(np.stack([r["embedding"] for r in rows]) - want).max() <= 1e-5


@pytest.fixture(scope="module")
def sharded(local_ray, corpus, tmp_path_factory):
    x, _ = corpus
    out = tmp_path_factory.mktemp("sharded") / "idx"
    manifest = distributed.build(
        x, out, n_shards=4, ids=np.arange(len(x)) + 10**9, n_bits=128, layout="flat", use_ray=True
    )
    assert [s["rows"] for s in manifest["shards"]] == [2500] * 4
    return out


def test_sharded_exhaustive_search_is_exact(corpus, sharded):
    x, q = corpus
    index = distributed.ShardedIndex.load(sharded, use_ray=True)
    _, ids = index.search(q, 10, candidates=len(x))
    truth = exact_top10(x, q)  # the same ids; numpy's float sums may swap two near-equal scores
    assert all(set(ids[j] - 10**9) == set(truth[j]) for j in range(len(q)))
    single = hp.Index.build(x, n_bits=128, layout="flat", ids=np.arange(len(x)) + 10**9)
    np.testing.assert_array_equal(ids, single.search(q, 10, candidates=len(x))[1])
    local = distributed.ShardedIndex.load(sharded, use_ray=False, verify=True)
    np.testing.assert_array_equal(local.search(q, 10, candidates=len(x))[1], ids)


def test_sharded_default_recall_matches_one_index(corpus, sharded):
    x, q = corpus
    truth = exact_top10(x, q)
    single = hp.Index.build(x, n_bits=128, layout="flat")
    one = recall_at(single.search(q, 10)[1], truth, 10)
    shards = distributed.ShardedIndex.load(sharded, use_ray=True)
    many = recall_at(shards.search(q, 10)[1] - 10**9, truth, 10)
    assert many >= one - 0.01, (many, one)


def test_dead_shard_actor_is_a_named_error_and_a_retry_succeeds(corpus, sharded):
    _, q = corpus
    index = distributed.ShardedIndex.load(sharded, use_ray=True)
    want = index.search(q, 10)[1]
    ray.kill(index._actors[0][2], no_restart=False)  # the shard's process dies mid-service
    with pytest.raises(distributed.ShardUnavailableError, match="shard-0002"):
        index.search(q, 10)
    index.wait_ready()
    np.testing.assert_array_equal(index.search(q, 10)[1], want)


def test_ray_shards_of_another_index_are_refused_at_load(local_ray, tmp_path):
    """The manifest and every shard agree, checked from the actors' own loads (issue 20)."""
    import json
    import shutil

    from hashpivot.errors import IndexFormatError

    x = np.random.default_rng(5).standard_normal((600, 64)).astype(np.float32)
    root = tmp_path / "s"
    distributed.build(x, root, n_shards=2, n_bits=64, use_ray=False)
    shutil.rmtree(root / "shard-0001")
    hp.Index.build(x[300:], n_bits=64, metric="ip").save(root / "shard-0001")
    with pytest.raises(IndexFormatError, match=r"shard-0001.*metric"):
        distributed.ShardedIndex.load(root, use_ray=True)
    m = json.loads((root / "manifest.json").read_text())
    m["shards"][1] = dict(m["shards"][0], path="shard-0001/../shard-0000")
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="same shard"):
        distributed.ShardedIndex.load(root, use_ray=True)
