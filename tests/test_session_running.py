"""``session.running``: the steps using the loaded inputs that run now (issue 17 item 5)."""

from __future__ import annotations

from napari_cellama.session import CellamaSession


def test_running_lists_jobs_and_survives_clear():
    session = CellamaSession()
    heard = []
    session.events.running.connect(heard.append)
    assert session.running == ()
    session.job_started("label transfer")
    session.job_started("niche clustering")
    assert session.running == ("label transfer", "niche clustering")
    session.clear()  # forgetting the inputs does not stop a running step
    assert session.running == ("label transfer", "niche clustering")
    session.job_finished("label transfer")
    session.job_finished("not running")  # unknown names are ignored
    assert session.running == ("niche clustering",)
    session.job_finished("niche clustering")
    assert session.running == ()
    assert heard == [("label transfer",), ("label transfer", "niche clustering"), ("niche clustering",), ()]
