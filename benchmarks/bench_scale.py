"""A whole slide on a laptop CPU: the surrogate embedding mode at scale, checked against exact (issue 15).

Data: the real 84,518-cell Xenium bone-marrow section (``--data``) with the realistic
full-gene pbmc3k reference (``--reference``, ``cell_type``; 458 genes shared with the
panel, 65,911 distinct query sentences), top-k 20, k = 10.

Larger inputs are built from the section: ``--copies N`` stacks N *binomially thinned*
copies of its count matrix (copy ``c`` keeps each transcript with probability
``--keep`` (default 0.8), seed ``c``; cell ids get ``-c<c>``), so every copy has
realistic, mostly distinct sentences; ``--cells`` then takes a random subset. 12 copies
give 1,014,216 cells. The number of distinct sentences is reported with every run.

Every run is a fresh process with an *empty* embedding cache (a temporary
``NAPARI_CELLAMA_CACHE``; the one-time ONNX export lives in ``NAPARI_CELLAMA_ONNX_CACHE``
and is made before timing). It records each pipeline stage's time, the total, the peak
RSS of the process, the load average (the machine is shared: 2 cores, other jobs
running), and the surrogate check's numbers from ``params``.

The run uses the default transfer method (ensemble) with the Xenium run's own graph clusters
(repeated per copy), as the CLI does. Agreement with exact: the final ``cell_type`` of every
cell (``--truth all``) or of a random 5,000 (``--truth 5000``) from the same method with exact
float32 (onnx) vectors - the whole pipeline re-run with an embedder serving exact vectors for
those cells' sentences and the reference (read from ``--truth-cache``, a warm cache, read-only,
embedded where missing) and the run's own vectors elsewhere; a cell's label depends only on its
own sentence's vector - compared with the run's labels.

Run from the repository root::

    python benchmarks/bench_scale.py --mode surrogate --truth all --truth-cache /work/cache
    python benchmarks/bench_scale.py --mode surrogate --copies 12 --truth 5000 --tag million
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = Path("/work/shared/data") if not (HERE.parent.parent / "shared").exists() else HERE.parent.parent / "shared" / "data"
LABEL = "cell_type"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def thinned_copies(query, copies: int, keep: float):
    """``copies`` binomially thinned copies of ``query`` stacked (copy ``c``: seed ``c``)."""
    import anndata as ad
    import scipy.sparse as sp

    x = sp.csr_matrix(query.X)
    parts = []
    for c in range(copies):
        rng = np.random.default_rng(c)
        data = rng.binomial(np.rint(x.data).astype(np.int64), keep).astype(np.float32)
        xc = sp.csr_matrix((data, x.indices.copy(), x.indptr.copy()), shape=x.shape)
        xc.eliminate_zeros()
        part = ad.AnnData(xc, obs=query.obs[[]].copy(), var=query.var[[]].copy())
        part.obs_names = [f"{i}-c{c}" for i in query.obs_names]
        parts.append(part)
    return ad.concat(parts, merge="first") if copies > 1 else parts[0]


class StageClock:
    """Callback recording when each stage starts; with ``rss=True`` also a sampler thread recording
    the peak resident memory (GB) during each step (``stage`` or ``stage:done`` for stages of at
    most 10 steps, e.g. the classifier's and the check's sub-steps)."""

    def __init__(self, rss: bool = False):
        self.first, self.order, self.sys_at = {}, [], {}
        self.rss: dict[str, float] = {}
        self._step = "start"
        if rss:
            import threading

            import psutil

            proc = psutil.Process()

            def sample():
                while True:
                    gb = proc.memory_info().rss / 1024**3
                    step = self._step
                    if gb > self.rss.get(step, 0.0):
                        self.rss[step] = round(gb, 2)
                    time.sleep(0.05)

            threading.Thread(target=sample, daemon=True).start()

    def __call__(self, stage, done, total):
        self._step = stage if total > 10 else f"{stage}:{done}/{total}"
        if stage not in self.first:
            self.first[stage] = time.perf_counter()
            self.sys_at[stage] = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            self.order.append(stage)

    def _spans(self, marks: dict, end: float) -> dict:
        """Per stage: the mark of the next stage (or ``end``) minus its own."""
        return {st: round((marks[self.order[i + 1]] if i + 1 < len(self.order) else end) - marks[st], 2)
                for i, st in enumerate(self.order)}

    def system_seconds(self) -> dict:
        """Kernel CPU seconds (all threads) in each stage: mostly page faults of newly touched memory."""
        return self._spans(self.sys_at, resource.getrusage(resource.RUSAGE_SELF).ru_stime)

    def durations(self, end: float) -> dict:
        return self._spans(self.first, end)


def exact_vectors(sentences: list[str], truth_cache) -> tuple[np.ndarray, dict]:
    """Exact onnx float32 vectors: read from ``truth_cache`` (read-only) where present, embedded
    (without a cache) otherwise."""
    from napari_cellama.core.cache import EmbeddingCache
    from napari_cellama.core.embed import Embedder

    emb = Embedder(mode="onnx", cache=None)
    vec, found = np.zeros((len(sentences), 0), np.float32), np.zeros(len(sentences), bool)
    if truth_cache:
        vec, found = EmbeddingCache(Path(truth_cache) / "embeddings").lookup(emb.cache_namespace, sentences)
    missing = np.flatnonzero(~found)
    if len(missing):
        new = emb.encode([sentences[i] for i in missing])
        if vec.shape[1] != new.shape[1]:
            vec = np.zeros((len(sentences), new.shape[1]), np.float32)
        vec[missing] = new
    return vec, {"sentences": len(sentences), "from_truth_cache": int(found.sum()), "embedded": len(missing)}


def served_embedder(vectors: dict, truth_cache):
    """An exact-mode embedder that returns ``vectors[sentence]`` where given, exact vectors otherwise
    (``n``: sentences it was asked for)."""
    from napari_cellama.core.embed import Embedder

    class Served(Embedder):
        def __init__(self):
            super().__init__(mode="onnx", cache=None)
            self.n = 0

        @property
        def loaded(self):
            return True

        def load(self):
            return None

        def encode_batch(self, sentences):
            self.n += len(sentences)
            out = [vectors.get(s) for s in sentences]
            miss = [i for i, v in enumerate(out) if v is None]
            if miss:
                vec, _ = exact_vectors([sentences[i] for i in miss], truth_cache)
                for i, v in zip(miss, vec, strict=True):
                    out[i] = v
            return np.stack(out).astype(np.float32)

    return Served()


def exact_labels(result, cells, run_inputs, truth_cache):
    """Final labels of ``cells`` by the same method with exact (onnx float32) vectors: the whole
    pipeline re-run (options, clusters, reference as in the timed run) with an embedder that
    serves exact vectors for the sentences of ``cells`` and of the reference, and the run's own
    vectors for the other sentences (a cell's label depends only on its own sentence's vector:
    the heads and the unknown calibration are fitted on the reference, the expression
    standardisation and the clusters do not depend on embeddings)."""
    import pandas as pd

    from napari_cellama.core import run_transfer

    query, reference, clusters = run_inputs
    sentences = result.table["sentence"].astype(str)
    truth_sent = pd.unique(sentences.loc[cells].to_numpy())
    vec, stats = exact_vectors(list(truth_sent), truth_cache)
    served = {}
    if len(truth_sent) < sentences.nunique():
        codes, uniq = pd.factorize(sentences)
        first = np.unique(codes, return_index=True)[1]
        served = dict(zip(uniq, result.query_embeddings[first], strict=True))
    served.update(zip(truth_sent, vec, strict=True))
    exact = run_transfer(query, reference, LABEL, k=int(result.params["k"]), embedder=served_embedder(served, truth_cache),
                         clusters=clusters)
    return exact.table.loc[cells, "cell_type"].astype(str), stats


def section_clusters(data: Path, copies: int):
    """The Xenium run's graph clusters (what the CLI passes), repeated for each copy."""
    import pandas as pd

    from napari_cellama.io.xenium import read_xenium_clusters

    cl = read_xenium_clusters(data)
    if cl is None or copies <= 1:
        return cl
    return pd.concat([pd.Series(cl.to_numpy(), index=[f"{i}-c{c}" for i in cl.index]) for c in range(copies)])


def child(args) -> int:
    t_start = time.perf_counter()
    from napari_cellama.core import run_transfer
    from napari_cellama.core.embedding_options import EmbeddingOptions, make_embedder
    from napari_cellama.io import read_query, read_reference

    clock = StageClock(rss=args.stage_rss)
    clock("reading", 0, 1)
    query = read_query(args.data)
    reference = read_reference(args.reference)
    clusters = section_clusters(args.data, args.copies)
    if args.copies > 1 or args.keep < 1.0:
        clock("building copies", 0, 1)
        query = thinned_copies(query, args.copies, args.keep)
    if args.cells and args.cells < query.n_obs:
        rng = np.random.default_rng(123)
        query = query[np.sort(rng.choice(query.n_obs, args.cells, replace=False))].copy()
    t0 = time.perf_counter()
    options = EmbeddingOptions(mode=args.mode, cache=True, max_exact_share=args.max_exact_share,
                               surrogate_fit=args.fit, surrogate_check=args.check)
    embedder = make_embedder(options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_transfer(query, reference, LABEL, k=args.k, embedder=embedder, callback=clock,
                              clusters=clusters)
    end = time.perf_counter()
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    clock("after the run (agreement check, not in peak_rss_gb)", 0, 1)
    out = {
        "cells": int(query.n_obs),
        "distinct_sentences": int(result.table["sentence"].nunique()),
        "mode": result.params.get("embedding_mode"),
        "method": result.params.get("method"),
        "annotation_s": round(end - t0, 2),
        "end_to_end_s": round(end - t_start, 2),
        "stages_s": clock.durations(end),
        "stages_system_s": clock.system_seconds(),
        "peak_rss_gb": round(rss_gb, 2),
        **({"stage_peak_rss_gb": clock.rss} if args.stage_rss else {}),
        "load_during": load(),
        "embedding": result.params.get("embedding_cache"),
        "surrogate_check": result.params.get("surrogate_check"),
        "warnings": [str(w.message) for w in caught if "surrogate" in str(w.message)],
    }
    if args.truth:
        rng = np.random.default_rng(7)
        ids = result.table.index
        cells = ids if args.truth == "all" else ids[np.sort(rng.choice(len(ids), min(int(args.truth), len(ids)),
                                                                        replace=False))]
        t1 = time.perf_counter()
        truth, stats = exact_labels(result, cells, (query, reference, clusters), args.truth_cache)
        got = result.table.loc[cells, "cell_type"].astype(str).to_numpy()
        out["agreement"] = {"cells": len(cells), "with": f"final cell_type of the same method "
                                                          f"({result.params.get('method')}) from exact float32 (onnx) vectors",
                            "share": round(float((got == truth.astype(str).to_numpy()).mean()), 5),
                            "exact_vectors": stats, "seconds": round(time.perf_counter() - t1, 1)}
    print("RESULT " + json.dumps(out))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED / "xenium_bone_marrow")
    p.add_argument("--reference", type=Path, default=SHARED / "references" / "pbmc3k" / "pbmc3k.h5ad")
    p.add_argument("--mode", default="surrogate")
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--keep", type=float, default=1.0, help="binomial thinning probability (default 1: none; "
                                                           "0.8 when --copies > 1)")
    p.add_argument("--cells", type=int, default=None)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--fit", type=int, default=None)
    p.add_argument("--check", type=int, default=None)
    p.add_argument("--max-exact-share", type=float, default=1.0)
    p.add_argument("--truth", default=None, help="'all' or a number of random cells")
    p.add_argument("--truth-cache", default=None, help="cache root holding exact onnx vectors (read-only use)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--stage-rss", action="store_true", help="sample the resident memory (psutil, every 50 ms) "
                                                            "and report its peak per stage step")
    p.add_argument("--tag", default="section")
    p.add_argument("--out", type=Path, default=HERE / "results" / "bench_scale.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.copies > 1 and args.keep == 1.0:
        args.keep = 0.8
    if args.child:
        return child(args)
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="cellama-cold-") as tmp:
            env = dict(os.environ, NAPARI_CELLAMA_CACHE=tmp)
            argv_child = [sys.executable, __file__, "--child", *(argv if argv is not None else sys.argv[1:])]
            load_before = load()
            t = time.perf_counter()
            proc = subprocess.run(argv_child, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            res = json.loads(line[0][7:])
            res.update(run=i, wall_s=round(wall, 1), load_before=load_before)
            runs.append(res)
            print(json.dumps(res, indent=1), flush=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.tag] = {"argv": argv if argv is not None else sys.argv[1:], "runs": runs,
                         "median_annotation_s": float(np.median([r["annotation_s"] for r in runs]))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


def table(results: dict) -> str:
    rows = [("| run | cells | distinct sentences | mode | annotation s | end to end s | re-embedded (share of distinct) "
             "| held-out cos mean | agreement with exact | peak RSS GB | load (1/5/15 min) |"),
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for tag, res in results.items():
        for r in res["runs"]:
            c = r.get("surrogate_check") or {}
            a = r.get("agreement") or {}
            rows.append(f"| {tag} | {r['cells']:,} | {r['distinct_sentences']:,} | {r['mode']} | {r['annotation_s']} "
                        f"| {r['end_to_end_s']} | {c.get('reembedded', '-')} ({c.get('share_reembedded', '-')}) "
                        f"| {c.get('cosine_mean', '-')} | {a.get('share', '-')} of {a.get('cells', '-')} "
                        f"| {r['peak_rss_gb']} | {'/'.join(map(str, r['load_during']))} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
