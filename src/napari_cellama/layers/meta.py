"""Layer metadata descriptors (``metadata["cellama"]``) and finding napari-cellama layers by kind.

The metadata of every napari-cellama layer is plain and serialisable: ``kind``,
``xenium_root``, ``pixel_size`` and per-kind descriptors (category names, hidden names, hex
colours); lookup tables live in the layer's data (:class:`~napari_cellama.layers.lookup.LabelLookup`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .._constants import LAYER_META


def _meta(kind: str, root: Path | str | None, pixel_size: float | None, **extra) -> dict:
    return {
        LAYER_META: {
            "kind": kind,
            "xenium_root": str(root) if root is not None else None,
            "pixel_size": pixel_size,
            **extra,
        }
    }


def layer_kind(layer) -> str | None:
    """The napari-cellama kind of a layer (``"cells"``, ``"morphology"``, ...) or None."""
    meta = getattr(layer, "metadata", None) or {}
    info = meta.get(LAYER_META)
    return info.get("kind") if isinstance(info, dict) else None


def layer_info(layer) -> dict:
    """``layer.metadata["cellama"]`` (empty dict for other layers)."""
    info = (getattr(layer, "metadata", None) or {}).get(LAYER_META)
    return info if isinstance(info, dict) else {}


def find_layers(layers: Iterable, kind: str, root: str | Path | None = None) -> list:
    """Layers of one kind (optionally of one Xenium run), in layer-list order.

    ``layers`` is ``viewer.layers`` (or any iterable of layers).
    """
    out = []
    for layer in layers:
        info = layer_info(layer)
        if info.get("kind") != kind:
            continue
        if root is not None and info.get("xenium_root") != str(Path(root)):
            continue
        out.append(layer)
    return out
