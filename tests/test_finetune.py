"""Fine-tuning on cell sentences: pairs, labels, a tiny real fine-tune on CPU, loading the result."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from sklearn.model_selection import train_test_split

from napari_cellama._constants import CELL_TYPE
from napari_cellama.cli import main
from napari_cellama.core import (
    Embedder,
    FinetuneLog,
    iter_finetune,
    read_finetune_record,
    run,
    run_transfer,
)
from napari_cellama.core.finetune import FINETUNE_RECORD
from napari_cellama.core.finetune.pairs import (
    _cell_pairset,
    downsample,
    pair_labels,
    pca_coordinates,
    sample_cell_pairs,
)
from napari_cellama.core.options import FinetuneOptions
from napari_cellama.core.transfer import l2_normalise
from napari_cellama.io import expression_for_sentences
from napari_cellama.validators import CellamaInputError

LABEL = "bulk_labels"
TOP_K = 6  # short sentences keep the CPU fine-tune fast

# bulk_labels -> default marker table types (for --prototypes default)
TO_TABLE = {
    "CD14+ Monocyte": "CD14+ monocyte", "Dendritic": "dendritic cell", "CD19+ B": "B cell",
    "CD4+/CD25 T Reg": "regulatory T cell", "CD8+ Cytotoxic T": "CD8+ cytotoxic T cell",
    "CD8+/CD45RA+ Naive Cytotoxic": "naive CD8+ T cell", "CD56+ NK": "NK cell",
    "CD4+/CD45RO+ Memory": "memory CD4+ T cell", "CD34+": "CD34+ progenitor",
    "CD4+/CD45RA+/CD25- Naive T": "naive CD4+ T cell",
}


@pytest.fixture(scope="module")
def pbmc():
    a = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    a.obs[LABEL] = a.obs[LABEL].astype(str)
    rest, ref_idx = train_test_split(np.arange(a.n_obs), test_size=150, stratify=a.obs[LABEL], random_state=0)
    _, q_idx = train_test_split(rest, test_size=60, stratify=a.obs[LABEL].iloc[rest], random_state=0)
    return a[np.sort(ref_idx)].copy(), a[np.sort(q_idx)].copy()


# --------------------------------------------------------------------------- pairs
def test_neighbour_pairs_are_nearest_cells_and_random_pairs_never_self():
    rng = np.random.default_rng(0)
    pca = rng.normal(size=(60, 5)).astype(np.float32)
    cells = np.arange(10, 60)
    i, j, kind = sample_cell_pairs(pca, cells, 200, 0.5, 4, np.random.default_rng(1))
    assert len(i) == 200 and (kind == "neighbour").sum() == 100 and (kind == "random").sum() == 100
    assert (i != j).all()
    assert np.isin(i, cells).all() and np.isin(j, cells).all()  # only the given cells (no validation leak)
    z = l2_normalise(pca[cells])
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    pos = {c: p for p, c in enumerate(cells)}
    for a, b in zip(i[kind == "neighbour"], j[kind == "neighbour"]):
        top4 = set(cells[np.argsort(-sim[pos[a]])[:4]])
        assert b in top4


def test_pair_labels_are_clipped_pca_cosine_zeroed_across_groups():
    pca = np.array([[1, 0], [1, 1], [-1, 0], [0, 1]], dtype=np.float32)
    i, j = np.array([0, 0, 0, 1]), np.array([1, 2, 3, 3])
    lab = pair_labels(pca, i, j, None)
    assert np.allclose(lab, [np.sqrt(0.5), 0.0, 0.0, np.sqrt(0.5)], atol=1e-6)  # negative cosine -> 0
    groups = np.array([[0], [0], [0], [1]])
    lab2 = pair_labels(pca, i, j, groups)
    assert np.allclose(lab2, [np.sqrt(0.5), 0.0, 0.0, 0.0], atol=1e-6)


def test_downsampling_thins_counts_or_drops_genes():
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, size=(300, 40)).astype(np.float32)
    d = downsample(counts, 0.5, np.random.default_rng(1)).toarray()
    assert (d <= counts).all() and (d == np.rint(d)).all()
    assert abs(d.sum() / counts.sum() - 0.5) < 0.01  # binomial thinning keeps half the molecules
    logn = np.log1p(counts)
    d2 = downsample(logn, 0.5, np.random.default_rng(1)).toarray()
    kept = d2 > 0
    assert np.allclose(d2[kept], logn[kept])  # values untouched, genes dropped
    assert abs(kept.sum() / (logn > 0).sum() - 0.5) < 0.02


def test_augmented_pairs_mix_own_and_downsampled_sentences():
    from napari_cellama.core import cell_sentences

    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(50, 30)).astype(np.float32)
    genes = [f"G{i}" for i in range(30)]
    pca = rng.normal(size=(50, 4)).astype(np.float32)
    own = cell_sentences(counts, genes, 5)
    views = {5: [own] + [cell_sentences(downsample(counts, 0.5, rng), genes, 5) for _ in range(2)]}
    pairs = _cell_pairset(pca, np.arange(50), 400, 0.5, 4, None, views, [5], np.random.default_rng(2))
    plain = _cell_pairset(pca, np.arange(50), 400, 0.5, 4, None, {5: [own]}, [5], np.random.default_rng(2))
    assert np.array_equal(pairs.label, plain.label)  # same cells, same labels
    from_own = np.mean([a == own_a for a, own_a in zip(pairs.a, plain.a)])
    assert 0.2 < from_own < 0.5  # about a third from the cell itself, the rest from its copies
    assert set(plain.a) <= set(own)


def test_pca_on_counts_and_on_log_normalised_values(pbmc):
    ref, _ = pbmc
    coords, info = pca_coordinates(ref, n_hvg=300, n_pcs=10)
    assert coords.shape == (ref.n_obs, 10) and info["input"] == "log-normalised"
    assert info["highly_variable_selection"] and info["n_genes_pca"] == 300
    counts = ad.AnnData(X=np.random.default_rng(0).poisson(1.0, size=(40, 30)).astype(np.float32))
    c2, info2 = pca_coordinates(counts, n_hvg=2000, n_pcs=50)
    assert info2["input"] == "counts" and not info2["highly_variable_selection"]
    assert c2.shape == (40, 29)  # capped at n_genes - 1


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_pairs": 0}, "number of pairs"),
        ({"top_k": []}, "at least one top-k"),
        ({"neighbor_fraction": 1.5}, "neighbour pairs"),
        ({"validation_fraction": 1.0}, "validation share"),
        ({"learning_rate": -1.0}, "learning rate"),
        ({"augment_views": -1}, "down-sampled copies"),
        ({"augment_views": 2, "augment_keep": 1.0}, "share of counts kept"),
        ({"n_pcs": 1}, "at least 2 principal components"),
        ({"metadata": ["nope"]}, "not in the reference"),
        ({"label_key": "nope"}, "label column"),
        ({"prototypes": "default"}, "needs the reference's cell-type column"),
    ],
)
def test_bad_parameters_fail_before_any_work(pbmc, tmp_path, kwargs, message):
    ref, _ = pbmc
    with pytest.raises(CellamaInputError, match=message):
        next(iter_finetune(ref, tmp_path / "m", **kwargs))


def test_non_empty_output_folder_is_refused(pbmc, tmp_path):
    ref, _ = pbmc
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("x")
    with pytest.raises(CellamaInputError, match="not empty"):
        next(iter_finetune(ref, tmp_path / "m"))


# --------------------------------------------------------------------------- real fine-tune
def test_tiny_finetune_on_cpu_then_transfer_with_it(pbmc, tmp_path):
    ref, query = pbmc
    base = Embedder(device="cpu")
    probe = ["Top genes are LYZ, S100A9, and CST3.", "Top genes are CD79A, MS4A1, and CD74."]
    base_before = base.encode(probe)

    out = tmp_path / "model"
    log = FinetuneLog()
    stages, steps = [], []
    gen = iter_finetune(ref, out, label_key=LABEL, top_k=[TOP_K, TOP_K + 2], n_pairs=160, batch_size=16,
                        device="cpu", log=log, seed=0, epochs=1, eval_steps=5, keep_best=False)
    try:
        while True:
            stage, done, total = next(gen)
            stages.append(stage)
            if stage == "fine-tuning" and done > 0:
                steps.append((done, total, log.loss))
    except StopIteration as stop:
        res = stop.value
    # progress: every optimiser step is yielded with its loss available
    assert steps[-1][0] == steps[-1][1] == 10 == len(log.losses)
    assert [s[0] for s in steps] == list(range(1, 11))
    assert all(np.isfinite(s[2]) for s in steps)
    # with eval_steps the kept weights were validated during training: no separate "after" pass
    assert {"training pairs", "loading model", "validation (before)", "saving model"} <= set(stages)
    assert "validation (after)" not in stages
    # pairs: half neighbours, half random; both sentence lengths used
    assert res.pair_counts["train"] == {"neighbour": 80, "random": 80}
    assert res.params["top_k"] == [TOP_K, TOP_K + 2] and res.params["total_steps"] == 10
    assert res.options == FinetuneOptions(label_key=LABEL, top_k=(TOP_K, TOP_K + 2), n_pairs=160, batch_size=16,
                                          seed=0, epochs=1, eval_steps=5, keep_best=False)
    v = res.validation
    assert v["n_cells"] == 15 and v["n_pairs"] >= 10
    assert -1 <= v["spearman_before"] <= 1 and -1 <= v["spearman_after"] <= 1
    # validated before, every 5 steps and at the end; the last weights are kept (keep_best=False)
    assert [h["step"] for h in v["history"]] == [0, 5, 10] and v["kept_step"] == 10
    assert v["spearman_after"] == v["history"][-1]["spearman"]
    assert 0 <= v["transfer_macro_f1_before"] <= 1 and 0 <= v["transfer_accuracy_after"] <= 1
    assert "validation (step 5)" in stages and "validation (step 5, transfer)" in stages
    print(f"tiny fine-tune: validation Spearman {v['spearman_before']:.3f} -> {v['spearman_after']:.3f}")
    # a sentence-transformers folder with the record
    assert (out / "modules.json").is_file() and (out / "model.safetensors").is_file()
    rec = read_finetune_record(out)
    assert rec["params"]["label_key"] == LABEL and len(rec["losses"]) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]  # no temporary folder left
    # the fine-tuned weights differ, the cached default model is untouched
    tuned = Embedder(out, device="cpu")
    after = tuned.encode(probe)
    assert not np.allclose(after, base_before, atol=1e-4)
    assert np.allclose(base.encode(probe), base_before, atol=1e-6)
    # the model folder works for a transfer (API) ...
    res_t = run_transfer(query, ref, LABEL, top_k=TOP_K, k=5, embedder=tuned)
    truth = query.obs[LABEL]
    acc = float((res_t.table.loc[truth.index, CELL_TYPE] == truth).mean())
    majority = truth.value_counts(normalize=True).iloc[0]
    print(f"transfer with the tiny fine-tuned model: accuracy {acc:.3f} (majority {majority:.3f})")
    assert acc > majority + 0.1
    assert res_t.params["model"] == str(out.resolve())
    # ... and for `napari-cellama transfer --model PATH`
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "q.h5ad")
    csv = tmp_path / "t.csv"
    assert main(["transfer", str(tmp_path / "q.h5ad"), "--reference", str(tmp_path / "ref.h5ad"), "--label-key", LABEL,
                 "--top-k", str(TOP_K), "--neighbors", "5", "--model", str(out), "--device", "cpu",
                 "--out", str(csv)]) == 0
    df = pd.read_csv(csv)
    assert len(df) == query.n_obs
    assert (df.set_index("cell_id").loc[query.obs_names, "cell_type"].to_numpy()
            == res_t.table.loc[query.obs_names, CELL_TYPE].to_numpy()).all()


def test_keep_best_saves_the_best_validated_weights(pbmc, tmp_path):
    ref, _ = pbmc
    base = Embedder(device="cpu")
    probe = ["Top genes are LYZ, S100A9, and CST3.", "Top genes are CD79A, MS4A1, and CD74."]
    out = tmp_path / "best"
    # a learning rate far too high makes some steps validate worse than others
    res = run(iter_finetune(ref, out, label_key=LABEL, top_k=TOP_K, n_pairs=48, batch_size=16, epochs=1, eval_steps=1,
                            learning_rate=5e-4, warmup=0.0, device="cpu", seed=0))
    hist = res.validation["history"]
    assert [h["step"] for h in hist] == [0, 1, 2, 3]
    scores = [h["spearman"] for h in hist]
    kept = res.validation["kept_step"]
    assert kept == int(np.argmax(scores))  # the first best
    assert res.validation["spearman_after"] == scores[kept]
    saved = Embedder(out, device="cpu").encode(probe)
    assert np.allclose(saved, base.encode(probe), atol=1e-5) == (kept == 0)
    assert ("saved the starting model" in res.summary()) == (kept == 0)


def test_cancel_between_steps_writes_nothing(pbmc, tmp_path):
    ref, _ = pbmc
    out = tmp_path / "cancelled"
    gen = iter_finetune(ref, out, top_k=TOP_K, n_pairs=64, batch_size=16, validation_fraction=0.0, device="cpu")
    for stage, done, _ in gen:
        if stage == "fine-tuning" and done == 1:
            break
    gen.close()  # what thread_worker.quit() does between two yields
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_finetune_with_default_prototypes(pbmc, tmp_path, capsys):
    ref, _ = pbmc
    r = ref.copy()
    r.obs["cell_type"] = r.obs[LABEL].astype(str).map(TO_TABLE).astype(str)
    r.obs.loc[r.obs_names[:3], "cell_type"] = "unlisted type"
    r.write_h5ad(tmp_path / "ref.h5ad")
    out = tmp_path / "proto_model"
    code = main(["finetune", "--reference", str(tmp_path / "ref.h5ad"), "--out", str(out), "--label-key", "cell_type",
                 "--top-k", str(TOP_K), "--pairs", "32", "--epochs", "1", "--batch-size", "16", "--prototypes", "default",
                 "--prototype-fraction", "0.5", "--pcs", "7", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "fine-tuning: step 3/3" in err and "loss" in err  # steps and loss on stderr
    assert "unlisted type" in err  # labels without a prototype are reported
    assert "dropped" in err  # markers outside the reference's genes are reported
    rec = json.loads((out / FINETUNE_RECORD).read_text())
    assert rec["pair_counts"]["train"]["prototype (own type)"] == 8
    assert rec["pair_counts"]["train"]["prototype (other type)"] == 8
    assert rec["prototypes"]["map"]["B cell"] == "B cell"
    assert rec["params"]["pca"]["n_pcs"] == 7
    assert FinetuneOptions.from_dict(rec["options"]).n_pcs == 7  # the options, in JSON form
    assert "prototype_accuracy_before" in rec["validation"]
    # a second run into the same folder needs --overwrite
    assert main(["finetune", "--reference", str(tmp_path / "ref.h5ad"), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
