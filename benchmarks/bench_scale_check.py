"""The surrogate check's re-embedded share and label agreement, without the model's time (issue 15).

Runs the real pipeline (default method, Xenium clusters) twice on the bone-marrow section with
the pbmc3k reference: once with an "exact" embedder that serves exact onnx vectors from a warm
cache (``--truth-cache``; every section and reference sentence must be there), once in
surrogate mode on top of that embedder. Only the embedding *time* is missing: the surrogate's
fit, predictions, check and labels are the real ones, so the share re-embedded and the
agreement on all cells are what ``bench_scale.py`` would measure with the same sample (seed).
Use it to compare check variants, fit sizes and seeds cheaply (about a minute each, idle).

    python benchmarks/bench_scale_check.py --truth-cache /work/cache --fit 2000 --check 1000 --seed 0 1 2 --heldout loo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scale import LABEL, SHARED, exact_vectors, section_clusters, served_embedder  # noqa: E402


def main(argv=None) -> int:
    from napari_cellama.core.surrogate import DEFAULT_SURROGATE_CHECK, DEFAULT_SURROGATE_FIT

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED / "xenium_bone_marrow")
    p.add_argument("--reference", type=Path, default=SHARED / "references" / "pbmc3k" / "pbmc3k.h5ad")
    p.add_argument("--truth-cache", required=True)
    p.add_argument("--fit", type=int, default=DEFAULT_SURROGATE_FIT)
    p.add_argument("--check", type=int, default=DEFAULT_SURROGATE_CHECK)
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="one run per seed (the exact run is shared)")
    p.add_argument("--heldout", default="loo", choices=["loo", "split"],
                   help="the check's held-out predictions: leave-one-out of every sampled sentence, or a split")
    p.add_argument("--target", type=float, default=None, help="the check's target agreement (default: the embedder's)")
    args = p.parse_args(argv)
    from napari_cellama.core import run_transfer
    from napari_cellama.core.panel import shared_panel
    from napari_cellama.core.sentences import cell_sentences
    from napari_cellama.core.surrogate import SurrogateEmbedder
    from napari_cellama.io import read_query, read_reference

    query, reference = read_query(args.data), read_reference(args.reference)
    clusters = section_clusters(args.data, 1)
    q, r, _ = shared_panel(query, reference, 20)
    sentences = sorted(set(cell_sentences(q.X, list(q.var_names), 20)) | set(cell_sentences(r.X, list(q.var_names), 20)))
    vec, stats = exact_vectors(sentences, args.truth_cache)
    table = dict(zip(sentences, vec, strict=True))
    exact = run_transfer(query, reference, LABEL, k=10, embedder=served_embedder(table, None), clusters=clusters)
    for seed in args.seed:
        base = served_embedder(table, None)
        extra = {} if args.target is None else {"target": args.target}
        emb = SurrogateEmbedder(base, n_fit=args.fit, n_check=args.check, seed=seed, heldout=args.heldout, **extra)
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = run_transfer(query, reference, LABEL, k=10, embedder=emb, clusters=clusters)
        agree = float((res.table["cell_type"].to_numpy() == exact.table["cell_type"].to_numpy()).mean())
        print("RESULT " + json.dumps({"fit": args.fit, "check": args.check, "heldout": args.heldout, "seed": seed,
                                      "target": emb.target,
                                      "exact_vectors": stats, "exact_sentences_in_run": base.n,
                                      "seconds_without_model": round(time.perf_counter() - t, 1),
                                      "load": [round(x, 2) for x in os.getloadavg()],
                                      "surrogate_check": res.params["surrogate_check"],
                                      "agreement_all_cells": round(agree, 5),
                                      "warnings": [str(w.message) for w in caught if "surrogate" in str(w.message)]}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
