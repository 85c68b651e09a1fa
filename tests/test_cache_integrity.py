"""Cache integrity (issue 13 items 5, 6, 7, 9): a damaged cache is a miss, never a wrong label."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from _hash_embedder import HashEmbedder, hash_vector

from napari_cellama._constants import CACHE_ENV
from napari_cellama.core.cache import CacheWarning, EmbeddingCache, sentence_keys
from napari_cellama.validators import CellamaInputError, NonFiniteEmbeddingError

NS = "m-exact"


def _sentences(tag, n=20):
    return [f"Top genes are {tag}{i}, X{i}, and Y{i}." for i in range(n)]


def _vec(sentences):
    return np.stack([hash_vector(s) for s in sentences])


def _three_packs(root):
    cache = EmbeddingCache(root)
    groups = [_sentences(t) for t in "ABC"]
    files = [cache.store(NS, g, _vec(g)) for g in groups]
    return cache, groups, files


def _vec_file(keys_file):
    return keys_file.with_name(keys_file.name.replace(".keys.npy", ".vec.npy"))


def _exact_or_missing(cache, sentences):
    got, found = EmbeddingCache(cache.root).lookup(NS, sentences)
    np.testing.assert_array_equal(got[found], _vec(sentences)[found])  # never a wrong vector
    return found


@pytest.mark.parametrize("damage", ["truncated", "swapped", "bitflip"])
def test_compaction_never_merges_a_damaged_pack(tmp_path, damage):
    """Item 5: one damaged vector file used to misalign keys and vectors in the merged pack."""
    cache, groups, files = _three_packs(tmp_path)
    bad = _vec_file(files[1])
    if damage == "truncated":  # a vector file shorter than its keys (item 9: IndexError on every run)
        np.save(bad, _vec(groups[1])[:5])
    elif damage == "swapped":  # a bad copy: right shape, wrong content
        np.save(bad, _vec(groups[2]))
    else:  # bit rot inside the data
        raw = bytearray(bad.read_bytes())
        raw[-7] ^= 0x40
        bad.write_bytes(bytes(raw))
    with pytest.warns(CacheWarning, match="damaged pack"):
        merged = EmbeddingCache(tmp_path).compact(NS)
    assert merged == 2
    packs = sorted(p.name for p in (tmp_path / NS).iterdir() if p.name.endswith(".keys.npy"))
    assert len(packs) == 1 and "merged" in packs[0]  # the damaged pack is gone, not merged
    for g in (groups[0], groups[2]):
        assert _exact_or_missing(cache, g).all()
    assert not _exact_or_missing(cache, groups[1]).any()  # its sentences are embedded again


def test_bit_rot_is_a_miss_not_a_changed_vector(tmp_path):
    """Item 7: a checksum per pack turns bit rot into a miss."""
    cache, groups, files = _three_packs(tmp_path)
    bad = _vec_file(files[0])
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit somewhere in the vectors
    bad.write_bytes(bytes(raw))
    with pytest.warns(CacheWarning):
        found = _exact_or_missing(cache, groups[0] + groups[1])
    assert not found[:20].any() and found[20:].all()
    record = json.loads(files[0].with_name(files[0].name.replace(".keys.npy", ".sum.json")).read_text())
    assert {"keys_crc32", "vec_crc32", "n", "dimension"} <= set(record)


def test_short_vector_file_is_a_miss_on_lookup(tmp_path):
    """Item 9: a vector file shorter than its keys raised IndexError on every run."""
    cache, groups, files = _three_packs(tmp_path)
    np.save(_vec_file(files[2]), _vec(groups[2])[:3])
    with pytest.warns(CacheWarning):
        found = _exact_or_missing(cache, groups[2])
    assert not found.any()


def test_many_packs_and_one_bad_pack_do_not_fail_the_store(tmp_path):
    """Item 9: more than 32 packs plus one bad pack made every run fail after the embedding work."""
    cache = EmbeddingCache(tmp_path)
    first = cache.store(NS, _sentences("P0", 2), _vec(_sentences("P0", 2)))
    _vec_file(first).write_bytes(b"not a numpy file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        for i in range(1, 34):  # the 33rd store triggers compaction
            s = _sentences(f"P{i}", 2)
            assert cache.store(NS, s, _vec(s)) is not None
        assert len(cache._packs(NS)) <= 3  # merged once
        assert not first.exists() and not _vec_file(first).exists()  # the bad pack was dropped, not merged
        assert _exact_or_missing(cache, _sentences("P20", 2)).all()


def test_legacy_pack_without_checksum_still_reads(tmp_path):
    """Packs written before checksums (keys + vectors only) keep working."""
    d = tmp_path / NS
    d.mkdir()
    s = _sentences("L")
    keys = sentence_keys(s)
    order = np.argsort(keys)
    np.save(d / "old.vec.npy", _vec(s)[order])
    np.save(d / "old.keys.npy", keys[order])
    (d / "meta.json").write_text(json.dumps({"dimension": 16}))
    assert _exact_or_missing(EmbeddingCache(tmp_path), s).all()


def test_non_finite_cached_vectors_are_embedded_again(tmp_path):
    """Item 6: NaN vectors in the cache used to give every cell one label with confidence 0."""
    d = tmp_path / "hash-exact"
    d.mkdir()
    s = _sentences("N")
    keys = sentence_keys(s)
    order = np.argsort(keys)
    vec = _vec(s)[order]
    vec[::2] = np.nan  # a legacy pack (no checksum) holding NaN rows
    np.save(d / "nan.vec.npy", vec)
    np.save(d / "nan.keys.npy", keys[order])
    emb = HashEmbedder(cache=tmp_path)
    out = emb.encode(s)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, _vec(s), rtol=1e-6)
    assert emb.last_stats["embedded"] == 10 and emb.last_stats["cached"] == 10


def test_broken_model_is_refused_before_the_knn(tmp_path):
    """Item 6: a model returning NaN with --no-cache gave every cell one label (exit 0)."""
    import scanpy as sc

    from napari_cellama.core import run_transfer

    ad = sc.datasets.pbmc68k_reduced()[:60]
    ref = ad.raw.to_adata()
    ref.obs["bulk_labels"] = ad.obs["bulk_labels"].to_numpy()
    with pytest.raises(NonFiniteEmbeddingError, match="NaN or infinite"):
        run_transfer(ref[:20].copy(), ref[20:].copy(), "bulk_labels", embedder=HashEmbedder(nan=True))
    assert issubclass(NonFiniteEmbeddingError, CellamaInputError)  # the CLI exits 2 with that line
    with pytest.raises(NonFiniteEmbeddingError):  # and nothing non-finite enters the cache
        HashEmbedder(nan=True, cache=tmp_path).encode(_sentences("Z", 3))
    assert not any(tmp_path.rglob("*.keys.npy"))


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_unwritable_cache_degrades_to_no_cache(tmp_path, monkeypatch, where):
    """Item 9/15: a cache folder that cannot be written (here a file in the way) warns and goes on."""
    blocker = tmp_path / "cache_is_a_file"
    blocker.write_text("not a folder")
    if where == "file":
        root = blocker
    else:  # NAPARI_CELLAMA_CACHE pointing at a file: the cache is <file>/embeddings
        monkeypatch.setenv(CACHE_ENV, str(blocker))
        root = True
    emb = HashEmbedder(cache=root)
    s = _sentences("U", 300)
    with pytest.warns(CacheWarning, match="cannot be written"):
        out = emb.encode(s)
    np.testing.assert_allclose(out, _vec(s), rtol=1e-6)
    assert emb.cache.writable is False and blocker.read_text() == "not a folder"
