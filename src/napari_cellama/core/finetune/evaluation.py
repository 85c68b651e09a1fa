"""Validation of a model being fine-tuned: Spearman/Pearson of predicted cosine vs pair label,
prototype accuracy and label transfer of the held-out cells."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ..._constants import (
    STAGE_VALIDATE,
)
from ..transfer import l2_normalise
from .pairs import PairSet


# --------------------------------------------------------------------------- helpers
def _iter_model_encode(model, sentences: Sequence[str], batch_size: int, stage: str) -> Iterator:
    """Embed with the model being trained (eval mode, no grad), yielding per batch."""
    import torch

    uniq, codes = np.unique(np.asarray(sentences, dtype=object).astype(str), return_inverse=True)
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    out = np.zeros((len(uniq), int(get_dim())), dtype=np.float32)
    model.eval()
    yield (stage, 0, len(uniq))
    order = np.argsort([len(s) for s in uniq], kind="stable")
    for start in range(0, len(uniq), batch_size):
        idx = order[start:start + batch_size]
        with torch.no_grad():
            emb = model.encode([str(uniq[i]) for i in idx], batch_size=batch_size, convert_to_numpy=True,
                               show_progress_bar=False)
        out[idx] = emb
        yield (stage, min(start + batch_size, len(uniq)), len(uniq))
    return out[codes]


def _pair_cosine(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", l2_normalise(emb_a), l2_normalise(emb_b))


def _correlations(pred: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    from scipy.stats import pearsonr, spearmanr

    if len(pred) < 3 or np.ptp(label) == 0 or np.ptp(pred) == 0:
        return float("nan"), float("nan")
    return float(spearmanr(pred, label).statistic), float(pearsonr(pred, label).statistic)


def _iter_validate(model, val: PairSet | None, proto_eval, transfer_eval, batch_size: int, tag: str) -> Iterator:
    out: dict = {}
    if val is not None and len(val):
        texts = list(val.a) + list(val.b)
        emb = yield from _iter_model_encode(model, texts, batch_size, f"{STAGE_VALIDATE} ({tag})")
        pred = _pair_cosine(emb[: len(val)], emb[len(val):])
        out["spearman"], out["pearson"] = _correlations(pred, val.label)
    if proto_eval is not None:
        cell_text, own, proto_text = proto_eval
        emb = yield from _iter_model_encode(model, list(cell_text) + list(proto_text), batch_size,
                                            f"{STAGE_VALIDATE} ({tag}, prototypes)")
        sim = l2_normalise(emb[: len(cell_text)]) @ l2_normalise(emb[len(cell_text):]).T
        out["prototype_accuracy"] = float((sim.argmax(axis=1) == own).mean())
    if transfer_eval is not None:
        from sklearn.metrics import f1_score

        from ..._constants import DEFAULT_N_NEIGHBORS
        from ..transfer import knn_transfer

        val_text, val_labels, train_text, train_labels = transfer_eval
        emb = yield from _iter_model_encode(model, list(val_text) + list(train_text), batch_size,
                                            f"{STAGE_VALIDATE} ({tag}, transfer)")
        table = knn_transfer(emb[: len(val_text)], emb[len(val_text):], train_labels,
                             k=min(DEFAULT_N_NEIGHBORS, len(train_labels)))
        pred = table["cell_type"].to_numpy()
        out["transfer_accuracy"] = float((pred == np.asarray(val_labels)).mean())
        out["transfer_macro_f1"] = float(f1_score(val_labels, pred, average="macro", labels=np.unique(val_labels),
                                                  zero_division=0))
    return out


def _finite(value) -> float:
    return float(value) if value is not None and np.isfinite(value) else -np.inf
