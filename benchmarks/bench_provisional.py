"""Time to first useful picture: provisional labels before the final ones (issue 15).

The full bone-marrow section (84,518 cells) with the pbmc3k reference, the default method
(ensemble) in surrogate mode, an *empty* embedding cache (a temporary ``NAPARI_CELLAMA_CACHE``;
with a warm cache every sentence is found there, nothing is predicted and the provisional
labels come with the final ones). Each part runs in a fresh process:

``core``
    :func:`napari_cellama.core.iter_transfer` inside a listening
    :class:`~napari_cellama.core.provisional.ProvisionalChannel`: seconds from the start of
    the run (data already read) until each provisional table is published (the kNN vote of the
    surrogate vectors; the surrogate check's labels of the run's own method, before its exact
    re-embedding) and until the final labels; each table's agreement with the final
    ``cell_type``.
``napari``
    the real plugin in a real napari viewer (under ``xvfb-run``): the load dock reads the
    Xenium run and the reference, the transfer dock runs in surrogate mode in its worker; seconds
    from pressing Run until the provisional layer is drawn on the canvas (a screenshot forces
    the draw) and until the final ``cell types`` layer is drawn. Screenshots go to
    ``benchmarks/results/provisional_*.png``.

Run from the repository root (the napari part needs ``xvfb-run`` where no display is set)::

    python benchmarks/bench_provisional.py                 # both parts
    python benchmarks/bench_provisional.py --part core
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scale import SHARED, load, section_clusters  # noqa: E402

LABEL = "cell_type"
RESULTS = HERE / "results"


def core_child(args) -> dict:
    from napari_cellama._constants import CELL_TYPE, STAGE_PROVISIONAL
    from napari_cellama.core import iter_transfer
    from napari_cellama.core._progress import run
    from napari_cellama.core.embedding_options import EmbeddingOptions, make_embedder
    from napari_cellama.core.provisional import ProvisionalChannel, listening
    from napari_cellama.io import read_query, read_reference

    query, reference = read_query(args.data), read_reference(args.reference)
    clusters = section_clusters(args.data, 1)
    tables = []

    class Channel(ProvisionalChannel):
        def publish(self, table, **info):
            tables.append([table, dict(info), None])
            super().publish(table, **info)

    t0 = time.perf_counter()

    def step(stage, done, total):
        if stage == STAGE_PROVISIONAL:
            tables[-1][2] = time.perf_counter() - t0

    with listening(Channel()):
        result = run(iter_transfer(query, reference, LABEL, embedder=make_embedder(EmbeddingOptions(mode="surrogate",
                                                                                                    cache=True)),
                                   clusters=clusters), step)
    final_s = time.perf_counter() - t0
    final = result.table[CELL_TYPE].astype(str).to_numpy()
    return {"cells": int(len(final)), "final_s": round(final_s, 2), "load_during": load(),
            "provisional": [{"source": info.get("source", "kNN of the surrogate vectors"), "seconds": round(s, 2),
                             "agreement_with_final": round(float((t[CELL_TYPE].astype(str).to_numpy() == final).mean()), 5)}
                            for t, info, s in tables],
            "surrogate_check": {k: (result.params.get("surrogate_check") or {}).get(k)
                                for k in ("reembedded", "share_cells_reembedded", "estimated_agreement")}}


def napari_child(args) -> dict:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cellama._constants import PROVISIONAL_LAYER, STAGE_PROVISIONAL

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    names = ("1. Load Xenium and reference", "2. Transfer, review and export")
    docks = {n: viewer.window.add_plugin_dock_widget("napari-cellama", n)[1] for n in names}
    load_dock, dock = docks[names[0]], docks[names[1]]
    flags = {}

    def wait(pred, timeout=1800):
        end = time.perf_counter() + timeout
        while not pred():
            app.processEvents()
            time.sleep(0.01)
            if time.perf_counter() > end:
                raise TimeoutError("napari part timed out")

    load_dock.columns_ready.connect(lambda *a: flags.setdefault("columns", True))
    load_dock.loaded.connect(lambda *a: flags.setdefault("loaded", True))
    t_read = time.perf_counter()
    load_dock.set_reference_path(args.reference, LABEL)
    wait(lambda: "columns" in flags and not load_dock.busy)
    load_dock.set_xenium_path(args.data)
    load_dock.load()
    wait(lambda: "loaded" in flags and not load_dock.busy)
    read_s = time.perf_counter() - t_read
    dock.embedding.set_mode("surrogate")
    shots = []
    t0 = [0.0]

    def on_step(value):
        if value[0] == STAGE_PROVISIONAL and PROVISIONAL_LAYER in viewer.layers:
            img = viewer.screenshot(canvas_only=True)  # the draw of the provisional layer
            shots.append((f"provisional {len(shots) + 1}", time.perf_counter() - t0[0], img))

    dock.runner.progressed.connect(on_step)
    t0[0] = time.perf_counter()
    dock.run()
    wait(lambda: not dock.runner.busy and "cell types" in viewer.layers)
    app.processEvents()
    img = viewer.screenshot(canvas_only=True)
    shots.append(("final", time.perf_counter() - t0[0], img))
    RESULTS.mkdir(parents=True, exist_ok=True)
    from imageio import imwrite

    for name, _, im in shots:
        imwrite(RESULTS / f"provisional_{name.split()[-1]}.png", im)
    out = {"cells": int(dock.session.query.n_obs), "read_s": round(read_s, 2), "load_during": load(),
           "pictures": [{"layer": n, "seconds_drawn": round(s, 2)} for n, s, _ in shots]}
    viewer.close()
    return out


def table(results: dict) -> str:
    rows = ["| part | cells | picture | seconds from Run | agreement with final | load (1/5/15 min) |",
            "|---|---|---|---|---|---|"]
    c = results.get("core")
    if c:
        for p in c["provisional"]:
            rows.append(f"| core | {c['cells']:,} | provisional: {p['source']} | {p['seconds']} | "
                        f"{p['agreement_with_final']:.2%} | {'/'.join(map(str, c['load_during']))} |")
        rows.append(f"| core | {c['cells']:,} | final labels | {c['final_s']} | 100% | "
                    f"{'/'.join(map(str, c['load_during']))} |")
    n = results.get("napari")
    if n:
        for p in n["pictures"]:
            rows.append(f"| napari (xvfb) | {n['cells']:,} | {p['layer']} layer drawn | {p['seconds_drawn']} | - | "
                        f"{'/'.join(map(str, n['load_during']))} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED / "xenium_bone_marrow")
    p.add_argument("--reference", type=Path, default=SHARED / "references" / "pbmc3k" / "pbmc3k.h5ad")
    p.add_argument("--part", choices=("core", "napari", "both"), default="both")
    p.add_argument("--out", type=Path, default=RESULTS / "bench_provisional.json")
    p.add_argument("--child", choices=("core", "napari"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        res = core_child(args) if args.child == "core" else napari_child(args)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    results = {"load_before": load()}
    for part in (("core", "napari") if args.part == "both" else (args.part,)):
        cmd = [sys.executable, __file__, "--child", part, "--data", str(args.data), "--reference", str(args.reference)]
        if part == "napari" and not os.environ.get("DISPLAY"):
            if not shutil.which("xvfb-run"):
                print("napari part skipped: no display and no xvfb-run", file=sys.stderr)
                continue
            cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", *cmd]
        with tempfile.TemporaryDirectory(prefix="cellama-cold-") as tmp:
            proc = subprocess.run(cmd, env=dict(os.environ, NAPARI_CELLAMA_CACHE=tmp), capture_output=True,
                                  text=True, check=False)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        results[part] = json.loads(line[0][7:])
        print(json.dumps(results[part], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
