"""Size reports of the embedding cache (:meth:`EmbeddingCache.info`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class NamespaceInfo:
    """Size of one namespace (one model fingerprint and mode) of the cache."""

    name: str
    entries: int
    packs: int
    bytes: int
    meta: dict = field(default_factory=dict)


@dataclass
class CacheInfo:
    """Size report of an :class:`EmbeddingCache`."""

    root: Path
    namespaces: list[NamespaceInfo]

    @property
    def entries(self) -> int:
        return sum(n.entries for n in self.namespaces)

    @property
    def bytes(self) -> int:
        return sum(n.bytes for n in self.namespaces)

    def summary(self) -> str:
        lines = [f"embedding cache {self.root}: {self.entries} embeddings, {_human(self.bytes)}"]
        for n in self.namespaces:
            what = ", ".join(f"{k} {v}" for k, v in n.meta.items() if k in ("model", "mode", "dimension"))
            lines.append(f"  {n.name}: {n.entries} embeddings in {n.packs} pack(s), {_human(n.bytes)}"
                         + (f" ({what})" if what else ""))
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
