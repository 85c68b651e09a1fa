"""``napari-cellama finetune``: fine-tune the sentence model on a labelled reference."""

from __future__ import annotations

import sys

from .._constants import (
    DEFAULT_FINETUNE_AUGMENT_KEEP,
    DEFAULT_FINETUNE_AUGMENT_VIEWS,
    DEFAULT_FINETUNE_BATCH_SIZE,
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_FINETUNE_LEARNING_RATE,
    DEFAULT_FINETUNE_NEIGHBOR_FRACTION,
    DEFAULT_FINETUNE_PAIR_NEIGHBORS,
    DEFAULT_FINETUNE_PAIRS,
    DEFAULT_FINETUNE_PCS,
    DEFAULT_FINETUNE_TOP_K,
    DEFAULT_FINETUNE_VALIDATION,
    DEFAULT_FINETUNE_WARMUP,
    DEFAULT_PROTOTYPE_FRACTION,
    DEFAULT_RANDOM_STATE,
    STAGE_FINETUNE,
)
from ..validators import CellamaInputError, check_file
from ._common import StderrProgress

NAME = "finetune"
HELP = ("fine-tune the sentence model on cell sentences of a reference .h5ad (pairs of cells close in PCA "
        "space and random pairs, CosineSimilarityLoss); the output folder works as --model")


def add_arguments(p) -> None:
    p.add_argument("--reference", required=True, metavar="REF.h5ad", help="reference .h5ad (counts or log-normalised)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="folder for the fine-tuned model (new or empty)")
    p.add_argument("--label-key", default=None, metavar="KEY",
                   help="cell-type column: pairs of cells with different types get similarity 0; needed by --prototypes")
    p.add_argument("--metadata", nargs="+", default=None, metavar="COL",
                   help="obs columns: pairs of cells that differ in any of them get similarity 0 (e.g. batch, tissue)")
    p.add_argument("--append-metadata", action="store_true",
                   help="also write the --metadata columns into the training sentences (then transfer with the same --metadata)")
    p.add_argument("--top-k", type=int, nargs="+", default=list(DEFAULT_FINETUNE_TOP_K), metavar="K",
                   help="genes per sentence; several values mix sentence lengths (default "
                        f"{' '.join(map(str, DEFAULT_FINETUNE_TOP_K))})")
    p.add_argument("--pairs", type=int, default=DEFAULT_FINETUNE_PAIRS, metavar="N",
                   help=f"training pairs of cells (default {DEFAULT_FINETUNE_PAIRS})")
    p.add_argument("--neighbor-fraction", type=float, default=DEFAULT_FINETUNE_NEIGHBOR_FRACTION, metavar="F",
                   help=f"share of pairs between PCA neighbours; the rest are random (default {DEFAULT_FINETUNE_NEIGHBOR_FRACTION})")
    p.add_argument("--pair-neighbors", type=int, default=DEFAULT_FINETUNE_PAIR_NEIGHBORS, metavar="N",
                   help=f"nearest cells (PCA cosine) paired with each anchor cell (default {DEFAULT_FINETUNE_PAIR_NEIGHBORS})")
    p.add_argument("--epochs", type=int, default=DEFAULT_FINETUNE_EPOCHS, help=f"default {DEFAULT_FINETUNE_EPOCHS}")
    p.add_argument("--batch-size", type=int, default=DEFAULT_FINETUNE_BATCH_SIZE,
                   help=f"pairs per step (default {DEFAULT_FINETUNE_BATCH_SIZE})")
    p.add_argument("--learning-rate", type=float, default=DEFAULT_FINETUNE_LEARNING_RATE,
                   help=f"peak AdamW learning rate (default {DEFAULT_FINETUNE_LEARNING_RATE:g})")
    p.add_argument("--warmup", type=float, default=DEFAULT_FINETUNE_WARMUP, metavar="F",
                   help=f"share of steps with linear warm-up (default {DEFAULT_FINETUNE_WARMUP})")
    p.add_argument("--validation", type=float, default=DEFAULT_FINETUNE_VALIDATION, metavar="F",
                   help=f"share of reference cells held out for the validation correlation (default {DEFAULT_FINETUNE_VALIDATION})")
    p.add_argument("--augment", type=int, default=DEFAULT_FINETUNE_AUGMENT_VIEWS, metavar="N",
                   help="also draw training sentences from N down-sampled copies of each reference cell "
                        f"(default {DEFAULT_FINETUNE_AUGMENT_VIEWS}; 0: the cells' own sentences only)")
    p.add_argument("--augment-keep", type=float, default=DEFAULT_FINETUNE_AUGMENT_KEEP, metavar="F",
                   help="share of a cell's counts kept in a down-sampled copy (binomial thinning; for "
                        f"log-normalised input the share of its genes kept; default {DEFAULT_FINETUNE_AUGMENT_KEEP})")
    p.add_argument("--pcs", type=int, default=DEFAULT_FINETUNE_PCS, metavar="N",
                   help="principal components whose cosine labels the pairs (default "
                        f"{DEFAULT_FINETUNE_PCS}; more components also weigh finer, noisier differences)")
    p.add_argument("--eval-steps", type=int, default=None, metavar="N",
                   help="also validate every N steps and keep the weights with the best validation Spearman "
                        "(default: validate only before and after training)")
    p.add_argument("--keep-last", action="store_true",
                   help="with --eval-steps: keep the last weights even if an earlier step validated better")
    p.add_argument("--prototypes", default=None, metavar="MARKERS",
                   help="marker table (CSV cell_type,gene / JSON / GMT, or 'default') whose types are --label-key "
                        "values: adds (cell, marker sentence) pairs that pull each type to its prototype")
    p.add_argument("--prototype-fraction", type=float, default=DEFAULT_PROTOTYPE_FRACTION, metavar="F",
                   help=f"prototype pairs as a share of --pairs (default {DEFAULT_PROTOTYPE_FRACTION})")
    p.add_argument("--panel", default=None, metavar="PATH",
                   help="write training sentences with these genes only: a Xenium folder or .h5ad query, or a "
                        "gene list (.csv with a Gene column, or one gene per line)")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="model to start from (default: offline all-MiniLM-L6-v2)")
    p.add_argument("--seed", type=int, default=DEFAULT_RANDOM_STATE)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--allow-download", action="store_true", help="let --model be fetched from the Hugging Face Hub")
    p.add_argument("--overwrite", action="store_true",
                   help="replace MODEL_DIR if it holds an earlier fine-tuned model (a folder holding anything "
                        "else is never replaced)")


class FinetuneProgress(StderrProgress):
    """Stderr progress that also shows the loss of the last fine-tuning step."""

    def __init__(self, log, stream=None):
        super().__init__(stream)
        self.log = log

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != STAGE_FINETUNE:
            super().__call__(stage, done, total)
            return
        if stage != self.stage:
            if self.stage is not None:
                self.stream.write("\n")
            self.stage = stage
            self._last = -1
        pct = int(100 * done / total) if total else 100
        text = f"{stage}: step {done}/{total} ({pct}%)"
        if self.log.losses:
            text += f" loss {self.log.loss:.4f} (mean of last 20: {self.log.smoothed_loss():.4f})"
        if self.tty:
            self.stream.write("\r" + text)
        elif pct // 10 != self._last // 10 or done == total:
            self.stream.write(text + "\n")
        self._last = pct
        self.stream.flush()


def read_gene_list(path) -> list[str]:
    """Genes of a query (Xenium folder / .h5ad) or of a gene-list file."""
    import pandas as pd

    from ..io import read_query
    from ..io.readers import is_xenium_path

    p = check_file(path, "panel")
    if is_xenium_path(p) or p.name.lower().endswith(".h5ad"):
        return [str(g) for g in read_query(p).var_names]
    if p.is_dir():
        raise CellamaInputError(f"panel {p} is a folder without experiment.xenium; give a Xenium folder, .h5ad or gene list")
    try:
        if p.name.lower().endswith(".csv"):
            table = pd.read_csv(p, dtype=str, encoding="utf-8")
            col = next((c for c in table.columns
                        if str(c).strip().lower() in ("gene", "genes", "gene_name", "symbol")), None)
            if col is None:
                raise CellamaInputError(f"panel {p} has no Gene column (columns: {', '.join(map(str, table.columns[:8]))})")
            genes = table[col].dropna().astype(str).str.strip().tolist()
        else:
            text = p.read_text(encoding="utf-8")
            if "\x00" in text:
                raise UnicodeDecodeError("utf-8", b"", 0, 1, "NUL byte: a binary file")
            genes = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
        raise CellamaInputError(
            f"panel {p} is not a readable gene list ({type(err).__name__}); give a Xenium folder, an .h5ad, "
            "a .csv with a Gene column or a text file with one gene per line"
        ) from None
    if not genes:
        raise CellamaInputError(f"panel {p} lists no genes")
    return genes


def from_args(args):
    """The :class:`~napari_cellama.core.options.FinetuneOptions` of the command line (checked;
    the genes of ``--panel`` are added once the panel is read)."""
    from ..core.options import FinetuneOptions

    return FinetuneOptions(
        label_key=args.label_key, metadata=tuple(args.metadata or ()), append_metadata=args.append_metadata,
        top_k=tuple(args.top_k), n_pairs=args.pairs, neighbor_fraction=args.neighbor_fraction,
        n_neighbors=args.pair_neighbors, n_pcs=args.pcs, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, warmup=args.warmup, validation_fraction=args.validation,
        augment_views=args.augment, augment_keep=args.augment_keep, prototypes=args.prototypes,
        prototype_fraction=args.prototype_fraction, seed=args.seed, eval_steps=args.eval_steps,
        keep_best=not args.keep_last,
    )


def run(args) -> None:
    from ..core import FinetuneLog, finetune
    from ..io import read_reference
    from ..io.destinations import check_model_folder

    if args.prototypes is not None and args.label_key is None:
        raise CellamaInputError("--prototypes needs --label-key (the reference's cell-type column)")
    options = from_args(args)  # a bad flag fails before anything is read
    check_file(args.reference, "reference", suffixes=(".h5ad",))
    out = check_model_folder(args.out, args.overwrite, sources=[args.reference, args.panel,
                                                                      None if args.prototypes == "default" else args.prototypes])
    genes = read_gene_list(args.panel) if args.panel else None
    if genes is not None:
        options = options.replace(genes=tuple(genes))
    reference = read_reference(args.reference)
    print(f"reference: {reference.n_obs} cells x {reference.n_vars} genes"
          + (f"; sentences restricted to the {len(genes)} panel genes" if genes else ""), file=sys.stderr)
    log = FinetuneLog()
    progress = FinetuneProgress(log)
    try:
        result = finetune(
            reference, out, options=options, model=args.model, device=args.device,
            allow_download=args.allow_download, overwrite=args.overwrite, log=log, callback=progress,
        )
    finally:
        progress.close()
    if result.marker_set is not None:
        print(result.marker_set.summary(), file=sys.stderr)
        if result.unmatched_labels:
            print(f"labels without a prototype (no type of that name in the marker table): "
                  f"{', '.join(map(str, result.unmatched_labels))}", file=sys.stderr)
    print(result.summary(), file=sys.stderr)
    print(f"use it with: napari-cellama transfer QUERY --reference {args.reference} --label-key KEY --model {out}",
          file=sys.stderr)
