"""Dock "4. Review" shows why a cluster was flagged (issue 14): the reference-fit table has each
cluster's residual ratio to the query's typical cluster, its profile residual and marker
novelty, and the info line names the Unknown call (and why the absolute fallback, where it was
used). Real viewer, the real bone-marrow crop (150 cells), the fast hash embedder (run under
xvfb-run -a)."""

from __future__ import annotations

import pytest
from test_review_widget import _setup

from napari_cellama._constants import UNKNOWN


@pytest.mark.gui
def test_fit_table_shows_the_residual_ratio_and_the_unknown_call(viewer, qtbot, crop_dir, tmp_path):
    from _hash_embedder import HashEmbedder

    from napari_cellama.core.fit_report import reference_fit_report

    session, _transfer, review = _setup(viewer, qtbot, crop_dir, tmp_path, HashEmbedder())
    report = session.fit_report
    assert report is not None and report.unknown_call
    panel = review.clusters
    assert panel.clustering == "reference-fit clusters"
    headers = [panel.table.horizontalHeaderItem(j).text() for j in range(panel.table.columnCount())]
    assert {"novelty", "residual ×typical", "residual"} <= set(headers)
    assert "unknown_call" not in headers and "unknown call" not in headers  # one value: the info line
    short = report.unknown_call.split(" - ")[0]  # the why in short; the whole call on hover
    assert f"Unknown call: {short}" in panel.info.text() and panel.info.toolTip().startswith(report.unknown_call)
    # the pairs of reference types the shared panel does not tell apart: one line, the details on hover
    res = report.panel_resolution
    assert res is not None and res.summary() in panel.info.toolTip()
    assert (f"⚠ {res.short()}" in panel.info.text()) == bool(len(res.pairs))
    ratio_col, res_col = headers.index("residual ×typical"), headers.index("residual")
    t = report.table
    for i in range(panel.table.rowCount()):
        row = t.iloc[i]
        assert panel.table.item(i, 0).text() == str(row["cluster"])
        want = "–" if row["cluster_residual"] != row["cluster_residual"] else f"{row['cluster_residual']:.2f}"
        assert panel.table.item(i, ratio_col).text() == want
        assert panel.table.item(i, res_col).text() == f"{row['profile_residual']:.2f}"
    if not report.relative:  # the crop against 30 PBMCs per type: why no ratio is shown
        assert report.unknown_call.startswith("absolute: ") and "–" in panel.table.item(0, ratio_col).text()
    # a new report (a cluster made Unknown) refreshes the table with the same columns
    clusters = review.data.fit_clusters
    table = review.result.table.copy()
    biggest = clusters.value_counts().index[0]
    table.loc[table.index.isin(clusters.index[clusters == biggest]), "cell_type"] = UNKNOWN
    session.fit_report = reference_fit_report(table, session.query, clusters, cluster_source=report.cluster_source)
    assert panel.table.item(0, 0).text() == str(biggest)
    assert f"Unknown call: {short}" in panel.info.text()
    assert panel.info.toolTip() == report.unknown_call and "⚠ the panel" not in panel.info.text()  # no reference
