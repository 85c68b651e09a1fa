"""The fine-tuning loop (:func:`iter_finetune` / :func:`finetune`): checks, pairs, the
optimiser steps as a generator, validation, and the model written once at the end."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import anndata as ad
import numpy as np

from ..._constants import (
    STAGE_FINETUNE,
    STAGE_LOAD_MODEL,
    STAGE_PAIRS,
    STAGE_SAVE_MODEL,
)
from ...atomic import write_dir
from ...validators import (
    CellamaInputError,
    check_label_key,
    check_matrix,
    check_metadata,
)
from .._progress import run
from ..counts import is_raw_counts
from ..embed import load_model, resolve_device
from ..options import FinetuneOptions, merge_options
from ..prototypes import marker_sentences, read_markers, restrict_markers
from ..sentences import cell_sentences
from .evaluation import _finite, _iter_validate
from .pairs import (
    PairSet,
    _cell_pairset,
    _group_codes,
    _match_prototypes,
    _prototype_pairs,
    _restrict_genes,
    _split_cells,
    downsample,
    pca_coordinates,
)
from .record import FINETUNE_RECORD, FinetuneLog, FinetuneResult, _json_default

MAX_TRANSFER_EVAL_CELLS = 2000
"""Training cells (at most) that the held-out cells are label-transferred from during validation."""


def _prepare_out(out: str | os.PathLike, overwrite: bool) -> Path:
    from ...io.destinations import check_model_folder  # replaces only an earlier fine-tuned model

    return check_model_folder(out, overwrite)


# --------------------------------------------------------------------------- main
def iter_finetune(
    reference: ad.AnnData,
    out: str | os.PathLike,
    *,
    options: FinetuneOptions | None = None,
    model=None,
    device: str = "auto",
    allow_download: bool = False,
    overwrite: bool = False,
    log: FinetuneLog | None = None,
    **keywords,
) -> Iterator:
    """Generator of :func:`finetune`: yields ``(stage, done, total)``, returns a :class:`FinetuneResult`.

    ``options``: a :class:`~napari_cellama.core.options.FinetuneOptions` (the recipe's values);
    instead, its fields may be given as keywords. ``model`` is the model to start from,
    ``overwrite`` allows replacing a non-empty ``out``, ``log`` receives the live loss.

    Closing the generator (e.g. ``thread_worker.quit()``) between two steps cancels the
    run; ``out`` is then left untouched.
    """
    t_start = time.perf_counter()
    # ---- checks (cheap, before anything heavy)
    options = merge_options(FinetuneOptions, options, keywords, "the fine-tuning options")
    o = options
    top_ks, n_pairs, n_neighbors, n_pcs, n_hvg = list(o.top_k), o.n_pairs, o.n_neighbors, o.n_pcs, o.n_hvg
    epochs, batch_size, learning_rate, warmup = o.epochs, o.batch_size, o.learning_rate, o.warmup
    neighbor_fraction, validation_fraction = o.neighbor_fraction, o.validation_fraction
    augment_views, augment_keep, eval_steps, keep_best = o.augment_views, o.augment_keep, o.eval_steps, o.keep_best
    prototypes, prototype_fraction = o.prototypes, o.prototype_fraction
    prototype_positive, prototype_negative = o.prototype_positive, o.prototype_negative
    label_key, genes, append_metadata, seed = o.label_key, o.genes, o.append_metadata, o.seed
    metadata = check_metadata(reference, list(o.metadata) or None, "reference")
    if label_key is not None:
        check_label_key(reference, label_key)
    out_path = _prepare_out(out, overwrite)
    device = resolve_device(device)
    log = log if log is not None else FinetuneLog()
    rng = np.random.default_rng(seed)

    # ---- data
    if label_key is not None:
        labelled = reference.obs[label_key].notna().to_numpy()
        if not labelled.all():
            reference = reference[labelled].copy()
    yield (STAGE_PAIRS, 0, 4)
    x, gene_names = _restrict_genes(reference, genes)
    check_matrix(x, "reference")
    pca, pca_info = pca_coordinates(reference, n_hvg, n_pcs, seed)
    yield (STAGE_PAIRS, 1, 4)
    sentence_meta = metadata if append_metadata else None
    sentences = {k: cell_sentences(x, gene_names, k, obs=reference.obs, metadata=sentence_meta) for k in top_ks}
    views = {k: [sentences[k]] for k in top_ks}
    if augment_views:
        aug_rng = np.random.default_rng([seed, 1])
        is_counts = is_raw_counts(x)
        for _ in range(augment_views):
            xd = downsample(x, augment_keep, aug_rng, is_counts)
            for k in top_ks:
                views[k].append(cell_sentences(xd, gene_names, k, obs=reference.obs, metadata=sentence_meta))
    yield (STAGE_PAIRS, 2, 4)
    match_cols = list(dict.fromkeys(([label_key] if label_key else []) + list(metadata)))
    groups = _group_codes(reference.obs, match_cols)
    labels = reference.obs[label_key].astype(str).to_numpy() if label_key else None
    train_cells, val_cells = _split_cells(reference.n_obs, labels, validation_fraction, seed)
    n_val_pairs = round(n_pairs * validation_fraction / (1 - validation_fraction)) if len(val_cells) else 0
    view_rng = np.random.default_rng([seed, 2])
    train = _cell_pairset(pca, train_cells, n_pairs, neighbor_fraction, n_neighbors, groups, views, top_ks, rng,
                          view_rng)
    own = {k: v[:1] for k, v in views.items()}  # validation: the cells' own sentences
    val = (_cell_pairset(pca, val_cells, max(n_val_pairs, 10), neighbor_fraction, n_neighbors, groups, own,
                         top_ks, rng) if len(val_cells) >= 2 else None)

    # ---- prototypes
    marker_set = None
    proto_map: dict = {}
    proto_eval = None
    unmatched: list = []
    if prototypes is not None:
        markers = read_markers(prototypes) if not isinstance(prototypes, Mapping) else dict(prototypes)
        proto_map, unmatched = _match_prototypes(reference.obs[label_key], markers)
        if not proto_map:
            raise CellamaInputError(
                f"no label of {label_key!r} ({', '.join(map(str, unmatched[:8]))}) names a cell type of the marker "
                "table; rename the table's types to the reference labels"
            )
        marker_set = restrict_markers({t: markers[t] for t in dict.fromkeys(proto_map.values())}, gene_names)
        kept_types = list(marker_set.markers)
        proto_text_by_type = marker_sentences(marker_set.markers)
        type_pos = {t: i for i, t in enumerate(kept_types)}
        cell_type_index = np.array([type_pos.get(proto_map.get(lab, ""), -1) for lab in labels], dtype=np.int64)
        proto_text = [proto_text_by_type[t] for t in kept_types]
        n_proto = round(n_pairs * prototype_fraction)
        pp = _prototype_pairs(train_cells, cell_type_index, n_proto, views, top_ks, proto_text,
                              float(prototype_positive), float(prototype_negative), rng, view_rng)
        if pp is not None:
            train = PairSet.concat([train, pp])
        vc = val_cells[cell_type_index[val_cells] >= 0] if len(val_cells) else val_cells
        if len(vc):
            k0 = top_ks[0]
            proto_eval = ([sentences[k0][i] for i in vc], cell_type_index[vc], proto_text)
    train = train.shuffled(rng)
    yield (STAGE_PAIRS, 4, 4)

    # ---- model (a private copy: the cached model used by transfers is never modified)
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import CosineSimilarityLoss
    from sentence_transformers.util import batch_to_device
    from transformers import get_linear_schedule_with_warmup

    yield (STAGE_LOAD_MODEL, 0, 1)
    _, model_id = load_model(model, device, allow_download)
    torch.manual_seed(seed)
    st = SentenceTransformer(model_id, device=device, local_files_only=not allow_download)
    yield (STAGE_LOAD_MODEL, 1, 1)

    transfer_eval = None
    if labels is not None and len(val_cells):
        k0 = top_ks[0]
        sub = train_cells
        if len(sub) > MAX_TRANSFER_EVAL_CELLS:
            sub = np.sort(np.random.default_rng(seed).choice(train_cells, MAX_TRANSFER_EVAL_CELLS, replace=False))
        transfer_eval = ([sentences[k0][i] for i in val_cells], labels[val_cells],
                         [sentences[k0][i] for i in sub], labels[sub])
    eval_bs = max(batch_size, 32)
    before = yield from _iter_validate(st, val, proto_eval, transfer_eval, eval_bs, "before")
    history = [{"step": 0, **before}]
    select = bool(val is not None and len(val) and keep_best and eval_steps is not None)
    best_score = _finite(before.get("spearman")) if select else -np.inf
    best_step, best_state = 0, None

    loss_model = CosineSimilarityLoss(st).to(device)
    no_decay = ("bias", "LayerNorm.bias", "LayerNorm.weight")
    named = list(loss_model.named_parameters())
    groups_opt = [
        {"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups_opt, lr=float(learning_rate))
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = steps_per_epoch * epochs
    warmup_steps = round(warmup * total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    log.total_steps, log.step, log.losses = total_steps, 0, []
    labels_t = torch.tensor(train.label, dtype=torch.float32)
    yield (STAGE_FINETUNE, 0, total_steps)
    for epoch in range(epochs):
        log.epoch = epoch + 1
        order = rng.permutation(len(train)) if epoch else np.arange(len(train))
        loss_model.train()
        for start in range(0, len(train), batch_size):
            idx = order[start:start + batch_size]
            fa = batch_to_device(st.preprocess([train.a[i] for i in idx]), device)
            fb = batch_to_device(st.preprocess([train.b[i] for i in idx]), device)
            loss = loss_model([fa, fb], labels_t[idx].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(loss_model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            log.step += 1
            log.loss = float(loss.detach())
            log.losses.append(log.loss)
            log.learning_rate = float(scheduler.get_last_lr()[0])
            yield (STAGE_FINETUNE, log.step, total_steps)
            if eval_steps and (log.step % eval_steps == 0 or log.step == total_steps):
                scores = yield from _iter_validate(st, val, proto_eval, transfer_eval, eval_bs,
                                                   f"step {log.step}")
                history.append({"step": log.step, **scores})
                loss_model.train()
                if select and _finite(scores.get("spearman")) > best_score:
                    best_score, best_step = scores["spearman"], log.step
                    best_state = None if log.step == total_steps else {
                        k: v.detach().to("cpu", copy=True) for k, v in st.state_dict().items()}

    if select:
        if best_step == 0:  # training never beat the starting model on the held-out cells
            st = SentenceTransformer(model_id, device=device, local_files_only=not allow_download)
        elif best_state is not None:
            st.load_state_dict(best_state)
        best_state = None
    final_step = best_step if select else total_steps
    if eval_steps:  # the kept weights were evaluated already
        after = {k: v for k, v in next(h for h in history if h["step"] == final_step).items() if k != "step"}
    else:
        after = yield from _iter_validate(st, val, proto_eval, transfer_eval, eval_bs, "after")

    # ---- save (temporary folder, then rename)
    validation = {"n_cells": len(val_cells), "n_pairs": int(len(val) if val is not None else 0),
                  "kept_step": int(final_step), "history": history}
    for key, value in before.items():
        validation[f"{key}_before"] = value
    for key, value in after.items():
        validation[f"{key}_after"] = value
    params = {
        "base_model": model_id,
        "label_key": label_key,
        "metadata": list(metadata),
        "match_columns": match_cols,
        "top_k": top_ks,
        "n_pairs": n_pairs,
        "neighbor_fraction": neighbor_fraction,
        "n_neighbors": n_neighbors,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": float(learning_rate),
        "warmup": warmup,
        "warmup_steps": warmup_steps,
        "total_steps": total_steps,
        "eval_steps": eval_steps,
        "keep_best": bool(keep_best),
        "validation_fraction": validation_fraction,
        "augment_views": augment_views,
        "augment_keep": augment_keep if augment_views else None,
        "prototype_fraction": prototype_fraction if prototypes is not None else None,
        "prototype_positive": float(prototype_positive) if prototypes is not None else None,
        "prototype_negative": float(prototype_negative) if prototypes is not None else None,
        "n_genes_sentences": len(gene_names),
        "append_metadata": bool(append_metadata),
        "pca": pca_info,
        "seed": int(seed),
        "device": device,
        "n_reference_cells": int(reference.n_obs),
    }
    pair_counts = {"train": train.counts(), "validation": val.counts() if val is not None else {}}
    record = {"params": params, "options": options.to_dict(), "validation": validation, "pair_counts": pair_counts,
              "prototypes": {"map": proto_map, "unmatched_labels": unmatched,
                             "marker_set": marker_set.to_dict() if marker_set else None},
              "losses": log.losses}
    yield (STAGE_SAVE_MODEL, 0, 1)
    def save(tmp):
        st.save(str(tmp), create_model_card=False)
        (tmp / FINETUNE_RECORD).write_text(json.dumps(record, indent=2, default=_json_default) + "\n")

    _prepare_out(out_path, overwrite)  # still ours to replace after training?
    write_dir(out_path, save, create=True)
    yield (STAGE_SAVE_MODEL, 1, 1)
    return FinetuneResult(out_path, validation, list(log.losses), params, pair_counts, marker_set, proto_map,
                          list(unmatched), time.perf_counter() - t_start, options)



def finetune(reference: ad.AnnData, out: str | os.PathLike, *, options: FinetuneOptions | None = None,
             callback=None, **kwargs) -> FinetuneResult:
    """Fine-tune the sentence model on ``reference`` and write it to the folder ``out``.

    See the module docstring for the recipe and :func:`iter_finetune` for the
    parameters; ``callback(stage, done, total)`` receives progress.
    """
    return run(iter_finetune(reference, out, options=options, **kwargs), callback)
