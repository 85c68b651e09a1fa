"""What a fine-tuning run leaves: the live log, the result, and ``cellama_finetune.json`` (the
record written into the model folder)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..options import FinetuneOptions
from ..prototypes import MarkerSet

FINETUNE_RECORD = "cellama_finetune.json"
"""File in the model folder recording how the model was fine-tuned."""


# --------------------------------------------------------------------------- results
@dataclass
class FinetuneLog:
    """Live state of a fine-tuning run (read by progress bars: the loss of the last step)."""

    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    loss: float = float("nan")
    learning_rate: float = 0.0
    losses: list = field(default_factory=list)

    def smoothed_loss(self, window: int = 20) -> float:
        tail = self.losses[-window:]
        return float(np.mean(tail)) if tail else float("nan")


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced."""

    model_path: Path
    validation: dict
    """``spearman_before`` / ``spearman_after`` (and Pearson) of predicted cosine vs label on
    the validation pairs; with prototypes also ``prototype_accuracy_before/after`` on the
    validation cells."""
    losses: list
    params: dict
    pair_counts: dict
    marker_set: MarkerSet | None = None
    prototype_map: dict = field(default_factory=dict)
    """Reference label -> marker-table type whose prototype guided it."""
    unmatched_labels: list = field(default_factory=list)
    """Reference labels that name no type of the marker table (no prototype pairs)."""
    seconds: float = 0.0
    options: FinetuneOptions | None = None
    """The options of the run (``options.to_dict()`` is also in ``cellama_finetune.json``)."""

    def summary(self) -> str:
        v = self.validation
        lines = [
            f"fine-tuned model written to {self.model_path}",
            f"training pairs: {', '.join(f'{k} {n}' for k, n in self.pair_counts.get('train', {}).items())}",
            f"{self.params['total_steps']} steps ({self.params['epochs']} epoch(s), batch {self.params['batch_size']}) "
            f"in {self.seconds:.0f} s; loss first {self.losses[0]:.4f} -> last 20 steps {np.mean(self.losses[-20:]):.4f}"
            if self.losses else "no training step",
        ]
        if "spearman_before" in v:
            lines.append(
                f"validation ({v['n_pairs']} pairs of {v['n_cells']} held-out cells): Spearman of predicted "
                f"similarity vs label {v['spearman_before']:.3f} before -> {v['spearman_after']:.3f} after"
            )
        if "transfer_macro_f1_before" in v:
            lines.append(
                f"validation label transfer (held-out cells from the training cells, k=10): macro-F1 "
                f"{v['transfer_macro_f1_before']:.3f} before -> {v['transfer_macro_f1_after']:.3f} after, accuracy "
                f"{v['transfer_accuracy_before']:.3f} -> {v['transfer_accuracy_after']:.3f}"
            )
        if "prototype_accuracy_before" in v:
            lines.append(
                f"validation cells nearest to their own prototype: {v['prototype_accuracy_before']:.3f} before -> "
                f"{v['prototype_accuracy_after']:.3f} after"
            )
        if self.params.get("eval_steps"):
            kept = v.get("kept_step", self.params["total_steps"])
            what = ("the starting model (no step validated better)" if kept == 0 else f"the weights of step {kept}")
            lines.append(f"validated every {self.params['eval_steps']} steps; saved {what}"
                         if self.params.get("keep_best") else
                         f"validated every {self.params['eval_steps']} steps; saved the last weights")
        return "\n".join(lines)



def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)



def read_finetune_record(path: str | os.PathLike) -> dict | None:
    """The ``cellama_finetune.json`` of a fine-tuned model folder (``None`` if absent)."""
    p = Path(path) / FINETUNE_RECORD
    return json.loads(p.read_text()) if p.exists() else None
