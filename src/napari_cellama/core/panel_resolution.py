"""Panel resolution: which reference types the shared panel cannot tell apart.

A small panel may lack every gene that separates two types (NK from CD8 T cells without CD3 or
CD8 genes). Then no method can tell them apart from these genes: labels between the two are
unreliable, and - what the Unknown call cannot repair - cells of one of them are called the other
*without warning* when their type is missing from the reference (they look like a present type,
so nothing about them is unusual). Measured in benchmark 4 (docs/quality.md): where the
reference's own cross-validation confuses the left-out type with the type its cells get, even an
oracle that knows the type's labels ranks its cells poorly.

:func:`panel_resolution` measures this cheaply on the reference alone: the ensemble's expression
model (logistic regression on :func:`~.classify.expression_model_features`, ``C=1``) is
cross-validated (3 folds, at most 300 cells per type, seeded) on the reference's shared-panel
counts; per ordered pair ``(a, b)`` the share of ``a``'s held-out cells called ``b``. Pairs where
either share reaches ``DEFAULT_UNRESOLVED_LEVEL`` (0.25) are reported. The fit report carries the
result (:func:`~.fit_report.reference_fit_report` with ``reference=``), the CLI prints it and
writes it beside ``--fit-report``, the review dock shows it under the fit table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._constants import (
    DEFAULT_EXPRESSION_C,
    DEFAULT_RANDOM_STATE,
    DEFAULT_RESOLUTION_CELLS,
    DEFAULT_RESOLUTION_FOLDS,
    DEFAULT_UNRESOLVED_LEVEL,
)

RESOLUTION_COLUMNS = ("type_a", "type_b", "a_called_b", "b_called_a", "recall_a", "recall_b")
"""One row per pair of reference types the panel does not tell apart: ``a_called_b`` is the share
of ``a``'s held-out reference cells called ``b`` (``a`` is the more confused of the two), and each
type's recall (share called itself)."""


@dataclass
class PanelResolution:
    """The pairs of reference types a shared panel does not tell apart (``RESOLUTION_COLUMNS``)."""

    pairs: pd.DataFrame
    n_genes: int
    level: float = DEFAULT_UNRESOLVED_LEVEL
    recall: dict = field(default_factory=dict)
    """Per assessed type, the share of its held-out reference cells called itself."""
    not_assessed: tuple = ()
    """Types with fewer cells than folds (no cross-validation)."""

    @property
    def unresolved(self) -> list[tuple[str, str]]:
        return [(str(a), str(b)) for a, b in zip(self.pairs["type_a"], self.pairs["type_b"], strict=True)]

    def warning(self, max_pairs: int = 6) -> str:
        """One or two lines for a biologist ('' when every pair is told apart)."""
        if not len(self.pairs):
            return ""
        shown = [f"{r.type_a} / {r.type_b} ({r.a_called_b:.0%} of {r.type_a} called {r.type_b})"
                 for r in self.pairs.head(max_pairs).itertuples()]
        more = f" and {len(self.pairs) - max_pairs} more" if len(self.pairs) > max_pairs else ""
        return (f"the {self.n_genes} shared genes do not tell apart: " + "; ".join(shown) + more
                + f" (reference cross-validation, >= {self.level:.0%} confused). Labels between them are "
                "unreliable, and a cell of one whose type the reference lacks is called the other without "
                "an Unknown warning.")

    def short(self, max_pairs: int = 3) -> str:
        """One line: the pairs and their confusion ('' when every pair is told apart)."""
        if not len(self.pairs):
            return ""
        shown = [f"{r.type_a} / {r.type_b} ({r.a_called_b:.0%})" for r in self.pairs.head(max_pairs).itertuples()]
        more = f" +{len(self.pairs) - max_pairs} more" if len(self.pairs) > max_pairs else ""
        return ("the panel does not tell apart: " + ", ".join(shown) + more
                + " - a type missing from the reference would be called its partner without warning")

    def summary(self) -> str:
        """The printed diagnostic: the warning, or that every pair is told apart."""
        if not len(self.pairs):
            return (f"panel resolution: the {self.n_genes} shared genes tell every pair of reference types apart "
                    f"(reference cross-validation: no type >= {self.level:.0%} called another)")
        return "panel resolution: " + self.warning()


def panel_resolution(counts, labels, *, level: float = DEFAULT_UNRESOLVED_LEVEL,
                     max_per_type: int = DEFAULT_RESOLUTION_CELLS, folds: int = DEFAULT_RESOLUTION_FOLDS,
                     seed: int = DEFAULT_RANDOM_STATE) -> PanelResolution:
    """Pairs of reference types the genes of ``counts`` (reference cells x shared panel; counts, or
    log-normalised values) do not tell apart (see the module doc); ``labels``: one per cell."""
    import scipy.sparse as sp
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    from .classify import _logreg, expression_model_features, log_normalise
    from .counts import is_raw_counts

    y = np.asarray(labels).astype(str)
    x = sp.csr_matrix(counts)
    types, n = np.unique(y, return_counts=True)
    rng = np.random.default_rng(seed)
    keep, skipped = [], []
    for t, m in zip(types, n, strict=True):
        rows = np.flatnonzero(y == t)
        if m < folds:
            skipped.append(str(t))
            continue
        keep.append(np.sort(rng.choice(rows, max_per_type, replace=False)) if m > max_per_type else rows)
    assessed = [str(t) for t, m in zip(types, n, strict=True) if m >= folds]
    empty = pd.DataFrame(columns=list(RESOLUTION_COLUMNS))
    if len(assessed) < 2:
        return PanelResolution(empty, x.shape[1], level, {}, tuple(skipped))
    idx = np.concatenate(keep)
    xs, ys = x[idx], y[idx]
    feats = expression_model_features(xs) if is_raw_counts(xs) else log_normalise(xs)
    with threadpool_limits(1):
        pred = cross_val_predict(_logreg(DEFAULT_EXPRESSION_C, seed, False), feats, ys,
                                 cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    pred = np.asarray(pred).astype(str)
    share = {a: {b: float((pred[ys == a] == b).mean()) for b in assessed} for a in assessed}
    recall = {a: share[a][a] for a in assessed}
    rows = []
    for i, a in enumerate(assessed):
        for b in assessed[i + 1:]:
            ab, ba = share[a][b], share[b][a]
            if max(ab, ba) >= level:
                first, second = (a, b) if ab >= ba else (b, a)
                rows.append((first, second, max(ab, ba), min(ab, ba), recall[first], recall[second]))
    pairs = pd.DataFrame(rows, columns=list(RESOLUTION_COLUMNS)) if rows else empty
    if len(pairs):
        pairs = pairs.sort_values("a_called_b", ascending=False, kind="stable").reset_index(drop=True)
    return PanelResolution(pairs, x.shape[1], level, recall, tuple(skipped))


def reference_panel_resolution(query, reference, label_key: str, *,
                               level: float = DEFAULT_UNRESOLVED_LEVEL) -> PanelResolution:
    """:func:`panel_resolution` of AnnData ``reference`` (labels in ``obs[label_key]``) on the genes
    it shares with AnnData ``query`` (matched as the transfer matches them, :func:`~.panel.shared_panel`)."""
    from .panel import shared_panel

    _, ref, _ = shared_panel(query, reference)
    labels = reference.obs[label_key].astype(str).to_numpy()
    ok = pd.notna(reference.obs[label_key]).to_numpy()
    return panel_resolution(ref.X[np.flatnonzero(ok)], labels[ok], level=level)
