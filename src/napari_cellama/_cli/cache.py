"""``napari-cellama cache``: size report of the persistent embedding cache, and clearing it."""

from __future__ import annotations

NAME = "cache"
HELP = "show the size of the persistent embedding cache, or clear it"


def add_arguments(p) -> None:
    p.add_argument("--dir", default=None, metavar="FOLDER",
                   help="cache folder (default: $NAPARI_CELLAMA_CACHE/embeddings or the user cache folder)")
    p.add_argument("--clear", action="store_true",
                   help="delete every cached embedding (only cache namespaces: other folders are left alone)")
    p.add_argument("--compact", action="store_true",
                   help="merge each model's packs into one file (damaged packs are deleted, never merged)")


def run(args) -> None:
    import sys

    from ..core.cache import EmbeddingCache
    from ..core.cache_info import _human
    from ..validators import CellamaInputError

    cache = EmbeddingCache(args.dir)
    if cache.root.exists() and not cache.root.is_dir():
        raise CellamaInputError(f"cache folder {cache.root} is a file; give a folder (--dir or NAPARI_CELLAMA_CACHE)")
    foreign = cache.foreign_entries()
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        print(f"left alone in {cache.root} (not embedding-cache folders): {shown}", file=sys.stderr)
    if args.clear:
        freed = cache.clear()
        print(f"cleared {cache.root}: {_human(freed)} freed")
        return
    if args.compact:
        for ns in cache.namespaces():
            cache.compact(ns)
    print(cache.info().summary())
