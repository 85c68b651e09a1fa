"""Embedding arguments shared by the CLI commands (``--mode``, ``--cache``) and the one way
they become an embedder: ``make_embedder(EmbeddingOptions.from_args(args))``."""

from __future__ import annotations

import argparse

from .._constants import DEFAULT_EMBED_MODE, EMBEDDING_MODES

MODE_HELP = (f"embedding mode: exact (PyTorch float32), onnx (ONNX Runtime float32, CPU), fast (ONNX Runtime "
             f"int8, CPU, approximate) or surrogate (a map learned per run from exact vectors of a sample, "
             f"checked against them; labels that are not robust are re-embedded exactly); default "
             f"{DEFAULT_EMBED_MODE} on a CPU, exact on a GPU (see docs/performance.md)")


def add_mode_argument(p) -> None:
    p.add_argument("--mode", default=None, choices=list(EMBEDDING_MODES), help=MODE_HELP)


def add_cache_argument(p) -> None:
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse and store embeddings in the persistent cache ($NAPARI_CELLAMA_CACHE or the "
                        "user cache folder; default on)")


def embedder_from_args(args):
    """The embedder the command's arguments describe (built once per command)."""
    from ..core.embedding_options import EmbeddingOptions, make_embedder

    return make_embedder(EmbeddingOptions.from_args(args))


def print_surrogate_check(params: dict) -> None:
    """One line with the surrogate check's numbers (surrogate mode only)."""
    import sys

    check = params.get("surrogate_check")
    if not check:
        return
    if not check.get("predicted"):
        print("surrogate check: every sentence embedded exactly (small run or all cached)", file=sys.stderr)
        return
    met = "met" if check.get("meets_target") else "NOT met: use --mode onnx for reliable labels"
    how = "leave-one-out" if check.get("heldout") == "loo" else "held-out"
    print(f"surrogate check: {check['predicted']} sentences predicted ({how} cosine to exact "
          f"{check.get('cosine_mean')} over {check.get('n_check')} sentences, {how} label agreement "
          f"{check.get('heldout_label_agreement')}); "
          f"{check['reembedded']} re-embedded exactly ({check['share_reembedded']:.1%} of distinct sentences); "
          f"estimated label agreement with exact {check['estimated_agreement']:.2%} "
          f"(target {check['target']:.0%}: {met})", file=sys.stderr)
