"""Re-run an export's recorded steps (Qt-free): ``napari-cellama replay`` and "Export as script".

:func:`replay_export` reads ``uns['cellama']['provenance']`` of an ``.h5ad`` / ``.zarr`` export
(:mod:`napari_cellama.core.provenance`), checks that the recorded inputs are there and
unchanged (content fingerprints), re-runs the recorded run(s) with the recorded options and
model - a label transfer, a marker-prototype run (its markers are recorded), or a transfer
combined with a prototype run (:mod:`napari_cellama.core.run_annotations`, as the dock made
it) - applies the recorded manual edits in order and the threshold, and compares the labels
with the export's. :func:`replay_script` writes the same steps as a readable Python script
that uses the public API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .._constants import CELL_TYPE, LABEL_SOURCE, REVIEWED
from ..core.provenance import (
    STEP_COMBINE,
    STEP_EDIT,
    STEP_PROTOTYPES,
    STEP_THRESHOLD,
    STEP_TRANSFER,
    content_fingerprint,
    last_run,
    run_steps,
)
from ..validators import CellamaInputError

REPLAY_COLUMNS = (CELL_TYPE, LABEL_SOURCE, REVIEWED)
"""Columns of the replay's CSV (index: ``cell_id``)."""
REPLAYABLE = ([STEP_TRANSFER], [STEP_PROTOTYPES], [STEP_TRANSFER, STEP_PROTOTYPES, STEP_COMBINE])
"""The sequences of run steps a replay re-makes."""


@dataclass
class ReplayResult:
    """What a replay made and how it compares with the export."""

    annotation: object
    """The re-made :class:`~napari_cellama.core.Annotation` (edits and threshold applied)."""
    expected: pd.Series
    """The export's labels (``cell_type`` per cell id)."""
    steps: list
    notes: list = field(default_factory=list)
    """Warnings (e.g. an input whose fingerprint changed, replayed with ``allow_changed``)."""

    @property
    def n_different(self) -> int:
        got = self.annotation.cell_type.astype(str)
        exp = self.expected.reindex(got.index).astype(str)
        return int((got != exp).sum())

    @property
    def identical(self) -> bool:
        return self.n_different == 0 and len(self.expected) == self.annotation.n_cells

    def table(self) -> pd.DataFrame:
        t = self.annotation.table
        return t[[c for c in REPLAY_COLUMNS if c in t]]


def read_provenance(path) -> tuple[list, pd.Series]:
    """``(provenance steps, exported labels)`` of an ``.h5ad`` or SpatialData ``.zarr`` export."""
    from .session_file import load_session

    p = Path(path).expanduser()
    if not p.exists():
        raise CellamaInputError(f"export not found: {p} (give the .h5ad or .zarr written by napari-cellama)")
    if not (p.name.lower().endswith(".h5ad") or p.is_dir()):
        raise CellamaInputError(f"{p} is not an .h5ad file or a .zarr folder written by napari-cellama")
    saved = load_session(p)
    steps = saved.recorded_provenance
    if not steps:
        raise CellamaInputError(
            f"{p} holds no provenance (uns['cellama']['provenance']); it was written by an older "
            "napari-cellama: re-export it with this version to replay it"
        )
    return steps, saved.annotation.cell_type.astype(str)


def check_inputs(run: dict, query=None, reference=None, allow_changed: bool = False) -> tuple[dict, list]:
    """The input paths to replay ``run`` from (``query`` / ``reference`` replace moved files) and
    notes; an input that is missing, or whose content changed (unless ``allow_changed``), is an
    input error that says what to do. A prototype run has a query only."""
    recorded = run.get("inputs") or {}
    paths, notes = {}, []
    given_paths = (("query", query), ("reference", reference))
    if run.get("step") == STEP_PROTOTYPES:
        given_paths = given_paths[:1]
    for key, given in given_paths:
        rec = recorded.get(key) or {}
        path = given if given is not None else rec.get("path")
        if not path:
            raise CellamaInputError(f"the export records no {key} path; pass --{key} PATH")
        p = Path(path).expanduser()
        if not p.exists():
            raise CellamaInputError(
                f"the {key} recorded in the export is missing: {p}; if it moved, pass --{key} NEW_PATH")
        want = rec.get("fingerprint")
        got = content_fingerprint(p)
        if want and got != want:
            msg = (f"the {key} changed since the run: {p} has content fingerprint {got}, the export "
                   f"recorded {want}")
            if not allow_changed:
                raise CellamaInputError(msg + "; pass the original file, or --allow-changed to replay anyway")
            notes.append(msg + " (replayed anyway: labels may differ)")
        paths[key] = p
    if run.get("step") == STEP_PROTOTYPES:
        return paths, notes
    paths["label_key"] = recorded.get("label_key") or (run.get("params") or {}).get("label_key")
    if not paths["label_key"]:
        raise CellamaInputError("the export records no label key of the reference")
    return paths, notes


def transfer_options(run: dict):
    """The :class:`~napari_cellama.core.TransferOptions` a run step recorded."""
    from ..core.transfer_options import TransferOptions

    opts = dict(run.get("options") or {})
    if opts:  # recorded before the co-clustering evidence existed: it was off then (on by default since)
        opts.setdefault("unknown_coclustering", False)
    known = set(TransferOptions.__dataclass_fields__)
    try:
        return TransferOptions(**{k: v for k, v in opts.items() if k in known})
    except TypeError as err:
        raise CellamaInputError(f"the export's recorded transfer options are damaged ({err})") from None


def prototype_options(run: dict):
    """The :class:`~napari_cellama.core.PrototypeOptions` a prototype run step recorded."""
    from ..core.options import PrototypeOptions

    opts = dict(run.get("options") or {})
    known = set(PrototypeOptions.__dataclass_fields__)
    try:
        return PrototypeOptions(**{k: v for k, v in opts.items() if k in known})
    except (TypeError, CellamaInputError) as err:
        raise CellamaInputError(f"the export's recorded prototype options are damaged ({err})") from None


def model_of(run: dict):
    """``(model name, embedding mode, device)`` recorded in a run step."""
    model = (run.get("model") or {}).get("name")
    return model, run.get("embedding_mode"), "cpu" if run.get("device") in (None, "cpu") else "auto"


def apply_steps(annotation, steps) -> None:
    """Apply the recorded manual edits (in order) and the final threshold to ``annotation``."""
    for s in steps:
        kind = s.get("step")
        if kind == STEP_EDIT:
            cells = s.get("cell_ids") or []
            if s.get("keep_labels"):
                annotation.mark_reviewed(cells, reason=s.get("reason") or "review")
            elif s.get("label") is None:
                annotation.clear_manual(cells)
            else:
                annotation.assign(cells, s["label"], reason=s.get("reason") or "manual",
                                  review=bool(s.get("review")))
        elif kind == STEP_THRESHOLD:
            annotation.set_threshold(s.get("min_confidence") or 0.0, s.get("max_distance"))


@dataclass
class ReplayPlan:
    """An export's recorded steps, checked and ready to replay (see :func:`plan_replay`)."""

    steps: list
    expected: pd.Series
    run: dict
    """The last transfer or prototype run step."""
    paths: dict
    """The input paths of the first run (``query``, ``reference``, ``label_key``)."""
    notes: list
    runs: list = field(default_factory=list)
    """``(run step, input paths)`` of each transfer / prototype run, in order."""

    @property
    def kinds(self) -> list:
        """The run steps, e.g. ``["transfer", "prototypes", "combine"]``."""
        return [s.get("step") for s in run_steps(self.steps)]


def plan_replay(path, *, query=None, reference=None, allow_changed: bool = False) -> ReplayPlan:
    """Read and check an export's steps and inputs before anything long runs (input errors here)."""
    steps, expected = read_provenance(path)
    kinds = [s.get("step") for s in run_steps(steps)]
    if kinds not in REPLAYABLE:
        raise CellamaInputError(
            f"the export records {' + '.join(kinds) if kinds else 'no run'}; replay re-makes a label transfer, "
            "a marker-prototype run, or a transfer combined with a prototype run")
    runs, notes = [], []
    for run in run_steps(steps):
        if run.get("step") == STEP_COMBINE:
            continue
        paths, run_notes = check_inputs(run, query, reference, allow_changed)
        notes += run_notes
        if run.get("step") == STEP_TRANSFER:
            transfer_options(run)  # damaged options fail here
        else:
            prototype_options(run)
            if not (run.get("params") or {}).get("markers"):
                raise CellamaInputError("the export's prototype run records no markers (written by an older "
                                        "napari-cellama); re-run the prototypes and export again to replay it")
        runs.append((run, paths))
    return ReplayPlan(steps, expected, runs[-1][0], runs[0][1], notes, runs)


def _embedder(run: dict, cache, notes: list):
    from ..core.embedding_options import make_embedder

    model, mode, device = model_of(run)
    kwargs = {"mode": mode} if mode else {}
    embedder = make_embedder(model=model, device=device, cache=cache, **kwargs)
    want = (run.get("model") or {}).get("fingerprint")
    if want:
        got = embedder.fingerprint()
        if got != want:
            notes.append(f"the model {model} now has fingerprint {got}, the export recorded {want}")
    return embedder


def replay_export(path, *, query=None, reference=None, allow_changed: bool = False, cache=None,
                  callback=None, plan: ReplayPlan | None = None) -> ReplayResult:
    """Re-run the steps recorded in the export at ``path`` (see the module docstring)."""
    from ..core import annotate_by_prototypes, run_transfer
    from ..core.provenance import annotation_from_result
    from ..core.run_annotations import combined_annotation, prototype_annotation
    from .readers import read_query, read_reference

    if plan is None:
        plan = plan_replay(path, query=query, reference=reference, allow_changed=allow_changed)
    notes = list(plan.notes)
    runs = iter(plan.runs)
    queries: dict = {}
    annotation, prototypes = None, None
    for step in plan.steps:
        kind = step.get("step")
        if kind in (STEP_TRANSFER, STEP_PROTOTYPES):
            run, paths = next(runs)
            key = str(paths["query"])
            if key not in queries:
                queries[key] = read_query(paths["query"])
            q = queries[key]
        if kind == STEP_TRANSFER:
            embedder = _embedder(run, cache, notes)
            r = read_reference(paths["reference"])
            result = run_transfer(q, r, paths["label_key"], embedder=embedder, options=transfer_options(run),
                                  callback=callback)
            inputs = {"query": paths["query"], "reference": paths["reference"], "label_key": paths["label_key"]}
            annotation = annotation_from_result(result, inputs)
        elif kind == STEP_PROTOTYPES:
            prototypes = annotate_by_prototypes(q, run["params"]["markers"], prototype_options(run),
                                                embedder=_embedder(run, cache, notes), callback=callback)
            if annotation is None:  # the prototype labels alone (else: combined with the transfer next)
                annotation = prototype_annotation(prototypes, {"query": paths["query"]})
        elif kind == STEP_COMBINE:
            if step.get("min_confidence") is not None:  # the threshold the combination used
                annotation.set_threshold(step["min_confidence"], annotation.max_distance)
            annotation = combined_annotation(annotation, prototypes, step.get("where") or "unknown",
                                             method=step.get("method"))
        elif kind in (STEP_EDIT, STEP_THRESHOLD):
            apply_steps(annotation, [step])
    return ReplayResult(annotation, plan.expected, plan.steps, notes)


# --------------------------------------------------------------------------- export as script
def _lit(value) -> str:
    return json.dumps(value, ensure_ascii=False).replace("null", "None").replace("true", "True") \
        .replace("false", "False") if not isinstance(value, str) else repr(value)


def _embedder_line(run: dict) -> str:
    model, mode, device = model_of(run)
    mode_arg = f", mode={mode!r}" if mode else ""
    return f"make_embedder(model={model!r}{mode_arg}, device={device!r})"


def _run_lines(run: dict, first: bool) -> list[str]:
    """The script lines re-making one transfer or prototype run."""
    inputs = run.get("inputs") or {}
    query = (inputs.get("query") or {}).get("path")
    if not query:
        raise CellamaInputError(f"the {run.get('step')} run does not record its query path")
    options = {k: v for k, v in (run.get("options") or {}).items()}
    model = (run.get("model") or {})
    lines = ["", f"# {run.get('step')} run of {run.get('time')} ({run.get('package')}); model {model.get('name')} "
             f"(fingerprint {model.get('fingerprint')}), query fingerprint {(inputs.get('query') or {}).get('fingerprint')}",
             f"query = read_query({query!r})"]
    if run.get("step") == STEP_TRANSFER:
        reference = (inputs.get("reference") or {}).get("path")
        if not reference:
            raise CellamaInputError("the run does not record its query and reference paths")
        label_key = inputs.get("label_key")
        lines += [f"# reference fingerprint {(inputs.get('reference') or {}).get('fingerprint')}",
                  f"reference = read_reference({reference!r})",
                  f"options = TransferOptions(**{_lit(options)})",
                  f"result = run_transfer(query, reference, {label_key!r}, embedder={_embedder_line(run)}, "
                  "options=options)",
                  f"annotation = annotation_from_result(result, {{'query': {query!r}, 'reference': {reference!r}, "
                  f"'label_key': {label_key!r}}})"]
    else:
        markers = (run.get("params") or {}).get("markers") or {}
        lines += [f"markers = {_lit(markers)}",
                  f"prototypes = annotate_by_prototypes(query, markers, PrototypeOptions(**{_lit(options)}), "
                  f"embedder={_embedder_line(run)})"]
        if first:
            lines.append(f"annotation = prototype_annotation(prototypes, {{'query': {query!r}}})")
    return lines


def replay_script(steps, out_csv: str = "labels.csv") -> str:
    """A readable Python script that re-makes the labels of ``steps`` with the public API:
    read the recorded inputs, re-run the recorded run(s) (a transfer, a prototype run, or a
    transfer combined with a prototype run) with the recorded options and model, apply the
    manual edits in order and the threshold, write ``out_csv``."""
    kinds = [s.get("step") for s in run_steps(steps)]
    if kinds not in REPLAYABLE:
        raise CellamaInputError("this annotation records no label transfer or prototype run to write as a script")
    run = last_run([s for s in steps if s.get("step") != STEP_COMBINE])
    lines = [
        '"""Re-make the labels of a napari-cellama annotation.',
        "",
        f"Written by {run.get('package')}: {' + '.join(kinds)}, then the manual edits in the order they were",
        "made and the threshold.",
        '"""',
        "",
        "from napari_cellama.core import (PrototypeOptions, TransferOptions, annotate_by_prototypes, make_embedder,",
        "                                 run_transfer)",
        "from napari_cellama.core.provenance import annotation_from_result",
        "from napari_cellama.core.run_annotations import combined_annotation, prototype_annotation",
        "from napari_cellama.io import read_query, read_reference, write_cells_csv",
        "",
        f"OUT = {str(out_csv)!r}",
    ]
    n_edits = 0
    for s in steps:
        kind = s.get("step")
        if kind in (STEP_TRANSFER, STEP_PROTOTYPES):
            lines += _run_lines(s, first=kind == kinds[0])
        elif kind == STEP_COMBINE:
            lines += ["", f"# transfer combined with the prototype labels where it says {s.get('where')}"]
            if s.get("min_confidence") is not None:
                lines.append(f"annotation.set_threshold({s['min_confidence']!r}, annotation.max_distance)")
            lines.append(f"annotation = combined_annotation(annotation, prototypes, {s.get('where') or 'unknown'!r}, "
                         f"method={s.get('method')!r})")
        elif kind == STEP_EDIT:
            if not n_edits:
                lines += ["", "# manual edits, in the order they were made"]
            n_edits += 1
            cells = _lit(list(s.get("cell_ids") or []))
            reason = s.get("reason") or "manual"
            lines.append(f"# {s.get('time')}: {s.get('n_cells')} cells ({reason})")
            if s.get("keep_labels"):
                lines.append(f"annotation.mark_reviewed({cells}, reason={reason!r})")
            elif s.get("label") is None:
                lines.append(f"annotation.clear_manual({cells})")
            else:
                review = ", review=True" if s.get("review") else ""
                lines.append(f"annotation.assign({cells}, {s['label']!r}, reason={reason!r}{review})")
        elif kind == STEP_THRESHOLD:
            lines += ["", "# the Unassigned threshold",
                      f"annotation.set_threshold({s.get('min_confidence') or 0.0!r}, {s.get('max_distance')!r})"]
    if not n_edits:
        lines += ["", "# manual edits: none"]
    lines += ["", "write_cells_csv(OUT, annotation)", "print(f'wrote {annotation.n_cells} cells to {OUT}')", ""]
    return "\n".join(lines)


def write_replay_script(path, annotation, out_csv: str = "labels.csv") -> Path:
    """Write :func:`replay_script` of ``annotation.provenance`` to ``path`` (atomically)."""
    from ..atomic import write_file
    from .destinations import check_destination

    text = replay_script(annotation.provenance, out_csv)
    p = check_destination(path, "Python script")
    write_file(p, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), suffix=".py")
    return p
