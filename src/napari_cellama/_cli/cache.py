"""``napari-cellama cache``: size report of the persistent embedding cache, and clearing it."""

from __future__ import annotations

NAME = "cache"
HELP = "show the size of the persistent embedding cache, or clear it"


def add_arguments(p) -> None:
    p.add_argument("--dir", default=None, metavar="FOLDER",
                   help="cache folder (default: $NAPARI_CELLAMA_CACHE/embeddings or the user cache folder)")
    p.add_argument("--clear", action="store_true", help="delete every cached embedding")
    p.add_argument("--compact", action="store_true", help="merge each model's packs into one file")


def run(args) -> None:
    from ..core.cache import EmbeddingCache, _human

    cache = EmbeddingCache(args.dir)
    if args.clear:
        freed = cache.clear()
        print(f"cleared {cache.root}: {_human(freed)} freed")
        return
    if args.compact:
        for ns in cache.namespaces():
            cache.compact(ns)
    print(cache.info().summary())
