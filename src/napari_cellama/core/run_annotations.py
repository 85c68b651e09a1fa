"""Annotations made by a prototype run, or by a transfer combined with one (Qt-free).

The "Marker prototypes" dock shows them and ``napari-cellama replay`` re-makes them: both
call these functions, so a replay builds exactly what the dock built. Each records its
provenance (:mod:`napari_cellama.core.provenance`): the prototype run step (options, model,
the markers it used as plain data, the query), and for a combination the transfer's run step
and the edits made on the transfer before combining, the prototype run, then a ``combine``
step with its rule (:func:`~napari_cellama.core.provenance.combine_step`).
"""

from __future__ import annotations

from .._constants import COMBINE_WHERE_UNASSIGNED, COMBINE_WHERE_UNKNOWN, LABEL_SOURCE, LABEL_SOURCE_PROTOTYPES
from .provenance import STEP_EDIT, STEP_PROTOTYPES, STEP_TRANSFER, combine_step, prototype_step


def prototype_annotation(result, inputs: dict | None = None, **kwargs):
    """An :class:`~napari_cellama.core.Annotation` of a prototype run (``label_source``
    ``prototypes``; every prototype type registered); ``inputs``: ``{"query": path}``;
    ``kwargs`` go to ``Annotation`` (``label_ids``, ``palette`` ...)."""
    from .annotation import Annotation
    from .combine import prototype_table

    kwargs.setdefault("types", [str(t) for t in result.types])
    ann = Annotation(prototype_table(result.table), **kwargs)
    ann.add_provenance(prototype_step(result, inputs))
    return ann


def combined_annotation(base, prototypes, where: str = COMBINE_WHERE_UNKNOWN, *, method: str | None = None,
                        inputs: dict | None = None, **kwargs):
    """The transfer annotation ``base`` with the prototype labels of ``prototypes`` (a
    :class:`~napari_cellama.core.PrototypeResult`) where it has none
    (:func:`~napari_cellama.core.combine_annotations`; ``where`` ``unknown`` or
    ``unassigned``, the latter with ``base``'s confidence threshold). Manual labels of
    ``base`` are kept; ``method`` names the transfer method in ``label_source``; ``inputs``:
    the prototype run's (``{"query": path}``); ``kwargs`` go to ``Annotation``."""
    from .annotation import Annotation
    from .combine import combine_annotations

    min_confidence = base.min_confidence if where == COMBINE_WHERE_UNASSIGNED else None
    table = combine_annotations(base.table, prototypes.table, where=where, min_confidence=min_confidence,
                                method=method)
    kwargs.setdefault("label_ids", base.label_ids)
    ann = Annotation(table, min_confidence=base.min_confidence, max_distance=base.max_distance,
                     types=list(base.types) + [str(t) for t in prototypes.types], **kwargs)
    for step in base.provenance:  # the transfer's run and the edits made on it, in order
        if step.get("step") in (STEP_TRANSFER, STEP_PROTOTYPES, STEP_EDIT):
            ann.add_provenance(step)
    ann.add_provenance(prototype_step(prototypes, inputs))
    n = int((table[LABEL_SOURCE] == LABEL_SOURCE_PROTOTYPES).sum())
    ann.add_provenance(combine_step(where, min_confidence, method, n))
    return ann
