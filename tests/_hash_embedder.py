"""A fast deterministic stand-in for the sentence model (focused reliability tests only)."""

from __future__ import annotations

import hashlib

import numpy as np

from napari_cellama.core import Embedder


def hash_vector(sentence: str, d: int = 16) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(sentence.encode(), digest_size=8).digest(), "little")
    v = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


class HashEmbedder(Embedder):
    """Embeds a sentence as a unit vector seeded by its hash; ``nan=True`` mimics a broken model."""

    def __init__(self, cache=None, nan: bool = False, d: int = 16):
        super().__init__(mode="exact", device="cpu", cache=cache)
        self.model_id = "hash-embedder"
        self.nan = nan
        self.d = d
        self.embedded = 0

    @property
    def loaded(self) -> bool:
        return True

    def load(self) -> None:
        return None

    @property
    def dimension(self) -> int:
        return self.d

    @property
    def cache_namespace(self) -> str:
        return "hash-exact"

    def describe(self) -> dict:
        return {"model": self.model_id, "mode": "exact", "dimension": self.d}

    def encode_batch(self, sentences):
        self.embedded += len(sentences)
        out = np.stack([hash_vector(s, self.d) for s in sentences]) if sentences else np.zeros((0, self.d))
        if self.nan:
            out[:] = np.nan
        return out.astype(np.float32)
