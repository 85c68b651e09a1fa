"""Grouping the review queue off the GUI thread (issue 16: on the full section grouping took 3 s
on the GUI thread), and ``ReviewQueue.peek`` (what the prefetch reads ahead).

Core: :meth:`ReviewQueue.iter_grouping` computes the same groups as ``set_grouping`` without
touching the queue, in steps a worker can stop at; stale groups (filters changed meanwhile)
are refused. GUI (real viewer, under xvfb-run -a; a 150-cell patch of the real crop, the fast
hash embedder): ticking "in small groups" starts the dock's job and returns at once, the groups
land, and Cancel leaves the queue cell by cell with the box unticked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def _annotation(n: int, seed: int = 1):
    from napari_cellama.core import Annotation

    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"transferred_type": rng.choice(list("AB"), n), "confidence": rng.random(n),
                      "distance": rng.random(n)}, index=[f"c{i:05d}" for i in range(n)])
    return Annotation(t), rng.random((n, 2)) * 600


def test_iter_grouping_matches_set_grouping_and_leaves_the_queue_alone():
    from napari_cellama.core._progress import run
    from napari_cellama.core.review_queue import STAGE_GROUP_QUEUE, ReviewQueue

    ann, xy = _annotation(5000)
    ref = ReviewQueue(ann)
    n = ref.set_grouping(xy, 30.0, max_cells=6)
    queue = ReviewQueue(ann)
    plain = list(queue.cell_ids)
    steps = []
    grouping = run(queue.iter_grouping(xy, 30.0, max_cells=6), lambda *s: steps.append(s))
    assert len(steps) >= 3 and {s[0] for s in steps} == {STAGE_GROUP_QUEUE} and steps[-1][1] == steps[-1][2]
    assert queue.n_groups == 0 and list(queue.cell_ids) == plain  # nothing applied yet
    assert queue.apply_grouping(grouping) == n == queue.n_groups
    assert list(queue.cell_ids) == list(ref.cell_ids)
    assert [queue.group_at(i) for i in range(len(queue))] == [ref.group_at(i) for i in range(len(ref))]
    # groups of an older filtering are refused
    stale = run(queue.iter_grouping(xy, 30.0))
    queue.set_filters(below=0.5)
    assert queue.apply_grouping(stale) == -1  # (set_filters regrouped the queue itself)
    # a stopped job changes nothing
    other = ReviewQueue(ann)
    gen = other.iter_grouping(xy, 30.0)
    next(gen)
    gen.close()
    assert other.n_groups == 0 and list(other.cell_ids) == plain


def test_peek_is_next_without_moving():
    from napari_cellama.core.review_queue import ReviewQueue

    ann, _ = _annotation(50)
    queue = ReviewQueue(ann)
    first = queue.peek()
    assert queue.position == -1 and queue.next() == first
    second = queue.peek()
    ann.mark_reviewed([second])
    assert queue.peek() != second and queue.peek() == queue.next()
    queue.position = len(queue) - 1
    assert queue.peek() is None


@pytest.mark.gui
def test_grouping_runs_in_the_worker_lands_and_can_be_cancelled(viewer, qtbot, crop_dir, tmp_path):
    from _hash_embedder import HashEmbedder
    from test_review_widget import TIMEOUT, _setup

    from napari_cellama.core import Annotation

    _session, _transfer, review = _setup(viewer, qtbot, crop_dir, tmp_path, HashEmbedder())
    queue, box = review.queue, review.queue_panel.group_check
    started = []
    review.runner.started.connect(started.append)
    box.setChecked(True)
    assert started == ["grouping the review queue"] and review.busy  # the tick returned, the worker groups
    assert queue.n_groups == 0
    qtbot.waitUntil(lambda: queue.n_groups > 0 and not review.busy, timeout=TIMEOUT)
    assert "groups" in review.queue_panel.current_label.text()
    review.next_cell()
    assert queue.group_at() == 0
    box.setChecked(False)  # lifted at once, no job
    assert queue.n_groups == 0 and not review.busy
    box.setChecked(True)
    review.runner.cancel()
    qtbot.waitUntil(lambda: not review.busy, timeout=TIMEOUT)
    assert not box.isChecked() and queue.n_groups == 0
    assert "cancelled" in review.queue_panel.current_label.text()
    assert review.next_cell() is not None and queue.group_at() is None  # still walks cell by cell
    # a new transfer shown with the box ticked: its queue is grouped too, the box stays ticked
    box.setChecked(True)
    qtbot.waitUntil(lambda: queue.n_groups > 0 and not review.busy, timeout=TIMEOUT)
    result = _session.transfer.result
    again = Annotation(result.table, types=sorted(set(result.reference_labels)), palette=_session.type_colors)
    _transfer.show_annotation(again, result)
    qtbot.waitUntil(lambda: review.queue is not queue and review.queue.n_groups > 0 and not review.busy,
                    timeout=TIMEOUT)
    assert box.isChecked() and review.queue.annotation is again and review.data is not None
