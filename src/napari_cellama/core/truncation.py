"""Sentences longer than the model's maximum sequence length (the model cuts their end).

A niche sentence with many neighbours can pass the model's limit (256 word pieces for
all-MiniLM); the model then drops the farthest neighbours. :func:`count_truncated` counts
such sentences with the model's tokenizer only (the weights are not loaded), so a run can
say so.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from .embed import Embedder


@functools.lru_cache(maxsize=4)
def _folder_tokenizer(folder: str):
    """Tokenizer and maximum sequence length of a sentence-transformers folder (no model weights)."""
    import json

    from transformers import AutoTokenizer

    limit = None
    cfg = Path(folder) / "sentence_bert_config.json"
    if cfg.exists():
        limit = json.loads(cfg.read_text()).get("max_seq_length")
    return AutoTokenizer.from_pretrained(folder), limit


def _tokenizer(embedder: Embedder):
    """``(tokenizer, max_seq_length)`` of the embedder's model, or ``(None, None)``."""
    if embedder.loaded and getattr(embedder, "_model", None) is not None:  # the exact model is in memory
        model = embedder.model
        return getattr(model, "tokenizer", None), getattr(model, "max_seq_length", None)
    try:
        return _folder_tokenizer(str(embedder.folder))
    except Exception:  # noqa: BLE001 - no tokenizer files: the length cannot be checked
        return None, None


def count_truncated(embedder: Embedder, sentences: Sequence[str]) -> tuple[int | None, int | None]:
    """``(n, limit)``: unique sentences longer than the model's ``limit`` word pieces (cut when embedded).

    ``(None, None)`` when the model's tokenizer or limit is unknown. Uses the tokenizer
    only: the model weights are not loaded for this.
    """
    tok, limit = _tokenizer(embedder)
    if tok is None or not limit:
        return None, None
    unique = list(dict.fromkeys(sentences))
    if not unique:
        return 0, int(limit)
    try:
        ids = tok(unique, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    except Exception:  # noqa: BLE001 - a tokenizer without this call signature: unknown
        return None, int(limit)
    return int(sum(len(i) > limit for i in ids)), int(limit)


__all__ = ["count_truncated"]
