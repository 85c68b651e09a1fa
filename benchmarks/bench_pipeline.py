"""Speed of the whole annotation on a 2-core CPU, stage by stage (issue 6).

Data: the real 84,518-cell Xenium bone-marrow section (``--data``, default
``../shared/data/xenium_bone_marrow``) with scanpy's ``pbmc68k_reduced`` reference
(``bulk_labels``, its log-normalised ``.raw``), top-k 20, default k.

Stages (``--stages``, comma separated; default all):

``full``      first full annotation (read query + reference, sentences, embed reference and
              query, kNN) in the default mode, each run in a fresh process with an *empty*
              embedding cache (``NAPARI_CELLAMA_CACHE`` points at a temporary folder; the
              one-time ONNX export of the onnx/fast modes - kept in ``NAPARI_CELLAMA_ONNX_CACHE``,
              also temporary here - is done before and timed apart);
              median of ``--runs``; peak RSS of the process.
``warm``      the same run again with the persistent cache filled by ``full``.
``exact``     the full run in exact (PyTorch float32) mode, and the label agreement of every
              other full run with it.
``modes``     sentences/s of each embedding mode and batch size on a fixed sample (short
              section sentences and long 20-gene pbmc sentences), cosine to exact, label
              agreement with exact on pbmc68k (k=1 and default k), tokenisation share.
``section``   each mode on the whole section: time to embed its unique sentences, and the label
              agreement of onnx / fast with exact on all 84,518 cells (k=1 and the default k).
``sentences`` vectorised cell sentences vs a per-cell Python loop (same output checked).
``knn``       exact cosine kNN, 50,000 references, vs scikit-learn's float64 brute force.
``spatial``   spatial kNN (k=10) on 1,000,000 centroids (the section tiled) vs scikit-learn.
``recolour``  recolour / toggle of 100,000 cells in a napari Labels layer vs a per-cell
              ``DirectLabelColormap`` (needs napari and a display: run under ``xvfb-run -a``).
``scaling``   10k / 84k / 300k / 1M cells (the section tiled) through the pipeline, per stage.
``subsample`` per-type capped reference subsampling: accuracy on pbmc68k and agreement on the
              section for several caps.

Every result goes to ``--out`` (JSON) and a markdown table is printed; the load average is
recorded with each stage because the machine may be shared.

Run from the repository root::

    python benchmarks/bench_pipeline.py --quick                 # smoke run on the 4,595-cell crop
    python benchmarks/bench_pipeline.py --stages full,warm,exact # the headline numbers
    xvfb-run -a python benchmarks/bench_pipeline.py --stages recolour
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHARED = HERE.parent.parent / "shared" / "data"
if not (SHARED / "xenium_bone_marrow").exists():
    SHARED = Path("/work/shared/data")
LABEL_KEY = "bulk_labels"
TOP_K = 20
ALL_STAGES = ("full", "warm", "exact", "modes", "section", "sentences", "knn", "spatial", "recolour", "scaling",
              "subsample")


# ============================================================================ helpers
def load() -> float:
    return round(os.getloadavg()[0], 2)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        flags = open("/proc/cpuinfo").read()
        info["avx512_vnni"] = "avx512_vnni" in flags
        info["avx512_bf16"] = "avx512_bf16" in flags
        with open("/proc/meminfo") as fh:
            info["ram_gb"] = round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    import numpy
    import onnxruntime
    import torch

    info.update({"numpy": numpy.__version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                 "torch_threads": torch.get_num_threads()})
    return info


def reference():
    import scanpy as sc

    from napari_cellama.io import expression_for_sentences

    return expression_for_sentences(sc.datasets.pbmc68k_reduced())


class StageClock:
    """Progress callback that records when each pipeline stage starts and ends."""

    def __init__(self):
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.order: list[str] = []

    def __call__(self, stage, done, total):
        now = time.perf_counter()
        if stage not in self.first:
            self.first[stage] = now
            self.order.append(stage)
        self.last[stage] = now

    def durations(self, end: float) -> dict:
        out = {}
        for i, st in enumerate(self.order):
            stop = self.first[self.order[i + 1]] if i + 1 < len(self.order) else end
            out[st] = round(stop - self.first[st], 3)
        return out


def median(xs):
    return float(np.median(xs)) if len(xs) else float("nan")


def fmt_s(x) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.2f}"


# ============================================================================ child: one full annotation
def child_run(args) -> int:
    """One annotation in this (fresh) process; prints a JSON line with timings."""
    t_start = time.perf_counter()
    from napari_cellama._constants import EMBED_CACHE
    from napari_cellama.core import Embedder, run_transfer
    from napari_cellama.io import read_query

    t_import = time.perf_counter() - t_start
    t0 = time.perf_counter()
    query = read_query(args.data)
    ref = reference()
    t_read = time.perf_counter() - t0
    embedder = Embedder(mode=args.child_mode, cache=True if args.child_cache else False)
    clock = StageClock()
    t1 = time.perf_counter()
    res = run_transfer(query, ref, LABEL_KEY, top_k=TOP_K, embedder=embedder, callback=clock)
    t_end = time.perf_counter()
    res.table[["cell_type"]].to_csv(args.child_labels)
    if args.child_embeddings:
        np.save(args.child_embeddings, res.query_embeddings)
    out = {
        "mode": embedder.mode,
        "cells": int(query.n_obs),
        "import_s": round(t_import, 3),
        "read_s": round(t_read, 3),
        "transfer_s": round(t_end - t1, 3),
        "annotation_s": round(t_read + t_end - t1, 3),
        "stages": clock.durations(t_end),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cache": res.params.get(EMBED_CACHE),
        "embeddings_dtype": str(res.query_embeddings.dtype),
        "load": load(),
    }
    print("RESULT " + json.dumps(out))
    return 0


def spawn_run(data: Path, mode: str | None, cache_root: Path, labels: Path, cache: bool = True,
              embeddings: Path | None = None) -> dict:
    env = dict(os.environ)
    env["NAPARI_CELLAMA_CACHE"] = str(cache_root)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-run", "--data", str(data),
           "--child-labels", str(labels)]
    if mode:
        cmd += ["--child-mode", mode]
    if cache:
        cmd += ["--child-cache"]
    if embeddings is not None:
        cmd += ["--child-embeddings", str(embeddings)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child run failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    out["process_wall_s"] = round(wall, 3)
    return out


def clear_embeddings(cache_root: Path) -> None:
    shutil.rmtree(cache_root / "embeddings", ignore_errors=True)


# ============================================================================ stages
def stage_full(ctx) -> dict:
    """Cold (empty embedding cache) runs in the default mode; the first also saves embeddings."""
    from napari_cellama._constants import DEFAULT_EMBED_MODE
    from napari_cellama.core.embed import resolve_mode

    mode = resolve_mode(ctx.mode)
    out = {"mode": mode, "default_mode": DEFAULT_EMBED_MODE}
    if mode != "exact":  # one-time export of the ONNX graphs (per model and machine), timed apart
        from napari_cellama.core import offline_model_path
        from napari_cellama.core.fast import prepare_fast_model

        t0 = time.perf_counter()
        prepare_fast_model(offline_model_path())
        out["onnx_export_s"] = round(time.perf_counter() - t0, 2)
    runs = []
    for i in range(ctx.runs):
        clear_embeddings(ctx.cache_root)
        labels = ctx.work / f"labels_{mode}_cold_{i}.csv"
        r = spawn_run(ctx.data, mode, ctx.cache_root, labels,
                      embeddings=ctx.work / "query_embeddings.npy" if i == 0 else None)
        r["labels"] = str(labels)
        runs.append(r)
        print(f"  cold run {i + 1}: annotation {r['annotation_s']:.1f} s (process {r['process_wall_s']:.1f} s), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, stages {r['stages']}, load {r['load']}", flush=True)
    out["runs"] = runs
    out["annotation_s_median"] = median([r["annotation_s"] for r in runs])
    out["process_wall_s_median"] = median([r["process_wall_s"] for r in runs])
    out["peak_rss_mb_max"] = max(r["peak_rss_mb"] for r in runs)
    ctx.results["full"] = out
    return out


def stage_warm(ctx) -> dict:
    from napari_cellama.core.embed import resolve_mode

    mode = resolve_mode(ctx.mode)
    if not (ctx.cache_root / "embeddings").exists():
        print("  (cache empty: filling it with one cold run first)")
        spawn_run(ctx.data, mode, ctx.cache_root, ctx.work / "labels_fill.csv")
    runs = []
    for i in range(ctx.runs):
        labels = ctx.work / f"labels_{mode}_warm_{i}.csv"
        r = spawn_run(ctx.data, mode, ctx.cache_root, labels)
        r["labels"] = str(labels)
        runs.append(r)
        print(f"  warm run {i + 1}: annotation {r['annotation_s']:.1f} s (process {r['process_wall_s']:.1f} s), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, stages {r['stages']}", flush=True)
    out = {"mode": mode, "runs": runs,
           "annotation_s_median": median([r["annotation_s"] for r in runs]),
           "process_wall_s_median": median([r["process_wall_s"] for r in runs]),
           "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs)}
    ctx.results["warm"] = out
    return out


def agreement(a: Path, b: Path) -> float:
    x = pd.read_csv(a, index_col=0)["cell_type"]
    y = pd.read_csv(b, index_col=0)["cell_type"].reindex(x.index)
    return float((x.astype(str).to_numpy() == y.astype(str).to_numpy()).mean())


def stage_exact(ctx) -> dict:
    root = ctx.work / "exact-cache"
    runs = []
    for i in range(ctx.exact_runs):
        shutil.rmtree(root, ignore_errors=True)
        labels = ctx.work / f"labels_exact_{i}.csv"
        r = spawn_run(ctx.data, "exact", root, labels)
        r["labels"] = str(labels)
        runs.append(r)
        print(f"  exact run {i + 1}: annotation {r['annotation_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"stages {r['stages']}", flush=True)
    out = {"runs": runs, "annotation_s_median": median([r["annotation_s"] for r in runs]),
           "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs)}
    ref = Path(runs[0]["labels"])
    agree = {}
    for key in ("full", "warm"):
        for r in ctx.results.get(key, {}).get("runs", []):
            agree.setdefault(key, []).append(agreement(ref, Path(r["labels"])))
    out["agreement"] = agree
    if agree:
        print(f"  label agreement with exact: {agree}")
    ctx.results["exact"] = out
    return out


def stage_modes(ctx) -> dict:
    """Throughput and fidelity of each embedding mode on fixed samples."""
    from sklearn.model_selection import train_test_split

    from napari_cellama.core import Embedder, adata_sentences, cell_sentences, knn_transfer, shared_panel
    from napari_cellama.io import read_query

    os.environ["NAPARI_CELLAMA_CACHE"] = str(ctx.cache_root)
    query = read_query(ctx.data)
    ref = reference()
    q, r, _ = shared_panel(query, ref, TOP_K)
    section = pd.unique(pd.Series(cell_sentences(q.X, list(q.var_names), TOP_K)))
    rng = np.random.default_rng(0)
    short = [str(s) for s in rng.choice(section, size=min(ctx.mode_sample, len(section)), replace=False)]
    pbmc = adata_sentences(ref, TOP_K)  # all 765 genes: full 20-gene sentences
    labels = ref.obs[LABEL_KEY].astype(str).to_numpy()
    ref_idx, query_idx = train_test_split(np.arange(len(pbmc)), test_size=0.5, random_state=0, stratify=labels)
    long = list(pbmc[: ctx.mode_sample // 4])
    out = {"short_sentences": len(short), "long_sentences": len(long), "rows": []}
    emb_exact = {}
    embedders = {m: Embedder(mode=m, device="cpu") for m in ("exact", "onnx", "fast")}
    for e in embedders.values():
        e.load()
    tok = embedders["onnx"]._fast
    n_tok_short = np.mean([sum(x.attention_mask) for x in tok.tokenizer.encode_batch(short)])
    n_tok_long = np.mean([sum(x.attention_mask) for x in tok.tokenizer.encode_batch(long)])
    out["tokens_short_mean"], out["tokens_long_mean"] = float(n_tok_short), float(n_tok_long)
    for name, data in (("short", short), ("long", long)):
        for bs in ctx.batch_sizes:
            for m, e in embedders.items():
                e.batch_size = bs
                e.encode_batch(data[:bs])  # warm-up
                t0 = time.perf_counter()
                v = e.encode(data)
                dt = time.perf_counter() - t0
                if m == "exact" and bs == ctx.batch_sizes[0]:
                    emb_exact[name] = v
                cos = np.sum(v * emb_exact[name], axis=1)
                row = {"sentences": name, "batch": bs, "mode": m, "per_s": len(data) / dt,
                       "cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "load": load()}
                out["rows"].append(row)
                print(f"  {name:5s} batch {bs:3d} {m:5s}: {row['per_s']:7.1f} sentences/s, cos to exact min "
                      f"{row['cos_min']:.5f} mean {row['cos_mean']:.5f} (load {row['load']})", flush=True)
    # tokenisation share (what a per-gene token-id cache could save at most)
    t0 = time.perf_counter()
    tok.tokenize(list(section))
    t_tok = time.perf_counter() - t0
    out["tokenize_section_unique_s"] = t_tok
    out["section_unique_sentences"] = len(section)
    # label agreement with exact on pbmc68k (stratified 50/50, seed 0)
    agree = {}
    full = {}
    for m, e in embedders.items():
        e.batch_size = 64
        full[m] = e.encode(pbmc)
    for m in ("onnx", "fast"):
        for k in (1, 10):
            a = knn_transfer(full[m][query_idx], full[m][ref_idx], labels[ref_idx], k=k)["cell_type"].to_numpy()
            b = knn_transfer(full["exact"][query_idx], full["exact"][ref_idx], labels[ref_idx], k=k)["cell_type"].to_numpy()
            agree[f"{m}_k{k}"] = float((a == b).mean())
        acc = knn_transfer(full[m][query_idx], full[m][ref_idx], labels[ref_idx], k=10)["cell_type"].to_numpy()
        agree[f"{m}_accuracy_k10"] = float((acc == labels[query_idx]).mean())
    acc = knn_transfer(full["exact"][query_idx], full["exact"][ref_idx], labels[ref_idx], k=10)["cell_type"].to_numpy()
    agree["exact_accuracy_k10"] = float((acc == labels[query_idx]).mean())
    out["pbmc_agreement"] = agree
    print(f"  pbmc68k label agreement with exact: {agree}")
    print(f"  tokenising the section's {len(section):,} unique sentences: {t_tok:.2f} s "
          f"(mean {n_tok_short:.1f} tokens; long pbmc sentences {n_tok_long:.1f} tokens)")
    ctx.results["modes"] = out
    return out


def stage_section(ctx) -> dict:
    """Every mode on the whole section: time to embed its unique sentences, label agreement with exact."""
    from napari_cellama.core import Embedder, cell_sentences, knn_transfer, shared_panel
    from napari_cellama.io import read_query

    query = read_query(ctx.data)
    ref = reference()
    q, r, _ = shared_panel(query, ref, TOP_K)
    genes = list(q.var_names)
    codes, uniq = pd.factorize(pd.Series(cell_sentences(q.X, genes, TOP_K)))
    uniq = [str(x) for x in uniq]
    ref_s = cell_sentences(r.X, genes, TOP_K)
    labels = r.obs[LABEL_KEY].astype(str).to_numpy()
    out = {"cells": int(query.n_obs), "unique_sentences": len(uniq), "rows": []}
    result = {}
    for mode in ("exact", "onnx", "fast"):
        emb = Embedder(mode=mode, device="cpu", cache=ctx.work / f"section-cache-{mode}")
        emb.load()
        t0 = time.perf_counter()
        ue = emb.encode(uniq)
        t_q = time.perf_counter() - t0
        re = emb.encode(ref_s)
        result[mode] = {k: knn_transfer(ue, re, labels, k=k)["cell_type"].to_numpy()[codes] for k in (1, 10)}
        row = {"mode": mode, "embed_unique_s": t_q, "per_s": len(uniq) / t_q, "load": load()}
        if mode != "exact":
            for k in (1, 10):
                row[f"agreement_k{k}"] = float((result[mode][k] == result["exact"][k]).mean())
        out["rows"].append(row)
        print(f"  {mode}: {len(uniq):,} unique section sentences in {t_q:.1f} s ({row['per_s']:.1f}/s); "
              + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("agreement")), flush=True)
    ctx.results["section"] = out
    return out


def stage_sentences(ctx) -> dict:
    from bench_sentences import naive_sentences

    from napari_cellama.core import cell_sentences
    from napari_cellama.io import read_query

    adata = read_query(ctx.data)
    genes = list(adata.var_names)
    x1 = sp.csr_matrix(adata.X, dtype=np.float32)
    copies = max(1, ctx.sentence_cells // x1.shape[0])
    x = sp.vstack([x1] * copies, format="csr") if copies > 1 else x1
    times = []
    for _ in range(ctx.runs):
        t0 = time.perf_counter()
        s = cell_sentences(x, genes, TOP_K)
        times.append(time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(x1.shape[0], size=min(ctx.naive_cells, x1.shape[0]), replace=False))
    t0 = time.perf_counter()
    naive = naive_sentences(x1[pick], genes, TOP_K)
    t_naive = time.perf_counter() - t0
    identical = naive == [s[i] for i in pick]
    out = {"cells": x.shape[0], "genes": len(genes), "seconds_median": median(times),
           "cells_per_s": x.shape[0] / median(times), "naive_cells": len(pick),
           "naive_cells_per_s": len(pick) / t_naive, "identical": bool(identical), "load": load()}
    out["ratio"] = out["cells_per_s"] / out["naive_cells_per_s"]
    print(f"  vectorised: {out['cells_per_s']:,.0f} cells/s ({x.shape[0]:,} cells x {len(genes)} genes); per-cell "
          f"Python: {out['naive_cells_per_s']:,.0f} cells/s; ratio {out['ratio']:.0f}x; identical: {identical}")
    ctx.results["sentences"] = out
    return out


def _embeddings_for_knn(ctx, n_needed: int):
    path = ctx.work / "query_embeddings.npy"
    if path.exists():
        e = np.load(path)
        if len(e) >= n_needed:
            return e, "section query embeddings (default mode)"
        reps = int(np.ceil(n_needed / len(e)))
        return np.tile(e, (reps, 1))[:n_needed], "section query embeddings (default mode), repeated"
    rng = np.random.default_rng(0)
    e = rng.standard_normal((n_needed, 384)).astype(np.float32)
    return e, "random Gaussian vectors (no section embeddings found; run --stages full first)"


def knn_argpartition(query: np.ndarray, reference: np.ndarray, k: int, chunk: int = 4096):
    """The straightforward exact cosine kNN: a float32 GEMM per block, ``np.argpartition`` per row.

    Same contract as :func:`napari_cellama.core.cosine_knn` (it was its implementation until
    the top-k moved to ``torch.topk``): ``argpartition`` materialises a full ``(rows,
    references)`` int64 array and costs several times the GEMM itself on this machine.
    """
    from napari_cellama.core.transfer import _sort_rows, l2_normalise

    q, r = l2_normalise(query), l2_normalise(reference)
    n = len(q)
    idx = np.empty((n, k), dtype=np.int64)
    sim = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, chunk):
        s = q[start : start + chunk] @ r.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        v = np.take_along_axis(s, part, axis=1)
        order = _sort_rows(v, part)
        idx[start : start + chunk] = np.take_along_axis(part, order, axis=1)
        sim[start : start + chunk] = np.take_along_axis(v, order, axis=1)
    return idx, sim


def stage_knn(ctx) -> dict:
    from sklearn.neighbors import NearestNeighbors

    from napari_cellama.core import cosine_knn

    n_ref, n_query = ctx.knn_refs, ctx.knn_queries
    emb, source = _embeddings_for_knn(ctx, n_ref + n_query)
    ref, query = emb[:n_ref], emb[n_ref : n_ref + n_query]
    times = []
    for _ in range(ctx.runs):
        t0 = time.perf_counter()
        idx, sim = cosine_knn(query, ref, 10)
        times.append(time.perf_counter() - t0)
    times_naive = []
    for _ in range(ctx.runs):
        t0 = time.perf_counter()
        idx2, sim2 = knn_argpartition(query, ref, 10)
        times_naive.append(time.perf_counter() - t0)
    n_sk = min(ctx.knn_naive_queries, n_query)
    t0 = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(ref.astype(np.float64))
    dist, sk_idx = nn.kneighbors(query[:n_sk].astype(np.float64))
    t_sk = time.perf_counter() - t0
    same = float(np.abs(np.sort(1 - dist, axis=1)[:, ::-1] - sim[:n_sk]).max())
    out = {"references": n_ref, "queries": n_query, "source": source, "seconds_median": median(times),
           "queries_per_s": n_query / median(times), "sklearn_queries": n_sk, "sklearn_queries_per_s": n_sk / t_sk,
           "max_similarity_difference": same, "load": load(),
           "argpartition_queries_per_s": n_query / median(times_naive),
           "argpartition_max_similarity_difference": float(np.abs(sim2 - sim).max()),
           "argpartition_same_neighbours": float((idx2 == idx).all(axis=1).mean())}
    out["ratio"] = out["queries_per_s"] / out["argpartition_queries_per_s"]
    out["sklearn_ratio"] = out["queries_per_s"] / out["sklearn_queries_per_s"]
    print(f"  cosine_knn (GEMM + torch.topk): {out['queries_per_s']:,.0f} queries/s against {n_ref:,} references "
          f"(k=10); straightforward GEMM + np.argpartition: {out['argpartition_queries_per_s']:,.0f} queries/s "
          f"(ratio {out['ratio']:.1f}x, same neighbours for {out['argpartition_same_neighbours']:.2%} of queries, "
          f"max |similarity difference| {out['argpartition_max_similarity_difference']:.1e}); sklearn float64 brute: "
          f"{out['sklearn_queries_per_s']:,.0f} queries/s (ratio {out['sklearn_ratio']:.1f}x, max |similarity "
          f"difference| {same:.2e}); {source}")
    ctx.results["knn"] = out
    return out


def tiled_centroids(data: Path, n: int) -> np.ndarray:
    from napari_cellama.io import read_query

    q = read_query(data)
    xy = np.asarray(q.obsm["spatial"], dtype=np.float64)
    span = xy.max(axis=0) - xy.min(axis=0) + 50.0
    reps = int(np.ceil(n / len(xy)))
    side = int(np.ceil(np.sqrt(reps)))
    tiles = [xy + span * np.array([i % side, i // side]) for i in range(reps)]
    return np.vstack(tiles)[:n]


def stage_spatial(ctx) -> dict:
    from sklearn.neighbors import NearestNeighbors

    from napari_cellama.core import spatial_neighbors

    xy = tiled_centroids(ctx.data, ctx.spatial_points)
    times = []
    for _ in range(ctx.runs):
        t0 = time.perf_counter()
        nb = spatial_neighbors(xy, k=10)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=11).fit(xy)
    dist, _ = nn.kneighbors(xy)
    t_sk = time.perf_counter() - t0
    ours = np.asarray(nb.distances).reshape(len(xy), -1)
    diff = float(np.abs(np.sort(ours, axis=1) - dist[:, 1:]).max())
    out = {"points": len(xy), "seconds_median": median(times), "sklearn_seconds": t_sk,
           "ratio": t_sk / median(times), "max_distance_difference": diff, "load": load()}
    print(f"  spatial_neighbors k=10 on {len(xy):,} points: {out['seconds_median']:.2f} s; sklearn "
          f"NearestNeighbors: {t_sk:.2f} s; ratio {out['ratio']:.1f}x; max |distance difference| {diff:.1e}")
    ctx.results["spatial"] = out
    return out


def stage_recolour(ctx) -> dict:
    """napari Labels layer with 100k cells: per-category LUT layer vs a per-cell DirectLabelColormap."""
    try:
        import napari
        from qtpy.QtWidgets import QApplication
    except Exception as err:  # noqa: BLE001
        print(f"  skipped: napari not importable ({err})")
        return {}
    from napari.utils.colormaps import DirectLabelColormap

    from napari_cellama import layers as L
    from napari_cellama._constants import CELL_ID, LAYER_META
    from napari_cellama.core.palette import category_colors

    n = ctx.recolour_cells
    side_x = int(np.ceil(np.sqrt(n * 1.6)))
    side_y = int(np.ceil(n / side_x))
    cell = 8  # px per cell side
    gy, gx = np.mgrid[0 : side_y * cell, 0 : side_x * cell]
    labels = ((gy // cell) * side_x + (gx // cell) + 1).astype(np.int32)
    labels[labels > n] = 0
    ids = np.array([f"cell{i}" for i in range(1, n + 1)], dtype=object)
    feats = pd.DataFrame({"index": np.arange(1, n + 1), CELL_ID: ids})
    rng = np.random.default_rng(0)
    types = np.array([f"type {i}" for i in range(12)])
    cats = types[rng.integers(0, len(types), n)]
    new_cats = types[rng.integers(0, len(types), n)]
    viewer = napari.Viewer(show=True)
    cells = viewer.add_labels(labels, name="cells", features=feats,
                              metadata={LAYER_META: {"kind": "cells", "xenium_root": None, "pixel_size": 1.0}})
    data, kwargs, _ = L.cell_categories_layer_data(cells, ids, cats)
    layer = viewer.add_labels(data, **kwargs)
    app = QApplication.instance()

    def render():
        app.processEvents()
        return viewer.screenshot(canvas_only=True)

    render()
    base = []
    for _ in range(ctx.runs):
        t0 = time.perf_counter()
        render()
        base.append(time.perf_counter() - t0)
    t_render = median(base)

    def timed(fn):
        """Median seconds of change + redraw over runs, and whether the picture changed each time."""
        ts, changed = [], []
        for i in range(ctx.runs):
            before = render()
            t0 = time.perf_counter()
            fn(i)
            after = render()
            ts.append(time.perf_counter() - t0)
            changed.append(bool((before != after).any()))
        return median(ts), all(changed)

    t_toggle, ok_toggle = timed(lambda i: L.set_category_colors(layer, hidden={types[i % len(types)]}))
    code_of = pd.Index(layer.metadata[LAYER_META]["categories"])  # sorted categories: codes 1..K
    codes = [code_of.get_indexer(c) + 1 for c in (cats, new_cats)]  # cell i has label i + 1

    def recategorise(i):  # every cell a new category: rewrite the label -> code table in place
        L.lookup_table(layer)[1 : n + 1] = codes[i % 2 == 0]
        layer.refresh()

    t_recolour, ok_recolour = timed(recategorise)
    palette = np.asarray(list(category_colors(list(types)).values()), dtype=np.float32)
    code = pd.Index(types).get_indexer(cats)
    layer.visible = False

    def naive(i):
        cols = palette[code].copy()
        cols[code == (i % len(types)), 3] = 0  # hide one type
        cells.colormap = DirectLabelColormap(
            color_dict={**dict(zip(range(1, n + 1), cols)), 0: np.zeros(4), None: np.zeros(4)})

    t_naive, ok_naive = timed(naive)
    viewer.close()
    out = {"cells": n, "image_px": list(labels.shape), "render_s": t_render, "toggle_s": t_toggle,
           "recolour_all_s": t_recolour, "direct_colormap_s": t_naive,
           "picture_changed": {"toggle": ok_toggle, "recolour": ok_recolour, "direct": ok_naive},
           "ratio_toggle": t_naive / t_toggle, "ratio_recolour": t_naive / t_recolour, "load": load()}
    print(f"  {n:,} cells ({labels.shape[1]}x{labels.shape[0]} px), times include the redraw (a redraw alone: "
          f"{t_render:.3f} s): toggle a type {t_toggle:.3f} s, recolour every cell {t_recolour:.3f} s; per-cell "
          f"DirectLabelColormap {t_naive:.3f} s; ratios {out['ratio_toggle']:.0f}x / {out['ratio_recolour']:.0f}x; "
          f"picture changed: {out['picture_changed']}")
    ctx.results["recolour"] = out
    return out


def tile_query(query, n: int):
    """``n`` cells made of copies of ``query`` (ids suffixed, centroids shifted)."""
    import anndata as ad

    reps = int(np.ceil(n / query.n_obs))
    if reps == 1:
        return query[:n].copy()
    x = sp.vstack([sp.csr_matrix(query.X)] * reps, format="csr")[:n]
    ids = np.concatenate([query.obs_names.to_numpy().astype(str) + (f"-t{i}" if i else "") for i in range(reps)])[:n]
    xy = np.asarray(query.obsm["spatial"], dtype=np.float64)
    span = xy.max(axis=0) - xy.min(axis=0) + 50.0
    side = int(np.ceil(np.sqrt(reps)))
    coords = np.vstack([xy + span * np.array([i % side, i // side]) for i in range(reps)])[:n]
    out = ad.AnnData(X=x, obs=pd.DataFrame(index=pd.Index(ids, name=query.obs_names.name)), var=query.var.copy())
    out.obsm["spatial"] = coords
    return out


def stage_scaling(ctx) -> dict:
    from napari_cellama.core import Embedder, run_transfer, spatial_neighbors
    from napari_cellama.io import read_query

    os.environ["NAPARI_CELLAMA_CACHE"] = str(ctx.cache_root)
    t0 = time.perf_counter()
    query = read_query(ctx.data)
    t_read = time.perf_counter() - t0
    ref = reference()
    # the reference is embedded once into a seed cache that every size starts from, so that
    # "empty cache" below means: no query sentence cached (except those of the 3 seed cells)
    seed = ctx.work / "scaling-seed-cache"
    shutil.rmtree(seed, ignore_errors=True)
    run_transfer(query[:3].copy(), ref, LABEL_KEY, top_k=TOP_K, embedder=Embedder(mode=ctx.mode, cache=seed))
    rows = []
    for n in ctx.scaling_sizes:
        t0 = time.perf_counter()
        q = tile_query(query, n)
        t_tile = time.perf_counter() - t0
        row = {"cells": n, "read_s": t_read if n == query.n_obs else None,
               "tile_s": t_tile if n != query.n_obs else None}
        for label, cache_dir in (("cold", ctx.work / f"scaling-cache-{n}"), ("warm", ctx.work / f"scaling-cache-{n}")):
            if label == "cold":
                shutil.rmtree(cache_dir, ignore_errors=True)
                shutil.copytree(seed, cache_dir)
                if not ctx.scaling_cold and n > query.n_obs:
                    continue
            emb = Embedder(mode=ctx.mode, cache=cache_dir)
            clock = StageClock()
            t1 = time.perf_counter()
            res = run_transfer(q, ref, LABEL_KEY, top_k=TOP_K, embedder=emb, callback=clock)
            t_end = time.perf_counter()
            d = clock.durations(t_end)
            st = res.params["embedding_cache"]["query"]
            row[f"{label}_total_s"] = round(t_end - t1, 2)
            row[f"{label}_embed_query_s"] = d.get("embedding query")
            row["sentences_s"] = d.get("sentences")
            row["knn_s"] = d.get("kNN")
            row["unique_sentences"] = st["unique"]
            row[f"{label}_embedded"] = st["embedded"]
            del res
        xy = np.asarray(q.obsm["spatial"])
        t1 = time.perf_counter()
        spatial_neighbors(xy, k=10)
        row["spatial_knn_s"] = round(time.perf_counter() - t1, 2)
        row["peak_rss_mb_so_far"] = round(peak_rss_mb(), 0)
        row["load"] = load()
        rows.append(row)
        print(f"  {n:>9,} cells: {row}", flush=True)
        shutil.rmtree(ctx.work / f"scaling-cache-{n}", ignore_errors=True)
        del q
    ctx.results["scaling"] = {"mode": Embedder(mode=ctx.mode).mode, "rows": rows}
    return ctx.results["scaling"]


def stage_subsample(ctx) -> dict:
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    from napari_cellama.core import Embedder, adata_sentences, cell_sentences, knn_transfer, shared_panel
    from napari_cellama.core.subsample import capped_indices
    from napari_cellama.io import read_query

    os.environ["NAPARI_CELLAMA_CACHE"] = str(ctx.cache_root)
    ref = reference()
    labels = ref.obs[LABEL_KEY].astype(str).to_numpy()
    emb = Embedder(mode="exact", cache=True)
    e = emb.encode(adata_sentences(ref, TOP_K))
    ref_idx, query_idx = train_test_split(np.arange(len(labels)), test_size=0.5, random_state=0, stratify=labels)
    # section: the query's unique sentences embedded in the default mode (cached by the full stage)
    query = read_query(ctx.data)
    q, r, _ = shared_panel(query, ref, TOP_K)
    sec_emb = Embedder(mode=ctx.mode, cache=True)
    sq = sec_emb.encode(cell_sentences(q.X, list(q.var_names), TOP_K))
    sr = sec_emb.encode(cell_sentences(r.X, list(q.var_names), TOP_K))
    base_sec = knn_transfer(sq, sr, labels, k=10)["cell_type"].to_numpy()
    base_pbmc = knn_transfer(e[query_idx], e[ref_idx], labels[ref_idx], k=10)["cell_type"].to_numpy()
    rows = []
    counts = pd.Series(labels[ref_idx]).value_counts()
    for cap in ctx.caps:
        keep = ref_idx if cap is None else ref_idx[capped_indices(labels[ref_idx], cap)]
        pred = knn_transfer(e[query_idx], e[keep], labels[keep], k=min(10, len(keep)))["cell_type"].to_numpy()
        keep_sec = np.arange(len(labels)) if cap is None else capped_indices(labels, cap)
        sec = knn_transfer(sq, sr[keep_sec], labels[keep_sec], k=min(10, len(keep_sec)))["cell_type"].to_numpy()
        row = {"cap": cap, "reference_cells": int(len(keep)),
               "accuracy": float((pred == labels[query_idx]).mean()),
               "macro_f1": float(f1_score(labels[query_idx], pred, average="macro")),
               "pbmc_agreement_with_uncapped": float((pred == base_pbmc).mean()),
               "section_reference_cells": int(len(keep_sec)),
               "section_agreement_with_uncapped": float((sec == base_sec).mean())}
        rows.append(row)
        print(f"  cap {cap}: {row}")
    out = {"largest_type_in_reference_half": int(counts.max()), "types": int(len(counts)), "rows": rows}
    ctx.results["subsample"] = out
    return out


# ============================================================================ report
def table(ctx) -> str:
    R = ctx.results
    lines = ["| measurement | value | target | straightforward | ratio | load |", "|---|---|---|---|---|---|"]
    if "full" in R:
        f = R["full"]
        lines.append(f"| first full annotation, {f['mode']} mode, empty cache (median of {len(f['runs'])}) | "
                     f"{f['annotation_s_median']:.1f} s (process {f['process_wall_s_median']:.1f} s) | <= 600 s | | | "
                     f"{'/'.join(str(r['load']) for r in f['runs'])} |")
        lines.append(f"| peak RSS, first annotation | {f['peak_rss_mb_max']:.0f} MB | <= 4096 MB | | | |")
        if "onnx_export_s" in f:
            lines.append(f"| one-time ONNX export + quantisation (per model and machine) | {f['onnx_export_s']:.1f} s | | | | |")
    if "warm" in R:
        w = R["warm"]
        lines.append(f"| same run, warm cache (median of {len(w['runs'])}) | {w['annotation_s_median']:.1f} s "
                     f"(process {w['process_wall_s_median']:.1f} s) | <= 30 s | | | "
                     f"{'/'.join(str(r['load']) for r in w['runs'])} |")
    if "exact" in R:
        x = R["exact"]
        lines.append(f"| first full annotation, exact mode ({len(x['runs'])} run(s)) | {x['annotation_s_median']:.1f} s | | | | "
                     f"{'/'.join(str(r['load']) for r in x['runs'])} |")
        for key, vals in x.get("agreement", {}).items():
            lines.append(f"| label agreement with exact ({key} runs) | {min(vals) * 100:.2f} % (min) | >= 99 % | | | |")
    if "sentences" in R:
        s = R["sentences"]
        lines.append(f"| sentences, {s['cells']:,} cells x {s['genes']} genes | {s['cells_per_s']:,.0f} cells/s | "
                     f">= 300,000 | {s['naive_cells_per_s']:,.0f} cells/s | {s['ratio']:.0f}x | {s['load']} |")
    if "knn" in R:
        k = R["knn"]
        lines.append(f"| exact cosine kNN (k=10), {k['references']:,} references: core.cosine_knn (GEMM + torch.topk) | "
                     f"{k['queries_per_s']:,.0f} queries/s | >= 3,000 | GEMM + np.argpartition "
                     f"{k['argpartition_queries_per_s']:,.0f} queries/s | {k['ratio']:.1f}x | {k['load']} |")
        lines.append(f"| same vs scikit-learn float64 brute force | {k['queries_per_s']:,.0f} queries/s | | "
                     f"{k['sklearn_queries_per_s']:,.0f} queries/s | {k['sklearn_ratio']:.1f}x | {k['load']} |")
    if "spatial" in R:
        s = R["spatial"]
        lines.append(f"| spatial neighbours, {s['points']:,} points, k=10 | {s['seconds_median']:.2f} s | <= 5 s | "
                     f"{s['sklearn_seconds']:.2f} s | {s['ratio']:.1f}x | {s['load']} |")
    if R.get("recolour"):
        c = R["recolour"]
        lines.append(f"| toggle a type, {c['cells']:,} cells (napari) | {c['toggle_s']:.3f} s | <= 0.2 s | "
                     f"{c['direct_colormap_s']:.3f} s | {c['ratio_toggle']:.0f}x | {c['load']} |")
        lines.append(f"| recolour every cell, {c['cells']:,} cells (napari) | {c['recolour_all_s']:.3f} s | <= 0.2 s | "
                     f"{c['direct_colormap_s']:.3f} s | {c['ratio_recolour']:.0f}x | {c['load']} |")
    out = "\n".join(lines)
    if "scaling" in R:
        out += "\n\nScaling (" + R["scaling"]["mode"] + " mode; the section tiled beyond 84,518 cells):\n\n"
        out += ("| cells | unique sentences | read (real section) or tile/subset s | sentences s | embed query, empty cache s | "
                "embed query, warm cache s | kNN s | spatial kNN s | total, empty cache s | total, warm s |\n")
        out += "|---|---|---|---|---|---|---|---|---|---|\n"
        for r in R["scaling"]["rows"]:
            rt = r["read_s"] if r["read_s"] is not None else r["tile_s"]
            out += (f"| {r['cells']:,} | {r['unique_sentences']:,} | {fmt_s(rt)} | {fmt_s(r.get('sentences_s'))} | "
                    f"{fmt_s(r.get('cold_embed_query_s'))} | {fmt_s(r.get('warm_embed_query_s'))} | "
                    f"{fmt_s(r.get('knn_s'))} | {fmt_s(r.get('spatial_knn_s'))} | {fmt_s(r.get('cold_total_s'))} | "
                    f"{fmt_s(r.get('warm_total_s'))} |\n")
    if "modes" in R:
        m = R["modes"]
        out += ("\n\nEmbedding modes (sentences/s; cosine to exact):\n\n| sentences | batch | exact | onnx | fast | "
                "onnx cos min | fast cos min |\n|---|---|---|---|---|---|---|\n")
        df = pd.DataFrame(m["rows"])
        for (name, bs), g in df.groupby(["sentences", "batch"], sort=False):
            v = g.set_index("mode")
            out += (f"| {name} ({m['tokens_' + name + '_mean']:.0f} tokens) | {bs} | {v.loc['exact', 'per_s']:.1f} | "
                    f"{v.loc['onnx', 'per_s']:.1f} | {v.loc['fast', 'per_s']:.1f} | {v.loc['onnx', 'cos_min']:.6f} | "
                    f"{v.loc['fast', 'cos_min']:.4f} |\n")
        a = m["pbmc_agreement"]
        out += (f"\npbmc68k label agreement with exact: onnx {a['onnx_k1'] * 100:.1f} % (k=1), "
                f"{a['onnx_k10'] * 100:.1f} % (k=10); fast {a['fast_k1'] * 100:.1f} % (k=1), {a['fast_k10'] * 100:.1f} % "
                f"(k=10). Accuracy (k=10): exact {a['exact_accuracy_k10']:.3f}, onnx {a['onnx_accuracy_k10']:.3f}, "
                f"fast {a['fast_accuracy_k10']:.3f}.\n")
    if "section" in R:
        s = R["section"]
        out += (f"\n\nEach mode on the whole section ({s['cells']:,} cells, {s['unique_sentences']:,} unique sentences; "
                "labels with the pbmc68k reference):\n\n| mode | embed unique sentences s | sentences/s | "
                "agreement with exact, k=1 | agreement with exact, k=10 |\n|---|---|---|---|---|\n")
        for r in s["rows"]:
            a1 = f"{r['agreement_k1'] * 100:.2f} %" if "agreement_k1" in r else "-"
            a10 = f"{r['agreement_k10'] * 100:.2f} %" if "agreement_k10" in r else "-"
            out += f"| {r['mode']} | {r['embed_unique_s']:.1f} | {r['per_s']:.1f} | {a1} | {a10} |\n"
    if "subsample" in R:
        s = R["subsample"]
        out += ("\n\nPer-type capped reference (pbmc68k 50/50 split, exact embeddings, k=10):\n\n"
                "| cap per type | reference cells | accuracy | macro-F1 | agreement with no cap | section: agreement with no cap |\n"
                "|---|---|---|---|---|---|\n")
        for r in s["rows"]:
            out += (f"| {r['cap'] or 'none'} | {r['reference_cells']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
                    f"{r['pbmc_agreement_with_uncapped'] * 100:.1f} % | {r['section_agreement_with_uncapped'] * 100:.1f} % |\n")
    return out


class Ctx:
    pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=SHARED / "xenium_bone_marrow")
    p.add_argument("--stages", default=",".join(ALL_STAGES), help=f"comma separated, from {', '.join(ALL_STAGES)}")
    p.add_argument("--mode", default=None, help="embedding mode of the full / warm / scaling stages (default: the package default)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--exact-runs", type=int, default=1)
    p.add_argument("--recolour-cells", type=int, default=None, help="cells of the recolour stage (default 100,000)")
    p.add_argument("--quick", action="store_true", help="smoke run: the 4,595-cell crop, 1 run, small sizes")
    p.add_argument("--work", type=Path, default=None, help="folder for caches and labels (default: a temporary one)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "bench_pipeline.json")
    # child mode (internal)
    p.add_argument("--child-run", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-mode", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-cache", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-labels", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-embeddings", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_run:
        return child_run(args)

    ctx = Ctx()
    ctx.data = args.data
    ctx.mode = args.mode
    ctx.runs = args.runs
    ctx.exact_runs = args.exact_runs
    ctx.batch_sizes = (32, 64, 128)
    ctx.mode_sample = 1024
    ctx.sentence_cells = 338_072
    ctx.naive_cells = 20_000
    ctx.knn_refs, ctx.knn_queries, ctx.knn_naive_queries = 50_000, 34_518, 5_000
    ctx.spatial_points = 1_000_000
    ctx.recolour_cells = 100_000
    ctx.scaling_sizes = (10_000, 84_518, 300_000, 1_000_000)
    ctx.scaling_cold = True
    ctx.caps = (5, 10, 20, 40, 80, None)
    if args.quick:
        ctx.data = args.data if args.data != SHARED / "xenium_bone_marrow" else SHARED / "xenium_bone_marrow_crop"
        ctx.runs = 1
        ctx.batch_sizes = (64,)
        ctx.mode_sample = 128
        ctx.sentence_cells = 20_000
        ctx.naive_cells = 2_000
        ctx.knn_refs, ctx.knn_queries, ctx.knn_naive_queries = 3_000, 1_500, 500
        ctx.spatial_points = 50_000
        ctx.recolour_cells = 10_000
        ctx.scaling_sizes = (1_000, 4_595, 10_000)
        ctx.caps = (10, None)
    if args.recolour_cells:
        ctx.recolour_cells = args.recolour_cells
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in ALL_STAGES]
    if bad:
        p.error(f"unknown stage(s) {bad}; choose from {', '.join(ALL_STAGES)}")
    tmp = None
    if args.work is None:
        tmp = Path(tempfile.mkdtemp(prefix="cellama-bench-"))
        ctx.work = tmp
    else:
        ctx.work = args.work
        ctx.work.mkdir(parents=True, exist_ok=True)
    ctx.cache_root = ctx.work / "cache-root"
    # every stage and child process: embeddings and ONNX exports in the work folder only
    os.environ["NAPARI_CELLAMA_CACHE"] = str(ctx.cache_root)
    os.environ["NAPARI_CELLAMA_ONNX_CACHE"] = str(ctx.work / "onnx-models")
    ctx.results = {}
    info = machine()
    print(f"machine: {info.get('cpu')}, {info['cpus']} CPUs, {info.get('ram_gb')} GB RAM; torch {info['torch']}, "
          f"onnxruntime {info['onnxruntime']}; load average {load()}; data {ctx.data}", flush=True)
    t_all = time.perf_counter()
    try:
        for st in stages:
            print(f"\n[{st}] (load {load()})", flush=True)
            globals()[f"stage_{st}"](ctx)
    finally:
        report = {"machine": info, "data": str(ctx.data), "quick": args.quick, "stages": stages,
                  "seconds": round(time.perf_counter() - t_all, 1), "results": ctx.results,
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
        print("\n" + table(ctx))
        print(f"\nwrote {args.out}")
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
