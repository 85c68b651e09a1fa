"""Keys of the embedding cache: sentence digests and model fingerprints (Qt-free)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

_KEY_DTYPE = np.dtype("S16")

# files of a model folder that decide its output (weights, configs, tokenizer)
_FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model", ".pt", ".onnx")
_FINGERPRINT_SKIP = ("readme", "license", ".git", "data_config.json", "train_script", "eval")


def sentence_keys(sentences: Iterable[str]) -> np.ndarray:
    """128-bit BLAKE2b digest of each sentence's UTF-8 text, as an ``S16`` array."""
    blake = hashlib.blake2b
    return np.array([blake(s.encode("utf-8"), digest_size=16).digest() for s in sentences], dtype=_KEY_DTYPE)


_FP_MEMO: dict[tuple, str] = {}
_FP_LOCK = threading.Lock()


def _fingerprint_files(folder: Path) -> list[Path]:
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix().lower()
        if not p.is_file() or any(part in rel for part in _FINGERPRINT_SKIP):
            continue
        if rel.endswith(_FINGERPRINT_SUFFIXES):
            files.append(p)
    return files


def model_fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 (hex, 16 characters) over the relative names and bytes of a model folder's
    weight, config and tokenizer files.

    Two copies of the same model in different places share a fingerprint; a model whose
    weights or tokenizer changed gets a new one. The hash is memoised per process on the
    files' sizes and modification times.
    """
    folder = Path(folder).resolve()
    files = _fingerprint_files(folder)
    if not files:
        raise FileNotFoundError(f"no model files in {folder}")
    return files_digest(files, folder)


def files_digest(files: list[Path], root: Path | None = None) -> str:
    """SHA-256 (16 hex characters) over the bytes of ``files`` (and, with ``root``, their names
    relative to it), memoised per process on the files' sizes and modification times."""
    stamp = (str(root), *((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    with _FP_LOCK:
        if stamp in _FP_MEMO:
            return _FP_MEMO[stamp]
    h = hashlib.sha256()
    for p in files:
        if root is not None:
            h.update(p.relative_to(root).as_posix().encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        h.update(b"\0")
    digest = h.hexdigest()[:16]
    with _FP_LOCK:
        _FP_MEMO[stamp] = digest
    return digest
