"""Embedding on Dask distributed workers: a real LocalCluster of 2 single-threaded processes."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from _perf_fixture import LABEL_KEY, exact_embeddings, pbmc

from napari_cellama.core import Embedder
from napari_cellama.core.cache import EmbeddingCache
from napari_cellama.core.distributed import DistributedEmbedder, parse_scheduler

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        c.wait_for_workers(2)
        yield c


def _worker_state():
    from napari_cellama.core import distributed as d

    return {"pid": os.getpid(), "embedders": len(d._WORKER_EMBEDDERS), "loads": d._LOADS}


def test_distributed_equals_single_process(client, tmp_path):
    from napari_cellama.core import knn_transfer

    sentences, labels, ref_idx, query_idx = pbmc()
    exact = exact_embeddings()  # single process, exact mode
    query = [sentences[i] for i in query_idx]  # the 350 query cells go to the workers
    emb = DistributedEmbedder(client, mode="exact", cache=tmp_path, task_sentences=64)
    stages = []
    got = emb.encode(query, callback=lambda *a: stages.append(a))
    assert got.dtype == np.float32 and got.shape == (len(query_idx), exact.shape[1])
    assert np.abs(got - exact[query_idx]).max() < 1e-5
    for k in (1, 10):
        a = knn_transfer(got, exact[ref_idx], labels[ref_idx], k=k)
        b = knn_transfer(exact[query_idx], exact[ref_idx], labels[ref_idx], k=k)
        assert (a["cell_type"].to_numpy() == b["cell_type"].to_numpy()).all()
        assert np.allclose(a["confidence"], b["confidence"], atol=1e-4)
    assert stages[-1][1] == stages[-1][2] == emb.last_stats["unique"]
    assert len({s[1] for s in stages}) >= 3  # progress arrives task by task
    state = client.run(_worker_state)
    assert len(state) == 2 and all(s["embedders"] == 1 and s["loads"] == 1 for s in state.values())
    # both workers wrote packs, in the single-process cache format, which a plain Embedder reads
    pids = {s["pid"] for s in state.values()}
    writers = {int(p.name.split("-")[1]) for p in (tmp_path / emb.cache_namespace).glob("*.keys.npy")}
    assert writers == pids
    warm = Embedder(mode="exact", cache=tmp_path, device="cpu")
    again = warm.encode(query)
    assert warm.last_stats["embedded"] == 0 and not warm.loaded and np.array_equal(again, got)
    # a second run on the same workers reuses their loaded model
    emb.encode(["Top genes are CD3E, CD2, and IL7R.", "Top gene is HBB."])
    assert all(s["loads"] == 1 for s in client.run(_worker_state).values())
    assert EmbeddingCache(tmp_path).lookup(emb.cache_namespace, ["Top gene is HBB."])[1].all()


def test_surrogate_mode_on_workers(client, tmp_path):
    """mode="surrogate" with a Dask base: exact vectors come from the workers, the map is fitted here."""
    from napari_cellama.core import EmbeddingOptions, SurrogateEmbedder, make_embedder

    sentences, _, _, query_idx = pbmc()
    exact = exact_embeddings()
    emb = make_embedder(EmbeddingOptions(mode="surrogate", scheduler=client, exact_mode="exact", cache=tmp_path,
                                         surrogate_fit=120, surrogate_check=60, device="auto"))
    assert isinstance(emb, SurrogateEmbedder) and isinstance(emb.base, DistributedEmbedder)
    emb.exact_below = 0
    query = [sentences[i] for i in query_idx]
    got = emb.encode(query)
    assert got.shape == (len(query), exact.shape[1]) and emb.last_stats["predicted"] > 0
    exact_rows = [i for i, s in enumerate(query) if EmbeddingCache(tmp_path).lookup(emb.cache_namespace, [s])[1].all()]
    assert len(exact_rows) >= 180  # fit + check sentences, embedded on the workers and cached
    assert np.abs(got[exact_rows] - exact[query_idx][exact_rows]).max() < 1e-5
    cos = np.sum(got * exact[query_idx], axis=1)
    assert cos.mean() > 0.9 and emb.last_check["n_check"] == 180  # every sampled sentence, by leave-one-out


def test_client_writes_cache_when_workers_do_not(client, tmp_path):
    sentences = pbmc()[0][:40]
    emb = DistributedEmbedder(client, mode="exact", cache=tmp_path, worker_cache=False)
    emb.encode(sentences)
    writers = {int(p.name.split("-")[1]) for p in (tmp_path / emb.cache_namespace).glob("*.keys.npy")}
    assert writers == {os.getpid()}
    assert EmbeddingCache(tmp_path).lookup(emb.cache_namespace, sentences)[1].all()


def test_cli_dask_scheduler_matches_single_process(client, tmp_path, capsys):
    import scanpy as sc

    from napari_cellama.cli import main
    from napari_cellama.io import expression_for_sentences

    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    _, _, ref_idx, query_idx = pbmc()
    adata[ref_idx[::3]].write_h5ad(tmp_path / "ref.h5ad")
    adata[query_idx[:60]].write_h5ad(tmp_path / "query.h5ad")
    base = ["transfer", str(tmp_path / "query.h5ad"), "--reference", str(tmp_path / "ref.h5ad"),
            "--label-key", LABEL_KEY, "--no-cache"]  # the default mode
    assert main(base + ["--out", str(tmp_path / "single.csv")]) == 0
    address = client.scheduler.address
    capsys.readouterr()
    assert main(base + ["--dask-scheduler", address, "--out", str(tmp_path / "dask.csv")]) == 0
    assert "onnx mode" in capsys.readouterr().err
    single = pd.read_csv(tmp_path / "single.csv", index_col=0)
    dask = pd.read_csv(tmp_path / "dask.csv", index_col=0)
    assert single.index.equals(dask.index)
    assert (single["cell_type"] == dask["cell_type"]).all()
    assert np.allclose(single["confidence"], dask["confidence"], atol=1e-4)
    assert client.status == "running"  # an existing cluster is left running
    assert main(base + ["--dask-scheduler", "local:x", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "local:N" in err[0]


def test_parse_scheduler():
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")
    with pytest.raises(ValueError):
        parse_scheduler("local:0")
