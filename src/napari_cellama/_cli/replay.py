"""``napari-cellama replay``: re-make an export's labels from its recorded steps."""

from __future__ import annotations

import sys

from .._constants import CELL_ID
from ._common import StderrProgress, write_csv
from ._embedding import add_cache_argument

NAME = "replay"
HELP = ("re-run the label transfer, marker-prototype run or their combination recorded in an export (.h5ad or "
        ".zarr) from the recorded inputs with the recorded options and model, apply the recorded manual edits in "
        "order, and write the labels")


def add_arguments(p) -> None:
    p.add_argument("export", metavar="EXPORT.h5ad|EXPORT.zarr", help="an .h5ad or SpatialData .zarr written by "
                   "napari-cellama (its uns['cellama']['provenance'] records the steps)")
    p.add_argument("--out", required=True, metavar="OUT.csv",
                   help="per-cell CSV of the replayed labels: cell_id,cell_type,label_source,reviewed")
    p.add_argument("--query", default=None, metavar="PATH",
                   help="where the query (Xenium folder or .h5ad) is now, if it moved since the run")
    p.add_argument("--reference", default=None, metavar="REF.h5ad",
                   help="where the reference .h5ad is now, if it moved since the run")
    p.add_argument("--allow-changed", action="store_true",
                   help="replay even if an input's content fingerprint differs from the recorded one")
    p.add_argument("--script", default=None, metavar="FILE.py",
                   help="also write the steps as a readable Python script (public API)")
    add_cache_argument(p)


def run(args) -> None:
    from ..io.destinations import check_outputs
    from ..io.replay import plan_replay, replay_export, replay_script

    checked = check_outputs({"output CSV": args.out, "Python script": args.script}, sources=[args.export])
    plan = plan_replay(args.export, query=args.query, reference=args.reference, allow_changed=args.allow_changed)
    runs = "1 transfer" if plan.kinds == ["transfer"] else " + ".join(plan.kinds)
    what = f"{plan.run.get('method')} transfer" if plan.kinds == ["transfer"] else " + ".join(plan.kinds)
    print(f"replaying {args.export}: {what} of {plan.run.get('time')}, "
          f"{sum(1 for s in plan.steps if s.get('step') == 'edit')} manual edit(s)", file=sys.stderr)
    progress = StderrProgress()
    try:
        replayed = replay_export(args.export, cache=True if args.cache else None, callback=progress, plan=plan)
    finally:
        progress.close()
    for note in replayed.notes:
        print(f"napari-cellama: warning: {note}", file=sys.stderr)
    table = replayed.table()
    table.index.name = CELL_ID
    write_csv(checked["output CSV"], table)
    n_edits = sum(1 for s in replayed.steps if s.get("step") == "edit")
    print(f"wrote {len(table)} cells to {args.out} ({runs}, {n_edits} manual edit(s) replayed)",
          file=sys.stderr)
    if "Python script" in checked:
        from ..atomic import write_file

        text = replay_script(replayed.steps, str(checked["output CSV"]))
        write_file(checked["Python script"], lambda tmp: tmp.write_text(text, encoding="utf-8"), suffix=".py")
        print(f"wrote the steps as a script to {args.script}", file=sys.stderr)
    if replayed.identical:
        print("labels identical to the export's", file=sys.stderr)
    else:
        raise RuntimeError(f"{replayed.n_different} of {len(table)} replayed labels differ from the export's "
                           "(the inputs, the model or the software changed)")
