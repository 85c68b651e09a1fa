"""ONNX Runtime embedding modes: ``onnx`` (float32) and ``fast`` (int8 weight MatMuls).

The sentence-transformers pipeline (transformer, pooling, normalisation) is
exported once to ONNX with ``torch.onnx`` from the *local* model folder (no
download). Two graphs are kept:

``model.fp32.onnx`` (mode ``onnx``)
    the float32 graph as exported: the same arithmetic as PyTorch, run by ONNX
    Runtime's CPU kernels (results equal to ~1e-6; less per-operator overhead,
    which matters for short sentences).
``model.int8.onnx`` (mode ``fast``)
    every MatMul whose second input is a weight matrix quantised to int8, one
    scale per output channel (``onnxruntime.quantization.quantize_dynamic``,
    ``per_channel=True``, ``MatMulConstBOnly``); activations are quantised on the
    fly (uint8, one scale per tensor), nothing is calibrated. Attention score
    products, softmax, LayerNorm, GELU, pooling and normalisation stay float32.

Both are cached on disk under ``<onnx_cache_dir()>/<model fingerprint>-<recipe>/``
(``$NAPARI_CELLAMA_ONNX_CACHE`` or ``onnx-models`` in the user cache folder; at most
:data:`KEEP_EXPORTS` models, least recently used ones are removed),
built in a temporary folder and renamed into place, so the export (~10-30 s)
happens once per model and machine. The tokenizer is the model's own fast
tokenizer (``tokenizers``), stored next to the graphs with truncation at the
model's ``max_seq_length``; it gives the same token ids as sentence-transformers.

Speed and fidelity on this project's 2-core CPU are measured by
``benchmarks/bench_pipeline.py --stages modes`` and written up in docs/performance.md.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import write_dir
from .cache import model_fingerprint

EXPORT_VARIANT = "onnx-opset17-v1"
"""Identifies the export recipe (folder name of the on-disk model cache)."""

GRAPHS = {"onnx": "model.fp32.onnx", "fast": "model.int8.onnx"}
"""Graph file of each ONNX Runtime mode."""

RECIPES = {"onnx": "onnx-fp32-v1", "fast": "fast-int8-matmul-perchannel-v1"}
"""What computed a mode's embeddings; part of the embedding-cache namespace."""

FAST_VARIANT = RECIPES["fast"]

_OPSET = 17


def onnx_cache_dir() -> Path:
    """Folder of ONNX exports: ``$NAPARI_CELLAMA_ONNX_CACHE``, else ``onnx-models`` in the
    platform user cache folder of napari-cellama (not under ``$NAPARI_CELLAMA_CACHE``: an
    export depends only on the model files, so temporary cache roots reuse it)."""
    from ..paths import onnx_models_dir

    return onnx_models_dir()


def export_onnx(folder: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Export a sentence-transformers model folder to one float32 ONNX graph.

    Inputs are the tokenizer's tensors (``input_ids``, ``attention_mask`` and, for
    BERT-like models, ``token_type_ids``; batch and sequence dimensions dynamic);
    the output ``sentence_embedding`` is what ``SentenceTransformer.encode`` returns.
    Returns a description (input names, dimension, max sequence length).
    """
    import torch
    from sentence_transformers import SentenceTransformer

    # eager attention traces into plain MatMul/Softmax ops that every ONNX Runtime runs
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True,
                             model_kwargs={"attn_implementation": "eager"})
    st.eval()
    sample = st.preprocess(["Top genes are CD3E, IL7R, and LYZ.", "Top gene is A."])
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]

    class _Pipeline(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            features = dict(zip(names, tensors))
            features["modality"] = "text"
            return self.model(features)["sentence_embedding"]

    args = tuple(sample[k] for k in names)
    dynamic = {k: {0: "batch", 1: "sequence"} for k in names}
    dynamic["sentence_embedding"] = {0: "batch"}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Pipeline(st), args, str(out), input_names=names,
                          output_names=["sentence_embedding"], dynamic_axes=dynamic,
                          opset_version=_OPSET, dynamo=False, do_constant_folding=True)
    tokenizer = st.tokenizer.backend_tokenizer
    tokenizer.enable_truncation(max_length=int(st.max_seq_length))
    pad_id = int(st.tokenizer.pad_token_id or 0)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=str(st.tokenizer.pad_token or "[PAD]"))
    dim = st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") else \
        st.get_sentence_embedding_dimension()
    return {"inputs": names, "dimension": int(dim), "max_seq_length": int(st.max_seq_length),
            "tokenizer": tokenizer.to_str(), "torch": torch.__version__}


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Dynamic int8 quantisation of the weight MatMuls only, per output channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], per_channel=True,
                     weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})


_BUILD_LOCK = threading.Lock()

KEEP_EXPORTS = 4
"""Exported models kept on disk (least recently used ones beyond this are deleted)."""


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def prune_onnx_cache(base: str | os.PathLike | None = None, keep: int = KEEP_EXPORTS,
                     protect: Path | None = None) -> list[Path]:
    """Delete all but the ``keep`` most recently used exported models; returns those removed.

    Each fine-tuned model gets its own export, so without this the folder would grow
    by ~150 MB per model.
    """
    import shutil

    base = Path(base) if base is not None else onnx_cache_dir()
    if not base.is_dir():
        return []
    done = [p for p in base.iterdir() if p.is_dir() and (p / "export.json").exists()]
    done.sort(key=lambda p: (p / "export.json").stat().st_mtime, reverse=True)
    removed = []
    for p in done[keep:]:
        if protect is not None and p.resolve() == Path(protect).resolve():
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def prepare_fast_model(folder: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                       fingerprint: str | None = None) -> Path:
    """Folder with ``model.fp32.onnx``, ``model.int8.onnx`` and ``export.json`` for a model,
    building it once.

    Keyed by the model fingerprint (hash of the model's files) and :data:`EXPORT_VARIANT`;
    files are built in a temporary folder and renamed into place, so concurrent
    builders (processes, Dask workers) never see a half-written model.
    """
    fingerprint = fingerprint or model_fingerprint(folder)
    base = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    target = base / f"{fingerprint}-{EXPORT_VARIANT}"
    if (target / "export.json").exists():
        _touch(target / "export.json")
        return target
    with _BUILD_LOCK:
        if (target / "export.json").exists():
            return target
        base.mkdir(parents=True, exist_ok=True)

        def build(tmp: Path) -> None:
            info = export_onnx(folder, tmp / "model.fp32.onnx")
            quantize_onnx(tmp / GRAPHS["onnx"], tmp / GRAPHS["fast"])
            info.update({"fingerprint": fingerprint, "variant": EXPORT_VARIANT, "source": str(folder)})
            (tmp / "export.json").write_text(json.dumps(info))

        try:
            write_dir(target, build, replace=False, create=True)
        except FileExistsError:  # another process finished first: keep its copy
            if not (target / "export.json").exists():
                raise
        prune_onnx_cache(base, keep=KEEP_EXPORTS, protect=target)
    return target


FORWARD_ROWS = 16
"""Sentences per ONNX forward pass on the CPU. Smaller passes keep the activations in cache:
on 2 cores, float32, 16 rows embedded 166-170 reference and 280-284 query sentences/s against
152-155 and 259-269 at 64 rows and 123 / 203 at 256 (1,000 pbmc3k and 1,500 crop sentences,
length-sorted, idle); the float32 vectors differ by at most 3e-8. The embedder's batch
(progress, Cancel, cache writes) stays as set."""


def _threads() -> int:
    """``OMP_NUM_THREADS`` if set (Dask workers set it to their thread count), else physical cores."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001
        n = None
    return max(int(n or os.cpu_count() or 1), 1)


class OnnxEncoder:
    """Encode sentences with the ONNX graph of a sentence-transformers folder.

    ``mode`` is ``onnx`` (float32) or ``fast`` (int8 weight MatMuls).
    ``encode_batch(sentences)`` returns the ``(n, d)`` float32 embeddings of one batch.
    """

    def __init__(self, folder: str | os.PathLike, mode: str = "fast", cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None, fingerprint: str | None = None):
        if mode not in GRAPHS:
            raise ValueError(f"ONNX mode must be one of {sorted(GRAPHS)}, not {mode!r}")
        self.mode = mode
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.fingerprint = fingerprint or model_fingerprint(folder)
        self.path = prepare_fast_model(folder, cache_dir, self.fingerprint)
        info = json.loads((self.path / "export.json").read_text())
        self.inputs = list(info["inputs"])
        self.dimension = int(info["dimension"])
        self.max_seq_length = int(info["max_seq_length"])
        self.tokenizer = Tokenizer.from_str(info["tokenizer"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or _threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path / GRAPHS[mode]), opts,
                                            providers=["CPUExecutionProvider"])

    def tokenize(self, sentences: Sequence[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer.encode_batch([s.strip() for s in sentences])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        return {k: feeds[k] for k in self.inputs}

    def encode_batch(self, sentences: Sequence[str]) -> np.ndarray:
        """Embed one batch; float32 (``onnx``) in forward passes of at most :data:`FORWARD_ROWS`.

        The int8 graph quantises activations with one scale per pass, so its vectors depend
        on the pass's rows: it keeps the batch as one pass (as its recorded results were made).
        """
        if len(sentences) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        step = FORWARD_ROWS if self.mode == "onnx" else len(sentences)
        parts = [self.session.run(None, self.tokenize(sentences[i : i + step]))[0]
                 for i in range(0, len(sentences), step)]
        return np.asarray(np.concatenate(parts), dtype=np.float32)


__all__ = ["EXPORT_VARIANT", "FAST_VARIANT", "GRAPHS", "KEEP_EXPORTS", "RECIPES", "OnnxEncoder", "prune_onnx_cache", "export_onnx", "onnx_cache_dir", "prepare_fast_model", "quantize_onnx"]
