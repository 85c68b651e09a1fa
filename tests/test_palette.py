"""The one palette (``napari_cellama.core.palette``): types share colours, niches never look like types."""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_cellama._constants import (
    CONFIDENCE,
    DISTANCE,
    TRANSFERRED_TYPE,
    UNASSIGNED,
    UNASSIGNED_COLOR,
)
from napari_cellama.core import Annotation
from napari_cellama.core.palette import (
    TypeColors,
    category_colors,
    niche_color,
    niche_colors,
    palette_color,
    to_hex,
)


def _table(types):
    n = len(types)
    return pd.DataFrame({TRANSFERRED_TYPE: types, CONFIDENCE: np.linspace(0.5, 1, n), DISTANCE: np.linspace(0, 1, n)},
                        index=[f"c{i}" for i in range(n)])


def test_type_colors_are_handed_out_once_and_kept():
    tc = TypeColors()
    assert to_hex(tc.color(UNASSIGNED)) == UNASSIGNED_COLOR
    a = tc.color("T cell")
    assert a == palette_color(0)  # Unassigned takes no palette slot
    assert tc.colors(["B cell", "T cell"]) == {"B cell": palette_color(1), "T cell": a}
    tc.set("B cell", "#123456")
    assert to_hex(tc.color("B cell")) == "#123456"
    tc.set(UNASSIGNED, "#ff0000")
    assert to_hex(tc.color(UNASSIGNED)) == UNASSIGNED_COLOR  # Unassigned stays grey


def test_annotations_sharing_a_palette_give_one_type_one_colour():
    shared = TypeColors()
    first = Annotation(_table(["NK cell", "B cell", "T cell"]), palette=shared)
    # another run whose types arrive in another order, with extra types first
    second = Annotation(_table(["AAA", "T cell", "ZZZ", "B cell"]), types=["AAA", "Mono"], palette=shared)
    for t in ("B cell", "T cell"):
        assert first.color_of(t) == second.color_of(t) == shared.color(t)
    alone = Annotation(_table(["AAA", "T cell", "ZZZ", "B cell"]), types=["AAA", "Mono"])
    assert alone.color_of("T cell") != first.color_of("T cell")  # what the shared palette fixes
    # a restored annotation's own colours win and are shared from then on
    saved = Annotation(_table(["T cell"]), colors={"T cell": "#abcdef"})
    saved.use_palette(shared)
    assert to_hex(shared.color("T cell")) == "#abcdef"
    saved.add_type("Plasma")
    assert saved.color_of("Plasma") == shared.color("Plasma")
    saved.set_color("Plasma", "#010203")
    assert to_hex(shared.color("Plasma")) == "#010203"


def test_niche_palette_shares_no_colour_with_types():
    types = {to_hex(palette_color(i)) for i in range(200)}
    niches = [to_hex(niche_color(i)) for i in range(200)]
    assert len(set(niches)) == 200
    assert not set(niches) & types
    assert to_hex(UNASSIGNED_COLOR) not in niches
    # sorted names, as pandas orders a saved niche_cluster column
    assert list(niche_colors(["2", "10", "1"])) == ["1", "10", "2"]
    assert niche_colors(["1", "2"])["2"] == niche_color(1)


def test_category_colors_are_order_free():
    assert category_colors(["MS4A1", "CD3E"]) == category_colors(["CD3E", "MS4A1"])
    assert category_colors(["CD3E", UNASSIGNED])[UNASSIGNED] == tuple(
        int(UNASSIGNED_COLOR[i:i + 2], 16) / 255 for i in (1, 3, 5)) + (1.0,)


def test_unknown_is_neutral_and_distinct():
    """Unknown is a neutral slate (issue 17): not a palette colour, not the Unassigned grey."""
    import colorsys

    from napari_cellama._constants import UNKNOWN
    from napari_cellama.core.palette import TYPE_PALETTE, UNKNOWN_COLOR, to_rgba

    tc = TypeColors()
    assert to_hex(tc.color(UNKNOWN)) == UNKNOWN_COLOR != UNASSIGNED_COLOR
    assert tc.color("first type") == palette_color(0)  # Unknown takes no palette slot
    r, g, b, _ = to_rgba(UNKNOWN_COLOR)
    assert colorsys.rgb_to_hsv(r, g, b)[1] < 0.35  # neutral: low saturation
    for hex_ in TYPE_PALETTE:
        dist = np.abs(np.array(to_rgba(hex_)[:3]) - np.array([r, g, b])).sum()
        assert dist > 0.25, hex_
    grey = np.array(to_rgba(UNASSIGNED_COLOR)[:3])
    assert np.abs(grey - np.array([r, g, b])).sum() > 0.25
    ann = Annotation(_table(["B cell", "T cell"]), palette=tc)
    ann.add_type(UNKNOWN)
    assert to_hex(ann.color_of(UNKNOWN)) == UNKNOWN_COLOR
    assert category_colors([UNKNOWN, "x"])[UNKNOWN] == to_rgba(UNKNOWN_COLOR)
