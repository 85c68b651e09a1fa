"""A lazy mosaic of one Xenium run: ``rows x cols`` copies of its label (and image) pyramid in a
grid, for the 1M-cell view benchmark (``bench_big_view.py``).

:class:`Mosaic` is an array-like (``shape``, ``dtype``, ``ndim``, ``__getitem__``) that reads
each requested region from the copies it overlaps: nothing of the mosaic is ever held in
memory. Copy ``t`` (row-major) adds ``t * id_step`` to every non-zero label, so each cell of
each copy has its own id. Level ``k``'s copies sit at a pitch of ``ceil(h / 2**(L-1)) *
2**(L-1-k)`` pixels (``L`` levels), so every level is exactly level 0 taken every ``2**k``-th
pixel, as napari's multiscale placement expects; the pyramid is the run's own (built once by
the reader), extended by striding its coarsest level until the whole mosaic fits ``max_side``.
"""

from __future__ import annotations

import numpy as np


class Mosaic:
    """``grid`` copies of ``base`` (2-D), copy ``t``'s non-zero values + ``t * id_step``."""

    def __init__(self, base, grid: tuple[int, int], pitch: tuple[int, int], id_step: int = 0, dtype=None):
        self.base = base
        self.grid = grid
        self.pitch = pitch
        self.id_step = int(id_step)
        self.dtype = np.dtype(dtype or base.dtype)

    @property
    def shape(self) -> tuple:
        return (self.grid[0] * self.pitch[0], self.grid[1] * self.pitch[1])

    @property
    def ndim(self) -> int:
        return 2

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        key = tuple(k for k in key if k is not Ellipsis)
        key = key + (slice(None),) * (2 - len(key))
        drop = [isinstance(k, (int, np.integer)) for k in key]
        spans = [slice(int(k), int(k) + 1) if d else k for k, d in zip(key, drop, strict=True)]
        (y0, y1, sy), (x0, x1, sx) = (s.indices(n) for s, n in zip(spans, self.shape, strict=True))
        if sy != 1 or sx != 1:
            out = self[y0:y1, x0:x1][::sy, ::sx]
        else:
            out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=self.dtype)
            py, px = self.pitch
            bh, bw = self.base.shape
            for i in range(y0 // py, min(-(-y1 // py), self.grid[0])):
                for j in range(x0 // px, min(-(-x1 // px), self.grid[1])):
                    ly0, ly1 = max(y0 - i * py, 0), min(y1 - i * py, bh)
                    lx0, lx1 = max(x0 - j * px, 0), min(x1 - j * px, bw)
                    if ly1 <= ly0 or lx1 <= lx0:
                        continue
                    block = np.asarray(self.base[ly0:ly1, lx0:lx1]).astype(self.dtype, copy=False)
                    if self.id_step:
                        block = np.where(block > 0, block + (i * self.grid[1] + j) * self.id_step, 0)
                    oy, ox = i * py + ly0 - y0, j * px + lx0 - x0
                    out[oy:oy + block.shape[0], ox:ox + block.shape[1]] = block
        if drop[0]:
            out = out[0]
        elif drop[1]:
            out = out[:, 0]
        return out


def mosaic_levels(levels: list, grid: tuple[int, int], *, id_step: int = 0, dtype=None,
                  max_side: int = 2048) -> list[Mosaic]:
    """The mosaic pyramid of a run's pyramid ``levels`` (level 0 first)."""
    levels = list(levels)
    while max(levels[-1].shape[0] * grid[0], levels[-1].shape[1] * grid[1]) > max_side:
        levels.append(np.ascontiguousarray(np.asarray(levels[-1])[::2, ::2]))
    n = len(levels)
    unit = 2 ** (n - 1)
    h, w = levels[0].shape
    pitch0 = (-(-h // unit) * unit, -(-w // unit) * unit)
    return [Mosaic(level, grid, (pitch0[0] // 2**k, pitch0[1] // 2**k), id_step, dtype)
            for k, level in enumerate(levels)]
