"""ITQ: it learns a rotation that beats PCA and a random rotation, encodes like the numpy
definition, and round-trips through its pickle-free file."""

import json
import zipfile

import numpy as np
import pytest

import hashpivot as hp
from hashpivot import IndexFormatError, InvalidInputError
from hashpivot.itq import ITQ


def clustered(n=3000, d=96, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, d))
    x = centers[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def sign_error(v, r):
    z = v @ r
    return float(((np.where(z >= 0, 1.0, -1.0) - z) ** 2).sum() / len(v))


def test_rotation_beats_pca_and_random_rotation():
    x = clustered()
    m = ITQ(64, n_iter=50, seed=1).fit(x)
    v = (x - m.mean) @ m.pca
    learned = sign_error(v, m.rotation)
    rng = np.random.default_rng(7)
    random_rot = np.linalg.qr(rng.standard_normal((64, 64)))[0]
    assert learned < sign_error(v, np.eye(64))
    assert learned < sign_error(v, random_rot)
    assert m.errors[-1] < m.errors[0]
    assert abs(m.quantization_error(x) - learned) < 1e-3 * learned


def test_encode_is_packed_sign_of_projection():
    x = clustered(500)
    m = ITQ(64).fit(x)
    z = (x.astype(np.float64) - m.mean) @ m.pca.astype(np.float64) @ m.rotation.astype(np.float64)
    want = np.packbits(z >= 0, axis=1)
    got = m.encode(x)
    assert got.shape == (500, 8) and got.dtype == np.uint8
    # float32 vs float64 may flip a bit whose projection is ~0; nothing else may differ
    flips = hp.hamming_distances(got, want).diagonal()
    assert flips.max() <= 1 and flips.mean() < 0.01


def test_encode_matches_numpy_and_is_row_by_row():
    x = clustered(1000)
    m = ITQ(64).fit(x)
    whole = m.encode(x)
    z = (x.astype(np.float64) - m.mean) @ m.projection.astype(np.float64)
    sure = np.abs(z) > 1e-4  # bits whose projection is clearly away from 0
    np.testing.assert_array_equal(np.unpackbits(whole, axis=1)[sure], (z >= 0)[sure])
    parts = np.concatenate([m.encode(x[s : s + 97]) for s in range(0, 1000, 97)])
    np.testing.assert_array_equal(parts, whole)  # the same code alone or in any batch


def test_subsampling_is_seeded_and_used():
    x = clustered(3000)
    a = ITQ(64, max_train=500, seed=3).fit(x)
    b = ITQ(64, max_train=500, seed=3).fit(x)
    np.testing.assert_array_equal(a.encode(x), b.encode(x))
    full = ITQ(64, seed=3).fit(x)
    assert not np.allclose(a.mean, full.mean)


def test_save_load_roundtrip_and_no_pickle(tmp_path):
    x = clustered(800)
    m = ITQ(64).fit(x)
    p = tmp_path / "itq.npz"
    m.save(p)
    m2 = ITQ.load(p)
    np.testing.assert_array_equal(m2.encode(x), m.encode(x))
    with zipfile.ZipFile(p) as z:  # every member is a plain .npy with a non-object dtype
        for name in z.namelist():
            assert name.endswith(".npy")
    with np.load(p, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def _rewrite(p, **change):
    with np.load(p, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data.update(change)
    np.savez(p, **data)


def test_load_rejects_corruption(tmp_path):
    x = clustered(800)
    m = ITQ(64).fit(x)
    p = tmp_path / "itq.npz"
    m.save(p)
    _rewrite(p, mean=m.mean + 1)
    with pytest.raises(IndexFormatError, match="checksum"):
        ITQ.load(p)
    m.save(p)
    meta = json.loads(bytes(np.load(p)["meta"]).decode())
    meta["version"] = 99
    _rewrite(p, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    with pytest.raises(IndexFormatError, match="version 99"):
        ITQ.load(p)
    p.write_bytes(b"not a zip file at all")
    with pytest.raises(IndexFormatError):
        ITQ.load(p)
    m.save(p)
    p.write_bytes(p.read_bytes()[:200])  # truncated
    with pytest.raises(IndexFormatError):
        ITQ.load(p)


def test_bad_input():
    x = clustered(200, d=64)
    with pytest.raises(InvalidInputError, match="more than the embedding dimension"):
        ITQ(128).fit(x)
    with pytest.raises(InvalidInputError, match="multiple of 64"):
        ITQ(100)
    bad = x.copy()
    bad[3, 5] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        ITQ(64).fit(bad)
    m = ITQ(64).fit(x)
    with pytest.raises(InvalidInputError, match="NaN"):
        m.encode(bad)
    with pytest.raises(InvalidInputError, match="dimension"):
        m.encode(np.zeros((2, 32), np.float32))
    with pytest.raises(InvalidInputError, match="not fitted"):
        ITQ(64).encode(x)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_and_gpu_agree():
    # A decaying spectrum (like real embeddings): PCA components are then well defined, so both
    # devices find the same ones (with equal eigenvalues any rotation of them would do).
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((128, 128)))[0]
    x = ((rng.standard_normal((5000, 128)) * np.geomspace(3, 0.05, 128)) @ basis).astype(np.float32)
    cpu = ITQ(64, device="cpu").fit(x)
    gpu = ITQ(64, device="cuda").fit(x)
    np.testing.assert_allclose(cpu.projection, gpu.projection, atol=2e-3)
    flips = hp.hamming_distances(cpu.encode(x), gpu.encode(x)).diagonal()
    assert flips.mean() < 0.05
