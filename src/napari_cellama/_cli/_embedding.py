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
