"""The engine job the transfer dock runs (a plain generator function, testable without Qt)."""

from __future__ import annotations


def transfer_job(query, reference, label_key, top_k, model, k, metadata, device, mode, cache, root=None):
    """The engine generator run by the widget (a plain function, testable without Qt); ``root``:
    the Xenium run, whose graph clusters feed the Unknown call (else Leiden on expression)."""
    from ..core import iter_transfer
    from ..core.embedding_options import make_embedder
    from ..io.xenium import read_xenium_clusters

    embedder = make_embedder(model=model or None, device=device, mode=mode, cache=cache or None)
    clusters = read_xenium_clusters(root) if root is not None else None
    result = yield from iter_transfer(query, reference, label_key, top_k=top_k, k=k,
                                      metadata=metadata, embedder=embedder, clusters=clusters)
    return result
