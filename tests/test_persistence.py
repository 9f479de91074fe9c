"""Saving and loading: round trip, memory-mapped and not; every kind of damage raises."""

import json

import numpy as np
import pytest

from conftest import write_header
from hashpivot import Index, IndexFormatError
from test_index import data


@pytest.fixture()
def saved(tmp_path):
    x = data(700, seed=4)
    index = Index.build(
        x, n_bits=64, layout="flat", store="int8", meta={"model": "test"}, n_pivots=8
    )
    index.save(tmp_path / "idx")
    return x, index, tmp_path / "idx"


@pytest.mark.parametrize("mmap", [True, False])
def test_roundtrip(saved, mmap):
    x, index, path = saved
    loaded = Index.load(path, mmap=mmap)
    q = data(5, seed=11)
    for kw in ({}, {"threshold": 8}, {"rerank": False}):
        a, b = index.search(q, k=7, **kw), loaded.search(q, k=7, **kw)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(loaded.codes, index.codes)
    assert loaded.meta == {"model": "test"} and loaded.store == "int8"
    if mmap:
        assert isinstance(loaded.codes, np.memmap) and not loaded.codes.flags.writeable
        loaded.add(data(3, seed=12))  # a mapped index still takes additions (in memory)
        assert len(loaded) == len(index) + 3


def test_save_over_existing_keeps_one_generation(saved):
    x, index, path = saved
    index.remove([0, 1])
    index.save(path)
    files = sorted(p.name for p in path.iterdir())
    assert len([f for f in files if f.startswith("codes-")]) == 1
    assert len(Index.load(path)) == len(index)


def header(path):
    return json.loads((path / "header.json").read_text())


def test_flipped_byte_is_detected(saved):
    _, _, path = saved
    f = path / header(path)["arrays"]["codes"]["file"]
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0x10
    f.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="checksum"):
        Index.load(path)


def test_truncated_array_is_detected(saved):
    _, _, path = saved
    f = path / header(path)["arrays"]["vectors"]["file"]
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(IndexFormatError, match=r"truncated|corrupt"):
        Index.load(path)


def test_swapped_files_are_detected(saved):
    _, _, path = saved
    h = header(path)
    h["arrays"]["codes"]["file"], h["arrays"]["pivots"]["file"] = (
        h["arrays"]["pivots"]["file"],
        h["arrays"]["codes"]["file"],
    )
    write_header(path, h)
    with pytest.raises(IndexFormatError):
        Index.load(path)


@pytest.mark.parametrize("damage", ["json", "version", "format", "missing", "shape"])
def test_header_damage(saved, damage):
    _, _, path = saved
    h = header(path)
    if damage == "json":
        (path / "header.json").write_text("{not json")
    else:
        if damage == "version":
            h["version"] = 99
        elif damage == "format":
            h["format"] = "something-else"
        elif damage == "missing":
            (path / h["arrays"]["ids"]["file"]).unlink()
        elif damage == "shape":
            h["arrays"]["ids"]["shape"] = [5]
        write_header(path, h)
    with pytest.raises(IndexFormatError):
        Index.load(path)


def test_not_an_index(tmp_path):
    with pytest.raises(IndexFormatError, match="not a hashpivot index"):
        Index.load(tmp_path)


def test_loaded_index_checks_query_dimension(saved):
    _, _, path = saved
    loaded = Index.load(path)
    with pytest.raises(ValueError, match="dimension"):
        loaded.search(np.ones((1, 10), np.float32))


def test_flat_index_of_format_1_still_loads(saved):
    _, index, path = saved  # version 2 changed only the partitioned layout
    h = header(path)
    h["version"] = 1
    write_header(path, h)
    loaded = Index.load(path)
    np.testing.assert_array_equal(np.asarray(loaded.codes), np.asarray(index.codes))
