"""Fine-tuning the sentence model on cell sentences of a reference (CELLama 2.4).

Training pairs (:func:`build_pairs`), following the CELLama authors' recipe:

1. the reference is normalised (``normalize_total`` to 10,000 and ``log1p``, skipped when
   ``X`` is not integer-valued, i.e. already log-normalised), restricted to its
   ``n_hvg`` highly variable genes (all genes when it has fewer) and projected on
   ``n_pcs`` principal components;
2. a share ``neighbor_fraction`` of the pairs joins an anchor cell to one of its
   ``n_neighbors`` nearest cells by cosine similarity in PCA space; the rest joins two
   random cells;
3. the label of a pair is the cosine similarity of the two cells' PCA vectors, clipped
   to ``[0, 1]`` (the range CosineSimilarityLoss expects), and set to 0 when the cells
   differ in any of the ``metadata`` columns or in ``label_key``;
4. each pair is written with one of the ``top_k`` sentence lengths (several values mix;
   each gets an equal share of the pairs), in the same format as a transfer
   (:func:`napari_cellama.core.cell_sentences`);
5. optional augmentation (``augment_views`` > 0): each side of a training pair is
   written, with equal chance, from the cell itself or from one of ``augment_views``
   down-sampled copies of it (binomial thinning keeping a share ``augment_keep`` of its
   counts, as a shallower assay such as Xenium sees the cell; for log-normalised input a
   random share ``augment_keep`` of its detected genes is kept). The pair's label stays
   that of the two cells. A small reference then yields many distinct sentences per cell,
   so the model learns which genes matter rather than memorising its few hundred
   sentences. Validation pairs always use the cells' own sentences.

A share ``validation_fraction`` of the cells (stratified by ``label_key`` when given) is
held out before any pair is drawn; validation pairs are drawn among those cells only,
and the Spearman correlation between the model's cosine similarity and the label of the
validation pairs is reported before and after training.

Prototype guidance (CellRefine's idea, optional, needs ``label_key`` and a marker table):
each reference label that names a type of the marker table (names compared
case-insensitively) gets the prototype sentence of that type
(:func:`napari_cellama.core.prototypes.marker_sentences`). A share ``prototype_fraction``
(relative to the cell pairs) of extra pairs joins a cell sentence to a prototype
sentence: half to the cell's own prototype with label ``prototype_positive`` (1), half to
a randomly chosen other prototype with label ``prototype_negative`` (0). Their cells
are drawn type by type, uniformly over the types, so rare types get as many prototype
pairs as common ones. These pairs go through the same CosineSimilarityLoss, shuffled
among the cell pairs.

The optimisation loop is run here (not by ``SentenceTransformerTrainer``) so that it is
a generator: it yields ``("fine-tuning", step, total_steps)`` after every optimiser step
(the loss of that step is in :class:`FinetuneLog`), can be stopped between two steps, and
needs neither ``datasets`` nor ``accelerate``. It is the classic sentence-transformers
recipe: AdamW (weight decay 0.01, none on biases and LayerNorm), linear warm-up over
``warmup`` of the steps then linear decay, gradient clipping at norm 1.

The model is written only at the end, into a temporary folder that is then renamed to
``out``, so a cancelled or failed run leaves nothing half-written. The folder is a
regular sentence-transformers model: ``Embedder(out)`` and ``napari-cellama transfer
--model out`` load it. ``out/cellama_finetune.json`` records the parameters and the
validation correlations.
"""

from .pairs import PairSet, downsample, pair_labels, pca_coordinates, sample_cell_pairs
from .record import FINETUNE_RECORD, FinetuneLog, FinetuneResult, read_finetune_record
from .training import finetune, iter_finetune

__all__ = [
    "FINETUNE_RECORD",
    "FinetuneLog",
    "FinetuneResult",
    "PairSet",
    "downsample",
    "finetune",
    "iter_finetune",
    "pair_labels",
    "pca_coordinates",
    "read_finetune_record",
    "sample_cell_pairs",
]
