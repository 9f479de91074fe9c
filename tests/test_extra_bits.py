"""The ivf layout's extra bits (Extended RaBitQ) against a numpy reference: each row's projected
residual y coded with B bits a dimension, odd levels l = sum_p 2^p (2 b_p - 1) whose top plane is
the sign code; the re-estimate <q, c> + beta' + f <W^T q, l> with f = ||y||^2 / <l, y> and
beta' = <c, r> - f <W^T c, l>; more bits rank better; files and add() keep them."""

import json

import numpy as np
import pytest

from conftest import write_header
from hashpivot import Index, _core
from hashpivot.errors import CorruptFileError, InvalidInputError
from hashpivot.storage import HEADER


def clustered(n, d=64, seed=0, centres=20, spread=0.6):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d))
    x = c[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def int8_levels(v):
    """Rows as a search rounds them for the centre scores (cpp/centres.h)."""
    step = np.abs(v).max(1, keepdims=True) / 127
    return (np.rint(v / step) * step).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    both = clustered(4200)
    return both[:4000], both[4000:]


@pytest.fixture(scope="module", params=[1, 2, 3])
def built(request, data):
    x, _ = data
    index = Index.build(
        x, n_bits=64, layout="ivf", store="float32", n_lists=16, seed=3, extra_bits=request.param
    )
    return request.param, index


def decoded(index, extra_bits):
    """Each row's levels l from its planes, the top one its sign code (numpy)."""
    rows = index._version.rows
    nb = index.n_bits // 8
    np.testing.assert_array_equal(rows.extra[:, extra_bits * nb :], rows.codes)  # top: the sign
    v = np.zeros((rows.n, index.n_bits), np.int32)
    for p in range(extra_bits + 1):
        v += np.unpackbits(rows.extra[:, p * nb : (p + 1) * nb], axis=1).astype(np.int32) << p
    return 2 * v - (2 ** (extra_bits + 1) - 1)


def model(index, x):
    itq, rows = index.itq, index._version.rows
    c = index.centres[rows.lists]
    r = x[index.ids] - c
    w = itq.pca @ itq.rotation
    return c, r, w, (r - itq.mean) @ w


def test_levels_are_odd_bounded_and_signed_as_the_code(built, data):
    extra_bits, index = built
    x, _ = data
    lv = decoded(index, extra_bits)
    _, _, _, y = model(index, x)
    top = 2 ** (extra_bits + 1) - 1
    assert (np.abs(lv) <= top).all() and (lv % 2 != 0).all()
    assert ((lv > 0) == (y >= 0)).mean() > 0.999  # float32 vs float64 at y ~ 0 only
    cos = (lv * y).sum(1) / np.linalg.norm(lv, axis=1) / np.linalg.norm(y, axis=1)
    sign_cos = np.abs(y).sum(1) / np.sqrt(y.shape[1]) / np.linalg.norm(y, axis=1)
    assert cos.mean() > sign_cos.mean() + 0.02  # more bits: closer to y


def test_factors_and_biases_match_the_numpy_reference(built, data):
    extra_bits, index = built
    x, _ = data
    rows = index._version.rows
    lv = decoded(index, extra_bits)
    c, r, w, y = model(index, x)
    f = (y * y).sum(1) / (lv * y).sum(1)
    np.testing.assert_allclose(rows.extra_factors, f, rtol=2e-4)
    beta = (c * r).sum(1) - f * ((c @ w) * lv).sum(1)
    np.testing.assert_allclose(rows.extra_biases, beta, rtol=1e-3, atol=1e-4)


def test_the_engines_re_estimate_equals_the_numpy_reference(built, data):
    """Every row re-estimated, no rerank: the scores returned are the re-estimates of the best."""
    extra_bits, index = built
    x, q = data
    rows = index._version.rows
    c, _, w, _ = model(index, x)
    want = (
        int8_levels(q) @ int8_levels(c).T
        + rows.extra_biases
        + rows.extra_factors * ((q @ w) @ decoded(index, extra_bits).T)
    )
    n, k = len(index), 10
    S, ids = index.search(q, k, rerank=False, nprobe=16, candidates=k, reestimate=n)
    best = np.argsort(-want, axis=1, kind="stable")[:, :k]
    np.testing.assert_allclose(S, np.take_along_axis(want, best, 1), rtol=1e-4, atol=2e-4)
    assert np.mean(ids == index.ids[best]) > 0.97  # near-ties may swap in float32


def test_more_extra_bits_find_more_of_the_true_top_10_at_equal_candidates(data):
    x, q = data
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recall = []
    for extra_bits in (0, 1, 2):
        index = Index.build(x, n_bits=64, layout="ivf", n_lists=16, seed=3, extra_bits=extra_bits)
        _, ids = index.search(q, 10, nprobe=4, candidates=20)
        recall.append(np.mean([np.isin(truth[i], ids[i]).mean() for i in range(len(q))]))
    assert recall[1] > recall[0] + 0.1 and recall[2] > recall[1] + 0.03, recall


def test_exhaustive_settings_with_extra_bits_equal_brute_force(built, data):
    _, index = built
    x, q = data
    n = len(index)
    _, ids = index.search(q, 10, nprobe=16, candidates=n, reestimate=n)
    np.testing.assert_array_equal(ids, np.argsort(-(q @ x.T), axis=1)[:, :10])


def test_the_re_estimate_is_the_same_alone_batched_and_threaded(built, data):
    _, index = built
    _, q = data
    kw = dict(nprobe=5, candidates=20, reestimate=120)
    batched = index.search(q, 10, threads=1, **kw)[1]
    np.testing.assert_array_equal(batched, index.search(q, 10, threads=2, **kw)[1])
    alone = np.vstack([index.search(q[i : i + 1], 10, **kw)[1] for i in range(len(q))])
    np.testing.assert_array_equal(batched, alone)


def test_extra_bits_survive_save_load_and_add(data, tmp_path):
    x, q = data
    index = Index.build(x[:3000], n_bits=64, layout="ivf", n_lists=16, seed=3, extra_bits=2)
    index.add(x[3000:])
    assert index._version.rows.extra.shape == (4000, 24)
    _, ids = index.search(x[3000:3050], 1, candidates=10)
    assert (ids[:, 0] == np.arange(3000, 3050)).mean() > 0.95  # added rows find themselves
    index.save(tmp_path / "i")
    back = Index.load(tmp_path / "i")
    assert back._version.rows.extra_bits == 2
    for name in ("extra", "extra_factors", "extra_biases"):
        np.testing.assert_array_equal(
            getattr(back._version.rows, name), getattr(index._version.rows, name)
        )
    np.testing.assert_array_equal(back.search(q, 10)[1], index.search(q, 10)[1])


def test_a_header_claiming_extra_bits_it_does_not_hold_is_corrupt(data, tmp_path):
    x, _ = data
    Index.build(x[:500], n_bits=64, layout="ivf", extra_bits=0, n_lists=4).save(tmp_path / "ivf")
    Index.build(x[:500], n_bits=64).save(tmp_path / "flat")
    for name in ("ivf", "flat"):
        h = json.loads((tmp_path / name / HEADER).read_text())
        h["extra_bits"] = 2
        write_header(tmp_path / name, h)
        with pytest.raises(CorruptFileError):
            Index.load(tmp_path / name)


def test_extra_bits_and_reestimate_errors_are_named(data):
    x, q = data
    with pytest.raises(InvalidInputError, match="ivf"):
        Index.build(x[:500], n_bits=64, extra_bits=1)
    with pytest.raises(InvalidInputError):
        Index.build(x[:500], n_bits=64, layout="ivf", extra_bits=_core.MAX_EXTRA_BITS + 1)
    plain = Index.build(x[:500], n_bits=64, layout="ivf", extra_bits=0, n_lists=4)
    with pytest.raises(InvalidInputError, match="extra bits"):
        plain.search(q, reestimate=100)
    extra = Index.build(x[:500], n_bits=64, layout="ivf", n_lists=4, extra_bits=1)
    with pytest.raises(InvalidInputError, match="at least candidates"):
        extra.search(q, candidates=50, reestimate=20)
    extra.search(q, candidates=50, reestimate=0)  # none: the plain re-score


def test_tune_keeps_the_re_estimate_with_its_setting_and_stats_count_it_apart(data):
    from hashpivot.plan import REESTIMATE_FACTOR

    x, q = data
    plain = Index.build(
        x, n_bits=64, layout="ivf", extra_bits=0, store="float32", n_lists=16, seed=3
    )
    index = Index.build(
        x, n_bits=64, layout="ivf", store="float32", n_lists=16, seed=3, extra_bits=2
    )
    result = index.tune(q[:100], target_recall=0.9)
    L = result.settings["candidates"]
    assert result.settings["reestimate"] in (min(REESTIMATE_FACTOR * L, len(index)), 0)
    assert index.tuned["reestimate"] == result.settings["reestimate"]
    a, b = plain.stats(), index.stats()
    assert b["index_bytes_per_doc"] == pytest.approx(a["index_bytes_per_doc"], abs=0.05)
    assert b["bytes_per_doc"] - a["bytes_per_doc"] == pytest.approx(3 * 8 + 8, abs=0.05)
