"""Demo tissue: layout of the planted domains, nucleus/cell polygons and masks, cell ids,
transcripts and the DAPI image."""

from __future__ import annotations

import numpy as np

from ._design import (
    COMPOSITION,
    CONTROL_FEATURES,
    MARGIN,
    PIXEL_SIZE,
    SPACING,
    TISSUE_SIZE,
    _hmulti_table,
)

# --------------------------------------------------------------------------- tissue layout


def _layout(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus centres (um, slide coordinates) and the planted domain of each."""
    w, h = TISSUE_SIZE
    dy = SPACING * np.sqrt(3) / 2
    pts = []
    for j in range(int(h / dy) + 2):
        for i in range(int(w / SPACING) + 2):
            pts.append((i * SPACING + (j % 2) * SPACING / 2, j * dy))
    p = np.array(pts) + rng.uniform(-1.5, 1.5, size=(len(pts), 2))
    cx, cy = w / 2, h / 2
    inside = ((p[:, 0] - cx) / (w / 2 - 3)) ** 4 + ((p[:, 1] - cy) / (h / 2 - 3)) ** 4 <= 1
    p = p[inside]
    niche = np.full(len(p), "paracortex", dtype=object)
    for fx, fy, r in ((130.0, 110.0, 62.0), (255.0, 215.0, 55.0)):
        niche[(p[:, 0] - fx) ** 2 + (p[:, 1] - fy) ** 2 <= r**2] = "follicle"
    niche[p[:, 0] > 330.0] = "medulla"
    return p + MARGIN, niche


def _assign_types(niche: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(len(niche), dtype=object)
    for name, comp in COMPOSITION.items():
        idx = np.flatnonzero(niche == name)
        types = list(comp)
        prob = np.array([comp[t] for t in types])
        out[idx] = np.array(types, dtype=object)[
            rng.choice(len(types), size=len(idx), p=prob / prob.sum())
        ]
    return out


# --------------------------------------------------------------------------- geometry


def _ellipses(centres, a, b, theta, n=24) -> list:
    import shapely

    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ct, st = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x = centres[:, 0:1] + a[:, None] * np.cos(t) * ct - b[:, None] * np.sin(t) * st
    y = centres[:, 1:2] + a[:, None] * np.cos(t) * st + b[:, None] * np.sin(t) * ct
    return shapely.polygons(np.stack([x, y], axis=-1))


def _rasterise(polys, shape) -> np.ndarray:
    """Label image (uint32, label = row + 1) of polygons; pixel centre inside; first wins."""
    from skimage.draw import polygon as draw_polygon

    out = np.zeros(shape, dtype=np.uint32)
    for i, poly in enumerate(polys):
        xy = np.asarray(poly.exterior.coords)
        rr, cc = draw_polygon(xy[:, 1] / PIXEL_SIZE - 0.5, xy[:, 0] / PIXEL_SIZE - 0.5, shape)
        free = out[rr, cc] == 0
        out[rr[free], cc[free]] = i + 1
    return out


def _ring(poly) -> np.ndarray:
    """Closed exterior ring (first vertex repeated), float32, clockwise as XOA writes it."""
    import shapely

    poly = shapely.orient_polygons(poly, exterior_cw=True)
    return np.asarray(poly.exterior.coords, dtype=np.float32)



def _cell_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """XOA cell ids: 8 letters a..p (the uint32 prefix as hex nibbles) + ``-1``, sorted."""
    prefixes = np.sort(2**24 + rng.choice(2**28 - 2**24, size=n, replace=False)).astype(np.uint32)
    return encode_cell_ids(prefixes)


def encode_cell_ids(prefixes: np.ndarray, suffix: int = 1) -> np.ndarray:
    """The Xenium string of uint32 cell-id prefixes (``0 -> a`` ... ``15 -> p`` per nibble)."""
    prefixes = np.asarray(prefixes, dtype=np.uint32)
    shifts = np.array([28, 24, 20, 16, 12, 8, 4, 0], dtype=np.uint32)
    chars = (((prefixes[:, None] >> shifts) & 0xF) + ord("a")).astype(np.uint8)
    return np.char.add(chars.view("S8").ravel().astype("U8"), f"-{suffix}")


def decode_cell_ids(cell_ids) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_cell_ids`: (uint32 prefix, suffix) arrays."""
    ids = np.asarray(cell_ids).astype(str)
    prefix = np.array([s.split("-")[0] for s in ids])
    suffix = np.array([int(s.split("-")[1]) for s in ids], dtype=np.uint32)
    nib = np.frombuffer(prefix.astype("S8").tobytes(), dtype=np.uint8).reshape(-1, 8).astype(
        np.uint32
    ) - ord("a")
    shifts = np.array([28, 24, 20, 16, 12, 8, 4, 0], dtype=np.uint32)
    return (nib << shifts).sum(axis=1).astype(np.uint32), suffix


def _gene_ids(panel) -> list[str]:
    """Ensembl id of each hMulti panel gene (from the package's table), else the symbol."""
    meta = _hmulti_table()
    ids = dict(zip(meta["Gene"], meta["Ensembl_ID"]))
    return [ids.get(g, g) for g in panel]


def _pixel_groups(mask: np.ndarray):
    """Flat pixel indices grouped by label: (order, start, stop) with start/stop per label."""
    flat = mask.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_labels = flat[order]
    n = int(mask.max())
    start = np.searchsorted(sorted_labels, np.arange(1, n + 1), side="left")
    stop = np.searchsorted(sorted_labels, np.arange(1, n + 1), side="right")
    return order, start, stop


def _make_transcripts(expr, panel, cell_mask, nucleus_mask, rng) -> dict:
    from scipy import ndimage

    h, w = cell_mask.shape
    n_cells, n_genes = expr.shape
    order, start, stop = _pixel_groups(cell_mask)
    size = stop - start
    # counted transcripts: one per count, inside the cell's mask
    cell_of = np.repeat(np.repeat(np.arange(n_cells), n_genes), expr.ravel())
    gene_of = np.repeat(np.tile(np.arange(n_genes), n_cells), expr.ravel())
    qv_good = (20.0 + 20.0 * rng.beta(6.0, 1.0, size=len(cell_of))).astype(np.float32)
    # low-quality (qv < 20) copies drawn from the same cells' genes: never counted
    n_low = int(0.06 * len(cell_of))
    pick = rng.integers(0, len(cell_of), size=n_low)
    cell_low, gene_low = cell_of[pick], gene_of[pick]
    qv_low = rng.uniform(5.0, 19.9, size=n_low).astype(np.float32)
    cells_all = np.concatenate([cell_of, cell_low])
    genes_all = np.concatenate([gene_of, gene_low])
    qv_all = np.concatenate([qv_good, qv_low])
    pix = order[start[cells_all] + (rng.random(len(cells_all)) * size[cells_all]).astype(np.int64)]
    row, col = np.divmod(pix, w)
    x = (col + rng.random(len(pix))) * PIXEL_SIZE
    y = (row + rng.random(len(pix))) * PIXEL_SIZE
    names = np.asarray(list(panel), dtype=object)[genes_all]
    # ambient transcripts anywhere over the tissue box, and negative controls
    gene_freq = expr.sum(axis=0) / max(expr.sum(), 1)
    n_amb = int(0.03 * len(cell_of))
    n_ctrl = max(int(0.004 * len(cell_of)), len(CONTROL_FEATURES))
    x0, x1 = MARGIN - 5, MARGIN + TISSUE_SIZE[0] + 5
    y0, y1 = MARGIN - 5, MARGIN + TISSUE_SIZE[1] + 5
    xa = rng.uniform(x0, x1, size=n_amb + n_ctrl)
    ya = rng.uniform(y0, y1, size=n_amb + n_ctrl)
    amb_names = np.concatenate(
        [
            np.asarray(list(panel), dtype=object)[rng.choice(n_genes, size=n_amb, p=gene_freq)],
            np.asarray([f for f, _ in CONTROL_FEATURES], dtype=object)[
                rng.integers(0, len(CONTROL_FEATURES), n_ctrl)
            ],
        ]
    )
    qv_amb = (20.0 + 20.0 * rng.beta(4.0, 1.0, size=n_amb + n_ctrl)).astype(np.float32)
    x = np.concatenate([x, xa]).astype(np.float32)
    y = np.concatenate([y, ya]).astype(np.float32)
    names = np.concatenate([names, amb_names])
    qv = np.concatenate([qv_all, qv_amb])
    r = np.clip((y.astype(np.float64) / PIXEL_SIZE).astype(np.int64), 0, h - 1)
    c = np.clip((x.astype(np.float64) / PIXEL_SIZE).astype(np.int64), 0, w - 1)
    cell_index = cell_mask[r, c].astype(np.int64) - 1
    in_nucleus = nucleus_mask[r, c] > 0
    dist = ndimage.distance_transform_edt(nucleus_mask == 0) * PIXEL_SIZE
    nucleus_distance = np.where(in_nucleus, 0.0, dist[r, c]).astype(np.float32)
    z = rng.normal(10.0, 1.5, size=len(x)).astype(np.float32)
    # XOA writes transcripts field of view by field of view: sort by 200 um tiles, then x
    fov = (y // 200).astype(np.int64) * 1000 + (x // 200).astype(np.int64)
    o = np.lexsort((x, fov))
    return {
        "x": x[o],
        "y": y[o],
        "z": z[o],
        "qv": qv[o],
        "feature_name": names[o],
        "cell_index": cell_index[o],
        "overlaps_nucleus": in_nucleus[o].astype(np.uint8),
        "nucleus_distance": nucleus_distance[o],
    }


def _make_dapi(cell_mask, nucleus_mask, centres, a, b, theta, rng) -> np.ndarray:
    from scipy import ndimage

    h, w = cell_mask.shape
    img = np.full((h, w), 95.0, dtype=np.float32)
    img[cell_mask > 0] += 60.0  # cytoplasmic autofluorescence
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, size=(h, w)).astype(np.float32), 1.6)
    noise /= noise.std() + 1e-6
    rows, cols = np.nonzero(nucleus_mask)
    lab = nucleus_mask[rows, cols].astype(np.int64) - 1
    xs = (cols + 0.5) * PIXEL_SIZE - centres[lab, 0]
    ys = (rows + 0.5) * PIXEL_SIZE - centres[lab, 1]
    ct, st = np.cos(theta[lab]), np.sin(theta[lab])
    u = (xs * ct + ys * st) / a[lab]
    v = (-xs * st + ys * ct) / b[lab]
    r2 = np.clip(u * u + v * v, 0.0, 1.0)
    brightness = np.exp(rng.normal(np.log(2400.0), 0.25, size=len(a)))
    texture = 1.0 + 0.28 * noise[rows, cols]
    img[rows, cols] += brightness[lab] * (0.55 + 0.45 * np.sqrt(1.0 - r2)) * texture
    img = ndimage.gaussian_filter(img, 1.3)
    img += rng.normal(0.0, 1.0, size=(h, w)).astype(np.float32) * np.sqrt(img) * 1.5
    return np.clip(np.round(img), 0, 65535).astype(np.uint16)


