"""Options dataclasses: checked when built, one JSON form, built once by each CLI subcommand."""

from __future__ import annotations

import dataclasses

import pytest

from napari_cellama._constants import CellGenes, ClusterMethod, GeneRank, NicheMode
from napari_cellama.cli import build_parser
from napari_cellama.core import (
    FinetuneOptions,
    KMeans,
    KNearest,
    Leiden,
    NicheOptions,
    PrototypeOptions,
    Radius,
)
from napari_cellama.core.options import merge_options
from napari_cellama.validators import CellamaInputError


def _args(*argv):
    return build_parser().parse_args(list(argv))


# ----------------------------------------------------------------------------- values


def test_options_are_frozen_and_round_trip_through_json():
    for options in (
        NicheOptions(neighborhood=Radius(25), clustering=KMeans(4), mode="niche", max_cells=50),
        NicheOptions(),
        FinetuneOptions(label_key="t", metadata=["batch"], top_k=[10, 20], prototypes="default"),
        PrototypeOptions(cell_genes="all", rank="expression", max_markers=3),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            options.top_k = 3
        data = options.to_dict()
        import json

        assert json.loads(json.dumps(data)) == data  # plain JSON values
        assert type(options).from_dict(data) == options


def test_enums_equal_their_text():
    options = NicheOptions(mode="genes")
    assert options.mode is NicheMode.GENES and options.mode == "genes" and str(options.mode) == "genes"
    assert PrototypeOptions(rank="expression").rank is GeneRank.EXPRESSION
    assert PrototypeOptions().cell_genes is CellGenes.MARKERS
    assert Leiden().method is ClusterMethod.LEIDEN and KMeans(2).method is ClusterMethod.KMEANS


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: KNearest(0), "number of spatial neighbours must be a positive whole number"),
        (lambda: KNearest(2.5), "positive whole number"),
        (lambda: Radius(-1), "radius must be a positive number"),
        (lambda: Radius(float("nan")), "radius must be a positive number"),
        (lambda: Leiden(0), "Leiden resolution must be a positive number"),
        (lambda: Leiden(graph_neighbors=1), "at least 2"),
        (lambda: KMeans(1), "number of clusters must be a whole number of at least 2"),
        (lambda: NicheOptions(mode="both"), "niche sentence mode"),
        (lambda: NicheOptions(top_k=0), "top-k"),
        (lambda: NicheOptions(max_cells=0), "maximum number of cells"),
        (lambda: NicheOptions.from_flags(k=5, radius=10), "not both"),
        (lambda: NicheOptions.from_flags(resolution=1.0, n_clusters=3), "not both"),
        (lambda: NicheOptions(neighborhood={"nope": 1}), "the neighbourhood must be one of KNearest, Radius"),
        (lambda: FinetuneOptions(n_pairs=0), "number of pairs"),
        (lambda: FinetuneOptions(top_k=[]), "at least one top-k"),
        (lambda: FinetuneOptions(warmup=1.0), r"warm-up share must be in \[0, 1\)"),
        (lambda: FinetuneOptions(augment_keep=0), r"in \(0, 1\)"),
        (lambda: FinetuneOptions(n_pcs=1), "at least 2 principal components"),
        (lambda: FinetuneOptions(learning_rate=float("inf")), "learning rate"),
        (lambda: FinetuneOptions(prototypes="default"), "needs the reference's cell-type column"),
        (lambda: PrototypeOptions(temperature=0), "temperature"),
        (lambda: PrototypeOptions(min_confidence=1.5), "minimum confidence must be between 0 and 1"),
        (lambda: PrototypeOptions(rank="zscore"), "unknown gene ranking 'zscore'"),
        (lambda: NicheOptions.from_dict({"modes": "niche"}), "unknown NicheOptions field"),
    ],
)
def test_bad_values_are_refused_when_built(build, message):
    with pytest.raises(CellamaInputError, match=message):
        build()


def test_options_or_keywords_not_both():
    assert merge_options(NicheOptions, None, {"k": 4, "n_clusters": 2}, "x") == NicheOptions(
        neighborhood=KNearest(4), clustering=KMeans(2))
    with pytest.raises(CellamaInputError, match="not both"):
        merge_options(NicheOptions, NicheOptions(), {"k": 4}, "the niche options")
    with pytest.raises(CellamaInputError, match="must be a PrototypeOptions"):
        merge_options(PrototypeOptions, 20, {}, "the prototype options")
    with pytest.raises(TypeError, match="FinetuneOptions accepts"):
        merge_options(FinetuneOptions, None, {"n_pair": 3}, "the fine-tuning options")


def test_flat_record_of_niche_options():
    flat = NicheOptions.from_flags(radius=30, resolution=0.5, graph_neighbors=8).flat()
    assert flat["k"] is None and flat["radius"] == 30.0
    assert flat["method"] == "leiden" and flat["resolution"] == 0.5 and flat["n_clusters"] is None
    assert flat["graph_neighbors"] == 8


# ----------------------------------------------------------------------------- CLI


def test_niche_cli_builds_its_options_once():
    from napari_cellama._cli.niche import from_args

    args = _args("niche", "q.h5ad", "--labels", "l.csv", "--cell-types", "A", "--out", "o.csv",
                 "--radius", "20", "--n-clusters", "3", "--niche-only", "--max-cells", "100")
    assert from_args(args) == NicheOptions(neighborhood=Radius(20), clustering=KMeans(3), mode="niche",
                                           max_cells=100)
    default = from_args(_args("niche", "q.h5ad", "--labels", "l.csv", "--cell-types", "A", "--out", "o.csv"))
    assert default == NicheOptions()
    with pytest.raises(CellamaInputError, match="not both"):
        from_args(_args("niche", "q", "--labels", "l", "--cell-types", "A", "--out", "o.csv",
                        "--neighbors", "5", "--radius", "3"))


def test_finetune_cli_builds_its_options_once():
    from napari_cellama._cli.finetune import from_args

    options = from_args(_args("finetune", "--reference", "r.h5ad", "--out", "m", "--label-key", "t",
                              "--top-k", "10", "20", "--pairs", "300", "--eval-steps", "5", "--keep-last"))
    assert options == FinetuneOptions(label_key="t", top_k=(10, 20), n_pairs=300, eval_steps=5, keep_best=False)
    assert from_args(_args("finetune", "--reference", "r.h5ad", "--out", "m")) == FinetuneOptions()


def test_prototypes_cli_builds_its_options_once():
    from napari_cellama._cli.prototypes import from_args

    options = from_args(_args("prototypes", "q.h5ad", "--out", "o.csv", "--cell-genes", "all",
                              "--max-markers", "4", "--min-confidence", "0.2"))
    assert options == PrototypeOptions(cell_genes="all", max_markers=4, min_confidence=0.2)
    assert from_args(_args("prototypes", "q.h5ad", "--out", "o.csv")) == PrototypeOptions()


def test_transfer_cli_switches_the_coclustering_evidence_off():
    from napari_cellama.core.transfer_options import TransferOptions

    base = ("transfer", "q.h5ad", "--reference", "r.h5ad", "--label-key", "t", "--out", "o.csv")
    assert TransferOptions.from_args(_args(*base)).unknown_coclustering is True  # the default
    assert TransferOptions.from_args(_args(*base)) == TransferOptions()
    assert TransferOptions.from_args(_args(*base, "--no-coclustering")).unknown_coclustering is False
