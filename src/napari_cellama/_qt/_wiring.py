"""Connect a dock's handlers to the named signals of an evented object, and undo it.

Docks listen to the session's current :class:`~napari_cellama.core.Annotation` (and swap
to a new one when the transfer is re-run or a session restored): ``rewire(old, new,
handlers)`` disconnects the handlers from ``old`` and connects them to ``new``, where
``handlers`` maps a signal name (``"labels_changed"``, ``"colors_changed"`` ...) to the one
handler that needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping


def rewire(old, new, handlers: Mapping[str, Callable]) -> None:
    """Move ``handlers`` (``{signal name: callback}``) from ``old`` to ``new`` (either may be None)."""
    if old is not None:
        for name, callback in handlers.items():
            getattr(old, name).disconnect(callback, missing_ok=True)
    if new is not None:
        for name, callback in handlers.items():
            getattr(new, name).connect(callback)
