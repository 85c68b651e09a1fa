"""The one palette of napari-cellama: colours of cell types, niches and genes (Qt-free).

Cell types
    :class:`TypeColors` hands each type name a colour the first time it is asked for one
    and keeps it: the ``i``-th new name gets :func:`palette_color` ``(i)``, ``Unassigned``
    is always :data:`~napari_cellama._constants.UNASSIGNED_COLOR` grey and ``Unknown`` (a
    type the reference lacks) the neutral slate :data:`UNKNOWN_COLOR`; neither takes a
    palette slot, so no real type is ever painted in a "no answer" colour. A viewer's session owns one :class:`TypeColors`, and every layer that paints
    cell types (the transfer's ``cell types``, the ``prototype cell types``, the plots)
    takes its colours from it, so one type has one colour whatever layer shows it.
Niches
    :func:`niche_color` / :func:`niche_colors` draw from a separate palette that shares no
    colour with the type palette, so a niche never reads as a cell type.
Other categories (genes of a transcript layer)
    :func:`category_colors`: sorted names take type-palette colours in turn.

Colours are RGBA float tuples in [0, 1]; :func:`to_rgba` and :func:`to_hex` convert.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Mapping

from psygnal import Signal

from .._constants import UNASSIGNED, UNASSIGNED_COLOR, UNKNOWN
from ..validators import CellamaInputError

__all__ = [
    "NICHE_PALETTE",
    "TYPE_PALETTE",
    "TypeColors",
    "UNKNOWN_COLOR",
    "category_colors",
    "niche_color",
    "niche_colors",
    "palette_color",
    "to_hex",
    "to_rgba",
]

RGBA = tuple  # (r, g, b, a) floats in [0, 1]

UNKNOWN_COLOR = "#5f7386"
"""Colour of ``Unknown`` cells: a neutral slate grey-blue, darker and bluer than the
``Unassigned`` grey #9a9a9a and far from every type colour (it was a palette orange that read
as "CD19+ B")."""

# tab10 and tab20 (greys left out and the palest lilac deepened, so that no type looks
# Unassigned), then tab20b darks
TYPE_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#b39ddb", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
)

# Okabe-Ito (colour-blind safe) and ColorBrewer Dark2 hues: none of them is a type colour
NICHE_PALETTE = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#1b9e77",
    "#7570b3", "#e7298a", "#66a61e", "#a6761d",
)


def to_rgba(color) -> tuple[float, float, float, float]:
    """``#rgb``, ``#rrggbb``, ``#rrggbbaa`` or a 3/4-sequence of floats in [0, 1] -> RGBA tuple."""
    if isinstance(color, str):
        h = color.strip().lstrip("#")
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        if len(h) not in (6, 8) or any(c not in "0123456789abcdefABCDEF" for c in h):
            raise CellamaInputError(f"colour {color!r} is not a #rrggbb hex colour")
        vals = [int(h[k:k + 2], 16) / 255.0 for k in range(0, len(h), 2)]
        if len(vals) == 3:
            vals.append(1.0)
        return tuple(float(v) for v in vals)  # type: ignore[return-value]
    vals = [float(v) for v in color]
    if len(vals) == 3:
        vals.append(1.0)
    if len(vals) != 4 or any(not 0.0 <= v <= 1.0 for v in vals):
        raise CellamaInputError(f"colour {color!r} must be 3 or 4 numbers between 0 and 1")
    return tuple(vals)  # type: ignore[return-value]


def to_hex(color, alpha: bool = False) -> str:
    """RGBA (floats) or hex -> ``#rrggbb`` (``#rrggbbaa`` with ``alpha=True``)."""
    rgba = to_rgba(color)
    n = 4 if alpha else 3
    return "#" + "".join(f"{int(round(v * 255)):02x}" for v in rgba[:n])


_TYPE_SV = ((0.55, 0.9, 0.75), (0.9, 0.7))
_NICHE_SV = ((0.45, 0.65, 0.8), (0.8, 0.6))  # other saturations and values: never a type colour


def _golden(j: int, phase: float, sv) -> tuple[float, float, float, float]:
    hue = (phase + j * 0.6180339887) % 1.0
    sat = sv[0][j % 3]
    val = sv[1][(j // 3) % 2]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return (float(r), float(g), float(b), 1.0)


def palette_color(i: int) -> tuple[float, float, float, float]:
    """The ``i``-th colour of the deterministic type palette (RGBA floats).

    The first 24 are fixed, well separated colours; after that hues step by the golden
    angle with alternating saturation and value, so colours never repeat and never grey.
    """
    if i < 0:
        raise ValueError("palette index must be >= 0")
    if i < len(TYPE_PALETTE):
        return to_rgba(TYPE_PALETTE[i])
    return _golden(i - len(TYPE_PALETTE), 0.11, _TYPE_SV)


def niche_color(i: int) -> tuple[float, float, float, float]:
    """The ``i``-th niche colour: 12 fixed colours that no cell type uses, then golden-angle
    hues with saturations and values that no type colour has."""
    if i < 0:
        raise ValueError("palette index must be >= 0")
    if i < len(NICHE_PALETTE):
        return to_rgba(NICHE_PALETTE[i])
    return _golden(i - len(NICHE_PALETTE), 0.61, _NICHE_SV)


def niche_colors(clusters: Iterable) -> dict[str, tuple]:
    """One RGBA colour per niche cluster name, in the names' string sort.

    That is the order pandas gives the categories of a saved ``niche_cluster`` column, so the
    Xenium Explorer export of that column uses the same colours as the niche layer.
    """
    names = sorted({str(c) for c in clusters})
    return {name: niche_color(i) for i, name in enumerate(names)}


def category_colors(categories: Iterable) -> dict[str, tuple]:
    """One RGBA colour per category (e.g. a gene): sorted names take type-palette colours in turn;
    ``Unassigned`` is grey, ``Unknown`` slate. The same set of names gives the same colours in any order."""
    out, i = {}, 0
    for name in sorted({str(c) for c in categories}):
        if name in (UNASSIGNED, UNKNOWN):
            out[name] = to_rgba(UNASSIGNED_COLOR if name == UNASSIGNED else UNKNOWN_COLOR)
            continue
        out[name] = palette_color(i)
        i += 1
    return out


class TypeColors:
    """Colour of each cell type name, handed out once and kept (see the module docstring).

    ``colors`` seeds the table (e.g. from a saved session): those names keep those colours
    and the palette continues after them. ``changed`` is emitted with a name whose colour
    was set to another one (layers showing that type recolour themselves); ``renamed`` with
    ``(old, new)`` when a type was renamed (layers and legends showing it rename it).
    """

    changed = Signal(str)
    renamed = Signal(str, str)
    """Emitted with ``(old, new)`` when a type was renamed (:meth:`rename`)."""

    def __init__(self, colors: Mapping | None = None):
        self._rgba: dict[str, tuple] = {UNASSIGNED: to_rgba(UNASSIGNED_COLOR), UNKNOWN: to_rgba(UNKNOWN_COLOR)}
        self._n_auto = 0
        for name, color in (colors or {}).items():
            self.set(name, color)

    def __contains__(self, name) -> bool:
        return str(name) in self._rgba

    def __len__(self) -> int:
        return len(self._rgba)

    def color(self, name) -> tuple[float, float, float, float]:
        """The colour of ``name`` (the next palette colour the first time it is asked)."""
        name = str(name)
        rgba = self._rgba.get(name)
        if rgba is None:
            rgba = self._rgba[name] = palette_color(self._n_auto)
            self._n_auto += 1
        return rgba

    def colors(self, names: Iterable) -> dict[str, tuple]:
        """``{name: RGBA}`` for ``names``, in their order (new names registered in that order)."""
        return {str(n): self.color(n) for n in names}

    def set(self, name, color) -> None:
        """Give ``name`` this colour from now on (``Unassigned`` stays grey)."""
        name = str(name)
        if name == UNASSIGNED:
            return
        rgba = to_rgba(color)
        old = self._rgba.get(name)
        self._rgba[name] = rgba
        if old is not None and old != rgba:
            self.changed.emit(name)

    def rename(self, old, new) -> None:
        """``new`` takes ``old``'s colour (unless it has one already); emits ``renamed(old, new)``
        so that every layer and legend showing ``old`` calls it ``new``."""
        old, new = str(old), str(new)
        if old in (UNASSIGNED, UNKNOWN) or old == new:
            return
        if new not in self._rgba and old in self._rgba:
            self._rgba[new] = self._rgba[old]
        self.renamed.emit(old, new)

    def as_hex(self) -> dict[str, str]:
        """``{name: '#rrggbb'}`` of every name handed a colour so far."""
        return {name: to_hex(rgba) for name, rgba in self._rgba.items()}
