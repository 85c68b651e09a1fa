"""Persistent embedding cache: storage format, concurrency, fingerprints, Embedder and CLI use."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import subprocess
import sys

import numpy as np
import pytest
from _perf_fixture import exact_run, pbmc, session_cache, transfer

from napari_cellama._constants import CACHE_ENV, EMBED_CACHE, EMBED_MODE
from napari_cellama.core import Embedder, offline_model_path
from napari_cellama.core.cache import EmbeddingCache, default_cache_dir, model_fingerprint, sentence_keys


def _vectors(n, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_store_lookup_roundtrip_float32_and_namespaces(tmp_path):
    cache = EmbeddingCache(tmp_path)
    sentences = [f"Top genes are G{i}, H{i}, and K{i}." for i in range(50)]
    vec = _vectors(50)
    cache.store("aaaa-exact", sentences[:30], vec[:30])
    cache.store("aaaa-exact", sentences[20:], vec[20:])  # 10 overlap: stored once
    got, found = cache.lookup("aaaa-exact", sentences[::-1] + ["never stored"])
    assert found.tolist() == [True] * 50 + [False]
    assert got.dtype == np.float32 and np.array_equal(got[:50], vec[::-1])
    assert not got[50].any()
    # another mode or model is another namespace
    assert not cache.lookup("aaaa-fast", sentences)[1].any()
    assert not cache.lookup("bbbb-exact", sentences)[1].any()
    info = cache.info()
    assert info.entries == 50 and [n.name for n in info.namespaces] == ["aaaa-exact"]
    assert info.namespaces[0].packs == 2 and info.bytes > 50 * 8 * 4
    # sentence text is the key: case and whitespace matter, duplicates do not
    keys = sentence_keys(["a", "a", "A", "a "])
    assert keys.dtype == np.dtype("S16") and keys[0] == keys[1] and len(set(keys.tolist())) == 3


def test_compact_and_clear(tmp_path):
    cache = EmbeddingCache(tmp_path)
    s = [f"s{i}" for i in range(40)]
    v = _vectors(40)
    for i in range(0, 40, 10):
        cache.store("m-exact", s[i : i + 10], v[i : i + 10])
    assert cache.info().namespaces[0].packs == 4
    assert cache.compact("m-exact") == 4
    assert cache.info().namespaces[0].packs == 1
    got, found = cache.lookup("m-exact", s)
    assert found.all() and np.array_equal(got, v)
    freed = cache.clear()
    assert freed > 40 * 8 * 4 and cache.info().entries == 0 and not cache.lookup("m-exact", s)[1].any()


def test_incomplete_pack_is_invisible(tmp_path):
    cache = EmbeddingCache(tmp_path)
    keys_file = cache.store("m-exact", ["one", "two"], _vectors(2))
    keys_file.unlink()  # a writer that died after the vectors, before the keys
    (tmp_path / "m-exact" / ".junk.vec.npy.tmp").write_bytes(b"half a file")
    assert not cache.lookup("m-exact", ["one", "two"])[1].any()
    assert cache.info().entries == 0


def _writer(root, seed, out):
    """Child process: store 300 sentences, a third shared with every other writer."""
    cache = EmbeddingCache(root)
    rng = np.random.default_rng(seed)
    shared = [f"shared {i}" for i in range(100)]
    own = [f"writer {seed} sentence {i}" for i in range(200)]
    s = shared + own
    v = np.vstack([np.full((100, 4), 7.0, np.float32), rng.standard_normal((200, 4)).astype(np.float32)])
    for start in range(0, 300, 30):  # many small packs at the same time as the others
        cache.store("m-exact", s[start : start + 30], v[start : start + 30])
    out.put((seed, v[100:]))


def test_concurrent_writers_processes(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), seed, q)) for seed in range(4)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    cache = EmbeddingCache(tmp_path)
    for seed, own in results.items():
        got, found = cache.lookup("m-exact", [f"writer {seed} sentence {i}" for i in range(200)])
        assert found.all() and np.array_equal(got, own)
    got, found = cache.lookup("m-exact", [f"shared {i}" for i in range(100)])
    assert found.all() and (got == 7.0).all()
    assert cache.info().entries >= 900  # shared sentences may be stored by two racing writers
    assert not list((tmp_path / "m-exact").glob(".*tmp"))  # no temporary files left behind


def test_fingerprint_is_content_not_path(tmp_path):
    src = offline_model_path()
    copy = tmp_path / "model copy"
    shutil.copytree(src, copy)
    fp = model_fingerprint(src)
    assert model_fingerprint(copy) == fp and len(fp) == 16
    cfg = copy / "1_Pooling" / "config.json"
    cfg.write_text(cfg.read_text().replace('"pooling_mode_cls_token": false', '"pooling_mode_cls_token": true'))
    assert model_fingerprint(copy) != fp
    assert Embedder(str(copy), cache=tmp_path / "c").fingerprint() != Embedder(cache=tmp_path / "c").fingerprint()


def test_default_location_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "embeddings"
    assert EmbeddingCache().root == tmp_path / "root" / "embeddings"
    assert Embedder(cache=True).cache.root == tmp_path / "root" / "embeddings"


def test_embedder_cache_warm_run_skips_model_and_keeps_labels():
    """Exact mode + cache: identical vectors, no model load when warm, same labels as exact."""
    sentences = pbmc()[0]
    exact, cold_stats = exact_run()  # the cold run filled the (then empty) session cache
    assert cold_stats["embedded"] == cold_stats["unique"] > 600 and cold_stats["cached"] == 0
    warm = Embedder(mode="exact", cache=session_cache(), device="cpu")
    stages = []
    second = warm.encode(sentences, callback=lambda *a: stages.append(a))
    assert warm.last_stats["cached"] == warm.last_stats["unique"] and warm.last_stats["embedded"] == 0
    assert not warm.loaded and not any(s[0] == "loading model" for s in stages)
    assert second.dtype == np.float32 and np.array_equal(second, exact)
    agreement = np.mean(transfer(second) == transfer(exact))
    assert agreement >= 0.99, agreement
    # a partly cached input embeds only the new sentences, next to the cached ones
    extra = ["Top genes are CD3E and CD8A.", "Top gene is LYZ."]
    third = warm.encode(sentences[:5] + extra)
    assert (warm.last_stats["unique"], warm.last_stats["cached"], warm.last_stats["embedded"]) == (7, 5, 2)
    assert np.array_equal(third[:5], exact[:5])
    single = Embedder(mode="exact", device="cpu").encode(extra)
    assert np.allclose(third[5:], single, atol=1e-5)


def test_pipeline_records_mode_and_cache(tmp_path):
    import scanpy as sc

    from napari_cellama.core import run_transfer
    from napari_cellama.io import expression_for_sentences

    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    _, labels, ref_idx, query_idx = pbmc()
    ref, query = adata[ref_idx[:60]].copy(), adata[query_idx[:40]].copy()
    query.obs = query.obs.drop(columns=["bulk_labels"])
    res = run_transfer(query, ref, "bulk_labels", cache=tmp_path, mode="exact", device="cpu")
    assert res.params[EMBED_MODE] == "exact"
    info = res.params[EMBED_CACHE]
    assert info["folder"] == str(tmp_path) and info["query"]["embedded"] == info["query"]["unique"]
    again = run_transfer(query, ref, "bulk_labels", cache=tmp_path, mode="exact", device="cpu")
    assert again.params[EMBED_CACHE]["query"]["embedded"] == 0
    assert again.params[EMBED_CACHE]["reference"]["embedded"] == 0
    assert (again.table["cell_type"] == res.table["cell_type"]).all()


def test_cache_cli_reports_and_clears(tmp_path):
    EmbeddingCache(tmp_path).store("abcd-exact", ["x", "y"], _vectors(2), meta={"model": "m", "mode": "exact"})
    cmd = [sys.executable, "-m", "napari_cellama.cli", "cache", "--dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "2 embeddings" in out and "abcd-exact" in out and "mode exact" in out
    out = subprocess.run(cmd + ["--clear"], capture_output=True, text=True, check=True).stdout
    assert "cleared" in out
    assert EmbeddingCache(tmp_path).info().entries == 0


@pytest.mark.parametrize("bad", ["", "../x", ".hidden"])
def test_bad_namespace_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        EmbeddingCache(tmp_path).store(bad, ["x"], _vectors(1))
