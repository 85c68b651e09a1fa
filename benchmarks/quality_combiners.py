"""Combination rules of the ensemble's two heads, measured on every setting of benchmarks 1-3.

For every setting (both panel seeds) and split seed, fits the embedding head and the expression
model exactly as the package does (``core.classify.fit_heads``), and 3-fold out-of-fold
probabilities of both on the reference (for rules fitted by cross-validation on the reference),
and dumps them with each query cell's number of genes in its sentence. Rules are then scored
without refitting (``--rules``). Macro-F1 is before the Unknown call ("transferred").

    python benchmarks/quality_combiners.py --dump /tmp/combiners.npz   # fits (slow)
    python benchmarks/quality_combiners.py --load /tmp/combiners.npz   # scores the rules
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SEEDS = (0, 1, 2)


def n_sentence_genes(counts, top_k=20):
    import scipy.sparse as sp

    m = sp.csr_matrix(counts)
    return np.minimum(np.diff(m.indptr) if m.nnz == (m.data > 0).sum() else np.asarray((m > 0).sum(axis=1)).ravel(),
                      top_k)


def dump(path: Path) -> None:
    import _quality_data as Q
    from sklearn.model_selection import StratifiedKFold

    from napari_cellama.core import Embedder
    from napari_cellama.core.classify import fit_heads, log_normalise

    t0 = time.perf_counter()
    settings = Q.build(("b1", "b2", "b3"), 0) + [s for s in Q.build(("b2",), 1) if "/s1" in s.name]
    emb = Embedder(cache=True)
    Q.embed(settings, emb)
    print(f"embedded in {time.perf_counter() - t0:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    out = {}
    for s in settings:
        for seed, (rx, re_, ry, qx, qe, qy) in s.splits(SEEDS):
            key = f"{s.name}|{seed}"
            rxe, qxe = log_normalise(rx), log_normalise(qx)
            m = fit_heads(re_, rxe, ry)
            cats = m.categories
            pe, px = m.embedding_proba(qe), m.expression_proba(qxe)
            oof_e = np.zeros((len(ry), len(cats)))
            oof_x = np.zeros((len(ry), len(cats)))
            skf = StratifiedKFold(3, shuffle=True, random_state=0)
            for tr, te in skf.split(np.zeros(len(ry)), ry):
                mm = fit_heads(re_[tr], rxe[tr], ry[tr])
                idx = np.searchsorted(cats, mm.categories)
                oof_e[np.ix_(te, idx)] = mm.embedding_proba(re_[te])
                oof_x[np.ix_(te, idx)] = mm.expression_proba(rxe[te])
            out[key] = dict(cats=cats.astype(str), qy=np.asarray(qy).astype(str), ry=np.asarray(ry).astype(str),
                            pe=pe, px=px, oof_e=oof_e, oof_x=oof_x,
                            qn=n_sentence_genes(qx), rn=n_sentence_genes(rx),
                            qtot=np.asarray(qx.sum(axis=1)).ravel(), rtot=np.asarray(rx.sum(axis=1)).ravel())
            print(f"  {key} done {time.perf_counter() - t0:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    flat = {f"{k}#{f}": v for k, d in out.items() for f, v in d.items()}
    np.savez_compressed(path, **flat)
    print(f"wrote {path}")


def load(path: Path) -> dict:
    z = np.load(path, allow_pickle=True)
    out = {}
    for name in z.files:
        k, f = name.split("#")
        out.setdefault(k, {})[f] = z[name]
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--dump", type=Path)
    p.add_argument("--load", type=Path)
    a = p.parse_args()
    if a.dump:
        dump(a.dump)
