"""Provenance: what made an annotation's labels, as plain data (Qt-free).

An :class:`~napari_cellama.core.Annotation` carries a list of *steps* (plain dicts, JSON-ready):

* a run step, ``{"step": "transfer", ...}``: the method and all its options
  (``TransferResult.params``), the model (name + fingerprint of its files), the embedding mode,
  the inputs (query path, reference path, each with a content fingerprint, and the label key),
  the package version and the time. Made by :func:`transfer_step` (prototype runs:
  :func:`prototype_step`, which also records the markers used, as plain data);
* ``{"step": "combine", "where", "min_confidence", "method", "prototype_labels_for"}``: a
  transfer combined with the prototype run before it (:func:`combine_step`);
* manual edits, ``{"step": "edit", "kind": "assign" | "clear" | "review", "time", "reason",
  "label", "cell_ids"}`` in the order they were made (undone edits are not steps);
* the final threshold, ``{"step": "threshold", "min_confidence", "max_distance"}``.

:attr:`Annotation.provenance` returns them; every export writes them to
``uns['cellama']['provenance']`` (JSON text) and ``napari-cellama replay`` re-runs them
(:mod:`napari_cellama.core.replay`).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

STEP_TRANSFER = "transfer"
STEP_PROTOTYPES = "prototypes"
STEP_COMBINE = "combine"
STEP_EDIT = "edit"
STEP_THRESHOLD = "threshold"
RUN_STEPS = (STEP_TRANSFER, STEP_PROTOTYPES, STEP_COMBINE)

# files of a Xenium output folder that the query is read from (the rest: images, transcripts)
_XENIUM_QUERY_FILES = ("experiment.xenium", "cell_feature_matrix.h5", "cells.parquet", "cells.csv.gz")


def now() -> str:
    """Local time, ISO 8601 to the second (the edit history's format)."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / "experiment.xenium").exists():
        files = [path / name for name in _XENIUM_QUERY_FILES if (path / name).is_file()]
        if not (path / "cell_feature_matrix.h5").is_file() and (path / "cell_feature_matrix").is_dir():
            files += sorted(p for p in (path / "cell_feature_matrix").rglob("*") if p.is_file())
        return files
    return sorted(p for p in path.rglob("*") if p.is_file())


def content_fingerprint(path) -> str | None:
    """SHA-256 (16 hex characters) over the bytes of a file, or of the files of a folder that
    make its data (a Xenium output folder: ``experiment.xenium``, the cell-feature matrix and
    the cells table; images and transcripts are not read by a transfer). None if missing.

    Memoised per process on the files' sizes and modification times."""
    p = Path(path).expanduser()
    if not p.exists():
        return None
    from .fingerprint import files_digest

    # a file's fingerprint is its content alone: a renamed copy keeps it
    return files_digest(_files_of(p), p if p.is_dir() else None)


def input_record(path) -> dict | None:
    """``{"path": absolute path, "fingerprint": content fingerprint}`` of one input (None: no path)."""
    if path is None or str(path) == "":
        return None
    p = Path(path).expanduser()
    try:
        p = p.resolve()
    except OSError:
        pass
    return {"path": str(p), "fingerprint": content_fingerprint(p)}


def model_record(model_id) -> dict:
    """``{"name", "fingerprint"}`` of the model that embedded the sentences (fingerprint of its
    weight / config / tokenizer files; None when its folder cannot be found)."""
    fingerprint = None
    try:
        from .embed import resolve_model_folder
        from .fingerprint import model_fingerprint

        folder, _ = resolve_model_folder(model_id)
        fingerprint = model_fingerprint(folder)
    except Exception:  # noqa: BLE001 - a model without a findable folder is recorded by name only
        fingerprint = None
    return {"name": None if model_id is None else str(model_id), "fingerprint": fingerprint}


def _plain(value):
    """JSON-ready copy (tuples as lists, numpy scalars as numbers, paths as text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return value


def run_step(step: str, params: dict, inputs: dict | None = None) -> dict:
    """A run step: ``step`` (``transfer`` / ``prototypes`` / ``combine``), the run's ``params``
    (method, options, model ...) and ``inputs`` (``{"query": path, "reference": path,
    "label_key": key}``; paths get a content fingerprint)."""
    from .. import __version__

    params = dict(params or {})
    inputs = dict(inputs or {})
    recorded = {}
    for key in dict.fromkeys(("query", "reference", *inputs)):  # other paths too, e.g. a marker file
        if key == "label_key":
            continue
        value = inputs.get(key)
        recorded[key] = value if isinstance(value, dict) else input_record(value)
    recorded["label_key"] = inputs.get("label_key", params.get("label_key"))
    return _plain({
        "step": step,
        "time": now(),
        "package": f"napari-cellama {__version__}",
        "method": params.get("method"),
        "options": params.get("options") or {},
        "model": model_record(params.get("model")) if params.get("model") is not None else None,
        "embedding_mode": params.get("embedding_mode"),
        "device": params.get("device"),
        "inputs": recorded,
        "params": {k: v for k, v in params.items() if k not in ("options", "embedding_cache")},
    })


def transfer_step(result, inputs: dict | None = None) -> dict:
    """The run step of a :class:`~napari_cellama.core.TransferResult` (see :func:`run_step`)."""
    params = dict(getattr(result, "params", None) or {})
    return run_step(STEP_TRANSFER, params, inputs)


def prototype_step(result, inputs: dict | None = None) -> dict:
    """The run step of a :class:`~napari_cellama.core.PrototypeResult` (``inputs``: the query
    path and e.g. ``markers``: the marker file)."""
    params = dict(getattr(result, "params", None) or {})
    options = getattr(result, "options", None)
    if options is not None and hasattr(options, "to_dict"):
        params.setdefault("options", options.to_dict())
    params.setdefault("method", STEP_PROTOTYPES)
    marker_set = getattr(result, "marker_set", None)
    if marker_set is not None:  # the markers measured in the panel, as used: the replay needs no marker file
        params.setdefault("markers", {str(t): [str(g) for g in genes] for t, genes in marker_set.markers.items()})
    return run_step(STEP_PROTOTYPES, params, inputs)


def combine_step(where: str, min_confidence: float | None = None, method: str | None = None,
                 n_prototype_labels: int = 0) -> dict:
    """The step of a transfer combined with the prototype run recorded before it
    (:func:`~napari_cellama.core.run_annotations.combined_annotation`): the rule ``where``, the
    confidence threshold it used (``where="unassigned"``), the transfer method named in
    ``label_source`` and how many cells took a prototype label."""
    return _plain({"step": STEP_COMBINE, "time": now(), "where": where, "min_confidence": min_confidence,
                   "method": method, "prototype_labels_for": int(n_prototype_labels)})


def annotation_from_result(result, inputs: dict | None = None, **kwargs):
    """An :class:`~napari_cellama.core.Annotation` of a transfer ``result`` (or a prototype
    run's) that records how it was made: its provenance starts with :func:`transfer_step`
    (:func:`prototype_step`); ``inputs``: the query and reference paths and the label key the
    run used. ``kwargs`` go to ``Annotation`` (``label_ids``, ``palette`` ...); every reference
    label (prototype type) is registered as a type."""
    import pandas as pd

    from .annotation import Annotation

    params = dict(getattr(result, "params", None) or {})
    prototypes = hasattr(result, "prototype_sentences")
    if "types" not in kwargs:
        if prototypes:
            kwargs["types"] = [str(t) for t in result.types]
        elif getattr(result, "reference_labels", None) is not None:
            kwargs["types"] = sorted(str(t) for t in pd.unique(result.reference_labels))
    kwargs.setdefault("min_confidence", params.get("min_confidence") or 0.0)
    kwargs.setdefault("max_distance", params.get("max_distance"))
    ann = Annotation(result.table, **kwargs)
    ann.add_provenance(prototype_step(result, inputs) if prototypes else transfer_step(result, inputs))
    return ann


def edit_step(record: dict) -> dict:
    """A provenance edit step from an edit-history record (:meth:`Annotation.history_records`)."""
    return {
        "step": STEP_EDIT,
        "kind": record.get("kind"),
        "time": record.get("time"),
        "reason": record.get("reason"),
        "label": record.get("after"),
        "keep_labels": bool(record.get("keep_labels")),
        "review": record.get("reviewed_before") is not None,
        "n_cells": len(record.get("cell_ids") or ()),
        "cell_ids": list(record.get("cell_ids") or ()),
    }


def run_steps(steps) -> list[dict]:
    """The run steps (transfer / prototypes / combine) of a provenance list."""
    return [s for s in steps or () if s.get("step") in RUN_STEPS]


def last_run(steps) -> dict | None:
    """The last run step (the one that made the labels under the manual edits), or None."""
    runs = run_steps(steps)
    return runs[-1] if runs else None


def recorded_inputs(steps) -> dict:
    """``{"query": path, "reference": path, "label_key": key}`` of the run that made the labels
    (empty when nothing was recorded)."""
    run = last_run(steps)
    if run is None:
        return {}
    inp = run.get("inputs") or {}
    out = {}
    for key in ("query", "reference"):
        rec = inp.get(key)
        if isinstance(rec, dict) and rec.get("path"):
            out[key] = rec["path"]
    if inp.get("label_key"):
        out["label_key"] = inp["label_key"]
    return out


def describe(steps) -> list[str]:
    """One readable line per step (for a report or a status bar)."""
    lines = []
    for s in steps or ():
        kind = s.get("step")
        if kind in RUN_STEPS:
            model = (s.get("model") or {}).get("name")
            inp = s.get("inputs") or {}
            ref = (inp.get("reference") or {}).get("path")
            lines.append(f"{s.get('time')}: {kind} ({s.get('method') or ''}) with {model or 'no model'}"
                         f"{'' if not ref else f', reference {ref}'}")
        elif kind == STEP_EDIT:
            what = "marked reviewed" if s.get("keep_labels") else (
                f"-> {s.get('label')}" if s.get("label") is not None else "back to the run's label")
            lines.append(f"{s.get('time')}: {s.get('n_cells')} cells {what} ({s.get('reason')})")
        elif kind == STEP_THRESHOLD:
            lines.append(f"threshold: confidence >= {s.get('min_confidence')}, distance <= {s.get('max_distance')}")
    return lines


class ProvenanceMixin:
    """Provenance of an :class:`~napari_cellama.core.Annotation` (mixed into it; needs
    ``_steps``, ``history_records``, ``state``, ``table`` and the threshold)."""

    def add_provenance(self, step: dict) -> None:
        """Record a run step (e.g. :func:`~napari_cellama.core.provenance.transfer_step`)."""
        if not isinstance(step, dict) or "step" not in step:
            from ..validators import CellamaInputError

            raise CellamaInputError("a provenance step is a dict with a 'step' entry")
        self._steps.append(dict(step))

    @property
    def provenance(self) -> list[dict]:
        """How the labels were made, as plain dicts in order: the run step(s) (method, options,
        model + fingerprint, inputs + fingerprints, version, time), every manual edit still in
        effect (time, kind, reason, label, cells) and the final threshold. See
        :mod:`napari_cellama.core.provenance`."""
        steps = [dict(s) for s in self._steps]
        steps += [edit_step(r) for r in self.history_records()]
        steps.append({"step": STEP_THRESHOLD, "min_confidence": self._min_confidence,
                      "max_distance": self._max_distance})
        return steps

    def snapshot_parts(self) -> tuple:
        """``(table, state)``: an independent copy of everything, cheap enough for the GUI thread
        (~0.1 s on 84k cells); :func:`from_snapshot` rebuilds the annotation in a worker."""
        return (self.table, self.state())

    def snapshot(self):
        """An independent copy (labels, edits, threshold, colours, provenance), e.g. for a
        background writer, so that the user can keep editing while it is saved."""
        return from_snapshot(self.snapshot_parts())


def from_snapshot(parts):
    """The :class:`~napari_cellama.core.Annotation` of :meth:`ProvenanceMixin.snapshot_parts`
    (an Annotation is passed through)."""
    from .annotation import Annotation

    if isinstance(parts, Annotation):
        return parts
    table, state = parts
    return Annotation.from_state(table, state)
